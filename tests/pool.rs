//! `Pool`, in process, over real loopback sockets: echo over TCP and UDP, backpressure into the
//! kernel's listen backlog, workers that outlive panicking handlers, and drain deadlines.
//!
//! Its own runner (`harness = false`): the tests count this process's threads, so they run one at a
//! time, with no other test thread coming or going.

mod util;

use std::io::{BufRead, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socketserver::{
    Concurrency, Pool, PoolTcpServer, PoolUdpServer, ServeSummary, Server, ShutdownHandle,
    StreamRequest, Tcp, Transport,
};
use util::{Bounded, TIMEOUT, accept_queue, connect, eventually, round_trip, spawn_bounded};

/// Echoes lines until the client closes.
fn echo_lines(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = Vec::new();
    while req.rfile.read_until(b'\n', &mut line)? > 0 {
        req.wfile.write_all(&line)?;
        req.wfile.flush()?;
        line.clear();
    }
    Ok(())
}

/// Serves `server` on a thread; returns its port, its shutdown handle and the thread, whose summary
/// is awaited with a time limit (`serving.wait(TIMEOUT)`), so a drain that overruns fails the test.
fn serve<T, H>(mut server: Server<Pool, T, H>) -> (u16, ShutdownHandle, Bounded<ServeSummary>)
where
    Pool: Concurrency<T, H>,
    T: Transport,
    H: Send + Sync + 'static,
{
    let port = server.local_addr().as_inet().unwrap().port();
    let stop = server.shutdown_handle();
    let serving = spawn_bounded(move || server.serve_forever().unwrap());
    (port, stop, serving)
}

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn echoes_over_tcp_and_starts_workers_lazily() {
    let server = PoolTcpServer::bind("127.0.0.1:0", echo_lines).unwrap();
    let (port, stop, serving) = serve(server);
    assert_eq!(
        threads_named("pool-worker"),
        0,
        "no worker before a request"
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let msg = format!("line {i}\n");
                assert_eq!(
                    round_trip(("127.0.0.1", port), msg.as_bytes()),
                    msg.as_bytes()
                );
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    stop.shutdown();
    let summary = serving.wait(TIMEOUT);
    assert_eq!(summary.requests, 8);
    assert_eq!(threads_named("pool-worker"), 0, "workers joined at drain");
}

fn echoes_over_udp() {
    let server = PoolUdpServer::new(
        Pool::new(2),
        socketserver::Udp::bind("127.0.0.1:0").unwrap(),
        |req: &mut socketserver::DatagramRequest| {
            req.wfile = req.data().to_vec();
            Ok(())
        },
    )
    .unwrap();
    let (port, stop, serving) = serve(server);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..5 {
        let msg = format!("datagram {i}");
        client.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0; 64];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    stop.shutdown();
    assert_eq!(serving.wait(TIMEOUT).requests, 5);
}

fn a_full_queue_stops_accepting_until_a_worker_is_free() {
    let (release, released) = crossbeam_channel::unbounded::<()>();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = started.clone();
    let handler = move |req: &mut StreamRequest| {
        counter.fetch_add(1, Ordering::SeqCst);
        released.recv_timeout(TIMEOUT)?;
        req.wfile.write_all(b"served\n")?;
        Ok(())
    };
    let server = Server::new(
        Pool::new(1).queue_capacity(1),
        Tcp::bind("127.0.0.1:0").unwrap(),
        handler,
    )
    .unwrap();
    let (port, stop, serving) = serve(server);
    let clients: Vec<TcpStream> = (0..4).map(|_| connect(("127.0.0.1", port))).collect();

    // One request runs, one waits in the queue, and the other two stay in the kernel's backlog.
    assert!(
        eventually(TIMEOUT, || accept_queue(port) == Some(2)
            && started.load(Ordering::SeqCst) == 1),
        "accept queue {:?}, started {}",
        accept_queue(port),
        started.load(Ordering::SeqCst)
    );
    std::thread::sleep(Duration::from_millis(200)); // and it stays so
    assert_eq!(accept_queue(port), Some(2));
    assert_eq!(started.load(Ordering::SeqCst), 1);

    for _ in 0..4 {
        release.send(()).unwrap();
    }
    for mut c in clients {
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "served\n");
    }
    stop.shutdown();
    assert_eq!(serving.wait(TIMEOUT).requests, 4);
}

fn panicking_handlers_leave_the_workers_serving() {
    let reported = Arc::new(AtomicUsize::new(0));
    let counter = reported.clone();
    let handler = |req: &mut StreamRequest| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line.trim_end() == "panic" {
            panic!("asked to");
        }
        req.wfile.write_all(line.as_bytes())?;
        Ok(())
    };
    let server = Server::new(Pool::new(2), Tcp::bind("127.0.0.1:0").unwrap(), handler)
        .unwrap()
        .handle_error(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
    let (port, stop, serving) = serve(server);
    assert_eq!(round_trip(("127.0.0.1", port), b"warm\n"), b"warm\n");
    let threads_before = thread_count();
    for _ in 0..50 {
        assert_eq!(round_trip(("127.0.0.1", port), b"panic\n"), b"");
    }
    assert!(eventually(TIMEOUT, || reported.load(Ordering::SeqCst) == 50));
    assert_eq!(round_trip(("127.0.0.1", port), b"alive\n"), b"alive\n");
    assert_eq!(threads_named("pool-worker"), 2);
    let threads_after = thread_count();
    assert!(
        threads_after <= threads_before + 2,
        "threads grew from {threads_before} to {threads_after}"
    );
    stop.shutdown();
    assert_eq!(serving.wait(TIMEOUT).requests, 52);
}

fn drain_deadline_cuts_running_and_queued_requests() {
    let server = Server::new(
        Pool::new(1).queue_capacity(1),
        Tcp::bind("127.0.0.1:0").unwrap(),
        echo_lines,
    )
    .unwrap()
    .shutdown_timeout(Duration::from_millis(300));
    let (port, stop, serving) = serve(server);
    let mut running = connect(("127.0.0.1", port));
    running.write_all(b"first\n").unwrap();
    let mut reply = [0; 6];
    running.read_exact(&mut reply).unwrap();
    let mut queued = connect(("127.0.0.1", port));
    queued.write_all(b"never served\n").unwrap();
    assert!(eventually(TIMEOUT, || accept_queue(port) == Some(0)));

    let asked = Instant::now();
    stop.shutdown();
    let summary = serving.wait(TIMEOUT);
    assert!(asked.elapsed() < Duration::from_secs(10)); // 300 ms, then a cut (generous bound)
    assert_eq!(summary.in_flight_at_shutdown, 2);
    assert_eq!(summary.cut, 2);
    assert_eq!(summary.drained, 0);
    for mut conn in [running, queued] {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest); // EOF or reset
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
}

fn drain_lets_queued_and_running_requests_finish_before_the_deadline() {
    let (release, released) = crossbeam_channel::unbounded::<()>();
    let handler = move |req: &mut StreamRequest| {
        released.recv_timeout(TIMEOUT)?;
        req.wfile.write_all(b"done\n")?;
        Ok(())
    };
    let server = Server::new(
        Pool::new(1).queue_capacity(2),
        Tcp::bind("127.0.0.1:0").unwrap(),
        handler,
    )
    .unwrap();
    let (port, stop, serving) = serve(server);
    let clients: Vec<TcpStream> = (0..3).map(|_| connect(("127.0.0.1", port))).collect();
    assert!(eventually(TIMEOUT, || accept_queue(port) == Some(0)));
    stop.shutdown();
    // Release the handlers only once the drain has begun (the listener is closed first).
    assert!(eventually(TIMEOUT, || accept_queue(port).is_none()));
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    let summary = serving.wait(TIMEOUT);
    assert_eq!(
        (summary.in_flight_at_shutdown, summary.drained, summary.cut),
        (3, 3, 0)
    );
    for mut c in clients {
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "done\n");
    }
}

fn echo_example_runs_with_a_pool() {
    let mut server =
        util::ServerProc::example("echo", &["--concurrency", "pool", "--workers", "2"]);
    assert_eq!(round_trip(&server.addr, b"pooled\n"), b"pooled\n");
    assert_eq!(server.terminate().code(), Some(0));
}

fn main() {
    util::runner::run(&[
        (
            "echoes_over_tcp_and_starts_workers_lazily",
            echoes_over_tcp_and_starts_workers_lazily,
        ),
        ("echoes_over_udp", echoes_over_udp),
        (
            "a_full_queue_stops_accepting_until_a_worker_is_free",
            a_full_queue_stops_accepting_until_a_worker_is_free,
        ),
        (
            "panicking_handlers_leave_the_workers_serving",
            panicking_handlers_leave_the_workers_serving,
        ),
        (
            "drain_deadline_cuts_running_and_queued_requests",
            drain_deadline_cuts_running_and_queued_requests,
        ),
        (
            "drain_lets_queued_and_running_requests_finish_before_the_deadline",
            drain_lets_queued_and_running_requests_finish_before_the_deadline,
        ),
        (
            "echo_example_runs_with_a_pool",
            echo_example_runs_with_a_pool,
        ),
        (
            "the_runner_takes_libtest_flags",
            util::runner::the_runner_takes_libtest_flags,
        ),
    ]);
}
