//! The serving loop's life: starting, stopping from anywhere, and the hooks that run on its turns.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socketserver::{
    Concurrency, DatagramRequest, ForkingTcpServer, HandleOutcome, PoolTcpServer, Server,
    StreamRequest, Tcp, TcpServer, ThreadingTcpServer, ThreadingUdpServer,
};
use util::{TIMEOUT, round_trip};

fn nothing(_: &mut StreamRequest) -> anyhow::Result<()> {
    Ok(())
}

#[test]
fn shutdown_right_after_start_never_hangs() {
    for i in 0..20 {
        let server = ThreadingTcpServer::bind("127.0.0.1:0", nothing).unwrap();
        let stop = server.shutdown_handle();
        let t = util::serve_bounded(server);
        if i % 2 == 0 {
            std::thread::yield_now(); // sometimes before the loop starts, sometimes after
        }
        stop.shutdown();
        let summary = t.wait(TIMEOUT).unwrap();
        assert_eq!(summary.requests, 0);
    }
}

#[test]
fn shutdown_before_serving_returns_at_once_and_stays_shut() {
    let mut server = TcpServer::bind("127.0.0.1:0", nothing).unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    server.shutdown_handle().shutdown();
    server.serve_forever().unwrap();
    // The listener is closed: new connections are refused, and serving again returns at once.
    assert!(std::net::TcpStream::connect(addr).is_err());
    assert_eq!(server.handle_request().unwrap(), HandleOutcome::ShutDown);
    server.serve_forever().unwrap();
}

#[test]
fn shutdown_is_idempotent_and_callable_from_many_threads() {
    let server = ThreadingUdpServer::bind("127.0.0.1:0", |_: &mut DatagramRequest| Ok(())).unwrap();
    let stop = server.shutdown_handle();
    let t = util::serve_bounded(server);
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    stop.shutdown();
                }
            })
        })
        .collect();
    for c in callers {
        c.join().unwrap();
    }
    t.wait(TIMEOUT).unwrap();
    assert!(stop.is_shutdown());
}

#[test]
fn serve_forever_returns_promptly_after_shutdown() {
    // The loop is woken through an eventfd, not a poll interval. The bound here is generous (the
    // benchmark measures the real figure); Python's loop would take up to 500 ms.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let mut server = ThreadingTcpServer::bind("127.0.0.1:0", nothing).unwrap();
        let addr = server.local_addr().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let r = server.serve_forever();
            tx.send(Instant::now()).unwrap();
            r
        });
        // A served request proves the loop is running (and then blocked in poll) before we ask.
        assert_eq!(round_trip(addr, b""), b"");
        let asked = Instant::now();
        stop.shutdown();
        let returned = rx
            .recv_timeout(TIMEOUT)
            .expect("serve_forever did not return");
        worst = worst.max(returned.saturating_duration_since(asked));
        t.join().unwrap().unwrap();
    }
    // Generous, for a loaded machine: what this guards is "returns by itself, promptly"; the benchmark
    // (examples/shutdown_latency.rs) measures the real figure, 0.1-1 ms at p99.
    assert!(
        worst < Duration::from_secs(2),
        "slowest shutdown took {worst:?}"
    );
}

#[test]
fn service_actions_runs_on_every_turn() {
    let turns = Arc::new(AtomicUsize::new(0));
    let seen = turns.clone();
    let server = TcpServer::bind("127.0.0.1:0", nothing)
        .unwrap()
        .service_actions(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let t = util::serve_bounded(server);
    for _ in 0..5 {
        assert_eq!(round_trip(addr, b""), b"");
    }
    stop.shutdown();
    assert_eq!(t.wait(TIMEOUT).unwrap().requests, 5);
    assert!(
        turns.load(Ordering::SeqCst) >= 5,
        "service_actions ran {} times",
        turns.load(Ordering::SeqCst)
    );
}

/// Echoes what the client sends until it half-closes.
fn echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    std::io::copy(&mut req.rfile, &mut req.wfile)?;
    Ok(())
}

type Handler = fn(&mut StreamRequest) -> anyhow::Result<()>;

/// The same code, generic over the strategy alone, serves one request on `server`.
fn serves_one_request<C: Concurrency<Tcp, Handler>>(server: Server<C, Tcp, Handler>) {
    let server = util::Serving::start(server);
    assert_eq!(round_trip(server.addr, b"swapped\n"), b"swapped\n");
    assert_eq!(server.finish().requests, 1);
}

#[test]
fn strategies_swap_by_one_type_parameter() {
    // One handler value, one generic function: only the strategy type changes between these servers.
    let handler: Handler = echo;
    serves_one_request(TcpServer::bind("127.0.0.1:0", handler).unwrap());
    serves_one_request(ThreadingTcpServer::bind("127.0.0.1:0", handler).unwrap());
    serves_one_request(PoolTcpServer::bind("127.0.0.1:0", handler).unwrap());
    // Forking must not fork this multi-threaded test process (tests/forking.rs serves with it in a
    // process of its own); that the same handler type makes a Forking server which listens is what
    // this test can check.
    let forking = ForkingTcpServer::bind("127.0.0.1:0", handler).unwrap();
    let addr = forking.local_addr().as_inet().unwrap();
    std::net::TcpStream::connect(addr).expect("the Forking server's listener accepts connections");
}
