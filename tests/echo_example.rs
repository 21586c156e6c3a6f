//! The `echo` example, driven as a user would drive it: every transport × strategy, a real client,
//! `listening on` as the first line, a graceful exit 0 on SIGINT and SIGTERM, usage and exit 2 on bad flags.

mod util;

use std::net::UdpSocket;
use std::process::Command;

use nix::sys::signal::Signal;
use util::{example_bin, round_trip, ServerProc, TIMEOUT};

fn tcp_echo(concurrency: &str) {
    let mut server = ServerProc::example(
        "echo",
        &[
            "--addr",
            "127.0.0.1:0",
            "--transport",
            "tcp",
            "--concurrency",
            concurrency,
        ],
    );
    for i in 0..3 {
        let msg = format!("hello {i} from {concurrency}\n");
        assert_eq!(round_trip(&server.addr, msg.as_bytes()), msg.as_bytes());
    }
    let status = server.stop_with(Signal::SIGINT);
    assert_eq!(status.code(), Some(0), "{concurrency}: {status:?}");
}

fn udp_echo(concurrency: &str) {
    let mut server = ServerProc::example(
        "echo",
        &[
            "--addr",
            "127.0.0.1:0",
            "--transport",
            "udp",
            "--concurrency",
            concurrency,
        ],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    for i in 0..3 {
        let msg = format!("datagram {i}");
        client.send_to(msg.as_bytes(), &server.addr).unwrap();
        let mut buf = [0; 100];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
        assert_eq!(from, server.socket_addr());
    }
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "{concurrency}: {status:?}");
}

#[test]
fn tcp_sequential() {
    tcp_echo("sequential");
}

#[test]
fn tcp_threading() {
    tcp_echo("threading");
}

#[test]
fn tcp_forking() {
    tcp_echo("forking");
}

#[test]
fn udp_sequential() {
    udp_echo("sequential");
}

#[test]
fn udp_threading() {
    udp_echo("threading");
}

#[test]
fn udp_forking() {
    udp_echo("forking");
}

#[test]
fn ipv6_works() {
    let mut server = ServerProc::example("echo", &["--addr", "[::1]:0"]);
    assert!(server.addr.starts_with("[::1]:"), "{}", server.addr);
    assert_eq!(round_trip(&server.addr, b"six"), b"six");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    for args in [
        &["--concurrency", "bogus"][..],
        &["--transport", "carrier-pigeon"],
        &["--nope"],
    ] {
        let out = Command::new(example_bin("echo"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage"),
            "{args:?}"
        );
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(example_bin("echo"))
        .args(["--addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bind(2)") && stderr.contains(&addr) && stderr.contains("in use"),
        "{stderr}"
    );
}
