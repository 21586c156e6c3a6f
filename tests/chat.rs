//! The `chat` example, driven by several real clients: broadcast to all but the sender, join and leave
//! notices, a client that never reads neither stalls the others nor grows the server's memory, and
//! over-long lines are refused.

mod util;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{ServerProc, TIMEOUT, connect, example_bin};

struct Client {
    addr: SocketAddr,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client {
            addr: stream.local_addr().unwrap(),
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Connects and reads the welcome line.
    fn join(server: &ServerProc) -> Client {
        let mut client = Client::from_stream(connect(&server.addr));
        let welcome = client.line();
        assert!(welcome.starts_with("* welcome "), "{welcome:?}");
        client
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{}: reading a line: {e}", self.addr));
        assert!(line.ends_with('\n'), "{}: cut line {line:?}", self.addr);
        line.pop();
        line
    }

    fn say(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    /// Reads until the server closes the connection (EOF or reset); returns what came before.
    fn read_until_closed(&mut self) -> String {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{}: expected the server to close: {e}", self.addr),
        }
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// The server's resident memory, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A client with a tiny receive buffer that will never read: the kernel absorbs little for it, so
/// the server's own bound is what is tested.
fn never_reading_client(addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{self as s, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
    let fd = s::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    s::setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    s::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
    TcpStream::from(fd)
}

#[test]
fn lines_reach_every_other_client_but_not_the_sender() {
    let mut server = ServerProc::example("chat", &[]);
    let mut a = Client::join(&server);
    let mut b = Client::join(&server);
    assert_eq!(a.line(), format!("* {} joined", b.addr));
    let mut c = Client::join(&server);
    assert_eq!(a.line(), format!("* {} joined", c.addr));
    assert_eq!(b.line(), format!("* {} joined", c.addr));

    a.say("hello, everyone");
    assert_eq!(b.line(), format!("{}: hello, everyone", a.addr));
    assert_eq!(c.line(), format!("{}: hello, everyone", a.addr));
    // If `a` had been sent its own line, it would come before this one.
    b.say("hi a");
    assert_eq!(a.line(), format!("{}: hi a", b.addr));
    assert_eq!(c.line(), format!("{}: hi a", b.addr));

    let c_addr = c.addr;
    drop(c);
    assert_eq!(a.line(), format!("* {c_addr} left"));
    assert_eq!(b.line(), format!("* {c_addr} left"));
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn a_client_that_never_reads_stalls_no_one_and_is_disconnected() {
    // The sleeper holds the sender back until its write timeout disconnects it.
    let mut server =
        ServerProc::example("chat", &["--write-buffer", "65536", "--write-timeout", "1"]);
    let addr = server.socket_addr();
    let mut sender = Client::join(&server);
    let mut reader = Client::join(&server);
    assert_eq!(sender.line(), format!("* {} joined", reader.addr));
    let sleeper = never_reading_client(addr);
    let sleeper_addr = sleeper.local_addr().unwrap();
    assert_eq!(reader.line(), format!("* {sleeper_addr} joined"));
    let rss_before = rss_kib(server.pid());

    // 16 MiB of chat in batches of 64 lines; the reader must get each batch promptly.
    let text = "x".repeat(900);
    let expected = format!("{}: {text}", sender.addr);
    let left_notice = format!("* {sleeper_addr} left");
    let mut sleeper_left = false;
    let mut slowest = Duration::ZERO;
    for _batch in 0..(16 << 20) / (64 * 900) {
        let sent = Instant::now();
        let mut lines = String::new();
        for _ in 0..64 {
            lines.push_str(&text);
            lines.push('\n');
        }
        sender.writer.write_all(lines.as_bytes()).unwrap();
        let mut got = 0;
        while got < 64 {
            let line = reader.line();
            if line == left_notice {
                sleeper_left = true;
            } else {
                assert_eq!(line, expected);
                got += 1;
            }
        }
        slowest = slowest.max(sent.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(10),
        "a batch took {slowest:?} to arrive"
    );
    assert!(
        sleeper_left,
        "the never-reading client was not disconnected"
    );
    let rss_after = rss_kib(server.pid());
    assert!(
        rss_after < rss_before + 8 * 1024,
        "server RSS grew from {rss_before} to {rss_after} KiB while relaying 16 MiB"
    );
    // The sleeper finds its connection closed once it reads what was delivered.
    let mut sleeper = Client::from_stream(sleeper);
    sleeper.read_until_closed();
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn over_long_lines_are_refused_and_the_sender_disconnected() {
    let mut server = ServerProc::example("chat", &["--max-line", "100"]);
    let mut a = Client::join(&server);

    // Over --max-line: a notice, then the connection is closed.
    let mut b = Client::join(&server);
    assert_eq!(a.line(), format!("* {} joined", b.addr));
    b.say(&"y".repeat(150));
    // `say` writes the line and its end separately: the server may see the end, or not yet.
    let notice = b.read_until_closed();
    match too_long(&notice) {
        (false, len) => assert_eq!(len, 150, "{notice:?}"),
        (true, len) => assert!(len > 100 && len <= 150, "{notice:?}"),
    }
    assert_eq!(a.line(), format!("* {} left", b.addr));

    // Far over it, with no newline ever: told what is known, and closed without buffering the rest.
    let mut c = Client::join(&server);
    assert_eq!(a.line(), format!("* {} joined", c.addr));
    let _ = c.writer.write_all(&[b'z'; 10_000]);
    let notice = c.read_until_closed();
    let (at_least, len) = too_long(&notice);
    assert!(at_least && len > 100 && len <= 10_000, "{notice:?}");
    assert_eq!(a.line(), format!("* {} left", c.addr));

    // The room still works.
    let mut d = Client::join(&server);
    assert_eq!(a.line(), format!("* {} joined", d.addr));
    d.say("short enough");
    assert_eq!(a.line(), format!("{}: short enough", d.addr));
    assert_eq!(server.terminate().code(), Some(0));
}

/// The length in a "line too long" notice, and whether it is a lower bound ("at least").
fn too_long(notice: &str) -> (bool, usize) {
    let rest = notice
        .strip_prefix("* line too long (")
        .unwrap_or_else(|| panic!("not a line-too-long notice: {notice:?}"));
    let (at_least, rest) = match rest.strip_prefix("at least ") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let (len, rest) = rest.split_once(' ').unwrap();
    assert!(
        rest.starts_with("bytes, max ") && rest.ends_with(" bytes): goodbye\n"),
        "{notice:?}"
    );
    (at_least, len.parse().unwrap())
}

/// The notice gives the over-long line's own length, not the bytes that happened to be buffered
/// behind it (a 2,000-byte line followed by more lines was reported as 66,175 bytes): exactly when
/// its end has arrived, else as "at least" what has, which is never more than the line.
#[test]
fn an_over_long_line_is_reported_with_its_own_length() {
    let mut server = ServerProc::example("chat", &["--max-line", "100"]);
    let mut a = Client::join(&server);
    let mut b = Client::join(&server);
    assert_eq!(a.line(), format!("* {} joined", b.addr));
    let mut burst = vec![b'y'; 2000];
    burst.push(b'\n');
    for _ in 0..10_000 {
        burst.extend_from_slice(b"short\n");
    }
    // The server may hang up before taking it all.
    let _ = b.writer.write_all(&burst);
    let notice = b.read_until_closed();
    let (at_least, len) = too_long(&notice);
    assert!(len > 100 && len <= 2000, "{notice:?}");
    assert!(at_least || len == 2000, "{notice:?}");
    // Nothing after the over-long line was relayed.
    assert_eq!(a.line(), format!("* {} left", b.addr));
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    let out = Command::new(example_bin("chat"))
        .args(["--max-line", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

#[test]
fn a_burst_from_one_client_reaches_every_reader_once_and_in_order() {
    const READERS: usize = 5;
    // About 1 MB of short lines in one write: relayed with the sender's prefix, ~17 times that
    // queued for the readers, far past every connection's output limit.
    let lines: usize = 170_000;
    let mut server = ServerProc::example("chat", &["--write-buffer", "65536"]);
    let mut sender = Client::join(&server);
    let mut readers: Vec<Client> = Vec::new();
    for _ in 0..READERS {
        let reader = Client::join(&server);
        assert_eq!(sender.line(), format!("* {} joined", reader.addr));
        for earlier in &mut readers {
            assert_eq!(earlier.line(), format!("* {} joined", reader.addr));
        }
        readers.push(reader);
    }
    let prefix = format!("{}: ", sender.addr);
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                // Every line, once, in order: a reader that is dropped fails here with EOF.
                for i in 0..lines {
                    assert_eq!(reader.line(), format!("{prefix}{i}"), "{}", reader.addr);
                }
                reader
            })
        })
        .collect();
    let mut burst = String::new();
    for i in 0..lines {
        burst.push_str(&i.to_string());
        burst.push('\n');
    }
    assert!(burst.len() >= 1_000_000);
    sender.writer.write_all(burst.as_bytes()).unwrap();
    let readers: Vec<Client> = reading
        .into_iter()
        .map(|t| t.join().expect("a reader missed a line or was dropped"))
        .collect();
    // Everyone is still in the room.
    sender.say("still here?");
    for mut reader in readers {
        assert_eq!(reader.line(), format!("{prefix}still here?"));
    }
    assert_eq!(server.terminate().code(), Some(0));
}
