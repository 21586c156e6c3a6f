//! The `echo_client` example, driven through its stdin against the `echo` example (TCP and UDP) and
//! against stand-in servers that split a reply, stay silent, or hang up.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;

use util::{ServerProc, TIMEOUT, example_bin, run_with_input};

fn echo_client(addr: &str, transport: &str, timeout: &str, input: &str) -> Output {
    let mut cmd = Command::new(example_bin("echo_client"));
    cmd.args([
        "--addr",
        addr,
        "--transport",
        transport,
        "--timeout",
        timeout,
    ]);
    run_with_input(cmd, input.as_bytes(), TIMEOUT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SCRIPT: &str = "hello\nwith  spaces\t## and more\nünïcödé\n\nnot sent after the empty line\n";
const ECHOED: &str = "hello\nwith  spaces\t## and more\nünïcödé\n";

fn against_echo(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let addr = match transport {
        "tcp" | "udp" => "127.0.0.1:0".to_string(),
        _ => dir.path().join("echo.sock").to_str().unwrap().to_string(),
    };
    let mut server = ServerProc::example("echo", &["--addr", &addr, "--transport", transport]);
    let out = echo_client(&server.addr, transport, "5", SCRIPT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), ECHOED, "{transport}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // End of input quits too.
    let out = echo_client(&server.addr, transport, "5", "one\ntwo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn tcp_against_the_echo_example() {
    against_echo("tcp");
}

#[test]
fn udp_against_the_echo_example() {
    against_echo("udp");
}

/// The transports come from the examples' shared `--transport` definition, so the client speaks the
/// Unix ones too.
#[test]
fn unix_against_the_echo_example() {
    against_echo("unix");
}

#[test]
fn unix_dgram_against_the_echo_example() {
    against_echo("unix-dgram");
}

#[test]
fn ipv6() {
    let server = ServerProc::example("echo", &["--addr", "[::1]:0"]);
    let out = echo_client(&server.addr, "tcp", "5", "six\n");
    assert_eq!(text(&out.stdout), "six\n", "{}", text(&out.stderr));
}

/// A server whose replies arrive in pieces, as over a slow network: the client must gather the
/// whole line, not print whatever one `recv` returned (the notes' `recv(1024)`).
#[test]
fn tcp_reads_the_whole_line_however_it_is_split() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut writer = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        for _ in 0..2 {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let (head, tail) = line.split_at(3);
            writer.write_all(head.as_bytes()).unwrap();
            // The pause stands in for a slow link, so the first piece is read on its own.
            std::thread::sleep(Duration::from_millis(100));
            writer.write_all(tail.as_bytes()).unwrap();
        }
    });
    let out = echo_client(&addr, "tcp", "5", "first line\nsecond line\n");
    server.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "first line\nsecond line\n");
}

#[test]
fn tcp_silent_server_times_out() {
    // Connections complete in the kernel's backlog; nobody ever reads or replies.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = echo_client(&addr, "tcp", "0.3", "anyone?\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("echo_client: no reply from {addr} within the timeout\n")
    );
    drop(listener);
}

#[test]
fn tcp_server_hanging_up_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).unwrap();
        (&conn).write_all(b"half a rep").unwrap();
    });
    let out = echo_client(&addr, "tcp", "5", "hello\n");
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("echo_client: {addr} closed the connection mid-reply\n")
    );
}

#[test]
fn udp_silent_server_times_out() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = echo_client(&addr, "udp", "0.3", "anyone?\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("echo_client: no reply from {addr} within the timeout\n")
    );
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    for args in [
        &["--transport", "udp"][..], // needs --addr
        &["--addr", "127.0.0.1:1", "--transport", "sctp"],
    ] {
        let out = Command::new(example_bin("echo_client"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("Usage"));
    }
}
