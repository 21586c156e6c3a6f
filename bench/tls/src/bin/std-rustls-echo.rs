//! Baseline TLS echo server on `std::net` and rustls (0.23, ring) only (plus `libc` for signals): the
//! thread-per-connection model without the socketserver crate, the TLS analogue of `bench/std-echo`.
//!
//! `std-rustls-echo --addr 127.0.0.1:0 --cert cert.pem --key key.pem`
//!
//! One OS thread per accepted connection: `TCP_NODELAY` on (as the socketserver crate's TLS layer sets
//! it), a `rustls::ServerConnection` in a `rustls::StreamOwned`, the handshake done by the first read,
//! then reads of up to 16 KiB echoed with `write_all` + `flush` until EOF or an error, then
//! `close_notify` and close. No timeouts (the other baselines' echo loops set none). The rustls
//! configuration is the one `tokio-rustls-echo` builds: rustls's default for a server (TLS 1.3 and 1.2,
//! the ring provider's cipher suites and key exchange groups, its in-memory session cache).
//!
//! Prints `listening on <addr>` as its first stdout line and exits 0 on SIGTERM/SIGINT: both signals
//! are blocked in every thread and a dedicated thread waits for them with `sigwait`, then calls
//! `exit(0)`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

const USAGE: &str = "usage: std-rustls-echo --addr HOST:PORT --cert CHAIN.pem --key KEY.pem";

struct Args {
    addr: String,
    cert: PathBuf,
    key: PathBuf,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("std-rustls-echo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The same configuration as `tokio-rustls-echo`'s.
    let config = match tls_bench::server_config(&args.cert, &args.key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("std-rustls-echo: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = install_signal_thread() {
        eprintln!("std-rustls-echo: cannot set up signal handling: {e}");
        return ExitCode::from(1);
    }
    match serve(&args.addr, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("std-rustls-echo: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let (mut addr, mut cert, mut key) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--cert" => cert = Some(PathBuf::from(value()?)),
            "--key" => key = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        cert: cert.ok_or("--cert is required")?,
        key: key.ok_or("--key is required")?,
    })
}

/// Blocks SIGTERM/SIGINT (inherited by all threads spawned later) and waits
/// for them in a dedicated thread, exiting 0.
fn install_signal_thread() -> io::Result<()> {
    // SAFETY: plain libc signal-set manipulation on a local, zeroed sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        set
    };
    thread::Builder::new().name("signals".into()).spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid, initialised sigset_t.
        unsafe { libc::sigwait(&set, &mut sig) };
        std::process::exit(0);
    })?;
    Ok(())
}

fn announce(addr: std::net::SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

fn serve(addr: &str, config: Arc<ServerConfig>) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    announce(listener.local_addr()?)?;
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let config = Arc::clone(&config);
                // Builder::spawn, not thread::spawn: out of threads (EAGAIN), drop this connection
                // rather than panic the accept loop.
                if let Err(e) = thread::Builder::new().spawn(move || echo(config, stream)) {
                    eprintln!("std-rustls-echo: cannot start a thread: {e}");
                    thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            // e.g. EMFILE: keep serving the connections we have.
            Err(e) => {
                eprintln!("std-rustls-echo: accept: {e}");
                thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

/// One connection, on its own thread; every error ends it quietly.
fn echo(config: Arc<ServerConfig>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    match echo_loop(&mut tls) {
        // A TLS protocol error (rustls reports it as InvalidData): rustls has already queued and
        // written its fatal alert, after which no close_notify belongs.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
        // The client's close_notify, or EOF or an I/O error: answer with ours (best effort), then
        // close the socket (dropping `tls`).
        _ => {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

fn echo_loop(tls: &mut StreamOwned<ServerConnection, TcpStream>) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        tls.write_all(&buf[..n])?;
        tls.flush()?;
    }
}
