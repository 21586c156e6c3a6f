//! A storm of 2,000 simultaneous connections against each strategy: every one is served (the listen
//! backlog, `SOMAXCONN`, holds them all, so none may be refused or reset), nothing hangs, and the
//! server is still serving afterwards.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};

use socketserver::{Sequential, Server, StreamRequest, Tcp, Threading};
use util::{ServerProc, Serving, TIMEOUT, round_trip};

const CONNECTIONS: usize = 2000;
const CLIENT_THREADS: usize = 8;

fn echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    std::io::copy(&mut req.rfile, &mut req.wfile)?;
    Ok(())
}

/// Opens every connection first (all of them at once in the server's backlog), then reads the replies.
/// Returns how many were served, and what happened to the first few that were not.
fn storm(addr: SocketAddr) -> (usize, Vec<String>) {
    let barrier = Arc::new(Barrier::new(CLIENT_THREADS));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut open = Vec::new();
                let mut failures = Vec::new();
                for i in 0..CONNECTIONS / CLIENT_THREADS {
                    let msg = format!("client {t}.{i}\n");
                    let sent = TcpStream::connect(addr).and_then(|mut s| {
                        s.set_read_timeout(Some(TIMEOUT))?;
                        s.write_all(msg.as_bytes())?;
                        s.shutdown(Shutdown::Write)?;
                        Ok(s)
                    });
                    match sent {
                        Ok(s) => open.push((s, msg)),
                        Err(e) => failures.push(format!("{msg:?} sending: {e}")),
                    }
                }
                barrier.wait();
                let mut served = 0;
                for (mut s, msg) in open {
                    let mut reply = String::new();
                    match s.read_to_string(&mut reply) {
                        Ok(_) if reply == msg => served += 1,
                        Ok(_) => failures.push(format!("{msg:?} got {reply:?}")),
                        Err(e) => failures.push(format!("{msg:?} reading: {e}")),
                    }
                }
                (served, failures)
            })
        })
        .collect();
    let mut served = 0;
    let mut failures = Vec::new();
    for t in threads {
        let (s, f) = t.join().unwrap();
        served += s;
        failures.extend(f);
    }
    (served, failures)
}

/// Every connection served: a reset or refused one is a failure, not a tolerated outcome.
fn assert_all_served(what: &str, (served, failures): (usize, Vec<String>)) {
    assert_eq!(
        served,
        CONNECTIONS,
        "{what}: {} of {CONNECTIONS} not served; the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

fn in_process<C>(strategy: C)
where
    C: socketserver::Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let server = Server::new(
        strategy,
        Tcp::bind("127.0.0.1:0").unwrap(),
        echo as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let server = Serving::start(server);
    assert_all_served("in process", storm(server.addr));
    assert_eq!(round_trip(server.addr, b"after\n"), b"after\n");
    assert_eq!(server.finish().requests as usize, CONNECTIONS + 1);
}

#[test]
fn storm_sequential() {
    in_process(Sequential::new());
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
    assert_all_served(concurrency, storm(server.socket_addr()));
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
