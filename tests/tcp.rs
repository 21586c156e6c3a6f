//! TCP servers in this process, for every in-process strategy (the CPython `test_socketserver` matrix;
//! the forking rows run in their own process, in `tests/forking.rs` and `tests/echo_example.rs`).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use socketserver::{Addr, Concurrency, Server, StreamRequest, Tcp, Transport};
use util::{
    Reports, Serving, TIMEOUT, accept_queue, connect, connect_from, eventually, holds_for,
    recorder, report_for, round_trip,
};

/// Echoes lines; `error` makes the handler fail, `panic` makes it panic, `stop` shuts the server down.
fn line_echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        match line.trim_end() {
            "error" => anyhow::bail!("asked to fail"),
            "panic" => panic!("asked to panic"),
            "stop" => {
                req.server().shutdown();
                req.wfile.write_all(b"stopping\n")?;
            }
            _ => req.wfile.write_all(line.as_bytes())?,
        }
        line.clear();
    }
    Ok(())
}

/// A line-echo server on its own thread, with every reported failure recorded.
fn start<C>(strategy: C) -> (Serving, Reports)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let (reports, hook) = recorder();
    let handler: fn(&mut StreamRequest) -> anyhow::Result<()> = line_echo;
    let server = Server::new(strategy, Tcp::bind("127.0.0.1:0").unwrap(), handler)
        .unwrap()
        .handle_error(hook);
    (Serving::start(server), reports)
}

/// One test per strategy for each behaviour, as socket2's `test!` does per address family.
macro_rules! for_each_strategy {
    ($($name:ident => $body:expr;)*) => {
        mod sequential {
            use super::*;
            $( #[test] fn $name() { ($body)(socketserver::Sequential::new()) } )*
        }
        mod threading {
            use super::*;
            $( #[test] fn $name() { ($body)(socketserver::Threading::new()) } )*
        }
    };
}

fn echo_lines<C>(strategy: C)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let (server, _reports) = start(strategy);
    for i in 0..5 {
        let msg = format!("line {i}\nsecond {i}\n");
        assert_eq!(round_trip(server.addr, msg.as_bytes()), msg.as_bytes());
    }
    assert_eq!(server.finish().requests, 5);
}

fn big_write_arrives_whole<C>(strategy: C)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    // 4 MiB is far more than the socket buffers hold: the server must keep writing as the client reads.
    let (server, _reports) = start(strategy);
    let mut client = connect(server.addr);
    let mut payload = Vec::with_capacity(4 << 20);
    let mut n = 0u32;
    while payload.len() < 4 << 20 {
        payload.extend_from_slice(format!("{n:09}\n").as_bytes());
        n += 1;
    }
    let writer = {
        let mut client = client.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            client.write_all(&payload).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echo differs");
}

fn errors_and_panics_are_reported<C>(strategy: C)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let (server, reports) = start(strategy);
    for (cmd, expected) in [
        ("error\n", "handler failed: asked to fail"),
        ("panic\n", "handler panicked: asked to panic"),
    ] {
        let mut c = connect(server.addr);
        c.write_all(cmd.as_bytes()).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap(); // the server closes the connection
        assert!(rest.is_empty());
        assert!(eventually(TIMEOUT, || report_for(&reports, &c).is_some()));
        assert_eq!(report_for(&reports, &c).unwrap().message, expected);
    }
    // And the server keeps serving.
    assert_eq!(round_trip(server.addr, b"still here\n"), b"still here\n");
}

fn shutdown_from_inside_a_handler<C>(strategy: C)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    let (mut server, _reports) = start(strategy);
    assert_eq!(round_trip(server.addr, b"stop\n"), b"stopping\n");
    // serve_forever returns by itself, and the listener is closed afterwards.
    let summary = server.join();
    assert_eq!(summary.requests, 1);
    assert!(TcpStream::connect(server.addr).is_err());
}

fn verify_request_rejects<C>(strategy: C)
where
    C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>,
{
    // Decided by source address, which the client chooses (all of 127.0.0.0/8 is loopback): a source
    // port would not do, as Linux hands out loopback ephemeral ports of one parity.
    let allowed: std::net::Ipv4Addr = "127.0.0.2".parse().unwrap();
    let refused: std::net::Ipv4Addr = "127.0.0.3".parse().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let seen = asked.clone();
    let handler: fn(&mut StreamRequest) -> anyhow::Result<()> = line_echo;
    let server = Server::new(strategy, Tcp::bind("127.0.0.1:0").unwrap(), handler)
        .unwrap()
        .verify_request(move |peer: &Addr| {
            seen.fetch_add(1, Ordering::SeqCst);
            peer.as_inet().is_some_and(|a| a.ip() == allowed)
        });
    let server = Serving::start(server);
    // Six allowed and four refused, interleaved, so both counts are exact and neither can be zero.
    let sources = [
        allowed, refused, allowed, allowed, refused, allowed, refused, allowed, allowed, refused,
    ];
    let (mut accepted, mut rejected) = (0, 0);
    for from in sources {
        let mut c = connect_from(from, server.addr);
        let _ = c.write_all(b"hi\n");
        let _ = c.shutdown(Shutdown::Write);
        let mut reply = Vec::new();
        // A rejected peer is closed at once: EOF (or a reset) without a reply.
        let _ = c.read_to_end(&mut reply);
        if from == allowed {
            assert_eq!(reply, b"hi\n", "an allowed peer was not served");
            accepted += 1;
        } else {
            assert!(reply.is_empty(), "a rejected peer got {reply:?}");
            rejected += 1;
        }
    }
    assert_eq!((accepted, rejected), (6, 4));
    assert_eq!(
        server.finish().requests,
        6,
        "only allowed peers are requests"
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        10,
        "verify_request saw every peer"
    );
}

for_each_strategy! {
    echo => echo_lines;
    big_write => big_write_arrives_whole;
    error_and_panic_routing => errors_and_panics_are_reported;
    shutdown_in_handler => shutdown_from_inside_a_handler;
    verify_request => verify_request_rejects;
}

#[test]
fn ipv6_echo() {
    let mut server = socketserver::TcpServer::bind(
        "[::1]:0",
        line_echo as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    assert!(addr.is_ipv6());
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
    assert_eq!(round_trip(addr, b"v6\n"), b"v6\n");
    stop.shutdown();
    t.join().unwrap().unwrap();
}

#[test]
fn handle_request_times_out_and_calls_the_hook() {
    let (tx, rx) = mpsc::channel();
    let mut server = socketserver::TcpServer::bind(
        "127.0.0.1:0",
        line_echo as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap()
    .timeout(Duration::from_millis(50))
    .handle_timeout(move || tx.send(()).unwrap());
    assert_eq!(
        server.handle_request().unwrap(),
        socketserver::HandleOutcome::TimedOut
    );
    assert!(rx.try_recv().is_ok(), "handle_timeout was not called");
    // With a client waiting, it serves instead.
    let addr = server.local_addr().as_inet().unwrap();
    let client = std::thread::spawn(move || round_trip(addr, b"once\n"));
    assert_eq!(
        server.handle_request().unwrap(),
        socketserver::HandleOutcome::Handled
    );
    assert_eq!(client.join().unwrap(), b"once\n");
    assert!(rx.try_recv().is_err());
}

#[test]
fn drop_closes_the_listener_so_the_port_binds_again() {
    let server = socketserver::TcpServer::bind(
        "127.0.0.1:0",
        line_echo as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    assert!(
        Tcp::bind(addr).is_err(),
        "the port should be taken while the server lives"
    );
    drop(server);
    assert!(
        TcpStream::connect(addr).is_err(),
        "connect succeeded after drop"
    );
    let again = Tcp::bind(addr).expect("rebinding after drop");
    assert_eq!(again.local_addr(), addr);
    assert_eq!(Transport::local_addr(&again).unwrap(), Addr::Inet(addr));
}

#[test]
fn threading_cap_blocks_accepting_at_the_cap() {
    // One slot: while a client holds it, a second client is accepted by the kernel (it waits in the
    // listen backlog) but not by the server. Decided by the server's own state, handlers started and
    // connections taken from the backlog, rather than by whether a reply came within some time.
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let handler = move |req: &mut StreamRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        line_echo(req)
    };
    let server = Server::new(
        socketserver::Threading::new().max_threads(1),
        Tcp::bind("127.0.0.1:0").unwrap(),
        handler,
    )
    .unwrap()
    .shutdown_timeout(Duration::from_millis(100));
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let serving = util::serve_bounded(server);
    let mut first = connect(addr);
    first.write_all(b"a\n").unwrap();
    let mut r1 = BufReader::new(first.try_clone().unwrap());
    let mut line = String::new();
    r1.read_line(&mut line).unwrap();
    assert_eq!(line, "a\n");
    assert_eq!(started.load(Ordering::SeqCst), 1);

    let mut second = connect(addr);
    second.write_all(b"b\n").unwrap();
    // Once it has reached the server (queued by the kernel, or taken by a server ignoring its cap)...
    assert!(
        eventually(TIMEOUT, || accept_queue(addr.port()) == Some(1)
            || started.load(Ordering::SeqCst) > 1),
        "the second connection never reached the listener (queue {:?})",
        accept_queue(addr.port())
    );
    // ...it stays in the backlog, its handler not started, while the slot is held.
    holds_for(
        Duration::from_millis(500),
        "the second connection was taken beyond the cap of one thread",
        || accept_queue(addr.port()) == Some(1) && started.load(Ordering::SeqCst) == 1,
    );
    // Free the slot: the second client is served.
    drop(r1);
    drop(first);
    let mut buf = [0u8; 8];
    let n = second.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"b\n");
    assert_eq!(started.load(Ordering::SeqCst), 2);
    // The second client is still connected and its handler blocked in a read: shutdown waits for it
    // until the deadline, then cuts the connection so the read returns.
    stop.shutdown();
    // Bounded: with a 100 ms drain deadline, a server still draining after TIMEOUT has ignored it.
    let summary = serving.wait(TIMEOUT).unwrap();
    assert_eq!(
        (summary.requests, summary.in_flight_at_shutdown, summary.cut),
        (2, 1, 1),
        "{summary:?}"
    );
    assert_eq!(
        second.read(&mut buf).unwrap(),
        0,
        "the cut connection should read EOF"
    );
}

/// Each request reports the thread that served it.
fn thread_name(req: &mut StreamRequest) -> anyhow::Result<()> {
    writeln!(req.wfile, "{:?}", std::thread::current().id())?;
    Ok(())
}

fn distinct_threads(strategy: socketserver::Threading, requests: usize) -> usize {
    let server = Server::new(
        strategy,
        Tcp::bind("127.0.0.1:0").unwrap(),
        thread_name as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let server = Serving::start(server);
    let ids: std::collections::HashSet<Vec<u8>> = (0..requests)
        .map(|_| round_trip(server.addr, b""))
        .collect();
    assert_eq!(server.finish().requests, requests as u64);
    ids.len()
}

#[test]
fn threading_reuses_finished_threads_for_new_requests() {
    // One request at a time: a finished thread is idle and takes the next request.
    let reused = distinct_threads(socketserver::Threading::new(), 20);
    assert!(
        reused <= 2,
        "20 sequential requests ran on {reused} threads"
    );
    // With no idle time, each request gets a thread of its own, as in Python.
    let strict = distinct_threads(
        socketserver::Threading::new().thread_idle_timeout(Duration::ZERO),
        20,
    );
    assert_eq!(strict, 20);
}

/// Reports whether the connection has `TCP_NODELAY`, through the request's `AsFd` (no `unsafe`).
fn report_nodelay(req: &mut StreamRequest) -> anyhow::Result<()> {
    let on = nix::sys::socket::getsockopt(&*req, nix::sys::socket::sockopt::TcpNoDelay)?;
    writeln!(req.wfile, "{on}")?;
    Ok(())
}

#[test]
fn nodelay_option_reaches_each_connection() {
    for (nodelay, expected) in [(false, &b"false\n"[..]), (true, &b"true\n"[..])] {
        let server = Server::new(
            socketserver::Threading::new(),
            Tcp::builder().nodelay(nodelay).bind("127.0.0.1:0").unwrap(),
            report_nodelay as fn(&mut StreamRequest) -> anyhow::Result<()>,
        )
        .unwrap();
        let server = Serving::start(server);
        assert_eq!(round_trip(server.addr, b""), expected);
    }
}
