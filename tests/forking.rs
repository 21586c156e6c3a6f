//! The `Forking` strategy, tested where forking is safe: each server runs in a fresh, single-threaded
//! process (this test binary re-executed with `SOCKETSERVER_FORK_SERVER` set), and this process is the
//! client. `harness = false`, because libtest's threads must never be forked.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use socketserver::{
    Addr, Concurrency, Forking, PreFork, RequestError, Server, StreamRequest, Tcp, signals,
};
use util::{
    ServerProc, TIMEOUT, accept_queue, children, connect, connect_from, eventually, fd_count,
    holds_for, round_trip, zombie_children,
};

const MODE_VAR: &str = "SOCKETSERVER_FORK_SERVER";

// ---------------------------------------------------------------------------------------------------
// The server side (a child process of the test).

/// Echoes lines; some lines are commands that exercise failure paths.
fn handler(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        match line.trim_end() {
            "error" => anyhow::bail!("asked to fail"),
            "panic" => panic!("asked to panic"),
            "kill" => {
                nix::sys::signal::raise(Signal::SIGKILL)?;
            }
            "stop" => {
                req.server().shutdown();
                req.wfile.write_all(b"stopping\n")?;
            }
            "pid" => writeln!(req.wfile, "{}", std::process::id())?,
            "flood" => {
                // Until the peer, which has gone away, makes the write fail.
                let chunk = vec![b'x'; 64 * 1024];
                loop {
                    req.wfile.write_all(&chunk)?;
                }
            }
            "slow" => {
                req.wfile.write_all(b"waiting\n")?;
                let mut rest = Vec::new();
                req.rfile.read_to_end(&mut rest)?; // until the client closes
            }
            _ => req.wfile.write_all(line.as_bytes())?,
        }
        line.clear();
    }
    Ok(())
}

fn report(peer: Option<&Addr>, err: &RequestError) {
    let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
    println!("error {peer} {err}");
    let _ = std::io::stdout().flush();
}

type Handler = fn(&mut StreamRequest) -> anyhow::Result<()>;

fn serve(mode: &str) -> anyhow::Result<()> {
    let mut strategy = Forking::new();
    let mut shutdown_timeout = Duration::from_secs(20);
    let mut unrelated = None;
    match mode {
        "default" => {}
        // The statistics, counted in the children, read in the parent: Forking, then PreFork.
        "stats" => {
            let server = Server::new(strategy, Tcp::bind("127.0.0.1:0")?, handler as Handler)?;
            return run(with_admission(server), Duration::from_millis(300), None);
        }
        "prefork-stats" => {
            let server = Server::new(
                PreFork::new(2),
                Tcp::bind("127.0.0.1:0")?,
                handler as Handler,
            )?;
            return run(with_admission(server), Duration::from_millis(300), None);
        }
        "max2" => strategy = strategy.max_children(2),
        "deadline" => shutdown_timeout = Duration::from_millis(200),
        // As in a C program: a write to a vanished peer would kill the process, unless the crate
        // sends with MSG_NOSIGNAL.
        "sigpipe" => {
            // SAFETY: restoring the default disposition before any thread exists.
            unsafe {
                nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)?
            };
        }
        // A child this process owns, which exits at once: the server must leave its status alone.
        "unrelated" => unrelated = Some(Command::new("true").spawn()?),
        other => anyhow::bail!("unknown mode {other}"),
    }
    let server = Server::new(strategy, Tcp::bind("127.0.0.1:0")?, handler as Handler)?;
    run(server, shutdown_timeout, unrelated)
}

/// The statistics modes' admission policy: 127.0.0.2 is refused, one connection per address.
fn with_admission<C: Concurrency<Tcp, Handler>>(
    server: Server<C, Tcp, Handler>,
) -> Server<C, Tcp, Handler> {
    server
        .verify_request(|peer: &Addr| peer.as_inet().map(|a| a.ip()) != Some(REFUSED.into()))
        .max_connections_per_peer(1)
}

/// An address the statistics modes refuse.
const REFUSED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn run<C: Concurrency<Tcp, Handler>>(
    server: Server<C, Tcp, Handler>,
    shutdown_timeout: Duration,
    unrelated: Option<std::process::Child>,
) -> anyhow::Result<()> {
    let mut server = server
        .shutdown_timeout(shutdown_timeout)
        .handle_error(report);
    let stats = server.stats();
    println!("listening on {}", server.local_addr());
    if let Some(child) = &unrelated {
        println!("unrelated {}", child.id());
    }
    std::io::stdout().flush()?;
    signals::shutdown_on_signals(&server.shutdown_handle())?;
    let summary = server.serve_forever()?;
    println!(
        "summary requests={} in_flight={} drained={} cut={}",
        summary.requests, summary.in_flight_at_shutdown, summary.drained, summary.cut
    );
    let s = stats.snapshot();
    let children = s.children.expect("a process strategy counts its children");
    println!(
        "stats accepted={} verify={} per_peer={} started={} finished={} failed={} panicked={} \
         cut={} open={} spawned={} abnormal={} killed={} live={}",
        s.accepted,
        s.rejected.verify,
        s.rejected.per_peer,
        s.requests.started,
        s.requests.finished,
        s.requests.failed,
        s.requests.panicked,
        s.requests.cut,
        s.open,
        children.spawned,
        children.exited_abnormally,
        children.killed,
        children.live,
    );
    if let Some(mut child) = unrelated {
        match child.wait() {
            Ok(status) => println!("unrelated exited {}", status.code().unwrap_or(-1)),
            Err(e) => println!("unrelated stolen: {e}"),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// The client side: the tests.

fn start(mode: &str) -> ServerProc {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(MODE_VAR, mode);
    ServerProc::start(cmd)
}

/// Reads stdout lines until one starts with `prefix`.
fn line_starting(server: &ServerProc, prefix: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Some(line) = server.next_line(deadline - Instant::now())
            && line.starts_with(prefix)
        {
            return line;
        }
    }
    panic!("no line starting with {prefix:?} within {TIMEOUT:?}");
}

/// `summary a=1 b=2` → {a: 1, b: 2}.
fn summary_fields(line: &str) -> std::collections::HashMap<String, u64> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn ask(addr: &str, line: &str) -> (TcpStream, BufReader<TcpStream>) {
    let mut s = connect(addr);
    s.write_all(line.as_bytes()).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

fn requests_run_in_separate_processes() {
    let mut server = start("default");
    let mut pids = std::collections::HashSet::new();
    for _ in 0..5 {
        let reply = round_trip(&server.addr, b"pid\n");
        let pid: i32 = String::from_utf8(reply).unwrap().trim().parse().unwrap();
        assert_ne!(pid, server.pid());
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 5, "each request should get its own process");
    assert_eq!(round_trip(&server.addr, b"echo me\n"), b"echo me\n");
    assert_eq!(server.terminate().code(), Some(0));
}

fn errors_panics_and_crashes_are_reported_and_reaped() {
    let mut server = start("default");
    for cmd in ["error\n", "panic\n", "kill\n"] {
        assert_eq!(round_trip(&server.addr, cmd.as_bytes()), b"");
    }
    let mut lines: Vec<String> = (0..3).map(|_| line_starting(&server, "error ")).collect();
    lines.sort();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("error 127.0.0.1:")
                && l.ends_with("handler failed: asked to fail")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("handler panicked: asked to panic")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("error - forked child") && l.ends_with("was killed by signal 9")), "{lines:?}");
    assert!(
        eventually(TIMEOUT, || children(server.pid()).is_empty()),
        "children left: {:?}",
        children(server.pid())
    );
    assert_eq!(round_trip(&server.addr, b"alive\n"), b"alive\n");
    assert_eq!(server.terminate().code(), Some(0));
}

fn a_thousand_connections_leave_no_zombies_and_no_descriptors() {
    let mut server = start("default");
    assert_eq!(round_trip(&server.addr, b"warm up\n"), b"warm up\n");
    assert!(eventually(TIMEOUT, || children(server.pid()).is_empty()));
    let fds_before = fd_count(server.pid());
    let mut worst_zombies = 0;
    for i in 0..1000 {
        let msg = format!("{i}\n");
        assert_eq!(round_trip(&server.addr, msg.as_bytes()), msg.as_bytes());
        if i % 100 == 0 {
            worst_zombies = worst_zombies.max(zombie_children(server.pid()).len());
        }
    }
    // Children are reaped on the loop's next turn: the count settles to zero, and stays bounded meanwhile.
    assert!(
        eventually(TIMEOUT, || children(server.pid()).is_empty()),
        "left: {:?}",
        children(server.pid())
    );
    assert!(worst_zombies <= 40, "{worst_zombies} zombies at once");
    assert!(
        eventually(TIMEOUT, || fd_count(server.pid()) == fds_before),
        "fds {} -> {}",
        fds_before,
        fd_count(server.pid())
    );
    assert_eq!(server.terminate().code(), Some(0));
    assert_eq!(
        line_starting(&server, "summary"),
        "summary requests=1001 in_flight=0 drained=0 cut=0"
    );
}

fn an_unrelated_child_is_left_to_its_owner() {
    let mut server = start("unrelated");
    let unrelated: i32 = line_starting(&server, "unrelated ")["unrelated ".len()..]
        .parse()
        .unwrap();
    // It exits at once and stays a zombie until its owner waits: a `waitpid(-1)` would reap it.
    assert!(eventually(TIMEOUT, || zombie_children(server.pid())
        .contains(&unrelated)));
    for i in 0..50 {
        let cmd = if i % 10 == 0 { "error\n" } else { "hi\n" };
        round_trip(&server.addr, cmd.as_bytes());
    }
    assert!(
        eventually(TIMEOUT, || children(server.pid()) == vec![unrelated]),
        "children: {:?}",
        children(server.pid())
    );
    assert_eq!(server.terminate().code(), Some(0));
    assert_eq!(line_starting(&server, "unrelated "), "unrelated exited 0");
}

fn shutdown_from_a_handler_in_a_child_stops_the_parent() {
    let mut server = start("default");
    assert_eq!(round_trip(&server.addr, b"stop\n"), b"stopping\n");
    let status = server
        .wait_exit(TIMEOUT)
        .expect("the server should stop by itself");
    assert_eq!(status.code(), Some(0));
}

fn a_slow_child_does_not_keep_the_port_accepting() {
    let mut server = start("default");
    let (mut slow, mut r) = ask(&server.addr, "slow\n");
    assert_eq!(read_line(&mut r), "waiting\n");
    let slow_child = match children(server.pid())[..] {
        [pid] => pid,
        ref other => panic!("one child should serve the slow client: {other:?}"),
    };
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    // The parent closes its listener at once; the child closed its copy when it started. So, while the
    // child is still serving, new connections are refused rather than queued.
    assert!(
        eventually(TIMEOUT, || TcpStream::connect(&server.addr).is_err()),
        "the port kept accepting after shutdown"
    );
    // The slow child in particular (a probe accepted before the signal landed has a short-lived child
    // of its own, so the number of children is not the check).
    assert!(
        children(server.pid()).contains(&slow_child)
            && !zombie_children(server.pid()).contains(&slow_child),
        "the slow child should still be running"
    );
    slow.write_all(b"done\n").unwrap();
    slow.shutdown(Shutdown::Write).unwrap();
    let status = server
        .wait_exit(TIMEOUT)
        .expect("server exits once the child is done");
    assert_eq!(status.code(), Some(0));
    // A probe connect may have been accepted before the signal landed: it counts as one more request.
    let summary = summary_fields(&line_starting(&server, "summary"));
    assert_eq!(summary["in_flight"], summary["requests"]);
    assert_eq!(summary["drained"], summary["requests"]);
    assert_eq!(summary["cut"], 0);
}

fn max_children_is_enforced_before_forking() {
    let mut server = start("max2");
    let port = server.socket_addr().port();
    let (_a, mut ra) = ask(&server.addr, "slow\n");
    let (_b, mut rb) = ask(&server.addr, "slow\n");
    assert_eq!(read_line(&mut ra), "waiting\n");
    assert_eq!(read_line(&mut rb), "waiting\n");
    assert_eq!(children(server.pid()).len(), 2);
    // A third client is queued by the kernel; at the cap the server must leave it in the backlog and
    // fork nothing. Decided by the server's state (its children, the listener's queue), not by whether
    // a reply came within some time: a child started beyond the cap fails however slowly it answers.
    let (_c, mut rc) = ask(&server.addr, "slow\n");
    assert!(
        eventually(TIMEOUT, || accept_queue(port) == Some(1)
            || children(server.pid()).len() > 2),
        "the third connection never reached the listener (queue {:?})",
        accept_queue(port)
    );
    holds_for(
        Duration::from_millis(500),
        "a third child was started beyond max_children",
        || accept_queue(port) == Some(1) && children(server.pid()).len() == 2,
    );
    drop(ra);
    drop(_a); // the first child finishes: a slot frees up
    assert_eq!(read_line(&mut rc), "waiting\n");
    drop((_b, rb, _c, rc));
    assert_eq!(server.terminate().code(), Some(0));
}

fn writing_to_a_vanished_peer_is_epipe_not_sigpipe() {
    let mut server = start("sigpipe");
    for _ in 0..5 {
        let mut c = connect(&server.addr);
        c.write_all(b"flood\n").unwrap();
        let mut some = [0u8; 1024];
        c.read_exact(&mut some).unwrap();
        drop(c); // unread data: the close resets, and the child's next writes fail
    }
    for _ in 0..5 {
        let line = line_starting(&server, "error ");
        assert!(
            line.contains("handler failed")
                && (line.contains("Broken pipe") || line.contains("reset")),
            "the child should see an error, not die of SIGPIPE: {line}"
        );
    }
    assert!(eventually(TIMEOUT, || children(server.pid()).is_empty()));
    assert_eq!(server.terminate().code(), Some(0));
}

fn panics_in_a_loop_leave_no_children_or_descriptors() {
    let mut server = start("default");
    assert_eq!(round_trip(&server.addr, b"warm\n"), b"warm\n");
    assert!(eventually(TIMEOUT, || children(server.pid()).is_empty()));
    let fds = fd_count(server.pid());
    for _ in 0..200 {
        assert_eq!(round_trip(&server.addr, b"panic\n"), b"");
    }
    for _ in 0..200 {
        line_starting(&server, "error ");
    }
    assert!(eventually(TIMEOUT, || children(server.pid()).is_empty()));
    assert!(
        eventually(TIMEOUT, || fd_count(server.pid()) == fds),
        "fds {fds} -> {}",
        fd_count(server.pid())
    );
    assert_eq!(server.terminate().code(), Some(0));
}

fn a_second_sigint_cuts_the_drain_short() {
    let mut server = start("default"); // 20 s drain deadline
    let (_stuck, mut r) = ask(&server.addr, "slow\n");
    assert_eq!(read_line(&mut r), "waiting\n");
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    assert!(
        eventually(TIMEOUT, || TcpStream::connect(&server.addr).is_err()),
        "still accepting"
    );
    let asked = Instant::now();
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let status = server
        .wait_exit(TIMEOUT)
        .expect("exit after the second SIGINT");
    assert_eq!(status.code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the second SIGINT did not force the drain"
    );
    let summary = summary_fields(&line_starting(&server, "summary"));
    assert_eq!(summary["cut"], 1);
}

/// A connection from `from` to `addr`.
fn connect_to(from: Ipv4Addr, addr: &str) -> TcpStream {
    let conn = connect_from(from, addr.parse().unwrap());
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn
}

/// Sends `msg` from `from`, half-closes, reads the whole answer (a reset ends it too).
fn round_trip_from(from: Ipv4Addr, addr: &str, msg: &[u8]) -> Vec<u8> {
    let mut conn = connect_to(from, addr);
    conn.write_all(msg).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    answer
}

/// A scripted mix — 3 good, 2 failing, 1 panicking, 1 refused by `verify_request`, 1 refused by the
/// per-peer limit (Forking only: a PreFork worker serves one connection at a time, so a peer never
/// has two in one worker), 1 cut at the drain deadline — counted exactly, although every request ran
/// in a child process. Each request comes from an address of its own, so the limit of one per
/// address meets only the connection meant to meet it.
fn children_count_into_the_parents_stats(mode: &str) {
    let forking = mode == "stats";
    let mut server = start(mode);
    let client = |i: u8| Ipv4Addr::new(127, 0, 1, i);
    for i in 1..=3 {
        assert_eq!(
            round_trip_from(client(i), &server.addr, b"fine\n"),
            b"fine\n"
        );
    }
    for (i, cmd) in (4..).zip(["error\n", "error\n", "panic\n"]) {
        assert_eq!(
            round_trip_from(client(i), &server.addr, cmd.as_bytes()),
            b""
        );
    }
    for _ in 0..3 {
        line_starting(&server, "error ");
    }
    let mut refused = connect_to(REFUSED, &server.addr);
    assert!(
        !matches!(refused.read(&mut [0]), Ok(1..)),
        "127.0.0.2 was served"
    );
    if forking {
        let holder = connect_to(client(7), &server.addr);
        (&holder).write_all(b"hold\n").unwrap();
        assert_eq!(
            read_line(&mut BufReader::new(holder.try_clone().unwrap())),
            "hold\n"
        );
        let mut second = connect_to(client(7), &server.addr);
        assert!(
            !matches!(second.read(&mut [0]), Ok(1..)),
            "a second connection was served"
        );
        holder.shutdown(Shutdown::Write).unwrap();
        let _ = (&holder).read_to_end(&mut Vec::new());
    }
    let slow = connect_to(client(8), &server.addr);
    (&slow).write_all(b"slow\n").unwrap();
    assert_eq!(
        read_line(&mut BufReader::new(slow.try_clone().unwrap())),
        "waiting\n"
    );
    assert_eq!(server.terminate().code(), Some(0));
    let stats = summary_fields(&line_starting(&server, "stats"));
    let held = u64::from(forking);
    let want = [
        ("accepted", 7 + held),
        ("verify", 1),
        ("per_peer", held),
        ("started", 7 + held),
        ("finished", 6 + held),
        ("failed", 2),
        ("panicked", 1),
        ("cut", 1),
        ("open", 0),
        ("killed", 1),
        ("live", 0),
    ];
    for (field, n) in want {
        assert_eq!(stats[field], n, "{mode}: {field} in {stats:?}");
    }
    // A child per request, or the workers (two, and replacements for the ones that exited).
    assert!(
        stats["spawned"] >= if forking { 7 + held } else { 2 },
        "{stats:?}"
    );
}

fn forking_children_count_into_the_parents_stats() {
    children_count_into_the_parents_stats("stats");
}

fn prefork_workers_count_into_the_supervisors_stats() {
    children_count_into_the_parents_stats("prefork-stats");
}

fn the_drain_deadline_terminates_stuck_children() {
    let mut server = start("deadline");
    let (_stuck, mut r) = ask(&server.addr, "slow\n");
    assert_eq!(read_line(&mut r), "waiting\n");
    let child = children(server.pid());
    assert_eq!(child.len(), 1);
    assert_eq!(server.terminate().code(), Some(0));
    assert_eq!(
        line_starting(&server, "summary"),
        "summary requests=1 in_flight=1 drained=0 cut=1"
    );
    // The child got SIGTERM at the deadline and was reaped: its pid is gone.
    assert!(!std::path::Path::new(&format!("/proc/{}", child[0])).exists());
}

fn main() {
    if let Ok(mode) = std::env::var(MODE_VAR) {
        if let Err(e) = serve(&mode) {
            eprintln!("server: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    util::runner::run(&[
        (
            "forking_children_count_into_the_parents_stats",
            forking_children_count_into_the_parents_stats,
        ),
        (
            "prefork_workers_count_into_the_supervisors_stats",
            prefork_workers_count_into_the_supervisors_stats,
        ),
        (
            "requests_run_in_separate_processes",
            requests_run_in_separate_processes,
        ),
        (
            "errors_panics_and_crashes_are_reported_and_reaped",
            errors_panics_and_crashes_are_reported_and_reaped,
        ),
        (
            "a_thousand_connections_leave_no_zombies_and_no_descriptors",
            a_thousand_connections_leave_no_zombies_and_no_descriptors,
        ),
        (
            "an_unrelated_child_is_left_to_its_owner",
            an_unrelated_child_is_left_to_its_owner,
        ),
        (
            "shutdown_from_a_handler_in_a_child_stops_the_parent",
            shutdown_from_a_handler_in_a_child_stops_the_parent,
        ),
        (
            "a_slow_child_does_not_keep_the_port_accepting",
            a_slow_child_does_not_keep_the_port_accepting,
        ),
        (
            "max_children_is_enforced_before_forking",
            max_children_is_enforced_before_forking,
        ),
        (
            "the_drain_deadline_terminates_stuck_children",
            the_drain_deadline_terminates_stuck_children,
        ),
        (
            "writing_to_a_vanished_peer_is_epipe_not_sigpipe",
            writing_to_a_vanished_peer_is_epipe_not_sigpipe,
        ),
        (
            "panics_in_a_loop_leave_no_children_or_descriptors",
            panics_in_a_loop_leave_no_children_or_descriptors,
        ),
        (
            "a_second_sigint_cuts_the_drain_short",
            a_second_sigint_cuts_the_drain_short,
        ),
        (
            "the_runner_takes_libtest_flags",
            util::runner::the_runner_takes_libtest_flags,
        ),
    ]);
}
