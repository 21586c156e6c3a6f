#!/usr/bin/env bash
# bench/syscalls.sh: system calls (by type), context switches (voluntary / involuntary) and CPU time per
# tcp-rr request, for our echo's strategies and std-echo, at several connection counts (issue 16, item 4).
#
# Method, per (server, connections):
#   * the server runs under `perf stat -e <syscall tracepoints>,task-clock,context-switches,cpu-migrations`
#     (perf's default inheritance: every thread and every forked worker, from start to exit) and under
#     GNU `/usr/bin/time -f '%w %c'` (wait4's rusage, RUSAGE_BOTH: the server's threads and its reaped
#     children, i.e. PreFork's workers: voluntary and involuntary context switches);
#   * it is pinned to CPU 0, loadgen to CPU 1 (taskset);
#   * loadgen runs `tcp-rr --conns N --size 64 --requests R` once, then the server gets SIGTERM and exits;
#   * this is done twice, with R = SMALL and R = SMALL + BIG; the per-request figure is the difference of
#     the two runs divided by the difference of loadgen's reported requests, so start-up, connection
#     set-up, warm-up round trips and shutdown cancel out.
# Counting with tracepoints instead of strace does not slow the server down, and none of the counts
# depend on the machine's load except the involuntary switches and the CPU time.
#
# Knobs: CONNS ("16 256"), SMALL (2000), BIG (100000), SIZE (64), TARGETS (see below), REPEAT (3), SKIP_BUILD (0),
# START_TIMEOUT (10), STOP_TIMEOUT (10), OUT (bench/results/syscalls).
# Needs perf (with tracepoint access), GNU time, taskset, python3. Loopback only; every wait is bounded.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONNS=${CONNS:-"16 256"}
SMALL=${SMALL:-2000}
BIG=${BIG:-100000}
SIZE=${SIZE:-64}
TARGETS=${TARGETS:-"std-echo ours:threading ours:pool ours:prefork ours:reactor"}
SKIP_BUILD=${SKIP_BUILD:-0}
REPEAT=${REPEAT:-3}   # interleaved rounds (every target in turn); the table keeps each figure's median
START_TIMEOUT=${START_TIMEOUT:-10}
STOP_TIMEOUT=${STOP_TIMEOUT:-10}
OUT=${OUT:-$ROOT/bench/results/syscalls}
LOADGEN=$ROOT/target/release/examples/loadgen
ECHO_BIN=$ROOT/target/release/examples/echo
STD_ECHO=$ROOT/bench/std-echo/target/release/std-echo

die() { printf 'error: %s\n' "$*" >&2; exit 1; }
for t in perf /usr/bin/time taskset python3 timeout; do command -v "$t" >/dev/null || die "$t missing"; done
(($(nproc) >= 2)) || die "needs 2 CPUs (server on 0, loadgen on 1)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$ROOT" && cargo build --release --example echo --example loadgen) >&2
    (cd "$ROOT/bench/std-echo" && cargo build --release) >&2
fi

# Syscall tracepoints worth naming; the total comes from raw_syscalls:sys_enter.
SC="recvfrom sendto read write futex epoll_wait epoll_pwait epoll_pwait2 epoll_ctl poll ppoll accept4 accept
clone clone3 wait4 waitid kill tgkill rt_sigprocmask rt_sigtimedwait sched_yield clock_nanosleep nanosleep
setsockopt getsockopt fcntl ioctl close shutdown mmap munmap mprotect madvise sigaltstack prctl getpid
eventfd2 timerfd_settime set_robust_list rseq"
TP_DIR=/sys/kernel/tracing/events/syscalls
[[ -d $TP_DIR ]] || TP_DIR=/sys/kernel/debug/tracing/events/syscalls
[[ -d $TP_DIR ]] || die "no syscall tracepoints (tracefs) visible"
EVENTS=task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter
for s in $SC; do [[ -d $TP_DIR/sys_enter_$s ]] && EVENTS+=",syscalls:sys_enter_$s"; done

mkdir -p "$OUT"
SUP_PID="" SERVER_PID=""

alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# stop: SIGTERM to the server, wait for the perf wrapper (bounded), SIGKILL what is left; reaps perf.
stop() {
    local i
    [[ -n $SUP_PID ]] || return 0
    [[ -n $SERVER_PID ]] && kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 20; i++)); do alive "$SUP_PID" || break; sleep 0.05; done
    if alive "$SUP_PID"; then
        echo "warning: server $SERVER_PID did not exit within ${STOP_TIMEOUT}s; SIGKILL" >&2
        [[ -n $SERVER_PID ]] && kill -KILL "$SERVER_PID" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do alive "$SUP_PID" || break; sleep 0.05; done
        alive "$SUP_PID" && kill -KILL "$SUP_PID" 2>/dev/null || true
    fi
    wait "$SUP_PID" 2>/dev/null || true
    SUP_PID="" SERVER_PID=""
}
trap stop EXIT
trap 'exit 130' INT TERM

# run NAME CONNS REQUESTS CMD...: one measured server life; writes $OUT/NAME-CONNS-REQUESTS.{perf,time,log}
run() {
    local name=$1 conns=$2 reqs=$3 base line="" i tpid=""
    shift 3
    base=$OUT/${name//:/_}-$conns-$reqs-r$REP
    rm -f "$base".*
    perf stat -x, -o "$base.perf" -e "$EVENTS" -- \
        /usr/bin/time -f '%w %c %U %S' -o "$base.time" taskset -c 0 "$@" >"$base.out" 2>"$base.err" </dev/null &
    SUP_PID=$!
    for ((i = 0; i < START_TIMEOUT * 20; i++)); do
        [[ -f $base.out ]] && IFS= read -r line <"$base.out" && [[ $line =~ ^listening\ on\ (.+)$ ]] && break
        alive "$SUP_PID" || break
        line=""
        sleep 0.05
    done
    [[ $line =~ ^listening\ on\ (.+)$ ]] || { stop; echo "FAILED: $name did not start" >&2; return 1; }
    local addr=${BASH_REMATCH[1]}
    # perf -> time -> server (taskset execs into it)
    tpid=$(cat /proc/"$SUP_PID"/task/*/children 2>/dev/null | awk '{print $1}')
    [[ -n $tpid ]] && SERVER_PID=$(cat /proc/"$tpid"/task/*/children 2>/dev/null | awk '{print $1}')
    [[ -n $SERVER_PID ]] || { stop; echo "FAILED: server pid of $name not found" >&2; return 1; }
    local rc=0
    timeout -k 5 180 taskset -c 1 "$LOADGEN" --addr "$addr" tcp-rr --conns "$conns" --size "$SIZE" \
        --requests "$reqs" --duration 150 >"$base.log" 2>&1 || rc=$?
    stop
    ((rc == 0)) || { echo "FAILED: loadgen exit $rc for $name ($base.log)" >&2; return 1; }
    printf '    round %s %-16s conns=%-4s requests=%-7s %s\n' "$REP" "$name" "$conns" "$reqs" \
        "$(grep -o '"rps":[0-9.]*' "$base.log" | head -1)" >&2
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "==> load average at start: $LOAD_START; events: $EVENTS" >&2
for ((REP = 1; REP <= REPEAT; REP++)); do
for n in $CONNS; do
    for t in $TARGETS; do
        case $t in
        std-echo) cmd=("$STD_ECHO" --addr 127.0.0.1:0 --transport tcp) ;;
        ours:*)
            cmd=("$ECHO_BIN" --addr 127.0.0.1:0 --transport tcp --concurrency "${t#ours:}" --rbufsize 65536 --timeout-secs 0)
            case ${t#ours:} in
            threading) cmd+=(--max-threads 10100) ;;
            pool | prefork) cmd+=(--workers "$n") ;; # as compare.sh: a worker per persistent connection
            esac
            ;;
        *) die "unknown target $t" ;;
        esac
        run "$t" "$n" "$SMALL" "${cmd[@]}" || true
        run "$t" "$n" $((SMALL + BIG)) "${cmd[@]}" || true
    done
done
done
echo "==> load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$OUT" "$SMALL" "$((SMALL + BIG))" "$CONNS" "$TARGETS" "$REPEAT" <<'EOF'
import re, statistics, sys
out, small, big = sys.argv[1], sys.argv[2], sys.argv[3]
conns, targets, repeat = sys.argv[4].split(), sys.argv[5].split(), int(sys.argv[6])

def load(name, n, r, rep):
    base = f"{out}/{name.replace(':', '_')}-{n}-{r}-r{rep}"
    ev = {}
    try:
        for line in open(base + ".perf"):
            f = line.strip().split(",")
            if len(f) < 3 or line.startswith("#"):
                continue
            try:
                ev[f[2]] = float(f[0])
            except ValueError:
                pass
        w, c, u, s = open(base + ".time").read().split()[-4:]
        ev["vol"], ev["invol"] = float(w), float(c)
        log = open(base + ".log").read()
        ev["requests"] = float(re.search(r'"requests":(\d+)', log).group(1))
        m = re.search(r'"rps":([0-9.]+)', log)
        ev["rps"] = float(m.group(1)) if m else 0.0
    except (OSError, ValueError, AttributeError):
        return None
    return ev

def per_request(t, n, rep):
    a, b = load(t, n, small, rep), load(t, n, big, rep)
    if not a or not b:
        return None
    dr = b["requests"] - a["requests"]
    d = {k: (b[k] - a.get(k, 0.0)) / dr for k in b if k not in ("requests", "rps")}
    d["rps"] = b["rps"]
    return d

main = ["recvfrom", "sendto", "read", "write", "futex", "epoll_wait", "accept4", "poll"]
hdr = ["server", "conns", "syscalls total", *main, "other", "voluntary cs", "involuntary cs", "perf cs",
       "CPU µs (median, range)", "rps (noisy)"]
print(f"Per request; median of {repeat} interleaved rounds (CPU µs: median and range).\n")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
extra = []
for n in conns:
    for t in targets:
        runs = [x for x in (per_request(t, n, r) for r in range(1, repeat + 1)) if x]
        if not runs:
            print(f"| {t} | {n} | FAILED |" + " |" * (len(hdr) - 3))
            continue
        med = lambda k: statistics.median(x.get(k, 0.0) for x in runs)
        fmt = lambda v, p=2: "0" if abs(v) < 0.005 else f"{v:.{p}f}"
        tot = med("raw_syscalls:sys_enter")
        named = {k: med("syscalls:sys_enter_" + k) for k in main}
        cpu = sorted(x.get("task-clock", 0.0) * 1000 for x in runs)
        cells = [t, n, f"{tot:.2f}"] + [fmt(named[k]) for k in main]
        cells += [fmt(tot - sum(named.values())), f"{med('vol'):.3f}", f"{med('invol'):.3f}",
                  f"{med('context-switches'):.3f}",
                  f"{statistics.median(cpu):.1f} ({cpu[0]:.1f}-{cpu[-1]:.1f})", f"{med('rps'):.0f}"]
        print("| " + " | ".join(cells) + " |")
        rest = [f"{k[19:]} {med(k):.3f}" for k in sorted(runs[0])
                if k.startswith("syscalls:sys_enter_") and k[19:] not in main and abs(med(k)) >= 0.005]
        extra.append(f"- {t} @ {n}: other syscalls/request >= 0.005: {', '.join(rest) or 'none'}; "
                     f"cpu-migrations/request {med('cpu-migrations'):.4f}; rounds ok: {len(runs)}/{repeat}")
print()
print("\n".join(extra))
EOF
