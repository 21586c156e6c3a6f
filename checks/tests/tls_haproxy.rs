//! PROXY protocol first, then TLS, through a real HAProxy: a `mode tcp` frontend relays the client's
//! encrypted bytes to our TLS server with `send-proxy-v2` in front of them. The handler must see the
//! client's own address (bound to 127.0.0.2, so it differs from HAProxy's 127.0.0.1) and the TLS
//! session the client negotiated end to end, under a blocking strategy (`Threading`). `Reactor`
//! refuses this combination for now (`tls.rs`).
//!
//! HAProxy comes from the Debian package `haproxy` (`.ci/run` installs it); without it the test
//! fails under CI and is skipped, loudly, elsewhere.

mod common;
#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::Write;
use std::net::SocketAddr;

use common::pki::{self, Pki};
use rustls::pki_types::ServerName;
use socketserver::proxy_protocol::ProxyProtocol;
use socketserver::tls::Tls;
use socketserver::{StreamRequest, ThreadingTcpServer};
use util::haproxy::{HaProxy, free_port};

/// Answers one line with `peer=<client> via=<proxy> sni=<name> version=<TLS version>`.
fn report(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut req.rfile, &mut line)?;
    let via = req.proxy_peer().map_or("-".to_string(), |p| p.to_string());
    let (sni, version) = req.tls().map_or(("-".into(), "-".into()), |t| {
        (
            t.server_name().unwrap_or("-").to_string(),
            t.version().to_string(),
        )
    });
    let peer = req.peer().to_string();
    writeln!(
        req.wfile,
        "peer={peer} via={via} sni={sni} version={version}"
    )?;
    Ok(())
}

#[test]
fn haproxy_forwards_tls_behind_a_proxy_v2_header() {
    let Some(binary) = util::haproxy::require() else {
        return;
    };
    let pki = Pki::new();
    let cert = pki.server("localhost", &["localhost"]);
    let tls = Tls::builder().cert(&cert.chain, &cert.key).build().unwrap();
    let mut server = ThreadingTcpServer::bind("127.0.0.1:0", report)
        .unwrap()
        .read_timeout(util::TIMEOUT)
        .tls(tls)
        .proxy_protocol(ProxyProtocol::trusted(["127.0.0.1"]).unwrap());
    let backend = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || server.serve_forever());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = util::haproxy::tcp_config(&[(port, format!("{backend} send-proxy-v2"))]);
    let mut haproxy = HaProxy::start(&binary, dir.path(), &config);
    let frontend: SocketAddr = ([127, 0, 0, 1], port).into();
    haproxy.wait_ready(frontend);

    // A TLS client bound to 127.0.0.2, talking through HAProxy.
    let sock = util::connect_from([127, 0, 0, 2].into(), frontend);
    let me = sock.local_addr().unwrap();
    let conn = rustls::ClientConnection::new(
        pki.client_config(&[], None),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut client = rustls::StreamOwned::new(conn, sock);
    let reply = pki::round_trip(&mut client, "hello\n")
        .unwrap_or_else(|e| panic!("{e}; haproxy said: {}", haproxy.stderr()));
    assert!(
        reply.starts_with(&format!("peer={me} via=127.0.0.1:")),
        "the handler must see the client {me}: {reply:?}"
    );
    assert!(
        reply.ends_with(" sni=localhost version=TLSv1.3\n"),
        "{reply:?}"
    );
    drop(client);
    stop.shutdown();
    serving.join().unwrap().unwrap();
}
