//! systemd's notification protocol (`sd_notify`), against a `NOTIFY_SOCKET` this test binds: the
//! examples report in without a flag — `READY=1` once serving, `RELOADING=1`/`READY=1` around a
//! `PreFork` reload, `STOPPING=1` at shutdown, and `WATCHDOG=1` pings from the serving loop, which stop
//! while the loop is wedged.

mod util;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use util::{ServerProc, TIMEOUT, connect};

/// A notify socket bound in a fresh directory: what systemd listens on.
struct Systemd {
    _dir: tempfile::TempDir,
    socket: UnixDatagram,
    path: String,
}

impl Systemd {
    fn new() -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Systemd {
            _dir: dir,
            socket,
            path: path.to_str().unwrap().to_string(),
        }
    }

    /// The next message, if one comes within `timeout`.
    fn next(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one starts with `prefix` (returned), failing after [`TIMEOUT`]; the watchdog
    /// pings in between are skipped.
    fn until(&self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(m) if m.starts_with(prefix) => return m,
                Some(m) if m.starts_with("WATCHDOG=1") => {}
                Some(m) => panic!("expected {prefix:?}, got {m:?}"),
                None => break,
            }
        }
        panic!("no {prefix:?} within {TIMEOUT:?}");
    }
}

/// The echo example under `concurrency`, told to notify `systemd` (and its watchdog interval).
fn echo(systemd: &Systemd, concurrency: &str, watchdog: Option<Duration>) -> ServerProc {
    let mut cmd = Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", concurrency])
        .env("NOTIFY_SOCKET", &systemd.path)
        .env("RUST_LOG", "warn");
    if let Some(interval) = watchdog {
        cmd.env("WATCHDOG_USEC", interval.as_micros().to_string());
    }
    ServerProc::start(cmd)
}

#[test]
fn ready_then_stopping_with_a_status() {
    for (concurrency, strategy) in [
        ("threading", "Threading"),
        ("forking", "Forking"),
        ("prefork", "PreFork"),
        ("reactor", "Reactor"),
    ] {
        let systemd = Systemd::new();
        let mut server = echo(&systemd, concurrency, None);
        let ready = systemd.until("READY=1");
        assert_eq!(
            ready,
            format!("READY=1\nSTATUS=serving on {} ({strategy})", server.addr)
        );
        // Nothing else while it serves (no watchdog asked for), even with a request served.
        let mut conn = connect(&server.addr);
        conn.write_all(b"x").unwrap();
        conn.read_exact(&mut [0]).unwrap();
        drop(conn);
        assert_eq!(
            systemd.next(Duration::from_millis(200)),
            None,
            "{concurrency}"
        );
        assert_eq!(server.terminate().code(), Some(0));
        assert_eq!(systemd.until("STOPPING=1"), "STOPPING=1\nSTATUS=draining");
        assert_eq!(
            systemd.next(Duration::from_millis(100)),
            None,
            "{concurrency}"
        );
    }
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    let name = format!("socketserver-notify-test-{}", std::process::id());
    let socket = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    let mut cmd = Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .env("RUST_LOG", "warn");
    let mut server = ServerProc::start(cmd);
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"READY=1\n"), "{:?}", &buf[..n]);
    assert_eq!(server.terminate().code(), Some(0));
}

fn signal(server: &ServerProc, sig: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), sig).unwrap();
}

#[test]
fn a_prefork_reload_is_announced() {
    let systemd = Systemd::new();
    let mut server = echo(&systemd, "prefork", None);
    systemd.until("READY=1");
    signal(&server, Signal::SIGHUP);
    let reloading = systemd.until("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    // Ready again once the new workers are up.
    assert!(systemd.until("READY=1").contains("(PreFork)"));
    assert_eq!(server.terminate().code(), Some(0));
    systemd.until("STOPPING=1");
}

/// The watchdog pings of the next `window`.
fn pings_within(systemd: &Systemd, window: Duration) -> usize {
    let deadline = Instant::now() + window;
    let mut pings = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match systemd.next(left) {
            Some(m) if m.starts_with("WATCHDOG=1\nSTATUS=serving on ") => pings += 1,
            Some(m) => panic!("unexpected {m:?}"),
            None => break,
        }
    }
    pings
}

#[test]
fn the_watchdog_is_pinged_from_the_serving_loop_and_stops_when_it_is_wedged() {
    let systemd = Systemd::new();
    // Pinged every 100 ms (half the interval).
    let mut server = echo(&systemd, "sequential", Some(Duration::from_millis(200)));
    systemd.until("READY=1");
    let pings = pings_within(&systemd, Duration::from_millis(1000));
    assert!(pings >= 4, "{pings} pings in a second");
    // A Sequential server serves inline: while a connection is open its loop is inside the
    // handler, and does not ping — to systemd, a wedged loop.
    let mut conn = connect(&server.addr);
    conn.write_all(b"x").unwrap();
    conn.read_exact(&mut [0]).unwrap();
    let stale = pings_within(&systemd, Duration::from_millis(200)); // one may have been on its way
    assert!(stale <= 1, "{stale} pings while wedged");
    assert_eq!(pings_within(&systemd, Duration::from_millis(800)), 0);
    drop(conn);
    assert!(pings_within(&systemd, Duration::from_millis(1000)) >= 4);
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn a_watchdog_for_another_process_is_ignored() {
    let systemd = Systemd::new();
    let mut cmd = Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &systemd.path)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .env("RUST_LOG", "warn");
    let mut server = ServerProc::start(cmd);
    systemd.until("READY=1");
    assert_eq!(pings_within(&systemd, Duration::from_millis(500)), 0);
    assert_eq!(server.terminate().code(), Some(0));
}
