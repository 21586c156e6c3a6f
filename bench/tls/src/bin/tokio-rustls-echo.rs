//! Baseline TLS echo server: tokio's multi-thread runtime and tokio-rustls (rustls 0.23, ring), a task
//! per connection, the handshake inside the task.
//!
//! `tokio-rustls-echo --addr 127.0.0.1:0 --cert cert.pem --key key.pem [--threads N]`
//!
//! `--nodelay`: set `TCP_NODELAY` on accepted connections (off by default, as in the other servers).
//! `--threads N`: the runtime's worker threads (default: the CPUs the process may use, so 1 when pinned
//! with taskset). The rustls configuration is rustls's default for a server, as the socketserver crate
//! builds it: TLS 1.3 and 1.2, the ring provider's cipher suites and key exchange groups, its in-memory
//! session cache. Prints `listening on <addr>` as its first stdout line and exits 0 on SIGTERM/SIGINT.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;

const USAGE: &str =
    "usage: tokio-rustls-echo --addr HOST:PORT --cert CHAIN.pem --key KEY.pem [--threads N] [--nodelay]";

struct Args {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
    threads: Option<usize>,
    nodelay: bool,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("tokio-rustls-echo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let acceptor = match acceptor(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tokio-rustls-echo: {e}");
            return ExitCode::from(1);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-rustls-echo: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(args.addr, acceptor, args.nodelay)) {
        Ok(()) => {
            // Don't wait for connection tasks still blocked on their peers.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokio-rustls-echo: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let (mut addr, mut cert, mut key, mut threads) = (None, None, None, None);
    let mut nodelay = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "--threads" => {
                let v = value()?;
                let n: usize = v.parse().map_err(|_| format!("--threads: not a number: {v:?}"))?;
                if n == 0 {
                    return Err("--threads must be at least 1".into());
                }
                threads = Some(n);
            }
            "--nodelay" => nodelay = true,
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        cert: cert.ok_or("--cert is required")?,
        key: key.ok_or("--key is required")?,
        threads,
        nodelay,
    })
}

fn acceptor(args: &Args) -> Result<TlsAcceptor, String> {
    tls_bench::server_config(&args.cert, &args.key).map(TlsAcceptor::from)
}

fn announce(addr: std::net::SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// Runs until SIGTERM or SIGINT arrives.
async fn serve(addr: String, acceptor: TlsAcceptor, nodelay: bool) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(&addr).await?;
    announce(listener.local_addr()?)?;
    tokio::select! {
        r = accept_loop(listener, acceptor, nodelay) => r,
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, nodelay: bool) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if nodelay {
                    let _ = stream.set_nodelay(true);
                }
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = echo(acceptor, stream).await;
                });
            }
            Err(e) => {
                eprintln!("tokio-rustls-echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(acceptor: TlsAcceptor, stream: TcpStream) -> io::Result<()> {
    // A bound on the handshake, as the socketserver crate's (10 s by default) and Python's socket
    // timeout would give: a client that stalls must not hold a task for ever.
    let mut tls = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            // The client's close_notify (or EOF): answer with ours.
            let _ = tls.shutdown().await;
            return Ok(());
        }
        tls.write_all(&buf[..n]).await?;
        tls.flush().await?;
    }
}
