//! Unix stream and datagram transports over real sockets in temporary directories (and abstract
//! names): echo under every strategy, socket-path ownership (live, stale, not-a-socket, unlink on close
//! by the owner only, mode), abstract addresses, unbound datagram senders, truncation, peer credentials.
//!
//! `Forking` runs in the echo example binary, never in this multi-threaded test process.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{
    SocketAddr, UnixDatagram as StdDatagram, UnixListener, UnixStream as StdStream,
};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use socketserver::{
    Addr, Concurrency, DatagramRequest, RequestError, Sequential, ServeSummary, Server,
    ShutdownHandle, StreamRequest, Threading, Transport, UnixDatagram, UnixStream,
};
use util::{ServerProc, TIMEOUT};

/// Echoes the connection back until EOF.
fn echo(req: &mut StreamRequest) -> anyhow::Result<()> {
    std::io::copy(&mut req.rfile, &mut req.wfile)?;
    Ok(())
}

/// Sends the datagram back.
fn echo_dgram(req: &mut DatagramRequest) -> anyhow::Result<()> {
    req.wfile = req.data().to_vec();
    Ok(())
}

/// A server serving on a thread of this process; stopped and joined by `stop`.
struct Running {
    stop: ShutdownHandle,
    thread: JoinHandle<std::io::Result<ServeSummary>>,
}

impl Running {
    fn start<C, T, H>(mut server: Server<C, T, H>) -> Running
    where
        C: Concurrency<T, H> + Send + 'static,
        T: Transport,
        H: Send + Sync + 'static,
    {
        let stop = server.shutdown_handle();
        // `server` is dropped on the thread once serving ends, which closes it.
        let thread = std::thread::spawn(move || server.serve_forever());
        Running { stop, thread }
    }

    fn stop(self) -> ServeSummary {
        self.stop.shutdown();
        self.thread
            .join()
            .expect("serving thread")
            .expect("serve_forever")
    }
}

fn connect(path: &Path) -> StdStream {
    let s = StdStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn round_trip(mut s: StdStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    reply
}

/// A datagram client bound to its own path, so replies can reach it.
fn dgram_client(dir: &Path, name: &str) -> StdDatagram {
    let c = StdDatagram::bind(dir.join(name)).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

fn dgram_round_trip(client: &StdDatagram, server: &Path, msg: &[u8]) -> Vec<u8> {
    client.send_to(msg, server).unwrap();
    let mut buf = [0; 256];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(
        from.as_pathname(),
        Some(server),
        "the reply comes from the server's socket"
    );
    buf[..n].to_vec()
}

fn is_socket(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// A unique abstract name: tests (and other checkouts' tests) share the network namespace.
fn abstract_name(tag: &str) -> String {
    format!("socketserver-test-{}-{tag}", std::process::id())
}

// ---- echo under every strategy ----

fn stream_echo_in_process<
    C: Concurrency<UnixStream, fn(&mut StreamRequest) -> anyhow::Result<()>> + Send + 'static,
>(
    strategy: C,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let handler: fn(&mut StreamRequest) -> anyhow::Result<()> = echo;
    let server = Server::new(strategy, UnixStream::bind(&path).unwrap(), handler).unwrap();
    assert_eq!(server.local_addr().to_string(), path.display().to_string());
    let running = Running::start(server);
    for i in 0..3 {
        let msg = format!("hello {i}\n");
        assert_eq!(round_trip(connect(&path), msg.as_bytes()), msg.as_bytes());
    }
    let summary = running.stop();
    assert_eq!(summary.requests, 3);
    assert!(!path.exists(), "closing the server removes its socket path");
}

#[test]
fn stream_echo_sequential() {
    stream_echo_in_process(Sequential::new());
}

#[test]
fn stream_echo_threading() {
    stream_echo_in_process(Threading::new());
}

#[test]
fn stream_echo_forking_children_never_unlink_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fork.sock");
    let path_arg = path.to_str().unwrap();
    let mut server = ServerProc::example(
        "echo",
        &[
            "--transport",
            "unix",
            "--addr",
            path_arg,
            "--concurrency",
            "forking",
        ],
    );
    assert_eq!(server.addr, path_arg);
    for i in 0..3 {
        let msg = format!("forked {i}\n");
        assert_eq!(round_trip(connect(&path), msg.as_bytes()), msg.as_bytes());
    }
    // Each connection was served (and ended) in a child; the path is still the parent's.
    assert!(util::eventually(TIMEOUT, || util::children(server.pid()).is_empty()));
    assert!(
        is_socket(&path),
        "a forked child removed the parent's socket path"
    );
    assert_eq!(round_trip(connect(&path), b"still here"), b"still here");
    assert_eq!(server.terminate().code(), Some(0));
    assert!(!path.exists(), "the parent removes its path on shutdown");
}

fn datagram_echo_in_process<
    C: Concurrency<UnixDatagram, fn(&mut DatagramRequest) -> anyhow::Result<()>> + Send + 'static,
>(
    strategy: C,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dgram.sock");
    let handler: fn(&mut DatagramRequest) -> anyhow::Result<()> = echo_dgram;
    let server = Server::new(strategy, UnixDatagram::bind(&path).unwrap(), handler).unwrap();
    let running = Running::start(server);
    let client = dgram_client(dir.path(), "client.sock");
    for i in 0..3 {
        let msg = format!("datagram {i}");
        assert_eq!(
            dgram_round_trip(&client, &path, msg.as_bytes()),
            msg.as_bytes()
        );
    }
    assert_eq!(running.stop().requests, 3);
    assert!(!path.exists(), "closing the server removes its socket path");
}

#[test]
fn datagram_echo_sequential() {
    datagram_echo_in_process(Sequential::new());
}

#[test]
fn datagram_echo_threading() {
    datagram_echo_in_process(Threading::new());
}

#[test]
fn datagram_echo_forking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dfork.sock");
    let mut server = ServerProc::example(
        "echo",
        &[
            "--transport",
            "unix-dgram",
            "--addr",
            path.to_str().unwrap(),
            "--concurrency",
            "forking",
        ],
    );
    let client = dgram_client(dir.path(), "client.sock");
    for i in 0..3 {
        let msg = format!("forked datagram {i}");
        assert_eq!(
            dgram_round_trip(&client, &path, msg.as_bytes()),
            msg.as_bytes()
        );
    }
    assert!(
        is_socket(&path),
        "a forked child removed the parent's socket path"
    );
    assert_eq!(server.terminate().code(), Some(0));
    assert!(!path.exists());
}

// ---- path ownership ----

#[test]
fn binding_over_a_live_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.sock");
    let first = UnixStream::bind(&path).unwrap();
    for replace_stale in [false, true] {
        let err = UnixStream::builder()
            .replace_stale(replace_stale)
            .bind(&path)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("already listening"), "{err}");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }
    // The live server's socket was not touched: it still accepts.
    let _client = connect(&path);
    drop(first);

    let dpath = dir.path().join("live-dgram.sock");
    let _first = UnixDatagram::bind(&dpath).unwrap();
    let err = UnixDatagram::builder()
        .replace_stale(true)
        .bind(&dpath)
        .unwrap_err();
    assert!(err.to_string().contains("already listening"), "{err}");
    assert!(is_socket(&dpath));
}

#[test]
fn a_stale_socket_is_replaced_only_when_opted_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap()); // std leaves the file behind: a crashed server's socket
    assert!(is_socket(&path));
    // A second link keeps the old inode alive, so its number cannot be reused by the new socket.
    fs::hard_link(&path, dir.path().join("stale.keep")).unwrap();
    let ino = fs::metadata(&path).unwrap().ino();

    let err = UnixStream::bind(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("stale"), "{err}");
    assert!(err.to_string().contains("replace_stale"), "{err}");
    assert_eq!(
        fs::metadata(&path).unwrap().ino(),
        ino,
        "refused, yet the file was touched"
    );

    let server = UnixStream::builder()
        .replace_stale(true)
        .bind(&path)
        .unwrap();
    assert_ne!(
        fs::metadata(&path).unwrap().ino(),
        ino,
        "the stale file was not replaced"
    );
    let running = Running::start(Server::new(Sequential::new(), server, echo).unwrap());
    assert_eq!(round_trip(connect(&path), b"fresh"), b"fresh");
    running.stop();

    let dpath = dir.path().join("stale-dgram.sock");
    drop(StdDatagram::bind(&dpath).unwrap());
    assert!(
        UnixDatagram::bind(&dpath)
            .unwrap_err()
            .to_string()
            .contains("stale")
    );
    let _d = UnixDatagram::builder()
        .replace_stale(true)
        .bind(&dpath)
        .unwrap();
}

#[test]
fn a_path_that_is_not_a_socket_is_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious.txt");
    fs::write(&path, "keep me").unwrap();
    for replace_stale in [false, true] {
        let err = UnixStream::builder()
            .replace_stale(replace_stale)
            .bind(&path)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("not a socket"), "{err}");
        let err = UnixDatagram::builder()
            .replace_stale(replace_stale)
            .bind(&path)
            .unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn closing_leaves_a_path_someone_else_took_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("taken.sock");
    let ours = UnixStream::bind(&path).unwrap();
    assert!(ours.owns_path());
    // Another server removes our file and binds its own socket there.
    fs::remove_file(&path).unwrap();
    let theirs = UnixListener::bind(&path).unwrap();
    drop(ours);
    assert!(
        is_socket(&path),
        "closing removed a socket that was not ours"
    );
    let _client = connect(&path); // and it is theirs that answers
    drop(theirs);
}

#[test]
fn existing_listeners_do_not_own_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("given.sock");
    let unix = UnixStream::from_listener(UnixListener::bind(&path).unwrap()).unwrap();
    assert!(!unix.owns_path());
    drop(unix);
    assert!(
        path.exists(),
        "a path this transport did not create was removed"
    );
}

#[test]
fn the_mode_is_applied_before_anyone_can_connect() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o600, 0o660, 0o666] {
        let path = dir.path().join(format!("mode-{mode:o}.sock"));
        let unix = UnixStream::builder().mode(mode).bind(&path).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, mode, "mode {mode:o}");
        drop(unix);
        let dpath = dir.path().join(format!("dmode-{mode:o}.sock"));
        let _d = UnixDatagram::builder().mode(mode).bind(&dpath).unwrap();
        assert_eq!(
            fs::metadata(&dpath).unwrap().permissions().mode() & 0o777,
            mode
        );
    }
    let err = UnixStream::builder()
        .mode(0o600)
        .bind_abstract(abstract_name("mode"))
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_path_too_long_is_a_clear_error() {
    let long = format!("/tmp/{}", "x".repeat(200));
    let err = UnixStream::bind(&long).unwrap_err();
    assert!(err.to_string().contains("at most 107 bytes"), "{err}");
}

// ---- abstract addresses ----

#[test]
fn abstract_addresses_work() {
    let name = abstract_name("stream");
    let server = Server::new(
        Threading::new(),
        UnixStream::bind_abstract(&name).unwrap(),
        echo,
    )
    .unwrap();
    assert_eq!(server.local_addr().to_string(), format!("@{name}"));
    let running = Running::start(server);
    let addr = SocketAddr::from_abstract_name(&name).unwrap();
    let client = StdStream::connect_addr(&addr).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(client, b"no file at all"), b"no file at all");
    running.stop();
    // The name is free again once the server closed.
    drop(UnixStream::bind_abstract(&name).unwrap());

    let dname = abstract_name("dgram");
    let server = Server::new(
        Sequential::new(),
        UnixDatagram::bind_abstract(&dname).unwrap(),
        echo_dgram,
    )
    .unwrap();
    let running = Running::start(server);
    let client_name = abstract_name("dgram-client");
    let client =
        StdDatagram::bind_addr(&SocketAddr::from_abstract_name(&client_name).unwrap()).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client
        .send_to_addr(
            b"abstract",
            &SocketAddr::from_abstract_name(&dname).unwrap(),
        )
        .unwrap();
    let mut buf = [0; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abstract");
    assert_eq!(from.as_abstract_name(), Some(dname.as_bytes()));
    running.stop();
}

#[test]
fn the_echo_example_binds_abstract_addresses() {
    let name = abstract_name("example");
    let at = format!("@{name}");
    let mut server = ServerProc::example(
        "echo",
        &[
            "--transport",
            "unix",
            "--addr",
            &at,
            "--concurrency",
            "forking",
        ],
    );
    assert_eq!(server.addr, at, "`listening on` prints the abstract name");
    let client = StdStream::connect_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(client, b"@"), b"@");
    assert_eq!(server.terminate().code(), Some(0));
}

// ---- datagram peers ----

#[test]
fn an_unbound_datagram_sender_is_reported_not_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.sock");
    let (tx, rx) = mpsc::channel::<(String, String)>();
    let tx = parking_lot::Mutex::new(tx);
    let server = Server::new(
        Threading::new(),
        UnixDatagram::bind(&path).unwrap(),
        echo_dgram,
    )
    .unwrap()
    .handle_error(move |peer: Option<&Addr>, err: &RequestError| {
        let kind = match err {
            RequestError::Reply(_) => "reply",
            _ => "other",
        };
        let _ = tx
            .lock()
            .send((format!("{kind}: {err}"), format!("{peer:?}")));
    });
    let running = Running::start(server);

    let unbound = StdDatagram::unbound().unwrap();
    unbound.send_to(b"who am i", &path).unwrap();
    let (err, peer) = rx
        .recv_timeout(TIMEOUT)
        .expect("the error hook was not called");
    assert!(err.starts_with("reply: "), "{err}");
    assert!(err.contains("unbound"), "{err}");
    assert!(peer.contains("(unnamed)"), "{peer}");

    // The server is still serving, and bound clients still get replies.
    let client = dgram_client(dir.path(), "bound.sock");
    assert_eq!(dgram_round_trip(&client, &path, b"after"), b"after");
    running.stop();
    assert!(rx.try_recv().is_err(), "a second error was reported");
}

#[test]
fn an_oversized_datagram_is_reported_with_its_real_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.sock");
    let (tx, rx) = mpsc::channel::<String>();
    let tx = parking_lot::Mutex::new(tx);
    let transport = UnixDatagram::builder()
        .max_packet_size(16)
        .bind(&path)
        .unwrap();
    let server = Server::new(Sequential::new(), transport, echo_dgram)
        .unwrap()
        .handle_error(move |_: Option<&Addr>, err: &RequestError| {
            let _ = tx.lock().send(err.to_string());
        });
    let running = Running::start(server);
    let client = dgram_client(dir.path(), "c.sock");
    client.send_to(&[7; 100], &path).unwrap();
    let err = rx.recv_timeout(TIMEOUT).expect("no report");
    assert!(
        err.contains("100 bytes") && err.contains("16-byte"),
        "{err}"
    );
    assert_eq!(dgram_round_trip(&client, &path, b"fits"), b"fits");
    running.stop();
}

// ---- peer credentials ----

#[test]
fn handlers_see_the_peers_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cred.sock");
    let handler = |req: &mut StreamRequest| -> anyhow::Result<()> {
        let cred = req.peer_credentials()?;
        write!(req, "{} {} {}", cred.pid, cred.uid, cred.gid)?;
        Ok(())
    };
    let running = Running::start(
        Server::new(Sequential::new(), UnixStream::bind(&path).unwrap(), handler).unwrap(),
    );
    let reply = String::from_utf8(round_trip(connect(&path), b"")).unwrap();
    let expected = format!(
        "{} {} {}",
        std::process::id(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    assert_eq!(reply, expected);
    running.stop();
}
