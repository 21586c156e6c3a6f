//! The `echo` example, driven as a user would drive it: every transport × strategy, a real client,
//! `listening on` as the first line, a graceful exit 0 on SIGINT and SIGTERM, usage and exit 2 on bad flags.

mod util;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::process::Command;

use nix::sys::signal::Signal;
use util::{ServerProc, TIMEOUT, example_bin, round_trip};

/// A client for one transport: sends a message, returns the echo.
enum Client {
    Stream(String),
    Datagram(UdpSocket, String),
    UnixStream(std::path::PathBuf),
    UnixDatagram(UnixDatagram, std::path::PathBuf),
}

impl Client {
    fn echo(&self, msg: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        match self {
            Client::Stream(addr) => round_trip(addr, msg),
            Client::Datagram(socket, addr) => {
                socket.send_to(msg, addr).unwrap();
                let n = socket.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            }
            Client::UnixStream(path) => {
                let mut s = UnixStream::connect(path).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                s.write_all(msg).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut reply = Vec::new();
                s.read_to_end(&mut reply).unwrap();
                reply
            }
            Client::UnixDatagram(socket, path) => {
                socket.send_to(msg, path).unwrap();
                let n = socket.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            }
        }
    }
}

/// Starts the echo example on `transport` under `concurrency`, echoes through it, and stops it with
/// `signal`: the transport × strategy matrix, as a user would run it.
fn matrix(transport: &str, concurrency: &str, signal: Signal) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let addr = match transport {
        "tcp" | "udp" => "127.0.0.1:0".to_string(),
        _ => path.to_str().unwrap().to_string(),
    };
    let mut server = ServerProc::example(
        "echo",
        &[
            "--addr",
            &addr,
            "--transport",
            transport,
            "--concurrency",
            concurrency,
        ],
    );
    let client = match transport {
        "tcp" => Client::Stream(server.addr.clone()),
        "udp" => {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            Client::Datagram(socket, server.addr.clone())
        }
        "unix" => Client::UnixStream(path.clone()),
        _ => {
            let socket = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
            socket.set_read_timeout(Some(TIMEOUT)).unwrap();
            Client::UnixDatagram(socket, path.clone())
        }
    };
    for i in 0..3 {
        let msg = format!("message {i} over {transport} under {concurrency}\n");
        assert_eq!(client.echo(msg.as_bytes()), msg.as_bytes());
    }
    let status = server.stop_with(signal);
    assert_eq!(
        status.code(),
        Some(0),
        "{transport}/{concurrency}: {status:?}"
    );
    if transport.starts_with("unix") {
        assert!(!path.exists(), "the socket path outlived the server");
    }
}

/// One test per transport × strategy combination that makes sense (`Reactor` serves streams only).
macro_rules! matrix {
    ($($name:ident: $transport:literal, $concurrency:literal, $signal:ident;)*) => {
        $( #[test] fn $name() { matrix($transport, $concurrency, Signal::$signal) } )*
    };
}

matrix! {
    tcp_sequential: "tcp", "sequential", SIGINT;
    tcp_threading: "tcp", "threading", SIGTERM;
    tcp_forking: "tcp", "forking", SIGINT;
    tcp_pool: "tcp", "pool", SIGTERM;
    tcp_prefork: "tcp", "prefork", SIGINT;
    tcp_reactor: "tcp", "reactor", SIGTERM;
    udp_sequential: "udp", "sequential", SIGTERM;
    udp_threading: "udp", "threading", SIGINT;
    udp_forking: "udp", "forking", SIGTERM;
    udp_pool: "udp", "pool", SIGINT;
    udp_prefork: "udp", "prefork", SIGTERM;
    unix_sequential: "unix", "sequential", SIGINT;
    unix_threading: "unix", "threading", SIGTERM;
    unix_forking: "unix", "forking", SIGINT;
    unix_pool: "unix", "pool", SIGTERM;
    unix_prefork: "unix", "prefork", SIGINT;
    unix_reactor: "unix", "reactor", SIGTERM;
    unix_dgram_sequential: "unix-dgram", "sequential", SIGTERM;
    unix_dgram_threading: "unix-dgram", "threading", SIGINT;
    unix_dgram_forking: "unix-dgram", "forking", SIGTERM;
    unix_dgram_pool: "unix-dgram", "pool", SIGINT;
    unix_dgram_prefork: "unix-dgram", "prefork", SIGTERM;
}

#[test]
fn reactor_refuses_datagram_transports() {
    for transport in ["udp", "unix-dgram"] {
        let dir = tempfile::tempdir().unwrap();
        let addr = if transport == "udp" {
            "127.0.0.1:0".to_string()
        } else {
            dir.path().join("s").to_str().unwrap().to_string()
        };
        let out = Command::new(example_bin("echo"))
            .args([
                "--addr",
                &addr,
                "--transport",
                transport,
                "--concurrency",
                "reactor",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{transport}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("stream transports only"));
    }
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

/// A bad flag prints clap's error and the usage exactly once, under the example's own name (not
/// `socketserver`, the crate's), so a user sees which program to fix the command line of.
#[test]
fn bad_flags_print_the_usage_once_under_the_examples_name() {
    let cases: [(&str, &[&str]); 9] = [
        ("echo", &["--nope"]),
        ("echo", &["--concurrency", "bogus"]),
        ("echo", &["--transport", "carrier-pigeon"]),
        (
            "echo_client",
            &["--addr", "127.0.0.1:1", "--transport", "x"],
        ),
        ("fileserver", &["--root", "/", "--nope"]),
        ("timeserver", &["--concurrency", "bogus"]),
        ("http_hello", &["--nope"]),
        ("shutdown_latency", &["--strategy", "bogus"]),
        ("chat", &["--max-line", "lots"]),
    ];
    for (bin, args) in cases {
        let out = Command::new(example_bin(bin)).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert_eq!(
            stderr.matches("Usage:").count(),
            1,
            "{bin} {args:?}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("Usage: {bin} ")),
            "{bin} {args:?}: {stderr}"
        );
        assert!(stderr.starts_with("error: "), "{bin} {args:?}: {stderr}");
    }
}

/// Descriptors 0-2 are stdin, stdout and stderr, never a listening socket: taking one over would
/// close it on failure (stderr included, so the error could not even be printed). They are refused
/// while parsing, with a message.
#[test]
fn listen_fd_refuses_the_standard_descriptors() {
    for fd in ["0", "1", "2"] {
        let out = Command::new(example_bin("echo"))
            .args(["--listen-fd", fd])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--listen-fd {fd}: {stderr}");
        assert!(
            stderr.contains("--listen-fd") && stderr.contains("standard"),
            "--listen-fd {fd}: {stderr}"
        );
    }
}

/// One definition of the strategies serves every example that takes `--concurrency`: each offers the
/// same values (a strategy an example cannot run is refused when chosen, with exit 2 and a reason).
#[test]
fn every_example_offers_the_same_strategies() {
    const ALL: &str = "[possible values: sequential, threading, forking, pool, prefork, reactor]";
    for bin in ["echo", "fileserver", "timeserver", "http_hello"] {
        let out = Command::new(example_bin(bin)).arg("-h").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{bin} -h");
        let help = String::from_utf8_lossy(&out.stdout);
        let line = help
            .lines()
            .skip_while(|l| !l.contains("--concurrency"))
            .take_while(|l| !l.trim_start().starts_with("--") || l.contains("--concurrency"))
            .collect::<String>();
        assert!(line.contains(ALL), "{bin} -h: {help}");
    }
    let out = Command::new(example_bin("shutdown_latency"))
        .arg("-h")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(ALL));
    for (bin, args) in [
        ("fileserver", &["--root", "/"][..]),
        ("timeserver", &[]),
        ("http_hello", &[]),
    ] {
        let out = Command::new(example_bin(bin))
            .args(args)
            .args(["--concurrency", "reactor"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {stderr}");
        assert!(stderr.contains("reactor"), "{bin}: {stderr}");
    }
}

/// `--help` starts with the example's own description, not a comment of the shared flag definitions
/// flattened into it.
#[test]
fn help_describes_the_example_itself() {
    for (bin, about) in [
        ("echo", "Echo server"),
        ("fileserver", "File server"),
        ("timeserver", "UDP time server"),
        ("http_hello", "HTTP/1.1"),
        ("echo_client", "Interactive echo client"),
    ] {
        let out = Command::new(example_bin(bin))
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.starts_with(about), "{bin} --help: {help}");
        assert!(!help.contains("flattened"), "{bin} --help: {help}");
    }
}

/// Commands in the docs run the example, not the shell's built-in `echo` (which would print the
/// flags and serve nothing): `target/release/examples/echo …` or `cargo run --example echo -- …`.
#[test]
fn the_docs_run_the_example_not_the_shell_builtin() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["README.md", "docs/DEPLOYMENT.md"] {
        let Ok(text) = std::fs::read_to_string(root.join(doc)) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            // A command line or inline code starting with a bare `echo --flag`.
            let bare = line.trim_start().starts_with("echo --") || line.contains("`echo --");
            assert!(!bare, "{doc}:{}: {line}", n + 1);
        }
    }
}

/// The contract every server example keeps, so scripts and tests drive any of them alike: the first
/// stdout line is `listening on <bound address>`, and `SIGINT` or `SIGTERM` ends it with exit status
/// 0 after a graceful shutdown — under the default strategy and under a forking one.
#[test]
fn every_server_example_announces_its_address_and_exits_0_on_sigint_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().expect("UTF-8 temp dir").to_string();
    let state = dir.path().join("kv.sock");
    let state = state.to_str().expect("UTF-8 temp path").to_string();
    let examples: [(&str, Vec<&str>); 12] = [
        ("echo", vec![]),
        ("echo", vec!["--concurrency", "prefork"]),
        ("fileserver", vec!["--root", &root]),
        (
            "fileserver",
            vec!["--root", &root, "--concurrency", "forking"],
        ),
        ("timeserver", vec!["--addr", "127.0.0.1:0"]),
        ("http_hello", vec![]),
        ("http_hello", vec!["--concurrency", "prefork"]),
        ("chat", vec![]),
        ("kv", vec![]),
        ("kv_state", vec!["--path", &state]),
        ("whoami", vec![]),
        ("prefork_probe", vec![]),
    ];
    for (bin, args) in &examples {
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            // `ServerProc::example` fails the test unless the first line is `listening on <addr>`.
            let mut server = ServerProc::example(bin, args);
            assert!(!server.addr.is_empty(), "{bin} {args:?}: an empty address");
            let status = server.stop_with(sig);
            assert_eq!(
                status.code(),
                Some(0),
                "{bin} {args:?} on {sig}: {status:?}"
            );
        }
    }
}

/// A flag that tunes another strategy than the one chosen is refused with the reason (exit 2), not
/// silently ignored.
#[test]
fn a_flag_for_another_strategy_is_refused() {
    for (bin, args, expect) in [
        (
            "echo",
            &["--max-requests", "5"][..],
            "--max-requests tunes --concurrency prefork, not threading",
        ),
        (
            "echo",
            &["--concurrency", "forking", "--workers", "2"],
            "--workers tunes --concurrency pool, prefork or reactor, not forking",
        ),
        (
            "http_hello",
            &["--concurrency", "pool", "--max-threads", "8"],
            "--max-threads tunes --concurrency threading, not pool",
        ),
        (
            "fileserver",
            &["--root", "/", "--worker-timeout-secs", "3"],
            "--worker-timeout-secs tunes --concurrency prefork",
        ),
        (
            "echo",
            &["--transport", "udp", "--timeout-secs", "5"],
            "--timeout-secs applies to stream transports",
        ),
    ] {
        let out = Command::new(example_bin(bin))
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(expect), "{bin} {args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{bin} {args:?} served: {:?}",
            out.stdout
        );
    }
}

/// `--timeout-secs 1`: a client that sends nothing is closed after about a second, under a
/// blocking strategy (the socket's timeouts) and the reactor (its loop's idle timer); one that talks
/// is echoed. (`--timeout-secs 0`, no timeout, is what the benchmarks give the blocking strategies
/// for parity with the hand-written servers, which set none.)
#[test]
fn timeout_secs_closes_a_silent_connection() {
    for strategy in ["threading", "reactor"] {
        let mut server = ServerProc::example(
            "echo",
            &[
                "--addr",
                "127.0.0.1:0",
                "--concurrency",
                strategy,
                "--timeout-secs",
                "1",
            ],
        );
        assert_eq!(round_trip(&server.addr, b"still here"), b"still here");
        let mut silent = std::net::TcpStream::connect(&server.addr).unwrap();
        silent.set_read_timeout(Some(TIMEOUT)).unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let outcome = silent.read(&mut buf);
        let waited = started.elapsed();
        // End of stream, or a reset: either way the server let go (not the client's own timeout).
        match outcome {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("{strategy}: the silent connection stayed: {other:?} after {waited:?}"),
        }
        assert!(
            waited >= std::time::Duration::from_millis(500),
            "{strategy}: closed after {waited:?}, before its timeout"
        );
        assert!(server.terminate().success());
    }
}
