#!/usr/bin/env bash
# Interleaved A/B: one loadgen workload against two servers, alternately, REPS times each (A, B, A, B,
# ...), server pinned to CPU 0 and load generator to CPU 1. On a shared machine whose load swings, this
# tells a real gap from the drift that separates two cases measured minutes apart in bench/compare.sh.
#
#   bench/ab.sh 'udp-rr --clients 8 --size 64 --duration 3' \
#       'std-echo: bench/std-echo/target/release/std-echo --addr 127.0.0.1:0 --transport udp' \
#       'sequential: target/release/examples/echo --addr 127.0.0.1:0 --transport udp --concurrency sequential'
#
# Every server must print `listening on <addr>` first and exit on SIGTERM. Build first (bench/compare.sh
# does, or `cargo build --release --examples` and `cargo build --release` in bench/std-echo).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 3 ]] || { sed -n '2,11p' "$0" >&2; exit 2; }
workload=$1
REPS=${REPS:-3}
loadgen=target/release/examples/loadgen
out=$(mktemp)
trap 'rm -f "$out"' EXIT

run() { # "label: command..."
    local label=${1%%:*} cmd=${1#*: } pid addr="" i
    # shellcheck disable=SC2086 # the command line is split on purpose
    taskset -c 0 $cmd >"$out" 2>/dev/null &
    pid=$!
    for ((i = 0; i < 200; i++)); do
        addr=$(sed -n 's/^listening on //p' "$out")
        [[ -n $addr ]] && break
        sleep 0.05
    done
    [[ -n $addr ]] || { kill -KILL "$pid"; wait "$pid" 2>/dev/null; echo "$label did not start" >&2; return 1; }
    # shellcheck disable=SC2086
    printf '%-12s %s\n' "$label" "$(taskset -c 1 timeout -k 5 120 "$loadgen" --addr "$addr" $workload 2>/dev/null |
        grep -o '"\(rps\|cps\|mib_per_s\)":[0-9.]*' | head -1)"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= REPS; r++)); do
    run "$2"
    run "$3"
done
