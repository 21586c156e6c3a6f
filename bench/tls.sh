#!/usr/bin/env bash
# bench/tls.sh: TLS benchmarks (issue 12, item 7): our echo example over TLS (`--tls-cert/--tls-key`)
# under Threading and Pool, against a tokio + tokio-rustls echo, a hand-written thread-per-connection
# std + rustls echo and Python's ThreadingTCPServer with the ssl module, in interleaved rounds on the
# same machine. Writes bench/results/tls-latest.{jsonl,md}.
#
#   bench/tls.sh                    # ROUNDS=5, DURATION=5: about 8 minutes
#   QUICK=1 bench/tls.sh            # 2 rounds of 1 s: about 1 minute after the build
#   ROUNDS=3 DURATION=3 bench/tls.sh
#
# Cases (see bench/README.md, "TLS"):
#   rr-16      16 persistent TLS connections, 64-byte request/echo round trips: requests/s
#   hs-8       8 client threads, each: connect, full handshake (no resumption), one 64-byte round
#              trip, close: handshakes/s. The client sets TCP_QUICKACK, so the ~40 ms delayed-ACK
#              stall of a server without TCP_NODELAY (below) does not hide the server's own cost.
#   hs-8-stock the same with a stock client (no TCP_QUICKACK): what a client sees from the servers
#              as they are configured (tokio-rustls and python set no TCP_NODELAY; std-rustls sets
#              it, as our TLS layer does).
# Each round runs every case against every target in turn (the order rotates each round), a fresh
# server per run, the server pinned to CPU 0 and the load generator to CPU 1 (taskset, when there are
# 2+ CPUs). Besides the rate, each run records the server's CPU time per request or handshake, read
# from /proc (utime + stime), which does not depend on the load generator keeping up.
#
# Loopback only; every server is stopped with SIGTERM (SIGKILL after STOP_TIMEOUT) and reaped, and
# every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench

# ---------------------------------------------------------------- knobs ----
QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-1}
    ROUNDS=${ROUNDS:-2}
else
    DURATION=${DURATION:-5}
    ROUNDS=${ROUNDS:-5}
fi
RR_CONNS=${RR_CONNS:-16}
RR_SIZE=${RR_SIZE:-64}
HS_WORKERS=${HS_WORKERS:-8}
CASES=${CASES:-"rr-$RR_CONNS hs-$HS_WORKERS hs-$HS_WORKERS-stock"}
TARGETS=${TARGETS:-"ours:threading ours:pool ours:reactor tokio-rustls std-rustls python"}
ONLY=${ONLY:-}                 # regex: run only targets whose name matches
# Our servers' fixed flags, as bench/compare.sh gives them: a 64 KiB read buffer (Python's echo reads
# 64 KiB with read1) and no read and write timeouts (the baselines set none); Pool with a worker for
# each of the 16 persistent connections and more (its default 4 would leave 12 of them queued), 32
# for the handshake case's 8 clients as well.
OURS_FLAGS=${OURS_FLAGS:-"--rbufsize 65536 --timeout-secs 0"}
POOL_FLAGS=${POOL_FLAGS:-"--workers 32"}
PIN=${PIN:-1}                  # 0 = never pin with taskset
SKIP_BUILD=${SKIP_BUILD:-0}    # 1 = use the binaries already built (and copied, see ECHO_BIN)
START_TIMEOUT=${START_TIMEOUT:-10}  # seconds for a server to print its address
STOP_TIMEOUT=${STOP_TIMEOUT:-5}     # seconds after SIGTERM before SIGKILL
RESULTS=${RESULTS_DIR:-$BENCH/results}
TLS_PKG=$BENCH/tls
TLS_BIN=$TLS_PKG/target/release
LOADGEN=$TLS_BIN/tls-loadgen
TOKIO_RUSTLS=$TLS_BIN/tokio-rustls-echo
STD_RUSTLS=$TLS_BIN/std-rustls-echo
GEN_CERT=$TLS_BIN/gen-cert
# Our echo example, copied out of target/ right after it is built with `--features tls`, so that a
# concurrent `cargo build --examples` (without the feature) cannot swap the binary under the run.
ECHO_BIN=${ECHO_BIN:-$RESULTS/bin/echo-tls}
CERTS=$RESULTS/tls-certs
JSONL=$RESULTS/tls-latest.jsonl
LOGS=$RESULTS/logs/tls

export PYTHONDONTWRITEBYTECODE=1

# say, warn, die, json_escape and the server helpers: bench/lib.sh.
# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"

# ------------------------------------------------------------- tools -------
say "checking tools"
HAVE_PYTHON=0 HAVE_TASKSET=0 PYTHON=""
command -v cargo >/dev/null || die "cargo not found"
command -v timeout >/dev/null || die "coreutils 'timeout' not found"
if command -v python3 >/dev/null; then
    # The interpreter itself, not a version manager's shim: its PID is the server's, for /proc.
    PYTHON=$(python3 -c 'import sys; print(sys.executable)') && HAVE_PYTHON=1
fi
[[ $HAVE_PYTHON == 1 ]] || warn "python3 missing: the Python baseline and the markdown report are skipped"
command -v taskset >/dev/null && HAVE_TASKSET=1 || warn "taskset missing (util-linux): runs are not pinned"
CPUS=$(nproc 2>/dev/null || echo 1)
SERVER_PIN=() LOAD_PIN=() PINNED=no
if [[ $PIN == 1 && $HAVE_TASKSET == 1 && $CPUS -ge 2 ]]; then
    SERVER_PIN=(taskset -c 0) LOAD_PIN=(taskset -c 1) PINNED=yes
elif [[ $PIN == 1 ]]; then
    warn "not pinning (needs taskset and >= 2 CPUs)"
fi
# tokio-rustls's worker threads: the CPUs the server may use (1 when pinned), as tokio's default.
TOKIO_THREADS=${TOKIO_THREADS:-$([[ $PINNED == yes ]] && echo 1 || echo "$CPUS")}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# ------------------------------------------------------------- build -------
mkdir -p "$RESULTS" "$LOGS" "$(dirname "$ECHO_BIN")"
if [[ $SKIP_BUILD != 1 ]]; then
    say "building the echo example with TLS (release, --features tls)"
    if (cd "$ROOT" && cargo build --release --features tls --example echo); then
        cp "$ROOT/target/release/examples/echo" "$ECHO_BIN.tmp" && mv -f "$ECHO_BIN.tmp" "$ECHO_BIN"
    else
        warn "the echo example did not build with --features tls: our rows will be n/a"
        rm -f "$ECHO_BIN"
    fi
    say "building bench/tls (release): tls-loadgen, tokio-rustls-echo, std-rustls-echo, gen-cert"
    (cd "$TLS_PKG" && cargo build --release) || die "bench/tls did not build"
fi
[[ -x $LOADGEN && -x $GEN_CERT ]] || die "tls-loadgen/gen-cert not found in $TLS_BIN (build bench/tls, or drop SKIP_BUILD=1)"

say "generating a CA and a certificate for localhost (ECDSA P-256) in $CERTS"
"$GEN_CERT" --out "$CERTS" >/dev/null || die "gen-cert failed"
CA=$CERTS/ca.pem CERT=$CERTS/cert.pem KEY=$CERTS/key.pem

rm -f "$LOGS"/*.out "$LOGS"/*.err "$LOGS"/*.log 2>/dev/null || true
: >"$JSONL"

# ------------------------------------------------------------ helpers ------
# record_status TARGET CASE ROUND STATUS REASON
record_status() {
    printf '{"target":"%s","case":"%s","round":%s,"status":"%s","reason":"%s","pinned":"%s"}\n' \
        "$1" "$2" "$3" "$4" "$(json_escape "$5")" "$PINNED" >>"$JSONL"
}

# server_cmd TARGET CASE: fills CMD, or returns 1 with NA_REASON set.
server_cmd() {
    local target=$1
    CMD=() NA_REASON=""
    case $target in
    ours:*)
        [[ -x $ECHO_BIN ]] || { NA_REASON="echo example not built with --features tls"; return 1; }
        CMD=("$ECHO_BIN" --addr 127.0.0.1:0 --transport tcp --concurrency "${target#ours:}"
            --tls-cert "$CERT" --tls-key "$KEY")
        # shellcheck disable=SC2206 # the flag lists are meant to split on spaces
        CMD+=($OURS_FLAGS)
        if [[ $target == ours:pool ]]; then
            # shellcheck disable=SC2206
            CMD+=($POOL_FLAGS)
        fi
        ;;
    tokio-rustls)
        [[ -x $TOKIO_RUSTLS ]] || { NA_REASON="tokio-rustls-echo not built"; return 1; }
        CMD=("$TOKIO_RUSTLS" --addr 127.0.0.1:0 --cert "$CERT" --key "$KEY" --threads "$TOKIO_THREADS")
        ;;
    std-rustls)
        [[ -x $STD_RUSTLS ]] || { NA_REASON="std-rustls-echo not built"; return 1; }
        CMD=("$STD_RUSTLS" --addr 127.0.0.1:0 --cert "$CERT" --key "$KEY")
        ;;
    python)
        [[ $HAVE_PYTHON == 1 ]] || { NA_REASON="python3 missing"; return 1; }
        CMD=("$PYTHON" "$BENCH/python/tls_echo.py" --addr 127.0.0.1:0 --cert "$CERT" --key "$KEY")
        ;;
    *) die "unknown target $target" ;;
    esac
}

# loadgen_args CASE: fills LG_ARGS for the case, or fails for an unknown one.
loadgen_args() {
    case $1 in
    rr-*) LG_ARGS=(--size "$RR_SIZE" --duration "$DURATION" rr --conns "${1#rr-}") ;;
    hs-*-stock) LG_ARGS=(--size "$RR_SIZE" --duration "$DURATION" handshakes --workers "$(cut -d- -f2 <<<"$1")") ;;
    hs-*) LG_ARGS=(--size "$RR_SIZE" --duration "$DURATION" handshakes --workers "${1#hs-}" --quickack) ;;
    *) die "unknown case $1 (rr-N, hs-N, hs-N-stock)" ;;
    esac
}

cleanup() {
    [[ -n ${SERVER_PID:-} ]] && stop_server
    return 0
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT TERM

declare -A UNSUPPORTED=()

# run_once TARGET CASE ROUND: a fresh server, one load generator run, the server stopped; one line.
run_once() {
    local target=$1 case=$2 round=$3 log rc line reason c0 c1 ops per
    if [[ -n ${UNSUPPORTED[$target]:-} ]]; then
        record_status "$target" "$case" "$round" n/a "${UNSUPPORTED[$target]}"
        return 0
    fi
    if ! server_cmd "$target"; then
        record_status "$target" "$case" "$round" n/a "$NA_REASON"
        printf '    r%-2s %-16s %-14s n/a (%s)\n' "$round" "$target" "$case" "$NA_REASON" >&2
        return 0
    fi
    loadgen_args "$case"
    log="$LOGS/${target//[:\/]/_}-$case-r$round"
    rc=0
    start_server "$log" "${CMD[@]}" || rc=$?
    if ((rc == 2)); then
        reason="server exit 2: $(head -c 300 "$log.err" | grep -v '^\[' | head -n1)"
        UNSUPPORTED[$target]=$reason
        record_status "$target" "$case" "$round" n/a "$reason"
        printf '    r%-2s %-16s %-14s n/a: %s\n' "$round" "$target" "$case" "$reason" >&2
        return 0
    elif ((rc != 0)); then
        reason="server failed to start: $SERVER_EXIT"
        [[ -s $log.err ]] && reason+="; $(tail -n 3 "$log.err")"
        record_status "$target" "$case" "$round" failed "$reason"
        printf '    r%-2s %-16s %-14s FAILED (server did not start)\n' "$round" "$target" "$case" >&2
        return 0
    fi
    c0=$(cpu_ticks "$SERVER_PID")
    rc=0
    timeout -k 5 $((DURATION + 60)) "${LOAD_PIN[@]}" "$LOADGEN" --addr "$SERVER_ADDR" --ca "$CA" \
        --tag "target=$target" --tag "case=$case" --tag "round=$round" --tag "pinned=$PINNED" \
        "${LG_ARGS[@]}" >"$log.log" 2>"$log.lgerr" || rc=$?
    c1=$(cpu_ticks "$SERVER_PID")
    stop_server
    line=$(grep -m1 '^{' "$log.log" || true)
    if [[ -n $line ]]; then
        local status=ok
        ((rc != 0)) && status=failed
        ops=$([[ $line =~ \"(requests|handshakes)\":([0-9]+) ]] && echo "${BASH_REMATCH[2]}" || echo 0)
        per=$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$ops" 'BEGIN { if (n > 0) printf "%.2f", t / hz * 1e6 / n; else print "null" }')
        line="${line%\}},\"status\":\"$status\",\"loadgen_exit\":$rc,\"server_cpu_s\":$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'),\"server_cpu_us_per_op\":$per,\"server_exit\":\"$SERVER_EXIT\",\"server_note\":\"$(json_escape "$SERVER_NOTE")\"}"
        printf '%s\n' "$line" >>"$JSONL"
    else
        reason="tls-loadgen exit $rc: $(tail -n 2 "$log.lgerr")"
        ((rc == 124 || rc == 137)) && reason="tls-loadgen killed by the outer timeout ($((DURATION + 60))s)"
        record_status "$target" "$case" "$round" failed "$reason"
    fi
    printf '    r%-2s %-16s %-14s %s\n' "$round" "$target" "$case" "$(summarize "$line" "$rc")${SERVER_NOTE:+  [server: $SERVER_NOTE]}" >&2
}

# One-line progress summary of a result line.
summarize() {
    local line=$1 rc=$2 key
    [[ -z $line ]] && { echo "FAILED (see $LOGS)"; return; }
    for key in rps hps; do
        if [[ $line =~ \"$key\":([0-9.]+) ]]; then
            printf '%s=%s' "$key" "${BASH_REMATCH[1]}"
            [[ $line =~ \"p99_us\":([0-9]+) ]] && printf ' p99=%sus' "${BASH_REMATCH[1]}"
            [[ $line =~ \"server_cpu_us_per_op\":([0-9.]+) ]] && printf ' server-cpu/op=%sus' "${BASH_REMATCH[1]}"
            [[ $line =~ \"errors\":([0-9]+) ]] && printf ' errors=%s' "${BASH_REMATCH[1]}"
            ((rc != 0)) && printf ' (loadgen exit %s)' "$rc"
            return
        fi
    done
    echo "?"
}

selected() { [[ -z $ONLY || $1 =~ $ONLY ]]; }

# ---------------------------------------------------------- the rounds -----
START_EPOCH=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
printf '{"meta":true,"date":"%s","kernel":"%s","cpus":%s,"cpu_model":"%s","pinned":"%s","quick":"%s","rounds":%s,"duration_s":%s,"rr_conns":%s,"size":%s,"hs_workers":%s,"tokio_threads":%s,"ours_flags":"%s","pool_flags":"%s","load_start":"%s","rev":"%s","dirty":%s,"python":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(uname -r)" "$CPUS" \
    "$(json_escape "$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //')")" \
    "$PINNED" "$QUICK" "$ROUNDS" "$DURATION" "$RR_CONNS" "$RR_SIZE" "$HS_WORKERS" "$TOKIO_THREADS" \
    "$OURS_FLAGS" "$POOL_FLAGS" "$LOAD_START" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$([[ -n $(git -C "$ROOT" status --porcelain -- src examples 2>/dev/null) ]] && echo true || echo false)" \
    "$(json_escape "$([[ $HAVE_PYTHON == 1 ]] && "$PYTHON" -c 'import ssl, sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)')")" >>"$JSONL"
say "load average at start: $LOAD_START; $ROUNDS rounds x ($CASES) x ($TARGETS), ${DURATION}s each, pinned: $PINNED"

read -r -a TARGET_LIST <<<"$TARGETS"
n_targets=${#TARGET_LIST[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    say "round $round/$ROUNDS (load average $(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo ?))"
    for case in $CASES; do
        # Rotate the targets' order each round, so none is always measured first or last.
        for ((k = 0; k < n_targets; k++)); do
            t=${TARGET_LIST[$(((k + round - 1) % n_targets))]}
            selected "$t" || continue
            run_once "$t" "$case" "$round"
        done
    done
done

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
printf '{"meta_end":true,"elapsed_s":%s,"load_end":"%s"}\n' "$(($(date +%s) - START_EPOCH))" "$LOAD_END" >>"$JSONL"
say "done in $(($(date +%s) - START_EPOCH))s (load average at the end: $LOAD_END); results in $JSONL"
if [[ $HAVE_PYTHON == 1 ]]; then
    "$PYTHON" "$BENCH/tls_report.py" "$JSONL" --markdown "$RESULTS/tls-latest.md"
    say "wrote $RESULTS/tls-latest.md"
else
    cat "$JSONL"
fi
