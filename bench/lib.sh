# bench/lib.sh: server life-cycle helpers for the benchmark scripts (sourced, not run).
#
# The same contract as bench/compare.sh's helpers (from which these are taken): a server prints
# `listening on ADDR` as its first stdout line and exits 0 on SIGTERM. Every wait is bounded.
#
# Inputs (globals): SERVER_PIN (array, e.g. (taskset -c 0)), START_TIMEOUT and STOP_TIMEOUT (s).
# Outputs: SERVER_PID, SERVER_ADDR, SERVER_EXIT, SERVER_NOTE.

SERVER_PID="" SERVER_ADDR="" SERVER_EXIT="" SERVER_NOTE=""

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
    ((${#out[@]} == 0)) || printf '%s\n' "${out[@]}"
}

# start_server LOG CMD...: starts the (pinned) server, waits for its "listening on ADDR" line.
# Returns 0 (SERVER_PID/SERVER_ADDR set), 2 if the server rejected its arguments (exit status 2),
# 1 otherwise.
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

# stop_server: SIGTERM to the PID we started, wait up to STOP_TIMEOUT, then SIGKILL; reaps it and
# kills (by PID, checked against the start time) any child left behind. Sets SERVER_EXIT and
# SERVER_NOTE ("" when the contract was kept).
stop_server() {
    local pid=$SERVER_PID kids entry k st i left
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
    for ((i = 0; i < 20; i++)); do
        left=0
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

# cpu_ticks PID: "utime stime" of PID (all its threads), in clock ticks.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0"; return 1; }
    stat=${stat##*) }
    # After "comm)": field 3 is state, so utime (14) and stime (15) are the 12th and 13th here.
    awk '{ print $12, $13 }' <<<"$stat"
}
