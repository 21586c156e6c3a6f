//! The serving loop's life: starting, stopping from anywhere, and the hooks that run on its turns.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socketserver::{
    DatagramRequest, ForkingTcpServer, HandleOutcome, StreamRequest, TcpServer, ThreadingTcpServer,
    ThreadingUdpServer,
};
use util::{TIMEOUT, round_trip};

fn nothing(_: &mut StreamRequest) -> anyhow::Result<()> {
    Ok(())
}

#[test]
fn shutdown_right_after_start_never_hangs() {
    for i in 0..20 {
        let mut server = ThreadingTcpServer::bind("127.0.0.1:0", nothing).unwrap();
        let stop = server.shutdown_handle();
        let t = std::thread::spawn(move || server.serve_forever());
        if i % 2 == 0 {
            std::thread::yield_now(); // sometimes before the loop starts, sometimes after
        }
        stop.shutdown();
        let summary = t.join().unwrap().unwrap();
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
    let mut server =
        ThreadingUdpServer::bind("127.0.0.1:0", |_: &mut DatagramRequest| Ok(())).unwrap();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
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
    t.join().unwrap().unwrap();
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
    let mut server = TcpServer::bind("127.0.0.1:0", nothing)
        .unwrap()
        .service_actions(move || {
            seen.fetch_add(1, Ordering::SeqCst);
        });
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
    for _ in 0..5 {
        assert_eq!(round_trip(addr, b""), b"");
    }
    stop.shutdown();
    assert_eq!(t.join().unwrap().unwrap().requests, 5);
    assert!(
        turns.load(Ordering::SeqCst) >= 5,
        "service_actions ran {} times",
        turns.load(Ordering::SeqCst)
    );
}

#[test]
fn strategies_swap_by_one_type_parameter() {
    // The same handler value type under three strategies: this is a compile-time property; constructing
    // them is the test.
    let a = TcpServer::bind("127.0.0.1:0", nothing).unwrap();
    let b = ThreadingTcpServer::bind("127.0.0.1:0", nothing).unwrap();
    let c = ForkingTcpServer::bind("127.0.0.1:0", nothing).unwrap();
    assert_ne!(a.local_addr(), b.local_addr());
    assert_ne!(b.local_addr(), c.local_addr());
}
