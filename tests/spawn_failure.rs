//! A worker that cannot be started — the threads of `Threading` under an address-space limit
//! (`RLIMIT_AS`, which binds root too, unlike `RLIMIT_NPROC`) — closes its connection at once, leaves
//! nothing behind, is reported as a spawn failure (not an accept failure), and makes the server back
//! off; once threads can be made again, the server serves again. The server is the echo example, in
//! its own process, limited with `prlimit(1)`.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use util::{ServerProc, TIMEOUT, connect, eventually, fd_count};

const CLIENTS: usize = 12;

/// The process's address-space size, from `/proc/PID/status`.
fn vm_size_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmSize");
    kib * 1024
}

/// Sends one byte; `true` if it came back (served), `false` if the server closed the connection.
/// A connection that gets neither within the time limit fails the test: that is the leak.
fn served(client: &mut TcpStream) -> bool {
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    if client.write_all(b"x").is_err() {
        return false;
    }
    let mut buf = [0; 1];
    match client.read(&mut buf) {
        Ok(1) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
        Err(e) => panic!("neither an echo nor a close: {e}"),
    }
}

#[test]
fn a_thread_that_cannot_start_closes_its_connection_and_leaks_nothing() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(util::example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", "threading"])
        .env("RUST_LOG", "warn")
        .stderr(log.reopen().unwrap());
    let mut server = ServerProc::start(cmd);
    let pid = server.pid();
    let addr = server.socket_addr();
    // One connection first (what the server creates once, on its first request, is not a leak),
    // kept open: the server then holds its descriptors plus this one connection.
    let mut first = connect(addr);
    assert!(served(&mut first));
    let fds_before = fd_count(pid) - 1;

    // Room for a few more thread stacks (2 MiB each), not for twelve.
    let limit = vm_size_bytes(pid) + 12 * 1024 * 1024;
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--as={limit}:{limit}")])
        .status()
        .expect("prlimit(1)");
    assert!(status.success(), "prlimit failed: {status}");

    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let outcomes: Vec<bool> = clients.iter_mut().map(served).collect();
    let served_count = outcomes.iter().filter(|&&s| s).count();
    let log_text = || std::fs::read_to_string(log.path()).unwrap();
    assert!(
        served_count > 0,
        "nothing served under the limit: {}",
        log_text()
    );
    assert!(
        served_count < CLIENTS,
        "every connection got a thread: the limit did not bind (log: {})",
        log_text()
    );
    let text = log_text();
    assert!(
        text.contains("starting a worker for the request failed: spawning a request thread"),
        "{text}"
    );
    assert!(!text.contains("accept failed"), "mislabelled: {text}");

    // Every client closes: the server holds exactly what it held before — no connection, no table
    // entry left by the failed spawns.
    drop((clients, first));
    assert!(
        eventually(TIMEOUT, || fd_count(pid) == fds_before),
        "descriptors: {} before, {} after",
        fds_before,
        fd_count(pid)
    );

    // The idle threads exit (after `thread_idle_timeout`) and give their memory back: the server
    // serves again, after its back-off.
    assert!(
        eventually(Duration::from_secs(30), || {
            let mut again = connect(addr);
            served(&mut again)
        }),
        "the server did not recover: {}",
        log_text()
    );
    assert_eq!(server.terminate().code(), Some(0));
}
