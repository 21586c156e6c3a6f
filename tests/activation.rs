//! Inherited listeners: the socket-activation environment parser (values injected, the process
//! environment untouched), the echo example started by `systemd-socket-activate`, and the echo example
//! serving on a descriptor its parent left open (`--listen-fd N`), including wrong descriptors.

mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use socketserver::activation::{LISTEN_FDS_START, parse};
use util::{ServerProc, TIMEOUT, eventually, example_bin, round_trip};

// ---- the environment parser ----

fn fds(
    listen_pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    pid: u32,
) -> Vec<(RawFd, String)> {
    parse(listen_pid, fds, names, pid)
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|(fd, name)| (fd, name.to_string()))
        .collect()
}

#[test]
fn parses_descriptors_and_names() {
    assert_eq!(
        fds(Some("42"), Some("3"), Some("http:https:metrics"), 42),
        [
            (3, "http".into()),
            (4, "https".into()),
            (5, "metrics".into())
        ]
    );
    assert_eq!(LISTEN_FDS_START, 3);
}

#[test]
fn names_default_to_unknown() {
    assert_eq!(
        fds(Some("42"), Some("2"), None, 42),
        [(3, "unknown".into()), (4, "unknown".into())]
    );
    // Empty names are names too (systemd passes them through).
    assert_eq!(
        fds(Some("42"), Some("2"), Some(":b"), 42),
        [(3, String::new()), (4, "b".into())]
    );
}

#[test]
fn another_processes_sockets_are_ignored() {
    // A child that inherited the environment of an activated parent must not take its sockets.
    assert!(fds(Some("41"), Some("2"), Some("a:b"), 42).is_empty());
    // Not activated at all.
    assert!(fds(None, None, None, 42).is_empty());
    assert!(fds(None, Some("2"), None, 42).is_empty());
    assert!(fds(Some("42"), None, None, 42).is_empty());
    assert!(fds(Some("42"), Some("0"), None, 42).is_empty());
    assert!(fds(Some("42"), Some("0"), Some(""), 42).is_empty());
}

#[test]
fn malformed_values_are_clear_errors() {
    let err = |pid: &str, n: &str, names: Option<&str>| {
        parse(Some(pid), Some(n), names, 42)
            .expect_err("accepted")
            .to_string()
    };
    assert!(err("forty-two", "1", None).contains("LISTEN_PID"));
    assert!(err("-1", "1", None).contains("LISTEN_PID"));
    assert!(err("42", "one", None).contains("LISTEN_FDS"));
    assert!(err("42", "-1", None).contains("LISTEN_FDS"));
    assert!(err("42", "99999999999999999999", None).contains("LISTEN_FDS"));
    assert!(err("42", "2147483647", None).contains("largest descriptor"));
    let mismatch = err("42", "2", Some("only-one"));
    assert!(
        mismatch.contains("LISTEN_FDNAMES") && mismatch.contains("1 name"),
        "{mismatch}"
    );
    assert!(err("42", "1", Some("a:b")).contains("LISTEN_FDNAMES"));
}

#[test]
fn a_huge_count_without_names_allocates_nothing() {
    // The count comes from the environment: it must not size an allocation.
    let announced = parse(Some("42"), Some("2147483000"), None, 42).unwrap();
    assert_eq!(announced.len(), 2_147_483_000);
    assert_eq!(announced.iter().nth(1), Some((4, "unknown")));
}

// ---- systemd-socket-activate ----

const SOCKET_ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

#[test]
fn echo_under_systemd_socket_activate() {
    assert!(
        Path::new(SOCKET_ACTIVATE).exists(),
        "{SOCKET_ACTIVATE} is missing: install Debian's `systemd` package (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");
    let mut cmd = Command::new(SOCKET_ACTIVATE);
    cmd.arg("--listen")
        .arg(&path)
        .arg("--fdname=echo")
        .arg(example_bin("echo"))
        .args(["--systemd", "--concurrency", "threading"]);

    // systemd-socket-activate binds the path, then execs the echo example only when the first client
    // connects: so a client connects (once the path exists) while the server is being started.
    let client_path = path.clone();
    let first = std::thread::spawn(move || {
        assert!(
            eventually(TIMEOUT, || client_path.exists()),
            "systemd-socket-activate never bound the path"
        );
        let mut s = UnixStream::connect(&client_path).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"first, queued before the server ran\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        reply
    });
    let mut server = ServerProc::start(cmd);
    assert_eq!(
        server.addr,
        path.to_str().unwrap(),
        "the real bound address"
    );
    assert_eq!(
        first.join().unwrap(),
        b"first, queued before the server ran\n"
    );
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"second").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"second");

    assert_eq!(server.terminate().code(), Some(0));
    assert!(
        path.exists(),
        "the echo example removed a socket path it did not create"
    );
}

#[test]
fn systemd_flag_without_activation_is_a_clear_error() {
    let out = Command::new(example_bin("echo"))
        .arg("--systemd")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no sockets were passed"), "{stderr}");
}

// ---- --listen-fd ----

/// The echo example with `fd` of this process placed at descriptor `at` in the child (and left open
/// across exec), plus `args`.
fn echo_with_fd(fd: RawFd, at: RawFd, args: &[&str]) -> Command {
    let mut cmd = Command::new(example_bin("echo"));
    cmd.arg("--listen-fd").arg(at.to_string()).args(args);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (dup2, fcntl) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if fd == at {
                // dup2 onto itself is a no-op that leaves close-on-exec set: clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, at) < 0 {
                // dup2's copy does not have close-on-exec, so it survives the exec.
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a command that must fail, returning its output.
fn failing(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    out
}

#[test]
fn echo_serves_an_inherited_tcp_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for concurrency in ["threading", "forking"] {
        let cmd = echo_with_fd(listener.as_raw_fd(), 7, &["--concurrency", concurrency]);
        let mut server = ServerProc::start(cmd);
        assert_eq!(
            server.socket_addr(),
            addr,
            "it prints the inherited socket's address"
        );
        assert_eq!(round_trip(addr, b"inherited"), b"inherited");
        assert_eq!(server.terminate().code(), Some(0));
    }
}

#[test]
fn echo_serves_inherited_udp_and_unix_sockets() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let mut server = ServerProc::start(echo_with_fd(udp.as_raw_fd(), 5, &[]));
    assert_eq!(server.socket_addr(), udp_addr);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.send_to(b"udp", udp_addr).unwrap();
    let mut buf = [0; 16];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"udp");
    assert_eq!(server.terminate().code(), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let dgram = UnixDatagram::bind(&path).unwrap();
    let mut server = ServerProc::start(echo_with_fd(
        dgram.as_raw_fd(),
        6,
        &["--transport", "unix-dgram"],
    ));
    assert_eq!(server.addr, path.to_str().unwrap());
    let client = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.send_to(b"unix", &path).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"unix");
    assert_eq!(server.terminate().code(), Some(0));
    assert!(
        path.exists(),
        "an inherited socket's path belongs to the parent"
    );
}

#[test]
fn a_wrong_inherited_descriptor_is_a_clear_error() {
    // A regular file.
    let file = std::fs::File::open("/dev/null").unwrap();
    let out = failing(echo_with_fd(file.as_raw_fd(), 5, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen-fd 5") && stderr.contains("not a socket"),
        "{stderr}"
    );

    // Nothing open there.
    let mut cmd = Command::new(example_bin("echo"));
    cmd.args(["--listen-fd", "250"]);
    let stderr = String::from_utf8_lossy(&failing(cmd).stderr).to_string();
    assert!(
        stderr.contains("fd 250") && stderr.contains("Bad file descriptor"),
        "{stderr}"
    );

    // A socket of another kind than --transport says.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let out = failing(echo_with_fd(udp.as_raw_fd(), 5, &["--transport", "tcp"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is a UDP socket") && stderr.contains("Tcp"),
        "{stderr}"
    );

    // A TCP socket that was never put into listening mode.
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let out = failing(echo_with_fd(socket.as_raw_fd(), 5, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not listening"), "{stderr}");
}
