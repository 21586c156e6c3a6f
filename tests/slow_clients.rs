//! Slow and hostile clients: silent, trickling, not reading, resetting, half-closing. Each is cut off or
//! served correctly, reported with its address, and never holds up the other clients.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socketserver::{
    Addr, RequestError, Sequential, Serve, ServeSummary, Server, ShutdownHandle, StreamRequest,
    Tcp, Threading,
};
use util::{connect, eventually, round_trip, TIMEOUT};

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

struct Running {
    addr: std::net::SocketAddr,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<ServeSummary>>>,
    errors: Arc<Mutex<Vec<(String, RequestErrorKind)>>>,
}

#[derive(Debug, Clone, PartialEq)]
enum RequestErrorKind {
    Timeout(String),
    Other(String),
}

impl Running {
    fn start<C: Serve<Tcp, Handler>>(
        strategy: C,
        configure: impl FnOnce(Server<C, Tcp, Handler>) -> Server<C, Tcp, Handler>,
    ) -> Running {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let server = Server::new(
            strategy,
            Tcp::bind("127.0.0.1:0").unwrap(),
            handler as Handler,
        )
        .unwrap();
        let mut server =
            configure(server).handle_error(move |peer: Option<&Addr>, err: &RequestError| {
                let kind = if err.is_timeout() {
                    RequestErrorKind::Timeout(err.to_string())
                } else {
                    RequestErrorKind::Other(err.to_string())
                };
                seen.lock()
                    .unwrap()
                    .push((peer.map(|p| p.to_string()).unwrap_or_default(), kind));
            });
        let addr = server.local_addr().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let thread = Some(std::thread::spawn(move || server.serve_forever()));
        Running {
            addr,
            stop,
            thread,
            errors,
        }
    }

    fn error_for(&self, client: &TcpStream) -> Option<RequestErrorKind> {
        let me = client.local_addr().unwrap().to_string();
        self.errors
            .lock()
            .unwrap()
            .iter()
            .find(|(p, _)| *p == me)
            .map(|(_, k)| k.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The read timeout cuts a silent client, in each strategy; meanwhile others are served (for
/// `Sequential`, once the timeout has freed the server).
fn silent_client_is_cut(concurrent: bool, server: Running) {
    let silent = connect(server.addr);
    let started = Instant::now();
    // Another client: served at once when concurrent, after the silent one's timeout when sequential.
    assert_eq!(round_trip(server.addr, b"other\n"), b"other\n");
    if concurrent {
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "a silent client held up another: {:?}",
            started.elapsed()
        );
    }
    let mut silent_reader = silent.try_clone().unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        silent_reader.read(&mut buf).unwrap(),
        0,
        "the silent client should be disconnected"
    );
    assert!(eventually(TIMEOUT, || server.error_for(&silent).is_some()));
    match server.error_for(&silent).unwrap() {
        RequestErrorKind::Timeout(msg) => assert!(
            msg.contains("read timed out after 300ms (read_timeout)"),
            "{msg}"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn silent_client_threading() {
    silent_client_is_cut(
        true,
        Running::start(Threading::new(), |s| {
            s.read_timeout(Duration::from_millis(300))
        }),
    );
}

#[test]
fn silent_client_sequential() {
    silent_client_is_cut(
        false,
        Running::start(Sequential, |s| s.read_timeout(Duration::from_millis(300))),
    );
}

#[test]
fn trickling_client_is_cut_by_the_connection_timeout() {
    // One byte every 100 ms never trips a 300 ms read timeout; the connection timeout still ends it.
    let server = Running::start(Threading::new(), |s| {
        s.read_timeout(Duration::from_millis(300))
            .connection_timeout(Duration::from_millis(700))
    });
    let mut slow = connect(server.addr);
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..100 {
        if slow.write_all(b"a").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100)); // the client's own pace, not a wait for the server
        if server.error_for(&slow).is_some() {
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickling client was never cut");
    assert!(started.elapsed() < Duration::from_secs(5));
    match server.error_for(&slow) {
        Some(RequestErrorKind::Timeout(msg)) => {
            assert!(msg.contains("connection_timeout of 700ms passed"), "{msg}")
        }
        other => panic!("expected the connection timeout, got {other:?}"),
    }
    assert_eq!(round_trip(server.addr, b"others fine\n"), b"others fine\n");
}

#[test]
fn client_that_never_reads_is_cut_by_the_write_timeout() {
    let server = Running::start(Threading::new(), |s| {
        s.write_timeout(Duration::from_millis(300))
    });
    let mut lazy = connect(server.addr);
    lazy.write_all(b"big 64\n").unwrap(); // 64 MiB: far beyond the socket buffers
    assert_eq!(round_trip(server.addr, b"others fine\n"), b"others fine\n");
    assert!(eventually(TIMEOUT, || server.error_for(&lazy).is_some()));
    match server.error_for(&lazy).unwrap() {
        RequestErrorKind::Timeout(msg) => assert!(
            msg.contains("write timed out after 300ms (write_timeout)"),
            "{msg}"
        ),
        other => panic!("expected a write timeout, got {other:?}"),
    }
}

#[test]
fn client_reset_mid_request_is_reported_and_others_served() {
    let server = Running::start(Threading::new(), |s| s);
    for _ in 0..20 {
        let mut c = connect(server.addr);
        c.write_all(b"big 8\n").unwrap();
        let mut first = [0u8; 1000];
        c.read_exact(&mut first).unwrap();
        // SO_LINGER 0: close sends RST, with 8 MiB still on its way to us.
        let sock = nix::sys::socket::setsockopt(
            &c,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
        sock.unwrap();
        drop(c);
    }
    assert!(
        eventually(TIMEOUT, || server.errors.lock().unwrap().len() == 20),
        "{:?}",
        server.errors.lock().unwrap()
    );
    for (_, kind) in server.errors.lock().unwrap().iter() {
        match kind {
            RequestErrorKind::Other(msg) => assert!(
                msg.contains("reset") || msg.contains("Broken pipe"),
                "{msg}"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(round_trip(server.addr, b"still here\n"), b"still here\n");
}

#[test]
fn half_closed_client_gets_the_whole_reply() {
    for strategy in [true, false] {
        let server = if strategy {
            Running::start(Threading::new(), |s| s)
        } else {
            Running::start(Sequential, |s| s)
        };
        let mut c = connect(server.addr);
        c.write_all(b"big 4\nlast\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut r = BufReader::new(c);
        let mut reply = Vec::new();
        r.read_to_end(&mut reply).unwrap();
        assert_eq!(reply.len(), (4 << 20) + 5);
        assert!(reply.ends_with(b"xlast\n"));
        assert!(server.errors.lock().unwrap().is_empty());
    }
}
