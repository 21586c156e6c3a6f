//! UDP servers in this process: echo for each in-process strategy, datagrams over the buffer reported,
//! empty replies not sent.

mod util;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketserver::{Addr, DatagramRequest, RequestError, Sequential, Server, Threading, Udp};
use util::{TIMEOUT, eventually};

fn echo_or_silence(req: &mut DatagramRequest) -> anyhow::Result<()> {
    match req.data() {
        b"silence" => {}
        b"error" => anyhow::bail!("asked to fail"),
        data => req.wfile = data.to_vec(),
    }
    Ok(())
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c
}

macro_rules! udp_suite {
    ($name:ident, $strategy:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn echo_and_hooks() {
                let errors = Arc::new(Mutex::new(Vec::new()));
                let seen = errors.clone();
                let mut server = Server::new(
                    $strategy,
                    Udp::builder()
                        .max_packet_size(1024)
                        .bind("127.0.0.1:0")
                        .unwrap(),
                    echo_or_silence,
                )
                .unwrap()
                .handle_error(move |peer: Option<&Addr>, err: &RequestError| {
                    seen.lock().unwrap().push((peer.cloned(), err.to_string()));
                });
                let addr = server.local_addr().as_inet().unwrap();
                let stop = server.shutdown_handle();
                let t = std::thread::spawn(move || server.serve_forever());
                let c = client();
                let mut buf = vec![0u8; 4096];

                // Echo, from the server's own address.
                c.send_to(b"ping", addr).unwrap();
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (&b"ping"[..], addr));

                // An empty reply sends nothing: the next datagram we get is the next echo.
                c.send_to(b"silence", addr).unwrap();
                c.send_to(b"after", addr).unwrap();
                let (n, _) = c.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"after");

                // Over the 1,024-byte buffer: reported with its real size, never handed over cut.
                c.send_to(&[7u8; 3000], addr).unwrap();
                c.send_to(b"error", addr).unwrap();
                c.send_to(b"still serving", addr).unwrap();
                let (n, _) = c.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"still serving");
                assert!(eventually(TIMEOUT, || errors.lock().unwrap().len() == 2));
                let me = Addr::Inet(c.local_addr().unwrap());
                let errors = errors.lock().unwrap().clone();
                assert!(
                    errors.contains(&(
                        Some(me.clone()),
                        "datagram of 3000 bytes exceeds the 1024-byte receive buffer; dropped"
                            .to_string()
                    )),
                    "{errors:?}"
                );
                assert!(
                    errors.contains(&(Some(me), "handler failed: asked to fail".to_string())),
                    "{errors:?}"
                );

                stop.shutdown();
                let summary = t.join().unwrap().unwrap();
                assert_eq!(summary.requests, 5);
            }

            #[test]
            fn ipv6_echo() {
                let mut server =
                    Server::new($strategy, Udp::bind("[::1]:0").unwrap(), echo_or_silence).unwrap();
                let addr = server.local_addr().as_inet().unwrap();
                let stop = server.shutdown_handle();
                let t = std::thread::spawn(move || server.serve_forever());
                let c = UdpSocket::bind("[::1]:0").unwrap();
                c.set_read_timeout(Some(TIMEOUT)).unwrap();
                c.send_to(b"six", addr).unwrap();
                let mut buf = [0u8; 16];
                let (n, _) = c.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"six");
                stop.shutdown();
                t.join().unwrap().unwrap();
            }
        }
    };
}

udp_suite!(sequential, Sequential::new());
udp_suite!(threading, Threading::new());

#[test]
fn default_buffer_takes_the_largest_udp_payload() {
    let mut server = socketserver::UdpServer::bind("127.0.0.1:0", |req: &mut DatagramRequest| {
        req.wfile = req.data().len().to_string().into_bytes();
        Ok(())
    })
    .unwrap();
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
    let c = client();
    c.send_to(&vec![1u8; 65_507], addr).unwrap(); // the IPv4 maximum
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"65507");
    stop.shutdown();
    t.join().unwrap().unwrap();
    let _ = Duration::ZERO;
}
