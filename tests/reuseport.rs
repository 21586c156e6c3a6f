//! `SO_REUSEPORT` scale-out: several echo processes bound to one TCP port share its connections, and
//! stopping one leaves the others serving every new connection.

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use util::{ServerProc, connect};

/// One connection: reads the `pid <PID>` banner, checks the echo, returns the pid that served it.
fn served_by(addr: SocketAddr) -> i32 {
    let stream = connect(addr);
    let mut reader = BufReader::new(stream);
    let mut banner = String::new();
    reader.read_line(&mut banner).unwrap();
    let pid = banner
        .strip_prefix("pid ")
        .and_then(|p| p.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("banner {banner:?} is not `pid <PID>`"));
    let mut stream = reader.into_inner();
    stream.write_all(b"still an echo\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "still an echo\n");
    pid
}

fn start(addr: &str) -> ServerProc {
    ServerProc::example("echo", &["--addr", addr, "--reuse-port", "--pid-banner"])
}

#[test]
fn processes_share_a_port_and_survive_one_stopping() {
    let first = start("127.0.0.1:0");
    let addr = first.socket_addr();
    let mut servers = vec![first, start(&addr.to_string()), start(&addr.to_string())];
    for s in &servers {
        assert_eq!(s.socket_addr(), addr, "every process binds the same port");
    }

    let mut hits: BTreeMap<i32, usize> = BTreeMap::new();
    for _ in 0..60 {
        *hits.entry(served_by(addr)).or_default() += 1;
    }
    let pids: Vec<i32> = servers.iter().map(ServerProc::pid).collect();
    assert!(
        hits.keys().all(|p| pids.contains(p)),
        "{hits:?} vs {pids:?}"
    );
    assert!(
        hits.len() > 1,
        "the kernel sent all 60 connections to one process: {hits:?}"
    );

    // Stop one gracefully: it exits 0, and every new connection goes to the others.
    let mut stopped = servers.remove(0);
    assert_eq!(stopped.terminate().code(), Some(0));
    let left: Vec<i32> = servers.iter().map(ServerProc::pid).collect();
    for _ in 0..30 {
        let pid = served_by(addr);
        assert!(left.contains(&pid), "served by {pid}, not one of {left:?}");
    }
}
