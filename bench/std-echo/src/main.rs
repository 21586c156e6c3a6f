//! Baseline echo server built on `std::net` only (plus `libc` for signals).
//!
//! `std-echo --addr 127.0.0.1:0 --transport tcp|udp`
//!
//! * TCP: one OS thread per accepted connection, echoing until EOF.
//! * UDP: one thread, `recv_from` then `send_to` the same bytes.
//!
//! Prints `listening on <addr>` as its first stdout line and exits 0 on
//! SIGTERM/SIGINT: both signals are blocked in every thread and a dedicated
//! thread waits for them with `sigwait`, then calls `exit(0)`.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::thread;

const USAGE: &str = "usage: std-echo --addr HOST:PORT --transport tcp|udp";

fn main() -> ExitCode {
    let (addr, transport) = match parse_args() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("std-echo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = install_signal_thread() {
        eprintln!("std-echo: cannot set up signal handling: {e}");
        return ExitCode::from(1);
    }
    let result = match transport.as_str() {
        "tcp" => serve_tcp(&addr),
        _ => serve_udp(&addr),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("std-echo: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse_args() -> Result<(String, String), String> {
    let mut addr = None;
    let mut transport = String::from("tcp");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?),
            "--transport" => transport = value()?,
            "-h" | "--help" => return Err("help requested".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if transport != "tcp" && transport != "udp" {
        return Err(format!("--transport must be tcp or udp, got {transport:?}"));
    }
    Ok((addr.ok_or("--addr is required")?, transport))
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
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
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

fn serve_tcp(addr: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    announce(listener.local_addr()?)?;
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                thread::spawn(move || {
                    let _ = echo(stream);
                });
            }
            // e.g. EMFILE: keep serving the connections we have.
            Err(e) => {
                eprintln!("std-echo: accept: {e}");
                thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn serve_udp(addr: &str) -> io::Result<()> {
    let socket = UdpSocket::bind(addr)?;
    announce(socket.local_addr()?)?;
    let mut buf = [0u8; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer);
            }
            Err(e) => eprintln!("std-echo: recv_from: {e}"),
        }
    }
}
