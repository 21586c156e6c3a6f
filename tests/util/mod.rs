//! Helpers shared by the integration tests: launching example binaries and reading their
//! `listening on` line, bounded waiting, and counting a process's descriptors and zombie children.
#![allow(dead_code)] // each test crate uses a different subset

pub mod haproxy;
pub mod runner;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any single wait in a test may take before the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The path of an example binary built by `cargo test` (which builds the examples too).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds examples)",
        path.display()
    );
    path
}

/// A server process started by a test: killed and reaped when dropped, whatever happened.
pub struct ServerProc {
    pub child: Child,
    /// The address from its first stdout line, `listening on <addr>`.
    pub addr: String,
    lines: mpsc::Receiver<String>,
}

impl ServerProc {
    /// Starts `cmd` and waits (bounded) for its `listening on <addr>` line.
    pub fn start(mut cmd: Command) -> ServerProc {
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = forward_lines(stdout);
        let first = match lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("{cmd:?} printed no first line within {TIMEOUT:?} (status {status:?})");
            }
        };
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {first:?}, not `listening on <addr>`"))
            .to_string();
        ServerProc { child, addr, lines }
    }

    /// Starts an example binary with `args` (logging warnings and errors only, unless `RUST_LOG` says
    /// otherwise).
    pub fn example(name: &str, args: &[&str]) -> ServerProc {
        let mut cmd = Command::new(example_bin(name));
        cmd.args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        ServerProc::start(cmd)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
            .parse()
            .unwrap_or_else(|e| panic!("{:?} is not an inet address: {e}", self.addr))
    }

    /// The next stdout line after the first, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends `sig` and waits (bounded) for the process to exit.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, sig).expect("kill");
        self.wait_exit(TIMEOUT)
            .unwrap_or_else(|| panic!("server did not exit within {TIMEOUT:?} of {sig}"))
    }

    /// SIGTERM, then wait.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Forwards a child's stdout lines to a channel, so reads can time out.
fn forward_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Connects with read/write timeouts set, so a broken server fails the test instead of hanging it.
pub fn connect(addr: impl std::net::ToSocketAddrs) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Connects from `local_ip` (any port) — 127.0.0.2, say, so the server can tell this client from others
/// on loopback — with the same timeouts as [`connect`].
pub fn connect_from(local_ip: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{self as nsock, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("connect_from: {to} is not IPv4")
    };
    let fd = nsock::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    let local = std::net::SocketAddrV4::new(local_ip, 0);
    nsock::bind(fd.as_raw_fd(), &SockaddrIn::from(local)).expect("bind");
    nsock::connect(fd.as_raw_fd(), &SockaddrIn::from(to)).expect("connect");
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Sends `msg`, half-closes, and reads the whole reply.
pub fn round_trip(addr: impl std::net::ToSocketAddrs, msg: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(msg).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    reply
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes; returns whether it held.
/// For conditions with no event to wait on (a /proc count settling), never to wait for a server.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Connections waiting in the accept queue of the IPv4 loopback listener on `port` (`/proc/net/tcp`
/// shows a listener's accept backlog as its `rx_queue`), or `None` if no such listener exists: the
/// kernel's side of "has the server accepted this connection yet", which needs no timing to read.
pub fn accept_queue(port: u16) -> Option<usize> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
        if *addr != local || *state != "0A" {
            return None;
        }
        usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}

/// Bytes the server has not yet read on the loopback connection whose client side is `client`: the
/// `rx_queue` of the server's end in `/proc/net/tcp` (`None` if the connection is not there). Zero
/// once the server's handler has taken everything the client sent — the kernel's side of "the
/// request has reached the handler", which needs no timing to read.
#[allow(dead_code)] // not every test binary needs it
pub fn unread_by_server(client: &TcpStream) -> Option<usize> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => {
            let ip = u32::from_le_bytes(v4.ip().octets());
            Some(format!("{ip:08X}:{:04X}", v4.port()))
        }
        SocketAddr::V6(_) => None,
    };
    let server_end = hex(client.peer_addr().ok()?)?;
    let client_end = hex(client.local_addr().ok()?)?;
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        if *local != server_end || *remote != client_end {
            return None;
        }
        usize::from_str_radix(queues.split(':').nth(1)?, 16).ok()
    })
}

/// Asserts that `holds` keeps holding for `window`, checking it every few milliseconds and failing
/// as soon as it does not. For a server that must *not* act (a capped server leaving a connection in
/// the backlog), where no event marks the end of the wait: the check is of the server's own state
/// (handlers started, connections accepted), so a server that acted at all within the window fails,
/// however slowly it would have answered.
#[track_caller]
pub fn holds_for(window: Duration, what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + window;
    loop {
        assert!(holds(), "{what}");
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many descriptors process `pid` has open.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The pids of `pid`'s children that are zombies (exited, not reaped).
pub fn zombie_children(pid: i32) -> Vec<i32> {
    children_where(pid, |state| state == "Z")
}

/// The pids of `pid`'s children stopped by a job-control signal (state `T`).
#[allow(dead_code)] // not every test binary stops processes
pub fn stopped_children(pid: i32) -> Vec<i32> {
    children_where(pid, |state| state == "T")
}

/// The pids of all of `pid`'s living or zombie children.
pub fn children(pid: i32) -> Vec<i32> {
    children_where(pid, |_| true)
}

fn children_where(pid: i32, keep: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if ppid.parse::<i32>() == Ok(pid) && keep(state) {
            out.push(child);
        }
    }
    out
}

/// A thread whose result is awaited with a time limit: a test waiting for it fails when the limit
/// passes instead of hanging (a `JoinHandle::join` has no limit, so a server that ignored its drain
/// deadline would stall the whole run until CI's own limit).
pub struct Bounded<T> {
    result: mpsc::Receiver<std::thread::Result<T>>,
}

/// Runs `f` on a new thread, its result (or panic) awaited through [`Bounded::wait`].
pub fn spawn_bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Bounded<T> {
    let (tx, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    Bounded { result }
}

impl<T> Bounded<T> {
    /// The thread's result, if it finishes within `limit`; its panic is passed on. Past the limit the
    /// test fails and the thread is left behind (the test process ends it when it exits).
    #[track_caller]
    pub fn wait(self, limit: Duration) -> T {
        match self.result.recv_timeout(limit) {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("the thread did not finish within {limit:?}"),
        }
    }

    /// Waits up to `limit` without failing: for clean-up, which must not hang or panic itself.
    pub fn wait_quietly(self, limit: Duration) {
        let _ = self.result.recv_timeout(limit);
    }
}

/// Starts `server.serve_forever()` on a new thread; wait for its summary with [`Bounded::wait`].
pub fn serve_bounded<C, T, H>(
    mut server: socketserver::Server<C, T, H>,
) -> Bounded<std::io::Result<socketserver::ServeSummary>>
where
    C: socketserver::Concurrency<T, H>,
    T: socketserver::Transport,
    socketserver::Server<C, T, H>: Send + 'static,
{
    spawn_bounded(move || server.serve_forever())
}

/// A server serving on a thread of this process; asked to stop, and waited for (bounded), when
/// dropped.
pub struct Serving {
    pub addr: SocketAddr,
    pub stop: socketserver::ShutdownHandle,
    thread: Option<Bounded<std::io::Result<socketserver::ServeSummary>>>,
}

impl Serving {
    /// Starts `server.serve_forever()` on a new thread.
    pub fn start<C, T, H>(server: socketserver::Server<C, T, H>) -> Serving
    where
        C: socketserver::Concurrency<T, H>,
        T: socketserver::Transport,
        socketserver::Server<C, T, H>: Send + 'static,
    {
        let addr = server.local_addr().as_inet().expect("an inet server");
        let stop = server.shutdown_handle();
        let thread = Some(serve_bounded(server));
        Serving { addr, stop, thread }
    }

    /// Asks for shutdown and returns what the server reports (failing after [`TIMEOUT`]).
    #[track_caller]
    pub fn finish(mut self) -> socketserver::ServeSummary {
        self.stop.shutdown();
        self.join()
    }

    /// Waits (up to [`TIMEOUT`]) for `serve_forever` to return: by itself (a handler asked for
    /// shutdown), or after [`Serving::finish`] or `stop` asked.
    #[track_caller]
    pub fn join(&mut self) -> socketserver::ServeSummary {
        self.join_within(TIMEOUT)
    }

    /// As [`Serving::join`], failing the test if `serve_forever` has not returned within `limit`.
    #[track_caller]
    pub fn join_within(&mut self, limit: Duration) -> socketserver::ServeSummary {
        let thread = self.thread.take().expect("joined once");
        thread.wait(limit).expect("serve_forever failed")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.thread.take() {
            // Bounded, and silent: this also runs while a failing test unwinds.
            t.wait_quietly(TIMEOUT);
        }
    }
}

/// One failure reported to a server's error hook.
#[derive(Debug, Clone)]
pub struct Reported {
    /// The peer, or "" for failures without one.
    pub peer: String,
    pub message: String,
    pub timeout: bool,
}

/// Where an error hook made by [`recorder`] puts what it is given.
pub type Reports = std::sync::Arc<std::sync::Mutex<Vec<Reported>>>;

/// An error hook that records every report, and the record.
pub fn recorder() -> (
    Reports,
    impl Fn(Option<&socketserver::Addr>, &socketserver::RequestError) + Send + Sync + 'static,
) {
    let reports = Reports::default();
    let seen = reports.clone();
    let hook = move |peer: Option<&socketserver::Addr>, err: &socketserver::RequestError| {
        seen.lock().unwrap().push(Reported {
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            message: err.to_string(),
            timeout: err.is_timeout(),
        });
    };
    (reports, hook)
}

/// The report for the client whose local address is `client`, if there is one yet.
pub fn report_for(reports: &Reports, client: &TcpStream) -> Option<Reported> {
    let me = client.local_addr().unwrap().to_string();
    reports
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.peer == me)
        .cloned()
}

/// Runs `cmd` to completion with `input` on its stdin, bounded by `timeout` (killed and reaped
/// past it, failing the test), and returns its output: for driving client programs.
pub fn run_with_input(mut cmd: Command, input: &[u8], timeout: Duration) -> std::process::Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // A separate writer, so a child that does not read its input cannot block the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout) {
        Ok(output) => output.expect("wait_with_output"),
        Err(_) => {
            // The waiting thread owns the child and reaps it once killed.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    };
    let _ = writer.join();
    output
}

/// Reads one HTTP/1.1 response with a `Content-Length` body from `conn`: its status line and body.
/// Panics (failing the test) on a malformed or cut-off response.
#[allow(dead_code)] // not every test binary speaks HTTP
pub fn read_http_response(conn: &mut impl std::io::BufRead) -> (String, Vec<u8>) {
    let mut status = String::new();
    conn.read_line(&mut status).expect("a status line");
    assert!(status.starts_with("HTTP/1."), "not a response: {status:?}");
    let mut length = 0;
    for _ in 0..100 {
        let mut header = String::new();
        conn.read_line(&mut header).expect("a header line");
        if header == "\r\n" {
            let mut body = vec![0; length];
            conn.read_exact(&mut body).expect("the whole body");
            return (status.trim_end().to_string(), body);
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a Content-Length");
        }
    }
    panic!("more than 100 header lines");
}

/// A keep-alive HTTP client of `server` that has made one `GET /` and read its `hello` response, its
/// connection left open (reads time out after [`TIMEOUT`]).
#[allow(dead_code)] // not every test binary speaks HTTP
pub fn http_keep_alive_client(server: &ServerProc) -> BufReader<TcpStream> {
    let conn = connect(server.socket_addr());
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut conn = BufReader::new(conn);
    conn.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_http_response(&mut conn).1, b"hello\n");
    conn
}

/// A `Reactor` handler that sends every chunk back as it came: the buffer it was read into, queued
/// itself (`send_vec`), so a chunk crosses the loop without a copy.
pub struct PassThrough;

impl socketserver::reactor::MessageHandler for PassThrough {
    type Codec = socketserver::framing::RawBytes;
    fn codec(&self) -> Self::Codec {
        socketserver::framing::RawBytes
    }
    fn on_message(
        &self,
        conn: &mut socketserver::reactor::Conn<'_, Self::Codec>,
        bytes: Vec<u8>,
    ) -> anyhow::Result<()> {
        conn.send_vec(bytes)?;
        Ok(())
    }
}
