//! What every example server shares: flag parsing with usage on error, logging, and the serving
//! contract (`listening on <addr>` as the first stdout line, graceful exit 0 on SIGINT/SIGTERM).
#![allow(dead_code)] // each example uses a different subset

use std::io::Write;

use clap::Parser;
use clap::error::ContextKind;
use socketserver::{Concurrency, Server, Transport, signals};

pub mod cli;
pub mod fileproto;
pub mod kvproto;
pub mod metrics;

/// Parses the command line; on a bad flag prints the error and the usage once, and exits 2.
///
/// Clap's own error includes the usage for some mistakes (an unknown flag) but not for others (a
/// bad value); the usage is added only when missing. It is rendered from the command that parsed the
/// arguments, so it carries the program's name from `argv[0]` (`Usage: echo`), not the crate's.
pub fn parse_args<A: Parser>() -> A {
    let mut command = A::command();
    let parsed = command
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut matches| A::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version: print, exit 0
        Err(e) => {
            let e = e.with_cmd(&command);
            let _ = e.print();
            if e.get(ContextKind::Usage).is_none() {
                eprintln!("\n{}", command.render_usage());
            }
            std::process::exit(2);
        }
    }
}

/// Logs to stderr through `env_logger`; `RUST_LOG` overrides the default level (`info`).
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

/// Prints `listening on <addr>` (flushed), makes SIGINT/SIGTERM shut the server down gracefully, and
/// serves until then.
pub fn serve<C, T, H>(server: Server<C, T, H>) -> anyhow::Result<()>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    serve_with_metrics(server, None)
}

/// As [`serve`], and with `metrics` (`--metrics-addr`) the server's figures at
/// `http://<metrics>/metrics`; the endpoint's bound address is the second stdout line,
/// `metrics on <addr>`. The endpoint stops after the server has drained, so a last scrape sees the
/// final counts.
pub fn serve_with_metrics<C, T, H>(
    mut server: Server<C, T, H>,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<()>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    let endpoint = metrics
        .map(|addr| metrics::Endpoint::start(addr, server.stats()))
        .transpose()?;
    println!("listening on {}", server.local_addr());
    if let Some(endpoint) = &endpoint {
        println!("metrics on {}", endpoint.addr);
    }
    std::io::stdout().flush()?;
    signals::shutdown_on_signals(&server.shutdown_handle())?;
    let summary = server.serve_forever()?;
    log::info!("shut down: {summary:?}");
    if let Some(endpoint) = endpoint {
        endpoint.stop();
    }
    Ok(())
}
