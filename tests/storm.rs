//! A storm of 2,000 simultaneous connections against each strategy: every one is served or cleanly
//! refused, nothing hangs, and the server is still serving afterwards.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};

use socketserver::{Sequential, Server, StreamRequest, Tcp, Threading};
use util::{ServerProc, TIMEOUT, round_trip};

const CONNECTIONS: usize = 2000;
const CLIENT_THREADS: usize = 8;

fn echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    std::io::copy(&mut req.rfile, &mut req.wfile)?;
    Ok(())
}

/// Opens every connection first (all of them at once in the server's backlog), then reads the replies.
/// Returns (served, refused).
fn storm(addr: SocketAddr) -> (usize, usize) {
    let barrier = Arc::new(Barrier::new(CLIENT_THREADS));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut open = Vec::new();
                let mut refused = 0;
                for i in 0..CONNECTIONS / CLIENT_THREADS {
                    match TcpStream::connect(addr) {
                        Ok(mut s) => {
                            s.set_read_timeout(Some(TIMEOUT)).unwrap();
                            let msg = format!("client {t}.{i}\n");
                            // A write or half-close can only fail if the server reset us: a clean refusal.
                            if s.write_all(msg.as_bytes())
                                .and_then(|()| s.shutdown(Shutdown::Write))
                                .is_ok()
                            {
                                open.push((s, msg));
                            } else {
                                refused += 1;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                        Err(e) => panic!("connect failed: {e}"),
                    }
                }
                barrier.wait();
                let mut served = 0;
                for (mut s, msg) in open {
                    let mut reply = String::new();
                    match s.read_to_string(&mut reply) {
                        Ok(_) => {
                            assert_eq!(reply, msg);
                            served += 1;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
                        Err(e) => panic!("reading a reply: {e}"),
                    }
                }
                (served, refused)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

fn in_process<C>(strategy: C)
where
    C: socketserver::Serve<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let mut server = Server::new(
        strategy,
        Tcp::bind("127.0.0.1:0").unwrap(),
        echo as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
    let (served, refused) = storm(addr);
    assert_eq!(served + refused, CONNECTIONS);
    assert!(
        served > CONNECTIONS / 2,
        "only {served} served, {refused} refused"
    );
    assert_eq!(round_trip(addr, b"after\n"), b"after\n");
    stop.shutdown();
    let summary = t.join().unwrap().unwrap();
    assert_eq!(summary.requests as usize, served + 1);
}

#[test]
fn storm_sequential() {
    in_process(Sequential);
}

#[test]
fn storm_threading() {
    in_process(Threading::new());
}

#[test]
fn storm_threading_capped() {
    in_process(Threading::new().max_threads(16));
}

/// The strategies that fork (or own their event loop) run as the echo example in their own process.
fn example(concurrency: &str) {
    let mut server = ServerProc::example("echo", &["--concurrency", concurrency]);
    let (served, refused) = storm(server.socket_addr());
    assert_eq!(served + refused, CONNECTIONS);
    assert!(
        served > CONNECTIONS / 2,
        "{concurrency}: only {served} served, {refused} refused"
    );
    assert_eq!(round_trip(&server.addr, b"after\n"), b"after\n");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn storm_forking() {
    example("forking");
}

#[test]
fn storm_pool() {
    example("pool");
}

#[test]
fn storm_prefork() {
    example("prefork");
}

#[test]
fn storm_reactor() {
    example("reactor");
}
