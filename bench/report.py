#!/usr/bin/env python3
"""Turn the JSON lines written by bench/compare.sh into a markdown report
(printed and written to --markdown) and a ratios file for bench/chart.py.

    python3 bench/report.py bench/results/latest.jsonl \
        --markdown bench/results/latest.md --ratios bench/results/ratios.json

Ratios are "advantage" ratios: > 1 always means ours is better, i.e.
ours/baseline for throughput and baseline/ours for memory per connection and
syscalls per request. Standard library only.
"""

import argparse
import json
import re
import sys

# workload -> (primary metric, unit, higher_is_better)
PRIMARY = {
    "tcp-rr": ("rps", "req/s", True),
    "tcp-churn": ("cps", "conn/s", True),
    "tcp-bulk": ("mib_per_s", "MiB/s", True),
    "udp-rr": ("rps", "req/s", True),
    "idle": ("kib_per_conn", "KiB/conn", False),
    "http": ("rps", "req/s", True),
    "syscalls": ("syscalls_per_request", "syscalls/req", False),
    "shutdown": ("p99_us", "µs p99", False),
}

CASE_TITLES = {
    "tcp-rr": "TCP request/response ({conns} persistent connections)",
    "tcp-churn": "TCP connection churn ({workers} workers: connect, echo, close)",
    "tcp-bulk": "TCP bulk echo ({conns} connections x {mib} MiB, verified)",
    "udp-rr": "UDP request/response ({clients} clients)",
    "idle": "Idle connections ({conns} held open; server RSS growth)",
    "http": "HTTP keep-alive (wrk -t1 -c16)",
    "syscalls": "Server syscalls per request (strace -c -f, tcp-rr 1 connection)",
    "shutdown": "Shutdown latency: serve_forever returns after shutdown() on an idle server ({trials} trials)",
}

# Our strategy -> the Python socketserver class with the same strategy.
PY_SAME = {
    ("sequential", "tcp"): "python:tcp",
    ("threading", "tcp"): "python:threading-tcp",
    ("forking", "tcp"): "python:forking-tcp",
    ("sequential", "udp"): "python:udp",
    ("threading", "udp"): "python:threading-udp",
    ("forking", "udp"): "python:forking-udp",
    ("http_hello", "http"): "python:http_hello",
}
BASELINES = ("std-echo", "tokio-echo", "python")


def workload_of(rec):
    if rec.get("workload") in PRIMARY:
        return rec["workload"]
    case = rec.get("case", "")
    for prefix, name in (("rr-", "tcp-rr"), ("churn-", "tcp-churn"), ("bulk-", "tcp-bulk"),
                         ("udp-rr-", "udp-rr"), ("idle-", "idle"), ("http", "http"), ("syscalls", "syscalls"),
                         ("shutdown", "shutdown")):
        if case.startswith(prefix):
            return name
    return None


def case_key(case):
    """Order cases: rr by connection count, then churn, bulk, idle, udp, http, syscalls."""
    order = ["rr-", "churn-", "bulk-", "idle-", "udp-rr-", "http", "syscalls", "shutdown"]
    for i, prefix in enumerate(order):
        if case.startswith(prefix):
            num = re.findall(r"\d+", case)
            return (i, int(num[0]) if num else 0, case)
    return (len(order), 0, case)


def target_key(target):
    strategies = ["sequential", "threading", "forking", "pool", "prefork", "reactor", "http_hello"]
    if target.startswith("ours:"):
        s = target[5:]
        return (0, strategies.index(s) if s in strategies else 99, s)
    if target.startswith("python:"):
        kinds = ["tcp", "udp", "threading-tcp", "threading-udp", "forking-tcp", "forking-udp", "http_hello"]
        k = target[7:]
        return (1, kinds.index(k) if k in kinds else 99, k)
    return (2, 0, target)


def fmt_num(v, digits=0):
    if v is None:
        return "-"
    if digits == 0 and abs(v) >= 10:
        return f"{v:,.0f}"
    return f"{v:,.{max(digits, 1)}f}"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def cell(rec):
    """Primary metric of a record as a table cell (or its status)."""
    if rec is None:
        return "-"
    if rec.get("status") != "ok":
        return rec.get("status", "?").upper() if rec.get("status") == "failed" else "n/a"
    wl = workload_of(rec)
    metric, _, _ = PRIMARY[wl]
    v = rec.get(metric)
    digits = 2 if wl in ("idle", "syscalls", "tcp-bulk") else 0
    if wl == "shutdown":
        v, digits = v / 1000 if isinstance(v, (int, float)) else v, 2
    text = fmt_num(v, digits)
    if rec.get("errors"):
        text += f" ({rec['errors']} err)"
    return text


def load(path):
    meta, recs = {}, []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"report.py: skipping malformed line {n}: {e}", file=sys.stderr)
                continue
            if obj.get("meta"):
                meta.update(obj)
            elif obj.get("meta_end"):
                meta.update(obj)
            else:
                recs.append(obj)
    return meta, recs


def collapse_repeats(recs):
    """Keep one record per (target, case): the median run by primary metric
    (with REPEAT > 1), annotated with the number of runs and their range."""
    groups = {}
    for r in recs:
        groups.setdefault((r.get("target"), r.get("case")), []).append(r)
    out = []
    for runs in groups.values():
        ok = [r for r in runs if value(r) is not None]
        if len(runs) == 1 or not ok:
            out.append(runs[0])
            continue
        ok.sort(key=value)
        median = dict(ok[(len(ok) - 1) // 2])
        median["runs"] = len(runs)
        median["runs_ok"] = len(ok)
        median["range"] = [value(ok[0]), value(ok[-1])]
        out.append(median)
    return out


def value(rec):
    if rec is None or rec.get("status") != "ok":
        return None
    metric = PRIMARY[workload_of(rec)][0]
    v = rec.get(metric)
    return v if isinstance(v, (int, float)) and v > 0 else None


def compute_ratios(recs):
    by = {(r.get("target"), r.get("case")): r for r in recs}
    out = []
    for r in recs:
        target = r.get("target", "")
        if not target.startswith("ours:") or value(r) is None:
            continue
        strategy, case, transport = target[5:], r.get("case"), r.get("transport")
        wl = workload_of(r)
        higher = PRIMARY[wl][2]
        for base in BASELINES:
            if base == "python" and wl == "shutdown":
                base_target = "python:tcp"  # one serve_forever for every socketserver class
            elif wl == "shutdown":
                base_target = None
            elif base == "python":
                base_target = PY_SAME.get((strategy, transport))
            elif wl == "http":
                base_target = None
            else:
                base_target = base
            if base_target is None:
                continue
            bv = value(by.get((base_target, case)))
            if bv is None:
                continue
            ours = value(r)
            ratio = ours / bv if higher else bv / ours
            out.append({"strategy": strategy, "case": case, "workload": wl, "baseline": base,
                        "baseline_target": base_target, "ratio": round(ratio, 4)})
    return out


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(meta, recs, ratios):
    out = []
    pinned = meta.get("pinned", "?")
    out.append("# socketserver benchmark")
    out.append("")
    out.append(
        f"Run {meta.get('date', '?')}, rev {meta.get('rev', '?')}, kernel {meta.get('kernel', '?')}, "
        f"{meta.get('cpus', '?')} CPUs, duration {meta.get('duration_s', '?')} s per case"
        f"{' (QUICK)' if str(meta.get('quick')) == '1' else ''}. "
        + ("Pinned: server on CPU 0, load generator on CPU 1 (taskset)." if pinned == "yes"
           else "Not pinned: server and load generator share the CPUs.")
    )
    out.append("")
    if meta.get("load_start"):
        out.append("")
        out.append(f"Load average (1, 5, 15 min) at the start: {meta['load_start']}"
                   + (f"; at the end: {meta['load_end']}" if meta.get("load_end") else "")
                   + (f"; the matrix took {meta['elapsed_s']} s" if meta.get("elapsed_s") else "")
                   + (f"; REPEAT={meta['repeat']}" if meta.get("repeat") else "") + ".")
    out.append("")
    out.append("Loopback only, one machine: absolute numbers are noisy; compare ratios within one run.")

    cases = sorted({r["case"] for r in recs if r.get("case") and r.get("target") != "all"}, key=case_key)
    targets = sorted({r["target"] for r in recs if r.get("target") and r.get("target") != "all"}, key=target_key)
    by = {(r.get("target"), r.get("case")): r for r in recs}

    # Overview: primary metric, targets x cases.
    main_cases = [c for c in cases if workload_of({"case": c}) not in ("http", "syscalls", "shutdown")]
    if main_cases:
        out += ["", "## Overview (primary metric per case)", ""]
        units = [PRIMARY[workload_of({"case": c})][1] for c in main_cases]
        header = ["target"] + [f"{c} ({u})" for c, u in zip(main_cases, units)]
        rows = []
        for t in targets:
            if t.endswith("http_hello"):
                continue
            rows.append([t] + [cell(by.get((t, c))) for c in main_cases])
        out.append(table(header, rows))

    # Ratios.
    if ratios:
        out += ["", "## Ours vs baselines (same run; > 1 = ours better)", "",
                "Throughput: ours / baseline. Idle memory and syscalls: baseline / ours. "
                "Python = the socketserver class with the same strategy (none for pool, prefork, reactor).", ""]
        rows = []
        keyed = {}
        for x in ratios:
            keyed.setdefault((x["strategy"], x["case"]), {})[x["baseline"]] = x["ratio"]
        for (strategy, case) in sorted(keyed, key=lambda k: (case_key(k[1]), target_key("ours:" + k[0]))):
            d = keyed[(strategy, case)]
            rows.append([case, strategy] + [fmt_ratio(d.get(b)) for b in BASELINES])
        out.append(table(["case", "ours", "vs std-echo", "vs tokio-echo", "vs python"], rows))

    # The targets.
    checks = target_checks(recs, ratios)
    if checks:
        out += ["", "## Targets", "", "Each target from the benchmark issue, measured in this run (✓ met, ✗ missed, "
                "? not measured).", ""]
        out.append(table(["target", "measured", "required", ""], checks))

    # Details per case.
    out += ["", "## Details"]
    for c in cases:
        recs_c = [by[(t, c)] for t in targets if (t, c) in by]
        if not recs_c:
            continue
        wl = workload_of({"case": c})
        sample = next((r for r in recs_c if r.get("status") == "ok"), {})
        params = {"conns": sample.get("conns", re.sub(r"\D", "", c) or "?"), "workers": sample.get("workers", "?"),
                  "trials": sample.get("trials", "?"),
                  "mib": sample.get("mib_per_conn", "?"), "clients": sample.get("clients", "?")}
        if wl == "idle":
            params["conns"] = sample.get("conns_requested", re.sub(r"\D", "", c))
        out += ["", f"### {c}: {CASE_TITLES.get(wl, wl).format(**params)}", ""]
        rows = []
        if wl == "idle":
            header = ["target", "KiB/conn", "KiB/conn (process tree)", "opened", "open time s",
                      "new client ok", "errors", "pinned", "note"]
            for r in recs_c:
                if r.get("status") != "ok":
                    rows.append([r["target"], cell(r), "", "", "", "", "", r.get("pinned", ""), r.get("reason", "")])
                    continue
                rows.append([r["target"], fmt_num(r.get("kib_per_conn"), 2), fmt_num(r.get("tree_kib_per_conn"), 2),
                             r.get("conns_opened"), fmt_num(r.get("open_s"), 2),
                             "yes" if r.get("new_client_ok") else "NO", r.get("errors", 0), r.get("pinned", ""),
                             note(r)])
        elif wl == "syscalls":
            header = ["target", "syscalls/request", "total syscalls", "requests", "note"]
            for r in recs_c:
                rows.append([r["target"], fmt_num(r.get("syscalls_per_request"), 2) if r.get("status") == "ok" else cell(r),
                             r.get("syscalls", ""), r.get("requests", ""), r.get("reason", "")])
        elif wl == "shutdown":
            header = ["target", "p50 ms", "p99 ms", "max ms", "trials", "note"]
            for r in recs_c:
                ok = r.get("status") == "ok"
                ms = lambda k: fmt_num(r.get(k, 0) / 1000, 2) if ok else ""  # noqa: E731
                rows.append([r["target"], ms("p50_us") if ok else cell(r), ms("p99_us"), ms("max_us"),
                             r.get("trials", ""), note(r)])
        elif wl == "tcp-bulk":
            header = ["target", "MiB/s", "seconds", "errors", "pinned", "note"]
            for r in recs_c:
                rows.append([r["target"], cell(r) if r.get("status") != "ok" else fmt_num(r.get("mib_per_s"), 1),
                             fmt_num(r.get("duration_s"), 2), r.get("errors", ""), r.get("pinned", ""), note(r)])
        else:
            unit = PRIMARY[wl][1] if wl else "value"
            header = ["target", unit, "p50 µs", "p99 µs", "errors"]
            if wl == "udp-rr":
                header.append("lost")
            header += ["pinned", "note"]
            for r in recs_c:
                ok = r.get("status") == "ok"
                row = [r["target"], cell(r) if not ok else fmt_num(value(r) or 0),
                       fmt_num(r.get("p50_us"), 1) if ok else "", fmt_num(r.get("p99_us"), 1) if ok else "",
                       r.get("errors", "")]
                if wl == "udp-rr":
                    row.append(r.get("lost", ""))
                row += [r.get("pinned", ""), note(r)]
                rows.append(row)
        out.append(table(header, rows))
    out.append("")
    return "\n".join(out)


def target_checks(recs, ratios):
    """Rows [target, measured, required, mark] for each target of the benchmark issue."""
    by = {(r.get("target"), r.get("case")): r for r in recs}
    ratio = {(x["strategy"], x["case"], x["baseline"]): x["ratio"] for x in ratios}
    cases = sorted({r.get("case") for r in recs if r.get("case")}, key=case_key)

    def case_like(prefix):
        return next((c for c in cases if c.startswith(prefix)), None)

    rows = []

    def check(what, measured, required, ok):
        mark = "?" if ok is None else ("✓" if ok else "✗")
        rows.append([what, measured, required, mark])

    def ratio_check(what, strategy, case, base, need):
        r = ratio.get((strategy, case, base)) if case else None
        check(what, fmt_ratio(r) if r is not None else "not measured", f"≥ {need:g}×",
              None if r is None else r >= need)

    # Every strategy of ours >= Python's same strategy on every workload.
    py = [(x["strategy"], x["case"], x["ratio"]) for x in ratios
          if x["baseline"] == "python" and x["workload"] != "shutdown"]
    if py:
        misses = sorted((r, s, c) for s, c, r in py if r < 1.0)
        measured = f"{len(py) - len(misses)}/{len(py)} cases ≥ 1×"
        if misses:
            measured += "; misses: " + ", ".join(f"{s} {c} {fmt_ratio(r)}" for r, s, c in misses)
        check("every strategy ≥ Python's same strategy, every workload", measured, "≥ 1× each", not misses)
    for strategy in ("threading", "pool"):
        for n in ("16", "256"):
            ratio_check(f"{strategy} tcp-rr {n} conns vs std-echo", strategy, f"rr-{n}", "std-echo", 1.0)
    churn = case_like("churn-")
    ratio_check("threading tcp-churn vs std-echo", "threading", churn, "std-echo", 1.0)
    for n in ("16", "256"):
        ratio_check(f"reactor tcp-rr {n} conns vs tokio", "reactor", f"rr-{n}", "tokio-echo", 1.0)
    idle = case_like("idle-")
    rec = by.get(("ours:reactor", idle)) if idle else None
    if rec and rec.get("status") == "ok":
        kib, opened = rec.get("kib_per_conn"), rec.get("conns_opened")
        held = opened == rec.get("conns_requested", opened) and rec.get("new_client_ok")
        check(f"reactor idle: {rec.get('conns_requested', '?')} connections, memory per connection",
              f"{fmt_num(kib, 2)} KiB/conn, {opened} held, new client {'ok' if rec.get('new_client_ok') else 'FAILED'}",
              "≤ 4 KiB, all held", bool(held) and kib is not None and kib <= 4.0)
    else:
        check("reactor idle memory per connection", "not measured", "≤ 4 KiB", None)
    ratio_check("forking tcp-churn vs Python ForkingTCPServer", "forking", churn, "python", 3.0)
    ratio_check("prefork tcp-churn vs std-echo", "prefork", churn, "std-echo", 1.0)
    udp = case_like("udp-rr-")
    ratio_check("sequential udp-rr vs std-echo (UDP)", "sequential", udp, "std-echo", 0.95)
    for strategy in ("threading", "pool"):
        ours, base = by.get((f"ours:{strategy}", udp)), by.get(("python:threading-udp", udp))
        r = value(ours) / value(base) if udp and value(ours) and value(base) else None
        check(f"{strategy} udp-rr vs Python ThreadingUDPServer", fmt_ratio(r) if r else "not measured", "≥ 5×",
              None if r is None else r >= 5.0)
    ours, base = by.get(("ours:threading", "syscalls")), by.get(("std-echo", "syscalls"))
    if value(ours) and value(base):
        a, b = ours["syscalls_per_request"], base["syscalls_per_request"]
        check("stream path syscalls per echo request (threading) vs std-echo", f"{a:.2f} vs {b:.2f}",
              f"≤ {b + 0.1:.2f}", a <= b + 0.1 + 1e-9)
    else:
        check("stream path syscalls per echo request", "not measured", "≤ std-echo + 0.1", None)
    shutdowns = [(t[5:], r) for (t, c), r in by.items() if c == "shutdown" and t.startswith("ours:")]
    for strategy, r in sorted(shutdowns, key=lambda x: target_key("ours:" + x[0])):
        v = value(r)
        check(f"shutdown latency p99, {strategy}", f"{v / 1000:.2f} ms" if v else cell(r), "≤ 10 ms",
              None if v is None else v <= 10_000)
    py_shutdown = value(by.get(("python:tcp", "shutdown")))
    if py_shutdown:
        check("(Python socketserver shutdown latency p99, for reference)", f"{py_shutdown / 1000:.0f} ms",
              "up to 500 ms", True)
    return rows


def note(r):
    parts = []
    if r.get("runs"):
        lo, hi = r["range"]
        parts.append(f"median of {r['runs_ok']}/{r['runs']} runs, range {fmt_num(lo)}..{fmt_num(hi)}")
    if r.get("status") != "ok" and r.get("reason"):
        parts.append(r["reason"])
    if r.get("first_error"):
        parts.append("first error: " + r["first_error"])
    if r.get("server_note"):
        parts.append("server: " + r["server_note"])
    text = "; ".join(parts)
    text = text.replace("|", "/")
    return text if len(text) <= 160 else text[:157] + "..."


def main():
    ap = argparse.ArgumentParser(description="markdown report + ratios from compare.sh results")
    ap.add_argument("jsonl")
    ap.add_argument("--markdown", help="also write the markdown here")
    ap.add_argument("--ratios", help="write the ratios (JSON) here, for chart.py")
    args = ap.parse_args()
    try:
        meta, recs = load(args.jsonl)
    except OSError as e:
        sys.exit(f"report.py: cannot read {args.jsonl}: {e}")
    recs = collapse_repeats(recs)
    ratios = compute_ratios(recs)
    md = render(meta, recs, ratios)
    print(md)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(md)
    if args.ratios:
        with open(args.ratios, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "ratios": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
