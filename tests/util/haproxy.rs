//! A real HAProxy for end-to-end tests of the PROXY protocol (`tests/haproxy.rs`, and with TLS
//! `checks/tests/tls_haproxy.rs`): started with a configuration, killed by its PID and reaped on drop.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// Finds the `haproxy` binary, or says what to do about its absence.
pub fn haproxy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// A free loopback port: bound, read, released. (HAProxy needs a number in its configuration.)
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An HAProxy process started by the test: killed by its PID and reaped on drop.
pub struct HaProxy {
    child: Child,
    log: PathBuf,
}

impl HaProxy {
    pub fn start(binary: &Path, dir: &Path, config: &str) -> HaProxy {
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, config).unwrap();
        let log = dir.join("haproxy.log");
        let child = Command::new(binary)
            .arg("-db") // foreground, no daemon
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join("haproxy.out")).unwrap())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        HaProxy { child, log }
    }

    /// Polls a connect to `frontend` until it is accepted (bounded by the test timeout).
    pub fn wait_ready(&mut self, frontend: SocketAddr) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("haproxy exited ({status}): {}", self.stderr());
            }
            if TcpStream::connect_timeout(&frontend, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {frontend} within {TIMEOUT:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        // `Child::kill` signals this child's PID only; `wait` reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `haproxy` binary; without one, fails under CI (where `CI` is set: `.ci/run` installs it) and
/// returns `None` elsewhere, after saying loudly that the test is skipped.
pub fn require() -> Option<PathBuf> {
    if let Some(binary) = haproxy_binary() {
        return Some(binary);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "haproxy is not installed, but CI is set: `.ci/run` must install the `haproxy` package"
    );
    eprintln!(
        "\n\n*** SKIPPED haproxy end-to-end test: `haproxy` not found (apt-get install haproxy) ***\n"
    );
    None
}

/// A `mode tcp` configuration: one frontend per `(port, backend line)` — the backend line being the
/// `server` line's address and options, such as `127.0.0.1:4000 send-proxy-v2`.
pub fn tcp_config(frontends: &[(u16, String)]) -> String {
    let mut lines = vec![
        "global".to_string(),
        "    maxconn 100".to_string(),
        "defaults".to_string(),
        "    mode tcp".to_string(),
        "    timeout connect 5s".to_string(),
        "    timeout client 20s".to_string(),
        "    timeout server 20s".to_string(),
    ];
    for (i, (port, server)) in frontends.iter().enumerate() {
        lines.push(format!("frontend fe_{i}"));
        lines.push(format!("    bind 127.0.0.1:{port}"));
        lines.push(format!("    default_backend be_{i}"));
        lines.push(format!("backend be_{i}"));
        lines.push(format!("    server s1 {server}"));
    }
    lines.push(String::new());
    lines.join("\n")
}
