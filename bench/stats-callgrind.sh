#!/usr/bin/env bash
# What the live statistics cost, in instructions rather than seconds: the echo example with statistics
# on (this checkout) and off (bench/stats-off.patch) runs under `valgrind --tool=callgrind` while
# loadgen drives a fixed workload; the server's total instruction count (Ir) is divided by the
# requests (tcp-rr) or connections (tcp-churn) served. Instruction counts repeat to well under 1 %
# whatever else the machine does, so they settle what a noisy wall clock cannot. STRATEGY picks an
# in-process strategy (threading, the default; pool; sequential; reactor): callgrind counts one
# process.
#
#   bench/stats-callgrind.sh
#   STRATEGY=reactor bench/stats-callgrind.sh
#
# With BASE set, the comparison is a change's instead: the echo example at commit BASE ("before",
# no patch) against this checkout ("after"), e.g. `BASE=f1460aa bench/stats-callgrind.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
STRATEGY=${STRATEGY:-threading}
RR_REQUESTS=${RR_REQUESTS:-20000}
CHURN_SECONDS=${CHURN_SECONDS:-5}
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
off=$(mktemp -d)
work=$(mktemp -d)
trap 'git worktree remove --force "$off" >/dev/null 2>&1 || rm -rf "$off"; rm -rf "$work"' EXIT

BASE=${BASE:-}
if [[ -n $BASE ]]; then
    git worktree add --detach --quiet "$off" "$BASE"
    labels=(before after)
else
    git worktree add --detach --quiet "$off" HEAD
    git -C "$off" apply "$PWD/bench/stats-off.patch"
    labels=(off on)
fi
cargo build --quiet --release --example echo --example loadgen
cargo build --quiet --release --example echo --manifest-path "$off/Cargo.toml" --target-dir "$off/target"

measure() { # LABEL ECHO_BINARY WORKLOAD...: prints LABEL, the count served and Ir per unit
    local label=$1 echo=$2 pid addr="" i result count
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$work/$label.out" \
        "$echo" --addr 127.0.0.1:0 --concurrency "$STRATEGY" "${sizing[@]}" >"$work/out" 2>"$work/err" &
    pid=$!
    for ((i = 0; i < 600; i++)); do # 30 s at most: valgrind starts slowly
        addr=$(sed -n 's/^listening on //p' "$work/out")
        [[ -n $addr ]] && break
        sleep 0.05
    done
    [[ -n $addr ]] || { kill -KILL "$pid"; echo "$label did not start" >&2; return 1; }
    result=$(timeout -k 5 600 target/release/examples/loadgen --addr "$addr" "$@" | sed -n 's/^RESULT //p')
    kill -TERM "$pid"
    wait "$pid" || true
    count=$(grep -o '"\(requests\|connections\)":[0-9]*' <<<"$result" | cut -d: -f2)
    ir=$(sed -n 's/^summary: //p' "$work/$label.out")
    printf '%-6s %-10s served %7d  Ir %13d  Ir/unit %8.0f\n' "$label" "$1" "$count" "$ir" "$(awk -v a="$ir" -v b="$count" 'BEGIN { print a / b }')"
}

sizing=()
[[ $STRATEGY == pool ]] && sizing=(--workers 16) # one per persistent tcp-rr connection
echo "strategy $STRATEGY; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for workload in rr churn; do
    case $workload in
    rr) args=(tcp-rr --conns 16 --size 64 --requests "$RR_REQUESTS" --duration 600) ;;
    churn) args=(tcp-churn --workers 4 --size 64 --duration "$CHURN_SECONDS") ;;
    esac
    measure "${labels[0]}" "$off/target/release/examples/echo" "${args[@]}"
    measure "${labels[1]}" target/release/examples/echo "${args[@]}"
done
