//! Hot binary upgrade (`SIGUSR2`, the echo example): five upgrades in a row under load — connection
//! churn and persistent request/response, from threads of this test — lose nothing and reset no
//! connection, under each of
//! the six strategies (`Sequential` with churn only); the PID file names each new process; every old
//! process exits 0; systemd hears `MAINPID=`; a successor that fails (exits at once, or is never
//! ready) leaves the old process serving.
//!
//! The echo binary is copied to a directory of the test's own, and "deploying" a new version renames
//! another file over it, as a package manager does; the upgrade starts whatever the path then holds.
//! This test process is a child subreaper, so each successor — orphaned when its predecessor exits —
//! becomes its child, and every old process's exit status reaches the test.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use util::{ServerProc, TIMEOUT, connect, eventually};

/// A deployment: the program's path (renamed over to deploy), its PID file, and a notify socket.
struct Deploy {
    dir: tempfile::TempDir,
    program: PathBuf,
    pid_file: PathBuf,
}

impl Deploy {
    fn new() -> Deploy {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("echo");
        let pid_file = dir.path().join("echo.pid");
        let deploy = Deploy {
            dir,
            program,
            pid_file,
        };
        deploy.install_echo();
        deploy
    }

    /// Puts `source`'s contents at the program's path: a new file renamed over the old, so the
    /// running process's own binary is never written to.
    ///
    /// The copy is made by a `cp` process, never by this one: a file this multi-threaded test
    /// process held open for writing could be inherited, for an instant, by a child another test
    /// forks at the same time, and an `execve` of the file meanwhile fails with `ETXTBSY`.
    fn install(&self, source: &Path) {
        let staged = self.dir.path().join("echo.new");
        let status = std::process::Command::new("cp")
            .arg(source)
            .arg(&staged)
            .status()
            .unwrap();
        assert!(status.success(), "cp {}: {status}", source.display());
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&staged, &self.program).unwrap();
    }

    fn install_echo(&self) {
        self.install(&util::example_bin("echo"));
    }

    fn install_script(&self, body: &str) {
        let source = self.dir.path().join("script.sh");
        fs::write(&source, format!("#!/bin/sh\n{body}\n")).unwrap();
        self.install(&source);
    }

    fn pid(&self) -> Option<i32> {
        fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()
    }

    /// What every process of the deployment logged (at `info`).
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn start(&self, args: &[&str], env: &[(&str, &str)]) -> ServerProc {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let mut cmd = Command::new(&self.program);
        cmd.args(["--addr", "127.0.0.1:0", "--pid-file"])
            .arg(&self.pid_file)
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let server = ServerProc::start(cmd);
        assert!(
            eventually(TIMEOUT, || self.pid() == Some(server.pid())),
            "the PID file does not name the server"
        );
        server
    }
}

impl Drop for Deploy {
    /// Whatever process the PID file names is ended and reaped, however the test went.
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
}

fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
}

/// Waits (bounded) for `pid` — our child, or an orphan reparented to us — to exit; its status.
fn exit_status(pid: i32) -> WaitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).unwrap() {
            WaitStatus::StillAlive => {}
            status => return status,
        }
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Upgrades the process the PID file names; returns the successor's pid once the old one exited 0.
fn upgrade(deploy: &Deploy) -> i32 {
    let old = deploy.pid().expect("a PID file");
    kill(Pid::from_raw(old), Signal::SIGUSR2).unwrap();
    assert!(
        eventually(TIMEOUT, || deploy.pid().is_some_and(|p| p != old)),
        "the PID file still names {old}; the log:\n{}",
        deploy.log()
    );
    assert_eq!(exit_status(old), WaitStatus::Exited(Pid::from_raw(old), 0));
    deploy.pid().unwrap()
}

/// What a load thread saw.
#[derive(Debug, Default)]
struct Load {
    ok: u64,
    /// Connections the server closed between requests, reopened and the request sent again (what
    /// HTTP clients do across a server's restart).
    reconnects: u64,
    /// Requests whose reused connection was reset (or refused the write) before any byte of a reply,
    /// sent again on a new one — as HTTP clients retry a request on a reused connection. Must stay
    /// zero: a request that crosses the drain's close of an idle keep-alive connection is read and
    /// dropped while that connection lingers, so its client sees end of stream, never a reset.
    resets_retried: u64,
    errors: Vec<String>,
}

/// Runs `work` on a thread until `stop` is set; what it saw.
fn load_thread(
    stop: &Arc<AtomicBool>,
    work: impl Fn(&mut Load) + Send + 'static,
) -> util::Bounded<Load> {
    let stop = stop.clone();
    util::spawn_bounded(move || {
        let mut load = Load::default();
        while !stop.load(Ordering::Relaxed) && load.errors.len() < 10 {
            work(&mut load);
        }
        load
    })
}

/// Persistent request/response: 64 bytes out, the same back, on one connection for as long as the
/// server keeps it. When the server ends the connection before any byte of a reply — a clean close
/// (counted in `reconnects`) or, on a connection that has served before, a reset (`resets_retried`)
/// — the request is sent again on a new connection. Anything else is an error: a reply cut short or
/// wrong, a timeout, a reset of a fresh connection.
fn persistent(addr: String) -> impl Fn(&mut Load) + Send + 'static {
    // The connection, and whether it has served a request.
    let conn = std::sync::Mutex::new(None::<(std::net::TcpStream, bool)>);
    move |load: &mut Load| {
        let mut slot = conn.lock().unwrap();
        let (stream, reused) = match slot.as_mut() {
            Some((s, served)) => (s, *served),
            None => match std::net::TcpStream::connect(&addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    let (s, _) = slot.insert((s, false));
                    (s, false)
                }
                Err(e) => return load.errors.push(format!("connect: {e}")),
            },
        };
        let msg = [b'r'; 64];
        let mut back = [0u8; 64];
        let mut got = 0;
        let mut failed = stream.write_all(&msg).err();
        while failed.is_none() && got < back.len() {
            match stream.read(&mut back[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => failed = Some(e),
            }
        }
        let reset = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        };
        match (got, failed) {
            (64, None) if back == msg => {
                load.ok += 1;
                if let Some((_, served)) = slot.as_mut() {
                    *served = true;
                }
            }
            (0, None) => {
                *slot = None;
                load.reconnects += 1;
            }
            (0, Some(e)) if reused && reset(&e) => {
                *slot = None;
                load.resets_retried += 1;
            }
            (n, failed) => {
                *slot = None;
                load.errors
                    .push(format!("{n} bytes of a reply, then {failed:?}"));
            }
        }
    }
}

/// Connection churn: connect, 64 bytes out and back, close.
fn churn(addr: String) -> impl Fn(&mut Load) + Send + 'static {
    move |load: &mut Load| {
        let result = (|| -> std::io::Result<bool> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.write_all(&[b'c'; 64])?;
            let mut back = [0u8; 64];
            s.read_exact(&mut back)?;
            Ok(back == [b'c'; 64])
        })();
        match result {
            Ok(true) => load.ok += 1,
            Ok(false) => load.errors.push("an echo mismatch".into()),
            Err(e) => load.errors.push(format!("churn: {e}")),
        }
    }
}

/// Five upgrades in a row while `persistent` keep-alive clients and two churning clients run.
fn five_upgrades_under_load(concurrency: &str, sizing: &[&str], persistent_clients: usize) {
    become_subreaper();
    let deploy = Deploy::new();
    let mut args = vec![
        "--concurrency",
        concurrency,
        "--shutdown-timeout-ms",
        "10000",
    ];
    args.extend_from_slice(sizing);
    let server = deploy.start(&args, &[]);
    let addr = server.addr.clone();
    let first = server.pid();
    // Both kinds of load run through every upgrade.
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..persistent_clients)
        .map(|_| load_thread(&stop, persistent(addr.clone())))
        .chain((0..2).map(|_| load_thread(&stop, churn(addr.clone()))))
        .collect();
    let mut pids = vec![first];
    for _ in 0..5 {
        pids.push(upgrade(&deploy));
        deploy.install_echo(); // a "new build" for the next round
    }
    stop.store(true, Ordering::Relaxed);
    let loads: Vec<Load> = loads.into_iter().map(|l| l.wait(TIMEOUT)).collect();
    for load in &loads {
        assert!(load.errors.is_empty(), "{concurrency}: {load:?}");
        assert!(load.ok > 0, "{concurrency}: {load:?}");
    }
    let (kept, churned) = loads.split_at(persistent_clients);
    let requests: u64 = kept.iter().map(|l| l.ok).sum();
    let reconnects: u64 = kept.iter().map(|l| l.reconnects).sum();
    let resets: u64 = kept.iter().map(|l| l.resets_retried).sum();
    assert_eq!(resets, 0, "{concurrency}: connections reset: {kept:?}");
    let connections: u64 = churned.iter().map(|l| l.ok).sum();
    let mut unique = pids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 6, "{concurrency}: pids {pids:?}");
    // The last one serves, and stops cleanly.
    let last = *pids.last().unwrap();
    let mut conn = connect(&addr);
    conn.write_all(b"still here").unwrap();
    let mut back = [0; 10];
    conn.read_exact(&mut back).unwrap();
    drop(conn);
    kill(Pid::from_raw(last), Signal::SIGTERM).unwrap();
    assert_eq!(
        exit_status(last),
        WaitStatus::Exited(Pid::from_raw(last), 0)
    );
    assert!(
        !deploy.pid_file.exists(),
        "the last process left its PID file"
    );
    println!(
        "{concurrency}: pids {pids:?}; persistent: {requests} requests ({reconnects} reconnects, \
         {resets} retried after a reset), \
         churn: {connections} connections; no error"
    );
    drop(server); // the first process, long reaped
}

/// `Sequential` serves one connection at a time, so a keep-alive client would hold it: churn only.
#[test]
fn sequential() {
    five_upgrades_under_load("sequential", &[], 0);
}

#[test]
fn threading() {
    five_upgrades_under_load("threading", &[], 4);
}

#[test]
fn pool() {
    five_upgrades_under_load("pool", &["--workers", "16"], 4);
}

#[test]
fn forking() {
    five_upgrades_under_load("forking", &[], 4);
}

#[test]
fn prefork() {
    five_upgrades_under_load("prefork", &["--workers", "16"], 4);
}

#[test]
fn reactor() {
    five_upgrades_under_load("reactor", &[], 4);
}

#[test]
fn a_failing_successor_leaves_the_old_process_serving() {
    become_subreaper();
    let deploy = Deploy::new();
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&notify_path).unwrap();
    systemd.set_read_timeout(Some(TIMEOUT)).unwrap();
    let notify = notify_path.to_str().unwrap();
    let server = deploy.start(
        &["--upgrade-timeout-ms", "3000"],
        &[("NOTIFY_SOCKET", notify)],
    );
    let old = server.pid();
    let serves = || {
        let mut conn = connect(&server.addr);
        conn.write_all(b"ping").unwrap();
        let mut back = [0; 4];
        conn.read_exact(&mut back).unwrap();
        back == *b"ping"
    };
    let mut message = [0; 512];
    let n = systemd.recv(&mut message).unwrap();
    assert!(message[..n].starts_with(b"READY=1"));

    // A build that exits at once, then one that never gets ready (ended at the 3 s deadline; a good
    // debug build under a loaded machine may take more than 1 s to be ready).
    for (body, outcome) in [
        ("exit 3", "exited with status 3 before it was ready"),
        ("exec sleep 30", "was not ready within 3s; ended it"),
    ] {
        deploy.install_script(body);
        kill(Pid::from_raw(old), Signal::SIGUSR2).unwrap();
        assert!(
            eventually(TIMEOUT, || deploy.log().contains(outcome)),
            "{body}: {}",
            deploy.log()
        );
        // The old process serves on, still named by the PID file, with no successor left.
        assert!(serves(), "{body}");
        assert_eq!(deploy.pid(), Some(old), "{body}");
        assert!(
            util::children(old).is_empty(),
            "{body}: the successor was left running"
        );
    }
    assert!(deploy.log().contains("serving on"), "{}", deploy.log());

    // A good build goes through, and systemd hears who the main process is now.
    deploy.install_echo();
    let new = upgrade(&deploy);
    let deadline = Instant::now() + TIMEOUT;
    let mut mainpid = None;
    while mainpid.is_none() && Instant::now() < deadline {
        let n = systemd.recv(&mut message).unwrap();
        let text = String::from_utf8_lossy(&message[..n]).into_owned();
        mainpid = text
            .lines()
            .find_map(|l| l.strip_prefix("MAINPID="))
            .map(|p| p.parse::<i32>().unwrap());
    }
    assert_eq!(mainpid, Some(new));
    kill(Pid::from_raw(new), Signal::SIGTERM).unwrap();
    assert_eq!(exit_status(new), WaitStatus::Exited(Pid::from_raw(new), 0));
    drop(server);
}
