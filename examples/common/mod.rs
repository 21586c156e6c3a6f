//! What every example server shares: flag parsing with usage on error, logging, and the serving
//! contract (`listening on <addr>` as the first stdout line, graceful exit 0 on SIGINT/SIGTERM).
#![allow(dead_code)] // each example uses a different subset

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use clap::error::ContextKind;
use socketserver::{Concurrency, Server, Transport, signals};

pub mod cli;
pub mod fileproto;
pub mod kvproto;
#[cfg(feature = "prometheus")]
pub mod metrics;
#[cfg(not(feature = "prometheus"))]
#[path = "metrics_off.rs"]
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
    serve_with(server, Ops::default())
}

/// The sockets this process was started with (systemd's socket activation, or an upgrading
/// predecessor's hand-over), claimed once.
static ACTIVATED: std::sync::Mutex<Option<Vec<socketserver::InheritedSocket>>> =
    std::sync::Mutex::new(None);

fn claim_activated() -> anyhow::Result<()> {
    let mut claimed = ACTIVATED.lock().unwrap_or_else(|e| e.into_inner());
    if claimed.is_none() {
        *claimed = Some(socketserver::activation::listen_fds().context("socket activation")?);
    }
    Ok(())
}

/// Takes the activation socket named `name`, if there is one.
fn take_activated(name: &str) -> Option<socketserver::InheritedSocket> {
    let mut claimed = ACTIVATED.lock().unwrap_or_else(|e| e.into_inner());
    let sockets = claimed.as_mut()?;
    let i = sockets.iter().position(|s| s.name() == Some(name))?;
    Some(sockets.remove(i))
}

/// The socket a server named `name` serves, if the process was started with sockets: the one named
/// `name` (an upgrade names them), else the first not meant for the metrics endpoint (systemd names
/// them after the unit, or not at all).
///
/// # Errors
/// The activation variables are malformed, or a socket is unusable.
pub fn activated(name: &str) -> anyhow::Result<Option<socketserver::InheritedSocket>> {
    claim_activated()?;
    if let Some(socket) = take_activated(name) {
        return Ok(Some(socket));
    }
    let mut claimed = ACTIVATED.lock().unwrap_or_else(|e| e.into_inner());
    let Some(sockets) = claimed.as_mut() else {
        return Ok(None);
    };
    let i = sockets.iter().position(|s| s.name() != Some("metrics"));
    Ok(i.map(|i| sockets.remove(i)))
}

/// What an example server may add to serving: `--metrics-addr`, `--pid-file`, an upgrade on
/// `SIGUSR2`.
#[derive(Default)]
pub struct Ops {
    /// Serve the figures at `http://<addr>/metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// Write the PID file here once ready.
    pub pid_file: Option<std::path::PathBuf>,
    /// `SIGUSR2` upgrades: the server's socket is handed over as this name.
    pub upgrade_as: Option<&'static str>,
    /// How long an upgrade waits for the successor to be ready (default 60 s).
    pub upgrade_timeout: Option<std::time::Duration>,
}

/// As [`serve`], with `ops`. Under systemd (`NOTIFY_SOCKET` set), every example server reports
/// `READY=1`, `STOPPING=1` and watchdog pings without a flag. With `ops.metrics` the endpoint's
/// bound address is the second stdout line, `metrics on <addr>`; it stops after the server has
/// drained, so a last scrape sees the final counts.
pub fn serve_with<C, T, H>(server: Server<C, T, H>, ops: Ops) -> anyhow::Result<()>
where
    C: Concurrency<T, H>,
    T: Transport,
{
    let mut server = server.notify(socketserver::notify::Notifier::from_env()?);
    if let Some(path) = &ops.pid_file {
        server = server
            .pid_file(path)
            .with_context(|| format!("--pid-file {}", path.display()))?;
    }
    let endpoint = ops
        .metrics
        .map(|addr| metrics::Endpoint::bind(addr, take_activated("metrics"), server.stats()))
        .transpose()?;
    if let Some(name) = ops.upgrade_as {
        let mut upgrade = socketserver::upgrade::Upgrade::new()?.listener(name, &server)?;
        if let Some(timeout) = ops.upgrade_timeout {
            upgrade = upgrade.ready_timeout(timeout);
        }
        if let Some(endpoint) = &endpoint {
            upgrade = endpoint.hand_over(upgrade)?;
        }
        signals::upgrade_on_sigusr2(upgrade)?;
    }
    // Before the first line: a script that signals as soon as it reads it must get a graceful exit,
    // not the signal's default action.
    signals::shutdown_on_signals(&server.shutdown_handle())?;
    println!("listening on {}", server.local_addr());
    if let Some(endpoint) = &endpoint {
        println!("metrics on {}", endpoint.addr());
    }
    std::io::stdout().flush()?;
    let running = endpoint.map(metrics::Endpoint::start).transpose()?;
    let summary = server.serve_forever()?;
    log::info!("shut down: {summary:?}");
    if let Some(running) = running {
        running.stop();
    }
    Ok(())
}
