//! The command-line flags the examples share: one definition of the concurrency strategy, the
//! transport, and where a server listens, flattened into each example's own `Args` with
//! `#[command(flatten)]`.
//!
//! One definition, so that `--concurrency pool` or `--transport unix-dgram` means the same thing, is
//! spelled the same way and is documented the same way in every example; an example that cannot run
//! a value (a blocking handler has no event-loop form for `reactor`) refuses it with
//! [`refuse`] — exit 2 and the reason — rather than offering a different list.

use std::fmt;
use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use socketserver::{Forking, Pool, PreFork, Reactor, Threading};

/// A concurrency strategy, as `--concurrency` (and `shutdown_latency --strategy`) names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// One request at a time, as Python's `TCPServer`.
    Sequential,
    /// A thread per request.
    Threading,
    /// A process per request.
    Forking,
    /// A fixed set of worker threads.
    Pool,
    /// A fixed set of pre-forked worker processes.
    Prefork,
    /// One epoll event loop for every connection (examples with an event-loop handler only).
    Reactor,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The flag's own spelling, so messages quote what the user typed.
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

// `--concurrency` and the flags that tune each strategy. (Comments, not doc comments, on the
// flattened structs: clap would take a doc comment for the example's own description.)
//
// The default strategy is `threading`; an example with another default overrides it with
// `#[command(mut_arg("concurrency", |a| a.default_value("sequential")))]`.
#[derive(Args, Clone, Debug)]
pub struct ConcurrencyArgs {
    /// Concurrency strategy.
    #[arg(long, value_enum, default_value_t = Strategy::Threading)]
    pub concurrency: Strategy,
    /// Worker threads (pool), processes (prefork) or event loops (reactor); default: the strategy's
    /// own (the reactor: one loop per CPU).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Cap on live threads for threading (default 1024).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_threads: Option<u32>,
    /// Cap on live children for forking (default 40, as Python's `max_children`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_children: Option<u32>,
    /// Recycle each prefork worker after this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_requests: Option<u64>,
    /// Add a random 0..=N to each prefork worker's --max-requests, so they do not restart together.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_requests_jitter: u64,
    /// Stop (and replace) a prefork worker busy on one request for longer than this.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub worker_timeout_secs: Option<u64>,
    /// Size prefork by its idle workers: start one when fewer than N are idle (needs --max-spare).
    #[arg(long, value_name = "N", requires = "max_spare")]
    pub min_spare: Option<u32>,
    /// Size prefork by its idle workers: retire one when more than N are idle (needs --min-spare).
    #[arg(long, value_name = "N", requires = "min_spare")]
    pub max_spare: Option<u32>,
    /// The most prefork workers sizing or SIGTTIN grows to (default 256).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_workers: Option<u32>,
}

impl ConcurrencyArgs {
    /// Refuses (exit 2) a flag that tunes a strategy other than the one chosen — `--max-requests`
    /// without `--concurrency prefork`, say — instead of ignoring it.
    pub fn check(&self) {
        let chosen = self.concurrency;
        let given: [(&str, bool, &[Strategy]); 9] = [
            (
                "--workers",
                self.workers.is_some(),
                &[Strategy::Pool, Strategy::Prefork, Strategy::Reactor],
            ),
            (
                "--max-threads",
                self.max_threads.is_some(),
                &[Strategy::Threading],
            ),
            (
                "--max-children",
                self.max_children.is_some(),
                &[Strategy::Forking],
            ),
            (
                "--max-requests",
                self.max_requests.is_some(),
                &[Strategy::Prefork],
            ),
            (
                "--max-requests-jitter",
                self.max_requests_jitter > 0,
                &[Strategy::Prefork],
            ),
            (
                "--worker-timeout-secs",
                self.worker_timeout_secs.is_some(),
                &[Strategy::Prefork],
            ),
            (
                "--min-spare",
                self.min_spare.is_some(),
                &[Strategy::Prefork],
            ),
            (
                "--max-spare",
                self.max_spare.is_some(),
                &[Strategy::Prefork],
            ),
            (
                "--max-workers",
                self.max_workers.is_some(),
                &[Strategy::Prefork],
            ),
        ];
        for (flag, set, applies_to) in given {
            if set && !applies_to.contains(&chosen) {
                let mut names: Vec<String> = applies_to.iter().map(ToString::to_string).collect();
                let last = names.pop().unwrap_or_default();
                let names = match names.is_empty() {
                    true => last,
                    false => format!("{} or {last}", names.join(", ")),
                };
                refuse(format!("{flag} tunes --concurrency {names}, not {chosen}"));
            }
        }
    }

    /// `Reactor`, with `--workers` event loops.
    pub fn reactor(&self) -> Reactor {
        self.workers
            .map_or_else(Reactor::new, |n| Reactor::new().threads(n as usize))
    }

    /// `Threading`, with `--max-threads`.
    pub fn threading(&self) -> Threading {
        self.max_threads
            .map_or_else(Threading::new, |n| Threading::new().max_threads(n as usize))
    }

    /// `Forking`, with `--max-children`.
    pub fn forking(&self) -> Forking {
        self.max_children
            .map_or_else(Forking::new, |n| Forking::new().max_children(n as usize))
    }

    /// `Pool`, with `--workers`.
    pub fn pool(&self) -> Pool {
        self.workers
            .map_or_else(Pool::default, |n| Pool::new(n as usize))
    }

    /// `PreFork`, with `--workers`, `--max-requests` (and its jitter), `--worker-timeout-secs`, the
    /// spare-worker sizing and `--max-workers`.
    pub fn prefork(&self) -> PreFork {
        let mut prefork = self
            .workers
            .map_or_else(PreFork::default, |n| PreFork::new(n as usize))
            .max_requests(self.max_requests)
            .max_requests_jitter(self.max_requests_jitter)
            .worker_timeout(self.worker_timeout_secs.map(std::time::Duration::from_secs));
        if let (Some(min), Some(max)) = (self.min_spare, self.max_spare) {
            prefork = prefork.spare(min as usize, max as usize);
        }
        if let Some(max) = self.max_workers {
            prefork = prefork.max_workers(max as usize);
        }
        prefork
    }
}

/// A transport, as `--transport` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Tcp,
    Udp,
    /// Unix stream socket: the address is a path, or `@name` for a Linux abstract address.
    Unix,
    /// Unix datagram socket: the address is a path, or `@name` for a Linux abstract address.
    UnixDgram,
}

// `--transport`. Optional, so a server serving an inherited socket can tell "not given" (serve it
// as what it is) from an explicit choice (which must match); everyone else defaults to TCP.
#[derive(Args, Clone, Debug)]
pub struct TransportArgs {
    /// Transport (default tcp).
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
}

impl TransportArgs {
    /// The transport chosen, TCP if none was.
    pub fn or_tcp(&self) -> Transport {
        self.transport.unwrap_or(Transport::Tcp)
    }
}

// Where a server's socket comes from: bound at `--addr`, or inherited from the parent process
// (`--listen-fd`, systemd socket activation).
#[derive(Args, Clone, Debug)]
pub struct ListenArgs {
    /// Address to bind: `host:port` (port 0 picks a free port), or for Unix transports a path or
    /// `@name` (abstract). Default: 127.0.0.1:0.
    #[arg(long)]
    pub addr: Option<String>,
    /// Serve on inherited descriptor N (3 or above), bound (and for streams listening) by the parent
    /// process.
    #[arg(
        long,
        value_name = "N",
        value_parser = parse_listen_fd,
        conflicts_with_all = ["addr", "systemd"]
    )]
    pub listen_fd: Option<RawFd>,
    /// Serve on the first socket passed by systemd socket activation (automatic when LISTEN_FDS is
    /// set).
    #[arg(long, conflicts_with = "addr")]
    pub systemd: bool,
    /// SO_REUSEPORT: several processes may bind the same TCP/UDP port; the kernel spreads the load.
    #[arg(long)]
    pub reuse_port: bool,
}

// `--max-per-peer`: a stream server's per-client connection limit. Off by default (the benchmarks
// drive the echo example with hundreds of connections from one address); servers meant for people
// set a default with `#[command(mut_arg("max_per_peer", |a| a.default_value("8")))]`.
#[derive(Args, Clone, Debug)]
pub struct PeerArgs {
    /// At most N connections open at once from one IP address; more are closed at once (0: no
    /// limit).
    #[arg(long, value_name = "N")]
    pub max_per_peer: Option<usize>,
}

impl PeerArgs {
    /// The limit to give `Server::max_connections_per_peer`.
    pub fn limit(&self) -> Option<usize> {
        self.max_per_peer.filter(|&n| n > 0)
    }
}

// `--metrics-addr`: where the server's figures are served for Prometheus (see `common::metrics`).
#[derive(Args, Clone, Debug)]
pub struct MetricsArgs {
    /// Serve the server's live figures at http://HOST:PORT/metrics, in Prometheus's text format
    /// (port 0: any free port; the bound address is printed as `metrics on <addr>`). Needs the
    /// example built with `--features prometheus`.
    #[arg(long, value_name = "HOST:PORT", value_parser = metrics_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Why `--metrics-addr` is refused in a build without the exporter.
pub const NO_PROMETHEUS: &str = "this build has no Prometheus exporter: build the example with \
    `--features prometheus` (cargo run --release --features prometheus --example echo -- …)";

/// `--metrics-addr`: an address, in a build that can serve it.
fn metrics_addr(value: &str) -> Result<std::net::SocketAddr, String> {
    if cfg!(not(feature = "prometheus")) {
        return Err(NO_PROMETHEUS.to_string());
    }
    value.parse().map_err(|e| format!("{e}"))
}

// `--tls-cert`, `--tls-key`, `--tls-client-ca`, `--tls-alpn`: serve a stream server over TLS. The
// flags exist in every build; without the `tls` feature they are refused as they are parsed.
#[derive(Args, Clone, Debug)]
pub struct TlsArgs {
    /// Serve over TLS with this certificate chain (PEM, leaf first; needs --tls-key). SIGHUP re-reads
    /// the files for new connections (under prefork, as part of replacing the workers). Needs the
    /// example built with `--features tls`.
    #[arg(long, value_name = "PATH", requires = "tls_key", value_parser = tls_path)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert", value_parser = tls_path)]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: refuse clients without a certificate signed by a CA in this file (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert", value_parser = tls_path)]
    pub tls_client_ca: Option<PathBuf>,
    /// ALPN protocols offered, most preferred first (e.g. h2,http/1.1); a client offering none of
    /// them is refused.
    #[arg(
        long,
        value_name = "PROTO,...",
        value_delimiter = ',',
        requires = "tls_cert",
        value_parser = tls_alpn
    )]
    pub tls_alpn: Vec<String>,
}

/// Why the TLS flags are refused in a build without TLS.
pub const NO_TLS: &str = "this build has no TLS: build the example with `--features tls` \
    (cargo run --release --features tls --example echo -- --tls-cert cert.pem --tls-key key.pem)";

/// A `--tls-*` path, in a build that can serve TLS.
fn tls_path(value: &str) -> Result<PathBuf, String> {
    if cfg!(not(feature = "tls")) {
        return Err(NO_TLS.to_string());
    }
    Ok(PathBuf::from(value))
}

/// One `--tls-alpn` protocol name, in a build that can serve TLS.
fn tls_alpn(value: &str) -> Result<String, String> {
    if cfg!(not(feature = "tls")) {
        return Err(NO_TLS.to_string());
    }
    match value.len() {
        1..=255 => Ok(value.to_string()),
        _ => Err(format!(
            "{value:?}: an ALPN protocol name has 1 to 255 bytes"
        )),
    }
}

impl TlsArgs {
    /// Refuses (exit 2) TLS where it cannot be served: on a datagram transport, or under
    /// `--concurrency reactor` in an example whose handler has no event-loop form
    /// (`reactor_ok == false`).
    pub fn check(&self, strategy: Strategy, transport: Option<Transport>, reactor_ok: bool) {
        if self.tls_cert.is_none() {
            return;
        }
        if strategy == Strategy::Reactor && !reactor_ok {
            refuse(
                "--tls-cert: this example serves TLS with its blocking handler (sequential, \
                 threading, forking, pool, prefork), not under --concurrency reactor",
            );
        }
        if let Some(t @ (Transport::Udp | Transport::UnixDgram)) = transport {
            refuse(datagram_tls(t));
        }
    }

    /// Serves `server` over TLS when `--tls-cert` was given (the files are read now), else returns it
    /// as it is. `SIGHUP` then re-reads the files for new connections — under `strategy` prefork
    /// through the workers' reload (`reload_on_sighup`), which reads them again before it forks the
    /// new workers.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable certificate or key; `SIGHUP` cannot be routed.
    #[cfg(feature = "tls")]
    pub fn serve_over<C, T, H>(
        &self,
        server: socketserver::Server<C, T, H>,
        strategy: Strategy,
    ) -> anyhow::Result<socketserver::Server<C, T, H>>
    where
        C: socketserver::Concurrency<T, H>,
        T: socketserver::Transport<Kind = socketserver::transport::Stream>,
    {
        use anyhow::Context;
        use socketserver::tls::{ClientAuth, Tls};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(server);
        };
        let mut builder = Tls::builder().cert(cert, key).alpn(&self.tls_alpn);
        if let Some(ca) = &self.tls_client_ca {
            builder = builder.client_ca(ca, ClientAuth::Required);
        }
        let tls = builder.build().context("--tls-cert")?;
        if strategy != Strategy::Prefork {
            socketserver::signals::reload_tls_on_sighup(&tls)?;
        }
        Ok(server.tls(tls))
    }

    /// Without the `tls` feature: `server` as it is (the flags were refused as they were parsed).
    ///
    /// # Errors
    /// `--tls-cert` given all the same.
    #[cfg(not(feature = "tls"))]
    pub fn serve_over<S>(&self, server: S, _strategy: Strategy) -> anyhow::Result<S> {
        match self.tls_cert {
            Some(_) => anyhow::bail!("--tls-cert: {NO_TLS}"),
            None => Ok(server),
        }
    }
}

/// Why TLS is refused on datagram transport `t`.
fn datagram_tls(t: Transport) -> String {
    let name = t
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    format!("--tls-cert: TLS needs a stream transport (tcp, unix), not --transport {name}")
}

/// `--listen-fd`: a descriptor number other than 0, 1 and 2.
///
/// The standard descriptors are never a listening socket a parent handed down, and taking one over
/// would close it when it turns out not to be a socket — stderr included, so the error explaining
/// the failure could not be printed.
fn parse_listen_fd(s: &str) -> Result<RawFd, String> {
    match s.parse::<RawFd>() {
        Ok(fd @ 0..=2) => Err(format!(
            "{fd} is a standard descriptor (stdin, stdout or stderr), not a socket left open by \
             the parent; use 3 or above"
        )),
        Ok(fd) if fd > 2 => Ok(fd),
        _ => Err(format!("{s:?} is not a descriptor number (3 or above)")),
    }
}

/// Refuses a combination of flags clap cannot express (a strategy this example cannot run, say):
/// prints `error: <why>` and exits 2, as for any other bad flag.
pub fn refuse(why: impl fmt::Display) -> ! {
    eprintln!("error: {why}");
    std::process::exit(2);
}
