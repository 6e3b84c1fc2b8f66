#!/usr/bin/env python3
"""The link order of the release binaries (used by scripts/gen-link-order, which drives it).

    link_order.py trace BINARY PID HITS
        Attaches (PTRACE_SEIZE) to PID, which is about to exec BINARY (static, non-PIE), plants a one-shot
        breakpoint (int3) on the first byte of every function once the exec has happened, and follows
        forks and threads. Each hit appends "PID ADDRESS" to HITS, restores the byte in that process and
        lets it go on: every function costs one trap, the first time a process runs it, so the recorded
        set is exact (sampling misses what runs once) and the traced shim stays fast enough for containerd.
        Lines of HITS starting with "==" are phase marks, written by the driver. Exits when the last
        traced process has ended.

    link_order.py order OUT BINARY:HITS...
        Writes lld's --symbol-ordering-file: every function a HITS file recorded, in the order of first
        hits (the files in turn), then the read-only data those functions reference (by RIP-relative
        operand, absolute immediate or jump table; and the constants those point to, two levels deep),
        so that both the code and the constants a running shim touches sit on few pages.
"""
import bisect, ctypes, os, re, signal, subprocess, sys


def load_segment(binary, flags):
    """(file offset, address, size) of BINARY's PT_LOAD segment with FLAGS ("R E", "R  ")."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        p = line.split()
        if p and p[0] == "LOAD" and " ".join(p[6:-1]) == flags:
            return int(p[1], 16), int(p[2], 16), int(p[4], 16)
    sys.exit(f"{binary}: no LOAD segment with flags {flags!r}")


def symbols(binary, types):
    """{address: [(name, size), ...]} of BINARY's defined symbols of nm TYPES (mangled names)."""
    out = subprocess.run(["nm", "--no-demangle", "-S", "--defined-only", binary], capture_output=True, text=True,
                         check=True).stdout
    by = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in types:
            by.setdefault(int(p[0], 16), []).append((p[3], int(p[1], 16)))
        elif len(p) == 3 and p[1] in types:
            by.setdefault(int(p[0], 16), []).append((p[2], 0))
    return by


PTRACE_CONT, PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_DETACH = 7, 12, 13, 17
PTRACE_SEIZE, PTRACE_LISTEN = 0x4206, 0x4208
O_TRACEFORK, O_TRACEVFORK, O_TRACECLONE, O_TRACEEXEC = 0x2, 0x4, 0x8, 0x10
EVENT_EXEC, EVENT_STOP = 4, 0x80
WALL = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def ptrace(req, pid, addr=0, data=0):
    if libc.ptrace(req, pid, addr, data) == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"ptrace({req}, {pid}): {os.strerror(e)}")


class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
        "fs_base gs_base ds es fs gs").split()]


def trace(binary, target, out):
    binary = os.path.realpath(binary)
    # The executable segment, from the file, and the function starts inside it.
    off, vaddr, filesz = load_segment(binary, "R E")
    with open(binary, "rb") as f:
        f.seek(off)
        text = bytearray(f.read(filesz))
    original = bytes(text)
    starts = {a for a in symbols(binary, "tTwW") if vaddr <= a < vaddr + filesz}
    for a in starts:
        text[a - vaddr] = 0xCC
    text = bytes(text)

    log = open(out, "a", buffering=1)
    ptrace(PTRACE_SEIZE, target, 0, O_TRACEFORK | O_TRACEVFORK | O_TRACECLONE | O_TRACEEXEC)
    traced = {target}
    regs = Regs()

    def plant(pid):
        with open(f"/proc/{pid}/mem", "r+b", buffering=0) as m:
            m.seek(vaddr)
            m.write(text)

    while traced:
        try:
            pid, status = os.waitpid(-1, WALL)
        except ChildProcessError:
            break
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            traced.discard(pid)
            continue
        traced.add(pid)
        sig, event = os.WSTOPSIG(status), status >> 16
        deliver = 0
        try:
            if event == EVENT_EXEC:
                if os.path.realpath(f"/proc/{pid}/exe") == binary:
                    plant(pid)
                else:
                    ptrace(PTRACE_DETACH, pid)
                    traced.discard(pid)
                    continue
            elif event == EVENT_STOP:
                pass  # a new task's first stop (or a group stop, which a traced shim never gets)
            elif event:
                pass  # fork / clone: the new task reports its own stop
            elif sig == signal.SIGTRAP:
                ptrace(PTRACE_GETREGS, pid, 0, ctypes.addressof(regs))
                a = regs.rip - 1
                if a in starts:
                    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as m:
                        m.seek(a)
                        if m.read(1) == b"\xcc":
                            m.seek(a)
                            m.write(original[a - vaddr:a - vaddr + 1])
                            log.write(f"{pid} {a:x}\n")
                        # else another thread hit it at the same time, and its trap restored it
                    regs.rip = a
                    ptrace(PTRACE_SETREGS, pid, 0, ctypes.addressof(regs))
                else:
                    deliver = sig
            else:
                deliver = sig
            ptrace(PTRACE_CONT, pid, 0, deliver)
        except OSError as e:
            if e.errno != 3:  # ESRCH: it died meanwhile
                raise
            traced.discard(pid)


def rodata_refs(binary, functions):
    """The read-only data symbols FUNCTIONS (addresses, in order) reference, in order of first reference."""
    off, base, size = load_segment(binary, "R")
    syms = sorted((a, s, n) for a, l in symbols(binary, "rR").items() for n, s in l[:1] if s and base <= a < base + size)
    starts = [s[0] for s in syms]
    image = open(binary, "rb").read()[off:off + size]

    def at(v):
        i = bisect.bisect_right(starts, v) - 1
        return i if i >= 0 and v < syms[i][0] + syms[i][1] else None

    refs = {}  # function address -> referenced addresses
    operand = re.compile(r"# ([0-9a-f]+) <|\$0x([0-9a-f]+)\b|\*0x([0-9a-f]+)\(,")
    header = re.compile(r"^([0-9a-f]+) <")
    wanted, current = set(functions), None
    dis = subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", "-j", ".text", binary], stdout=subprocess.PIPE,
                           text=True, bufsize=1 << 20)
    for line in dis.stdout:
        m = header.match(line)
        if m:
            a = int(m.group(1), 16)
            current = refs.setdefault(a, []) if a in wanted else None
        elif current is not None and "\t" in line:
            for m in operand.finditer(line):
                v = int(m.group(1) or m.group(2) or m.group(3), 16)
                if base <= v < base + size:
                    current.append(v)
    dis.wait()
    order, seen = [], set()

    def add(i, depth):
        if i is None or i in seen:
            return
        seen.add(i)
        order.append(syms[i][2])
        if depth < 2:  # constants pointing at constants: &str tables, panic locations, vtables' names
            a, s, _ = syms[i]
            data = image[a - base:a - base + s]
            for k in range(0, len(data) - 7, 8):
                v = int.from_bytes(data[k:k + 8], "little")
                if base <= v < base + size:
                    add(at(v), depth + 1)

    for f in functions:
        for v in refs.get(f, ()):
            add(at(v), 0)
    return order


def order(out, inputs):
    names, seen_names, report = [], set(), []
    for spec in inputs:
        binary, hits = spec.rsplit(":", 1)
        by = symbols(binary, "tTwW")
        functions, seen = [], set()
        for line in open(hits):
            if line.startswith("=="):
                continue
            a = int(line.split()[1], 16)
            if a not in seen and a in by:
                seen.add(a)
                functions.append(a)
        new = [n for a in functions for n, _ in by[a]]
        data = rodata_refs(binary, functions)
        before = len(names)
        for n in new + data:
            if n not in seen_names:
                seen_names.add(n)
                names.append(n)
        code = sum(by[a][0][1] for a in functions)
        report.append(f"{os.path.basename(binary)}: {len(functions)} functions ({code // 1024} KiB), "
                      f"{len(data)} constants, {len(names) - before} new names")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(n + "\n" for n in names))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, out)
    print("\n".join(report), file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "trace":
        trace(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) >= 4 and sys.argv[1] == "order":
        order(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
