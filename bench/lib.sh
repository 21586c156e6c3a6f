#!/usr/bin/env bash
# bench/lib.sh: helpers shared by the benchmark scripts (compare.sh, multicore.sh, fanout.sh).
# Source it (`. "$BENCH/lib.sh"`) after `set -euo pipefail`; it defines functions and a few globals
# only, and runs nothing.
#
# Globals the functions read (set by the caller):
#   SERVER_PIN     array prefix for servers (e.g. (taskset -c 0)); empty = unpinned
#   START_TIMEOUT  seconds to wait for a server's `listening on ADDR` line (required)
#   STOP_TIMEOUT   seconds after SIGTERM before SIGKILL (required)
# and the ones they set: SERVER_PID, SERVER_ADDR, SERVER_EXIT, SERVER_NOTE.

[[ -v SERVER_PIN ]] || SERVER_PIN=()

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# json_escape STRING: STRING made safe inside a JSON string literal.
json_escape() {
    local s
    s=$(printf '%s' "$1" | tr -d '\000-\010\013-\037' | tr '\n\t' '  ')
    s=${s//\\/\\\\}
    printf '%s' "${s//\"/\\\"}"
}

# alive PID: true while PID exists and is not a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# descendants PID: "pid:starttime" of every descendant (to kill leftovers safely).
descendants() {
    local queue=("$1") out=() p c st
    local guard=0
    while ((${#queue[@]} > 0 && guard < 100000)); do
        p=${queue[0]}
        queue=("${queue[@]:1}")
        guard=$((guard + 1))
        for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
            st=$(cut -d' ' -f22 "/proc/$c/stat" 2>/dev/null || true)
            out+=("$c:$st")
            queue+=("$c")
        done
    done
    printf '%s\n' "${out[@]}"
}

SERVER_PID="" SERVER_ADDR="" SERVER_EXIT="" SERVER_NOTE=""

# start_server LOG CMD...: starts the (pinned) server, waits for its
# "listening on ADDR" line. Returns 0 (SERVER_PID/SERVER_ADDR set), 2 if the
# server rejected its arguments (exit status 2: unsupported), 1 otherwise.
start_server() {
    local log=$1 line="" i
    shift
    SERVER_ADDR="" SERVER_EXIT=""
    : >"$log.out"
    "${SERVER_PIN[@]}" "$@" >"$log.out" 2>"$log.err" </dev/null &
    SERVER_PID=$!
    for ((i = 0; i < START_TIMEOUT * 20; i++)); do
        if IFS= read -r line <"$log.out" && [[ $line =~ ^listening\ on\ (.+)$ ]]; then
            SERVER_ADDR=${BASH_REMATCH[1]}
            return 0
        fi
        if ! alive "$SERVER_PID"; then
            SERVER_EXIT=0
            wait "$SERVER_PID" || SERVER_EXIT=$?
            SERVER_PID=""
            [[ $SERVER_EXIT == 2 ]] && return 2
            return 1
        fi
        sleep 0.05
    done
    stop_server
    SERVER_EXIT="no 'listening on' line within ${START_TIMEOUT}s"
    return 1
}

# stop_server: SIGTERM to the PID we started, wait up to STOP_TIMEOUT, then
# SIGKILL. Sets SERVER_EXIT and SERVER_NOTE ("" when the contract was kept).
stop_server() {
    local pid=$SERVER_PID kids entry k st i
    SERVER_NOTE=""
    [[ -n $pid ]] || return 0
    kids=$(descendants "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do
        alive "$pid" || break
        sleep 0.05
    done
    if alive "$pid"; then
        SERVER_NOTE="did not exit within ${STOP_TIMEOUT}s of SIGTERM; killed"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    SERVER_EXIT=0
    wait "$pid" 2>/dev/null || SERVER_EXIT=$?
    if [[ -z $SERVER_NOTE && $SERVER_EXIT != 0 ]]; then
        SERVER_NOTE="exit status $SERVER_EXIT after SIGTERM (contract: 0)"
    fi
    # Children still running after their parent is gone: kill exactly those
    # PIDs (checked against their start time, so a reused PID is never hit).
    for ((i = 0; i < 20; i++)); do
        local left=0
        for entry in $kids; do
            k=${entry%%:*}
            st=$(cut -d' ' -f22 "/proc/$k/stat" 2>/dev/null || true)
            [[ -n $st && $st == "${entry#*:}" ]] && alive "$k" && left=$((left + 1))
        done
        ((left == 0)) && break
        sleep 0.05
    done
    for entry in $kids; do
        k=${entry%%:*}
        st=$(cut -d' ' -f22 "/proc/$k/stat" 2>/dev/null || true)
        if [[ -n $st && $st == "${entry#*:}" ]] && alive "$k"; then
            kill -KILL "$k" 2>/dev/null || true
            SERVER_NOTE="${SERVER_NOTE:+$SERVER_NOTE; }killed leftover child $k"
        fi
    done
    SERVER_PID=""
}

# cpu_ticks PID: utime + stime of the process (all its threads, live and exited), in clock ticks.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    stat=${stat##*) }
    # After "comm)": field 3 is the state; utime and stime are fields 14 and 15, so 12 and 13 here.
    awk '{ print $12 + $13 }' <<<"$stat"
}

# snapshot_bin SRC DEST: copies a freshly built binary out of target/ (atomically), so a concurrent
# `cargo build` elsewhere cannot swap it during a run.
snapshot_bin() {
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.tmp" && mv -f "$2.tmp" "$2"
}

# need_bin PATH WHAT: dies with a clear message when PATH is not an executable.
need_bin() {
    [[ -x $1 ]] || die "$2 not found at $1 (build it, or drop SKIP_BUILD=1)"
}

# ---- a server under a counting wrapper (perf stat / strace -c) --------------------------------
WRAP_PID="" WRAPPED_PID=""

# start_wrapped LOG WRAPPER... -- CMD...: starts `WRAPPER... CMD...` (the wrapper forks and execs
# CMD, as `perf stat -- CMD` and `strace -f -c -- CMD` do) and waits for CMD's `listening on ADDR`
# line in LOG.out. Sets WRAP_PID (the wrapper), WRAPPED_PID (the server) and SERVER_ADDR; returns 1
# (everything stopped) if it does not start within START_TIMEOUT.
start_wrapped() {
    local log=$1 line="" i
    shift
    SERVER_ADDR="" WRAPPED_PID=""
    : >"$log.out"
    "$@" >"$log.out" 2>"$log.err" </dev/null &
    WRAP_PID=$!
    for ((i = 0; i < START_TIMEOUT * 20; i++)); do
        if IFS= read -r line <"$log.out" && [[ $line =~ ^listening\ on\ (.+)$ ]]; then
            SERVER_ADDR=${BASH_REMATCH[1]}
            break
        fi
        alive "$WRAP_PID" || break
        sleep 0.05
    done
    WRAPPED_PID=$(cat /proc/"$WRAP_PID"/task/*/children 2>/dev/null | awk '{ print $1 }')
    if [[ -z $SERVER_ADDR || -z $WRAPPED_PID ]]; then
        stop_wrapped
        return 1
    fi
}

# stop_wrapped: SIGTERM to the server (the wrapper then writes its counts and exits), SIGKILL to
# both after STOP_TIMEOUT; reaps the wrapper. Sets SERVER_EXIT to the wrapper's status.
stop_wrapped() {
    local i
    [[ -n $WRAP_PID ]] || return 0
    [[ -n $WRAPPED_PID ]] && kill -TERM "$WRAPPED_PID" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do alive "$WRAP_PID" || break; sleep 0.05; done
    if alive "$WRAP_PID"; then
        warn "server $WRAPPED_PID did not exit within ${STOP_TIMEOUT}s of SIGTERM; SIGKILL"
        [[ -n $WRAPPED_PID ]] && kill -KILL "$WRAPPED_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do alive "$WRAP_PID" || break; sleep 0.05; done
        alive "$WRAP_PID" && kill -KILL "$WRAP_PID" 2>/dev/null || true
    fi
    SERVER_EXIT=0
    wait "$WRAP_PID" 2>/dev/null || SERVER_EXIT=$?
    WRAP_PID="" WRAPPED_PID=""
}
