#!/usr/bin/env python3
"""bench/pair_report.py: JSON lines of interleaved ours-vs-baseline rounds -> a markdown table.

    pair_report.py RESULTS.jsonl [--title T] [--ours ours] [--base tokio] [--markdown OUT.md]

Used by bench/multicore.sh and bench/fanout.sh (stdlib only). Each line is one run:
{"target": ..., "case": ..., "round": N, "status": "ok"|"failed"|"n/a", ...the figures...};
a line with "meta": true describes the run. Per case, the primary figure's median over the rounds
that succeeded, its range, and the ratio ours / baseline; then the secondary figures' medians.
"""

import argparse
import json
import statistics
import sys

# case prefix -> [(key, label, better)]; the first is the primary figure.
METRICS = {
    "rr-": [
        ("rps", "req/s", "higher"),
        ("server_cpu_us_per_req", "server CPU µs/req", "lower"),
        ("p50_us", "p50 µs", "lower"),
        ("p99_us", "p99 µs", "lower"),
    ],
    "idle-": [
        ("kib_per_conn", "KiB/idle conn", "lower"),
        ("new_client_us", "new client µs", "lower"),
    ],
    "syscalls-": [
        ("syscalls_per_request", "syscalls/req", "lower"),
        ("epoll_wait_per_request", "epoll_wait+pwait/req", "lower"),
        ("read_per_request", "read+recvfrom/req", "lower"),
        ("write_per_request", "write+sendto/req", "lower"),
        ("futex_per_request", "futex/req", "lower"),
        ("cs_per_request", "context switches/req", "lower"),
        ("cpu_us_per_request", "server CPU µs/req", "lower"),
    ],
    "fanout": [
        ("deliveries_per_s", "deliveries/s", "higher"),
        ("messages_per_s", "messages/s", "higher"),
        ("lost", "lost", "lower"),
        ("fanout_p50_us", "fan-out p50 µs", "lower"),
        ("fanout_p99_us", "fan-out p99 µs", "lower"),
        ("server_cpu_us_per_msg", "server CPU µs/msg", "lower"),
    ],
}


def metrics_for(case):
    for prefix, m in METRICS.items():
        if case.startswith(prefix):
            return m
    return []


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--title", default="ours vs baseline")
    ap.add_argument("--ours", default="ours")
    ap.add_argument("--base", default="tokio")
    ap.add_argument("--markdown")
    args = ap.parse_args()

    meta, meta_end, rows = {}, {}, []
    with open(args.jsonl) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if d.get("meta"):
                meta = d
            elif d.get("meta_end"):
                meta_end = d
            else:
                rows.append(d)

    cases = []
    for r in rows:
        if r.get("case") not in cases:
            cases.append(r.get("case"))

    def runs(case, target):
        return [r for r in rows if r.get("case") == case and r.get("target") == target]

    def values(rs, key):
        out = []
        for r in rs:
            if r.get("status") == "ok" and isinstance(r.get(key), (int, float)):
                out.append(float(r[key]))
        return out

    out = [f"## {args.title}", ""]
    if meta:
        out.append(
            "Run: {date}, kernel {kernel}, {cpus} CPUs, unpinned, {rounds} interleaved rounds, "
            "load average {load_start} at the start{end}; rev {rev}.".format(
                date=meta.get("date", "?"),
                kernel=meta.get("kernel", "?"),
                cpus=meta.get("cpus", "?"),
                rounds=meta.get("rounds", "?"),
                load_start=meta.get("load_start", "?"),
                end=f", {meta_end['load_end']} at the end" if meta_end.get("load_end") else "",
                rev=meta.get("rev", "?"),
            )
        )
        if meta.get("note"):
            out.append("")
            out.append(meta["note"])
        out.append("")
    o, b = args.ours, args.base
    out.append(
        f"| case | figure | {o} median (range) | {b} median (range) | {o}/{b} | better | rounds ok |"
    )
    out.append("|---|---|---|---|---|---|---|")
    notes = []
    for case in cases:
        ms = metrics_for(case)
        ro, rb = runs(case, o), runs(case, b)
        for i, (key, label, better) in enumerate(ms):
            vo, vb = values(ro, key), values(rb, key)
            if i > 0 and not vo and not vb:
                continue
            mo = statistics.median(vo) if vo else None
            mb = statistics.median(vb) if vb else None

            def cell(vs, m):
                if not vs:
                    return "FAILED" if i == 0 else "–"
                if len(vs) == 1:
                    return fmt(m)
                return f"{fmt(m)} ({fmt(min(vs))}–{fmt(max(vs))})"

            ratio = "–"
            if mo is not None and mb not in (None, 0):
                ratio = f"{mo / mb:.2f}×"
            elif mo == 0 and mb == 0:
                ratio = "="
            ok = f"{len(vo)}/{len(ro)} · {len(vb)}/{len(rb)}" if i == 0 else ""
            name = case if i == 0 else ""
            out.append(
                f"| {name} | {label} | {cell(vo, mo)} | {cell(vb, mb)} | {ratio} | {better} | {ok} |"
            )
        for r in ro + rb:
            if r.get("status") != "ok":
                notes.append(
                    f"- {case} {r.get('target')} round {r.get('round')}: {r.get('status')}: "
                    f"{r.get('reason', '')}"
                )
            elif r.get("server_note"):
                notes.append(
                    f"- {case} {r.get('target')} round {r.get('round')}: server: {r['server_note']}"
                )
            elif r.get("errors"):
                notes.append(
                    f"- {case} {r.get('target')} round {r.get('round')}: {r['errors']} errors "
                    f"(first: {r.get('first_error')})"
                )
    out.append("")
    out.append(
        f"Ratios are {o} ÷ {b} for every figure: above 1 is better where `better` says higher, "
        "below 1 where it says lower."
    )
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend(notes)
    text = "\n".join(out) + "\n"
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
