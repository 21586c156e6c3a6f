//! Handlers and whole servers driven through the mock transports, with no socket at all.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use socketserver::testing::{MockConn, MockDatagram, MockStream, run_datagram, run_stream};
use socketserver::{
    Addr, DatagramRequest, HandleOutcome, RequestError, Sequential, Server, StreamHandler,
    StreamRequest,
};

/// A handler with all three hooks, recording their order.
struct Recorder(Arc<Mutex<Vec<&'static str>>>);

impl StreamHandler for Recorder {
    fn setup(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        self.0.lock().unwrap().push("setup");
        let mut first = String::new();
        req.read_line(&mut first)?;
        anyhow::ensure!(first != "bad setup\n", "setup refused");
        Ok(())
    }
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        self.0.lock().unwrap().push("handle");
        let mut line = String::new();
        req.read_line(&mut line)?;
        match line.as_str() {
            "panic\n" => panic!("handle panicked"),
            "fail\n" => anyhow::bail!("handle failed"),
            _ => Ok(req.write_all(line.as_bytes())?),
        }
    }
    fn finish(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        self.0.lock().unwrap().push("finish");
        req.write_all(b"bye\n")?;
        Ok(())
    }
}

fn peer(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn hooks_run_in_pythons_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = Recorder(log.clone());

    let conn = MockConn::new().read("hello\n").read("world\n");
    let probe = conn.probe();
    run_stream(&handler, conn).unwrap();
    assert_eq!(probe.written_str(), "world\nbye\n");
    assert!(probe.is_closed());
    assert_eq!(
        std::mem::take(&mut *log.lock().unwrap()),
        ["setup", "handle", "finish"]
    );

    // setup fails: neither handle nor finish runs.
    let err = run_stream(&handler, MockConn::new().read("bad setup\n")).unwrap_err();
    assert_eq!(err.to_string(), "handler failed: setup refused");
    assert_eq!(std::mem::take(&mut *log.lock().unwrap()), ["setup"]);

    // handle fails or panics: finish still runs, and the first failure is what is reported.
    for (input, expected) in [
        ("fail\n", "handler failed: handle failed"),
        ("panic\n", "handler panicked: handle panicked"),
    ] {
        let conn = MockConn::new().read("hi\n").read(input);
        let probe = conn.probe();
        let err = run_stream(&handler, conn).unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert_eq!(
            std::mem::take(&mut *log.lock().unwrap()),
            ["setup", "handle", "finish"]
        );
        assert_eq!(probe.written_str(), "bye\n");
        assert!(probe.is_closed());
    }
}

#[test]
fn short_reads_are_reassembled_by_rfile() {
    let conn = MockConn::new().read("hel").read("lo\nwor").read("ld\n");
    let probe = conn.probe();
    let lines = |req: &mut StreamRequest| -> anyhow::Result<()> {
        for line in (&mut req.rfile).lines() {
            writeln!(req.wfile, "<{}>", line?)?;
        }
        Ok(())
    };
    run_stream(&lines, conn).unwrap();
    assert_eq!(probe.written_str(), "<hello>\n<world>\n");
}

#[test]
fn a_whole_server_with_verify_error_and_shutdown_hooks() {
    let transport = MockStream::new().unwrap();
    let allowed = transport.push(MockConn::new().read("one\n").peer(peer("10.0.0.1:1")));
    let refused = transport.push(MockConn::new().read("two\n").peer(peer("192.0.2.9:1")));
    let failing = transport.push(MockConn::new().read("fail\n").peer(peer("10.0.0.2:1")));
    let stopper = transport.push(MockConn::new().read("stop\n").peer(peer("10.0.0.3:1")));
    let never = transport.push(MockConn::new().read("late\n").peer(peer("10.0.0.4:1")));

    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let handler = |req: &mut StreamRequest| -> anyhow::Result<()> {
        let mut line = String::new();
        req.read_line(&mut line)?;
        match line.as_str() {
            "fail\n" => anyhow::bail!("no"),
            "stop\n" => req.server().shutdown(),
            _ => req.write_all(line.as_bytes())?,
        }
        Ok(())
    };
    let mut server = Server::new(Sequential::new(), transport.clone(), handler)
        .unwrap()
        .verify_request(|p: &Addr| {
            p.as_inet()
                .is_some_and(|a| a.ip().to_string().starts_with("10."))
        })
        .handle_error(move |p: Option<&Addr>, e: &RequestError| {
            seen.lock().unwrap().push(format!("{} {e}", p.unwrap()))
        });

    let summary = server.serve_forever().unwrap();
    assert_eq!(
        summary.requests, 3,
        "the refused peer is not a request; nothing after the stop is taken"
    );
    assert_eq!(allowed.written_str(), "one\n");
    assert!(refused.written().is_empty() && refused.is_closed());
    assert!(failing.written().is_empty() && failing.is_closed());
    assert!(stopper.is_closed());
    assert!(!never.is_closed(), "accepted after shutdown");
    assert_eq!(
        errors.lock().unwrap().as_slice(),
        ["10.0.0.2:1 handler failed: no"]
    );
    assert_eq!(server.handle_request().unwrap(), HandleOutcome::ShutDown);
}

#[test]
fn datagram_handlers_and_servers() {
    let upper = |req: &mut DatagramRequest| -> anyhow::Result<()> {
        anyhow::ensure!(!req.data().is_empty(), "empty datagram");
        req.wfile = req.data().to_ascii_uppercase();
        Ok(())
    };
    assert_eq!(run_datagram(&upper, b"abc").unwrap(), Some(b"ABC".to_vec()));
    assert!(run_datagram(&upper, b"").is_err());

    let transport = MockDatagram::new().unwrap();
    transport.push(b"x", peer("127.0.0.1:5"));
    transport.push(b"", peer("127.0.0.1:6"));
    transport.push(b"y", peer("127.0.0.1:7"));
    let mut server = Server::new(Sequential::new(), transport.clone(), upper)
        .unwrap()
        .handle_error(|_: Option<&Addr>, _: &RequestError| {});
    for _ in 0..3 {
        assert_eq!(server.handle_request().unwrap(), HandleOutcome::Handled);
    }
    assert_eq!(
        transport.replies(),
        vec![
            (Addr::from(peer("127.0.0.1:5")), b"X".to_vec()),
            (Addr::from(peer("127.0.0.1:7")), b"Y".to_vec())
        ]
    );
}
