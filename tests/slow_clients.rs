//! Slow and hostile clients: silent, trickling, not reading, resetting, half-closing. Each is cut off or
//! served correctly, reported with its address, and never holds up the other clients.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use socketserver::{Concurrency, Sequential, Server, StreamRequest, Tcp, Threading};
use util::{Reports, Serving, TIMEOUT, connect, eventually, recorder, report_for, round_trip};

type Handler = fn(&mut StreamRequest) -> anyhow::Result<()>;

/// Echoes lines; `big N` replies with N MiB.
fn handler(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        if let Some(mib) = line.trim_end().strip_prefix("big ") {
            let mib: usize = mib.parse()?;
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..mib {
                req.wfile.write_all(&chunk)?;
            }
        } else {
            req.wfile.write_all(line.as_bytes())?;
        }
        line.clear();
    }
    Ok(())
}

/// A server on its own thread, configured by `configure`, with every reported failure recorded.
fn start<C: Concurrency<Tcp, Handler>>(
    strategy: C,
    configure: impl FnOnce(Server<C, Tcp, Handler>) -> Server<C, Tcp, Handler>,
) -> (Serving, Reports) {
    let (reports, hook) = recorder();
    let server = Server::new(
        strategy,
        Tcp::bind("127.0.0.1:0").unwrap(),
        handler as Handler,
    )
    .unwrap();
    (
        Serving::start(configure(server).handle_error(hook)),
        reports,
    )
}

/// The read timeout cuts a silent client, in each strategy; meanwhile others are served (for
/// `Sequential`, once the timeout has freed the server). Order, not timing, tells the two apart: when
/// the other client has its reply, the silent one has not been cut yet if they were served concurrently,
/// and has been if the server had to wait for it.
fn silent_client_is_cut(concurrent: bool, (server, reports): (Serving, Reports)) {
    let silent = connect(server.addr);
    assert_eq!(round_trip(server.addr, b"other\n"), b"other\n");
    let silent_cut_first = report_for(&reports, &silent).is_some();
    assert_eq!(
        silent_cut_first, !concurrent,
        "concurrent: {concurrent}; the silent client was cut before the other was served: {silent_cut_first}"
    );
    let mut buf = [0u8; 1];
    assert_eq!(
        (&silent).read(&mut buf).unwrap(),
        0,
        "the silent client should be disconnected"
    );
    assert!(eventually(TIMEOUT, || report_for(&reports, &silent).is_some()));
    let report = report_for(&reports, &silent).unwrap();
    assert!(report.timeout, "{report:?}");
    assert!(
        report
            .message
            .contains("read timed out after 1s (read_timeout)"),
        "{report:?}"
    );
}

#[test]
fn silent_client_threading() {
    silent_client_is_cut(
        true,
        start(Threading::new(), |s| s.read_timeout(Duration::from_secs(1))),
    );
}

#[test]
fn silent_client_sequential() {
    silent_client_is_cut(
        false,
        start(Sequential::new(), |s| {
            s.read_timeout(Duration::from_secs(1))
        }),
    );
}

#[test]
fn trickling_client_is_cut_by_the_connection_timeout() {
    // One byte every 100 ms never trips the 5 s read timeout (50 times the pace, so a loaded machine
    // delaying the client cannot trip it either); the 700 ms connection timeout still ends it.
    let (server, reports) = start(Threading::new(), |s| {
        s.read_timeout(Duration::from_secs(5))
            .connection_timeout(Duration::from_millis(700))
    });
    let mut slow = connect(server.addr);
    let mut cut = false;
    for _ in 0..100 {
        if slow.write_all(b"a").is_err() || report_for(&reports, &slow).is_some() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // the client's own pace, not a wait for the server
    }
    // Bounded by the loop (about 10 s of trickling); which timeout cut it is in the report.
    assert!(cut, "the trickling client was never cut");
    assert!(eventually(TIMEOUT, || report_for(&reports, &slow).is_some()));
    let report = report_for(&reports, &slow).unwrap();
    assert!(
        report.timeout
            && report
                .message
                .contains("connection_timeout of 700ms passed"),
        "{report:?}"
    );
    assert_eq!(round_trip(server.addr, b"others fine\n"), b"others fine\n");
}

#[test]
fn client_that_never_reads_is_cut_by_the_write_timeout() {
    let (server, reports) = start(Threading::new(), |s| {
        s.write_timeout(Duration::from_millis(300))
    });
    let mut lazy = connect(server.addr);
    lazy.write_all(b"big 64\n").unwrap(); // 64 MiB: far beyond the socket buffers
    assert_eq!(round_trip(server.addr, b"others fine\n"), b"others fine\n");
    assert!(eventually(TIMEOUT, || report_for(&reports, &lazy).is_some()));
    let report = report_for(&reports, &lazy).unwrap();
    assert!(
        report.timeout
            && report
                .message
                .contains("write timed out after 300ms (write_timeout)"),
        "{report:?}"
    );
}

#[test]
fn client_reset_mid_request_is_reported_and_others_served() {
    let (server, reports) = start(Threading::new(), |s| s);
    for _ in 0..20 {
        let mut c = connect(server.addr);
        c.write_all(b"big 8\n").unwrap();
        let mut first = [0u8; 1000];
        c.read_exact(&mut first).unwrap();
        // SO_LINGER 0: close sends RST, with 8 MiB still on its way to us.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        nix::sys::socket::setsockopt(&c, nix::sys::socket::sockopt::Linger, &linger).unwrap();
        drop(c);
    }
    assert!(
        eventually(TIMEOUT, || reports.lock().unwrap().len() == 20),
        "{:?}",
        reports.lock().unwrap()
    );
    for report in reports.lock().unwrap().iter() {
        assert!(!report.timeout, "{report:?}");
        assert!(
            report.message.contains("reset") || report.message.contains("Broken pipe"),
            "{report:?}"
        );
    }
    assert_eq!(round_trip(server.addr, b"still here\n"), b"still here\n");
}

#[test]
fn half_closed_client_gets_the_whole_reply() {
    for concurrent in [true, false] {
        let (server, reports) = if concurrent {
            start(Threading::new(), |s| s)
        } else {
            start(Sequential::new(), |s| s)
        };
        let mut c = connect(server.addr);
        c.write_all(b"big 4\nlast\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut r = BufReader::new(c);
        let mut reply = Vec::new();
        r.read_to_end(&mut reply).unwrap();
        assert_eq!(reply.len(), (4 << 20) + 5);
        assert!(reply.ends_with(b"xlast\n"));
        drop(server);
        assert!(reports.lock().unwrap().is_empty());
    }
}
