//! Descriptor exhaustion: a server under a low `RLIMIT_NOFILE` (set in its own process) runs out of
//! descriptors while clients hold connections. It must back off rather than spin on the always-readable
//! listener, and serve again once descriptors are freed.

mod util;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{ServerProc, TIMEOUT, connect, eventually, example_bin, round_trip};

/// User plus system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After "pid (comm)": state is field 0, utime is field 11, stime field 12.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64
}

/// How the echo example's log reports an accept (`accept(2)`, or for `Forking` the `pidfd_open(2)`
/// that goes with it) failed for want of descriptors.
const EMFILE_REPORT: &str = "Too many open files (os error 24)";

/// Runs the echo example with `concurrency` (and `extra` flags) under a low `RLIMIT_NOFILE`, holds more
/// connections than the limit, and checks that the server backs off rather than spin, that it did run
/// out of descriptors if `fills_the_table` (so the back-off, not luck, is what was tested), and that
/// every held client, and a new one, is served once the descriptors are freed.
fn backs_off_and_recovers(concurrency: &str, extra: &[&str], fills_the_table: bool) {
    const LIMIT: u64 = 48;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", concurrency]);
    cmd.args(extra);
    // Errors only: the failed accepts, which say that the limit was reached.
    cmd.env("RUST_LOG", "error");
    cmd.stderr(log.reopen().unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = ServerProc::start(cmd);

    // Hold more connections than the server has descriptors: a strategy that keeps a descriptor per
    // connection accepts until EMFILE, and the rest wait in the listen backlog while it backs off.
    let mut held = Vec::new();
    for i in 0..(LIMIT as usize + 20) {
        let mut c = connect(&server.addr);
        c.write_all(format!("{i}\n").as_bytes()).unwrap();
        held.push(c);
    }
    if fills_the_table {
        // The table is full once accepting has failed, which the server reports at once (while the
        // connections are held): from then on the loop must be backing off.
        assert!(
            eventually(TIMEOUT, || std::fs::read_to_string(log.path())
                .unwrap()
                .contains(EMFILE_REPORT)),
            "{concurrency}: no report of running out of descriptors while {} connections were \
             held: the back-off went untested, or the loop is stuck; its log: {}",
            held.len(),
            std::fs::read_to_string(log.path()).unwrap()
        );
    }
    let window = Duration::from_secs(1);
    let before = cpu_ticks(server.pid());
    let started = Instant::now();
    std::thread::sleep(window); // measuring CPU use over a wall-clock window, not waiting for readiness
    let used = cpu_ticks(server.pid()) - before;
    let elapsed = started.elapsed();
    // A spinning accept loop burns the whole window (~100 ticks); backing off uses a few.
    let budget = ticks_per_second() * elapsed.as_millis() as u64 / 1000 / 5;
    assert!(
        used <= budget,
        "{concurrency}: server used {used} ticks of CPU in {elapsed:?} while out of descriptors"
    );

    // Free the descriptors: every held client is eventually served, and new clients too.
    for (i, mut c) in held.into_iter().enumerate() {
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut c, &mut reply).unwrap();
        assert_eq!(reply, format!("{i}\n"), "{concurrency}");
    }
    assert_eq!(round_trip(&server.addr, b"recovered\n"), b"recovered\n");
    assert_eq!(server.terminate().code(), Some(0));
    let log = std::fs::read_to_string(log.path()).unwrap();
    if !fills_the_table {
        assert!(
            !log.contains(EMFILE_REPORT),
            "{concurrency} holds one connection per process, yet ran out: {log}"
        );
    }
}

// A descriptor per held connection in one process: these fill the table and must back off.

#[test]
fn threading_backs_off_and_recovers() {
    backs_off_and_recovers("threading", &[], true);
}

#[test]
fn reactor_backs_off_and_recovers() {
    backs_off_and_recovers("reactor", &[], true);
}

#[test]
fn pool_backs_off_and_recovers() {
    // 16 workers and their queue of 64 take more connections than the limit leaves room for.
    backs_off_and_recovers("pool", &["--workers", "16"], true);
}

#[test]
fn forking_backs_off_and_recovers() {
    // The parent keeps a pidfd per child; a cap above the limit lets those fill its table.
    backs_off_and_recovers("forking", &["--max-children", "200"], true);
}

// One connection at a time per process: the limit is never reached, and serving goes on under it.

#[test]
fn sequential_serves_under_the_limit() {
    backs_off_and_recovers("sequential", &[], false);
}

#[test]
fn prefork_serves_under_the_limit() {
    backs_off_and_recovers("prefork", &["--workers", "2"], false);
}
