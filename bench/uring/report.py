#!/usr/bin/env python3
"""bench/uring.sh's runs.jsonl -> markdown: req/s with in-round ratios, CPU per request, syscalls.

Usage: report.py runs.jsonl
"""
import json
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict

# The columns of ratios: each server's req/s over these, in the same round.
RATIO_TO = ("epoll-echo", "ours:reactor")


def load(path):
    meta, runs = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                print(f"skipping a malformed line: {line[:80]}", file=sys.stderr)
                continue
            if obj.get("meta"):
                meta = obj
            elif obj.get("requests"):
                runs.append(obj)
    return meta, runs


def perf_counts(log):
    counts = {}
    try:
        with open(log + ".perf") as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) < 3 or line.startswith("#"):
                    continue
                try:
                    counts[fields[2]] = float(fields[0])
                except ValueError:
                    pass
    except OSError:
        pass
    return counts


# Where a sampled symbol's time belongs, first match wins. "syscall boundary" is the cost of
# crossing into the kernel and finding the socket (what fewer syscalls save); "epoll" and "io_uring"
# are each interface's own machinery; the rest is the TCP/IP stack over loopback, memory and the
# scheduler, which both interfaces pay alike.
BUCKETS = [
    ("user space", lambda sym, kernel: not kernel),
    ("syscall boundary", lambda sym, kernel: re.match(
        r"(do_syscall_64|entry_SYSCALL|syscall_exit|syscall_enter|__x64_sys_(sendto|recvfrom|read|write)$"
        r"|__sys_(sendto|recvfrom)|fdget|fput|__fget|fget|sockfd_lookup|exit_to_user_mode"
        r"|arch_exit_to_user_mode|srso_|__x86_return_thunk|import_ubuf|move_addr_to_user|__rseq|rseq)", sym)),
    ("epoll", lambda sym, kernel: re.match(r"(ep_|do_epoll|__x64_sys_epoll|sock_poll|tcp_poll|__pollwait)", sym)),
    ("io_uring", lambda sym, kernel: re.match(r"(io_|__io_|__x64_sys_io_uring|tctx_)", sym)),
]
REST = "TCP/IP stack, memory, scheduler"


def profile_buckets(log):
    """Shares of the samples in LOG.data per bucket, or None."""
    if not shutil.which("perf"):
        return None
    try:
        out = subprocess.run(["perf", "report", "-i", log + ".data", "--no-children", "--sort", "sym",
                              "-g", "none", "--stdio"], capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    shares = defaultdict(float)
    for line in out.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+\[(.)\]\s+(\S+)", line)
        if not m:
            continue
        share, kind, sym = float(m.group(1)) / 100, m.group(2), m.group(3)
        name = next((label for label, rule in BUCKETS if rule(sym, kind == "k")), REST)
        shares[name] += share
    return shares or None


def spread(values, fmt):
    values = sorted(values)
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(values[0])}–{fmt(values[-1])})"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    meta, runs = load(sys.argv[1])
    rr = [r for r in runs if r.get("mode") == "rr"]
    sysruns = [r for r in runs if r.get("mode") == "sys"]
    targets = list(dict.fromkeys(r["target"] for r in rr))
    conns = sorted({r["conns"] for r in rr}, reverse=True)
    by = defaultdict(list)  # (target, conns) -> runs
    by_round = {}  # (target, conns, round) -> run
    for r in rr:
        by[(r["target"], r["conns"])].append(r)
        by_round[(r["target"], r["conns"], r["round"])] = r

    print(f"Kernel {meta.get('kernel', '?')}, {meta.get('cpus', '?')} CPUs, rev {meta.get('rev', '?')}, "
          f"{meta.get('date', '?')}; tcp-rr {meta.get('size', '?')} B, {meta.get('duration_s', '?')} s per run, "
          f"{meta.get('repeat', '?')} interleaved rounds; load average at start {meta.get('load_start', '?')}.\n")

    print("### Requests per second (median, range) and ratios within each round (median, range)\n")
    hdr = ["conns", "server", "req/s"] + [f"÷ {t}" for t in targets if t in RATIO_TO]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for n in conns:
        for t in targets:
            rs = by.get((t, n), [])
            if not rs:
                print(f"| {n} | {t} | failed |" + " |" * (len(hdr) - 3))
                continue
            cells = [str(n), t, spread([r["rps"] for r in rs], lambda v: f"{v:,.0f}")]
            for d in targets:
                if d not in RATIO_TO:
                    continue
                ratios = []
                for r in rs:
                    other = by_round.get((d, n, r["round"]))
                    if other and other["rps"] > 0:
                        ratios.append(r["rps"] / other["rps"])
                cells.append("—" if d == t or not ratios else spread(ratios, lambda v: f"{v:.2f}×"))
            print("| " + " | ".join(cells) + " |")
    print()

    print("### Server CPU per request (from /proc/PID/stat around the loadgen run; medians)\n")
    hdr = ["conns", "server", "CPU µs/req (range)", "user µs/req", "kernel µs/req", "kernel share",
           "server core busy", "loadgen core busy"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for n in conns:
        for t in targets:
            rs = by.get((t, n), [])
            if not rs:
                continue
            tick = lambda r: 1e6 / r["clk_tck"] / r["requests"]
            user = [r["srv_utime"] * tick(r) for r in rs]
            kern = [r["srv_stime"] * tick(r) for r in rs]
            tot = [u + k for u, k in zip(user, kern)]
            share = [k / (u + k) for u, k in zip(user, kern) if u + k > 0]
            busy = [(r["srv_utime"] + r["srv_stime"]) / r["clk_tck"] / r["wall_s"] for r in rs if r["wall_s"] > 0]
            lbusy = [(r["lg_user_s"] + r["lg_sys_s"]) / r["lg_wall_s"] for r in rs if r["lg_wall_s"] > 0]
            print(f"| {n} | {t} | {spread(tot, lambda v: f'{v:.2f}')} | {statistics.median(user):.2f} | "
                  f"{statistics.median(kern):.2f} | {statistics.median(share):.0%} | "
                  f"{statistics.median(busy):.0%} | {statistics.median(lbusy):.0%} |")
    print()

    if sysruns:
        print("### Syscalls per request (perf stat -p attached, one pass; its req/s is not used)\n")
        names = ["io_uring_enter", "epoll_wait", "epoll_pwait", "epoll_ctl", "recvfrom", "sendto", "read", "write"]
        present = set()
        rows = []
        for r in sysruns:
            c = perf_counts(r.get("log", ""))
            if not c:
                continue
            per = {k: v / r["requests"] for k, v in c.items()}
            rows.append((r, per))
            present |= {k for k in names if per.get("syscalls:sys_enter_" + k, 0) >= 0.0005}
        cols = [k for k in names if k in present]
        hdr = ["conns", "server", "syscalls/req", *cols, "requests per syscall", "task-clock µs/req"]
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r, per in sorted(rows, key=lambda x: (-x[0]["conns"], targets.index(x[0]["target"])
                                                  if x[0]["target"] in targets else 99)):
            tot = per.get("raw_syscalls:sys_enter", 0.0)
            cells = [str(r["conns"]), r["target"], f"{tot:.3f}"]
            cells += [f"{per.get('syscalls:sys_enter_' + k, 0.0):.3f}" for k in cols]
            cells += [f"{1 / tot:.1f}" if tot > 0 else "—", f"{per.get('task-clock', 0.0) * 1000:.2f}"]
            print("| " + " | ".join(cells) + " |")
        print()

    prof = [r for r in runs if r.get("mode") == "prof"]
    rows = [(r, profile_buckets(r.get("log", ""))) for r in prof]
    rows = [(r, b) for r, b in rows if b]
    if rows:
        names = [label for label, _ in BUCKETS] + [REST]
        print(f"### Where the server's CPU goes (perf record -e cpu-clock, {rows[0][0]['conns']} connections, "
              "share of samples)\n")
        hdr = ["server", *names, "syscall boundary + epoll + io_uring"]
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r, b in rows:
            io = b.get("syscall boundary", 0) + b.get("epoll", 0) + b.get("io_uring", 0)
            print("| " + " | ".join([r["target"]] + [f"{b.get(k, 0):.1%}" for k in names] + [f"{io:.1%}"]) + " |")
        print()


if __name__ == "__main__":
    main()
