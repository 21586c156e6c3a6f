//! Privilege drop, in its own process: `examples/whoami` binds as root, drops to `nobody` with
//! `PrivDrop`, and reports its real/effective/saved ids to each client.
//!
//! A drop changes the whole process, so it never runs inside this test binary. The tests need root
//! (CI runs as root); without it they fail when `CI` is set and are skipped, loudly, otherwise.

mod util;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Gid, Uid, User};
use util::{ServerProc, connect, example_bin};

/// Whether the drop can be tested here; panics under CI when it cannot.
fn running_as_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root, and CI is set: CI must run the tests as root");
    }
    eprintln!("\n\n*** SKIPPED {test}: privilege drop needs root (CI runs it as root) ***\n");
    false
}

fn nobody() -> User {
    User::from_name("nobody")
        .unwrap()
        .expect("the system has a `nobody` user")
}

/// A free privileged port on 127.0.0.1: binding it at all proves the server bound as root.
fn free_privileged_port() -> u16 {
    (600..1000)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port in 600..1000")
}

/// The whoami binary, copied into a world-readable directory so `nobody` can run it too.
fn whoami_for_anyone(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("whoami");
    std::fs::copy(example_bin("whoami"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Connects and returns the server's one-line answer, as `key=value` pairs.
fn ask(server: &ServerProc) -> Vec<(String, String)> {
    let mut line = String::new();
    BufReader::new(connect(&server.addr))
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(answer: &'a [(String, String)], key: &str) -> &'a str {
    answer
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {answer:?}"))
}

#[test]
fn binds_a_privileged_port_as_root_then_serves_as_nobody() {
    if !running_as_root("binds_a_privileged_port_as_root_then_serves_as_nobody") {
        return;
    }
    let nobody = nobody();
    let port = free_privileged_port();
    let mut server = ServerProc::example(
        "whoami",
        &["--addr", &format!("127.0.0.1:{port}"), "--user", "nobody"],
    );
    assert_eq!(server.socket_addr().port(), port);
    let answer = ask(&server);
    let (uid, gid) = (nobody.uid, nobody.gid);
    assert_eq!(
        field(&answer, "uid"),
        format!("{uid}/{uid}/{uid}"),
        "{answer:?}"
    );
    assert_eq!(
        field(&answer, "gid"),
        format!("{gid}/{gid}/{gid}"),
        "{answer:?}"
    );
    assert_eq!(
        field(&answer, "groups"),
        gid.to_string(),
        "root's groups are gone"
    );
    // Still a working server after the drop: a second client, then a graceful stop.
    assert_eq!(field(&ask(&server), "uid"), format!("{uid}/{uid}/{uid}"));
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn group_and_chroot_are_applied() {
    if !running_as_root("group_and_chroot_are_applied") {
        return;
    }
    let nobody = nobody();
    let jail = tempfile::tempdir().unwrap();
    std::fs::set_permissions(jail.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(jail.path().join("INSIDE_THE_JAIL"), b"").unwrap();
    let jail_path = jail.path().to_str().unwrap();
    // A numeric group with no /etc/group entry: the numeric fallback, and not nobody's own group.
    let group = Gid::from_raw(4242);
    let mut server = ServerProc::example(
        "whoami",
        &["--user", "nobody", "--group", "4242", "--chroot", jail_path],
    );
    let answer = ask(&server);
    let uid = nobody.uid;
    assert_eq!(field(&answer, "uid"), format!("{uid}/{uid}/{uid}"));
    assert_eq!(field(&answer, "gid"), format!("{group}/{group}/{group}"));
    assert_eq!(field(&answer, "groups"), "4242");
    assert_eq!(field(&answer, "root"), "INSIDE_THE_JAIL", "{answer:?}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn without_root_a_drop_is_refused_unless_already_the_target() {
    if !running_as_root("without_root_a_drop_is_refused_unless_already_the_target") {
        return; // starting a process as someone else needs root too
    }
    let nobody = nobody();
    let dir = tempfile::tempdir().unwrap();
    let bin = whoami_for_anyone(dir.path());
    let as_nobody = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .uid(nobody.uid.as_raw())
            .gid(nobody.gid.as_raw())
            .env("RUST_LOG", "off");
        cmd
    };
    let refused = |args: &[&str], reason: &str| {
        let out = as_nobody(args).stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: it must not have served");
    };

    // Asked to become root: refused, with the reason, and the server never starts.
    refused(&["--user", "root"], "not root");
    // A chroot needs root even when the ids already match.
    refused(
        &["--user", "nobody", "--chroot", "/"],
        "chroot(2) needs root",
    );

    // Already nobody: nothing to drop, it serves.
    let mut server = ServerProc::start(as_nobody(&["--user", "nobody"]));
    let uid = nobody.uid;
    assert_eq!(field(&ask(&server), "uid"), format!("{uid}/{uid}/{uid}"));
    assert_eq!(server.terminate().code(), Some(0));
    assert!(
        Uid::current().is_root(),
        "the test process itself never changed"
    );
}
