//! `loadgen`: the load generator used by `bench/compare.sh`.
//!
//! It drives any server that follows the benchmark contract (a plain byte
//! echo over TCP or UDP) with one of five workloads and prints
//!
//! * one machine-readable line `RESULT {json}` (always exactly one, always
//!   the first line starting with `RESULT `), then
//! * a short human-readable table.
//!
//! Exit status: 0 when the run completed (the JSON carries an `errors`
//! count, and udp-rr a `lost` count), 1 when it could not run at all or
//! nothing succeeded (connection refused, bad address, ...), 3 when the hard
//! deadline fired, 4 with `--strict` when the run completed but counted any
//! error or lost datagram (CI's smoke run: a benchmark may tolerate a few
//! failures, a smoke test may not).
//!
//! Every socket operation has a timeout and the whole run has a hard
//! deadline (a watchdog thread), so it never hangs.
//!
//! Only loopback addresses are accepted unless `--allow-non-loopback` is
//! given: this tool is meant for a benchmark on one machine.
//!
//! Examples:
//!
//! ```text
//! loadgen --addr 127.0.0.1:7000 tcp-rr --conns 16 --size 64 --duration 5
//! loadgen --addr 127.0.0.1:7000 tcp-rr --conns 1 --requests 20000
//! loadgen --addr 127.0.0.1:7000 tcp-churn --workers 8 --duration 5
//! loadgen --addr 127.0.0.1:7000 tcp-bulk --conns 4 --mib 64
//! loadgen --addr 127.0.0.1:7001 udp-rr --clients 8 --duration 5
//! loadgen --addr 127.0.0.1:7000 idle --conns 10000 --pid 1234
//! ```

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for echo servers (socketserver benchmarks)",
    after_help = "Prints one `RESULT {json}` line followed by a human-readable table."
)]
struct Cli {
    /// Server address, HOST:PORT (e.g. 127.0.0.1:7000 or [::1]:7000)
    #[arg(long)]
    addr: String,

    /// KEY=VALUE copied verbatim (as strings) into the JSON result; repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,

    /// Timeout of every single socket operation / request, in milliseconds
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    io_timeout_ms: u64,

    /// Override the hard deadline of the whole run, in seconds
    #[arg(long, value_parser = parse_secs)]
    deadline: Option<Duration>,

    /// Allow a server address outside 127.0.0.0/8 and ::1
    #[arg(long)]
    allow_non_loopback: bool,

    /// Exit 4 if the run counted any error or lost datagram (default: exit 0 and report them)
    #[arg(long)]
    strict: bool,

    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Persistent connections doing request/response round trips
    TcpRr(TcpRrArgs),
    /// connect, send, receive the echo, close; in a loop per worker
    TcpChurn(TcpChurnArgs),
    /// Stream MiB through each connection while reading the echo back, verified
    TcpBulk(TcpBulkArgs),
    /// Datagram round trips with a loss timeout
    UdpRr(UdpRrArgs),
    /// Hold many idle connections and measure the server's memory per connection
    Idle(IdleArgs),
}

#[derive(Args, Debug)]
struct TcpRrArgs {
    /// Number of persistent connections
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    conns: u32,
    /// Message size in bytes
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    size: u32,
    /// Measurement duration in seconds (with --requests: an upper bound)
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    duration: Duration,
    /// Stop after exactly this many round trips (warm-up excluded)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Client threads multiplexing the connections (0 = min(conns, CPUs, 4))
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// When the server closes a connection before any byte of a request's reply (a server draining
    /// for a restart or an upgrade closes keep-alive connections between requests), open a new one
    /// and send the request again, as HTTP clients do; counted as `reconnects`, not as errors. A
    /// reply cut short is still an error.
    #[arg(long)]
    reconnect: bool,
}

#[derive(Args, Debug)]
struct TcpChurnArgs {
    /// Worker threads, each doing connect/echo/close in a loop
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: u32,
    /// Message size in bytes
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    size: u32,
    /// Duration in seconds
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    duration: Duration,
}

#[derive(Args, Debug)]
struct TcpBulkArgs {
    /// Number of connections streaming in parallel
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    conns: u32,
    /// MiB sent (and echoed back) per connection
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    mib: u32,
}

#[derive(Args, Debug)]
struct UdpRrArgs {
    /// Number of concurrent clients (one socket and one thread each)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// Datagram size in bytes
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_507))]
    size: u32,
    /// Duration in seconds
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    duration: Duration,
    /// A reply not received within this many milliseconds counts as lost
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    loss_timeout_ms: u64,
}

#[derive(Args, Debug)]
struct IdleArgs {
    /// Number of idle connections to hold open
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    conns: u32,
    /// PID of the server process (its VmRSS is read from /proc/PID/status)
    #[arg(long)]
    pid: u32,
    /// Wait this long (ms) after opening the connections before reading RSS
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    settle_ms: u64,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("seconds must be in (0, 86400], got {s}"));
    }
    Ok(Duration::from_secs_f64(v))
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

/// Exit status of a run that completed but counted failures, under `--strict`.
const EXIT_COUNTED_FAILURES: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(report) => match report.strict_failure() {
            Some(why) if cli.strict => {
                eprintln!("loadgen: error (--strict): {why}");
                ExitCode::from(EXIT_COUNTED_FAILURES)
            }
            _ => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the workload and prints its report; `Err` if it could not run or nothing succeeded.
fn run(cli: &Cli) -> Result<Report> {
    let addr = resolve(&cli.addr, cli.allow_non_loopback)?;
    let io_timeout = Duration::from_millis(cli.io_timeout_ms);
    let nofile = raise_nofile_limit();

    // Hard deadline: the workload's own bound plus a generous margin.
    let margin = io_timeout * 3 + Duration::from_secs(15);
    let natural = match &cli.workload {
        Workload::TcpRr(a) => a.duration + Duration::from_millis(20) * a.conns,
        Workload::TcpChurn(a) => a.duration,
        // 64 MiB at a pessimistic 8 MiB/s per connection.
        Workload::TcpBulk(a) => Duration::from_secs(u64::from(a.mib) / 8 + 30),
        Workload::UdpRr(a) => a.duration,
        Workload::Idle(a) => {
            Duration::from_millis(a.settle_ms) + Duration::from_millis(20) * a.conns
        }
    };
    spawn_watchdog(cli.deadline.unwrap_or(natural + margin));

    let mut report = Report::default();
    report.str("addr", &addr.to_string());
    for (k, v) in &cli.tags {
        report.str(k, v);
    }
    match &cli.workload {
        Workload::TcpRr(a) => tcp_rr(addr, a, io_timeout, &mut report)?,
        Workload::TcpChurn(a) => tcp_churn(addr, a, io_timeout, &mut report)?,
        Workload::TcpBulk(a) => tcp_bulk(addr, a, io_timeout, &mut report)?,
        Workload::UdpRr(a) => udp_rr(addr, a, &mut report)?,
        Workload::Idle(a) => idle(addr, a, io_timeout, nofile, &mut report)?,
    }
    report.print();
    if report.failed_completely {
        bail!(
            "no operation succeeded: {}",
            report.first_error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(report)
}

fn resolve(s: &str, allow_non_loopback: bool) -> Result<SocketAddr> {
    let addr = s
        .to_socket_addrs()
        .with_context(|| format!("invalid --addr {s:?} (expected HOST:PORT)"))?
        .next()
        .ok_or_else(|| anyhow!("--addr {s:?} resolved to no address"))?;
    if !allow_non_loopback && !addr.ip().is_loopback() {
        bail!("refusing non-loopback address {addr} (pass --allow-non-loopback to override)");
    }
    if addr.port() == 0 {
        bail!("--addr {s:?}: port 0 is not a server address");
    }
    Ok(addr)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) now in force.
fn raise_nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (1024, 1024);
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // rlim_t is u64 on 64-bit Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    (lim.rlim_cur as u64, lim.rlim_max as u64)
}

fn spawn_watchdog(limit: Duration) {
    thread::spawn(move || {
        thread::sleep(limit);
        eprintln!(
            "loadgen: error: hard deadline of {:.1}s exceeded; aborting",
            limit.as_secs_f64()
        );
        std::process::exit(3);
    });
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connect to {addr} failed"))?;
    s.set_nodelay(true).context("setting TCP_NODELAY")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// One blocking echo round trip on a fresh or idle connection.
fn echo_once(s: &mut TcpStream, msg: &[u8]) -> Result<()> {
    s.write_all(msg).context("write")?;
    let mut buf = vec![0u8; msg.len()];
    read_exact_ctx(s, &mut buf)?;
    if buf != msg {
        bail!("echo mismatch: the server returned different bytes");
    }
    Ok(())
}

fn read_exact_ctx(s: &mut TcpStream, buf: &mut [u8]) -> Result<()> {
    s.read_exact(buf).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => anyhow!("server closed the connection before echoing"),
        ErrorKind::WouldBlock | ErrorKind::TimedOut => anyhow!("timed out waiting for the echo"),
        _ => anyhow::Error::new(e).context("read"),
    })
}

fn default_threads(wanted: usize, items: usize) -> usize {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let t = if wanted == 0 { cpus.min(4) } else { wanted };
    t.clamp(1, items.max(1))
}

/// Deterministic, request-specific payload: sequence number then a pattern.
fn fill_message(buf: &mut [u8], seq: u64) {
    let tag = seq.to_le_bytes();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = if i < 8 {
            tag[i]
        } else {
            (i as u8).wrapping_mul(31).wrapping_add(seq as u8)
        };
    }
}

// ---------------------------------------------------------------------------
// Latency histogram: log-bucketed (32 sub-buckets per power of two, ≤3 %
// relative error), fixed memory, mergeable. Values are nanoseconds.
// ---------------------------------------------------------------------------

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

#[derive(Clone)]
struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = ((v >> shift) as usize) & (SUB - 1);
        (shift as usize + 1) * SUB + sub
    }

    /// Midpoint of the value range covered by bucket `i`.
    fn value_of(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i / SUB - 1) as u32;
        let low = ((SUB + i % SUB) as u64) << shift;
        low + ((1u64 << shift) >> 1)
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum += u128::from(ns);
        self.max = self.max.max(ns);
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.total += o.total;
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value_of(i).min(self.max) as f64 / 1000.0;
            }
        }
        self.max as f64 / 1000.0
    }

    fn mean_us(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64 / 1000.0
        }
    }

    fn add_to(&self, r: &mut Report) {
        r.num("p50_us", self.quantile_us(0.50));
        r.num("p99_us", self.quantile_us(0.99));
        r.num("p999_us", self.quantile_us(0.999));
        r.num("mean_us", self.mean_us());
        r.num("max_us", self.max as f64 / 1000.0);
    }
}

// ---------------------------------------------------------------------------
// Report: one JSON line plus a small table
// ---------------------------------------------------------------------------

enum Json {
    Str(String),
    Num(f64),
    Int(u64),
    Bool(bool),
}

#[derive(Default)]
struct Report {
    fields: Vec<(String, Json)>,
    first_error: Option<String>,
    failed_completely: bool,
    /// Failed operations (the JSON's `errors`).
    errors: u64,
    /// udp-rr round trips with no reply within the loss timeout (the JSON's `lost`).
    lost: u64,
    loss_timeout_ms: u64,
}

impl Report {
    fn set(&mut self, k: &str, v: Json) {
        match self.fields.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.fields.push((k.to_string(), v)),
        }
    }
    fn str(&mut self, k: &str, v: &str) {
        self.set(k, Json::Str(v.to_string()));
    }
    fn num(&mut self, k: &str, v: f64) {
        self.set(k, Json::Num(v));
    }
    fn int(&mut self, k: &str, v: u64) {
        self.set(k, Json::Int(v));
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.set(k, Json::Bool(v));
    }
    fn error(&mut self, errors: u64, first: Option<String>) {
        self.errors = errors;
        self.int("errors", errors);
        if let Some(e) = first {
            self.str("first_error", &e);
            self.first_error = Some(e);
        }
    }

    /// Records udp-rr's lost round trips (timeouts).
    fn lost(&mut self, lost: u64, loss_timeout_ms: u64) {
        self.lost = lost;
        self.loss_timeout_ms = loss_timeout_ms;
        self.int("lost", lost);
        self.int("loss_timeout_ms", loss_timeout_ms);
    }

    /// Why `--strict` fails this completed run: any error or lost datagram counted.
    fn strict_failure(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.errors > 0 {
            why.push(format!(
                "{} error(s), the first: {}",
                self.errors,
                self.first_error.as_deref().unwrap_or("unknown")
            ));
        }
        if self.lost > 0 {
            why.push(format!(
                "{} datagram(s) lost (no reply within {} ms)",
                self.lost, self.loss_timeout_ms
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, k);
            out.push(':');
            match v {
                Json::Str(s) => json_str(&mut out, s),
                Json::Num(x) if x.is_finite() => {
                    let _ = write!(out, "{}", (x * 1000.0).round() / 1000.0);
                }
                Json::Num(_) => out.push_str("null"),
                Json::Int(n) => {
                    let _ = write!(out, "{n}");
                }
                Json::Bool(b) => {
                    let _ = write!(out, "{b}");
                }
            }
        }
        out.push('}');
        out
    }

    fn print(&self) {
        let mut out = format!("RESULT {}\n", self.json());
        let width = self.fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &self.fields {
            let val = match v {
                Json::Str(s) => s.clone(),
                Json::Num(x) if x.abs() >= 100.0 => format!("{x:.0}"),
                Json::Num(x) => format!("{x:.2}"),
                Json::Int(n) => n.to_string(),
                Json::Bool(b) => b.to_string(),
            };
            let _ = writeln!(out, "  {k:<width$}  {val}");
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Counters a worker thread hands back.
#[derive(Default)]
struct Stats {
    hist: Histogram,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    /// Connections reopened after the server closed them between requests (`--reconnect`).
    reconnects: u64,
}

impl Stats {
    fn fail(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
    fn merge(&mut self, o: Stats) {
        self.hist.merge(&o.hist);
        self.ok += o.ok;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

fn join_all(handles: Vec<thread::JoinHandle<Stats>>) -> Stats {
    let mut total = Stats::default();
    for h in handles {
        match h.join() {
            Ok(s) => total.merge(s),
            Err(_) => total.fail("a worker thread panicked"),
        }
    }
    total
}

// ---------------------------------------------------------------------------
// tcp-rr: persistent connections, multiplexed with epoll by a few threads
// ---------------------------------------------------------------------------

struct RrConn {
    stream: TcpStream,
    msg: Vec<u8>,
    rbuf: Vec<u8>,
    sent: usize,
    recvd: usize,
    seq: u64,
    started: Instant,
    active: bool,
    want_write: bool,
}

enum Step {
    Pending,
    Done,
}

impl RrConn {
    fn begin(&mut self) {
        self.seq += 1;
        fill_message(&mut self.msg, self.seq);
        self.sent = 0;
        self.recvd = 0;
        self.started = Instant::now();
        self.active = true;
    }

    /// Writes as much of the request as the socket takes.
    fn pump_write(&mut self) -> Result<()> {
        while self.sent < self.msg.len() {
            match self.stream.write(&self.msg[self.sent..]) {
                Ok(0) => bail!("write returned 0"),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("write")),
            }
        }
        Ok(())
    }

    /// Reads what is available; `Done` once the whole echo arrived and matched.
    fn pump_read(&mut self) -> Result<Step> {
        while self.recvd < self.rbuf.len() {
            match self.stream.read(&mut self.rbuf[self.recvd..]) {
                Ok(0) => bail!("server closed the connection"),
                Ok(n) => self.recvd += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Pending),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("read")),
            }
        }
        if self.rbuf != self.msg {
            bail!("echo mismatch on request {}", self.seq);
        }
        Ok(Step::Done)
    }
}

/// Shared request budget for `--requests` (None = unlimited).
struct Budget(Option<AtomicI64>);

impl Budget {
    fn take(&self) -> bool {
        match &self.0 {
            None => true,
            Some(left) => left.fetch_sub(1, Ordering::Relaxed) > 0,
        }
    }
}

fn tcp_rr(addr: SocketAddr, a: &TcpRrArgs, io_timeout: Duration, r: &mut Report) -> Result<()> {
    let size = a.size as usize;
    // Connect and warm up every connection (one round trip each) before the
    // clock starts, so accept backlog effects don't pollute the measurement.
    let mut streams = Vec::with_capacity(a.conns as usize);
    let mut warm = vec![0u8; size];
    fill_message(&mut warm, 0);
    for i in 0..a.conns {
        let mut s = connect(addr, io_timeout)
            .with_context(|| format!("opening connection {} of {}", i + 1, a.conns))?;
        echo_once(&mut s, &warm)
            .with_context(|| format!("warm-up round trip on connection {}", i + 1))?;
        s.set_nonblocking(true)?;
        streams.push(s);
    }

    let threads = default_threads(a.threads, streams.len());
    let budget = Arc::new(Budget(a.requests.map(|n| AtomicI64::new(n as i64))));
    let start = Instant::now();
    let end = start + a.duration;
    let mut groups: Vec<Vec<TcpStream>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        groups[i % threads].push(s);
    }
    let handles: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let budget = Arc::clone(&budget);
            let reconnect = a.reconnect.then_some(addr);
            thread::spawn(move || rr_worker(g, size, end, &budget, io_timeout, reconnect))
        })
        .collect();
    let total = join_all(handles);
    let elapsed = start.elapsed().min(a.duration).as_secs_f64();

    r.str("workload", "tcp-rr");
    r.int("conns", u64::from(a.conns));
    r.int("size", size as u64);
    r.int("threads", threads as u64);
    r.num("duration_s", elapsed);
    r.int("requests", total.ok);
    r.num("rps", total.ok as f64 / elapsed.max(1e-9));
    total.hist.add_to(r);
    if a.reconnect {
        r.int("reconnects", total.reconnects);
    }
    r.failed_completely = total.ok == 0;
    r.error(total.errors, total.first_error);
    Ok(())
}

fn rr_worker(
    streams: Vec<TcpStream>,
    size: usize,
    end: Instant,
    budget: &Budget,
    io_timeout: Duration,
    reconnect: Option<SocketAddr>,
) -> Stats {
    let mut st = Stats::default();
    if let Err(e) = rr_loop(streams, size, end, budget, io_timeout, reconnect, &mut st) {
        st.fail(format!("{e:#}"));
    }
    st
}

fn rr_loop(
    streams: Vec<TcpStream>,
    size: usize,
    end: Instant,
    budget: &Budget,
    io_timeout: Duration,
    reconnect: Option<SocketAddr>,
    st: &mut Stats,
) -> Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?;
    let now = Instant::now();
    let mut conns: Vec<RrConn> = streams
        .into_iter()
        .map(|stream| RrConn {
            stream,
            msg: vec![0; size],
            rbuf: vec![0; size],
            sent: 0,
            recvd: 0,
            seq: 0,
            started: now,
            active: false,
            want_write: false,
        })
        .collect();
    let mut inflight = 0usize;
    for (i, c) in conns.iter_mut().enumerate() {
        epoll
            .add(&c.stream, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
            .context("epoll_ctl add")?;
        if budget.take() {
            c.begin();
            inflight += 1;
            if let Err(e) = start_write(&epoll, c, i) {
                st.fail(format!("{e:#}"));
                retire(&epoll, c, &mut inflight);
            }
        }
    }

    let mut events = vec![EpollEvent::empty(); 1024];
    let mut last_scan = Instant::now();
    while inflight > 0 {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let wait_ms = (end - now).as_millis().clamp(1, 50) as u16;
        let n = match epoll.wait(&mut events, EpollTimeout::from(wait_ms)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(anyhow::Error::new(e).context("epoll_wait")),
        };
        for ev in &events[..n] {
            let i = ev.data() as usize;
            let c = &mut conns[i];
            if !c.active {
                continue;
            }
            let flags = ev.events();
            let mut outcome = Ok(Step::Pending);
            if c.want_write && flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR) {
                outcome = c.pump_write().and_then(|()| {
                    if c.sent == c.msg.len() {
                        c.want_write = false;
                        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, i as u64);
                        epoll.modify(&c.stream, &mut ev).context("epoll_ctl mod")?;
                    }
                    Ok(Step::Pending)
                });
            }
            if outcome.is_ok()
                && flags
                    .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
            {
                outcome = c.pump_read();
            }
            match outcome {
                Ok(Step::Pending) => {}
                Ok(Step::Done) => {
                    let done_at = Instant::now();
                    if done_at > end {
                        retire(&epoll, c, &mut inflight);
                        continue;
                    }
                    st.hist.record(done_at - c.started);
                    st.ok += 1;
                    if budget.take() {
                        c.begin();
                        let started = match (start_write(&epoll, c, i), reconnect) {
                            // The server closed the connection after the last reply.
                            (Err(_), Some(addr)) => {
                                reopen(&epoll, c, i, addr, io_timeout).map(|()| st.reconnects += 1)
                            }
                            (result, _) => result,
                        };
                        if let Err(e) = started {
                            st.fail(format!("{e:#}"));
                            retire(&epoll, c, &mut inflight);
                        }
                    } else {
                        retire(&epoll, c, &mut inflight);
                    }
                }
                Err(e) => {
                    // Closed between requests (nothing of the reply came): a new connection, the
                    // same request.
                    let reopened = match reconnect.filter(|_| c.recvd == 0) {
                        Some(addr) => reopen(&epoll, c, i, addr, io_timeout),
                        None => Err(e),
                    };
                    match reopened {
                        Ok(()) => st.reconnects += 1,
                        Err(e) => {
                            st.fail(format!("{e:#}"));
                            retire(&epoll, c, &mut inflight);
                        }
                    }
                }
            }
        }
        // Per-request timeout, checked every 100 ms.
        if last_scan.elapsed() >= Duration::from_millis(100) {
            last_scan = Instant::now();
            for c in conns.iter_mut().filter(|c| c.active) {
                if c.started.elapsed() > io_timeout {
                    st.fail(format!(
                        "request timed out after {} ms",
                        io_timeout.as_millis()
                    ));
                    retire(&epoll, c, &mut inflight);
                }
            }
        }
    }
    Ok(())
}

/// Replaces `c`'s connection with a new one to `addr` and sends its request again from the start.
fn reopen(
    epoll: &Epoll,
    c: &mut RrConn,
    i: usize,
    addr: SocketAddr,
    io_timeout: Duration,
) -> Result<()> {
    let _ = epoll.delete(&c.stream);
    let stream = connect(addr, io_timeout).context("reconnecting")?;
    stream.set_nonblocking(true)?;
    c.stream = stream;
    c.sent = 0;
    c.recvd = 0;
    c.want_write = false;
    epoll
        .add(&c.stream, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
        .context("epoll_ctl add")?;
    start_write(epoll, c, i)
}

fn start_write(epoll: &Epoll, c: &mut RrConn, i: usize) -> Result<()> {
    c.pump_write()?;
    if c.sent < c.msg.len() {
        c.want_write = true;
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT, i as u64);
        epoll.modify(&c.stream, &mut ev).context("epoll_ctl mod")?;
    }
    Ok(())
}

fn retire(epoll: &Epoll, c: &mut RrConn, inflight: &mut usize) {
    if c.active {
        c.active = false;
        *inflight -= 1;
        let _ = epoll.delete(&c.stream);
    }
}

// ---------------------------------------------------------------------------
// tcp-churn: a fresh connection per request
// ---------------------------------------------------------------------------

fn tcp_churn(
    addr: SocketAddr,
    a: &TcpChurnArgs,
    io_timeout: Duration,
    r: &mut Report,
) -> Result<()> {
    // Fail fast with a clear message if the server isn't there at all.
    let mut probe = connect(addr, io_timeout)?;
    let mut msg = vec![0u8; a.size as usize];
    fill_message(&mut msg, 0);
    echo_once(&mut probe, &msg).context("initial probe round trip")?;
    drop(probe);

    let start = Instant::now();
    let end = start + a.duration;
    let handles: Vec<_> = (0..a.workers)
        .map(|w| {
            let size = a.size as usize;
            thread::spawn(move || churn_worker(addr, size, u64::from(w), end, io_timeout))
        })
        .collect();
    let total = join_all(handles);
    let elapsed = start.elapsed().as_secs_f64();

    r.str("workload", "tcp-churn");
    r.int("workers", u64::from(a.workers));
    r.int("size", u64::from(a.size));
    r.num("duration_s", elapsed);
    r.int("connections", total.ok);
    r.num("cps", total.ok as f64 / elapsed.max(1e-9));
    total.hist.add_to(r);
    if let Some(v) = read_trimmed("/proc/sys/net/ipv4/tcp_tw_reuse") {
        r.str("tcp_tw_reuse", &v);
    }
    r.int("time_wait_after", count_time_wait());
    r.failed_completely = total.ok == 0;
    r.error(total.errors, total.first_error);
    Ok(())
}

fn churn_worker(
    addr: SocketAddr,
    size: usize,
    worker: u64,
    end: Instant,
    io_timeout: Duration,
) -> Stats {
    let mut st = Stats::default();
    let mut msg = vec![0u8; size];
    let mut buf = vec![0u8; size];
    let mut seq = worker << 40;
    while Instant::now() < end {
        seq += 1;
        fill_message(&mut msg, seq);
        let t0 = Instant::now();
        match churn_once(addr, &msg, &mut buf, io_timeout) {
            Ok(()) => {
                st.hist.record(t0.elapsed());
                st.ok += 1;
            }
            Err(e) => {
                st.fail(format!("{e:#}"));
                // Don't spin on a persistent failure (e.g. port exhaustion).
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    st
}

/// connect → send → receive the echo → half-close → wait for the server's
/// close → close. Waiting for the server's EOF means every counted connection
/// was fully handled by the server. The client closes first (it half-closes,
/// which is what ends an echo handler), so the TIME_WAIT state lands on the
/// client side; on loopback Linux reuses those ports (tcp_tw_reuse=2, the
/// default), which the result reports.
fn churn_once(addr: SocketAddr, msg: &[u8], buf: &mut [u8], io_timeout: Duration) -> Result<()> {
    let mut s = connect(addr, io_timeout)?;
    s.write_all(msg).context("write")?;
    read_exact_ctx(&mut s, buf)?;
    if buf != msg {
        bail!("echo mismatch");
    }
    s.shutdown(Shutdown::Write).context("shutdown")?;
    let mut extra = [0u8; 1];
    match s.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => bail!("server sent unexpected extra bytes"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            bail!("server did not close the connection after EOF")
        }
        // A reset after the complete echo still means the exchange was served.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("waiting for server close")),
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Sockets in TIME_WAIT (state 06) machine-wide, IPv4 + IPv6.
fn count_time_wait() -> u64 {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(3) == Some("06"))
                .count() as u64
        })
        .sum()
}

// ---------------------------------------------------------------------------
// tcp-bulk: stream data through N connections, verify every byte
// ---------------------------------------------------------------------------

const CHUNK: usize = 64 * 1024;
/// Pattern period: a prime, so chunk boundaries never line up with it.
const PERIOD: usize = 65_521;

fn pattern(conn: u64) -> Arc<Vec<u8>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (conn.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let table: Vec<u8> = (0..PERIOD + CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    // Make the table periodic so table[o % PERIOD..][..n] is valid for n ≤ CHUNK.
    let mut t = table;
    for i in PERIOD..PERIOD + CHUNK {
        t[i] = t[i - PERIOD];
    }
    Arc::new(t)
}

fn tcp_bulk(addr: SocketAddr, a: &TcpBulkArgs, io_timeout: Duration, r: &mut Report) -> Result<()> {
    let bytes = u64::from(a.mib) << 20;
    let mut pairs = Vec::new();
    for i in 0..a.conns {
        let s = connect(addr, io_timeout)
            .with_context(|| format!("opening connection {} of {}", i + 1, a.conns))?;
        let w = s.try_clone().context("cloning socket")?;
        pairs.push((s, w));
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, (mut rd, mut wr)) in pairs.into_iter().enumerate() {
        let pat = pattern(i as u64);
        let pat_w = Arc::clone(&pat);
        handles.push(thread::spawn(move || {
            let mut st = Stats::default();
            if let Err(e) = bulk_write(&mut wr, &pat_w, bytes) {
                st.fail(format!("connection {}: {e:#}", i + 1));
            }
            st
        }));
        handles.push(thread::spawn(move || {
            let mut st = Stats::default();
            match bulk_read(&mut rd, &pat, bytes) {
                Ok(()) => st.ok += 1,
                Err(e) => st.fail(format!("connection {}: {e:#}", i + 1)),
            }
            st
        }));
    }
    let total = join_all(handles);
    let elapsed = start.elapsed().as_secs_f64();
    let moved = total.ok * bytes;

    r.str("workload", "tcp-bulk");
    r.int("conns", u64::from(a.conns));
    r.int("mib_per_conn", u64::from(a.mib));
    r.num("duration_s", elapsed);
    r.int("conns_ok", total.ok);
    r.num("mib_per_s", moved as f64 / 1_048_576.0 / elapsed.max(1e-9));
    r.failed_completely = total.ok == 0;
    r.error(total.errors, total.first_error);
    Ok(())
}

fn bulk_write(s: &mut TcpStream, pat: &[u8], bytes: u64) -> Result<()> {
    let mut off = 0u64;
    while off < bytes {
        let n = ((bytes - off) as usize).min(CHUNK);
        let p = (off % PERIOD as u64) as usize;
        s.write_all(&pat[p..p + n])
            .with_context(|| format!("write at offset {off}"))?;
        off += n as u64;
    }
    s.shutdown(Shutdown::Write).context("shutdown(write)")?;
    Ok(())
}

fn bulk_read(s: &mut TcpStream, pat: &[u8], bytes: u64) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    while off < bytes {
        let want = ((bytes - off) as usize).min(CHUNK);
        let n = match s.read(&mut buf[..want]) {
            Ok(0) => bail!("server closed after {off} of {bytes} bytes"),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                bail!("timed out after {off} of {bytes} bytes")
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("read at offset {off}"))),
        };
        let p = (off % PERIOD as u64) as usize;
        if buf[..n] != pat[p..p + n] {
            let bad = buf[..n]
                .iter()
                .zip(&pat[p..p + n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            bail!("corrupted echo at byte offset {}", off + bad as u64);
        }
        off += n as u64;
    }
    let mut extra = [0u8; 1];
    match s.read(&mut extra) {
        Ok(0) => Ok(()),
        Ok(_) => bail!("server echoed more bytes than were sent"),
        Err(e) => Err(anyhow::Error::new(e).context("waiting for EOF after the echo")),
    }
}

// ---------------------------------------------------------------------------
// udp-rr: datagram round trips
// ---------------------------------------------------------------------------

fn udp_rr(addr: SocketAddr, a: &UdpRrArgs, r: &mut Report) -> Result<()> {
    let loss_timeout = Duration::from_millis(a.loss_timeout_ms);
    let mut sockets = Vec::new();
    for _ in 0..a.clients {
        let local: SocketAddr = match addr.ip() {
            IpAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let local = if addr.ip().is_loopback() {
            local
        } else {
            SocketAddr::new(
                if addr.is_ipv4() {
                    Ipv4Addr::UNSPECIFIED.into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                },
                0,
            )
        };
        let s = UdpSocket::bind(local).context("binding a UDP client socket")?;
        s.connect(addr)
            .with_context(|| format!("UDP connect to {addr}"))?;
        s.set_read_timeout(Some(loss_timeout))?;
        sockets.push(s);
    }
    // Fail fast (exit 1) when nothing answers at all.
    udp_probe(&sockets[0], a.size as usize, loss_timeout)?;

    let start = Instant::now();
    let end = start + a.duration;
    let size = a.size as usize;
    let handles: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            thread::spawn(move || udp_client(s, size, (i as u64) << 40, end, loss_timeout))
        })
        .collect();
    let mut lost = 0u64;
    let mut stats = Vec::new();
    for h in handles {
        match h.join() {
            Ok((st, l)) => {
                lost += l;
                stats.push(st);
            }
            Err(_) => stats.push(Stats {
                errors: 1,
                first_error: Some("a client thread panicked".into()),
                ..Default::default()
            }),
        }
    }
    let mut total = Stats::default();
    for s in stats {
        total.merge(s);
    }
    let elapsed = start.elapsed().as_secs_f64();

    r.str("workload", "udp-rr");
    r.int("clients", u64::from(a.clients));
    r.int("size", size as u64);
    r.num("duration_s", elapsed);
    r.int("requests", total.ok);
    r.num("rps", total.ok as f64 / elapsed.max(1e-9));
    total.hist.add_to(r);
    r.lost(lost, a.loss_timeout_ms);
    r.failed_completely = total.ok == 0;
    r.error(total.errors, total.first_error);
    Ok(())
}

/// Up to three round trips until one is answered.
fn udp_probe(s: &UdpSocket, size: usize, loss_timeout: Duration) -> Result<()> {
    let mut msg = vec![0u8; size];
    let mut buf = vec![0u8; size + 1];
    let mut last = String::from("no reply");
    for attempt in 0..3u64 {
        fill_message(&mut msg, u64::MAX - attempt);
        s.send(&msg).context("UDP send")?;
        let deadline = Instant::now() + loss_timeout.max(Duration::from_millis(500));
        while Instant::now() < deadline {
            match s.recv(&mut buf) {
                Ok(n) if buf[..n] == msg[..] => return Ok(()),
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    last = "no reply within the loss timeout".into();
                    break;
                }
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            }
        }
    }
    bail!(
        "UDP server at {} does not answer: {last}",
        s.peer_addr().map(|a| a.to_string()).unwrap_or_default()
    )
}

/// Returns the stats and the number of lost round trips.
fn udp_client(
    s: UdpSocket,
    size: usize,
    seq0: u64,
    end: Instant,
    loss_timeout: Duration,
) -> (Stats, u64) {
    let mut st = Stats::default();
    let mut lost = 0u64;
    let mut msg = vec![0u8; size];
    let mut buf = vec![0u8; size + 1];
    let mut seq = seq0;
    let mut timeout_changed = false;
    while Instant::now() < end {
        seq += 1;
        fill_message(&mut msg, seq);
        let t0 = Instant::now();
        if let Err(e) = s.send(&msg) {
            st.fail(format!("send: {e}"));
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        // Wait for the matching reply; stale replies to earlier (timed-out)
        // requests are skipped.
        loop {
            match s.recv(&mut buf) {
                Ok(n) if buf[..n] == msg[..] => {
                    st.hist.record(t0.elapsed());
                    st.ok += 1;
                    break;
                }
                Ok(_) => {
                    let left = loss_timeout.saturating_sub(t0.elapsed());
                    if left.is_zero() {
                        lost += 1;
                        break;
                    }
                    let _ = s.set_read_timeout(Some(left));
                    timeout_changed = true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    lost += 1;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // ECONNREFUSED: ICMP port unreachable, nobody listening.
                    st.fail(format!("recv: {e}"));
                    thread::sleep(Duration::from_millis(5));
                    break;
                }
            }
        }
        if timeout_changed {
            let _ = s.set_read_timeout(Some(loss_timeout));
            timeout_changed = false;
        }
    }
    (st, lost)
}

// ---------------------------------------------------------------------------
// idle: many idle connections, server memory per connection
// ---------------------------------------------------------------------------

/// VmRSS of one process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The process and all its descendants (via /proc/PID/task/*/children).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 100_000 {
        let p = out[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn tree_rss_kib(pid: u32) -> u64 {
    process_tree(pid).into_iter().filter_map(rss_kib).sum()
}

fn idle(
    addr: SocketAddr,
    a: &IdleArgs,
    io_timeout: Duration,
    nofile: (u64, u64),
    r: &mut Report,
) -> Result<()> {
    let rss_before = rss_kib(a.pid).ok_or_else(|| {
        anyhow!(
            "cannot read VmRSS of pid {} from /proc/{}/status",
            a.pid,
            a.pid
        )
    })?;
    let tree_before = tree_rss_kib(a.pid);

    // Keep some descriptors for stdio, epoll, the extra client, ...
    let usable = nofile.0.saturating_sub(64);
    let target = u64::from(a.conns).min(usable);
    if target < u64::from(a.conns) {
        eprintln!(
            "loadgen: warning: RLIMIT_NOFILE (soft {}, hard {}) allows only {} of the {} requested connections; \
             raise the hard limit (ulimit -Hn) to open them all",
            nofile.0, nofile.1, target, a.conns
        );
    }

    let start = Instant::now();
    let mut conns = Vec::with_capacity(target as usize);
    let mut st = Stats::default();
    let ping = [b'i'];
    for i in 0..target {
        // Every connection does one 1-byte round trip so it is known to be
        // accepted and served (not just sitting in the accept backlog).
        match connect(addr, io_timeout).and_then(|mut s| echo_once(&mut s, &ping).map(|()| s)) {
            Ok(s) => conns.push(s),
            Err(e) => {
                st.fail(format!("connection {} of {target}: {e:#}", i + 1));
                break;
            }
        }
    }
    let open_s = start.elapsed().as_secs_f64();
    if conns.is_empty() {
        bail!(
            "could not open any connection: {}",
            st.first_error.unwrap_or_default()
        );
    }
    thread::sleep(Duration::from_millis(a.settle_ms));
    let rss_after = rss_kib(a.pid)
        .ok_or_else(|| anyhow!("server pid {} disappeared while holding connections", a.pid))?;
    let tree_after = tree_rss_kib(a.pid);

    // A new client must still be served while the idle ones are open.
    let mut msg = vec![0u8; 64];
    fill_message(&mut msg, 7);
    let t0 = Instant::now();
    let fresh = connect(addr, io_timeout).and_then(|mut s| echo_once(&mut s, &msg));
    let fresh_us = t0.elapsed().as_secs_f64() * 1e6;
    if let Err(e) = &fresh {
        st.fail(format!(
            "new client while {} connections open: {e:#}",
            conns.len()
        ));
    }
    let opened = conns.len() as u64;
    drop(conns);

    let per_conn = |before: u64, after: u64| after.saturating_sub(before) as f64 / opened as f64;
    r.str("workload", "idle");
    r.int("conns_requested", u64::from(a.conns));
    r.int("conns_opened", opened);
    r.bool("limited_by_nofile", target < u64::from(a.conns));
    r.int("nofile_soft", nofile.0);
    r.int("nofile_hard", nofile.1);
    r.num("open_s", open_s);
    r.int("rss_before_kib", rss_before);
    r.int("rss_after_kib", rss_after);
    r.num("kib_per_conn", per_conn(rss_before, rss_after));
    r.int("tree_rss_before_kib", tree_before);
    r.int("tree_rss_after_kib", tree_after);
    r.num("tree_kib_per_conn", per_conn(tree_before, tree_after));
    r.bool("new_client_ok", fresh.is_ok());
    r.num("new_client_us", fresh_us);
    r.error(st.errors, st.first_error);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut prev = 0;
        for v in (0..2_000_000u64).step_by(7).chain([u64::MAX / 2, u64::MAX]) {
            let i = Histogram::index(v);
            assert!(i >= prev && i < BUCKETS);
            prev = i;
            let mid = Histogram::value_of(i) as f64;
            if v > 0 {
                assert!(
                    (mid - v as f64).abs() / (v as f64) < 0.035,
                    "v={v} mid={mid}"
                );
            }
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        assert!((h.quantile_us(0.5) - 500.0).abs() < 20.0);
        assert!((h.quantile_us(0.99) - 990.0).abs() < 35.0);
    }

    #[test]
    fn json_escapes() {
        let mut r = Report::default();
        r.str("a\"b", "x\ny");
        r.num("n", 1.23456);
        assert_eq!(r.json(), r#"{"a\"b":"x\ny","n":1.235}"#);
    }

    #[test]
    fn strict_fails_on_any_error_or_loss_and_only_then() {
        let mut clean = Report::default();
        clean.error(0, None);
        clean.lost(0, 200);
        assert_eq!(clean.strict_failure(), None);

        let mut errors = Report::default();
        errors.error(2, Some("echo mismatch on request 7".into()));
        let why = errors.strict_failure().expect("errors fail --strict");
        assert!(
            why.contains("2 error(s)") && why.contains("echo mismatch"),
            "{why}"
        );

        let mut lost = Report::default();
        lost.error(0, None);
        lost.lost(1, 200);
        let why = lost
            .strict_failure()
            .expect("a lost datagram fails --strict");
        assert!(
            why.contains("1 datagram(s) lost (no reply within 200 ms)"),
            "{why}"
        );
    }

    #[test]
    fn pattern_is_periodic() {
        let p = pattern(3);
        assert_eq!(p[..100], p[PERIOD..PERIOD + 100]);
    }
}
