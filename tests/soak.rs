//! 50,000 requests against the echo example: the server's descriptor count and resident memory do not
//! grow beyond a small bound.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use util::{ServerProc, TIMEOUT, connect, eventually, fd_count};

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` request/response round trips on one connection.
fn persistent(addr: &str, n: usize) {
    let mut s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    for i in 0..n {
        let msg = format!("request {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, msg);
    }
}

/// `n` connections of one round trip each, closed with a reset after the reply so that 10,000 closes do
/// not leave 10,000 client ports in TIME_WAIT.
fn churn(addr: &str, n: usize) {
    for i in 0..n {
        let mut s: TcpStream = connect(addr);
        let msg = format!("conn {i}\n");
        s.write_all(msg.as_bytes()).unwrap();
        let mut r = BufReader::new(&s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, msg);
        nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
    }
}

fn soak(concurrency: &str) {
    let mut server = ServerProc::example("echo", &["--concurrency", concurrency]);
    let addr = server.addr.clone();
    // Warm up: thread stacks, allocator arenas and buffers reach their steady state.
    persistent(&addr, 1000);
    churn(&addr, 500);
    let fds = fd_count(server.pid());
    let rss = rss_kib(server.pid());

    let clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || persistent(&addr, 4000))
        })
        .collect();
    churn(&addr, 10_000);
    for c in clients {
        c.join().unwrap();
    }

    assert!(
        eventually(TIMEOUT, || fd_count(server.pid()) <= fds),
        "descriptors {fds} -> {}",
        fd_count(server.pid())
    );
    let grown = rss_kib(server.pid()).saturating_sub(rss);
    assert!(
        grown < 8 * 1024,
        "{concurrency}: RSS grew by {grown} KiB over 50,000 requests (from {rss} KiB)"
    );
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn soak_threading() {
    soak("threading");
}

#[test]
fn soak_sequential() {
    soak("sequential");
}
