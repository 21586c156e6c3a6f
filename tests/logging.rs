//! Observability: lifecycle, rejected peers, handler errors and cut connections go through the `log`
//! facade, with the peer's address. Its own process, because the logger is process-wide.

mod util;

use std::io::{Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socketserver::{Addr, StreamRequest, Threading, ThreadingTcpServer};
use util::{TIMEOUT, connect, eventually, round_trip};

static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());
/// Set by the handler once it holds a connection open.
static HOLDING: AtomicBool = AtomicBool::new(false);

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("socketserver") {
            RECORDS
                .lock()
                .unwrap()
                .push((record.level(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn logged(level: log::Level, needle: &str) -> bool {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == level && m.contains(needle))
}

fn handler(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut buf = [0u8; 5];
    req.read_exact(&mut buf)?;
    match &buf {
        b"boom\n" => anyhow::bail!("boom"),
        b"hold\n" => {
            HOLDING.store(true, Ordering::SeqCst);
            let mut rest = Vec::new();
            req.read_to_end(&mut rest)?; // until cut
        }
        _ => req.write_all(&buf)?,
    }
    Ok(())
}

#[test]
fn lifecycle_errors_and_cuts_are_logged_with_the_peer() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    let server = ThreadingTcpServer::new(
        Threading::new(),
        socketserver::Tcp::bind("127.0.0.1:0").unwrap(),
        handler,
    )
    .unwrap()
    .shutdown_timeout(Duration::from_millis(100))
    .verify_request(|peer: &Addr| {
        peer.as_inet()
            .is_some_and(|a| a.ip().to_string() != "127.0.0.3")
    });
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let serving = util::serve_bounded(server);

    assert_eq!(round_trip(addr, b"hello"), b"hello");
    assert!(logged(log::Level::Info, &format!("serving on {addr}")));

    let failing = connect(addr);
    let failing_addr = failing.local_addr().unwrap();
    (&failing).write_all(b"boom\n").unwrap();
    let expected = format!("request from {failing_addr}: handler failed: boom");
    assert!(
        eventually(TIMEOUT, || logged(log::Level::Error, &expected)),
        "{:?}",
        RECORDS.lock().unwrap()
    );

    // Peers from 127.0.0.3 are refused.
    let rejected = util::connect_from("127.0.0.3".parse().unwrap(), addr)
        .local_addr()
        .unwrap();
    let expected = format!("rejected {rejected} (verify_request)");
    assert!(eventually(TIMEOUT, || logged(log::Level::Info, &expected)));

    let holding = connect(addr);
    let holding_addr = holding.local_addr().unwrap();
    (&holding).write_all(b"hold\n").unwrap();
    assert!(eventually(TIMEOUT, || HOLDING.load(Ordering::SeqCst)));
    stop.shutdown();
    // Bounded: with a 100 ms drain deadline, a server still draining after TIMEOUT has ignored it.
    let summary = serving.wait(TIMEOUT).unwrap();
    assert_eq!(summary.cut, 1, "{summary:?}");
    assert!(
        logged(
            log::Level::Warn,
            &format!("cutting the connection from {holding_addr}")
        ),
        "{:?}",
        RECORDS.lock().unwrap()
    );
    assert!(logged(
        log::Level::Info,
        &format!("stopped serving on {addr}")
    ));
}
