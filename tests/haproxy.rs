//! End to end through a real HAProxy: a `mode tcp` frontend on loopback relays to our server with
//! `send-proxy-v2` (and, on a second frontend, `send-proxy` for v1), and the handler must see the test
//! client's own address — bound to 127.0.0.2, so it differs from HAProxy's 127.0.0.1 — as `peer()`.
//!
//! HAProxy comes from the Debian package `haproxy` (`.ci/run` installs it). Without it the test fails
//! in CI (where `CI` is set) and is skipped, loudly, on a developer's machine.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};

use socketserver::proxy_protocol::ProxyProtocol;
use socketserver::{ShutdownHandle, StreamRequest, ThreadingTcpServer};
use util::haproxy::{HaProxy, free_port};
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
    let Some(binary) = util::haproxy::require() else {
        return;
    };
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let (v2_port, v1_port) = (free_port(), free_port());
    let backend_addr = backend.addr;
    let config = util::haproxy::tcp_config(&[
        (v2_port, format!("{backend_addr} send-proxy-v2")),
        (v1_port, format!("{backend_addr} send-proxy")),
    ]);
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
