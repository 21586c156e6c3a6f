//! End to end through a real HAProxy: a `mode tcp` frontend on loopback relays to our server with
//! `send-proxy-v2` (and, on a second frontend, `send-proxy` for v1), and the handler must see the test
//! client's own address — bound to 127.0.0.2, so it differs from HAProxy's 127.0.0.1 — as `peer()`.
//!
//! HAProxy comes from the Debian package `haproxy` (`.ci/run` installs it). Without it the test fails
//! in CI (where `CI` is set) and is skipped, loudly, on a developer's machine.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socketserver::proxy_protocol::ProxyProtocol;
use socketserver::{ShutdownHandle, StreamRequest, ThreadingTcpServer};
use util::{TIMEOUT, connect_from};

/// The client's address: not HAProxy's, so seeing it proves the header was used.
const CLIENT_IP: [u8; 4] = [127, 0, 0, 2];

/// Replies `peer=<peer> via=<proxy> dst=<header destination> version=<V1|V2> data=<input>`.
fn report(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut data = String::new();
    req.rfile.read_to_string(&mut data)?;
    let via = req.proxy_peer().map_or("-".to_string(), |p| p.to_string());
    let (dst, version) = match req.proxy_header() {
        Some(h) => (
            h.destination.map_or("-".to_string(), |d| d.to_string()),
            format!("{:?}", h.version),
        ),
        None => ("-".to_string(), "-".to_string()),
    };
    let reply = format!(
        "peer={} via={via} dst={dst} version={version} data={data}",
        req.peer()
    );
    req.wfile.write_all(reply.as_bytes())?;
    Ok(())
}

/// Finds the `haproxy` binary, or says what to do about its absence.
fn haproxy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// A free loopback port: bound, read, released. (HAProxy needs a number in its configuration.)
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An HAProxy process started by the test: killed by its PID and reaped on drop.
struct HaProxy {
    child: Child,
    log: PathBuf,
}

impl HaProxy {
    fn start(binary: &Path, dir: &Path, config: &str) -> HaProxy {
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
    fn wait_ready(&mut self, frontend: SocketAddr) {
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

    fn stderr(&self) -> String {
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

/// Our server in a thread, stopped and joined on drop.
struct Backend {
    addr: SocketAddr,
    stop: ShutdownHandle,
    serving: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start() -> Backend {
        let mut server = ThreadingTcpServer::bind("127.0.0.1:0", report)
            .unwrap()
            .read_timeout(TIMEOUT)
            .proxy_protocol(ProxyProtocol::trusted(["127.0.0.1"]).unwrap());
        let addr = server.local_addr().as_inet().unwrap();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || {
            server.serve_forever().unwrap();
        });
        Backend {
            addr,
            stop,
            serving: Some(serving),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(t) = self.serving.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn haproxy_send_proxy_v1_and_v2_give_the_handler_the_clients_address() {
    let Some(binary) = haproxy_binary() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "haproxy is not installed, but CI is set: `.ci/run` must install the `haproxy` package"
            );
        }
        eprintln!(
            "\n\n*** SKIPPED haproxy end-to-end test: `haproxy` not found (apt-get install haproxy) ***\n"
        );
        return;
    };
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let (v2_port, v1_port) = (free_port(), free_port());
    let backend_addr = backend.addr;
    let config = [
        "global".to_string(),
        "    maxconn 100".to_string(),
        "defaults".to_string(),
        "    mode tcp".to_string(),
        "    timeout connect 5s".to_string(),
        "    timeout client 20s".to_string(),
        "    timeout server 20s".to_string(),
        "frontend fe_v2".to_string(),
        format!("    bind 127.0.0.1:{v2_port}"),
        "    default_backend be_v2".to_string(),
        "frontend fe_v1".to_string(),
        format!("    bind 127.0.0.1:{v1_port}"),
        "    default_backend be_v1".to_string(),
        "backend be_v2".to_string(),
        format!("    server s1 {backend_addr} send-proxy-v2"),
        "backend be_v1".to_string(),
        format!("    server s1 {backend_addr} send-proxy"),
        String::new(),
    ]
    .join("\n");
    let mut haproxy = HaProxy::start(&binary, dir.path(), &config);

    for (port, version) in [(v2_port, "V2"), (v1_port, "V1")] {
        let frontend: SocketAddr = ([127, 0, 0, 1], port).into();
        haproxy.wait_ready(frontend);
        let mut client = connect_from(CLIENT_IP.into(), frontend);
        let me = client.local_addr().unwrap();
        client.write_all(b"hello through haproxy").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client
            .read_to_string(&mut reply)
            .unwrap_or_else(|e| panic!("{version}: {e}; haproxy said: {}", haproxy.stderr()));

        assert!(
            reply.starts_with(&format!("peer={me} via=127.0.0.1:")),
            "{version}: the handler must see the client {me}: {reply:?}"
        );
        assert!(
            reply.ends_with(&format!(
                " dst={frontend} version={version} data=hello through haproxy"
            )),
            "{version}: {reply:?}"
        );
    }
}
