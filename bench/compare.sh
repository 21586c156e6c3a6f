#!/usr/bin/env bash
# bench/compare.sh: run the benchmark matrix (our echo example's concurrency
# strategies against std-echo, tokio-echo and Python socketserver baselines)
# and write bench/results/latest.{jsonl,md} and bench/results/ratios.svg.
#
# See bench/README.md for the workloads, the knobs below and how to read the
# output. Everything runs on loopback only; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh" # say/warn/die, json_escape, alive, descendants, start_server, stop_server

# ---------------------------------------------------------------- knobs ----
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-1}
    BULK_MIB=${BULK_MIB:-16}
    IDLE_CONNS=${IDLE_CONNS:-1000}
    STRACE_REQUESTS=${STRACE_REQUESTS:-2000}
    SHUTDOWN_TRIALS=${SHUTDOWN_TRIALS:-20}
else
    DURATION=${DURATION:-5}
    BULK_MIB=${BULK_MIB:-64}
    IDLE_CONNS=${IDLE_CONNS:-10000}
    STRACE_REQUESTS=${STRACE_REQUESTS:-20000}
    SHUTDOWN_TRIALS=${SHUTDOWN_TRIALS:-100}
fi
REPEAT=${REPEAT:-1}            # runs per case; the report keeps the median
RR_CONNS=${RR_CONNS:-"1 16 256"}
RR_SIZE=${RR_SIZE:-64}
CHURN_WORKERS=${CHURN_WORKERS:-8}
BULK_CONNS=${BULK_CONNS:-4}
UDP_CLIENTS=${UDP_CLIENTS:-8}
UDP_LOSS_MS=${UDP_LOSS_MS:-200}
STRATEGIES=${STRATEGIES:-"sequential threading forking pool prefork reactor"}
IDLE_TARGETS=${IDLE_TARGETS:-"ours:reactor ours:threading std-echo tokio-echo python:threading-tcp"}
SYSCALL_TARGETS=${SYSCALL_TARGETS:-"ours:threading ours:reactor std-echo tokio-echo"}
ONLY=${ONLY:-}                 # regex: run only targets whose name matches
PIN=${PIN:-1}                  # 0 = never pin with taskset
SKIP_BUILD=${SKIP_BUILD:-0}    # 1 = use the binaries already built
INSTALL_WRK=${INSTALL_WRK:-1}  # 0 = never apt-get install wrk
START_TIMEOUT=${START_TIMEOUT:-10}  # seconds for a server to print its address
STOP_TIMEOUT=${STOP_TIMEOUT:-5}     # seconds after SIGTERM before SIGKILL
RESULTS=${RESULTS_DIR:-$BENCH/results}
LOADGEN=${LOADGEN:-$ROOT/target/release/examples/loadgen}
ECHO_BIN=${ECHO_BIN:-$ROOT/target/release/examples/echo}
HTTP_BIN=${HTTP_BIN:-$ROOT/target/release/examples/http_hello}
SHUTDOWN_BIN=${SHUTDOWN_BIN:-$ROOT/target/release/examples/shutdown_latency}
# Our servers' fixed flags, for parity with the baselines (see bench/README.md): a 64 KiB read buffer
# (Python's echo reads 64 KiB with read1, std-echo 16 KiB), no read and write timeouts (none of the
# baselines sets any; ours default to 60 s, which costs the blocking strategies a kernel timer per
# waiting read, 1.5-2.5 % at rr-16 and rr-256: BENCHMARKS.md), Forking's cap raised like Python's
# ForkingTCPServer (40 -> 1024), Threading's cap above the 10,000 idle connections.
OURS_FLAGS=${OURS_FLAGS:-"--rbufsize 65536 --timeout-secs 0"}
FORKING_FLAGS=${FORKING_FLAGS:-"--max-children 1024"}
THREADING_FLAGS=${THREADING_FLAGS:-"--max-threads 10100"}
STD_ECHO=$BENCH/std-echo/target/release/std-echo
TOKIO_ECHO=$BENCH/tokio-echo/target/release/tokio-echo

export PYTHONDONTWRITEBYTECODE=1
JSONL=$RESULTS/latest.jsonl
LOGS=$RESULTS/logs

# ------------------------------------------------------------- tools -------
say "checking tools"
HAVE_PYTHON=0 HAVE_TASKSET=0 HAVE_WRK=0 HAVE_STRACE=0
command -v cargo >/dev/null || die "cargo not found"
command -v timeout >/dev/null || die "coreutils 'timeout' not found"
command -v python3 >/dev/null && HAVE_PYTHON=1 || warn "python3 missing: Python baselines, the markdown report and the chart are skipped"
command -v taskset >/dev/null && HAVE_TASKSET=1 || warn "taskset missing (util-linux): runs are not pinned"
command -v strace >/dev/null && HAVE_STRACE=1 || warn "strace missing: syscalls-per-request is skipped (apt-get install strace)"
if command -v wrk >/dev/null; then
    HAVE_WRK=1
elif [[ $INSTALL_WRK == 1 && $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "setup step: wrk (HTTP load generator) is missing; installing it with apt-get (INSTALL_WRK=0 to skip)"
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } >"${TMPDIR:-/tmp}/compare-apt.log" 2>&1; then
        HAVE_WRK=1
    else
        warn "apt-get install wrk failed (see ${TMPDIR:-/tmp}/compare-apt.log): HTTP rows are skipped"
    fi
else
    warn "wrk missing: HTTP rows are skipped (apt-get install wrk)"
fi

CPUS=$(nproc 2>/dev/null || echo 1)
SERVER_PIN=() LOAD_PIN=() PINNED=no
if [[ $PIN == 1 && $HAVE_TASKSET == 1 && $CPUS -ge 2 ]]; then
    SERVER_PIN=(taskset -c 0) LOAD_PIN=(taskset -c 1) PINNED=yes
elif [[ $PIN == 1 ]]; then
    warn "not pinning (needs taskset and >= 2 CPUs)"
fi

# Raise our own descriptor limit; servers and loadgen inherit it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || warn "could not raise ulimit -n to the hard limit ($(ulimit -Hn))"

# ------------------------------------------------------------- build -------
if [[ $SKIP_BUILD != 1 ]]; then
    say "building the main crate's examples (release)"
    if ! (cd "$ROOT" && cargo build --release --examples); then
        warn "cargo build --release --examples failed; trying the loadgen example alone"
        (cd "$ROOT" && cargo build --release --example loadgen) || warn "loadgen did not build either"
    fi
    for pkg in std-echo tokio-echo; do
        say "building bench/$pkg (release)"
        (cd "$BENCH/$pkg" && cargo build --release) || warn "bench/$pkg did not build: its rows will be n/a"
    done
fi
[[ -x $LOADGEN ]] || die "loadgen not found at $LOADGEN (build it with 'cargo build --release --example loadgen' or set LOADGEN=path)"
[[ -x $ECHO_BIN ]] || warn "our echo example is missing ($ECHO_BIN): its rows are n/a"

mkdir -p "$RESULTS" "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.err "$LOGS"/*.out 2>/dev/null || true
: >"$JSONL"

# ------------------------------------------------------------ helpers ------

# record_status TARGET TRANSPORT CASE STATUS REASON
record_status() {
    printf '{"target":"%s","transport":"%s","case":"%s","status":"%s","reason":"%s","pinned":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$(json_escape "$5")" "$PINNED" >>"$JSONL"
}

# Extra flags for our server in the next run_case (e.g. --workers for pool/prefork at rr-N).
CASE_FLAGS=()

# server_cmd TARGET TRANSPORT: fills CMD, or returns 1 with NA_REASON set.
server_cmd() {
    local target=$1 transport=$2
    CMD=() NA_REASON=""
    case $target in
    ours:*)
        [[ -x $ECHO_BIN ]] || { NA_REASON="echo example not built"; return 1; }
        CMD=("$ECHO_BIN" --addr 127.0.0.1:0 --transport "$transport" --concurrency "${target#ours:}")
        # shellcheck disable=SC2206 # the flag lists are meant to split on spaces
        # Not for idle: an idle connection's memory is measured with the default buffers a user has.
        [[ $transport == tcp && -z ${IDLE_RUN:-} ]] && CMD+=($OURS_FLAGS)
        # shellcheck disable=SC2206
        case ${target#ours:} in
        forking) CMD+=($FORKING_FLAGS) ;;
        threading) CMD+=($THREADING_FLAGS) ;;
        esac
        CMD+=("${CASE_FLAGS[@]}")
        ;;
    python:*)
        [[ $HAVE_PYTHON == 1 ]] || { NA_REASON="python3 missing"; return 1; }
        CMD=(python3 "$BENCH/python/echo_servers.py" "${target#python:}" --addr 127.0.0.1:0)
        ;;
    std-echo)
        [[ -x $STD_ECHO ]] || { NA_REASON="std-echo not built"; return 1; }
        CMD=("$STD_ECHO" --addr 127.0.0.1:0 --transport "$transport")
        ;;
    tokio-echo)
        [[ -x $TOKIO_ECHO ]] || { NA_REASON="tokio-echo not built"; return 1; }
        CMD=("$TOKIO_ECHO" --addr 127.0.0.1:0 --transport "$transport")
        ;;
    *) die "unknown target $target" ;;
    esac
}


cleanup() {
    [[ -n ${SERVER_PID:-} ]] && stop_server
    [[ -n ${STRACE_PID:-} ]] && kill -TERM "$STRACE_PID" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT TERM

declare -A UNSUPPORTED=()

# run_case TARGET TRANSPORT CASE LIMIT_SECONDS LOADGEN_ARGS...
# Starts a fresh server, runs loadgen once, stops the server, appends a line.
run_case() {
    local target=$1 transport=$2 case=$3 limit=$4 rep
    shift 4
    if [[ -n ${UNSUPPORTED[$target/$transport]:-} ]]; then
        record_status "$target" "$transport" "$case" n/a "${UNSUPPORTED[$target/$transport]}"
        return 0
    fi
    if ! server_cmd "$target" "$transport"; then
        record_status "$target" "$transport" "$case" n/a "$NA_REASON"
        return 0
    fi
    for ((rep = 1; rep <= REPEAT; rep++)); do
        run_once "$target" "$transport" "$case" "$limit" "$rep" "$@" || break
    done
}

# run_once TARGET TRANSPORT CASE LIMIT REP LOADGEN_ARGS...: one repetition;
# returns 1 when repeating makes no sense (unsupported / did not start).
run_once() {
    local target=$1 transport=$2 case=$3 limit=$4 rep=$5 log rc line reason
    shift 5
    log="$LOGS/${target//[:\/]/_}-$transport-$case"
    ((REPEAT > 1)) && log+="-$rep"
    rc=0
    start_server "$log" "${CMD[@]}" || rc=$?
    if ((rc == 2)); then
        UNSUPPORTED[$target/$transport]="unsupported (server exit 2: $(head -c 200 "$log.err" | head -n1))"
        record_status "$target" "$transport" "$case" n/a "${UNSUPPORTED[$target/$transport]}"
        printf '    %-24s %-5s %-14s n/a (unsupported)\n' "$target" "$transport" "$case" >&2
        return 1
    elif ((rc != 0)); then
        reason="server failed to start: $SERVER_EXIT"
        [[ -s $log.err ]] && reason+="; $(tail -n 3 "$log.err")"
        record_status "$target" "$transport" "$case" failed "$reason"
        printf '    %-24s %-5s %-14s FAILED (server did not start)\n' "$target" "$transport" "$case" >&2
        return 1
    fi
    local args=("$@")
    args=("${args[@]//@PID@/$SERVER_PID}")
    rc=0
    timeout -k 5 "$limit" "${LOAD_PIN[@]}" "$LOADGEN" --addr "$SERVER_ADDR" \
        --tag "target=$target" --tag "transport=$transport" --tag "case=$case" --tag "pinned=$PINNED" --tag "rep=$rep" \
        "${args[@]}" >"$log.log" 2>&1 || rc=$?
    stop_server
    line=$(grep -m1 '^RESULT ' "$log.log" || true)
    line=${line#RESULT }
    if [[ -n $line ]]; then
        local status=ok
        ((rc != 0)) && status=failed
        line="${line%\}},\"status\":\"$status\",\"server_exit\":\"$SERVER_EXIT\",\"server_note\":\"$(json_escape "$SERVER_NOTE")\"}"
        printf '%s\n' "$line" >>"$JSONL"
    else
        reason="loadgen exit $rc: $(grep -v '^ ' "$log.log" | tail -n 2)"
        ((rc == 124 || rc == 137)) && reason="loadgen killed by the outer timeout (${limit}s)"
        record_status "$target" "$transport" "$case" failed "$reason"
    fi
    printf '    %-24s %-5s %-14s %s\n' "$target" "$transport" "$case$( ((REPEAT > 1)) && echo " #$rep")" \
        "$(summarize "$line" "$rc")${SERVER_NOTE:+  [server: $SERVER_NOTE]}" >&2
}

# One-line progress summary of a RESULT line.
summarize() {
    local line=$1 rc=$2 key
    [[ -z $line ]] && { echo "FAILED (see logs)"; return; }
    for key in rps cps mib_per_s kib_per_conn; do
        if [[ $line =~ \"$key\":([0-9.e+-]+) ]]; then
            printf '%s=%s errors=%s' "$key" "${BASH_REMATCH[1]}" "$([[ $line =~ \"errors\":([0-9]+) ]] && echo "${BASH_REMATCH[1]}")"
            ((rc != 0)) && printf ' (loadgen exit %s)' "$rc"
            return
        fi
    done
    echo "?"
}

in_list() {
    local x=$1 item
    shift
    for item in $*; do [[ $item == "$x" ]] && return 0; done
    return 1
}

selected() { [[ -z $ONLY || $1 =~ $ONLY ]]; }

# ---------------------------------------------------------- metadata -------
START_EPOCH=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
printf '{"meta":true,"date":"%s","kernel":"%s","cpus":%s,"pinned":"%s","quick":"%s","duration_s":%s,"bulk_mib":%s,"idle_conns":%s,"repeat":%s,"load_start":"%s","rev":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$CPUS" "$PINNED" "$QUICK" "$DURATION" "$BULK_MIB" "$IDLE_CONNS" \
    "$REPEAT" "$LOAD_START" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$JSONL"
say "load average at start: $LOAD_START (other processes on the machine compete for the CPUs)"

TCP_TARGETS=() UDP_TARGETS=()
for s in $STRATEGIES; do
    TCP_TARGETS+=("ours:$s") UDP_TARGETS+=("ours:$s")
done
TCP_TARGETS+=(python:tcp python:threading-tcp python:forking-tcp std-echo tokio-echo)
UDP_TARGETS+=(python:udp python:threading-udp python:forking-udp std-echo tokio-echo)

is_sequential() { [[ $1 == ours:sequential || $1 == python:tcp ]]; }

# --------------------------------------------------------------- TCP -------
say "TCP workloads (duration ${DURATION}s, pinned: $PINNED)"
for t in "${TCP_TARGETS[@]}"; do
    selected "$t" || continue
    for n in $RR_CONNS; do
        if ((n > 1)) && is_sequential "$t"; then
            record_status "$t" tcp "rr-$n" n/a "sequential: one connection at a time"
            continue
        fi
        # Pool and PreFork serve one connection per worker: give them a worker per persistent connection.
        CASE_FLAGS=()
        if ((n > 1)) && [[ $t == ours:pool || $t == ours:prefork ]]; then
            CASE_FLAGS=(--workers "$n")
        fi
        run_case "$t" tcp "rr-$n" $((DURATION + 60)) tcp-rr --conns "$n" --size "$RR_SIZE" --duration "$DURATION"
        CASE_FLAGS=()
    done
    run_case "$t" tcp "churn-$CHURN_WORKERS" $((DURATION + 40)) tcp-churn --workers "$CHURN_WORKERS" --size "$RR_SIZE" --duration "$DURATION"
    run_case "$t" tcp "bulk-${BULK_CONNS}x$BULK_MIB" 300 tcp-bulk --conns "$BULK_CONNS" --mib "$BULK_MIB"
    if in_list "$t" "$IDLE_TARGETS"; then
        IDLE_RUN=1 run_case "$t" tcp "idle-$IDLE_CONNS" 900 idle --conns "$IDLE_CONNS" --pid @PID@
    fi
done

# --------------------------------------------------------------- UDP -------
say "UDP workloads"
for t in "${UDP_TARGETS[@]}"; do
    selected "$t" || continue
    run_case "$t" udp "udp-rr-$UDP_CLIENTS" $((DURATION + 40)) udp-rr --clients "$UDP_CLIENTS" --size "$RR_SIZE" \
        --duration "$DURATION" --loss-timeout-ms "$UDP_LOSS_MS"
done

# ------------------------------------------------------ syscalls/request ---
STRACE_PID=""
if [[ $HAVE_STRACE == 1 ]]; then
    say "syscalls per request (strace -c -f, tcp-rr 1 conn x $STRACE_REQUESTS requests)"
    for t in $SYSCALL_TARGETS; do
        selected "$t" || continue
        if [[ -n ${UNSUPPORTED[$t/tcp]:-} ]] || ! server_cmd "$t" tcp; then
            record_status "$t" tcp syscalls n/a "${UNSUPPORTED[$t/tcp]:-$NA_REASON}"
            printf '    %-24s syscalls: n/a\n' "$t" >&2
            continue
        fi
        log="$LOGS/${t//[:\/]/_}-tcp-syscalls"
        rc=0
        start_server "$log" "${CMD[@]}" || rc=$?
        if ((rc != 0)); then
            record_status "$t" tcp syscalls "$([[ $rc == 2 ]] && echo n/a || echo failed)" "server did not start ($SERVER_EXIT)"
            continue
        fi
        strace -f -c -o "$log.strace" -p "$SERVER_PID" 2>"$log.strace.err" &
        STRACE_PID=$!
        for ((i = 0; i < 100; i++)); do # until attached (5 s at most)
            grep -q attached "$log.strace.err" 2>/dev/null && break
            sleep 0.05
        done
        rc=0
        timeout -k 5 300 "${LOAD_PIN[@]}" "$LOADGEN" --addr "$SERVER_ADDR" tcp-rr --conns 1 --size "$RR_SIZE" \
            --requests "$STRACE_REQUESTS" --duration 240 >"$log.log" 2>&1 || rc=$?
        kill -INT "$STRACE_PID" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            alive "$STRACE_PID" || break
            sleep 0.05
        done
        alive "$STRACE_PID" && kill -KILL "$STRACE_PID" 2>/dev/null
        wait "$STRACE_PID" 2>/dev/null || true
        STRACE_PID=""
        stop_server
        done_requests=$(grep -m1 '^RESULT ' "$log.log" | grep -o '"requests":[0-9]*' | cut -d: -f2 || true)
        calls=$(awk '$NF == "total" { print $4 }' "$log.strace" 2>/dev/null || true)
        if [[ $rc == 0 && -n $calls && -n $done_requests && $done_requests -gt 0 ]]; then
            per=$(awk -v c="$calls" -v r="$done_requests" 'BEGIN { printf "%.2f", c / r }')
            printf '{"target":"%s","transport":"tcp","case":"syscalls","status":"ok","requests":%s,"syscalls":%s,"syscalls_per_request":%s,"pinned":"%s"}\n' \
                "$t" "$done_requests" "$calls" "$per" "$PINNED" >>"$JSONL"
            printf '    %-24s syscalls/request = %s (%s calls / %s requests)\n' "$t" "$per" "$calls" "$done_requests" >&2
        else
            record_status "$t" tcp syscalls failed "loadgen exit $rc; strace: $(tail -n 1 "$log.strace.err" 2>/dev/null)"
            printf '    %-24s syscalls: FAILED (see %s.*)\n' "$t" "$log" >&2
        fi
    done
else
    record_status all tcp syscalls n/a "strace missing"
fi

# --------------------------------------------------------------- HTTP ------
say "HTTP (wrk -t1 -c16 -d${DURATION}s)"
to_us() { # wrk latency like 1.23ms / 456.78us / 1.2s -> microseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}
for t in ours:http_hello python:http_hello; do
    selected "$t" || continue
    if [[ $HAVE_WRK != 1 ]]; then
        record_status "$t" http "http-16" n/a "wrk missing"
        continue
    fi
    if [[ $t == ours:* ]]; then
        [[ -x $HTTP_BIN ]] || { record_status "$t" http http-16 n/a "http_hello example not built"; continue; }
        CMD=("$HTTP_BIN" --addr 127.0.0.1:0 --concurrency threading)
    else
        [[ $HAVE_PYTHON == 1 ]] || { record_status "$t" http http-16 n/a "python3 missing"; continue; }
        CMD=(python3 "$BENCH/python/http_hello.py" --addr 127.0.0.1:0)
    fi
    log="$LOGS/${t//[:\/]/_}-http"
    rc=0
    start_server "$log" "${CMD[@]}" || rc=$?
    if ((rc != 0)); then
        record_status "$t" http http-16 "$([[ $rc == 2 ]] && echo n/a || echo failed)" "server did not start ($SERVER_EXIT)"
        continue
    fi
    rc=0
    timeout -k 5 $((DURATION + 30)) "${LOAD_PIN[@]}" wrk -t1 -c16 -d"${DURATION}s" --latency "http://$SERVER_ADDR/" >"$log.log" 2>&1 || rc=$?
    stop_server
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$log.log")
    p50=$(awk '$1 == "50%" { print $2 }' "$log.log")
    p99=$(awk '$1 == "99%" { print $2 }' "$log.log")
    errs=$(awk '/Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 } /Non-2xx/ { e += $NF } END { print e + 0 }' "$log.log")
    if [[ $rc == 0 && -n $rps ]]; then
        printf '{"target":"%s","transport":"http","case":"http-16","workload":"http","status":"ok","rps":%s,"p50_us":%s,"p99_us":%s,"errors":%s,"pinned":"%s","server_exit":"%s","server_note":"%s"}\n' \
            "$t" "$rps" "$(to_us "$p50")" "$(to_us "$p99")" "${errs:-0}" "$PINNED" "$SERVER_EXIT" "$(json_escape "$SERVER_NOTE")" >>"$JSONL"
        printf '    %-24s http  http-16        rps=%s\n' "$t" "$rps" >&2
    else
        record_status "$t" http http-16 failed "wrk exit $rc: $(tail -n 1 "$log.log")"
        printf '    %-24s http  http-16        FAILED\n' "$t" >&2
    fi
done

# ---------------------------------------------------------- shutdown -------
say "shutdown latency (serve_forever's return after a shutdown request on an idle server, $SHUTDOWN_TRIALS trials)"
# run_shutdown TARGET CMD...: one RESULT line, appended with the target's name.
run_shutdown() {
    local target=$1 log rc line
    shift
    log="$LOGS/${target//[:\/]/_}-shutdown"
    rc=0
    timeout -k 5 600 "${SERVER_PIN[@]}" "$@" >"$log.log" 2>&1 || rc=$?
    line=$(grep -m1 '^RESULT ' "$log.log" || true)
    line=${line#RESULT }
    if [[ $rc == 0 && -n $line ]]; then
        printf '%s\n' "${line%\}},\"target\":\"$target\",\"transport\":\"tcp\",\"case\":\"shutdown\",\"status\":\"ok\",\"pinned\":\"$PINNED\"}" >>"$JSONL"
        printf '    %-24s shutdown p99 = %s us\n' "$target" "$([[ $line =~ \"p99_us\":([0-9.]+) ]] && echo "${BASH_REMATCH[1]}")" >&2
    elif [[ $rc == 2 ]]; then
        record_status "$target" tcp shutdown n/a "unsupported (exit 2)"
    else
        record_status "$target" tcp shutdown failed "exit $rc: $(tail -n 2 "$log.log")"
        printf '    %-24s shutdown FAILED (see %s.log)\n' "$target" "$log" >&2
    fi
}
for s in $STRATEGIES; do
    selected "ours:$s" || continue
    if [[ ! -x $SHUTDOWN_BIN ]]; then
        record_status "ours:$s" tcp shutdown n/a "shutdown_latency example not built"
        continue
    fi
    run_shutdown "ours:$s" "$SHUTDOWN_BIN" --strategy "$s" --trials "$SHUTDOWN_TRIALS"
done
if selected python:tcp; then
    if [[ $HAVE_PYTHON == 1 ]]; then
        run_shutdown python:tcp python3 "$BENCH/python/shutdown_latency.py" --kind tcp --trials "$SHUTDOWN_TRIALS"
    else
        record_status python:tcp tcp shutdown n/a "python3 missing"
    fi
fi

# ------------------------------------------------------------- report ------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
printf '{"meta_end":true,"elapsed_s":%s,"load_end":"%s"}\n' "$(($(date +%s) - START_EPOCH))" "$LOAD_END" >>"$JSONL"
say "matrix done in $(($(date +%s) - START_EPOCH))s (load average at the end: $LOAD_END); results in $JSONL"
if [[ $HAVE_PYTHON == 1 ]]; then
    python3 "$BENCH/report.py" "$JSONL" --markdown "$RESULTS/latest.md" --ratios "$RESULTS/ratios.json"
    python3 "$BENCH/chart.py" "$RESULTS/ratios.json" "$RESULTS/ratios.svg"
    say "wrote $RESULTS/latest.md and $RESULTS/ratios.svg"
else
    cat "$JSONL"
fi
