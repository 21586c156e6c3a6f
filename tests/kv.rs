//! The `kv` and `kv_state` examples over real sockets: the key-value server a new user writes,
//! checked the way the issue found it broken — 20 keys `SET` from 20 connections, each closed before
//! the next, must all be seen from another connection.
//!
//! - under `threading` and `pool` with the map in memory;
//! - under `forking` and `prefork` with the map in a `kv_state` service, as the README recommends;
//! - `--state memory` under `forking` or `prefork` is refused (exit 2, naming problem and fix);
//! - bad lines get `ERROR` and the connection goes on, from `kv` and from `kv_state` itself;
//! - the state service's socket is 0600, and its absence or loss is reported, never a hang or a crash.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;
use util::{ServerProc, TIMEOUT, connect, example_bin, run_with_input};

/// The protocol's limits, as `examples/common/kvproto.rs` documents them.
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 1024;
const MAX_LINE: usize = 4 + MAX_KEY + 1 + MAX_VALUE;

/// A client connection: one command line out, one reply line back.
struct Client<S: Read + Write> {
    conn: BufReader<S>,
}

impl Client<TcpStream> {
    fn tcp(addr: SocketAddr) -> Self {
        Client {
            conn: BufReader::new(connect(addr)),
        }
    }
}

impl Client<UnixStream> {
    fn unix(path: &Path) -> Self {
        let s = UnixStream::connect(path).expect("connect to kv_state");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client {
            conn: BufReader::new(s),
        }
    }
}

impl<S: Read + Write> Client<S> {
    fn send(&mut self, bytes: &[u8]) {
        self.conn.get_mut().write_all(bytes).expect("send");
    }

    /// The next reply line, without its `\n`; fails the test if the server closed instead.
    #[track_caller]
    fn reply(&mut self) -> String {
        let mut line = String::new();
        let n = self.conn.read_line(&mut line).expect("read a reply");
        assert!(
            n > 0,
            "the server closed the connection instead of replying"
        );
        assert!(line.ends_with('\n'), "unterminated reply {line:?}");
        line.pop();
        line
    }

    #[track_caller]
    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.reply()
    }

    /// `QUIT` gets `BYE`, then the server closes the connection.
    #[track_caller]
    fn quit(mut self) {
        assert_eq!(self.cmd("QUIT"), "BYE");
        let mut rest = Vec::new();
        self.conn.read_to_end(&mut rest).expect("read to the end");
        assert!(rest.is_empty(), "after BYE: {rest:?}");
    }
}

/// The issue's check, for a kv server at `addr`: 20 keys `SET` from 20 connections (each quit before
/// the next opens, so under forking each one's child has exited) are all seen from another
/// connection; `DEL` and overwrites are seen across connections too.
fn twenty_keys_are_shared(addr: SocketAddr) {
    for i in 0..20 {
        let mut c = Client::tcp(addr);
        assert_eq!(c.cmd(&format!("SET key{i} value {i}, with spaces")), "OK");
        c.quit();
    }
    let mut reader = Client::tcp(addr);
    let missing: Vec<(usize, String)> = (0..20)
        .map(|i| (i, reader.cmd(&format!("GET key{i}"))))
        .filter(|(i, reply)| *reply != format!("VALUE value {i}, with spaces"))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of 20 keys were not seen from another connection: {missing:?}",
        missing.len()
    );
    assert_eq!(reader.cmd("GET never-set"), "NONE");
    assert_eq!(reader.cmd("DEL key0"), "DELETED");
    assert_eq!(reader.cmd("DEL key0"), "NONE");
    assert_eq!(reader.cmd("GET key0"), "NONE");

    let mut other = Client::tcp(addr);
    assert_eq!(
        other.cmd("GET key0"),
        "NONE",
        "a DEL seen from another connection"
    );
    assert_eq!(other.cmd("DEL key1"), "DELETED");
    assert_eq!(other.cmd("SET key2 changed"), "OK");
    assert_eq!(
        reader.cmd("GET key1"),
        "NONE",
        "a DEL seen from another connection"
    );
    assert_eq!(
        reader.cmd("GET key2"),
        "VALUE changed",
        "an overwrite seen elsewhere"
    );
    assert_eq!(reader.cmd("GET key19"), "VALUE value 19, with spaces");
    other.quit();
    reader.quit();
}

/// Starts `kv` with `args` on a free loopback port (errors only in the log).
fn kv(args: &[&str]) -> ServerProc {
    let mut all = vec!["--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    ServerProc::example("kv", &all)
}

/// A `kv_state` service on a socket in its own temporary directory.
struct StateService {
    proc: ServerProc,
    path: PathBuf,
    _dir: TempDir,
}

impl StateService {
    fn start() -> StateService {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.sock");
        let proc = ServerProc::example("kv_state", &["--path", path.to_str().expect("UTF-8 path")]);
        assert_eq!(Path::new(&proc.addr), path, "`listening on <path>`");
        StateService {
            proc,
            path,
            _dir: dir,
        }
    }

    /// `--state unix:<path>`.
    fn flag(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

/// Stops a server gracefully, as Ctrl-C would, and checks it exits 0.
#[track_caller]
fn stop(server: &mut ServerProc) {
    let status = server.terminate();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[test]
fn threading_with_memory_state_shares_every_key() {
    let mut server = kv(&["--concurrency", "threading"]);
    twenty_keys_are_shared(server.socket_addr());
    stop(&mut server);
}

#[test]
fn pool_with_memory_state_shares_every_key() {
    let mut server = kv(&["--concurrency", "pool", "--workers", "4"]);
    twenty_keys_are_shared(server.socket_addr());
    stop(&mut server);
}

#[test]
fn forking_with_a_state_service_shares_every_key() {
    let mut state = StateService::start();
    let mode = std::fs::metadata(&state.path).expect("socket file");
    assert!(mode.file_type().is_socket());
    assert_eq!(
        mode.permissions().mode() & 0o777,
        0o600,
        "kv_state's socket mode"
    );

    let mut server = kv(&["--concurrency", "forking", "--state", &state.flag()]);
    twenty_keys_are_shared(server.socket_addr());
    stop(&mut server);

    // The keys outlive the kv server: they were never in it.
    let mut again = kv(&["--concurrency", "forking", "--state", &state.flag()]);
    let mut c = Client::tcp(again.socket_addr());
    assert_eq!(c.cmd("GET key3"), "VALUE value 3, with spaces");
    c.quit();
    stop(&mut again);

    stop(&mut state.proc);
    assert!(!state.path.exists(), "kv_state removes its socket on exit");
}

#[test]
fn prefork_with_a_state_service_shares_every_key() {
    let mut state = StateService::start();
    // Three workers, each replaced after 4 connections: the 20 SETs are served by at least five
    // different processes, however the kernel spreads connections over the workers.
    let mut server = kv(&[
        "--concurrency",
        "prefork",
        "--workers",
        "3",
        "--max-requests",
        "4",
        "--state",
        &state.flag(),
    ]);
    twenty_keys_are_shared(server.socket_addr());
    stop(&mut server);
    stop(&mut state.proc);
}

/// Runs `kv` with `args`, which must make it exit at once (no server to stop).
fn kv_exits(args: &[&str]) -> Output {
    let mut cmd = Command::new(example_bin("kv"));
    cmd.args(["--addr", "127.0.0.1:0"]).args(args);
    run_with_input(cmd, b"", TIMEOUT)
}

#[test]
fn memory_state_is_refused_under_forking_and_prefork() {
    for (strategy, args) in [
        ("forking", &["--concurrency", "forking"][..]), // --state memory is the default
        (
            "forking",
            &["--concurrency", "forking", "--state", "memory"][..],
        ),
        (
            "prefork",
            &["--concurrency", "prefork", "--state", "memory"][..],
        ),
    ] {
        let out = kv_exits(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{args:?} must not start serving: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The problem: which combination, and that memory is copied per process.
        for needle in [
            "--state memory",
            &format!("--concurrency {strategy}"),
            "own copy",
        ] {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
        // The fix: the state service, or a strategy whose requests share memory.
        for needle in ["kv_state --path", "--state unix:", "threading"] {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
    }
}

#[test]
fn an_absent_state_service_is_reported_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nobody.sock");
    let flag = format!("unix:{}", path.display());
    let out = kv_exits(&["--concurrency", "forking", "--state", &flag]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("cannot reach the state service") && stderr.contains("kv_state --path"),
        "{stderr}"
    );
}

#[test]
fn a_lost_state_service_gets_error_replies_not_a_dead_connection() {
    let mut state = StateService::start();
    let mut server = kv(&["--concurrency", "forking", "--state", &state.flag()]);
    let mut c = Client::tcp(server.socket_addr());
    assert_eq!(c.cmd("SET a 1"), "OK");

    stop(&mut state.proc);
    let reply = c.cmd("GET a");
    assert!(reply.starts_with("ERROR "), "{reply:?}");
    assert!(reply.contains("state service"), "{reply:?}");

    // A new service at the same path: the same client connection works again (each command opens
    // its own connection to the service). Its map starts empty: kv_state keeps it in memory only.
    let path = state.path.to_str().expect("UTF-8 path").to_string();
    let _restarted = ServerProc::example("kv_state", &["--path", &path]);
    assert_eq!(c.cmd("GET a"), "NONE");
    assert_eq!(c.cmd("SET a 2"), "OK");
    assert_eq!(c.cmd("GET a"), "VALUE 2");
    c.quit();
    stop(&mut server);
}

/// Sends every kind of bad line on one connection: each gets exactly one `ERROR` reply, nothing is
/// stored, and the connection goes on serving.
fn bad_lines_get_errors<S: Read + Write>(c: &mut Client<S>) {
    let long_key = "k".repeat(MAX_KEY + 1);
    let long_value = "v".repeat(MAX_VALUE + 1);
    let bad: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"HELLO".to_vec(),
        b"SET".to_vec(),
        b"SET lonely".to_vec(),
        b"SET empty ".to_vec(),
        b"SET  doublespace v".to_vec(),
        b"GET".to_vec(),
        b"GET two keys".to_vec(),
        b"DEL".to_vec(),
        b"QUIT now".to_vec(), // an argument: an error, not a QUIT
        format!("SET {long_key} v").into_bytes(),
        format!("GET {long_key}").into_bytes(),
        format!("SET big {long_value}").into_bytes(),
        b"SET bin \xff\xfe".to_vec(),    // not UTF-8
        b"SET bell a\x07b".to_vec(),     // a control character
        b"SET cr a\rb".to_vec(),         // a lone \r inside the line
        b"SET esc \x1b[31mred".to_vec(), // a terminal escape
        vec![b'x'; 10 * MAX_LINE],       // far over the line limit
        vec![b'y'; MAX_LINE + 1],        // one byte over it
    ];
    for line in &bad {
        c.send(line);
        c.send(b"\n");
        let reply = c.reply();
        let shown = String::from_utf8_lossy(&line[..line.len().min(40)]);
        assert!(reply.starts_with("ERROR "), "{shown:?} got {reply:?}");
        assert!(
            reply.len() < 200,
            "{shown:?}: a short reason, not an echo: {reply:?}"
        );
    }
    // An over-long line sent in pieces, with \r\n: still one error, and the next line is read whole.
    c.send(b"SET split ");
    c.send(&vec![b'z'; MAX_LINE]);
    c.send(b"\r\nGET split\r\n");
    assert!(c.reply().starts_with("ERROR "));
    assert_eq!(c.reply(), "NONE", "the over-long SET stored nothing");

    // Nothing from the bad lines was stored, and the connection still works.
    for key in ["lonely", "empty", "big", "bin", "bell", "cr", "esc"] {
        assert_eq!(c.cmd(&format!("GET {key}")), "NONE", "{key}");
    }
    // The limits themselves are accepted; commands are case-insensitive; \r\n ends a line too;
    // commands may be pipelined, replies come back in order.
    let key = "K".repeat(MAX_KEY);
    let value = "V".repeat(MAX_VALUE);
    assert_eq!(c.cmd(&format!("SET {key} {value}")), "OK");
    assert_eq!(c.cmd(&format!("get {key}")), format!("VALUE {value}"));
    c.send(b"set x 1\r\nGET x\r\nDel x\nGET x\n");
    let replies: Vec<String> = (0..4).map(|_| c.reply()).collect();
    assert_eq!(replies, ["OK", "VALUE 1", "DELETED", "NONE"]);
}

#[test]
fn protocol_errors_keep_the_connection_usable() {
    let mut server = kv(&[]);
    let mut c = Client::tcp(server.socket_addr());
    bad_lines_get_errors(&mut c);
    c.quit();
    stop(&mut server);
}

#[test]
fn protocol_errors_keep_the_connection_usable_through_a_state_service() {
    let mut state = StateService::start();
    // The service itself: it faces every local process of this user, so it checks lines as strictly.
    let mut direct = Client::unix(&state.path);
    bad_lines_get_errors(&mut direct);
    direct.quit();

    let mut server = kv(&[
        "--concurrency",
        "prefork",
        "--workers",
        "2",
        "--state",
        &state.flag(),
    ]);
    let mut c = Client::tcp(server.socket_addr());
    bad_lines_get_errors(&mut c);
    c.quit();
    stop(&mut server);
    stop(&mut state.proc);
}
