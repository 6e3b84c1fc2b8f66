#!/usr/bin/env python3
"""first200.py PORT LOG CMD...: starts CMD (its output to LOG), asks http://127.0.0.1:PORT/ every 5 ms
until it answers 200, prints the seconds from the start to that answer, then stops CMD (SIGTERM).
Exits 1 if CMD ends first or nothing answers within 120 s."""
import http.client, os, signal, subprocess, sys, time

port, log, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
start = time.monotonic()
with open(log, "wb") as out:
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                print(f"first200: {cmd[0]} exited {proc.returncode} before answering", file=sys.stderr)
                sys.exit(1)
            if time.monotonic() - start > 120:
                print("first200: no 200 within 120 s", file=sys.stderr)
                sys.exit(1)
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                c.request("GET", "/")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.005)
        print(f"{time.monotonic() - start:.3f}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
