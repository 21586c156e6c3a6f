#!/usr/bin/env bash
# bench/fanout.sh: chat fan-out (issue 16, item 5): one message to 1,000 members, messages delivered
# per second, our chat example (examples/chat.rs, the Reactor) against bench/tokio-chat (the idiomatic
# tokio broadcast chat), in interleaved rounds, both unpinned on every CPU.
#
# Each run: a fresh server; `bench/fanout` connects MEMBERS members and SENDERS senders, waits until
# every join notice has arrived, then for DURATION seconds each sender sends SIZE-byte lines with at
# most WINDOW of them not yet received by every member; every member counts what it gets. Reported:
# deliveries/s (messages × members per second), messages/s, lost deliveries (a receiver that tokio's
# broadcast channel lets lag skips messages; ours paces the sender instead), the fan-out latency (a
# message's write to its arrival at the last member) and the server's CPU per message.
#
#   bench/fanout.sh                     # ROUNDS=5, DURATION=5: about 2 minutes after the build
#   QUICK=1 bench/fanout.sh             # 2 rounds of 2 s
#   WINDOW=64 SENDERS=4 bench/fanout.sh
#
# Writes bench/results/fanout-latest.{jsonl,md} and prints the report. Loopback only; every wait is
# bounded; servers are stopped by PID (SIGTERM, SIGKILL after STOP_TIMEOUT) and reaped. See
# bench/README.md, "Chat fan-out".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# ---------------------------------------------------------------- knobs ----
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-2}
    DURATION=${DURATION:-2}
else
    ROUNDS=${ROUNDS:-5}
    DURATION=${DURATION:-5}
fi
MEMBERS=${MEMBERS:-1000}
SENDERS=${SENDERS:-1}
WINDOW=${WINDOW:-32}
SIZE=${SIZE:-64}
FANOUT_THREADS=${FANOUT_THREADS:-0}   # 0 = fanout's default, min(CPUs, 4) reader threads
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-60}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-10}
# Our chat: no per-address limit (its default, 8, would refuse the 9th member from 127.0.0.1); the
# default 64 KiB --write-buffer holds hundreds of 80-byte lines per member, well over WINDOW.
CHAT_FLAGS=${CHAT_FLAGS:-"--max-per-peer 0"}
TOKIO_CHAT_FLAGS=${TOKIO_CHAT_FLAGS:-}   # e.g. --capacity 4096, --flush-each
SKIP_BUILD=${SKIP_BUILD:-0}
START_TIMEOUT=${START_TIMEOUT:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
RESULTS=${RESULTS_DIR:-$BENCH/results}
BIN=$RESULTS/bin/fanout
CHAT_BIN=${CHAT_BIN:-$BIN/chat}
TOKIO_CHAT=${TOKIO_CHAT:-$BIN/tokio-chat}
FANOUT=${FANOUT:-$BIN/fanout}
JSONL=$RESULTS/fanout-latest.jsonl
MD=$RESULTS/fanout-latest.md
LOGS=$RESULTS/logs/fanout

# ------------------------------------------------------------- tools -------
for t in timeout python3; do command -v "$t" >/dev/null || die "$t not found"; done
[[ $SKIP_BUILD == 1 ]] || command -v cargo >/dev/null || die "cargo not found (or SKIP_BUILD=1 with built binaries)"
CPUS=$(nproc 2>/dev/null || echo 1)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || warn "could not raise ulimit -n to the hard limit ($(ulimit -Hn))"
NOFILE=$(ulimit -n)
if [[ $NOFILE != unlimited ]] && ((NOFILE < MEMBERS + SENDERS + 100)); then
    die "RLIMIT_NOFILE is $NOFILE: $((MEMBERS + SENDERS)) connections need more (raise the hard limit)"
fi

# ------------------------------------------------------------- build -------
if [[ $SKIP_BUILD != 1 ]]; then
    say "building the chat example (release)"
    (cd "$ROOT" && cargo build --release --example chat) || die "the chat example did not build"
    snapshot_bin "$ROOT/target/release/examples/chat" "$BIN/chat"
    for pkg in tokio-chat fanout; do
        say "building bench/$pkg (release)"
        (cd "$BENCH/$pkg" && cargo build --release) || die "bench/$pkg did not build"
        snapshot_bin "$BENCH/$pkg/target/release/$pkg" "$BIN/$pkg"
    done
fi
need_bin "$CHAT_BIN" "our chat example"
need_bin "$TOKIO_CHAT" "tokio-chat"
need_bin "$FANOUT" "the fanout load generator"

mkdir -p "$RESULTS" "$LOGS"
rm -f "$LOGS"/* 2>/dev/null || true
: >"$JSONL"

cleanup() {
    [[ -n ${SERVER_PID:-} ]] && stop_server
    return 0
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT TERM

record_status() {
    printf '{"target":"%s","case":"%s","round":%s,"status":"%s","reason":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$(json_escape "$5")" >>"$JSONL"
}

json_num() {
    [[ $1 =~ \"$2\":(-?[0-9.eE+-]+) ]] && printf '%s' "${BASH_REMATCH[1]}"
    return 0
}

CASE=fanout-$MEMBERS
LIMIT=$((SETTLE_TIMEOUT + DURATION + DRAIN_TIMEOUT + MEMBERS / 50 + 60))
FANOUT_ARGS=(--members "$MEMBERS" --senders "$SENDERS" --window "$WINDOW" --size "$SIZE" --duration "$DURATION"
    --settle-timeout "$SETTLE_TIMEOUT" --drain-timeout "$DRAIN_TIMEOUT")
((FANOUT_THREADS > 0)) && FANOUT_ARGS+=(--threads "$FANOUT_THREADS")

# run_once TARGET ROUND: a fresh server, one fanout run, the server stopped; one JSON line.
run_once() {
    local target=$1 round=$2 log rc line reason
    case $target in
    # shellcheck disable=SC2206 # flag lists split on spaces
    ours) CMD=("$CHAT_BIN" --addr 127.0.0.1:0 $CHAT_FLAGS) ;;
    # shellcheck disable=SC2206
    tokio) CMD=("$TOKIO_CHAT" --addr 127.0.0.1:0 $TOKIO_CHAT_FLAGS) ;;
    esac
    log="$LOGS/$target-r$round"
    rc=0
    start_server "$log" "${CMD[@]}" || rc=$?
    if ((rc != 0)); then
        reason="server did not start (${SERVER_EXIT:-?}): $(tail -n 2 "$log.err" 2>/dev/null)"
        record_status "$target" "$CASE" "$round" failed "$reason"
        printf '    r%-2s %-6s FAILED: %s\n' "$round" "$target" "$reason" >&2
        return 0
    fi
    rc=0
    timeout -k 5 "$LIMIT" "$FANOUT" --addr "$SERVER_ADDR" --pid "$SERVER_PID" --tag "target=$target" \
        --tag "case=$CASE" "${FANOUT_ARGS[@]}" >"$log.log" 2>"$log.lgerr" || rc=$?
    stop_server
    line=$(grep -m1 '^RESULT ' "$log.log" || true)
    line=${line#RESULT }
    if [[ -z $line ]]; then
        reason="fanout exit $rc: $(tail -n 2 "$log.lgerr")"
        ((rc == 124 || rc == 137)) && reason="fanout killed by the outer timeout (${LIMIT}s)"
        record_status "$target" "$CASE" "$round" failed "$reason"
        printf '    r%-2s %-6s FAILED: %s\n' "$round" "$target" "$reason" >&2
        return 0
    fi
    local status=ok
    ((rc == 0)) || status=failed
    printf '%s\n' "${line%\}},\"round\":$round,\"status\":\"$status\",\"server_exit\":\"$SERVER_EXIT\",\"server_note\":\"$(json_escape "$SERVER_NOTE")\"}" >>"$JSONL"
    printf '    r%-2s %-6s deliveries/s=%s messages/s=%s lost=%s p99_us=%s errors=%s%s\n' "$round" "$target" \
        "$(json_num "$line" deliveries_per_s)" "$(json_num "$line" messages_per_s)" "$(json_num "$line" lost)" \
        "$(json_num "$line" fanout_p99_us)" "$(json_num "$line" errors)" "${SERVER_NOTE:+  [server: $SERVER_NOTE]}" >&2
}

# ---------------------------------------------------------- the rounds -----
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
START_EPOCH=$(date +%s)
printf '{"meta":true,"bench":"fanout","date":"%s","kernel":"%s","cpus":%s,"pinned":"no","rounds":%s,"duration_s":%s,"members":%s,"senders":%s,"window":%s,"size":%s,"chat_flags":"%s","tokio_chat_flags":"%s","load_start":"%s","rev":"%s","note":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$CPUS" "$ROUNDS" "$DURATION" "$MEMBERS" "$SENDERS" "$WINDOW" \
    "$SIZE" "$(json_escape "$CHAT_FLAGS")" "$(json_escape "$TOKIO_CHAT_FLAGS")" "$LOAD_START" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$MEMBERS members, $SENDERS sender(s), window $WINDOW messages per sender, $SIZE-byte lines, ${DURATION}s of sending per run." >>"$JSONL"
say "load average at start: $LOAD_START; $ROUNDS rounds; $MEMBERS members, $SENDERS sender(s), window $WINDOW, ${DURATION}s"
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order="ours tokio"; else order="tokio ours"; fi
    for t in $order; do run_once "$t" "$round"; done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
printf '{"meta_end":true,"elapsed_s":%s,"load_end":"%s"}\n' "$(($(date +%s) - START_EPOCH))" "$LOAD_END" >>"$JSONL"
say "done in $(($(date +%s) - START_EPOCH))s (load average at the end: $LOAD_END); runs in $JSONL"
python3 "$BENCH/pair_report.py" "$JSONL" --markdown "$MD" \
    --title "Chat fan-out: ours (examples/chat.rs) vs tokio broadcast chat (unpinned, $CPUS CPUs)"
