//! What every example server shares: flag parsing with usage on error, logging, and the serving
//! contract (`listening on <addr>` as the first stdout line, graceful exit 0 on SIGINT/SIGTERM).
#![allow(dead_code)] // each example uses a different subset

use std::io::Write;

use clap::Parser;
use socketserver::{Concurrency, Server, Transport, signals};

pub mod fileproto;

/// Parses the command line; on a bad flag prints the error and the usage, and exits 2.
pub fn parse_args<A: Parser>() -> A {
    match A::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version: print, exit 0
        Err(e) => {
            let _ = e.print();
            eprintln!("\n{}", A::command().render_usage());
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
pub fn serve<C, T, H>(mut server: Server<C, T, H>) -> anyhow::Result<()>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    println!("listening on {}", server.local_addr());
    std::io::stdout().flush()?;
    signals::shutdown_on_signals(&server.shutdown_handle())?;
    let summary = server.serve_forever()?;
    log::info!("shut down: {summary:?}");
    Ok(())
}
