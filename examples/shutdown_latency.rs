//! Benchmark: how soon `serve_forever` returns after a shutdown request on an idle server, over many
//! trials (Python's `socketserver` polls every 0.5 s, so it takes up to 500 ms; ours wakes on an eventfd).
//!
//! ```text
//! cargo run --release --example shutdown_latency -- --strategy threading --trials 100
//! ```
//!
//! Each trial binds a fresh TCP echo server on `127.0.0.1:0`, serves one round trip (so the server is
//! surely in its accept loop, and idle again afterwards), waits a random 10-60 ms, then requests shutdown
//! and measures until `serve_forever` returns — not counting `server_close`, which runs after it.
//!
//! - `sequential`, `threading`, `pool`, `reactor`: in this process; `serve_forever` runs on a thread and
//!   the main thread calls [`ShutdownHandle::shutdown`](socketserver::ShutdownHandle::shutdown), as
//!   Python's `shutdown()` is called from another thread.
//! - `forking`, `prefork` fork, and code that forks must run in a process with one thread: each trial
//!   forks a child (from this single-threaded process) that serves with `SIGTERM` wired to shutdown
//!   ([`signals::shutdown_on_signals`]); the parent sends `SIGTERM` and the child reports the moment
//!   `serve_forever` returned on the shared monotonic clock.
//!
//! Output: one line `RESULT {json}` (`p50_us`, `p99_us`, `max_us`, `mean_us`), then a short table.
//! Exit status 1 if a trial fails (the reason on stderr); bad flags print usage and exit 2.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use common::cli::Strategy;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, fork};
use socketserver::framing::RawBytes;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::{
    Concurrency, Forking, Pool, PreFork, Reactor, Sequential, Server, StreamRequest, Tcp,
    Threading, signals,
};

#[derive(Parser, Debug)]
#[command(
    about = "Measures how soon serve_forever returns after a shutdown request on an idle server"
)]
struct Args {
    /// The concurrency strategy to measure.
    #[arg(long, value_enum)]
    strategy: Strategy,
    /// How many trials (each a fresh server).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    trials: u32,
}

/// How long any single step of a trial may take before the trial fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    loop {
        let chunk = req.rfile.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        req.wfile.write_all(chunk)?;
        req.rfile.consume(n);
    }
}

/// The reactor's echo.
struct ReactorEcho;

impl MessageHandler for ReactorEcho {
    type Codec = RawBytes;
    fn codec(&self) -> RawBytes {
        RawBytes
    }
    fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
        conn.send(&bytes)?;
        Ok(())
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One round trip, so the server has surely entered its loop (and is idle again once it returns).
fn round_trip(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
        .with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(STEP_TIMEOUT))?;
    s.write_all(b"ping")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    anyhow::ensure!(reply == b"ping", "echo answered {reply:?}");
    Ok(())
}

/// The random pause (10-60 ms) before the shutdown request, so it lands at any phase of a polling loop.
fn settle(rng: &mut u64) {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    std::thread::sleep(Duration::from_micros(10_000 + *rng % 50_000));
}

/// A trial in this process: serve on a thread, shut down from this one.
fn in_process<C, H>(server: Server<C, Tcp, H>, rng: &mut u64) -> anyhow::Result<Duration>
where
    C: Concurrency<Tcp, H> + Send + 'static,
    H: Send + Sync + 'static,
{
    let addr = server.local_addr().as_inet().context("an inet address")?;
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || {
        let mut server = server;
        let served = server.serve_forever();
        (monotonic_ns(), served)
    });
    let ready = round_trip(addr);
    if ready.is_ok() {
        settle(rng);
    }
    let asked = monotonic_ns();
    stop.shutdown();
    let (returned, served) = serving
        .join()
        .map_err(|_| anyhow::anyhow!("serve_forever panicked"))?;
    ready?;
    served?;
    Ok(Duration::from_nanos(returned.saturating_sub(asked)))
}

/// A trial in a forked child: it serves with SIGTERM wired to shutdown and reports its port, then the
/// moment `serve_forever` returned.
fn forked<C, H>(
    make: impl FnOnce() -> std::io::Result<Server<C, Tcp, H>>,
    rng: &mut u64,
) -> anyhow::Result<Duration>
where
    C: Concurrency<Tcp, H>,
{
    let (read_end, write_end) = nix::unistd::pipe().context("pipe(2)")?;
    // SAFETY: this process has one thread (forking strategies are measured alone, before any thread
    // starts), so the child may run ordinary code; it leaves through _exit and never returns here.
    match unsafe { fork() }.context("fork(2)")? {
        ForkResult::Child => {
            drop(read_end);
            let code = match serve_in_child(make, write_end) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("child: {e:#}");
                    1
                }
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            let result = measure_child(child, &read_end, rng);
            if result.is_err() {
                let _ = kill(child, Signal::SIGKILL);
            }
            let status = waitpid(child, None).context("waitpid(2)")?;
            let latency = result?;
            anyhow::ensure!(
                matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "child ended with {status:?}"
            );
            Ok(latency)
        }
    }
}

fn serve_in_child<C, H>(
    make: impl FnOnce() -> std::io::Result<Server<C, Tcp, H>>,
    report: OwnedFd,
) -> anyhow::Result<()>
where
    C: Concurrency<Tcp, H>,
{
    let mut report = std::fs::File::from(report);
    let mut server = make()?;
    let port = server
        .local_addr()
        .as_inet()
        .context("an inet address")?
        .port();
    signals::shutdown_on_signals(&server.shutdown_handle())?;
    writeln!(report, "{port}")?;
    server.serve_forever()?;
    let returned = monotonic_ns();
    writeln!(report, "{returned}")?;
    Ok(())
}

fn measure_child(
    child: nix::unistd::Pid,
    report: &OwnedFd,
    rng: &mut u64,
) -> anyhow::Result<Duration> {
    let mut pending = Vec::new();
    let port: u16 = read_line(report, &mut pending)?.parse()?;
    round_trip(SocketAddr::from(([127, 0, 0, 1], port)))?;
    settle(rng);
    let asked = monotonic_ns();
    kill(child, Signal::SIGTERM).context("kill(2)")?;
    let returned: u64 = read_line(report, &mut pending)?.parse()?;
    Ok(Duration::from_nanos(returned.saturating_sub(asked)))
}

/// The next line the child writes, waiting at most [`STEP_TIMEOUT`] for each read.
fn read_line(fd: &OwnedFd, pending: &mut Vec<u8>) -> anyhow::Result<String> {
    loop {
        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            return Ok(String::from_utf8_lossy(&line).trim().to_string());
        }
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(STEP_TIMEOUT).unwrap_or(PollTimeout::MAX);
        if nix::poll::poll(&mut fds, timeout).context("poll(2)")? == 0 {
            bail!("the child reported nothing within {STEP_TIMEOUT:?}");
        }
        let mut buf = [0; 64];
        let n = nix::unistd::read(fd, &mut buf).context("read(2)")?;
        if n == 0 {
            bail!("the child exited before reporting");
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

fn bind() -> std::io::Result<Tcp> {
    Tcp::bind("127.0.0.1:0")
}

fn trial(strategy: Strategy, rng: &mut u64) -> anyhow::Result<Duration> {
    match strategy {
        Strategy::Sequential => in_process(Server::new(Sequential::new(), bind()?, echo)?, rng),
        Strategy::Threading => in_process(Server::new(Threading::new(), bind()?, echo)?, rng),
        Strategy::Pool => in_process(Server::new(Pool::default(), bind()?, echo)?, rng),
        Strategy::Reactor => in_process(Server::new(Reactor::new(), bind()?, ReactorEcho)?, rng),
        Strategy::Forking => forked(|| Server::new(Forking::new(), bind()?, echo), rng),
        Strategy::Prefork => forked(|| Server::new(PreFork::default(), bind()?, echo), rng),
    }
}

/// The `q`-quantile of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args: Args = common::parse_args();
    let mut rng = monotonic_ns() | 1;
    let mut samples = Vec::with_capacity(args.trials as usize);
    for n in 0..args.trials {
        let latency = trial(args.strategy, &mut rng).with_context(|| format!("trial {n}"))?;
        samples.push(latency);
    }
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().sum::<Duration>() / args.trials;
    let name = args.strategy.to_string();
    println!(
        "RESULT {{\"workload\":\"shutdown\",\"strategy\":\"{name}\",\"trials\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"mean_us\":{:.1}}}",
        args.trials,
        us(quantile(&samples, 0.5)),
        us(quantile(&samples, 0.99)),
        us(quantile(&samples, 1.0)),
        us(mean),
    );
    println!("  strategy  {name}");
    println!("  trials    {}", args.trials);
    println!("  p50       {:.3} ms", us(quantile(&samples, 0.5)) / 1e3);
    println!("  p99       {:.3} ms", us(quantile(&samples, 0.99)) / 1e3);
    println!("  max       {:.3} ms", us(quantile(&samples, 1.0)) / 1e3);
    Ok(())
}
