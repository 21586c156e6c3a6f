//! The `timeserver` example: its replies are the current local time (checked against the clock and
//! the `TZ` it runs under), under every strategy; its client mode prints a reply, and fails clearly
//! and promptly when nothing answers.

mod util;

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use util::{ServerProc, TIMEOUT, example_bin, run_with_input};

fn start(strategy: &str, tz: &str) -> ServerProc {
    let mut cmd = Command::new(example_bin("timeserver"));
    cmd.args(["--addr", "127.0.0.1:0", "--concurrency", strategy])
        .env("TZ", tz)
        .env("RUST_LOG", "off");
    ServerProc::start(cmd)
}

fn ask(addr: &str, timeout: &str) -> Output {
    let mut cmd = Command::new(example_bin("timeserver"));
    cmd.args(["--client", "--addr", addr, "--timeout", timeout]);
    run_with_input(cmd, b"", TIMEOUT)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS±HH:MM` into (Unix seconds, offset in seconds east of UTC).
fn parse_rfc3339(s: &str) -> (i64, i64) {
    let b = s.as_bytes();
    assert_eq!(b.len(), 25, "{s:?}");
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16], b[22]),
        (b'-', b'-', b'T', b':', b':', b':'),
        "{s:?}"
    );
    let num = |range: std::ops::Range<usize>| -> i64 { s[range].parse().expect(s) };
    let sign = match b[19] {
        b'+' => 1,
        b'-' => -1,
        _ => panic!("{s:?}"),
    };
    let offset = sign * (num(20..22) * 3600 + num(23..25) * 60);
    let local = days_from_civil(num(0..4), num(5..7), num(8..10)) * 86_400
        + num(11..13) * 3600
        + num(14..16) * 60
        + num(17..19);
    (local - offset, offset)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn replies_with_the_local_time(strategy: &str) {
    for (tz, offset) in [
        ("XST-05:30", 5 * 3600 + 1800),
        ("UTC0", 0),
        ("YST+08", -8 * 3600),
    ] {
        let mut server = start(strategy, tz);
        let out = ask(&server.addr, "5");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.strip_suffix('\n').expect("one line");
        let before = now();
        let (when, got_offset) = parse_rfc3339(line);
        assert_eq!(got_offset, offset, "{strategy} TZ={tz}: {line}");
        assert!(
            (before - 10..=before + 1).contains(&when),
            "{strategy} TZ={tz}: {line} is not now ({before})"
        );
        assert_eq!(server.stop_with(Signal::SIGINT).code(), Some(0));
    }
}

#[test]
fn replies_with_the_local_time_sequential() {
    replies_with_the_local_time("sequential");
}

#[test]
fn replies_with_the_local_time_threading() {
    replies_with_the_local_time("threading");
}

#[test]
fn replies_with_the_local_time_forking() {
    replies_with_the_local_time("forking");
}

/// The strategies the shared `--concurrency` definition brought.
#[test]
fn replies_with_the_local_time_pool() {
    replies_with_the_local_time("pool");
}

#[test]
fn replies_with_the_local_time_prefork() {
    replies_with_the_local_time("prefork");
}

#[test]
fn any_datagram_gets_the_time_back() {
    let server = start("sequential", "UTC0");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    for request in [&b""[..], b"what time is it?", &[0xff; 1000]] {
        socket.send_to(request, &server.addr).unwrap();
        let mut buf = [0; 100];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.socket_addr());
        let reply = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(reply.ends_with("+00:00"), "{reply}");
        parse_rfc3339(reply);
    }
}

#[test]
fn client_fails_clearly_when_nothing_replies() {
    // Bound, so no "port unreachable": the datagrams are simply never answered.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = ask(&addr, "0.3");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("timeserver: no reply from {addr} within 300ms")),
        "{stderr}"
    );
    let mut buf = [0; 16];
    silent
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let (n, _) = silent.recv_from(&mut buf).expect("the client did ask");
    assert_eq!(&buf[..n], b"time?");

    // Nothing bound at all: the host says so, and the client passes it on.
    drop(silent);
    let out = ask(&addr, "2");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("timeserver: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    for args in [
        &["--client"][..], // needs --addr
        &["--concurrency", "bogus"],
        &["--client", "--addr", "127.0.0.1:1", "--timeout", "soon"],
    ] {
        let out = Command::new(example_bin("timeserver"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
    }
}
