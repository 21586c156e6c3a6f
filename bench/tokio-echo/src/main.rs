//! Baseline echo server on tokio's multi-thread runtime (default worker
//! count = CPUs available to the process, so 1 when pinned with taskset).
//!
//! `tokio-echo --addr 127.0.0.1:0 --transport tcp|udp`
//!
//! Prints `listening on <addr>` as its first stdout line and exits 0 on
//! SIGTERM/SIGINT.

use std::io::{self, Write};
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: tokio-echo --addr HOST:PORT --transport tcp|udp";

fn main() -> ExitCode {
    let (addr, transport) = match parse_args() {
        Ok(v) => v,
        Err(msg) => {
            eprintln!("tokio-echo: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-echo: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(addr, transport)) {
        Ok(()) => {
            // Don't wait for connection tasks still blocked on their peers.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tokio-echo: {e}");
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

fn announce(addr: std::net::SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// Runs until SIGTERM or SIGINT arrives.
async fn serve(addr: String, transport: String) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    if transport == "tcp" {
        let listener = TcpListener::bind(&addr).await?;
        announce(listener.local_addr()?)?;
        tokio::select! {
            r = accept_loop(listener) => r,
            () = stop => Ok(()),
        }
    } else {
        let socket = UdpSocket::bind(&addr).await?;
        announce(socket.local_addr()?)?;
        tokio::select! {
            r = udp_loop(socket) => r,
            () = stop => Ok(()),
        }
    }
}

async fn accept_loop(listener: TcpListener) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = echo(stream).await;
                });
            }
            Err(e) => {
                eprintln!("tokio-echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

async fn udp_loop(socket: UdpSocket) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
            Err(e) => eprintln!("tokio-echo: recv_from: {e}"),
        }
    }
}
