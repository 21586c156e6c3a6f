//! `PreFork`, driven from outside: forking needs a single-threaded process, so the servers here are
//! example binaries (`echo --concurrency prefork`, and `prefork_probe`, which reports worker pids and
//! owns an unrelated child), observed through `/proc` and real loopback clients.

mod util;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{
    ServerProc, TIMEOUT, children, connect, eventually, round_trip, stopped_children,
    zombie_children,
};

/// A started `prefork_probe` and the pid of its unrelated child.
struct Probe {
    server: ServerProc,
    unrelated: i32,
}

impl Probe {
    fn start(args: &[&str]) -> Probe {
        Probe::from(ServerProc::example("prefork_probe", args))
    }

    /// The probe `server` started, once it has named its unrelated child.
    fn from(server: ServerProc) -> Probe {
        let line = server
            .next_line(TIMEOUT)
            .expect("the probe's second line, `unrelated <pid>`");
        let unrelated = line
            .strip_prefix("unrelated ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("second line was {line:?}"));
        Probe { server, unrelated }
    }

    fn pid(&self) -> i32 {
        self.server.pid()
    }

    /// The supervisor's children other than the unrelated one: its workers.
    fn workers(&self) -> HashSet<i32> {
        children(self.pid())
            .into_iter()
            .filter(|&p| p != self.unrelated)
            .collect()
    }

    /// Waits until exactly `n` workers run and none is a zombie; returns them.
    fn settled_workers(&self, n: usize) -> HashSet<i32> {
        let settled = eventually(TIMEOUT, || {
            self.workers().len() == n && self.zombie_workers().is_empty()
        });
        assert!(
            settled,
            "expected {n} live workers, saw {:?} (zombies {:?})",
            self.workers(),
            self.zombie_workers()
        );
        self.workers()
    }

    fn zombie_workers(&self) -> Vec<i32> {
        zombie_children(self.pid())
            .into_iter()
            .filter(|&p| p != self.unrelated)
            .collect()
    }

    /// Opens a connection; it stays in flight until dropped.
    fn session(&self) -> Session {
        let stream = connect(&self.server.addr);
        Session {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// One connection, one `pid` request: which worker served it.
    fn worker_pid_of_next_request(&self) -> i32 {
        let mut s = self.session();
        s.ask("pid").parse().unwrap()
    }
}

/// One open connection to the probe.
struct Session {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Session {
    /// Sends one line and reads the reply line.
    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stream, "{line}").unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).unwrap();
        reply.trim_end().to_string()
    }
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap();
}

#[test]
fn echo_example_serves_tcp_and_udp() {
    let mut tcp = ServerProc::example("echo", &["--concurrency", "prefork", "--workers", "2"]);
    for i in 0..5 {
        let msg = format!("hello {i}\n");
        assert_eq!(round_trip(&tcp.addr, msg.as_bytes()), msg.as_bytes());
    }
    assert_eq!(tcp.terminate().code(), Some(0));

    let mut udp = ServerProc::example(
        "echo",
        &[
            "--concurrency",
            "prefork",
            "--transport",
            "udp",
            "--workers",
            "2",
        ],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..5 {
        let msg = format!("datagram {i}");
        client.send_to(msg.as_bytes(), &udp.addr).unwrap();
        let mut buf = [0; 64];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    assert_eq!(udp.terminate().code(), Some(0));
}

#[test]
fn killed_worker_is_replaced() {
    let probe = Probe::start(&["--workers", "3"]);
    let before = probe.settled_workers(3);
    let victim = *before.iter().next().unwrap();
    signal(victim, Signal::SIGKILL);
    let replaced = eventually(TIMEOUT, || {
        let now = probe.workers();
        now.len() == 3 && !now.contains(&victim) && probe.zombie_workers().is_empty()
    });
    assert!(
        replaced,
        "workers {:?} after killing {victim}",
        probe.workers()
    );
    for _ in 0..6 {
        let pid = probe.worker_pid_of_next_request();
        assert_ne!(pid, victim);
    }
}

#[test]
fn sigterm_to_one_worker_retires_only_it_after_its_request() {
    let probe = Probe::start(&["--workers", "2"]);
    probe.settled_workers(2);
    let mut busy = probe.session();
    let worker: i32 = busy.ask("pid").parse().unwrap();
    signal(worker, Signal::SIGTERM);
    // The worker finishes the request it is in: the connection still works.
    assert_eq!(busy.ask("still here"), "still here");
    assert!(alive(worker));
    drop(busy);
    assert!(
        eventually(TIMEOUT, || !probe.workers().contains(&worker)),
        "worker {worker} did not retire"
    );
    let now = probe.settled_workers(2);
    assert!(!now.contains(&worker));
    // The server was not shut down.
    assert_eq!(round_trip(&probe.server.addr, b"ok\n"), b"ok\n");
}

#[test]
fn max_requests_recycles_workers() {
    let probe = Probe::start(&["--workers", "1", "--max-requests", "2"]);
    let first = probe.worker_pid_of_next_request();
    assert_eq!(probe.worker_pid_of_next_request(), first);
    let second = probe.worker_pid_of_next_request();
    assert_ne!(
        second, first,
        "the worker was not recycled after 2 requests"
    );
    assert_eq!(probe.worker_pid_of_next_request(), second);
    let third = probe.worker_pid_of_next_request();
    assert!(third != first && third != second);
    assert_eq!(probe.settled_workers(1), HashSet::from([third]));
}

#[test]
fn sigterm_drains_in_flight_request_and_exits_0_without_zombies() {
    let mut probe = Probe::start(&["--workers", "3"]);
    let workers = probe.settled_workers(3);
    let mut busy = probe.session();
    let worker: i32 = busy.ask("pid").parse().unwrap();
    signal(probe.pid(), Signal::SIGTERM);
    // The idle workers exit and are reaped at once; the busy one finishes its request.
    assert_eq!(
        probe.settled_workers(1),
        HashSet::from([worker]),
        "idle workers should be gone"
    );
    assert_eq!(busy.ask("last words"), "last words");
    drop(busy);
    let status = probe.server.wait_exit(TIMEOUT).expect("server exited");
    assert_eq!(status.code(), Some(0));
    for w in workers {
        assert!(!alive(w), "worker {w} outlived the server");
    }
    assert_eq!(
        probe.server.next_line(TIMEOUT).as_deref(),
        Some("unrelated child: exit status: 7")
    );
}

#[test]
fn drain_deadline_cuts_a_stuck_worker() {
    let mut probe = Probe::start(&["--workers", "2", "--shutdown-timeout-ms", "300"]);
    probe.settled_workers(2);
    let mut stuck = probe.session();
    let worker: i32 = stuck.ask("pid").parse().unwrap();
    let asked = Instant::now();
    signal(probe.pid(), Signal::SIGTERM);
    let status = probe.server.wait_exit(TIMEOUT).expect("server exited");
    assert_eq!(status.code(), Some(0));
    // 300 ms deadline, then a second SIGTERM ends the worker at once (generous bound).
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert!(!alive(worker));
    let mut rest = Vec::new();
    let _ = stuck.stream.read_to_end(&mut rest); // EOF or reset: the connection is gone
    assert!(rest.is_empty());
}

#[test]
fn sighup_replaces_every_worker_and_completes_the_request_in_flight() {
    let probe = Probe::start(&["--workers", "2"]);
    let old = probe.settled_workers(2);
    let mut busy = probe.session();
    let worker: i32 = busy.ask("pid").parse().unwrap();
    signal(probe.pid(), Signal::SIGHUP);
    // Two new workers, plus the old one still serving `busy`; the idle old one is gone.
    let replaced = eventually(TIMEOUT, || {
        let now = probe.workers();
        now.len() == 3 && now.contains(&worker) && now.difference(&old).count() == 2
    });
    assert!(replaced, "old {old:?}, now {:?}", probe.workers());
    assert_eq!(busy.ask("pid"), worker.to_string());
    assert_eq!(busy.ask("finishing"), "finishing");
    drop(busy);
    let new = probe.settled_workers(2);
    assert!(new.is_disjoint(&old), "old {old:?}, new {new:?}");
    let pid = probe.worker_pid_of_next_request();
    assert!(new.contains(&pid));
}

#[test]
fn handler_shutdown_in_a_worker_stops_the_whole_server() {
    let mut probe = Probe::start(&["--workers", "3"]);
    let workers = probe.settled_workers(3);
    let mut s = probe.session();
    assert_eq!(s.ask("stop"), "stopping");
    drop(s);
    let status = probe.server.wait_exit(TIMEOUT).expect("server exited");
    assert_eq!(status.code(), Some(0));
    for w in workers {
        assert!(!alive(w), "worker {w} outlived the server");
    }
}

#[test]
fn an_unrelated_child_is_never_reaped_by_the_supervisor() {
    let mut probe = Probe::start(&["--workers", "2", "--max-requests", "1"]);
    let unrelated = probe.unrelated;
    // It exits at once; its status must wait for its owner, so it stays a zombie child.
    assert!(eventually(TIMEOUT, || zombie_children(probe.pid())
        .contains(&unrelated)));
    // Workers die and are recycled around it.
    let victim = *probe.settled_workers(2).iter().next().unwrap();
    signal(victim, Signal::SIGKILL);
    for _ in 0..4 {
        probe.worker_pid_of_next_request();
    }
    probe.settled_workers(2);
    assert!(zombie_children(probe.pid()).contains(&unrelated));
    assert_eq!(probe.server.terminate().code(), Some(0));
    assert_eq!(
        probe.server.next_line(TIMEOUT).as_deref(),
        Some("unrelated child: exit status: 7")
    );
}

/// CPU time (user + system, in clock ticks) process `pid` has used.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3, utime 14 and stime 15 (1-based, as in proc(5)).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn crash_looping_workers_are_replaced_with_back_off() {
    let probe = Probe::start(&["--workers", "1"]);
    let mut worker = *probe.settled_workers(1).iter().next().unwrap();
    let ticks_before = cpu_ticks(probe.pid());
    let started = Instant::now();
    for _ in 0..5 {
        let mut s = probe.session();
        writeln!(s.stream, "crash").unwrap();
        let mut rest = Vec::new();
        let _ = s.stream.read_to_end(&mut rest);
        let replaced = eventually(TIMEOUT, || {
            let now = probe.workers();
            now.len() == 1 && !now.contains(&worker) && probe.zombie_workers().is_empty()
        });
        assert!(replaced, "worker {worker} was not replaced");
        worker = *probe.workers().iter().next().unwrap();
    }
    // At least four of the five died young, so their replacements waited 100 + 200 + 400 + 800 ms.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500),
        "no back-off: {elapsed:?}"
    );
    // Waiting, not spinning: the supervisor used little CPU meanwhile (generous bound).
    let ticks = cpu_ticks(probe.pid()) - ticks_before;
    assert!(ticks < 50, "supervisor used {ticks} ticks in {elapsed:?}");
    assert_eq!(
        round_trip(&probe.server.addr, b"recovered\n"),
        b"recovered\n"
    );
}

#[test]
fn a_stuck_worker_is_replaced_after_its_worker_timeout() {
    let probe = Probe::start(&["--workers", "2", "--worker-timeout-ms", "300"]);
    let mut session = probe.session();
    let stuck: i32 = session.ask("pid").parse().unwrap();
    let before = probe.settled_workers(2);
    assert!(before.contains(&stuck));
    writeln!(session.stream, "hang").unwrap();
    let hung = Instant::now();
    // SIGTERM at the timeout (which a stuck handler does not notice), SIGKILL two seconds later; a
    // replacement starts at once.
    assert!(eventually(TIMEOUT, || !alive(stuck)
        || zombie_children(probe.pid()).contains(&stuck)));
    let gone = hung.elapsed();
    assert!(gone >= Duration::from_millis(300), "stopped after {gone:?}");
    assert!(
        gone <= Duration::from_millis(300 + 2000 + 5000),
        "stopped after {gone:?}"
    );
    let after = probe.settled_workers(2);
    assert!(!after.contains(&stuck));
    // Its connection closed with it; the others serve.
    let mut rest = String::new();
    session.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = session.reader.read_to_string(&mut rest);
    assert_ne!(probe.worker_pid_of_next_request(), stuck);
    println!("a stuck worker was gone {gone:?} after it hung (worker_timeout 300 ms, grace 2 s)");
}

#[test]
fn spare_workers_follow_the_load_up_and_down() {
    let probe = Probe::start(&[
        "--workers",
        "2",
        "--min-spare",
        "2",
        "--max-spare",
        "3",
        "--max-workers",
        "12",
    ]);
    probe.settled_workers(2);
    // Six connections keep six workers busy: two spare ones are started beside them.
    let mut sessions: Vec<Session> = (0..6).map(|_| probe.session()).collect();
    for s in &mut sessions {
        s.ask("pid");
    }
    probe.settled_workers(8);
    // Load gone: idle workers above the maximum are retired, down to three.
    drop(sessions);
    probe.settled_workers(3);
    assert!(probe.zombie_workers().is_empty());
}

#[test]
fn sigttin_and_sigttou_grow_and_shrink_by_one() {
    let probe = Probe::start(&["--workers", "2"]);
    probe.settled_workers(2);
    signal(probe.pid(), Signal::SIGTTIN);
    probe.settled_workers(3);
    signal(probe.pid(), Signal::SIGTTOU);
    probe.settled_workers(2);
    signal(probe.pid(), Signal::SIGTTOU);
    probe.settled_workers(1);
    // Never below one; and the server still serves.
    signal(probe.pid(), Signal::SIGTTOU);
    probe.settled_workers(1);
    probe.worker_pid_of_next_request();
}

/// `SIGTTIN`/`SIGTTOU` sent to the whole process group (`kill -TTIN -PGID`, or a terminal's job
/// control) reach the workers too, where their default action would stop them, each holding its
/// share of the listener's connections: workers ignore them, and only the supervisor resizes.
#[test]
fn job_control_signals_to_the_process_group_stop_no_worker() {
    let mut cmd = Command::new(util::example_bin("prefork_probe"));
    cmd.args(["--workers", "2"])
        .env("RUST_LOG", "warn")
        .process_group(0); // its own group, so the signal does not reach this test
    let probe = Probe::from(ServerProc::start(cmd));
    probe.settled_workers(2);
    let group = Pid::from_raw(-probe.pid());
    kill(group, Signal::SIGTTIN).unwrap();
    probe.settled_workers(3);
    kill(group, Signal::SIGTTOU).unwrap();
    let workers = probe.settled_workers(2);
    assert!(
        stopped_children(probe.pid()).is_empty(),
        "workers stopped by job control: {:?}",
        stopped_children(probe.pid())
    );
    // Both serve at once: one connection held on each.
    let mut held: Vec<Session> = (0..2).map(|_| probe.session()).collect();
    let served: HashSet<i32> = held
        .iter_mut()
        .map(|s| s.ask("pid").parse().unwrap())
        .collect();
    assert_eq!(served, workers);
}

#[test]
fn jittered_recycling_spreads_worker_restarts() {
    let probe = Probe::start(&[
        "--workers",
        "2",
        "--max-requests",
        "3",
        "--max-requests-jitter",
        "3",
    ]);
    let mut served: std::collections::HashMap<i32, u32> = std::collections::HashMap::new();
    for _ in 0..60 {
        *served
            .entry(probe.worker_pid_of_next_request())
            .or_default() += 1;
    }
    // A worker that is gone served between 3 and 6 requests; not all the same number.
    assert!(eventually(TIMEOUT, || probe.zombie_workers().is_empty()));
    let finished: Vec<u32> = served
        .iter()
        .filter(|&(&pid, _)| !alive(pid))
        .map(|(_, &n)| n)
        .collect();
    assert!(finished.len() >= 8, "{served:?}");
    assert!(finished.iter().all(|n| (3..=6).contains(n)), "{served:?}");
    assert!(
        finished.iter().any(|&n| n != finished[0]),
        "no jitter: {served:?}"
    );
}
