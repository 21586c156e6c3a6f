//! TLS load generator (rustls 0.23, ring) for the TLS benchmarks: loopback only.
//!
//! ```text
//! tls-loadgen [--strict] [--tag KEY=VALUE]... --addr HOST:PORT --ca CA.pem [--server-name NAME]
//!             [--verify full|once] [--io-timeout-ms MS] [--size S] [--duration T] MODE
//! MODE: rr          [--conns N] [--threads K]
//!       handshakes  [--workers W] [--quickack]
//! ```
//!
//! * `rr`: N persistent TLS connections, each sending S bytes and waiting for the full, byte-checked
//!   echo before the next request, for T seconds. Driven by a tokio runtime of K threads (default 1),
//!   so 16 or 256 connections don't need a client thread each. Each connection is set up, and does
//!   one warm-up round trip, before the clock starts. Reports requests/s (`rps`).
//! * `handshakes`: W threads, each in a loop: connect, a full TLS handshake (session resumption is
//!   off, so every handshake is a full one), one S-byte round trip, `close_notify` and half-close,
//!   then wait for the server's close (so every counted connection was completely served). Reports
//!   handshakes/s (`hps`); the latency is from `connect` to the echo.
//!
//! `--quickack` (handshakes): set `TCP_QUICKACK` on the client's socket once the handshake is done
//! and again every millisecond while it waits for the echo, so the client acknowledges at once what
//! arrived. Without it,
//! a server that leaves Nagle's algorithm on (no `TCP_NODELAY`) and writes its TLS 1.3 session
//! tickets and then the echo as two segments holds the echo until the tickets are acknowledged,
//! which a Linux client delays by up to 40 ms: every connection then waits ~40 ms and the run
//! measures that timer, not the server. The flag removes the timer from the measurement; leaving it
//! off shows what a stock client sees.
//!
//! The server is verified against the CA certificate(s) in `--ca`, with the name `--server-name`
//! (default `localhost`). `--verify once` (the default for `handshakes`) verifies the certificate
//! chain and the handshake signature in full on the first handshake, then accepts that same
//! certificate without verifying them again: the server does the same work either way, and the two
//! ECDSA verifications a full client check costs (more than the server's one signature) would
//! otherwise make the load generator's one core, not the server, the limit. `--verify full`
//! verifies every handshake. `rr` defaults to `full` (it handshakes once per connection).
//!
//! Output: exactly one JSON line on stdout; progress and errors on stderr. Exit status: 0 when the
//! run completed (the JSON's `errors` counts individual failures), 1 when it could not run or
//! nothing succeeded, 2 for a usage error, 3 if the watchdog fired, 4 with `--strict` when any
//! error was counted.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

const USAGE: &str = "usage: tls-loadgen [--strict] [--tag KEY=VALUE]... --addr HOST:PORT --ca CA.pem \
[--server-name NAME] [--verify full|once] [--io-timeout-ms MS] [--size S] [--duration T] \
rr [--conns N] [--threads K] | handshakes [--workers W] [--quickack]";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Rr,
    Handshakes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    Full,
    Once,
}

struct Args {
    mode: Mode,
    addr: SocketAddr,
    ca: PathBuf,
    server_name: String,
    verify: Verify,
    io_timeout: Duration,
    size: usize,
    duration: Duration,
    conns: usize,
    threads: usize,
    workers: usize,
    quickack: bool,
    strict: bool,
    tags: Vec<(String, String)>,
}

/// What one run (or one connection, or one worker) counted.
#[derive(Default)]
struct Tally {
    done: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    version: Option<String>,
    suite: Option<String>,
}

impl Tally {
    fn error(&mut self, what: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what.to_string());
        }
    }

    fn record(&mut self, latency: Duration) {
        self.done += 1;
        self.latencies_us
            .push(latency.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    fn merge(&mut self, other: Tally) {
        self.done += other.done;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
        self.version = self.version.take().or(other.version);
        self.suite = self.suite.take().or(other.suite);
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("tls-loadgen: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match client_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tls-loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    // The watchdog: setup, the run itself, and one I/O timeout for the stragglers, plus a margin.
    let limit = args.duration + args.io_timeout * 3 + Duration::from_secs(10);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("tls-loadgen: watchdog: the run did not end within {limit:?}");
        std::process::exit(3);
    });
    let name = match ServerName::try_from(args.server_name.clone()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tls-loadgen: --server-name {:?}: {e}", args.server_name);
            return ExitCode::from(2);
        }
    };
    let result = match args.mode {
        Mode::Rr => run_rr(&args, config, name),
        Mode::Handshakes => Ok(run_handshakes(&args, config, name)),
    };
    let (tally, elapsed) = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tls-loadgen: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", report(&args, &tally, elapsed));
    if tally.done == 0 {
        eprintln!(
            "tls-loadgen: nothing succeeded: {}",
            tally.first_error.as_deref().unwrap_or("no error recorded")
        );
        return ExitCode::from(1);
    }
    if args.strict && tally.errors > 0 {
        eprintln!(
            "tls-loadgen: --strict: {} error(s), the first: {}",
            tally.errors,
            tally.first_error.as_deref().unwrap_or("?")
        );
        return ExitCode::from(4);
    }
    ExitCode::SUCCESS
}

fn parse_args() -> Result<Args, String> {
    let mut mode = None;
    let (mut addr, mut ca) = (None, None);
    let mut server_name = "localhost".to_string();
    let mut verify = None;
    let mut io_timeout = Duration::from_millis(5000);
    let (mut size, mut duration) = (64usize, Duration::from_secs(5));
    let (mut conns, mut threads, mut workers) = (16usize, 1usize, 8usize);
    let mut strict = false;
    let mut quickack = false;
    let mut tags = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        fn number<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: not a number: {v:?}"))
        }
        match flag.as_str() {
            "rr" => mode = Some(Mode::Rr),
            "handshakes" => mode = Some(Mode::Handshakes),
            "--addr" => addr = Some(value()?),
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--server-name" => server_name = value()?,
            "--verify" => {
                verify = Some(match value()?.as_str() {
                    "full" => Verify::Full,
                    "once" => Verify::Once,
                    v => return Err(format!("--verify: full or once, not {v:?}")),
                })
            }
            "--io-timeout-ms" => io_timeout = Duration::from_millis(number(&flag, value()?)?),
            "--size" => size = number(&flag, value()?)?,
            "--duration" => duration = Duration::from_secs_f64(number(&flag, value()?)?),
            "--conns" => conns = number(&flag, value()?)?,
            "--threads" => threads = number(&flag, value()?)?,
            "--workers" => workers = number(&flag, value()?)?,
            "--strict" => strict = true,
            "--quickack" => quickack = true,
            "--tag" => {
                let v = value()?;
                let (k, val) = v.split_once('=').ok_or(format!("--tag: KEY=VALUE, not {v:?}"))?;
                tags.push((k.to_string(), val.to_string()));
            }
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mode = mode.ok_or("a mode is required: rr or handshakes")?;
    let addr = addr.ok_or("--addr is required")?;
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or(format!("--addr {addr}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--addr {addr}: not a loopback address (127.0.0.0/8 or ::1); this tool loads local servers only"
        ));
    }
    if size == 0 || conns == 0 || threads == 0 || workers == 0 || io_timeout.is_zero() {
        return Err("--size, --conns, --threads, --workers and --io-timeout-ms must be at least 1".into());
    }
    Ok(Args {
        mode,
        addr,
        ca: ca.ok_or("--ca is required")?,
        server_name,
        verify: verify.unwrap_or(match mode {
            Mode::Rr => Verify::Full,
            Mode::Handshakes => Verify::Once,
        }),
        io_timeout,
        size,
        duration,
        conns,
        threads,
        workers,
        quickack,
        strict,
        tags,
    })
}

/// The client's rustls configuration: ring, TLS 1.3 and 1.2, no session resumption (every
/// handshake is a full one), the server checked against `--ca`.
fn client_config(args: &Args) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&args.ca)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--ca {}: {e}", args.ca.display()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: {e}", args.ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca {}: no certificate", args.ca.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("--ca {}: {e}", args.ca.display()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match args.verify {
        Verify::Full => webpki,
        Verify::Once => Arc::new(VerifyOnce {
            inner: webpki,
            known: Mutex::new(Vec::new()),
        }),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// `--verify once`: webpki's checks in full for a certificate not seen before; a certificate that
/// passed them all (its chain, then a handshake signature) is accepted from then on as it is.
#[derive(Debug)]
struct VerifyOnce {
    inner: Arc<WebPkiServerVerifier>,
    known: Mutex<Vec<Vec<u8>>>,
}

impl VerifyOnce {
    fn is_known(&self, cert: &CertificateDer<'_>) -> bool {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().any(|k| k.as_slice() == cert.as_ref())
    }

    fn remember(&self, cert: &CertificateDer<'_>) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if !known.iter().any(|k| k.as_slice() == cert.as_ref()) {
            known.push(cert.as_ref().to_vec());
        }
    }
}

impl ServerCertVerifier for VerifyOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.is_known(end_entity) {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.is_known(cert) {
            return Ok(HandshakeSignatureValid::assertion());
        }
        // Reached only once the chain passed (rustls checks it first): remember the pair.
        let valid = self.inner.verify_tls12_signature(message, cert, dss)?;
        self.remember(cert);
        Ok(valid)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.is_known(cert) {
            return Ok(HandshakeSignatureValid::assertion());
        }
        let valid = self.inner.verify_tls13_signature(message, cert, dss)?;
        self.remember(cert);
        Ok(valid)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The message of request `seq`: `size` bytes that change with `seq`, so a stale echo is caught.
fn fill(msg: &mut [u8], seq: u64) {
    for (i, b) in msg.iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8) | 1;
    }
    let n = msg.len().min(8);
    msg[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

// ------------------------------------------------------------------------------------------ rr --

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

struct RrCtx {
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    io_timeout: Duration,
    size: usize,
}

async fn rr_connect(ctx: &RrCtx) -> io::Result<TlsStream> {
    let io_timeout = ctx.io_timeout;
    let timed = |what: &'static str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
    let sock = tokio::time::timeout(io_timeout, tokio::net::TcpStream::connect(ctx.addr))
        .await
        .map_err(|_| timed("connect"))??;
    sock.set_nodelay(true)?;
    tokio::time::timeout(io_timeout, ctx.connector.connect(ctx.name.clone(), sock))
        .await
        .map_err(|_| timed("TLS handshake"))?
}

/// One round trip of `msg` on `s`, the echo checked; `Err` with why it failed.
async fn rr_round_trip(ctx: &RrCtx, s: &mut TlsStream, msg: &[u8], buf: &mut [u8]) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        s.write_all(msg).await?;
        s.flush().await?;
        s.read_exact(buf).await?;
        io::Result::Ok(())
    };
    match tokio::time::timeout(ctx.io_timeout, io).await {
        Err(_) => Err(format!("no echo within {:?}", ctx.io_timeout)),
        Ok(Err(e)) => Err(format!("round trip: {e}")),
        Ok(Ok(())) if buf != msg => Err("wrong echo".to_string()),
        Ok(Ok(())) => Ok(()),
    }
}

/// Connects one connection and does its warm-up round trip.
async fn rr_setup(ctx: Arc<RrCtx>) -> Result<TlsStream, String> {
    let mut s = rr_connect(&ctx).await.map_err(|e| format!("connect: {e}"))?;
    let mut msg = vec![0u8; ctx.size];
    let mut buf = vec![0u8; ctx.size];
    fill(&mut msg, u64::MAX);
    rr_round_trip(&ctx, &mut s, &msg, &mut buf).await?;
    Ok(s)
}

/// Round trips on `s` until `deadline`; a broken connection is counted and replaced.
async fn rr_loop(ctx: Arc<RrCtx>, s: TlsStream, deadline: Instant) -> Tally {
    use tokio::io::AsyncWriteExt;
    let mut tally = Tally::default();
    let (_, conn) = s.get_ref();
    tally.version = conn.protocol_version().map(|v| format!("{v:?}"));
    tally.suite = conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite()));
    let mut msg = vec![0u8; ctx.size];
    let mut buf = vec![0u8; ctx.size];
    let mut seq = 0u64;
    let mut live = Some(s);
    while Instant::now() < deadline {
        let Some(s) = live.as_mut() else {
            match rr_connect(&ctx).await {
                Ok(s) => live = Some(s),
                Err(e) => {
                    tally.error(format!("reconnect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            continue;
        };
        seq += 1;
        fill(&mut msg, seq);
        let t = Instant::now();
        match rr_round_trip(&ctx, s, &msg, &mut buf).await {
            Ok(()) => tally.record(t.elapsed()),
            Err(e) => {
                tally.error(e);
                live = None;
            }
        }
    }
    if let Some(mut s) = live {
        // close_notify and half-close; the server's answer is not waited for.
        let _ = tokio::time::timeout(ctx.io_timeout, s.shutdown()).await;
    }
    tally
}

fn run_rr(args: &Args, config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<(Tally, Duration), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let ctx = Arc::new(RrCtx {
        addr: args.addr,
        connector: tokio_rustls::TlsConnector::from(config),
        name,
        io_timeout: args.io_timeout,
        size: args.size,
    });
    let (conns, duration) = (args.conns, args.duration);
    let out = runtime.block_on(async move {
        // Every connection set up (handshake and warm-up) before the clock starts.
        let setups: Vec<_> = (0..conns).map(|_| tokio::spawn(rr_setup(ctx.clone()))).collect();
        let mut streams = Vec::with_capacity(conns);
        let mut tally = Tally::default();
        for h in setups {
            match h.await {
                Ok(Ok(s)) => streams.push(s),
                Ok(Err(e)) => tally.error(format!("setup: {e}")),
                Err(e) => tally.error(format!("setup task: {e}")),
            }
        }
        if streams.is_empty() {
            return Err(format!(
                "no connection could be set up: {}",
                tally.first_error.unwrap_or_default()
            ));
        }
        let start = Instant::now();
        let deadline = start + duration;
        let loops: Vec<_> = streams
            .into_iter()
            .map(|s| tokio::spawn(rr_loop(ctx.clone(), s, deadline)))
            .collect();
        for h in loops {
            match h.await {
                Ok(t) => tally.merge(t),
                Err(e) => tally.error(format!("connection task: {e}")),
            }
        }
        Ok((tally, start.elapsed()))
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    out
}

// ---------------------------------------------------------------------------------- handshakes --

/// One connection: connect, full handshake, one round trip, close; the latency to the echo.
fn one_handshake(
    args: &Args,
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    msg: &[u8],
    buf: &mut [u8],
    tally: &mut Tally,
) -> Result<(), String> {
    let t = Instant::now();
    let sock = TcpStream::connect_timeout(&args.addr, args.io_timeout).map_err(|e| format!("connect: {e}"))?;
    let setup = |s: &TcpStream| {
        s.set_read_timeout(Some(args.io_timeout))?;
        s.set_write_timeout(Some(args.io_timeout))?;
        s.set_nodelay(true)
    };
    setup(&sock).map_err(|e| format!("socket options: {e}"))?;
    let conn = ClientConnection::new(config.clone(), name.clone()).map_err(|e| format!("TLS client: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    if args.quickack {
        quickack(&tls.sock).map_err(|e| format!("TCP_QUICKACK: {e}"))?;
    }
    if tally.version.is_none() {
        tally.version = tls.conn.protocol_version().map(|v| format!("{v:?}"));
        tally.suite = tls.conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite()));
    }
    tls.write_all(msg)
        .and_then(|()| tls.flush())
        .map_err(|e| format!("write: {e}"))?;
    if args.quickack {
        read_echo_quickack(&mut tls, buf, args.io_timeout)?;
    } else {
        tls.read_exact(buf).map_err(|e| format!("read the echo: {e}"))?;
    }
    if buf != msg {
        return Err("wrong echo".to_string());
    }
    let latency = t.elapsed();
    // close_notify, half-close, then wait for the server's close: the connection was fully served.
    tls.conn.send_close_notify();
    while tls.conn.wants_write() {
        tls.conn
            .write_tls(&mut tls.sock)
            .map_err(|e| format!("close_notify: {e}"))?;
    }
    let _ = tls.sock.shutdown(Shutdown::Write);
    let mut junk = [0u8; 4096];
    loop {
        match tls.sock.read(&mut junk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The server closed with our close_notify unread: a reset here still means it is done.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("waiting for the server's close: {e}")),
        }
    }
    tally.record(latency);
    Ok(())
}

/// Reads the echo into `buf` with `TCP_QUICKACK` set again every millisecond it has not come:
/// setting it sends an acknowledgement the kernel was delaying (the session tickets' one, which a
/// server with Nagle's algorithm on waits for before sending the echo), and the quick-ACK mode it
/// turns on lasts only a few segments, so setting it once before the read would still leave some
/// connections waiting for the 40 ms timer.
fn read_echo_quickack(
    tls: &mut rustls::StreamOwned<ClientConnection, TcpStream>,
    buf: &mut [u8],
    io_timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + io_timeout;
    let poll = Duration::from_millis(1);
    tls.sock
        .set_read_timeout(Some(poll))
        .map_err(|e| format!("socket options: {e}"))?;
    let mut got = 0;
    while got < buf.len() {
        quickack(&tls.sock).map_err(|e| format!("TCP_QUICKACK: {e}"))?;
        match tls.read(&mut buf[got..]) {
            Ok(0) => return Err("read the echo: the server closed the connection".to_string()),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                if Instant::now() >= deadline {
                    return Err(format!("read the echo: no echo within {io_timeout:?}"));
                }
            }
            Err(e) => return Err(format!("read the echo: {e}")),
        }
    }
    tls.sock
        .set_read_timeout(Some(io_timeout))
        .map_err(|e| format!("socket options: {e}"))
}

/// `setsockopt(TCP_QUICKACK, 1)`: leave delayed-ACK mode, and send an ACK that is pending now.
fn quickack(sock: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor, and a pointer to an int of the size passed, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn run_handshakes(args: &Args, config: Arc<ClientConfig>, name: ServerName<'static>) -> (Tally, Duration) {
    let start = Instant::now();
    let deadline = start + args.duration;
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.workers)
            .map(|w| {
                let (config, name) = (config.clone(), name.clone());
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    let mut msg = vec![0u8; args.size];
                    let mut buf = vec![0u8; args.size];
                    let mut seq = (w as u64) << 40;
                    while Instant::now() < deadline {
                        seq += 1;
                        fill(&mut msg, seq);
                        if let Err(e) = one_handshake(args, &config, &name, &msg, &mut buf, &mut tally) {
                            tally.error(e);
                            // Don't spin on a server that refuses: a short pause before the next try.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    tally
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    let mut t = Tally::default();
                    t.error("worker panicked");
                    t
                })
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut tally = Tally::default();
    for t in tallies {
        tally.merge(t);
    }
    (tally, elapsed)
}

// ------------------------------------------------------------------------------------- report --

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(args: &Args, tally: &Tally, elapsed: Duration) -> String {
    let mut lat = tally.latencies_us.clone();
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = tally.done as f64 / secs;
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&v| f64::from(v)).sum::<f64>() / lat.len() as f64
    };
    let mut j = String::from("{\"tool\":\"tls-loadgen\"");
    for (k, v) in &args.tags {
        let _ = write!(j, ",{}:{}", json_str(k), json_str(v));
    }
    match args.mode {
        Mode::Rr => {
            let _ = write!(
                j,
                ",\"workload\":\"tls-rr\",\"conns\":{},\"threads\":{},\"requests\":{},\"rps\":{:.1}",
                args.conns, args.threads, tally.done, rate
            );
        }
        Mode::Handshakes => {
            let _ = write!(
                j,
                ",\"workload\":\"tls-handshakes\",\"workers\":{},\"quickack\":{},\"handshakes\":{},\"hps\":{:.1}",
                args.workers, args.quickack, tally.done, rate
            );
        }
    }
    // Operations that took 40 ms or more: the delayed-ACK timer (see --quickack).
    let slow = lat.iter().filter(|&&v| v >= 40_000).count();
    let _ = write!(j, ",\"slow_40ms\":{slow}");
    let _ = write!(
        j,
        ",\"size\":{},\"duration_s\":{},\"elapsed_s\":{:.3},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"mean_us\":{:.1},\"max_us\":{},\"errors\":{}",
        args.size,
        args.duration.as_secs_f64(),
        secs,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        mean,
        lat.last().copied().unwrap_or(0),
        tally.errors
    );
    let _ = write!(
        j,
        ",\"verify\":\"{}\",\"resumption\":false,\"tls_version\":{},\"cipher_suite\":{},\"first_error\":{}}}",
        match args.verify {
            Verify::Full => "full",
            Verify::Once => "once",
        },
        tally.version.as_deref().map_or("null".to_string(), json_str),
        tally.suite.as_deref().map_or("null".to_string(), json_str),
        tally.first_error.as_deref().map_or("null".to_string(), json_str),
    );
    j
}
