//! `fanout`: the chat fan-out load generator (issue 16, item 5).
//!
//! Drives any server that speaks `examples/chat.rs`'s line protocol (every line a client sends goes
//! to every *other* client as `ADDR: line`, with `* …` notices for joins and leaves):
//!
//! 1. opens `--members` connections (the receivers), then `--senders` more (the senders), one after
//!    the other;
//! 2. waits until the joins have settled: the connections together must have read N welcomes and
//!    N(N-1)/2 `joined` notices, one for each pair (polled, bounded by `--settle-timeout`; if that
//!    passes the run goes on and reports `notices_missing`). Which of a pair hears the other's join
//!    depends on the order the server opened them in, which a server with several event loops does
//!    not keep: connection *i* need not hear exactly the N-1-i that connected after it;
//! 3. for `--duration` seconds each sender sends `--size`-byte lines (`m SENDER SEQ xxx…\n`) as fast
//!    as the slowest member allows: at most `--window` of its messages are outstanding, a message
//!    being done once every member has received it (or has been seen to skip it);
//! 4. waits (bounded by `--drain-timeout`) for the last messages to reach every member, and reports.
//!
//! Every member reads with epoll from a few threads (`--threads`), counts the messages and checks
//! their order per sender: a gap (a message that never came, which tokio's broadcast channel does to
//! a receiver that lags) counts as lost. Senders read and discard what they are sent.
//!
//! Output: one line `RESULT {json}` (`deliveries_per_s` = messages × members / s, `messages_per_s`,
//! `lost`, fan-out latency percentiles: from a message's write to its arrival at the last member;
//! with `--pid` the server's CPU time over the send and drain phases, `server_cpu_us_per_msg`, …),
//! then a short human summary. Exit status: 0 when the run completed (errors and losses are counted
//! in the JSON), 1 when it could not run or nothing was delivered, 2 for a usage error, 3 when the
//! watchdog fired. Loopback addresses only.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: fanout --addr HOST:PORT [--members 1000] [--senders 1] [--size 64] \
[--window 32] [--duration 5] [--threads N] [--settle-timeout 60] [--drain-timeout 10] \
[--io-timeout-ms 5000] [--pid SERVER_PID] [--tag KEY=VALUE]...";

#[derive(Debug, Clone)]
struct Args {
    addr: SocketAddr,
    members: usize,
    senders: usize,
    size: usize,
    window: u64,
    duration: Duration,
    threads: usize,
    settle_timeout: Duration,
    drain_timeout: Duration,
    io_timeout: Duration,
    pid: Option<u32>,
    tags: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let mut a = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        members: 1000,
        senders: 1,
        size: 64,
        window: 32,
        duration: Duration::from_secs(5),
        threads: cpus.min(4),
        settle_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_millis(5000),
        pid: None,
        tags: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let int = |v: String, lo: u64, hi: u64| -> Result<u64, String> {
            v.parse::<u64>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{flag}: expected an integer in {lo}..={hi}, got {v:?}"))
        };
        let secs = |v: String| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: expected seconds in (0, 3600], got {v:?}"))
        };
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--members" => a.members = int(value()?, 1, 100_000)? as usize,
            "--senders" => a.senders = int(value()?, 1, 64)? as usize,
            "--size" => a.size = int(value()?, 32, 1000)? as usize,
            "--window" => a.window = int(value()?, 1, 1_000_000)?,
            "--duration" => a.duration = secs(value()?)?,
            "--threads" => a.threads = int(value()?, 1, 64)? as usize,
            "--settle-timeout" => a.settle_timeout = secs(value()?)?,
            "--drain-timeout" => a.drain_timeout = secs(value()?)?,
            "--io-timeout-ms" => a.io_timeout = Duration::from_millis(int(value()?, 1, 600_000)?),
            "--pid" => a.pid = Some(int(value()?, 1, u64::from(u32::MAX))? as u32),
            "--tag" => {
                let v = value()?;
                match v.split_once('=') {
                    Some((k, val)) if !k.is_empty() => a.tags.push((k.into(), val.into())),
                    _ => return Err(format!("--tag: expected KEY=VALUE, got {v:?}")),
                }
            }
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    a.addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr}: no address"))?;
    if !a.addr.ip().is_loopback() {
        return Err(format!(
            "--addr {}: only loopback addresses are allowed",
            a.addr
        ));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fanout: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    raise_nofile_limit();
    // Watchdog: the run's natural length plus a margin; it never hangs.
    let bound = args.settle_timeout
        + args.duration
        + args.drain_timeout
        + args.io_timeout * 2
        + Duration::from_millis(20) * (args.members + args.senders) as u32
        + Duration::from_secs(15);
    thread::spawn(move || {
        thread::sleep(bound);
        eprintln!("fanout: error: watchdog: the run did not end within {bound:?}");
        std::process::exit(3);
    });
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fanout: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn raise_nofile_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

const PHASE_SETTLE: u8 = 0;
const PHASE_RUN: u8 = 1;
const PHASE_STOP: u8 = 2;

/// One sender's window bookkeeping. Message `s` uses slot `s % ring.len()`; the slot counts every
/// member that has received (or skipped) a message mapped to it, cumulatively, so message `s` is done
/// when the count reaches `members * (s / ring.len() + 1)`. A slot is reused only after the message
/// before in it is done (the window is smaller than the ring), so no reset is needed.
struct SenderState {
    ring: Vec<AtomicU64>,
    /// When each slot's message was written, in ns since the start of the run.
    sent_at: Vec<AtomicU64>,
    sent: AtomicU64,
    completed: AtomicU64,
    thread: OnceLock<Thread>,
}

struct Shared {
    phase: AtomicU8,
    members: u64,
    senders: Vec<SenderState>,
    /// Notices still expected before the joins have settled.
    notices_pending: AtomicI64,
    start: OnceLock<Instant>,
    /// ns since `start` of the last completion.
    last_completion_ns: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    failed: AtomicBool,
}

impl Shared {
    fn fail(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(msg);
        }
    }

    fn now_ns(&self) -> u64 {
        self.start
            .get()
            .map_or(0, |s| s.elapsed().as_nanos() as u64)
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

fn run(a: &Args) -> Result<(), String> {
    let n = a.members + a.senders;
    let ring_len = (a.window as usize * 2).next_power_of_two().max(64);
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(PHASE_SETTLE),
        members: a.members as u64,
        senders: (0..a.senders)
            .map(|_| SenderState {
                ring: (0..ring_len).map(|_| AtomicU64::new(0)).collect(),
                sent_at: (0..ring_len).map(|_| AtomicU64::new(0)).collect(),
                sent: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                thread: OnceLock::new(),
            })
            .collect(),
        // N welcomes and a join for each pair (connection i hears its welcome and, opened in the
        // order they connected, the joins of the n-1-i after it).
        notices_pending: AtomicI64::new((0..n).map(|i| (n - i) as i64).sum()),
        start: OnceLock::new(),
        last_completion_ns: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        failed: AtomicBool::new(false),
    });

    // 1. Connect, members first.
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut writers = Vec::with_capacity(a.senders);
    for i in 0..n {
        let s = TcpStream::connect_timeout(&a.addr, a.io_timeout)
            .map_err(|e| format!("connecting {} of {n} to {}: {e}", i + 1, a.addr))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("set_nonblocking: {e}"))?;
        if i >= a.members {
            writers.push(s.try_clone().map_err(|e| format!("dup: {e}"))?);
        }
        conns.push(Conn {
            stream: s,
            buf: vec![0; 16 * 1024],
            len: 0,
            member: i < a.members,
            next_seq: vec![0; a.senders],
            open: true,
        });
    }
    let connect_s = t0.elapsed().as_secs_f64();

    // 2. Readers, then the settle wait.
    let threads = a.threads.min(n).max(1);
    let mut groups: Vec<Vec<Conn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        groups[i % threads].push(c);
    }
    let readers: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let shared = Arc::clone(&shared);
            thread::spawn(move || reader(g, &shared))
        })
        .collect();

    let t1 = Instant::now();
    let mut notices_missing = 0;
    loop {
        let pending = shared.notices_pending.load(Ordering::Acquire);
        if pending <= 0 {
            break;
        }
        if shared.failed.load(Ordering::Relaxed) {
            break;
        }
        if t1.elapsed() >= a.settle_timeout {
            notices_missing = pending;
            eprintln!(
                "fanout: warning: {pending} join notices still missing after {:?}; going on",
                a.settle_timeout
            );
            break;
        }
        thread::sleep(Duration::from_millis(1)); // polling the counter
    }
    let settle_s = t1.elapsed().as_secs_f64();

    // 3. Send.
    let cpu0 = a.pid.and_then(cpu_ticks);
    let start = Instant::now();
    let _ = shared.start.set(start);
    shared.phase.store(PHASE_RUN, Ordering::Release);
    let deadline = start + a.duration;
    let senders: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(k, w)| {
            let shared = Arc::clone(&shared);
            let a = a.clone();
            thread::spawn(move || {
                let _ = shared.senders[k].thread.set(thread::current());
                if let Err(e) = sender(k, w, &a, deadline, &shared) {
                    shared.fail(format!("sender {k}: {e}"));
                }
            })
        })
        .collect();
    for s in senders {
        let _ = s.join();
    }
    let send_s = start.elapsed().as_secs_f64();

    // 4. Drain: every message done, or the bound.
    let t2 = Instant::now();
    let mut drained = false;
    while t2.elapsed() < a.drain_timeout {
        if shared
            .senders
            .iter()
            .all(|s| s.completed.load(Ordering::Acquire) >= s.sent.load(Ordering::Acquire))
        {
            drained = true;
            break;
        }
        thread::sleep(Duration::from_millis(1)); // polling the counters
    }
    let end_ns = shared.now_ns();
    let cpu1 = a.pid.and_then(cpu_ticks);
    shared.phase.store(PHASE_STOP, Ordering::Release);
    let mut totals = Totals::default();
    for r in readers {
        match r.join() {
            Ok(t) => totals.add(t),
            Err(_) => shared.fail("a reader thread panicked".into()),
        }
    }

    // Report.
    let sent: u64 = shared
        .senders
        .iter()
        .map(|s| s.sent.load(Ordering::Relaxed))
        .sum();
    let completed: u64 = shared
        .senders
        .iter()
        .map(|s| s.completed.load(Ordering::Relaxed))
        .sum();
    let expected = sent * a.members as u64;
    let lost = expected.saturating_sub(totals.delivered);
    // Up to the last message's arrival everywhere; when some never arrive (not drained), up to the
    // later of the last completion and the end of sending, not the drain bound.
    let last = shared.last_completion_ns.load(Ordering::Relaxed);
    let elapsed_ns = if drained {
        last.max(1)
    } else {
        last.max((send_s * 1e9) as u64).min(end_ns).max(1)
    };
    let elapsed = elapsed_ns as f64 / 1e9;
    totals.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        let v = &totals.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        v[((v.len() - 1) as f64 * p).round() as usize] as f64
    };

    let mut j = String::from("{");
    let mut field = |k: &str, v: String| {
        if j.len() > 1 {
            j.push(',');
        }
        let _ = write!(j, "\"{k}\":{v}");
    };
    let s = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    field("workload", s("fanout"));
    field("addr", s(&a.addr.to_string()));
    for (k, v) in &a.tags {
        field(k, s(v));
    }
    field("members", a.members.to_string());
    field("senders", a.senders.to_string());
    field("size", a.size.to_string());
    field("window", a.window.to_string());
    field("threads", threads.to_string());
    field("connect_s", format!("{connect_s:.3}"));
    field("settle_s", format!("{settle_s:.3}"));
    field("notices_missing", notices_missing.to_string());
    field("send_s", format!("{send_s:.3}"));
    field("elapsed_s", format!("{elapsed:.4}"));
    field("drained", drained.to_string());
    field("sent", sent.to_string());
    field("completed", completed.to_string());
    field("expected_deliveries", expected.to_string());
    field("delivered", totals.delivered.to_string());
    field("lost", lost.to_string());
    field("gaps", totals.gaps.to_string());
    field("out_of_order", totals.out_of_order.to_string());
    field(
        "deliveries_per_s",
        format!("{:.1}", totals.delivered as f64 / elapsed),
    );
    field(
        "messages_per_s",
        format!("{:.1}", completed as f64 / elapsed),
    );
    field("fanout_p50_us", format!("{:.1}", pct(0.5)));
    field("fanout_p99_us", format!("{:.1}", pct(0.99)));
    field("fanout_max_us", format!("{:.1}", pct(1.0)));
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu_s = c1.saturating_sub(c0) as f64 / hz;
        field("server_cpu_s", format!("{cpu_s:.3}"));
        if completed > 0 {
            field(
                "server_cpu_us_per_msg",
                format!("{:.2}", cpu_s * 1e6 / completed as f64),
            );
        }
    }
    field("closed_by_server", totals.closed.to_string());
    field("errors", shared.errors.load(Ordering::Relaxed).to_string());
    let first = shared
        .first_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    field("first_error", first.as_deref().map_or("null".into(), s));
    j.push('}');
    println!("RESULT {j}");
    println!(
        "  {} members, {} sender(s), window {}, {} B lines: {} messages in {:.3} s",
        a.members, a.senders, a.window, a.size, completed, elapsed
    );
    println!(
        "  deliveries/s {:.0}   messages/s {:.0}   lost {}   fan-out p50 {:.0} us p99 {:.0} us",
        totals.delivered as f64 / elapsed,
        completed as f64 / elapsed,
        lost,
        pct(0.5),
        pct(0.99)
    );
    let _ = io::stdout().flush();
    if totals.delivered == 0 {
        return Err(format!(
            "nothing was delivered ({})",
            first.as_deref().unwrap_or("no error recorded")
        ));
    }
    Ok(())
}

/// utime + stime of a process (all its threads), in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // After "comm)": the state is field 3 of stat(5); utime and stime are 14 and 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

// ---------------------------------------------------------------------------
// Sender
// ---------------------------------------------------------------------------

fn sender(
    k: usize,
    mut stream: TcpStream,
    a: &Args,
    deadline: Instant,
    shared: &Shared,
) -> Result<(), String> {
    let st = &shared.senders[k];
    let ring_len = st.ring.len() as u64;
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(a.size * a.window as usize);
    while Instant::now() < deadline {
        if shared.failed.load(Ordering::Relaxed) {
            return Err("stopped: a reader failed".into());
        }
        let done = st.completed.load(Ordering::Acquire);
        let room = a.window.saturating_sub(sent - done);
        if room == 0 {
            // Woken by the reader that completes a message; the timeout only bounds a lost wake-up.
            thread::park_timeout(Duration::from_millis(5));
            continue;
        }
        out.clear();
        let now = shared.now_ns();
        for seq in sent..sent + room {
            let line_start = out.len();
            let _ = write!(out, "m {k} {seq} ");
            out.resize(line_start + a.size - 1, b'x');
            out.push(b'\n');
            st.sent_at[(seq % ring_len) as usize].store(now, Ordering::Relaxed);
        }
        sent += room;
        st.sent.store(sent, Ordering::Release);
        write_all(&mut stream, &out, a.io_timeout)?;
    }
    Ok(())
}

/// Writes all of `buf` to a non-blocking socket, waiting (poll, bounded) while it is full.
fn write_all(stream: &mut TcpStream, mut buf: &[u8], timeout: Duration) -> Result<(), String> {
    while !buf.is_empty() {
        match stream.write(buf) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd: stream.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
                if r == 0 {
                    return Err(format!(
                        "the server took nothing for {timeout:?} (socket full)"
                    ));
                }
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    len: usize,
    member: bool,
    next_seq: Vec<u64>,
    open: bool,
}

#[derive(Default)]
struct Totals {
    delivered: u64,
    gaps: u64,
    out_of_order: u64,
    closed: u64,
    latencies_us: Vec<u32>,
}

impl Totals {
    fn add(&mut self, o: Totals) {
        self.delivered += o.delivered;
        self.gaps += o.gaps;
        self.out_of_order += o.out_of_order;
        self.closed += o.closed;
        self.latencies_us.extend(o.latencies_us);
    }
}

fn reader(mut conns: Vec<Conn>, shared: &Shared) -> Totals {
    let mut t = Totals::default();
    if let Err(e) = reader_loop(&mut conns, shared, &mut t) {
        shared.fail(e);
        shared.failed.store(true, Ordering::Relaxed);
    }
    t
}

fn reader_loop(conns: &mut [Conn], shared: &Shared, t: &mut Totals) -> Result<(), String> {
    // SAFETY: epoll_create1 has no memory-safety preconditions; the fd is closed below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!("epoll_create1: {}", io::Error::last_os_error()));
    }
    struct Fd(i32);
    impl Drop for Fd {
        fn drop(&mut self) {
            // SAFETY: closing the epoll fd this reader owns.
            unsafe { libc::close(self.0) };
        }
    }
    let ep = Fd(ep);
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, socket fd and event.
        if unsafe { libc::epoll_ctl(ep.0, libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), &mut ev) } < 0
        {
            return Err(format!("epoll_ctl: {}", io::Error::last_os_error()));
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while shared.phase.load(Ordering::Acquire) != PHASE_STOP {
        // SAFETY: the buffer holds `events.len()` entries.
        let n = unsafe { libc::epoll_wait(ep.0, events.as_mut_ptr(), events.len() as i32, 20) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            if !c.open {
                continue;
            }
            if let Err(e) = pump(c, shared, t) {
                c.open = false;
                t.closed += 1;
                // SAFETY: removing a registered fd.
                unsafe {
                    libc::epoll_ctl(
                        ep.0,
                        libc::EPOLL_CTL_DEL,
                        c.stream.as_raw_fd(),
                        std::ptr::null_mut(),
                    )
                };
                shared.fail(e);
            }
        }
    }
    Ok(())
}

/// Reads what the socket has and handles every complete line.
fn pump(c: &mut Conn, shared: &Shared, t: &mut Totals) -> Result<(), String> {
    loop {
        if c.len == c.buf.len() {
            return Err(format!(
                "a line longer than {} bytes from the server",
                c.buf.len()
            ));
        }
        match c.stream.read(&mut c.buf[c.len..]) {
            Ok(0) => return Err("the server closed a connection".into()),
            Ok(n) => {
                c.len += n;
                let mut at = 0;
                while let Some(nl) = c.buf[at..c.len].iter().position(|&b| b == b'\n') {
                    let (start, end) = (at, at + nl);
                    at = end + 1;
                    line(c, start, end, shared, t);
                }
                c.buf.copy_within(at..c.len, 0);
                c.len -= at;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn line(c: &mut Conn, start: usize, end: usize, shared: &Shared, t: &mut Totals) {
    let l = &c.buf[start..end];
    if l.starts_with(b"* ") {
        shared.notices_pending.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    if !c.member {
        return;
    }
    // `ADDR: m SENDER SEQ xxx`
    let Some(p) = l.windows(2).position(|w| w == b": ") else {
        return;
    };
    let mut words = l[p + 2..].split(|&b| b == b' ');
    if words.next() != Some(b"m") {
        return;
    }
    let num = |w: Option<&[u8]>| -> Option<u64> { std::str::from_utf8(w?).ok()?.parse().ok() };
    let (Some(k), Some(seq)) = (num(words.next()), num(words.next())) else {
        return;
    };
    let k = k as usize;
    if k >= c.next_seq.len() {
        return;
    }
    let expected = c.next_seq[k];
    if seq < expected {
        t.out_of_order += 1;
        return;
    }
    t.delivered += 1;
    // Messages skipped (never to come) are accounted for, so the window goes on.
    for q in expected..seq {
        t.gaps += 1;
        account(shared, k, q, t);
    }
    account(shared, k, seq, t);
    c.next_seq[k] = seq + 1;
}

/// One member is done with message `seq` of sender `k`; the last one completes the message.
fn account(shared: &Shared, k: usize, seq: u64, t: &mut Totals) {
    let st = &shared.senders[k];
    let ring_len = st.ring.len() as u64;
    let slot = (seq % ring_len) as usize;
    let v = st.ring[slot].fetch_add(1, Ordering::AcqRel) + 1;
    if v == shared.members * (seq / ring_len + 1) {
        let now = shared.now_ns();
        let sent_at = st.sent_at[slot].load(Ordering::Relaxed);
        t.latencies_us
            .push((now.saturating_sub(sent_at) / 1000).min(u64::from(u32::MAX)) as u32);
        st.completed.fetch_add(1, Ordering::AcqRel);
        shared.last_completion_ns.fetch_max(now, Ordering::Relaxed);
        if let Some(th) = st.thread.get() {
            th.unpark();
        }
    }
}
