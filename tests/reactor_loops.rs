//! A `Reactor` on several event loops: connections spread over the loops, and everything one
//! connection can do to another — `send_to`, `broadcast_except`, `disconnect`, `peer_of`,
//! `connections` — works across loops, with per-sender order, the output bound (`Full` at once),
//! held-back senders, and a drain and summary that count every loop.

mod util;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Lines as IoLines, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use socketserver::framing::Lines;
use socketserver::reactor::{Conn, ConnId, MessageHandler, SendError};
use socketserver::{Reactor, Server, Tcp};
use util::{Serving, TIMEOUT, eventually};

/// Commands, one per line:
/// - `id` → this connection's id, as `Display` shows it;
/// - `all TEXT` → TEXT to everyone else (replies `reached N full M`);
/// - `to N TEXT` → TEXT to the N-th member to join (replies `ok` or the error);
/// - `fill N BYTES` → BYTES-long lines to member N until refused (replies `full after K`);
/// - `peer N` → member N's address, or `none`;
/// - `kick N` → disconnects member N;
/// - `count` → the connections open in all loops.
///
/// Every member is greeted with `welcome #ID` once registered; members are numbered by when they
/// joined, and one that leaves keeps its number.
#[derive(Default)]
struct Room {
    members: Mutex<Vec<ConnId>>,
}

impl Room {
    fn member(&self, n: &str) -> anyhow::Result<ConnId> {
        let n: usize = n.parse()?;
        self.members
            .lock()
            .unwrap()
            .get(n)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no member {n}"))
    }
}

impl MessageHandler for Room {
    type Codec = Lines;
    fn codec(&self) -> Lines {
        Lines::with_max_line_len(1 << 20)
    }
    fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
        self.members.lock().unwrap().push(conn.id());
        conn.send(format!("welcome {}", conn.id()).as_bytes())?;
        Ok(())
    }
    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        let line = String::from_utf8(line)?;
        let mut words = line.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("id"), None, None) => conn.id().to_string(),
            (Some("all"), Some(first), rest) => {
                let text = match rest {
                    Some(rest) => format!("{first} {rest}"),
                    None => first.to_string(),
                };
                let me = conn.id();
                let b = conn.broadcast_except(me, text.as_bytes())?;
                // Replies only when asked, so that bursts stay one-way.
                if text.starts_with('?') {
                    format!("reached {} full {}", b.sent + b.forwarded, b.full.len())
                } else {
                    return Ok(());
                }
            }
            (Some("to"), Some(n), Some(text)) => {
                match conn.send_to(self.member(n)?, text.as_bytes()) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("error: {e}"),
                }
            }
            (Some("fill"), Some(n), Some(bytes)) => {
                let to = self.member(n)?;
                let chunk = vec![b'x'; bytes.parse()?];
                let mut sent = 0;
                let refused = loop {
                    match conn.send_to(to, &chunk) {
                        Ok(()) => sent += 1,
                        Err(e) => break e,
                    }
                    anyhow::ensure!(sent < 10_000, "never refused");
                };
                anyhow::ensure!(refused == SendError::Full, "refused with {refused}");
                format!("full after {sent}")
            }
            (Some("peer"), Some(n), None) => conn
                .peer_of(self.member(n)?)
                .map_or_else(|| "none".to_string(), |a| a.to_string()),
            (Some("kick"), Some(n), None) => {
                conn.disconnect(self.member(n)?);
                "kicked".to_string()
            }
            (Some("count"), None, None) => conn.connections().to_string(),
            _ => anyhow::bail!("unknown command {line:?}"),
        };
        conn.send(reply.as_bytes())?;
        Ok(())
    }
}

struct Member {
    stream: TcpStream,
    lines: IoLines<BufReader<TcpStream>>,
    /// The id the server gave it, e.g. `#3.0` or `#1/2.0`.
    id: String,
}

impl Member {
    fn join(addr: SocketAddr) -> Member {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
        let welcome = lines.next().unwrap().unwrap();
        let id = welcome.strip_prefix("welcome ").unwrap().to_string();
        let mut member = Member { stream, lines, id };
        // Past its first message: a drain closes it between messages instead of waiting for one
        // (a connection that has sent nothing yet is waited for, as Go's `StateNew`).
        let id = member.ask("id");
        assert_eq!(id, member.id);
        member
    }

    fn say(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    #[track_caller]
    fn line(&mut self) -> String {
        self.lines.next().expect("a line").expect("a line in time")
    }

    #[track_caller]
    fn ask(&mut self, line: &str) -> String {
        self.say(line);
        self.line()
    }

    /// The event loop serving it, from its id (`#LOOP/SLOT.GEN`, or `#SLOT.GEN` on the first loop).
    fn event_loop(&self) -> u16 {
        match self.id.trim_start_matches('#').split_once('/') {
            Some((shard, _)) => shard.parse().unwrap(),
            None => 0,
        }
    }
}

fn serve(reactor: Reactor) -> Serving {
    let server = Server::new(reactor, Tcp::bind("127.0.0.1:0").unwrap(), Room::default()).unwrap();
    Serving::start(server)
}

/// `n` members, joined one after another (so member `i` is the server's member `i`).
fn join(serving: &Serving, n: usize) -> Vec<Member> {
    (0..n).map(|_| Member::join(serving.addr)).collect()
}

#[test]
fn connections_spread_over_every_loop() {
    let serving = serve(Reactor::new().threads(3));
    let members = join(&serving, 9);
    let loops: Vec<u16> = members.iter().map(Member::event_loop).collect();
    // Placed on the loop serving the fewest: three each, in turn.
    assert_eq!(loops, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    let ids: HashSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 9, "ids are unique across loops: {ids:?}");
    let summary = serving.finish();
    assert_eq!(summary.requests, 9);
}

#[test]
fn a_room_spanning_every_loop_keeps_each_senders_order() {
    const MEMBERS: usize = 8;
    const LINES: usize = 2_000;
    let serving = serve(Reactor::new().threads(4));
    let mut members = join(&serving, MEMBERS);
    assert_eq!(
        members
            .iter()
            .map(Member::event_loop)
            .collect::<HashSet<_>>()
            .len(),
        4
    );
    // Two senders on different loops talk at once; every other member hears each one's lines once,
    // in that sender's order.
    let (mut a, mut b) = (members.remove(0), members.remove(0));
    assert_ne!(a.event_loop(), b.event_loop());
    let talk = |sender: &mut Member, name: &'static str| {
        let mut burst = String::new();
        for i in 0..LINES {
            burst.push_str(&format!("all {name} {i}\n"));
        }
        sender.stream.write_all(burst.as_bytes()).unwrap();
    };
    std::thread::scope(|scope| {
        scope.spawn(|| talk(&mut a, "a"));
        scope.spawn(|| talk(&mut b, "b"));
        for member in &mut members {
            let (mut next_a, mut next_b) = (0, 0);
            while next_a < LINES || next_b < LINES {
                let line = member.line();
                let (name, i) = line.split_once(' ').unwrap();
                let i: usize = i.parse().unwrap();
                let next = if name == "a" {
                    &mut next_a
                } else {
                    &mut next_b
                };
                assert_eq!(i, *next, "{}: {name}'s lines out of order", member.id);
                *next += 1;
            }
        }
    });
    // A and B heard each other too.
    for (listener, other) in [(&mut a, "b"), (&mut b, "a")] {
        for i in 0..LINES {
            assert_eq!(listener.line(), format!("{other} {i}"));
        }
    }
    assert_eq!(
        a.ask("all ?done"),
        format!("reached {} full 0", MEMBERS - 1)
    );
    serving.finish();
}

#[test]
fn send_to_another_loop_is_refused_at_the_bound_at_once() {
    let limit = 64 * 1024;
    let serving = serve(Reactor::new().threads(2).write_buffer_limit(limit));
    let mut members = join(&serving, 2);
    assert_eq!((members[0].event_loop(), members[1].event_loop()), (0, 1));
    // Member 1 reads nothing yet. Each chunk is 16 KiB plus a newline: three fit under 64 KiB, and
    // the fourth is refused in the same callback — before member 1's loop has seen the first.
    let chunk = 16 * 1024;
    assert_eq!(members[0].ask(&format!("fill 1 {chunk}")), "full after 3");
    // What was queued arrives whole.
    for _ in 0..3 {
        let line = members[1].line();
        assert_eq!(line.len(), chunk);
        assert!(line.bytes().all(|b| b == b'x'));
    }
    // Member 0 was held back while member 1 was behind, and goes on now that it caught up.
    assert_eq!(members[0].ask("count"), "2");
    serving.finish();
}

#[test]
fn peer_of_disconnect_and_count_reach_other_loops() {
    let serving = serve(Reactor::new().threads(2));
    let mut members = join(&serving, 3);
    assert_eq!(members[1].event_loop(), 1);
    let addr_of_1 = members[1].stream.local_addr().unwrap().to_string();
    assert_eq!(members[0].ask("peer 1"), addr_of_1);
    assert_eq!(members[2].ask("peer 1"), addr_of_1);
    assert_eq!(members[0].ask("count"), "3");
    assert_eq!(members[1].ask("count"), "3");
    assert_eq!(members[0].ask("kick 1"), "kicked");
    let mut rest = Vec::new();
    let _ = members[1].stream.read_to_end(&mut rest); // EOF, or a reset
    assert!(
        eventually(TIMEOUT, || members[0].ask("peer 1") == "none"),
        "member 1 is gone"
    );
    assert_eq!(members[0].ask("count"), "2");
    // A message for a connection that closed is refused as closed, from any loop.
    assert_eq!(
        members[0].ask("to 1 hello"),
        "error: the connection is closed"
    );
    assert_eq!(
        members[2].ask("to 1 hello"),
        "error: the connection is closed"
    );
    serving.finish();
}

#[test]
fn a_burst_to_a_slow_reader_on_another_loop_holds_the_sender_back_and_loses_nothing() {
    const LINES: usize = 40_000;
    let serving = serve(Reactor::new().threads(2).write_buffer_limit(16 * 1024));
    let mut members = join(&serving, 2);
    let (sender, mut reader) = (members.remove(0), members.remove(0));
    assert_ne!(sender.event_loop(), reader.event_loop());
    let Member {
        stream: mut to_sender,
        lines: mut from_sender,
        ..
    } = sender;
    // Far more than the bound: the sender is paced by the reader, not the reader cut off.
    let writer = std::thread::spawn(move || {
        let mut burst = String::new();
        for i in 0..LINES {
            burst.push_str(&format!("to 1 line {i}\n"));
        }
        to_sender.write_all(burst.as_bytes()).unwrap();
        to_sender
    });
    // Each `to` is answered `ok`: nothing was refused, because the sender was held back first.
    let answers = std::thread::spawn(move || {
        for i in 0..LINES {
            let answer = from_sender
                .next()
                .expect("an answer")
                .expect("an answer in time");
            assert_eq!(answer, "ok", "answer {i}");
        }
    });
    for i in 0..LINES {
        assert_eq!(reader.line(), format!("line {i}"));
    }
    answers.join().unwrap();
    drop(writer.join().unwrap());
    serving.finish();
}

#[test]
fn a_drain_covers_every_loop_and_the_summary_adds_them_up() {
    let serving = serve(Reactor::new().threads(3));
    let members = join(&serving, 6);
    let summary = serving.finish();
    assert_eq!(summary.requests, 6);
    assert_eq!(summary.in_flight_at_shutdown, 6);
    assert_eq!(summary.drained, 6);
    assert_eq!(summary.cut, 0);
    // Every member, on whichever loop, was closed cleanly.
    for mut member in members {
        let mut rest = Vec::new();
        member.stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

#[test]
fn idle_connections_time_out_on_every_loop() {
    let server = Server::new(
        Reactor::new().threads(2),
        Tcp::bind("127.0.0.1:0").unwrap(),
        Room::default(),
    )
    .unwrap()
    .read_timeout(Duration::from_millis(200));
    let serving = Serving::start(server);
    let members = join(&serving, 4);
    for mut member in members {
        let mut rest = Vec::new();
        member.stream.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "closed for idling, whichever loop: {}",
            member.id
        );
    }
    serving.finish();
}

#[test]
fn the_connection_cap_counts_every_loop() {
    let serving = serve(Reactor::new().threads(2).max_connections(3));
    let mut members = join(&serving, 3);
    // A fourth waits in the backlog, unwelcomed, while three are open on two loops.
    let waiting = TcpStream::connect(serving.addr).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let err = (&waiting)
        .read(&mut byte)
        .expect_err("no welcome at the cap");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    // One on the second loop leaves: the first loop, which accepts, takes the fourth in.
    let leaving = members.remove(1);
    assert_eq!(leaving.event_loop(), 1);
    drop(leaving);
    waiting.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut lines = BufReader::new(&waiting).lines();
    let welcome = lines.next().unwrap().unwrap();
    let id = welcome.strip_prefix("welcome ").unwrap();
    assert!(
        id.starts_with("#1/"),
        "placed on the second loop, which has room: {id}"
    );
    (&waiting).write_all(b"count\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "3");
    serving.finish();
}

#[test]
fn coalesced_output_never_waits_on_an_idle_loop() {
    // Same loop and across loops. A minute-long bound: a line waiting for it would fail the read.
    for threads in [1, 2] {
        let serving = serve(
            Reactor::new()
                .threads(threads)
                .coalesce(Duration::from_secs(60)),
        );
        let mut members = join(&serving, 2);
        let (mut a, mut b) = (members.remove(0), members.remove(0));
        for i in 0..20 {
            a.say(&format!("all line {i}"));
            assert_eq!(b.line(), format!("line {i}"), "{threads} loop(s)");
        }
        // And a reply is never held back.
        assert_eq!(b.ask("count"), "2");
        serving.finish();
    }
}
