#!/usr/bin/env python3
"""Draw the ratios computed by bench/report.py as an SVG bar chart.

    python3 bench/chart.py bench/results/ratios.json bench/results/ratios.svg

One group per (our strategy, case), one horizontal bar per baseline, on a
log2 axis centred on 1.0: bars to the right mean ours is better (faster, or
leaner for memory/syscalls), to the left worse. Standard library only.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

COLORS = {"std-echo": "#4c72b0", "tokio-echo": "#dd8452", "python": "#55a868"}
BAR_H, BAR_GAP, GROUP_GAP = 12, 2, 10
LABEL_W, PLOT_W, RIGHT_PAD, TOP, BOTTOM = 230, 560, 60, 70, 40


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: chart.py RATIOS.json OUT.svg")
    try:
        with open(sys.argv[1], encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"chart.py: cannot read {sys.argv[1]}: {e}")
    # Shutdown latency (ratios in the thousands against Python's 0.5 s polling) has its own table in the
    # report; on this axis it would squash every other bar.
    ratios = [r for r in data.get("ratios", []) if r.get("ratio", 0) > 0 and r.get("workload") != "shutdown"]
    svg = render(ratios, data.get("meta", {}))
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(svg)


def render(ratios, meta):
    groups = {}
    for r in ratios:
        groups.setdefault((r["case"], r["strategy"]), {})[r["baseline"]] = r["ratio"]
    keys = list(groups)  # report.py already emits them in a sensible order
    keys.sort(key=lambda k: (case_order(k[0]), k[1]))

    logs = [math.log2(v) for g in groups.values() for v in g.values()] or [0.0]
    span = max(1.0, math.ceil(max(abs(min(logs)), abs(max(logs)))))
    span = min(span, 12.0)  # clamp at 4096x

    def x(ratio):
        lg = max(-span, min(span, math.log2(ratio)))
        return LABEL_W + PLOT_W / 2 + lg / span * (PLOT_W / 2)

    height = TOP + BOTTOM + sum(len(g) * (BAR_H + BAR_GAP) + GROUP_GAP for g in groups.values())
    width = LABEL_W + PLOT_W + RIGHT_PAD
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">socketserver vs baselines '
        f'(ratio, log scale; &gt; 1 = ours better)</text>',
        f'<text x="10" y="38" fill="#555">{escape(str(meta.get("date", "")))} '
        f'pinned={escape(str(meta.get("pinned", "?")))} duration={escape(str(meta.get("duration_s", "?")))}s</text>',
    ]
    # Legend.
    lx = 10
    for name, color in COLORS.items():
        out.append(f'<rect x="{lx}" y="48" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{lx + 14}" y="57">vs {escape(name)}</text>')
        lx += 110
    # Grid: powers of two (every other one when the span is wide).
    step = 1 if span <= 6 else 2
    for e in range(-int(span), int(span) + 1, step):
        gx = x(2.0**e)
        color = "#333" if e == 0 else "#ddd"
        out.append(f'<line x1="{gx:.1f}" y1="{TOP - 6}" x2="{gx:.1f}" y2="{height - BOTTOM + 4}" stroke="{color}"/>')
        label = f"{2.0**e:g}x" if e >= 0 else f"1/{2**-e}x"
        out.append(f'<text x="{gx:.1f}" y="{height - BOTTOM + 18}" text-anchor="middle" fill="#555">{label}</text>')
    if not keys:
        out.append(f'<text x="{LABEL_W}" y="{TOP + 20}">no ratios: our echo example was not measured</text>')
    y = TOP
    for key in keys:
        case, strategy = key
        bars = groups[key]
        gh = len(bars) * (BAR_H + BAR_GAP)
        out.append(f'<text x="{LABEL_W - 8}" y="{y + gh / 2 + 4:.1f}" text-anchor="end">'
                   f'{escape(strategy)} · {escape(case)}</text>')
        for base in COLORS:
            if base not in bars:
                continue
            ratio = bars[base]
            x0, x1 = x(1.0), x(ratio)
            left, w = min(x0, x1), max(abs(x1 - x0), 1.0)
            out.append(f'<rect x="{left:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" fill="{COLORS[base]}">'
                       f'<title>{escape(strategy)} {escape(case)} vs {escape(base)}: {ratio:.3f}</title></rect>')
            tx, anchor = (x1 + 3, "start") if ratio >= 1 else (x1 - 3, "end")
            out.append(f'<text x="{tx:.1f}" y="{y + BAR_H - 2}" text-anchor="{anchor}" font-size="10">{ratio:.2f}</text>')
            y += BAR_H + BAR_GAP
        y += GROUP_GAP
    out.append("</svg>")
    return "\n".join(out) + "\n"


def case_order(case):
    for i, prefix in enumerate(["rr-", "churn-", "bulk-", "idle-", "udp-rr-", "http", "syscalls", "shutdown"]):
        if case.startswith(prefix):
            digits = "".join(ch for ch in case if ch.isdigit())
            return (i, int(digits) if digits else 0)
    return (99, 0)


if __name__ == "__main__":
    main()
