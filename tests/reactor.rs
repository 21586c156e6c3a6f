//! The `Reactor` strategy over real sockets: echo under many clients, framing across writes, a
//! non-reading peer paused with bounded memory, idle timeouts, prompt shutdown, failures that stay
//! local to their connection.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketserver::framing::{Lines, RawBytes};
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::{Addr, Reactor, RequestError, ServeSummary, Server, ShutdownHandle, Tcp};
use util::{Bounded, TIMEOUT, connect, round_trip, serve_bounded};

/// A byte echo that records the largest output queue it ever saw on a connection.
#[derive(Default)]
struct Echo {
    max_pending: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl MessageHandler for Echo {
    type Codec = RawBytes;
    fn codec(&self) -> RawBytes {
        RawBytes
    }
    fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
        conn.send(&bytes)?;
        self.max_pending.fetch_max(conn.pending(), Ordering::SeqCst);
        Ok(())
    }
    fn on_close(&self, _conn: &mut Conn<'_, RawBytes>) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Replies to each line with `<length> <line>`; "fail" returns an error, "panic" panics.
struct LineLen;

impl MessageHandler for LineLen {
    type Codec = Lines;
    fn codec(&self) -> Lines {
        Lines::with_max_line_len(1000)
    }
    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        match &line[..] {
            b"fail" => anyhow::bail!("asked to fail"),
            b"panic" => panic!("asked to panic"),
            _ => {
                let mut reply = format!("{} ", line.len()).into_bytes();
                reply.extend_from_slice(&line);
                conn.send(&reply)?;
                Ok(())
            }
        }
    }
}

struct Running {
    addr: SocketAddr,
    stop: ShutdownHandle,
    /// Awaited with a time limit: a drain that overruns fails its test instead of hanging it.
    serving: Bounded<io::Result<ServeSummary>>,
}

impl Running {
    #[track_caller]
    fn stop(self) -> ServeSummary {
        self.stop.shutdown();
        self.serving.wait(TIMEOUT).expect("serve_forever")
    }
}

fn start<H: MessageHandler>(server: Server<Reactor, Tcp, H>) -> Running {
    let addr = server.local_addr().as_inet().expect("inet");
    let stop = server.shutdown_handle();
    let serving = serve_bounded(server);
    Running {
        addr,
        stop,
        serving,
    }
}

fn bind<H: MessageHandler>(reactor: Reactor, handler: H) -> Server<Reactor, Tcp, H> {
    Server::new(reactor, Tcp::bind("127.0.0.1:0").unwrap(), handler).unwrap()
}

#[test]
fn echoes_for_many_concurrent_clients() {
    let running = start(bind(Reactor::new(), Echo::default()));
    // All 200 connected at once, each with its own 10 KiB message in flight before any is read.
    let mut clients: Vec<(TcpStream, Vec<u8>)> = (0..200)
        .map(|i| {
            let msg: Vec<u8> = (0..10_000).map(|j| ((i * 7 + j) % 251) as u8).collect();
            (connect(running.addr), msg)
        })
        .collect();
    for (stream, msg) in &mut clients {
        stream.write_all(msg).unwrap();
    }
    for (stream, msg) in &mut clients {
        let mut reply = vec![0; msg.len()];
        stream.read_exact(&mut reply).unwrap();
        assert!(reply == *msg, "a client got someone else's bytes");
    }
    drop(clients);
    let summary = running.stop();
    assert_eq!(summary.requests, 200);
}

#[test]
fn half_close_gets_the_whole_reply_then_eof() {
    let running = start(bind(Reactor::new(), Echo::default()));
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 256) as u8).collect();
    assert!(round_trip(running.addr, &big) == big);
    running.stop();
}

#[test]
fn messages_split_across_writes_are_reassembled() {
    let running = start(bind(Reactor::new(), LineLen));
    let mut client = connect(running.addr);
    client.set_nodelay(true).unwrap();
    let mut replies = BufReader::new(client.try_clone().unwrap());
    // One line in single-byte writes, and two lines (one split in the middle) in two writes.
    for b in b"hello world\n" {
        client.write_all(&[*b]).unwrap();
        client.flush().unwrap();
    }
    client.write_all(b"one\ntw").unwrap();
    client.write_all(b"o\r\n").unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        got.push(line);
    }
    assert_eq!(got, ["11 hello world\n", "3 one\n", "3 two\n"]);
    running.stop();
}

#[test]
fn a_peer_that_does_not_read_is_paused_with_bounded_output() {
    const LIMIT: usize = 64 * 1024;
    let echo = Echo::default();
    let max_pending = echo.max_pending.clone();
    let running = start(bind(Reactor::new().write_buffer_limit(LIMIT), echo));

    // Write without reading until the server stops taking bytes: proof that it stopped reading.
    let mut slow = connect(running.addr);
    slow.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    let started = Instant::now();
    let mut stalled_since: Option<Instant> = None;
    loop {
        assert!(
            written < 512 << 20,
            "the server kept reading 512 MiB from a peer that reads nothing"
        );
        assert!(started.elapsed() < TIMEOUT, "no stall within {TIMEOUT:?}");
        match slow.write(&chunk) {
            Ok(n) => {
                written += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("writing: {e}"),
        }
    }
    // The server's queue for it stayed within the bound (plus the echo of one 64 KiB read).
    let max = max_pending.load(Ordering::SeqCst);
    assert!(max <= LIMIT + 64 * 1024, "queued {max} bytes");
    assert!(
        max >= LIMIT,
        "the queue never reached the limit ({max}): not paused by it"
    );

    // Meanwhile the others are served.
    assert_eq!(round_trip(running.addr, b"still here"), b"still here");

    // Once it reads, it is resumed and every byte comes back.
    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut back = vec![0u8; written];
    slow.read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == b'x'));
    running.stop();
}

#[test]
fn an_idle_connection_is_closed_and_an_active_one_is_not() {
    let echo = Echo::default();
    let closed = echo.closed.clone();
    let server = bind(Reactor::new(), echo).read_timeout(Duration::from_secs(1));
    let running = start(server);
    let mut idle = connect(running.addr);
    let mut active = connect(running.addr);
    let started = Instant::now();
    // The active one talks every 50 ms for well past the timeout.
    while started.elapsed() < Duration::from_millis(2500) {
        active.write_all(b"!").unwrap();
        let mut one = [0u8];
        active.read_exact(&mut one).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut buf = [0u8; 8];
    match idle.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("idle connection got {n} bytes"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "on_close ran for it");
    active.write_all(b"?").unwrap();
    let mut one = [0u8];
    active.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"?");
    running.stop();
}

#[test]
fn shutdown_wakes_the_loop_at_once_and_closes_the_listener() {
    let running = start(bind(Reactor::new(), Echo::default()));
    let addr = running.addr;
    let mut client = connect(addr);
    client.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    client.read_exact(&mut pong).unwrap();

    let asked = Instant::now();
    let summary = running.stop();
    // No idle timeout is near (60 s), so only the eventfd can have woken the loop this soon.
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.in_flight_at_shutdown, 1);
    assert_eq!((summary.drained, summary.cut), (1, 0));
    assert_eq!(
        client.read(&mut pong).unwrap(),
        0,
        "the connection was closed"
    );
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
}

/// A peer that never reads, with echo output queued for it: it writes for a second (bounded), as much
/// as the server takes, and keeps the connection open for as long as it is held.
fn non_reader_with_output_queued(addr: SocketAddr) -> TcpStream {
    let mut slow = connect(addr);
    slow.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let _ = slow.write(&chunk);
        std::thread::sleep(Duration::from_millis(1));
    }
    slow
}

#[test]
fn shutdown_cuts_output_that_cannot_be_flushed_by_the_timeout() {
    let server = bind(
        Reactor::new().write_buffer_limit(16 * 1024),
        Echo::default(),
    )
    .shutdown_timeout(Duration::from_millis(200));
    let running = start(server);
    let _slow = non_reader_with_output_queued(running.addr);
    let asked = Instant::now();
    let summary = running.stop();
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!((summary.in_flight_at_shutdown, summary.cut), (1, 1));
}

#[test]
fn a_forced_shutdown_cuts_the_drain_short() {
    let server = bind(
        Reactor::new().write_buffer_limit(16 * 1024),
        Echo::default(),
    )
    .shutdown_timeout(Duration::from_secs(60));
    let running = start(server);
    let _slow = non_reader_with_output_queued(running.addr);
    // A plain shutdown would wait up to 60 s for output the peer never reads; forcing ends it now.
    running.stop.force();
    // Bounded well below the 60 s deadline: a force that is ignored fails here.
    let summary = running.serving.wait(Duration::from_secs(10)).unwrap();
    assert_eq!((summary.in_flight_at_shutdown, summary.cut), (1, 1));
}

#[test]
fn handler_errors_and_panics_close_only_their_connection() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let server = bind(Reactor::new(), LineLen).handle_error(
        move |peer: Option<&Addr>, err: &RequestError| {
            seen.lock().unwrap().push((peer.cloned(), err.to_string()));
        },
    );
    let running = start(server);
    let mut bystander = BufReader::new(connect(running.addr));
    let mut failing = connect(running.addr);
    let mut panicking = connect(running.addr);
    failing.write_all(b"fail\nnever\n").unwrap();
    panicking.write_all(b"panic\n").unwrap();
    for (name, stream) in [("fail", &mut failing), ("panic", &mut panicking)] {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{name}: got {rest:?}");
    }
    bystander.get_mut().write_all(b"ok\n").unwrap();
    let mut line = String::new();
    bystander.read_line(&mut line).unwrap();
    assert_eq!(line, "2 ok\n");

    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let failing_addr = failing.local_addr().unwrap();
    let panicking_addr = panicking.local_addr().unwrap();
    let peer_of = |msg: &str| {
        errors
            .iter()
            .find(|(_, e)| e.contains(msg))
            .and_then(|(p, _)| p.as_ref().and_then(Addr::as_inet))
    };
    assert_eq!(peer_of("asked to fail"), Some(failing_addr));
    assert_eq!(peer_of("panicked: asked to panic"), Some(panicking_addr));
    drop(errors);
    running.stop();
}

#[test]
fn undecodable_input_is_reported_and_closes_the_connection() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let server = bind(Reactor::new(), LineLen).handle_error(move |_: Option<&Addr>, err| {
        seen.lock().unwrap().push(err.to_string());
    });
    let running = start(server);
    let mut client = connect(running.addr);
    client.write_all(&[b'a'; 5000]).unwrap();
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty()),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
    let errors = errors.lock().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exceeds the limit of 1000")),
        "{errors:?}"
    );
    drop(errors);
    running.stop();
}

#[test]
fn verify_request_rejects_before_on_open() {
    let server = bind(Reactor::new(), Echo::default()).verify_request(|_: &Addr| false);
    let running = start(server);
    let mut client = connect(running.addr);
    let _ = client.write_all(b"x");
    let _ = client.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(rest.is_empty());
    assert_eq!(running.stop().requests, 0);
}

#[test]
fn echo_example_serves_tcp_with_reactor() {
    let mut server = util::ServerProc::example("echo", &["--concurrency", "reactor"]);
    for i in 0..3 {
        let msg = format!("hello {i} from the reactor\n");
        assert_eq!(round_trip(&server.addr, msg.as_bytes()), msg.as_bytes());
    }
    let status = server.stop_with(nix::sys::signal::Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn echo_example_refuses_udp_with_reactor() {
    let out = std::process::Command::new(util::example_bin("echo"))
        .args(["--transport", "udp", "--concurrency", "reactor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stream transports only"), "{stderr}");
}

/// Tells each connection, on open and for every line, whom the handler sees.
struct WhoSees;

impl MessageHandler for WhoSees {
    type Codec = Lines;
    fn codec(&self) -> Lines {
        Lines::with_max_line_len(1000)
    }
    fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
        let via = conn.proxy_peer().map(|p| p.to_string());
        let greeting = format!("open {} via {}", conn.peer(), via.as_deref().unwrap_or("-"));
        conn.send(greeting.as_bytes())?;
        Ok(())
    }
    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        let reply = format!("{} said {}", conn.peer(), String::from_utf8_lossy(&line));
        conn.send(reply.as_bytes())?;
        Ok(())
    }
}

#[test]
fn the_proxy_protocol_layer_runs_under_the_reactor() {
    use socketserver::proxy_protocol::ProxyProtocol;
    let reports = Arc::new(Mutex::new(Vec::new()));
    let seen = reports.clone();
    let proxies = ProxyProtocol::trusted(["127.0.0.1"])
        .unwrap()
        .header_timeout(Duration::from_millis(300));
    let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0").unwrap(), WhoSees)
        .unwrap()
        .proxy_protocol(proxies)
        .handle_error(move |peer: Option<&Addr>, err: &RequestError| {
            let peer = peer.map_or("-".to_string(), |p| p.to_string());
            seen.lock().unwrap().push(format!("{peer}: {err}"));
        });
    let running = start(server);
    let line = |reader: &mut BufReader<TcpStream>| {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a line");
        line
    };

    // A trusted proxy: the header, and the client's first line in the same write.
    let mut proxied = connect(running.addr);
    proxied
        .write_all(b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 80\r\nhello\n")
        .unwrap();
    let mut reader = BufReader::new(proxied.try_clone().unwrap());
    let via = proxied.local_addr().unwrap();
    assert_eq!(
        line(&mut reader),
        format!("open 198.51.100.7:5555 via {via}\n")
    );
    assert_eq!(line(&mut reader), "198.51.100.7:5555 said hello\n");

    // A header split across writes still completes.
    let mut split = connect(running.addr);
    split.write_all(b"PROXY TCP6 2001:db8::1 ").unwrap();
    split.flush().unwrap();
    split.write_all(b"2001:db8::2 4000 443\r\nhi\n").unwrap();
    let mut reader = BufReader::new(split.try_clone().unwrap());
    assert!(line(&mut reader).starts_with("open [2001:db8::1]:4000 via 127.0.0.1:"));
    assert_eq!(line(&mut reader), "[2001:db8::1]:4000 said hi\n");

    // An untrusted peer's "header" is data, and it is itself the peer.
    let mut direct = util::connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), running.addr);
    direct
        .write_all(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        .unwrap();
    let mut reader = BufReader::new(direct.try_clone().unwrap());
    let me = direct.local_addr().unwrap();
    assert_eq!(line(&mut reader), format!("open {me} via -\n"));
    assert_eq!(
        line(&mut reader),
        format!("{me} said PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n")
    );

    // A trusted peer that sends no header is refused, and one that sends nothing times out; the
    // handler never sees either.
    let mut garbage = connect(running.addr);
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let silent = connect(running.addr);
    for mut refused in [garbage, silent] {
        refused.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let _ = refused.read_to_end(&mut rest); // EOF, or a reset
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    let summary = running.stop();
    assert_eq!(summary.requests, 5);
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert!(
        reports
            .iter()
            .any(|r| r.contains("not a PROXY protocol header")),
        "{reports:?}"
    );
    assert!(
        reports
            .iter()
            .any(|r| r.contains("no complete PROXY protocol header within 300ms")),
        "{reports:?}"
    );
    assert!(
        reports.iter().all(|r| r.starts_with("127.0.0.1:")),
        "reported with the proxy's address: {reports:?}"
    );
}

/// Records which connection each chunk came from, and holds the loop on the chunk `x` until told to
/// go on, so the test can fill two sockets while nothing reads them.
struct Recorder {
    chunks: Arc<Mutex<Vec<(u16, usize)>>>,
    holding: Arc<AtomicUsize>,
    go: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl MessageHandler for Recorder {
    type Codec = RawBytes;
    fn codec(&self) -> RawBytes {
        RawBytes
    }
    fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
        if bytes == b"x" {
            self.holding.store(1, Ordering::SeqCst);
            self.go.lock().unwrap().recv_timeout(TIMEOUT)?;
            return Ok(());
        }
        let port = conn.peer().as_inet().map_or(0, |a| a.port());
        self.chunks.lock().unwrap().push((port, bytes.len()));
        Ok(())
    }
}

/// A one-loop reactor serving a [`Recorder`], its loop held by the first of its clients: what the
/// others send meanwhile waits in their sockets, unread, until the test lets the loop go.
struct HeldLoop {
    running: Running,
    chunks: Arc<Mutex<Vec<(u16, usize)>>>,
    go: std::sync::mpsc::Sender<()>,
}

impl HeldLoop {
    /// Serves on `listener`, connects `clients` clients and holds the loop with the first.
    fn start(listener: std::net::TcpListener, clients: usize) -> (Self, Vec<TcpStream>) {
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let holding = Arc::new(AtomicUsize::new(0));
        let (go, wait) = std::sync::mpsc::channel();
        let handler = Recorder {
            chunks: chunks.clone(),
            holding: holding.clone(),
            go: Mutex::new(wait),
        };
        let server = Server::new(
            Reactor::new().threads(1),
            Tcp::from_listener(listener).unwrap(),
            handler,
        )
        .unwrap();
        let running = start(server);
        let mut clients: Vec<TcpStream> = (0..clients).map(|_| connect(running.addr)).collect();
        clients[0].write_all(b"x").unwrap();
        assert!(
            util::eventually(TIMEOUT, || holding.load(Ordering::SeqCst) == 1),
            "the handler holds the loop"
        );
        let held = HeldLoop {
            running,
            chunks,
            go,
        };
        (held, clients)
    }

    /// Lets the loop go on, and waits until the handler has had `want` bytes in all.
    fn let_go_for(&self, want: usize) {
        self.go.send(()).unwrap();
        let total = || {
            self.chunks
                .lock()
                .unwrap()
                .iter()
                .map(|c| c.1)
                .sum::<usize>()
        };
        assert!(
            util::eventually(TIMEOUT, || total() == want),
            "everything is read: {} of {want} bytes",
            total()
        );
    }
}

/// Waits until all `n` bytes `client` sent wait in the server's receive queue.
fn waiting_in_the_server(client: &TcpStream, n: usize) {
    assert!(
        util::eventually(TIMEOUT, || util::unread_by_server(client) == Some(n)),
        "all {n} bytes wait in the server's receive queue"
    );
}

#[test]
fn a_streaming_connection_is_read_in_a_burst_not_one_buffer_per_turn() {
    use nix::sys::socket::{setsockopt, sockopt::RcvBuf};
    const EACH: usize = 256 * 1024;
    // Room in the server's receive queues for everything both clients send while the loop is held.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    setsockopt(&listener, RcvBuf, &(2 * EACH)).unwrap();
    let (held, mut clients) = HeldLoop::start(listener, 2);
    let data = vec![7u8; EACH];
    for client in &mut clients {
        client.write_all(&data).unwrap();
    }
    for client in &clients {
        waiting_in_the_server(client, EACH);
    }
    held.let_go_for(2 * EACH);
    drop(clients);
    held.running.stop();

    // Both sockets were full when the loop went on. Whichever it served first, it read that one to
    // the end before it turned to the other: one run per connection, not a buffer from each in turn.
    let chunks = held.chunks.lock().unwrap().clone();
    let runs = chunks.windows(2).filter(|w| w[0].0 != w[1].0).count() + 1;
    assert_eq!(runs, 2, "chunks by connection: {chunks:?}");
}

/// A burst ends after 16 buffers, with input still in the socket. The loop watches connections
/// edge-triggered, and epoll reports input once, when it arrives: so the loop itself remembers the
/// connection and reads it again after the turn's other events. (Fails if it forgets: the client
/// sends nothing more, and the rest of its bytes would wait forever.)
#[test]
fn a_burst_cut_short_is_read_on_without_another_report() {
    use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
    const EACH: usize = 2 << 20; // twice what one burst reads
    // Room in the server's receive queue for all of it while the loop is held: past `rmem_max`,
    // which only a privileged process may go beyond.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    if let Err(e) = setsockopt(&listener, RcvBufForce, &(4 * EACH)) {
        eprintln!(
            "skipped: a receive queue of {} bytes needs CAP_NET_ADMIN ({e})",
            4 * EACH
        );
        return;
    }
    let (held, mut clients) = HeldLoop::start(listener, 2);
    clients[1].write_all(&vec![7u8; EACH]).unwrap();
    waiting_in_the_server(&clients[1], EACH);
    held.let_go_for(EACH);
    drop(clients);
    held.running.stop();
}
