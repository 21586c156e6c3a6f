#!/usr/bin/env bash
# A change's cost in speed: the echo example built at BASE (before) against this checkout (after),
# interleaved with bench/ab.sh on tcp-rr 16, tcp-rr 256 and tcp-churn 8. STRATEGY picks the
# concurrency (default threading); REPS the alternations per workload (default 7). Medians and the
# after/before ratio: `python3 bench/ab-medians.py` on the output.
#
#   bench/before-after.sh f1460aa | tee /tmp/ab.txt && python3 bench/ab-medians.py /tmp/ab.txt
#   STRATEGY=reactor REPS=9 bench/before-after.sh f1460aa
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 1 ]] || { sed -n '2,8p' "$0" >&2; exit 2; }
base=$1
STRATEGY=${STRATEGY:-threading}
export REPS=${REPS:-7}
before=$(mktemp -d)
trap 'git worktree remove --force "$before" >/dev/null 2>&1 || rm -rf "$before"' EXIT

git worktree add --detach --quiet "$before" "$base"
cargo build --quiet --release --example echo --example loadgen
cargo build --quiet --release --example echo --manifest-path "$before/Cargo.toml" --target-dir "$before/target"
cp "$before/target/release/examples/echo" "$before/echo-before"

args="--addr 127.0.0.1:0 --concurrency $STRATEGY"
# Pool and PreFork serve one persistent connection per worker: one each for tcp-rr 256's connections.
[[ $STRATEGY == pool || $STRATEGY == prefork ]] && args+=" --workers 256"
for workload in 'tcp-rr --conns 16 --size 64 --duration 3' 'tcp-rr --conns 256 --size 64 --duration 3' \
    'tcp-churn --workers 8 --size 64 --duration 3'; do
    echo "== $workload ($STRATEGY)"
    bench/ab.sh "$workload" \
        "before: $before/echo-before $args" \
        "after: target/release/examples/echo $args"
done
