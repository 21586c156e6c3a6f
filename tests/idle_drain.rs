//! A drain does not wait on idle connections (Go's `Shutdown`): with 100 idle keep-alive clients and
//! one request in flight, `SIGTERM` closes the idle connections at once, lets the request in flight
//! finish — its response whole — and the server exits as soon as it has, not at the drain deadline
//! (60 s here). The blocking strategies serve `http_hello` in its own process; `Reactor` serves a
//! line protocol in this one. The timings are printed, not asserted (`--nocapture` shows them).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use socketserver::framing::Lines;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::{Reactor, Server, Tcp};
use util::{
    ServerProc, Serving, TIMEOUT, connect, eventually, http_keep_alive_client, read_http_response,
    unread_by_server,
};

const IDLE: usize = 100;

/// Whether the server closed `conn` (end of stream, or a reset), waiting up to [`TIMEOUT`].
fn closed(conn: &mut impl Read) -> bool {
    let mut byte = [0; 1];
    !matches!(conn.read(&mut byte), Ok(1..))
}

fn http_idle_connections_close_at_once(concurrency: &str, sizing: &[&str]) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = std::process::Command::new(util::example_bin("http_hello"));
    cmd.args(["--concurrency", concurrency])
        .args(["--shutdown-timeout-ms", "60000", "--max-per-peer", "0"])
        .args(sizing)
        .env("RUST_LOG", "info")
        .stderr(log.reopen().unwrap());
    let mut server = ServerProc::start(cmd);
    let mut idle: Vec<_> = (0..IDLE).map(|_| http_keep_alive_client(&server)).collect();
    // In flight: a request whose body is half sent, read by its handler.
    let mut slow = http_keep_alive_client(&server);
    slow.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nfirst")
        .unwrap();
    assert!(eventually(TIMEOUT, || unread_by_server(slow.get_ref()) == Some(0)));

    let signalled = Instant::now();
    kill(Pid::from_raw(server.pid()), Signal::SIGTERM).unwrap();
    for conn in &mut idle {
        assert!(
            closed(conn),
            "{concurrency}: an idle connection was not closed"
        );
    }
    let idle_closed = signalled.elapsed();
    drop(idle); // clients close on end of stream (until they do, the server's ends linger)
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "{concurrency}: the server did not wait for the request in flight"
    );

    // The request in flight finishes: its response comes whole, then the connection closes.
    slow.get_mut().write_all(b"half!").unwrap();
    let finished = Instant::now();
    let (status, body) = read_http_response(&mut slow);
    assert_eq!(
        (status.as_str(), body.as_slice()),
        ("HTTP/1.1 200 OK", &b"hello\n"[..])
    );
    assert!(
        closed(&mut slow),
        "{concurrency}: the connection stayed open"
    );
    // http_hello closes a connection gracefully (it lingers until the client closes too).
    drop(slow);
    let status = server
        .wait_exit(TIMEOUT)
        .unwrap_or_else(|| panic!("{concurrency}: the server waited for the drain deadline"));
    let exited = finished.elapsed();
    assert_eq!(status.code(), Some(0), "{concurrency}");
    let log = std::fs::read_to_string(log.path()).unwrap();
    let want = format!(
        "in_flight_at_shutdown: {n}, drained: {n}, cut: 0",
        n = IDLE + 1
    );
    assert!(log.contains(&want), "{concurrency}: {log}");
    println!(
        "{concurrency}: {IDLE} idle connections closed {idle_closed:?} after SIGTERM; \
         the server exited {exited:?} after the request in flight was completed"
    );
}

#[test]
fn threading() {
    http_idle_connections_close_at_once("threading", &[]);
}

#[test]
fn pool() {
    http_idle_connections_close_at_once("pool", &["--workers", "110"]);
}

#[test]
fn forking() {
    http_idle_connections_close_at_once("forking", &["--max-children", "110"]);
}

#[test]
fn prefork() {
    http_idle_connections_close_at_once("prefork", &["--workers", "110"]);
}

/// Lines in, lines out; `big` is answered with a 1 MiB line.
struct LineEcho;

impl MessageHandler for LineEcho {
    type Codec = Lines;

    fn codec(&self) -> Lines {
        Lines::with_max_line_len(2 << 20)
    }

    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        if line == b"big" {
            conn.send(&vec![b'x'; 1 << 20])?;
        } else {
            conn.send(&line)?;
        }
        Ok(())
    }
}

#[test]
fn reactor() {
    let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0").unwrap(), LineEcho)
        .unwrap()
        .shutdown_timeout(Duration::from_secs(60));
    let mut serving = Serving::start(server);
    let mut idle: Vec<BufReader<TcpStream>> = (0..IDLE)
        .map(|_| {
            let conn = connect(serving.addr);
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut conn = BufReader::new(conn);
            conn.get_mut().write_all(b"hi\n").unwrap();
            let mut line = String::new();
            conn.read_line(&mut line).unwrap();
            assert_eq!(line, "hi\n");
            conn
        })
        .collect();
    // In flight: half a message, which the loop has read.
    let slow = connect(serving.addr);
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&slow).write_all(b"bi").unwrap();
    assert!(eventually(TIMEOUT, || unread_by_server(&slow) == Some(0)));

    let signalled = Instant::now();
    serving.stop.shutdown(); // what SIGTERM does, through `signals::shutdown_on_signals`
    for conn in &mut idle {
        assert!(closed(conn), "reactor: an idle connection was not closed");
    }
    let idle_closed = signalled.elapsed();
    drop(idle); // clients close on end of stream (until they do, the server's ends linger)
    (&slow).write_all(b"g\n").unwrap();
    let finished = Instant::now();
    let mut reply = Vec::new();
    let mut slow = BufReader::new(slow);
    slow.read_until(b'\n', &mut reply).unwrap();
    assert_eq!(reply.len(), (1 << 20) + 1, "the reply was not whole");
    assert!(closed(&mut slow), "reactor: the connection stayed open");
    let summary = serving.join();
    let exited = finished.elapsed();
    assert_eq!(
        (summary.in_flight_at_shutdown, summary.drained, summary.cut),
        (IDLE + 1, IDLE + 1, 0)
    );
    println!(
        "reactor: {IDLE} idle connections closed {idle_closed:?} after shutdown; \
         serve_forever returned {exited:?} after the message in flight was completed"
    );
}
