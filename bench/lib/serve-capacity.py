#!/usr/bin/env python3
"""Capacity client of bench/serve: holds N concurrent requests open against a `wasmcell serve` of the
slow guest and measures how many instances it keeps alive at once, and in how much memory.

    serve-capacity.py URL METRICS_URL SERVER_PID N [JSON_OUT]

Opens N connections (at most 256 connecting at a time), each sending one `GET URL` (HTTP/1.1,
Connection: close) and reading the answer to EOF. Meanwhile it polls METRICS_URL for the gauge
`wasmcell_live_instances` and /proc/SERVER_PID/status for VmRSS, until the gauge reaches N or stops
rising for 5 s once every request is sent. It prints progress to stderr, then waits for every answer
(they come when the guests' sleeps end) and writes a JSON summary to JSON_OUT or stdout.
"""
import asyncio
import collections
import json
import sys
import time
import urllib.parse

url, metrics_url, pid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = sys.argv[5] if len(sys.argv) > 5 else None
u = urllib.parse.urlsplit(url)
host, port = u.hostname, u.port or 80
request = (
    f"GET {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1\r\n"
    f"Host: {u.netloc}\r\nUser-Agent: bench-serve-capacity\r\nConnection: close\r\n\r\n"
).encode()

sent = 0
statuses = collections.Counter()
errors = collections.Counter()


def proc_status(field):
    """A /proc/PID/status field in bytes (the kernel reports kB)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


async def live_instances():
    m = urllib.parse.urlsplit(metrics_url)
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(m.hostname, m.port), 5)
        w.write(f"GET {m.path} HTTP/1.1\r\nHost: {m.netloc}\r\nConnection: close\r\n\r\n".encode())
        body = (await asyncio.wait_for(r.read(), 5)).decode(errors="replace")
        w.close()
    except (OSError, asyncio.TimeoutError):
        return None
    for line in body.splitlines():
        if line.startswith("wasmcell_live_instances "):
            return int(float(line.split()[1]))
    return None


async def one(connecting):
    global sent
    try:
        async with connecting:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
            w.write(request)
            await w.drain()
            sent += 1
        data = await asyncio.wait_for(r.read(), 600)
        w.close()
        head = data.split(b"\r\n", 1)[0].split()
        statuses[head[1].decode() if len(head) > 1 else "no status line"] += 1
    except Exception as e:  # counted and reported; the run goes on
        errors[type(e).__name__ + (f" {e.errno}" if getattr(e, "errno", None) else "")] += 1


async def main():
    connecting = asyncio.Semaphore(256)
    rss_idle = proc_status("VmRSS")
    start = time.monotonic()
    tasks = [asyncio.create_task(one(connecting)) for _ in range(n)]
    peak = {"live": 0, "rss": None, "at": None}
    last_rise = time.monotonic()
    all_sent_at = None
    while True:
        await asyncio.sleep(0.25)
        live = await live_instances()
        rss = proc_status("VmRSS")
        now = time.monotonic()
        if live is not None and live > peak["live"]:
            peak = {"live": live, "rss": rss, "at": now - start}
            last_rise = now
        elif live is not None and live == peak["live"] and rss is not None:
            peak["rss"] = max(peak["rss"] or 0, rss)
        if sent + sum(errors.values()) >= n and all_sent_at is None:
            all_sent_at = now - start
        print(f"\r  t={now - start:5.1f}s sent {sent:>6} errors {sum(errors.values()):>5} live {live} "
              f"rss {(rss or 0) / 2**20:7.1f} MiB", end="", file=sys.stderr, flush=True)
        if peak["live"] >= n:
            break
        if all_sent_at is not None and now - last_rise > 5:
            break
        if now - start > 120:
            break
    print(file=sys.stderr)
    print(f"  peak: {peak['live']} live instances, waiting for the answers", file=sys.stderr)
    await asyncio.gather(*tasks)
    summary = {
        "requests": n,
        "sent": sent,
        "peak_live": peak["live"],
        "rss_at_peak": peak["rss"],
        "seconds_to_peak": peak["at"],
        "seconds_to_send_all": all_sent_at,
        "rss_idle": rss_idle,
        "rss_hwm": proc_status("VmHWM"),
        "seconds_total": time.monotonic() - start,
        "statuses": dict(statuses),
        "errors": dict(errors),
    }
    text = json.dumps(summary)
    if out:
        with open(out, "w") as f:
            f.write(text)
    else:
        print(text)


asyncio.run(main())
