#!/usr/bin/env bash
# bench/uring.sh: the io_uring ceiling (issue 16, item 3). Two single-threaded echo servers that
# differ only in the I/O interface (bench/uring: epoll-echo, a level-triggered epoll loop; uring-echo,
# io_uring with multishot accept and recv, a provided-buffer ring and one submit per loop turn)
# against the crate's own Reactor (the echo example, --concurrency reactor), on tcp-rr.
#
# Method: every server pinned to CPU 0, loadgen to CPU 1 (taskset). Per round, each connection count
# and each server in turn (the order rotates every round), a fresh server and one loadgen
# `tcp-rr --conns N --size 64 --duration DURATION`. Around the loadgen run the server's utime and
# stime are read from /proc/PID/stat, and loadgen's own CPU time from GNU time; so each run gives
# req/s, server CPU per request (user and kernel) and how busy each side's core was. Ratios are
# taken within a round (same minute, same machine load) and the report keeps their median and range.
# Then (SYSCALLS=1) one more pass per server runs with `perf stat -p` attached for syscall counts
# per request (tracepoints: raw_syscalls:sys_enter and the named ones), and (PROFILE=1) one with
# `perf record -e cpu-clock -p` whose samples bench/uring/report.py sorts into where the server's
# CPU goes: user space, the syscall boundary, epoll, io_uring's own code, the rest of the kernel
# (the TCP/IP stack over loopback). Those passes' req/s are not used.
#
#   bench/uring.sh                         # REPEAT=5 rounds, DURATION=3 s; about 6 minutes
#   REPEAT=3 DURATION=2 CONNS=256 bench/uring.sh
#
# Knobs: REPEAT (5), DURATION (3), CONNS ("256 16"), SIZE (64), TARGETS ("epoll-echo uring-echo
# uring-echo-fixed ours:reactor"), SYSCALLS (1), PROFILE (1; CONNS' first count only), SKIP_BUILD (0), START_TIMEOUT (10), STOP_TIMEOUT (5),
# OUT (bench/results/uring). Loopback only; every wait is bounded; servers are stopped by PID.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
REPEAT=${REPEAT:-5}
DURATION=${DURATION:-3}
CONNS=${CONNS:-"256 16"}
SIZE=${SIZE:-64}
TARGETS=${TARGETS:-"epoll-echo uring-echo uring-echo-fixed ours:reactor"}
SYSCALLS=${SYSCALLS:-1}
PROFILE=${PROFILE:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
START_TIMEOUT=${START_TIMEOUT:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-5}
OUT=${OUT:-$BENCH/results/uring}
LOADGEN=$ROOT/target/release/examples/loadgen
ECHO_BIN=$ROOT/target/release/examples/echo
URING_DIR=$BENCH/uring/target/release

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

for t in taskset timeout python3 cargo; do command -v "$t" >/dev/null || die "$t missing"; done
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) missing: apt-get install time"
(($(nproc) >= 2)) || die "needs 2 CPUs (server on 0, loadgen on 1)"
HAVE_PERF=0
if [[ $SYSCALLS == 1 || $PROFILE == 1 ]]; then
    if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then
        HAVE_PERF=1
    else
        say "perf with syscall tracepoints is not usable here: the syscall and profile passes are skipped"
    fi
fi
SERVER_PIN=(taskset -c 0)
LOAD_PIN=(taskset -c 1)
CLK_TCK=$(getconf CLK_TCK)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ $SKIP_BUILD != 1 ]]; then
    say "building loadgen and the echo example (release), and bench/uring"
    (cd "$ROOT" && cargo build --release --example loadgen --example echo) >&2
    (cd "$BENCH/uring" && cargo build --release --locked) >&2
fi
for b in "$LOADGEN" "$ECHO_BIN" "$URING_DIR/epoll-echo" "$URING_DIR/uring-echo"; do
    [[ -x $b ]] || die "$b is not built"
done

mkdir -p "$OUT"
rm -f "$OUT"/*.out "$OUT"/*.err "$OUT"/*.log "$OUT"/*.time "$OUT"/*.perf "$OUT"/*.data
JSONL=$OUT/runs.jsonl
: >"$JSONL"

PERF_PID=""
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null
    [[ -n $SERVER_PID ]] && stop_server
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# server_cmd TARGET: fills CMD.
server_cmd() {
    case $1 in
    epoll-echo | uring-echo) CMD=("$URING_DIR/$1" --addr 127.0.0.1:0) ;;
    # The same with direct descriptors: the best io_uring case (no file-table lookup per operation).
    uring-echo-fixed) CMD=("$URING_DIR/uring-echo" --addr 127.0.0.1:0 --fixed 4096) ;;
    # The flags bench/compare.sh gives our servers (a 64 KiB read buffer, as the two echoes use).
    ours:*) CMD=("$ECHO_BIN" --addr 127.0.0.1:0 --transport tcp --concurrency "${1#ours:}" --rbufsize 65536) ;;
    *) die "unknown target $1" ;;
    esac
}

# run TARGET CONNS ROUND MODE: one server life and one loadgen run; MODE rr (timed, CPU from /proc)
# or sys (perf stat attached). Appends the loadgen RESULT plus the measurements to runs.jsonl.
run() {
    local target=$1 conns=$2 round=$3 mode=$4 log rc=0 t0 t1 w0 w1 line i lu ls le u0 s0 u1 s1
    log=$OUT/${target//:/_}-$conns-$mode-r$round
    server_cmd "$target"
    rc=0
    start_server "$log" "${CMD[@]}" || rc=$?
    if ((rc != 0)); then
        printf '    %-14s %4s r%s %s: FAILED to start (%s)\n' "$target" "$conns" "$round" "$mode" "$SERVER_EXIT" >&2
        return 0
    fi
    if [[ $mode == sys ]]; then
        perf stat -x, -o "$log.perf" -e "$PERF_EVENTS" -p "$SERVER_PID" 2>"$log.perf.err" &
        PERF_PID=$!
        sleep 0.5 # perf attaches to every thread of the server
    elif [[ $mode == prof ]]; then
        perf record -q -e cpu-clock -F 2999 -o "$log.data" -p "$SERVER_PID" 2>"$log.perf.err" &
        PERF_PID=$!
        sleep 0.5
    fi
    t0=$(cpu_ticks "$SERVER_PID") || true
    w0=$(date +%s.%N)
    rc=0
    timeout -k 5 $((DURATION + 60)) /usr/bin/time -f '%U %S %e' -o "$log.time" \
        "${LOAD_PIN[@]}" "$LOADGEN" --addr "$SERVER_ADDR" tcp-rr --conns "$conns" --size "$SIZE" \
        --duration "$DURATION" >"$log.log" 2>&1 || rc=$?
    w1=$(date +%s.%N)
    t1=$(cpu_ticks "$SERVER_PID") || true
    if [[ -n $PERF_PID ]]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do alive "$PERF_PID" || break; sleep 0.05; done
        alive "$PERF_PID" && kill -KILL "$PERF_PID" 2>/dev/null
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=""
    fi
    stop_server
    line=$(sed -n 's/^RESULT //p' "$log.log" | head -n1)
    if ((rc != 0)) || [[ -z $line ]]; then
        printf '    %-14s %4s r%s %s: loadgen FAILED (exit %s, see %s.log)\n' "$target" "$conns" "$round" "$mode" "$rc" "$log" >&2
        return 0
    fi
    read -r lu ls le <"$log.time" || { lu=0 ls=0 le=0; }
    read -r u0 s0 <<<"$t0"
    read -r u1 s1 <<<"$t1"
    printf '%s\n' "${line%\}},\"target\":\"$target\",\"round\":$round,\"mode\":\"$mode\",\"clk_tck\":$CLK_TCK,\"srv_utime\":$((u1 - u0)),\"srv_stime\":$((s1 - s0)),\"wall_s\":$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }'),\"lg_user_s\":$lu,\"lg_sys_s\":$ls,\"lg_wall_s\":$le,\"log\":\"$log\",\"server_exit\":\"$SERVER_EXIT\",\"server_note\":\"$SERVER_NOTE\"}" >>"$JSONL"
    printf '    %-14s %4s r%s %s: %s req/s%s\n' "$target" "$conns" "$round" "$mode" \
        "$(grep -o '"rps":[0-9.]*' <<<"$line" | cut -d: -f2)" "${SERVER_NOTE:+  [server: $SERVER_NOTE]}" >&2
}

PERF_EVENTS=task-clock,context-switches,raw_syscalls:sys_enter
TP=/sys/kernel/tracing/events/syscalls
[[ -d $TP ]] || TP=/sys/kernel/debug/tracing/events/syscalls
for s in io_uring_enter epoll_wait epoll_pwait epoll_ctl recvfrom sendto read write; do
    [[ -d $TP/sys_enter_$s ]] && PERF_EVENTS+=",syscalls:sys_enter_$s"
done

read -r -a TLIST <<<"$TARGETS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"meta":true,"date":"%s","kernel":"%s","cpus":%s,"repeat":%s,"duration_s":%s,"size":%s,"load_start":"%s","rev":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$(nproc)" "$REPEAT" "$DURATION" "$SIZE" "$LOAD_START" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$JSONL"
say "tcp-rr, $REPEAT interleaved rounds of ${DURATION}s; load average at start: $LOAD_START"
for ((round = 1; round <= REPEAT; round++)); do
    for n in $CONNS; do
        for ((k = 0; k < ${#TLIST[@]}; k++)); do
            run "${TLIST[(k + round - 1) % ${#TLIST[@]}]}" "$n" "$round" rr
        done
    done
done
if [[ $HAVE_PERF == 1 && $SYSCALLS == 1 ]]; then
    say "syscalls per request (perf stat -p, one pass)"
    for n in $CONNS; do
        for t in "${TLIST[@]}"; do run "$t" "$n" 1 sys; done
    done
fi
if [[ $HAVE_PERF == 1 && $PROFILE == 1 ]]; then
    read -r n _ <<<"$CONNS"
    say "where the CPU goes (perf record -e cpu-clock -p, one pass at $n connections)"
    for t in "${TLIST[@]}"; do run "$t" "$n" 1 prof; done
fi
say "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$BENCH/uring/report.py" "$JSONL" | tee "$OUT/report.md"
