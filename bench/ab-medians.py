#!/usr/bin/env python3
"""Medians of bench/ab.sh runs, and the ratio second/first, per workload.

Reads the output of bench/before-after.sh or bench/stats-ab.sh (`== workload` headers, then one
`label "rps":N` line per run) from the file named, or standard input:

    python3 bench/ab-medians.py /tmp/ab.txt
"""
import re
import statistics
import sys


def main() -> None:
    source = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    runs: dict[str, dict[str, list[float]]] = {}
    workload = None
    for line in source:
        if line.startswith("== "):
            workload = line[3:].strip()
            runs[workload] = {}
            continue
        match = re.match(r'(\S+)\s+"(rps|cps|mib_per_s)":([0-9.]+)', line)
        if match and workload is not None:
            runs[workload].setdefault(match.group(1), []).append(float(match.group(3)))
    for workload, by_label in runs.items():
        medians = {label: statistics.median(values) for label, values in by_label.items()}
        parts = [
            f"{label} median {median:,.0f} (n={len(by_label[label])}, "
            f"{min(by_label[label]):,.0f}-{max(by_label[label]):,.0f})"
            for label, median in medians.items()
        ]
        line = f"{workload}: " + "; ".join(parts)
        labels = list(medians)
        if len(labels) == 2 and medians[labels[0]]:
            line += f" -> {labels[1]}/{labels[0]} {medians[labels[1]] / medians[labels[0]]:.3f}"
        print(line)


if __name__ == "__main__":
    main()
