//! `--metrics-addr HOST:PORT`: the server's figures at `http://HOST:PORT/metrics`, in Prometheus's
//! text exposition format.
//!
//! The figures go through the `metrics` facade ([`Stats::publish`]) into
//! `metrics-exporter-prometheus`'s recorder, which renders them; the endpoint itself is a small
//! `Threading` server of this crate, beside the main one. It runs in the parent process: under
//! `Forking` and `PreFork` the children's counts are in memory the parent shares, so one scrape is
//! the whole server's.
//!
//! Built with the `prometheus` feature only (`metrics_off.rs` stands in without it), so that the
//! examples' default build compiles no exporter.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use socketserver::stats::{BUCKET_BOUNDS_SECONDS, Stats};
use socketserver::upgrade::Upgrade;
use socketserver::{
    InheritedSocket, Server, ShutdownHandle, StreamHandler, StreamRequest, Tcp, Threading,
    ThreadingTcpServer,
};

/// The longest request line or header line read from a scraper.
const MAX_LINE: usize = 8 * 1024;
/// The most header lines read from a scraper.
const MAX_HEADERS: usize = 100;

/// The `/metrics` endpoint: bound (or taken over from a predecessor) first, serving once started.
pub struct Endpoint {
    server: ThreadingTcpServer<Scrape>,
    addr: SocketAddr,
}

/// A running endpoint; [`Running::stop`] shuts it down.
pub struct Running {
    stop: ShutdownHandle,
    thread: JoinHandle<()>,
}

/// The endpoint's handler: one scrape per connection.
pub struct Scrape {
    stats: Stats,
    prometheus: PrometheusHandle,
}

impl StreamHandler for Scrape {
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        scrape(req, &self.stats, &self.prometheus)
    }
}

impl Endpoint {
    /// Binds `addr` — or serves `inherited`, the endpoint's socket handed over by an upgrading
    /// predecessor — for `stats`.
    ///
    /// # Errors
    /// The recorder cannot be installed (one per process), or `addr` cannot be bound.
    pub fn bind(
        addr: SocketAddr,
        inherited: Option<InheritedSocket>,
        stats: Stats,
    ) -> anyhow::Result<Endpoint> {
        let prometheus = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("socketserver_request_duration_seconds".into()),
                &BUCKET_BOUNDS_SECONDS,
            )?
            .install_recorder()
            .context("installing the Prometheus recorder")?;
        let transport = match inherited {
            Some(socket) => socket.into_tcp().context("the inherited metrics socket")?,
            None => Tcp::bind(addr).with_context(|| format!("--metrics-addr {addr}"))?,
        };
        let server = Server::new(Threading::new(), transport, Scrape { stats, prometheus })?
            .handle_error(|peer, e| log::debug!("metrics request from {peer:?}: {e}"));
        let addr = server
            .local_addr()
            .as_inet()
            .context("the metrics endpoint has no inet address")?;
        Ok(Endpoint { server, addr })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds the endpoint's socket, as `metrics`, to what `upgrade` hands its successor.
    ///
    /// # Errors
    /// As [`Upgrade::listener`].
    pub fn hand_over(&self, upgrade: Upgrade) -> std::io::Result<Upgrade> {
        upgrade.listener("metrics", &self.server)
    }

    /// Serves on a thread of its own.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start(self) -> anyhow::Result<Running> {
        let mut server = self.server;
        let stop = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                if let Err(e) = server.serve_forever() {
                    log::error!("metrics endpoint: {e}");
                }
            })?;
        Ok(Running { stop, thread })
    }
}

impl Running {
    /// Shuts the endpoint down and waits for it.
    pub fn stop(self) {
        self.stop.shutdown();
        let _ = self.thread.join();
    }
}

/// Answers one HTTP request: `GET /metrics` with the figures, anything else with an error status.
/// One request per connection (`Connection: close`): scrapers open one per scrape.
fn scrape(
    req: &mut StreamRequest,
    stats: &Stats,
    prometheus: &PrometheusHandle,
) -> anyhow::Result<()> {
    let mut request_line = String::new();
    (&mut req.rfile)
        .take(MAX_LINE as u64)
        .read_line(&mut request_line)?;
    // The headers are read and ignored, so the client sees its whole request taken.
    let mut header = String::new();
    for _ in 0..MAX_HEADERS {
        header.clear();
        let n = (&mut req.rfile)
            .take(MAX_LINE as u64)
            .read_line(&mut header)?;
        if n == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => {
            stats.publish();
            prometheus.run_upkeep();
            ("200 OK", prometheus.render())
        }
        (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics is here\n".to_string()),
        (Some(_), Some(_)) => ("405 Method Not Allowed", "GET only\n".to_string()),
        _ => ("400 Bad Request", "not an HTTP request\n".to_string()),
    };
    write!(
        req.wfile,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    req.wfile.flush()?;
    Ok(())
}
