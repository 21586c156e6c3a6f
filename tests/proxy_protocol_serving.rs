//! Serving behind a proxy: `Server::proxy_protocol` makes trusted proxies' connections start with a
//! PROXY header whose client becomes `peer()`, and leaves everyone else's bytes untouched.
//!
//! The first half drives a real `Server` over the mock transport (scripted bytes, exact control of
//! chunking and read errors); the second serves real loopback connections from clients bound to known
//! 127.0.0.x addresses, so "trusted" and "untrusted" are real peers.

mod util;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use socketserver::proxy_protocol::{Command, ProxyHeader, ProxyProtocol, Version};
use socketserver::testing::{MockConn, MockProbe, MockStream};
use socketserver::{
    Addr, HandleOutcome, RequestError, Sequential, Server, StreamOptions, StreamRequest,
    ThreadingTcpServer,
};
use util::{TIMEOUT, connect_from};

/// Replies `peer=<peer> via=<proxy or -> cmd=<command or -> data=<everything after the header>`.
fn report(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut data = Vec::new();
    req.rfile.read_to_end(&mut data)?;
    let via = req.proxy_peer().map_or("-".to_string(), |p| p.to_string());
    let cmd = req
        .proxy_header()
        .map_or("-".to_string(), |h| format!("{:?}", h.command));
    let reply = format!(
        "peer={} via={via} cmd={cmd} data={}",
        req.peer(),
        String::from_utf8_lossy(&data)
    );
    req.wfile.write_all(reply.as_bytes())?;
    Ok(())
}

/// What the error hook saw: the peer it was given and the error.
#[derive(Debug, Clone)]
struct Reported {
    peer: Option<String>,
    message: String,
    proxy_header_kind: Option<io::ErrorKind>,
    timeout: bool,
}

type Reports = Arc<Mutex<Vec<Reported>>>;

fn hook(reports: &Reports) -> impl Fn(Option<&Addr>, &RequestError) + Send + Sync + 'static {
    let reports = reports.clone();
    move |peer, err| {
        reports.lock().unwrap().push(Reported {
            peer: peer.map(|p| p.to_string()),
            message: err.to_string(),
            proxy_header_kind: match err {
                RequestError::ProxyHeader(e) => Some(e.kind()),
                _ => None,
            },
            timeout: err.is_timeout(),
        })
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

const PROXY: &str = "10.0.0.5:40000";
const CLIENT: &str = "198.51.100.7:5555";

fn v2_header(command: Command, source: &str, destination: &str) -> Vec<u8> {
    ProxyHeader {
        version: Version::V2,
        command,
        source: Some(sa(source)),
        destination: Some(sa(destination)),
        tlvs: vec![(0xE0, b"tag".to_vec())],
    }
    .to_v2()
}

/// Serves each scripted connection through a real `Server` (one `handle_request` each) and returns the
/// probes and what the error hook saw.
fn serve_mock(config: ProxyProtocol, conns: Vec<MockConn>) -> (Vec<MockProbe>, Vec<Reported>) {
    let transport = MockStream::new().unwrap();
    let probes: Vec<_> = conns.into_iter().map(|c| transport.push(c)).collect();
    let reports = Reports::default();
    let mut server = Server::new(Sequential::new(), transport, report)
        .unwrap()
        .proxy_protocol(config)
        .handle_error(hook(&reports));
    for _ in &probes {
        assert_eq!(server.handle_request().unwrap(), HandleOutcome::Handled);
    }
    for p in &probes {
        assert!(p.is_closed(), "every connection is closed when served");
    }
    let reports = reports.lock().unwrap().clone();
    (probes, reports)
}

fn trusted() -> ProxyProtocol {
    ProxyProtocol::trusted(["10.0.0.0/8"]).unwrap()
}

#[test]
fn trusted_v1_header_makes_the_client_the_peer() {
    let conn = MockConn::new()
        .peer(sa(PROXY))
        .read("PROXY TCP4 198.51.100.7 10.0.0.5 5555 443\r\nhello");
    let (probes, reports) = serve_mock(trusted(), vec![conn]);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(
        probes[0].written_str(),
        format!("peer={CLIENT} via={PROXY} cmd=Proxy data=hello")
    );
}

#[test]
fn trusted_v2_header_split_across_reads_keeps_the_data_after_it() {
    let header = v2_header(Command::Proxy, "[2001:db8::7]:6000", "[2001:db8::1]:443");
    let (first, rest) = header.split_at(5);
    let conn = MockConn::new()
        .peer(sa(PROXY))
        .read(first)
        .read(rest)
        .read("data ")
        .read("more");
    let (probes, reports) = serve_mock(trusted(), vec![conn]);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(
        probes[0].written_str(),
        format!("peer=[2001:db8::7]:6000 via={PROXY} cmd=Proxy data=data more")
    );
}

#[test]
fn header_and_data_in_one_read_lose_nothing() {
    let mut bytes = v2_header(Command::Proxy, CLIENT, "10.0.0.5:443");
    bytes.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let conn = MockConn::new().peer(sa(PROXY)).read(bytes);
    let (probes, _) = serve_mock(trusted(), vec![conn]);
    assert_eq!(
        probes[0].written_str(),
        format!("peer={CLIENT} via={PROXY} cmd=Proxy data=GET / HTTP/1.0\r\n\r\n")
    );
}

#[test]
fn a_one_byte_read_buffer_still_reads_header_and_data() {
    let transport = MockStream::new().unwrap();
    let probe = transport.push(
        MockConn::new()
            .peer(sa(PROXY))
            .read(v2_header(Command::Proxy, CLIENT, "10.0.0.5:443"))
            .read("tiny"),
    );
    let options = StreamOptions {
        rbufsize: 1,
        ..StreamOptions::default()
    };
    let mut server = Server::new(Sequential::new(), transport, report)
        .unwrap()
        .stream_options(options)
        .proxy_protocol(trusted());
    server.handle_request().unwrap();
    assert_eq!(
        probe.written_str(),
        format!("peer={CLIENT} via={PROXY} cmd=Proxy data=tiny")
    );
}

#[test]
fn local_command_and_unknown_keep_the_proxy_as_peer() {
    let local = MockConn::new()
        .peer(sa(PROXY))
        .read(v2_header(Command::Local, CLIENT, "10.0.0.5:443"))
        .read("ping");
    let unknown = MockConn::new()
        .peer(sa(PROXY))
        .read("PROXY UNKNOWN\r\nping");
    let (probes, reports) = serve_mock(trusted(), vec![local, unknown]);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(
        probes[0].written_str(),
        format!("peer={PROXY} via={PROXY} cmd=Local data=ping")
    );
    assert_eq!(
        probes[1].written_str(),
        format!("peer={PROXY} via={PROXY} cmd=Proxy data=ping")
    );
}

#[test]
fn untrusted_peers_are_served_as_is_with_their_bytes_untouched() {
    let spoof = "PROXY TCP4 1.2.3.4 10.0.0.5 1 443\r\nhello";
    let conn = MockConn::new().peer(sa("192.0.2.9:1234")).read(spoof);
    let plain = MockConn::new().peer(sa("192.0.2.9:1235")).read("hello");
    let (probes, reports) = serve_mock(trusted(), vec![conn, plain]);
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(
        probes[0].written_str(),
        format!("peer=192.0.2.9:1234 via=- cmd=- data={spoof}")
    );
    assert_eq!(
        probes[1].written_str(),
        "peer=192.0.2.9:1235 via=- cmd=- data=hello"
    );
}

#[test]
fn without_the_option_headers_are_plain_data() {
    let transport = MockStream::new().unwrap();
    let probe = transport.push(MockConn::new().peer(sa(PROXY)).read("PROXY UNKNOWN\r\nx"));
    let mut server = Server::new(Sequential::new(), transport, report).unwrap();
    server.handle_request().unwrap();
    assert_eq!(
        probe.written_str(),
        format!("peer={PROXY} via=- cmd=- data=PROXY UNKNOWN\r\nx")
    );
}

#[test]
fn bad_headers_from_a_trusted_proxy_close_and_reach_the_error_hook() {
    let cases: Vec<(&str, MockConn, io::ErrorKind, &str)> = vec![
        (
            "plain data",
            MockConn::new().read("GET / HTTP/1.1\r\n"),
            io::ErrorKind::InvalidData,
            "not a PROXY protocol header",
        ),
        (
            "malformed v1",
            MockConn::new().read("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
            io::ErrorKind::InvalidData,
            "invalid source port",
        ),
        (
            "v1 without CRLF",
            MockConn::new().read(format!("PROXY UNKNOWN {}", "x".repeat(200))),
            io::ErrorKind::InvalidData,
            "too long",
        ),
        (
            "v2 over the limit",
            MockConn::new().read(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x02\x00".as_slice()),
            io::ErrorKind::InvalidData,
            "too long",
        ),
        (
            "cut short",
            MockConn::new().read("PROXY TCP4 1.2."),
            io::ErrorKind::UnexpectedEof,
            "stream ended",
        ),
        (
            "silent",
            MockConn::new()
                .read("PROX")
                .read_error(io::ErrorKind::WouldBlock),
            io::ErrorKind::TimedOut,
            "no complete PROXY protocol header within 5s",
        ),
    ];
    for (name, conn, kind, text) in cases {
        let config = trusted().max_v2_len(256);
        let (probes, reports) = serve_mock(config, vec![conn.peer(sa(PROXY))]);
        assert_eq!(probes[0].written(), b"", "{name}: the handler must not run");
        assert_eq!(reports.len(), 1, "{name}: {reports:?}");
        let r = &reports[0];
        assert_eq!(r.proxy_header_kind, Some(kind), "{name}: {r:?}");
        assert_eq!(r.peer.as_deref(), Some(PROXY), "{name}");
        assert!(r.message.contains(text), "{name}: {}", r.message);
        assert_eq!(r.timeout, kind == io::ErrorKind::TimedOut, "{name}");
    }
}

// ---------------------------------------------------------------- loopback ----

/// A threading server on 127.0.0.1 that trusts `trusted`, with its error reports.
struct Loopback {
    addr: SocketAddr,
    reports: Reports,
    stop: socketserver::ShutdownHandle,
    serving: Option<std::thread::JoinHandle<io::Result<socketserver::ServeSummary>>>,
}

impl Loopback {
    fn start(config: ProxyProtocol) -> Loopback {
        Loopback::start_on("127.0.0.1:0", config)
    }

    fn start_on(bind: &str, config: ProxyProtocol) -> Loopback {
        let reports = Reports::default();
        let mut server = ThreadingTcpServer::bind(bind, report)
            .unwrap()
            .read_timeout(TIMEOUT)
            .proxy_protocol(config)
            .handle_error(hook(&reports));
        let addr = server.local_addr().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let serving = Some(std::thread::spawn(move || server.serve_forever()));
        Loopback {
            addr,
            reports,
            stop,
            serving,
        }
    }

    /// Waits (bounded) for the error hook to have seen `n` reports.
    fn reports(&self, n: usize) -> Vec<Reported> {
        assert!(
            util::eventually(TIMEOUT, || self.reports.lock().unwrap().len() >= n),
            "expected {n} error report(s), got {:?}",
            self.reports.lock().unwrap()
        );
        self.reports.lock().unwrap().clone()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(serving) = self.serving.take() {
            let _ = serving.join();
        }
    }
}

/// Writes each chunk, half-closes, and returns the whole reply.
fn exchange(mut stream: TcpStream, chunks: &[&[u8]]) -> String {
    for chunk in chunks {
        stream.write_all(chunk).unwrap();
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn loopback_trusted_proxy_v1_and_v2() {
    let server = Loopback::start(ProxyProtocol::trusted(["127.0.0.1"]).unwrap());

    let proxy = connect_from(ip("127.0.0.1"), server.addr);
    let via = proxy.local_addr().unwrap();
    let v1 = format!(
        "PROXY TCP4 203.0.113.1 127.0.0.1 4242 {}\r\n",
        server.addr.port()
    );
    let reply = exchange(proxy, &[v1.as_bytes(), b"one"]);
    assert_eq!(
        reply,
        format!("peer=203.0.113.1:4242 via={via} cmd=Proxy data=one")
    );

    let proxy = connect_from(ip("127.0.0.1"), server.addr);
    let via = proxy.local_addr().unwrap();
    let v2 = v2_header(Command::Proxy, "[2001:db8::9]:4343", "[2001:db8::1]:443");
    let reply = exchange(proxy, &[&v2, b"two"]);
    assert_eq!(
        reply,
        format!("peer=[2001:db8::9]:4343 via={via} cmd=Proxy data=two")
    );

    assert!(server.reports.lock().unwrap().is_empty());
}

#[test]
fn loopback_untrusted_peer_sees_its_own_address_and_bytes() {
    let server = Loopback::start(ProxyProtocol::trusted(["127.0.0.1"]).unwrap());
    let client = connect_from(ip("127.0.0.3"), server.addr);
    let me = client.local_addr().unwrap();
    assert_eq!(me.ip().to_string(), "127.0.0.3");
    let spoof = "PROXY TCP4 1.2.3.4 127.0.0.1 1 2\r\nhi";
    let reply = exchange(client, &[spoof.as_bytes()]);
    assert_eq!(reply, format!("peer={me} via=- cmd=- data={spoof}"));
    assert!(server.reports.lock().unwrap().is_empty());
}

#[test]
fn loopback_malformed_header_closes_and_reports() {
    let server = Loopback::start(ProxyProtocol::trusted(["127.0.0.0/8"]).unwrap());
    let proxy = connect_from(ip("127.0.0.2"), server.addr);
    let via = proxy.local_addr().unwrap();
    let reply = exchange(proxy, &[b"PROXY TCP9 nonsense\r\nhello"]);
    assert_eq!(reply, "", "closed without a reply");
    let reports = server.reports(1);
    assert_eq!(reports[0].peer, Some(via.to_string()));
    assert_eq!(
        reports[0].proxy_header_kind,
        Some(io::ErrorKind::InvalidData)
    );
}

#[test]
fn loopback_slow_header_times_out_as_a_whole_without_stalling_others() {
    let timeout = Duration::from_secs(1);
    let server = Loopback::start(
        ProxyProtocol::trusted(["127.0.0.1"])
            .unwrap()
            .header_timeout(timeout),
    );
    // A proxy that trickles its header a byte every 100 ms (3.9 s in all): each read is quick, the
    // whole is not.
    let mut slow = connect_from(ip("127.0.0.1"), server.addr);
    let started = Instant::now();
    let (done_tx, done_rx) = mpsc::channel();
    let trickler = std::thread::spawn(move || {
        for b in b"PROXY TCP4 203.0.113.1 127.0.0.1 1 2\r\n" {
            if slow.write_all(&[*b]).is_err() {
                break; // the server closed on us
            }
            if done_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest); // EOF (or reset) once the server gives up
        rest
    });

    // Meanwhile another client is served at once: the header is read by the worker, not the loop.
    let quick = connect_from(ip("127.0.0.4"), server.addr);
    let me = quick.local_addr().unwrap();
    assert_eq!(
        exchange(quick, &[b"hi"]),
        format!("peer={me} via=- cmd=- data=hi")
    );
    assert!(
        server.reports.lock().unwrap().is_empty(),
        "the other client was served only after the slow header timed out"
    );

    let reports = server.reports(1);
    let elapsed = started.elapsed();
    let _ = done_tx.send(());
    assert_eq!(
        trickler.join().unwrap(),
        b"",
        "no reply to a proxy whose header timed out"
    );
    assert_eq!(reports[0].proxy_header_kind, Some(io::ErrorKind::TimedOut));
    assert!(reports[0].timeout);
    assert!(
        elapsed >= timeout,
        "cut after {elapsed:?}, before the deadline"
    );
    assert!(
        elapsed < TIMEOUT,
        "the deadline was not enforced: {elapsed:?}"
    );
}

/// `--trusted-proxy ::ffff:127.0.0.1` silently trusted no one. In IPv4-mapped form a proxy is
/// trusted however the listener reports it: as IPv4 on an IPv4 socket, IPv4-mapped on a dual-stack
/// `[::]` one (which is also where a plain IPv4 network must match mapped peers).
#[test]
fn loopback_ipv4_mapped_trusted_proxies() {
    for (bind, trusted) in [
        ("127.0.0.1:0", "::ffff:127.0.0.1"),
        ("[::]:0", "::ffff:127.0.0.1"),
        ("[::]:0", "127.0.0.1"),
        ("[::]:0", "::ffff:127.0.0.0/104"),
    ] {
        let server = Loopback::start_on(bind, ProxyProtocol::trusted([trusted]).unwrap());
        let to = SocketAddr::from(([127, 0, 0, 1], server.addr.port()));
        let proxy = connect_from(ip("127.0.0.1"), to);
        let v1 = format!("PROXY TCP4 203.0.113.1 127.0.0.1 4242 {}\r\n", to.port());
        let reply = exchange(proxy, &[v1.as_bytes(), b"mapped"]);
        assert!(
            reply.starts_with("peer=203.0.113.1:4242 via=")
                && reply.ends_with(" cmd=Proxy data=mapped"),
            "{bind}, trusting {trusted}: {reply}"
        );
        assert!(server.reports.lock().unwrap().is_empty());
    }
}
