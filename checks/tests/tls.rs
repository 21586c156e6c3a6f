//! TLS (the `tls` feature), in process, over real loopback sockets with rustls clients and
//! certificates made at test time: the same handler served plain and over TLS side by side, under
//! `Sequential`, `Threading` and `Pool`; what the handler learns of the handshake; SNI, ALPN and
//! mutual TLS; reload; and hostile peers (silent, plain-text, truncating); and the `Reactor`, whose
//! handshakes run inside its event loop. `Forking` and `PreFork` are in `tls_clients.rs`, through the
//! echo example in its own process.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::pki::{self, Pki};
use socketserver::framing::Lines;
use socketserver::proxy_protocol::ProxyProtocol;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::tls::{ClientAuth, Tls};
use socketserver::{
    Addr, Concurrency, Pool, Reactor, RequestError, Sequential, ServeSummary, Server,
    ShutdownHandle, StreamRequest, Tcp, Threading,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Echoes lines; `info\n` is answered with what the handshake settled.
fn echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    loop {
        req.idle();
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "peer\n" {
            let peer = req.peer().to_string();
            writeln!(req.wfile, "{peer}")?;
        } else if line == "info\n" {
            let info = match req.tls() {
                Some(t) => format!(
                    "tls sni={} alpn={} {} {} peer_certs={}\n",
                    t.server_name().unwrap_or("-"),
                    t.alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or("-".into()),
                    t.version(),
                    t.cipher_suite(),
                    t.peer_certificates().len()
                ),
                None => "plain\n".into(),
            };
            req.wfile.write_all(info.as_bytes())?;
        } else {
            req.wfile.write_all(line.as_bytes())?;
        }
        req.wfile.flush()?;
    }
}

type Handler = fn(&mut StreamRequest) -> anyhow::Result<()>;

/// A server running on a thread of its own, with the errors it reported.
struct Running {
    addr: SocketAddr,
    stop: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<ServeSummary>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start<C: Concurrency<Tcp, Handler> + Send + 'static>(strategy: C, tls: Option<Tls>) -> Self {
        Self::start_with(strategy, tls, |server| server)
    }

    fn start_with<C: Concurrency<Tcp, Handler> + Send + 'static>(
        strategy: C,
        tls: Option<Tls>,
        configure: impl FnOnce(Server<C, Tcp, Handler>) -> Server<C, Tcp, Handler>,
    ) -> Self {
        let server =
            Server::new(strategy, Tcp::bind("127.0.0.1:0").unwrap(), echo as Handler).unwrap();
        Self::serve(server, tls, configure)
    }

    fn serve<C, H>(
        server: Server<C, Tcp, H>,
        tls: Option<Tls>,
        configure: impl FnOnce(Server<C, Tcp, H>) -> Server<C, Tcp, H>,
    ) -> Self
    where
        C: Concurrency<Tcp, H> + Send + 'static,
        H: Send + Sync + 'static,
    {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        let mut server = server.handle_error(move |_: Option<&Addr>, e: &RequestError| {
            seen.lock().unwrap().push(e.to_string());
        });
        if let Some(tls) = tls {
            server = server.tls(tls);
        }
        let mut server = configure(server);
        let addr = server.local_addr().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.serve_forever());
        Running {
            addr,
            stop,
            thread: Some(thread),
            errors,
        }
    }

    /// Waits (bounded) until an error containing `what` was reported.
    fn reported(&self, what: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(e) = self
                .errors
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.contains(what))
            {
                return e.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no error with {what:?}: {:?}",
                self.errors.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> ServeSummary {
        self.stop.shutdown();
        self.thread.take().unwrap().join().unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown();
    }
}

/// The tests that measure the whole process (its descriptors and memory) run alone; the others run
/// side by side, as libtest likes. Without this, one test's connections and buffers count in
/// another's figures.
static ALONE: RwLock<()> = RwLock::new(());

/// For a test that does not measure the process: runs beside the others, never beside a measuring one.
fn side_by_side_with_others() -> RwLockReadGuard<'static, ()> {
    ALONE.read().unwrap_or_else(PoisonError::into_inner)
}

/// For a test that measures the process: runs with no other test.
fn alone() -> RwLockWriteGuard<'static, ()> {
    ALONE.write().unwrap_or_else(PoisonError::into_inner)
}

fn tls_for(pki: &Pki) -> Tls {
    let cert = pki.server("localhost", &["localhost"]);
    Tls::builder()
        .cert(&cert.chain, &cert.key)
        .handshake_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn plain_round_trip(addr: SocketAddr, line: &str) -> String {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&conn).write_all(line.as_bytes()).unwrap();
    let mut back = String::new();
    std::io::BufReader::new(conn).read_line(&mut back).unwrap();
    back
}

fn side_by_side<C: Concurrency<Tcp, Handler> + Send + 'static>(make: impl Fn() -> C) {
    let pki = Pki::new();
    let plain = Running::start(make(), None);
    let tls = Running::start(make(), Some(tls_for(&pki)));
    let config = pki.client_config(&[], None);
    for i in 0..3 {
        let mut client = pki::connect(tls.addr, "localhost", config.clone()).unwrap();
        assert_eq!(
            pki::round_trip(&mut client, &format!("hello {i}\n")).unwrap(),
            format!("hello {i}\n")
        );
        let info = pki::round_trip(&mut client, "info\n").unwrap();
        assert!(
            info.starts_with("tls sni=localhost alpn=- TLSv1.3 TLS13_"),
            "{info}"
        );
        assert_eq!(plain_round_trip(plain.addr, "info\n"), "plain\n");
    }
    assert_eq!(plain.finish().requests, 3);
    assert_eq!(tls.finish().requests, 3);
}

#[test]
fn the_same_handler_is_served_plain_and_over_tls_under_sequential() {
    let _others = side_by_side_with_others();
    side_by_side(Sequential::new);
}

#[test]
fn the_same_handler_is_served_plain_and_over_tls_under_threading() {
    let _others = side_by_side_with_others();
    side_by_side(Threading::new);
}

#[test]
fn the_same_handler_is_served_plain_and_over_tls_under_pool() {
    let _others = side_by_side_with_others();
    side_by_side(|| Pool::new(4));
}

#[test]
fn sni_picks_the_certificate_and_an_unknown_name_gets_the_default() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let a = pki.server("a", &["a.test"]);
    let b = pki.server("b", &["b.test"]);
    let fallback = pki.server("fallback", &["localhost"]);
    let tls = Tls::builder()
        .cert(&fallback.chain, &fallback.key)
        .sni_cert("a.test", &a.chain, &a.key)
        .sni_cert("B.TEST", &b.chain, &b.key)
        .build()
        .unwrap();
    let server = Running::start(Threading::new(), Some(tls));
    let config = pki.client_config(&[], None);
    for (name, want) in [("a.test", &a), ("b.test", &b), ("localhost", &fallback)] {
        let mut client = pki::connect(server.addr, name, config.clone()).unwrap();
        assert_eq!(pki::server_cert(&client), want.der, "{name}");
        let info = pki::round_trip(&mut client, "info\n").unwrap();
        assert!(info.starts_with(&format!("tls sni={name} ")), "{info}");
    }
    // A name the default certificate does not cover: served it, and the client refuses it.
    let err = pki::connect(server.addr, "c.test", config).expect_err("accepted");
    assert!(err.to_string().contains("certificate"), "{err}");
    server.finish();
}

#[test]
fn alpn_picks_the_servers_preference_among_the_clients_offers() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let cert = pki.server("localhost", &["localhost"]);
    let tls = Tls::builder()
        .cert(&cert.chain, &cert.key)
        .alpn(["h2", "http/1.1"])
        .build()
        .unwrap();
    let server = Running::start(Threading::new(), Some(tls));
    for (offer, want) in [
        (&["http/1.1"][..], "http/1.1"),
        (&["http/1.1", "h2"][..], "h2"),
        (&[][..], "-"),
    ] {
        let mut client =
            pki::connect(server.addr, "localhost", pki.client_config(offer, None)).unwrap();
        let info = pki::round_trip(&mut client, "info\n").unwrap();
        assert!(
            info.contains(&format!(" alpn={want} ")),
            "{offer:?}: {info}"
        );
    }
    // No protocol in common: refused (RFC 7301), and reported.
    assert!(
        pki::connect(
            server.addr,
            "localhost",
            pki.client_config(&["spdy/3"], None)
        )
        .is_err()
    );
    server.reported("TLS handshake failed");
    server.finish();
}

#[test]
fn mutual_tls_required_refuses_a_client_without_a_certificate() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let cert = pki.server("localhost", &["localhost"]);
    let tls = Tls::builder()
        .cert(&cert.chain, &cert.key)
        .client_ca(&pki.ca_pem, ClientAuth::Required)
        .build()
        .unwrap();
    let server = Running::start(Threading::new(), Some(tls));
    let id = pki.client("alice");
    let mut client =
        pki::connect(server.addr, "localhost", pki.client_config(&[], Some(&id))).unwrap();
    let info = pki::round_trip(&mut client, "info\n").unwrap();
    assert!(info.ends_with("peer_certs=1\n"), "{info}");
    drop(client);
    // Without a certificate: TLS 1.3 clients learn of the refusal at their first read.
    let refused = pki::connect(server.addr, "localhost", pki.client_config(&[], None))
        .and_then(|mut c| pki::round_trip(&mut c, "info\n"));
    assert!(
        refused.as_ref().is_err() || refused.as_ref().is_ok_and(String::is_empty),
        "{refused:?}"
    );
    server.reported("TLS handshake failed");
    // A certificate from another CA is refused too.
    let stranger = Pki::new().client("mallory");
    let refused = pki::connect(
        server.addr,
        "localhost",
        pki.client_config(&[], Some(&stranger)),
    )
    .and_then(|mut c| pki::round_trip(&mut c, "info\n"));
    assert!(
        refused.as_ref().is_err() || refused.as_ref().is_ok_and(String::is_empty),
        "{refused:?}"
    );
    assert_eq!(server.finish().requests, 3);
}

#[test]
fn mutual_tls_optional_serves_a_client_without_a_certificate() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let cert = pki.server("localhost", &["localhost"]);
    let tls = Tls::builder()
        .cert(&cert.chain, &cert.key)
        .client_ca(&pki.ca_pem, ClientAuth::Optional)
        .build()
        .unwrap();
    let server = Running::start(Threading::new(), Some(tls));
    let mut anonymous =
        pki::connect(server.addr, "localhost", pki.client_config(&[], None)).unwrap();
    assert!(
        pki::round_trip(&mut anonymous, "info\n")
            .unwrap()
            .ends_with("peer_certs=0\n")
    );
    let id = pki.client("bob");
    let mut known =
        pki::connect(server.addr, "localhost", pki.client_config(&[], Some(&id))).unwrap();
    assert!(
        pki::round_trip(&mut known, "info\n")
            .unwrap()
            .ends_with("peer_certs=1\n")
    );
    drop((anonymous, known));
    server.finish();
}

#[test]
fn reload_serves_new_connections_the_new_certificate_and_keeps_open_ones() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let first = pki.server("first", &["localhost"]);
    let live_chain = pki.dir.path().join("live.pem");
    let live_key = pki.dir.path().join("live.key");
    std::fs::copy(&first.chain, &live_chain).unwrap();
    std::fs::copy(&first.key, &live_key).unwrap();
    let tls = Tls::builder().cert(&live_chain, &live_key).build().unwrap();
    let server = Running::start(Threading::new(), Some(tls.clone()));
    let config = pki.client_config(&[], None);
    let mut old = pki::connect(server.addr, "localhost", config.clone()).unwrap();
    assert_eq!(pki::server_cert(&old), first.der);

    // A renewal: new files, then the reload.
    let second = pki.server("second", &["localhost"]);
    std::fs::copy(&second.chain, &live_chain).unwrap();
    std::fs::copy(&second.key, &live_key).unwrap();
    tls.reload().unwrap();
    let new = pki::connect(server.addr, "localhost", config.clone()).unwrap();
    assert_eq!(pki::server_cert(&new), second.der);
    assert_eq!(
        pki::round_trip(&mut old, "still here\n").unwrap(),
        "still here\n"
    );

    // A broken file at reload: an error, and the certificates in use stay.
    std::fs::write(&live_key, "not a key").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("live.key"), "{err}");
    let after = pki::connect(server.addr, "localhost", config).unwrap();
    assert_eq!(pki::server_cert(&after), second.der);
    drop((old, new, after));
    server.finish();
}

#[test]
fn a_silent_client_is_closed_at_the_handshake_deadline_and_others_are_served() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let server = Running::start(Threading::new(), Some(tls_for(&pki)));
    let silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut client = pki::connect(server.addr, "localhost", pki.client_config(&[], None)).unwrap();
    assert_eq!(pki::round_trip(&mut client, "hi\n").unwrap(), "hi\n");
    // The server gives up on the silent one (500 ms here) and closes it.
    let mut byte = [0; 1];
    // Closed by the server (end of stream or a reset), not our own read timing out.
    let ended = (&silent).read(&mut byte);
    assert!(
        matches!(&ended, Ok(0))
            || ended
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the silent client's connection was not closed: {ended:?}"
    );
    let err = server.reported("did not complete within");
    assert!(err.contains("TLS handshake failed"), "{err}");
    drop(client);
    server.finish();
}

#[test]
fn a_plain_text_client_gets_a_clean_close_and_an_error_naming_tls() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let server = Running::start(Threading::new(), Some(tls_for(&pki)));
    let plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&plain)
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // What comes back is at most a TLS alert, then the close; never an HTTP answer.
    let mut back = Vec::new();
    let _ = (&plain).read_to_end(&mut back);
    assert!(!back.starts_with(b"HTTP"), "{back:?}");
    let err = server.reported("TLS handshake failed");
    assert!(!err.contains("handler"), "{err}");
    // Others are unaffected.
    let mut client = pki::connect(server.addr, "localhost", pki.client_config(&[], None)).unwrap();
    assert_eq!(pki::round_trip(&mut client, "ok\n").unwrap(), "ok\n");
    drop(client);
    server.finish();
}

#[test]
fn a_truncated_close_is_reported_and_close_notify_is_sent_at_the_end() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let server = Running::start(Threading::new(), Some(tls_for(&pki)));
    let config = pki.client_config(&[], None);

    // A client that says close_notify: the handler sees a clean end, and answers with its own.
    let mut polite = pki::connect(server.addr, "localhost", config.clone()).unwrap();
    assert_eq!(pki::round_trip(&mut polite, "bye\n").unwrap(), "bye\n");
    polite.conn.send_close_notify();
    polite.flush().unwrap();
    let mut rest = Vec::new();
    // rustls reports a missing close_notify as UnexpectedEof: read_to_end succeeding is the proof.
    polite.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // A client that drops the TCP connection mid-stream, without close_notify. (It reads an answer
    // first: a socket closed with the server's session tickets unread would be reset, not closed.)
    let mut rude = pki::connect(server.addr, "localhost", config).unwrap();
    assert_eq!(pki::round_trip(&mut rude, "first\n").unwrap(), "first\n");
    rude.write_all(b"half a li").unwrap();
    rude.flush().unwrap();
    drop(rude);
    let err = server.reported("close_notify");
    assert!(err.contains("truncated"), "{err}");
    server.finish();
}

#[test]
fn a_thousand_handshakes_leave_descriptors_and_memory_flat() {
    let _alone = alone();
    let pki = Pki::new();
    let server = Running::start(Threading::new(), Some(tls_for(&pki)));
    thousand_handshakes(&server, &pki);
    assert_eq!(server.finish().requests, 1050);
}

/// 1,050 connections to `server`, each a full handshake and a round trip: after a warm-up of 50
/// (threads kept for reuse, allocator arenas), the process's descriptors and memory stay flat.
fn thousand_handshakes(server: &Running, pki: &Pki) {
    let config = pki.client_config(&[], None);
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let one = || {
        let mut c = pki::connect(server.addr, "localhost", config.clone()).unwrap();
        assert_eq!(pki::round_trip(&mut c, "x\n").unwrap(), "x\n");
    };
    for _ in 0..50 {
        one();
    }
    let before = fds();
    let rss_before = rss();
    for _ in 0..1000 {
        one();
    }
    // A leaked connection state (rustls keeps tens of KiB per connection) would add tens of MiB.
    let grown = rss().saturating_sub(rss_before);
    assert!(grown < 8 << 20, "RSS grew by {} KiB", grown >> 10);
    let deadline = Instant::now() + TIMEOUT;
    while fds() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fds() <= before, "descriptors {before} -> {}", fds());
}

#[test]
fn a_proxy_protocol_header_comes_before_the_handshake_whichever_was_configured_first() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    // `tls` first, then `proxy_protocol`: the header is still read first.
    let server = Running::start_with(Threading::new(), Some(tls_for(&pki)), |server| {
        server.proxy_protocol(ProxyProtocol::trusted(["127.0.0.1"]).unwrap())
    });
    let mut sock = TcpStream::connect(server.addr).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(&[], None), name).unwrap();
    let mut client = rustls::StreamOwned::new(conn, sock);
    assert_eq!(
        pki::round_trip(&mut client, "peer\n").unwrap(),
        "203.0.113.7:40000\n"
    );
    drop(client);
    server.finish();
}

// ---- Reactor: the handshake inside the event loop ----

/// Lines in, lines out, for the event loop: `info` answers with the handshake's results, `big` with
/// a 1 MiB line, `quit` closes.
struct LineEcho;

impl MessageHandler for LineEcho {
    type Codec = Lines;

    fn codec(&self) -> Lines {
        Lines::with_max_line_len(2 << 20)
    }

    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        match &line[..] {
            b"info" => {
                let info = match conn.tls() {
                    Some(t) => format!(
                        "tls sni={} {} {}",
                        t.server_name().unwrap_or("-"),
                        t.version(),
                        t.cipher_suite()
                    ),
                    None => "plain".into(),
                };
                conn.send(info.as_bytes())?;
            }
            b"big" => conn.send(&vec![b'x'; 1 << 20])?,
            b"peer" => {
                let peer = conn.peer().to_string();
                conn.send(peer.as_bytes())?;
            }
            b"quit" => conn.close(),
            _ => conn.send(&line)?,
        }
        Ok(())
    }
}

fn reactor(tls: Option<Tls>) -> Running {
    let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0").unwrap(), LineEcho).unwrap();
    Running::serve(server, tls, |s| s)
}

#[test]
fn the_reactor_serves_the_same_handler_plain_and_over_tls() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let plain = reactor(None);
    let tls = reactor(Some(tls_for(&pki)));
    let config = pki.client_config(&[], None);
    // Several clients at once, interleaved, on the one loop.
    let mut clients: Vec<_> = (0..8)
        .map(|_| pki::connect(tls.addr, "localhost", config.clone()).unwrap())
        .collect();
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            let line = format!("{round} from {i}\n");
            assert_eq!(pki::round_trip(c, &line).unwrap(), line);
        }
    }
    let info = pki::round_trip(&mut clients[0], "info\n").unwrap();
    assert!(
        info.starts_with("tls sni=localhost TLSv1.3 TLS13_"),
        "{info}"
    );
    assert_eq!(plain_round_trip(plain.addr, "info\n"), "plain\n");
    // A 1 MiB reply: more than the socket takes at once, so records wait in rustls for the loop.
    let mut big = String::new();
    clients[1].write_all(b"big\n").unwrap();
    std::io::BufReader::new(&mut clients[1])
        .read_line(&mut big)
        .unwrap();
    assert_eq!(big.len(), (1 << 20) + 1);
    // `quit`: the loop closes the connection, with close_notify (read_to_end fails without one).
    clients[2].write_all(b"quit\n").unwrap();
    let mut rest = Vec::new();
    clients[2].read_to_end(&mut rest).unwrap();
    drop(clients);
    plain.finish();
    tls.finish();
}

#[test]
fn the_reactor_cuts_a_silent_handshake_and_refuses_plain_text_and_serves_the_others() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let server = reactor(Some(tls_for(&pki)));
    let silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(TIMEOUT)).unwrap();
    let plain = TcpStream::connect(server.addr).unwrap();
    plain.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&plain).write_all(b"hello\n").unwrap();
    let mut client = pki::connect(server.addr, "localhost", pki.client_config(&[], None)).unwrap();
    assert_eq!(pki::round_trip(&mut client, "hi\n").unwrap(), "hi\n");
    let mut back = Vec::new();
    let _ = (&plain).read_to_end(&mut back);
    assert!(!back.starts_with(b"hello"), "{back:?}");
    let refused = server.reported("TLS handshake failed");
    assert!(!refused.contains("within"), "{refused}");
    // The silent one is closed at the handshake deadline (500 ms).
    let mut byte = [0; 1];
    // Closed by the server (end of stream or a reset), not our own read timing out.
    let ended = (&silent).read(&mut byte);
    assert!(
        matches!(&ended, Ok(0))
            || ended
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the silent client's connection was not closed: {ended:?}"
    );
    server.reported("did not complete within");
    drop(client);
    server.finish();
}

#[test]
fn the_reactor_does_a_thousand_handshakes_with_descriptors_and_memory_flat() {
    let _alone = alone();
    let pki = Pki::new();
    let server = reactor(Some(tls_for(&pki)));
    thousand_handshakes(&server, &pki);
    server.finish();
}

#[test]
fn the_reactor_reads_a_proxy_header_then_the_handshake() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0").unwrap(), LineEcho)
        .unwrap()
        .proxy_protocol(ProxyProtocol::trusted(["127.0.0.1"]).unwrap());
    let server = Running::serve(server, Some(tls_for(&pki)), |s| s);
    for split in [false, true] {
        let mut sock = TcpStream::connect(server.addr).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(pki.client_config(&[], None), name).unwrap();
        // The header and the ClientHello in one segment (the loop reads both at once, and hands
        // the rest to the handshake), or apart.
        let mut first = b"PROXY TCP4 203.0.113.9 127.0.0.1 40001 443\r\n".to_vec();
        if split {
            sock.write_all(&first).unwrap();
            first.clear();
        }
        conn.write_tls(&mut first).unwrap();
        sock.write_all(&first).unwrap();
        let mut client = rustls::StreamOwned::new(conn, sock);
        assert_eq!(
            pki::round_trip(&mut client, "peer\n").unwrap(),
            "203.0.113.9:40001\n",
            "split: {split}"
        );
    }
    server.finish();
}

/// A 1 MiB line each way: many records in one socket read, more than rustls buffers as plaintext at
/// once, under a blocking strategy and the Reactor.
#[test]
fn a_megabyte_each_way_arrives_whole() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let config = pki.client_config(&[], None);
    let line = format!("{}\n", "y".repeat(1 << 20));
    for server in [
        Running::start(Threading::new(), Some(tls_for(&pki))),
        reactor(Some(tls_for(&pki))),
    ] {
        let mut client = pki::connect(server.addr, "localhost", config.clone()).unwrap();
        // Both servers read the whole line before they answer: write it all, then read.
        client.write_all(line.as_bytes()).unwrap();
        client.flush().unwrap();
        let mut back = String::new();
        std::io::BufReader::new(&mut client)
            .read_line(&mut back)
            .unwrap();
        assert_eq!(back.len(), line.len());
        assert!(back == line, "the echo differs");
        drop(client);
        server.finish();
    }
}

/// TLS over a Unix stream socket: the layer sits on any stream transport.
#[test]
fn tls_is_served_over_a_unix_stream_socket() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let path = pki.dir.path().join("tls.sock");
    let mut server = Server::new(
        Threading::new(),
        socketserver::UnixStream::bind(&path).unwrap(),
        echo as Handler,
    )
    .unwrap()
    .tls(tls_for(&pki));
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.serve_forever());
    let sock = std::os::unix::net::UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(&[], None), name).unwrap();
    let mut client = rustls::StreamOwned::new(conn, sock);
    client.write_all(b"info\n").unwrap();
    let mut info = String::new();
    std::io::BufReader::new(&mut client)
        .read_line(&mut info)
        .unwrap();
    assert!(info.starts_with("tls sni=localhost "), "{info}");
    drop(client);
    stop.shutdown();
    assert_eq!(serving.join().unwrap().unwrap().requests, 1);
}

/// Writes each of `texts` as a TLS record of its own, all of them in one write to the socket.
fn records_in_one_write(client: &mut pki::Client, texts: &[&str]) {
    for text in texts {
        client.conn.writer().write_all(text.as_bytes()).unwrap();
    }
    while client.conn.wants_write() {
        client.conn.write_tls(&mut client.sock).unwrap();
    }
}

/// Reads one line for each of `want`, each equal to it.
fn lines_are(client: &mut pki::Client, want: &[&str]) {
    let mut reader = std::io::BufReader::new(client);
    for want in want {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line == *want,
            "a line of {} bytes, not {}",
            want.len(),
            line.len()
        );
    }
}

/// TLS records that arrive together: a read decrypts the first, and the rest stays in the TLS layer,
/// where the socket no longer shows it. The loop reads on without waiting for readiness that would
/// not come (before, the second line waited for the client's next bytes: a hang). Both while the
/// handshake's last flight is in the same read, and long after it (where the loop used to ask only
/// connections still handshaking whether their layer held input: a hang again).
#[test]
fn the_reactor_reads_on_when_records_arrive_together() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let tls = reactor(Some(tls_for(&pki)));
    let config = pki.client_config(&[], None);
    for after_an_exchange in [false, true] {
        let mut client = pki::connect(tls.addr, "localhost", config.clone()).unwrap();
        if after_an_exchange {
            assert_eq!(pki::round_trip(&mut client, "first\n").unwrap(), "first\n");
        }
        // Two records in one write: rustls takes ciphertext 4 KiB at a time, so the first read ends
        // with the first line and most of the second record still unread in the layer.
        let one = format!("{}\n", "a".repeat(3000));
        let two = format!("{}\n", "b".repeat(5000));
        records_in_one_write(&mut client, &[&one, &two]);
        lines_are(&mut client, &[&one, &two]);
    }
    tls.finish();
}

/// Echoes lines; after answering `hold`, waits (bounded) for the server's drain to begin.
fn echo_then_hold(req: &mut StreamRequest) -> anyhow::Result<()> {
    loop {
        req.idle();
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        req.wfile.write_all(line.as_bytes())?;
        if line == "hold\n" {
            let server = req.server().clone();
            let deadline = Instant::now() + TIMEOUT;
            while !server.is_shutdown() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// A next request that came in the same TLS record as the last one is held by the TLS layer, not
/// the socket: a drain that finds the handler between the two must serve it, as it does the same
/// request waiting in a plain socket, not end the connection as idle (before, the request was read
/// and dropped, and the client saw the end of stream without its answer).
#[test]
fn a_drain_serves_a_request_the_tls_layer_holds_as_it_does_one_in_the_socket() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    for tls in [None, Some(tls_for(&pki))] {
        let over_tls = tls.is_some();
        let server = Server::new(
            Threading::new(),
            Tcp::bind("127.0.0.1:0").unwrap(),
            echo_then_hold as Handler,
        )
        .unwrap()
        // `hold\n` fills the read buffer, so `next\n` stays where it came: in the socket or in rustls.
        .stream_options(socketserver::StreamOptions {
            rbufsize: 5,
            ..Default::default()
        });
        let running = Running::serve(server, tls, |s| s);
        let mut client: Box<dyn ReadWrite> = if over_tls {
            let config = pki.client_config(&[], None);
            Box::new(pki::connect(running.addr, "localhost", config).unwrap())
        } else {
            let conn = TcpStream::connect(running.addr).unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            Box::new(conn)
        };
        // One write: one TLS record.
        client.write_all(b"hold\nnext\n").unwrap();
        client.flush().unwrap();
        let mut reader = std::io::BufReader::new(client);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "hold\n");
        running.stop.shutdown();
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "next\n", "over TLS: {over_tls}");
        drop(reader);
        running.finish();
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Relays every line to every other connection.
struct Relay;

impl MessageHandler for Relay {
    type Codec = Lines;
    fn codec(&self) -> Lines {
        Lines::with_max_line_len(64 * 1024)
    }
    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        let me = conn.id();
        conn.broadcast_except(me, &line)?;
        Ok(())
    }
}

/// Records that came together, when the first one's handling holds its sender back (it took a
/// receiver on another loop past half its output bound): the rest waits in the TLS layer, and is
/// read once the sender is let go — its socket will not report it again.
#[test]
fn the_reactor_reads_held_tls_input_once_a_held_back_sender_is_let_go() {
    let _others = side_by_side_with_others();
    let pki = Pki::new();
    let reactor = Reactor::new().threads(2).write_buffer_limit(12 * 1024);
    let server = Server::new(reactor, Tcp::bind("127.0.0.1:0").unwrap(), Relay).unwrap();
    let running = Running::serve(server, Some(tls_for(&pki)), |s| s);
    let config = pki.client_config(&[], None);
    // Placed on the two loops in turn: the receiver on the first, the sender on the second.
    let mut receiver = pki::connect(running.addr, "localhost", config.clone()).unwrap();
    let mut sender = pki::connect(running.addr, "localhost", config).unwrap();
    // Both connections open before the sender speaks: the receiver's line reaches the sender.
    receiver.write_all(b"hello\n").unwrap();
    receiver.flush().unwrap();
    let mut hello = String::new();
    std::io::BufReader::new(&mut sender)
        .read_line(&mut hello)
        .unwrap();
    assert_eq!(hello, "hello\n");
    // The first record ends just inside 8 KiB of ciphertext (rustls takes it 4 KiB at a time), so
    // the read that completes it leaves most of the second in the layer. Relaying 8,150 bytes takes
    // the receiver past half its 12 KiB bound: the sender is held back.
    let one = format!("{}\n", "a".repeat(8149));
    let two = format!("{}\n", "b".repeat(3000));
    records_in_one_write(&mut sender, &[&one, &two]);
    lines_are(&mut receiver, &[&one, &two]);
    drop((receiver, sender));
    running.finish();
}
