//! A pre-forked TCP server for testing `PreFork` from the outside (the tests drive it as a process,
//! because forking needs a single-threaded process). Each connection is a line protocol:
//!
//! - `pid` → the serving worker's pid;
//! - `stop` → `req.server().shutdown()`, which stops the whole server;
//! - `crash` → the worker exits at once with status 3 (a crashing worker);
//! - anything else is echoed back.
//!
//! Before serving it starts an *unrelated* child (`sh -c 'exit 7'`) and prints its pid on the second
//! stdout line, `unrelated <pid>`; after serving it reaps that child itself and prints
//! `unrelated child: <status>` — which fails if the supervisor stole its exit status.
//!
//! ```text
//! cargo run --example prefork_probe -- --workers 3 --max-requests 100
//! ```

mod common;

use std::io::{BufRead, Write};
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use socketserver::{PreFork, Server, StreamRequest, Tcp, signals};

#[derive(Parser, Debug)]
#[command(about = "Pre-forked line server that reports worker pids (for tests)")]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// Worker processes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
    /// Recycle each worker after this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: Option<u64>,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    /// Add a random 0..=N to each worker's --max-requests.
    #[arg(long, default_value_t = 0)]
    max_requests_jitter: u64,
    /// Stop and replace a worker busy on one request for longer than this, in milliseconds.
    #[arg(long)]
    worker_timeout_ms: Option<u64>,
    /// Spare-worker sizing: at least this many idle workers (with --max-spare).
    #[arg(long, requires = "max_spare")]
    min_spare: Option<usize>,
    /// Spare-worker sizing: at most this many idle workers (with --min-spare).
    #[arg(long, requires = "min_spare")]
    max_spare: Option<usize>,
    /// The most workers sizing or SIGTTIN grows to.
    #[arg(long)]
    max_workers: Option<usize>,
}

fn handle(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        match line.trim_end() {
            "pid" => writeln!(req.wfile, "{}", std::process::id())?,
            "crash" => std::process::exit(3),
            // Stuck: not even the socket is looked at again (what worker_timeout is for).
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
            "stop" => {
                req.server().shutdown();
                writeln!(req.wfile, "stopping")?;
            }
            other => writeln!(req.wfile, "{other}")?,
        }
        req.wfile.flush()?;
        line.clear();
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args: Args = common::parse_args();
    let mut prefork = PreFork::new(args.workers as usize)
        .max_requests(args.max_requests)
        .max_requests_jitter(args.max_requests_jitter)
        .worker_timeout(args.worker_timeout_ms.map(Duration::from_millis));
    if let (Some(min), Some(max)) = (args.min_spare, args.max_spare) {
        prefork = prefork.spare(min, max);
    }
    if let Some(max) = args.max_workers {
        prefork = prefork.max_workers(max);
    }
    signals::reload_on_sighup(&prefork.reload_handle())?;
    signals::resize_on_ttin_ttou(&prefork.size_handle())?;
    let mut server = Server::new(prefork, Tcp::bind(args.addr.as_str())?, handle)?
        .shutdown_timeout(Duration::from_millis(args.shutdown_timeout_ms));
    let mut unrelated = Command::new("sh").args(["-c", "exit 7"]).spawn()?;

    // Before the first line: a signal sent as soon as it is read must shut the server down gracefully.
    signals::shutdown_on_signals(&server.shutdown_handle())?;
    println!("listening on {}", server.local_addr());
    println!("unrelated {}", unrelated.id());
    std::io::stdout().flush()?;
    let summary = server.serve_forever()?;
    log::info!("shut down: {summary:?}");

    match unrelated.wait() {
        Ok(status) => println!("unrelated child: {status}"),
        Err(e) => println!("unrelated child lost: {e}"),
    }
    Ok(())
}
