#!/usr/bin/env bash
# bench/multicore.sh: our Reactor on every core (`echo --concurrency reactor`, the default number of
# event loops) against tokio's default multi-thread runtime (bench/tokio-echo, a worker per CPU),
# both unpinned on all the machine's CPUs, in interleaved rounds (issue 16, item 5):
#
#   rr-N         loadgen tcp-rr --conns N --size 64 for N in CONNS (16 256 10000): requests/s, the
#                server's CPU time per request (/proc utime+stime), latency percentiles
#   idle-K       loadgen idle --conns K: server memory (VmRSS) per idle connection
#   syscalls-N   syscalls, context switches and CPU per request at N = SYSCALL_CONNS (256) connections,
#                counted by `perf stat` (syscall tracepoints, every thread; as bench/syscalls.sh) or
#                `strace -f -c` (SYSCALL_TOOL=strace); each figure is the difference of a SMALL and a
#                SMALL+BIG request run, so start-up, connection set-up and shutdown cancel out
#
# Each round runs every case against both servers, ours first in odd rounds and tokio first in even
# ones; a fresh server per run. The report (stdout, and bench/results/multicore-latest.md) keeps each
# figure's median over the rounds and the ratio ours/tokio; every run is a line of
# bench/results/multicore-latest.jsonl.
#
#   bench/multicore.sh                          # ROUNDS=5, DURATION=5: about 10 minutes after the build
#   QUICK=1 bench/multicore.sh                  # 2 rounds of 1 s, 2,000 idle connections
#   CASES='rr' CONNS='256 10000' bench/multicore.sh
#   OURS_FLAGS='--rbufsize 65536 --workers 2' bench/multicore.sh   # a fixed number of event loops
#
# Nothing is pinned: the servers and the load generator share every CPU (the load generator uses
# min(connections, CPUs, 4) threads). Loopback only; every wait is bounded; every server is stopped by
# its PID (SIGTERM, SIGKILL after STOP_TIMEOUT) and reaped. See bench/README.md, "Multicore".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

# ---------------------------------------------------------------- knobs ----
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-2}
    DURATION=${DURATION:-1}
    IDLE_CONNS=${IDLE_CONNS:-2000}
    SYSCALL_BIG=${SYSCALL_BIG:-20000}
else
    ROUNDS=${ROUNDS:-5}
    DURATION=${DURATION:-5}
    IDLE_CONNS=${IDLE_CONNS:-10000}
    SYSCALL_BIG=${SYSCALL_BIG:-100000}
fi
CONNS=${CONNS:-"16 256 10000"}
RR_SIZE=${RR_SIZE:-64}
CASES=${CASES:-"rr idle syscalls"}    # any of rr, idle, syscalls
SYSCALL_CONNS=${SYSCALL_CONNS:-256}
SYSCALL_SMALL=${SYSCALL_SMALL:-2000}
SYSCALL_TOOL=${SYSCALL_TOOL:-auto}     # perf, strace or auto (perf if it can count tracepoints)
LOADGEN_THREADS=${LOADGEN_THREADS:-0}  # 0 = loadgen's default, min(conns, CPUs, 4)
# Our echo's flags for rr and syscalls: a 64 KiB read buffer, as bench/compare.sh gives it (tokio-echo
# reads 16 KiB). The idle case runs with the defaults a user has (OURS_IDLE_FLAGS).
OURS_FLAGS=${OURS_FLAGS:-"--rbufsize 65536 --timeout-secs 0"}
OURS_IDLE_FLAGS=${OURS_IDLE_FLAGS:-}
TOKIO_FLAGS=${TOKIO_FLAGS:-}
SKIP_BUILD=${SKIP_BUILD:-0}
START_TIMEOUT=${START_TIMEOUT:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
RESULTS=${RESULTS_DIR:-$BENCH/results}
BIN=$RESULTS/bin/multicore
ECHO_BIN=${ECHO_BIN:-$BIN/echo}
LOADGEN=${LOADGEN:-$BIN/loadgen}
TOKIO_ECHO=${TOKIO_ECHO:-$BIN/tokio-echo}
JSONL=$RESULTS/multicore-latest.jsonl
MD=$RESULTS/multicore-latest.md
LOGS=$RESULTS/logs/multicore

# ------------------------------------------------------------- tools -------
for t in timeout python3 awk; do command -v "$t" >/dev/null || die "$t not found"; done
[[ $SKIP_BUILD == 1 ]] || command -v cargo >/dev/null || die "cargo not found (or SKIP_BUILD=1 with built binaries)"
for c in $CASES; do
    case $c in rr | idle | syscalls) ;; *) die "unknown case '$c' in CASES (rr, idle, syscalls)" ;; esac
done
CPUS=$(nproc 2>/dev/null || echo 1)
((CPUS >= 2)) || warn "only $CPUS CPU: this compares multi-loop servers on one core"

if [[ " $CASES " == *" syscalls "* ]]; then
    if [[ $SYSCALL_TOOL == auto ]]; then
        if command -v perf >/dev/null && perf stat -x, -e raw_syscalls:sys_enter -o /dev/null -- true 2>/dev/null; then
            SYSCALL_TOOL=perf
        elif command -v strace >/dev/null; then
            SYSCALL_TOOL=strace
            warn "perf cannot count syscall tracepoints here: counting with strace (slows the servers down; only the counts mean anything)"
        else
            SYSCALL_TOOL=none
            warn "neither perf nor strace: the syscalls case is skipped"
        fi
    fi
    case $SYSCALL_TOOL in
    perf | strace) command -v "$SYSCALL_TOOL" >/dev/null || die "$SYSCALL_TOOL not found" ;;
    none) ;;
    *) die "SYSCALL_TOOL must be perf, strace, auto or none" ;;
    esac
fi

# Descriptors: each server and the load generator hold one per connection, plus a margin.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || warn "could not raise ulimit -n to the hard limit ($(ulimit -Hn))"
NOFILE=$(ulimit -n)
MAX_CONNS=$IDLE_CONNS
for n in $CONNS; do ((n > MAX_CONNS)) && MAX_CONNS=$n; done
if [[ $NOFILE != unlimited ]] && ((NOFILE < MAX_CONNS + 200)); then
    warn "RLIMIT_NOFILE is $NOFILE (hard limit $(ulimit -Hn)): cases above $((NOFILE - 200)) connections will fail; raise the hard limit (e.g. ulimit -Hn 65536 as root)"
fi
PORTS=$(awk '{ print $2 - $1 + 1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 28232)
TW_REUSE=$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo '?')
((MAX_CONNS < PORTS)) || warn "$MAX_CONNS connections but only $PORTS ephemeral ports"

# ------------------------------------------------------------- build -------
if [[ $SKIP_BUILD != 1 ]]; then
    say "building the echo and loadgen examples (release)"
    (cd "$ROOT" && cargo build --release --example echo --example loadgen) || die "the examples did not build"
    snapshot_bin "$ROOT/target/release/examples/echo" "$BIN/echo"
    snapshot_bin "$ROOT/target/release/examples/loadgen" "$BIN/loadgen"
    say "building bench/tokio-echo (release)"
    (cd "$BENCH/tokio-echo" && cargo build --release) || die "bench/tokio-echo did not build"
    snapshot_bin "$BENCH/tokio-echo/target/release/tokio-echo" "$BIN/tokio-echo"
fi
need_bin "$ECHO_BIN" "our echo example"
need_bin "$LOADGEN" "loadgen"
need_bin "$TOKIO_ECHO" "tokio-echo"

mkdir -p "$RESULTS" "$LOGS"
rm -f "$LOGS"/* 2>/dev/null || true
: >"$JSONL"

# ------------------------------------------------------------ helpers ------
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

cleanup() {
    [[ -n ${SERVER_PID:-} ]] && stop_server
    [[ -n ${WRAP_PID:-} ]] && stop_wrapped
    return 0
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT TERM

# record_status TARGET CASE ROUND STATUS REASON
record_status() {
    printf '{"target":"%s","case":"%s","round":%s,"status":"%s","reason":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$(json_escape "$5")" >>"$JSONL"
}

# server_cmd TARGET KIND: fills CMD (KIND: rr or idle).
server_cmd() {
    case $1 in
    ours)
        CMD=("$ECHO_BIN" --addr 127.0.0.1:0 --transport tcp --concurrency reactor)
        # shellcheck disable=SC2206 # flag lists split on spaces
        if [[ $2 == idle ]]; then CMD+=($OURS_IDLE_FLAGS); else CMD+=($OURS_FLAGS); fi
        ;;
    tokio)
        # shellcheck disable=SC2206
        CMD=("$TOKIO_ECHO" --addr 127.0.0.1:0 --transport tcp $TOKIO_FLAGS)
        ;;
    *) die "unknown target $1" ;;
    esac
}

# json_num JSON KEY: the number KEY has in JSON (empty if none).
json_num() {
    [[ $1 =~ \"$2\":(-?[0-9.eE+-]+) ]] && printf '%s' "${BASH_REMATCH[1]}"
    return 0
}

# run_load TARGET CASE ROUND KIND LIMIT LOADGEN_ARGS...: a fresh server, one loadgen run (@PID@ in the
# arguments becomes the server's PID), the server stopped; appends one JSON line.
run_load() {
    local target=$1 case=$2 round=$3 kind=$4 limit=$5 log rc line c0 c1 reason extra=""
    shift 5
    server_cmd "$target" "$kind"
    log="$LOGS/$target-$case-r$round"
    rc=0
    start_server "$log" "${CMD[@]}" || rc=$?
    if ((rc != 0)); then
        reason="server did not start (${SERVER_EXIT:-?}): $(tail -n 2 "$log.err" 2>/dev/null)"
        record_status "$target" "$case" "$round" failed "$reason"
        printf '    r%-2s %-6s %-14s FAILED: %s\n' "$round" "$target" "$case" "$reason" >&2
        return 0
    fi
    local args=("$@")
    args=("${args[@]//@PID@/$SERVER_PID}")
    c0=$(cpu_ticks "$SERVER_PID")
    rc=0
    timeout -k 5 "$limit" "$LOADGEN" --addr "$SERVER_ADDR" --tag "target=$target" --tag "case=$case" \
        "${args[@]}" >"$log.log" 2>"$log.lgerr" || rc=$?
    c1=$(cpu_ticks "$SERVER_PID")
    stop_server
    line=$(grep -m1 '^RESULT ' "$log.log" || true)
    line=${line#RESULT }
    if [[ -z $line ]]; then
        reason="loadgen exit $rc: $(tail -n 2 "$log.lgerr")"
        ((rc == 124 || rc == 137)) && reason="loadgen killed by the outer timeout (${limit}s)"
        record_status "$target" "$case" "$round" failed "$reason"
        printf '    r%-2s %-6s %-14s FAILED: %s\n' "$round" "$target" "$case" "$reason" >&2
        return 0
    fi
    local reqs
    reqs=$(json_num "$line" requests)
    if [[ -n $reqs && $reqs != 0 ]]; then
        # Includes connecting and warming up every connection: at 10,000 connections, set-up's share.
        extra+=",\"server_cpu_us_per_req\":$(awk -v a="$c0" -v b="$c1" -v r="$reqs" -v t="$CLK_TCK" \
            'BEGIN { printf "%.3f", (b - a) * 1e6 / t / r }')"
    fi
    local status=ok
    ((rc == 0)) || status=failed
    printf '%s\n' "${line%\}},\"round\":$round,\"status\":\"$status\",\"server_exit\":\"$SERVER_EXIT\",\"server_note\":\"$(json_escape "$SERVER_NOTE")\"$extra}" >>"$JSONL"
    local key
    for key in rps kib_per_conn; do
        [[ -n $(json_num "$line" $key) ]] && break
    done
    printf '    r%-2s %-6s %-14s %s=%s errors=%s%s\n' "$round" "$target" "$case" "$key" "$(json_num "$line" "$key")" \
        "$(json_num "$line" errors)" "${SERVER_NOTE:+  [server: $SERVER_NOTE]}" >&2
}

# Syscall tracepoints named in the breakdown; the total comes from raw_syscalls:sys_enter.
SC_NAMES="read recvfrom write sendto epoll_wait epoll_pwait epoll_pwait2 epoll_ctl futex sched_yield accept4 close"
perf_events() {
    local tp=/sys/kernel/tracing/events/syscalls s ev="task-clock,context-switches,raw_syscalls:sys_enter"
    [[ -d $tp ]] || tp=/sys/kernel/debug/tracing/events/syscalls
    for s in $SC_NAMES; do [[ -d $tp/sys_enter_$s ]] && ev+=",syscalls:sys_enter_$s"; done
    printf '%s' "$ev"
}

# counted_run TARGET ROUND REQUESTS: one server life under the counter, loadgen making REQUESTS round
# trips on SYSCALL_CONNS connections. Writes $LOGS/TARGET-syscalls-rROUND-REQUESTS.{count,log,...};
# returns 1 on failure.
counted_run() {
    local target=$1 round=$2 reqs=$3 log rc wrap
    server_cmd "$target" rr
    log="$LOGS/$target-syscalls-r$round-$reqs"
    if [[ $SYSCALL_TOOL == perf ]]; then
        wrap=(perf stat -x, -o "$log.count" -e "$(perf_events)" --)
    else
        wrap=(strace -f -c -o "$log.count" --)
    fi
    start_wrapped "$log" "${wrap[@]}" "${CMD[@]}" || {
        echo "server did not start under $SYSCALL_TOOL: $(tail -n 2 "$log.err" 2>/dev/null)" >"$log.why"
        return 1
    }
    rc=0
    timeout -k 5 300 "$LOADGEN" --addr "$SERVER_ADDR" tcp-rr --conns "$SYSCALL_CONNS" --size "$RR_SIZE" \
        --requests "$reqs" --duration 240 >"$log.log" 2>"$log.lgerr" || rc=$?
    stop_wrapped
    if ((rc != 0)); then
        echo "loadgen exit $rc: $(tail -n 2 "$log.lgerr")" >"$log.why"
        return 1
    fi
}

# run_syscalls TARGET ROUND: the SMALL and SMALL+BIG runs, their difference per request; one JSON line.
run_syscalls() {
    local target=$1 round=$2 small=$SYSCALL_SMALL big=$((SYSCALL_SMALL + SYSCALL_BIG)) case="syscalls-$SYSCALL_CONNS" out
    local base=$LOGS/$target-syscalls-r$round
    if ! counted_run "$target" "$round" "$small" || ! counted_run "$target" "$round" "$big"; then
        record_status "$target" "$case" "$round" failed "$(cat "$base"-*.why 2>/dev/null | head -n 1)"
        printf '    r%-2s %-6s %-14s FAILED\n' "$round" "$target" "$case" >&2
        return 0
    fi
    out=$(python3 - "$SYSCALL_TOOL" "$base-$small" "$base-$big" "$target" "$case" "$round" <<'EOF'
import json, re, sys
tool, a, b, target, case, rnd = sys.argv[1:7]

def load(base):
    ev = {}
    text = open(base + ".count").read()
    if tool == "perf":
        for line in text.splitlines():
            f = line.split(",")
            if len(f) < 3 or line.startswith("#"):
                continue
            try:
                v = float(f[0])
            except ValueError:
                continue
            name = f[2]
            if name.startswith("syscalls:sys_enter_"):
                name = name[len("syscalls:sys_enter_"):]
            elif name == "raw_syscalls:sys_enter":
                name = "total"
            ev[name] = v
    else:
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 5 and f[-1] == "total":
                ev["total"] = float(f[3])
            elif len(f) >= 5 and re.match(r"^[0-9.]+$", f[0]):
                ev[f[-1]] = float(f[3])
    m = re.search(r'"requests":(\d+)', open(base + ".log").read())
    return ev, float(m.group(1))

(ea, ra), (eb, rb) = load(a), load(b)
d = rb - ra
per = lambda *keys: sum(eb.get(k, 0.0) - ea.get(k, 0.0) for k in keys) / d
row = {"target": target, "case": case, "round": int(rnd), "status": "ok", "tool": tool,
       "requests": d, "syscalls_per_request": round(per("total"), 3),
       "epoll_wait_per_request": round(per("epoll_wait", "epoll_pwait", "epoll_pwait2"), 3),
       "read_per_request": round(per("read", "recvfrom"), 3),
       "write_per_request": round(per("write", "sendto"), 3),
       "futex_per_request": round(per("futex"), 3),
       "epoll_ctl_per_request": round(per("epoll_ctl"), 3),
       "sched_yield_per_request": round(per("sched_yield"), 3)}
if tool == "perf":
    row["cs_per_request"] = round(per("context-switches"), 4)
    row["cpu_us_per_request"] = round(per("task-clock") * 1000, 3)  # task-clock is in ms
print(json.dumps(row, separators=(",", ":")))
EOF
) || {
        record_status "$target" "$case" "$round" failed "could not read the counts (see $base-*.count)"
        printf '    r%-2s %-6s %-14s FAILED (counts)\n' "$round" "$target" "$case" >&2
        return 0
    }
    printf '%s\n' "$out" >>"$JSONL"
    printf '    r%-2s %-6s %-14s syscalls/request=%s\n' "$round" "$target" "$case" \
        "$(json_num "$out" syscalls_per_request)" >&2
}

# ---------------------------------------------------------- the rounds -----
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
START_EPOCH=$(date +%s)
printf '{"meta":true,"bench":"multicore","date":"%s","kernel":"%s","cpus":%s,"pinned":"no","rounds":%s,"duration_s":%s,"conns":"%s","idle_conns":%s,"syscall_tool":"%s","ours_flags":"%s","nofile":"%s","ephemeral_ports":%s,"tcp_tw_reuse":"%s","load_start":"%s","rev":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$CPUS" "$ROUNDS" "$DURATION" "$CONNS" "$IDLE_CONNS" \
    "${SYSCALL_TOOL:-n/a}" "$(json_escape "$OURS_FLAGS")" "$NOFILE" "$PORTS" "$TW_REUSE" "$LOAD_START" \
    "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$JSONL"
say "load average at start: $LOAD_START; $ROUNDS rounds, ${DURATION}s per rr run, unpinned on $CPUS CPUs"

LG_THREADS=()
((LOADGEN_THREADS > 0)) && LG_THREADS=(--threads "$LOADGEN_THREADS")
for ((round = 1; round <= ROUNDS; round++)); do
    say "round $round of $ROUNDS"
    if ((round % 2)); then order="ours tokio"; else order="tokio ours"; fi
    for c in $CASES; do
        case $c in
        rr)
            for n in $CONNS; do
                for t in $order; do
                    run_load "$t" "rr-$n" "$round" rr $((DURATION + n / 50 + 60)) \
                        tcp-rr --conns "$n" --size "$RR_SIZE" --duration "$DURATION" "${LG_THREADS[@]}"
                done
            done
            ;;
        idle)
            for t in $order; do
                run_load "$t" "idle-$IDLE_CONNS" "$round" idle $((IDLE_CONNS / 50 + 60)) \
                    idle --conns "$IDLE_CONNS" --pid @PID@
            done
            ;;
        syscalls)
            [[ $SYSCALL_TOOL == none ]] && continue
            for t in $order; do run_syscalls "$t" "$round"; done
            ;;
        esac
    done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
printf '{"meta_end":true,"elapsed_s":%s,"load_end":"%s"}\n' "$(($(date +%s) - START_EPOCH))" "$LOAD_END" >>"$JSONL"
say "done in $(($(date +%s) - START_EPOCH))s (load average at the end: $LOAD_END); runs in $JSONL"
python3 "$BENCH/pair_report.py" "$JSONL" --markdown "$MD" \
    --title "N-loop Reactor vs tokio multi-thread (unpinned, $CPUS CPUs)"
