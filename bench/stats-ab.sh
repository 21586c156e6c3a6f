#!/usr/bin/env bash
# What the live statistics cost: the echo example built from this checkout (statistics on) against
# the same commit with bench/stats-off.patch applied (every count, gauge and histogram update returns
# at once), interleaved with bench/ab.sh on tcp-rr 16 and tcp-churn. STRATEGY picks the concurrency
# (default threading); REPS the alternations per workload (default 7).
#
#   bench/stats-ab.sh                      # threading
#   STRATEGY=prefork REPS=9 bench/stats-ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STRATEGY=${STRATEGY:-threading}
export REPS=${REPS:-7}
off=$(mktemp -d)
trap 'git worktree remove --force "$off" >/dev/null 2>&1 || rm -rf "$off"' EXIT

git worktree add --detach --quiet "$off" HEAD
git -C "$off" apply "$PWD/bench/stats-off.patch"
cargo build --quiet --release --example echo --example loadgen
cargo build --quiet --release --example echo --manifest-path "$off/Cargo.toml" --target-dir "$off/target"
cp "$off/target/release/examples/echo" "$off/echo-stats-off"

args="--addr 127.0.0.1:0 --concurrency $STRATEGY"
# Pool and PreFork serve one persistent connection per worker: one each for tcp-rr's 16.
[[ $STRATEGY == pool || $STRATEGY == prefork ]] && args+=" --workers 16"
for workload in 'tcp-rr --conns 16 --size 64 --duration 3' 'tcp-churn --workers 8 --size 64 --duration 3'; do
    echo "== $workload ($STRATEGY)"
    bench/ab.sh "$workload" \
        "off: $off/echo-stats-off $args" \
        "on: target/release/examples/echo $args"
done
