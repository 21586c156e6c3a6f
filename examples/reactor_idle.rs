//! How much memory do idle connections cost a `Reactor` server? Starts the `echo` example with
//! `--concurrency reactor` in a child process, opens many connections to it, checks each is served and
//! that a newcomer still is, and prints the server's resident-memory growth per connection.
//!
//! ```text
//! cargo build --release --examples && target/release/examples/reactor_idle --connections 10000
//! ```
//!
//! The server is a separate process, so its RSS counts only the server's side. The soft
//! `RLIMIT_NOFILE` is raised to the hard limit before the server starts (it inherits it); if the hard
//! limit is too low for the requested count, the run says so and exits 1. Kernel socket memory is not
//! part of RSS and is not counted: this measures what the library allocates.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Measure a Reactor server's memory per idle connection")]
struct Args {
    /// How many connections to hold open at once.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
}

/// Raises the soft descriptor limit to the hard one; returns both.
fn raise_nofile_limit() -> anyhow::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    Ok((hard, hard))
}

/// The resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

fn echo_once(stream: &mut TcpStream, msg: &[u8]) -> anyhow::Result<()> {
    stream.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back)?;
    if back != msg {
        bail!("echo returned other bytes");
    }
    Ok(())
}

fn measure(connections: usize) -> anyhow::Result<()> {
    let (soft, hard) = raise_nofile_limit()?;
    println!("RLIMIT_NOFILE: soft {soft}, hard {hard}");
    if hard < connections as u64 + 64 {
        bail!("the hard RLIMIT_NOFILE ({hard}) is too low for {connections} connections");
    }
    // The `echo` example is built next to this one (`cargo build --examples`, or `cargo test`).
    let echo = std::env::current_exe()?.with_file_name("echo");
    if !echo.exists() {
        bail!(
            "{} is missing: run `cargo build --release --examples` first",
            echo.display()
        );
    }
    let mut child = Command::new(&echo)
        .args(["--concurrency", "reactor"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let result = drive(&mut child, connections);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait()?;
    result?;
    if !status.success() {
        bail!("the server exited with {status}");
    }
    Ok(())
}

fn drive(child: &mut std::process::Child, connections: usize) -> anyhow::Result<()> {
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first)?;
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {first:?}"))?
        .to_string();
    let timeout = Some(Duration::from_secs(20));
    let open = |addr: &str| -> anyhow::Result<TcpStream> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(timeout)?;
        Ok(s)
    };

    // Warm up (first allocations of the loop itself), then take the baseline.
    echo_once(&mut open(&addr)?, b"warm-up")?;
    let before = rss_kib(child.id())?;

    let started = Instant::now();
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut s = open(&addr).with_context(|| format!("connection {i}"))?;
        // One round trip each: the server has accepted it, read, replied, and gone idle again.
        echo_once(&mut s, b"hi").with_context(|| format!("echo on connection {i}"))?;
        held.push(s);
    }
    let elapsed = started.elapsed();
    let after = rss_kib(child.id())?;

    let mut newcomer = open(&addr)?;
    echo_once(&mut newcomer, b"still serving")?;

    let delta = after.saturating_sub(before);
    let per_conn = delta as f64 * 1024.0 / connections as f64;
    println!(
        "connections: {connections} open and echoed in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!("server RSS: before {before} KiB, after {after} KiB, delta {delta} KiB");
    println!("per connection: {per_conn:.0} bytes");
    println!("new client served: yes");
    drop(held);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Args = common::parse_args();
    measure(args.connections)
}
