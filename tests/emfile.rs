//! Descriptor exhaustion: a server under a low `RLIMIT_NOFILE` (set in its own process) runs out of
//! descriptors while clients hold connections. It must back off rather than spin on the always-readable
//! listener, and serve again once descriptors are freed.

mod util;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{ServerProc, connect, example_bin, round_trip};

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

#[test]
fn emfile_backs_off_and_recovers() {
    const LIMIT: u64 = 48;
    let mut cmd = Command::new(example_bin("echo"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", "threading"]);
    cmd.env("RUST_LOG", "off");
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

    // Hold more connections than the server has descriptors: it accepts until EMFILE, and the rest
    // wait in the listen backlog while the server backs off.
    let mut held = Vec::new();
    for i in 0..(LIMIT as usize + 20) {
        let mut c = connect(&server.addr);
        c.write_all(format!("{i}\n").as_bytes()).unwrap();
        held.push(c);
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
        "server used {used} ticks of CPU in {elapsed:?} while out of descriptors"
    );

    // Free the descriptors: every held client is eventually served, and new clients too.
    for (i, mut c) in held.into_iter().enumerate() {
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut c, &mut reply).unwrap();
        assert_eq!(reply, format!("{i}\n"));
    }
    assert_eq!(round_trip(&server.addr, b"recovered\n"), b"recovered\n");
    assert_eq!(server.terminate().code(), Some(0));
}
