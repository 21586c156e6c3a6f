//! `Server::stats`: exact counts after a scripted mix of good, failing, panicking, rejected and cut
//! requests under each strategy that serves in this process (the forking ones are counted in
//! `tests/forking.rs`, in processes of their own), and the connection-state hook's sequence for a
//! keep-alive connection.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketserver::framing::Lines;
use socketserver::reactor::{Conn, MessageHandler};
use socketserver::stats::Snapshot;
use socketserver::{
    Addr, ConnState, Pool, Reactor, Sequential, Server, StreamRequest, Tcp, Threading,
};
use util::{Serving, TIMEOUT, connect_from, eventually};

/// Where requests come from. The mix sends each from an address of its own (`client(i)`), so the
/// per-peer limit of one never meets a connection whose end the server has not finished counting.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn client(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, i)
}
/// An address `verify_request` refuses.
const REFUSED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// An address that opens two connections where the per-peer limit allows one.
const GREEDY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A line protocol: `fine` is answered, `error` fails, `panic` panics, `hold` answers `held` and
/// waits for the next command, `slow` answers `waiting` and waits for the rest of its request
/// (until it is cut).
fn lines(req: &mut StreamRequest) -> anyhow::Result<()> {
    loop {
        req.idle();
        let mut line = String::new();
        if req.read_line(&mut line)? == 0 {
            return Ok(());
        }
        match line.trim_end() {
            "fine" => req.write_all(b"fine\n")?,
            "hold" => req.write_all(b"held\n")?,
            "slow" => {
                // Answers, then waits for the rest of its request (it is not between requests, so
                // a drain does not close it): until the drain deadline cuts it.
                req.write_all(b"waiting\n")?;
                req.flush()?;
                req.read_line(&mut line)?;
            }
            "error" => anyhow::bail!("asked to fail"),
            "panic" => panic!("asked to panic"),
            other => anyhow::bail!("unknown command {other:?}"),
        }
        req.flush()?;
    }
}

/// The same protocol for the event loop, except that `slow` floods the connection with more than
/// its socket buffers hold, so it still has output pending (and is cut) at the drain deadline.
struct LinesLoop;

impl MessageHandler for LinesLoop {
    type Codec = Lines;

    fn codec(&self) -> Lines {
        Lines::new()
    }

    fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
        match line.as_slice() {
            b"fine" => conn.send(b"fine")?,
            b"hold" => conn.send(b"held")?,
            b"slow" => {
                conn.send(b"waiting")?;
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..512 {
                    conn.send(&chunk)?; // 32 MiB: more than any loopback socket buffers
                }
            }
            b"error" => anyhow::bail!("asked to fail"),
            b"panic" => panic!("asked to panic"),
            other => anyhow::bail!("unknown command {:?}", String::from_utf8_lossy(other)),
        }
        Ok(())
    }
}

/// Sends `line` from `from`, half-closes, and reads the whole answer.
fn ask(from: Ipv4Addr, to: SocketAddr, line: &str) -> Vec<u8> {
    let mut conn = connect_from(from, to);
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    conn.write_all(line.as_bytes()).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    // A reset (the server closed with our bytes unread) ends the answer as well as EOF does.
    let _ = conn.read_to_end(&mut answer);
    answer
}

/// Opens a connection from `from`, sends `line`, and returns it with the first line of the answer.
fn open(from: Ipv4Addr, to: SocketAddr, line: &str) -> (TcpStream, String) {
    let conn = connect_from(from, to);
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&conn).write_all(line.as_bytes()).unwrap();
    let mut first = String::new();
    BufReader::new(&conn).read_line(&mut first).unwrap();
    (conn, first)
}

/// Whether the server closed `conn` without serving it: EOF (or a reset) before any byte.
fn refused(conn: &mut TcpStream) -> bool {
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut byte = [0; 1];
    !matches!(conn.read(&mut byte), Ok(1..))
}

/// What the mix must produce, beyond what every strategy shares.
struct Expect {
    /// Whether the per-peer limit can refuse anything: not under `Sequential`, which serves one
    /// connection at a time, so no peer ever has a second one open when it accepts.
    per_peer: bool,
}

/// The policy every mix runs under: `REFUSED` is refused, one connection per address, a short drain.
fn configured<C, H>(server: Server<C, Tcp, H>) -> Server<C, Tcp, H>
where
    C: socketserver::Concurrency<Tcp, H>,
{
    server
        .verify_request(|peer: &Addr| peer.as_inet().map(|a| a.ip()) != Some(REFUSED.into()))
        .max_connections_per_peer(1)
        .shutdown_timeout(Duration::from_millis(300))
        .handle_error(|_, _| {})
}

/// Runs the mix against `server` and returns the figures after it stopped:
/// 3 good, 2 failing, 1 panicking, 1 refused by `verify_request`, 1 refused by the per-peer limit
/// (with the connection that held the place, which ends well), 1 cut at the drain deadline.
fn mix<C, H>(server: Server<C, Tcp, H>, expect: &Expect) -> Snapshot
where
    C: socketserver::Concurrency<Tcp, H>,
    Server<C, Tcp, H>: Send + 'static,
{
    let server = configured(server);
    let stats = server.stats();
    let serving = Serving::start(server);
    let addr = serving.addr;
    for i in 1..=3 {
        assert_eq!(ask(client(i), addr, "fine\n"), b"fine\n");
    }
    for (i, line) in (4..).zip(["error\n", "error\n", "panic\n"]) {
        assert_eq!(ask(client(i), addr, line), b"");
    }
    let mut refused_conn = connect_from(REFUSED, addr);
    assert!(
        refused(&mut refused_conn),
        "verify_request let {REFUSED} in"
    );

    if expect.per_peer {
        let (mut holder, first) = open(GREEDY, addr, "hold\n");
        assert_eq!(first, "held\n");
        let mut second = connect_from(GREEDY, addr);
        assert!(
            refused(&mut second),
            "a second connection from {GREEDY} was served"
        );
        holder.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = holder.read_to_end(&mut rest);
    }
    // Every request so far has ended before the one to be cut starts, so nothing else is cut.
    assert!(
        eventually(TIMEOUT, || stats.snapshot().open == 0),
        "requests still open: {:?}",
        stats.snapshot()
    );
    let (_slow, first) = open(CLIENT, addr, "slow\n");
    assert_eq!(first, "waiting\n");
    let summary = serving.finish();
    assert_eq!((summary.cut, summary.drained), (1, 0), "{summary:?}");
    stats.snapshot()
}

/// The counts the mix makes under every strategy.
#[track_caller]
fn assert_counts(now: &Snapshot, expect: &Expect) {
    let held = u64::from(expect.per_peer);
    let r = now.requests;
    assert_eq!(now.accepted, 7 + held, "{now:?}");
    assert_eq!(
        (r.started, r.finished, r.failed, r.panicked, r.cut),
        (7 + held, 6 + held, 2, 1, 1),
        "{now:?}"
    );
    assert_eq!(
        (now.rejected.verify, now.rejected.per_peer),
        (1, held),
        "{now:?}"
    );
    assert_eq!(now.open, 0, "{now:?}");
    assert_eq!(now.capped, 0, "{now:?}");
    assert_eq!(now.durations.count(), 6 + held, "{now:?}");
    assert!(now.durations.p50().is_some() && now.durations.p99() >= now.durations.p50());
}

#[test]
fn sequential_counts_the_mix_exactly() {
    let expect = Expect { per_peer: false };
    let server = Server::new(Sequential::new(), Tcp::bind("127.0.0.1:0").unwrap(), lines).unwrap();
    let now = mix(server, &expect);
    assert_counts(&now, &expect);
    assert_eq!(now.strategy, "Sequential");
    assert!(now.workers.is_none() && now.children.is_none() && now.reactor.is_none());
}

#[test]
fn threading_counts_the_mix_exactly() {
    let expect = Expect { per_peer: true };
    let server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0").unwrap(), lines).unwrap();
    let now = mix(server, &expect);
    assert_counts(&now, &expect);
    let workers = now.workers.expect("Threading counts its threads");
    assert_eq!((workers.busy, workers.queued), (0, 0), "{now:?}");
}

#[test]
fn pool_counts_the_mix_exactly() {
    let expect = Expect { per_peer: true };
    let server = Server::new(Pool::new(4), Tcp::bind("127.0.0.1:0").unwrap(), lines).unwrap();
    let now = mix(server, &expect);
    assert_counts(&now, &expect);
    let workers = now.workers.expect("Pool counts its threads");
    assert_eq!((workers.busy, workers.queued), (0, 0), "{now:?}");
}

#[test]
fn reactor_counts_the_mix_exactly() {
    let expect = Expect { per_peer: true };
    let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0").unwrap(), LinesLoop).unwrap();
    let now = mix(server, &expect);
    assert_counts(&now, &expect);
    let event_loop = now.reactor.expect("Reactor counts its connections");
    assert_eq!(
        (
            event_loop.open,
            event_loop.paused,
            event_loop.queued_output_bytes
        ),
        (0, 0, 0),
        "{now:?}"
    );
}

/// While a request runs its figures are live: open, busy; `capped` counts each pause at the cap.
#[test]
fn threading_shows_busy_threads_and_each_pause_at_its_cap() {
    let server = Server::new(
        Threading::new().max_threads(1),
        Tcp::bind("127.0.0.1:0").unwrap(),
        lines,
    )
    .unwrap()
    .shutdown_timeout(Duration::from_millis(300))
    .handle_error(|_, _| {});
    let stats = server.stats();
    let serving = Serving::start(server);
    let (_slow, first) = open(CLIENT, serving.addr, "slow\n");
    assert_eq!(first, "waiting\n");
    // The one thread is busy, so the loop stops accepting: a second client waits in the backlog.
    assert!(eventually(TIMEOUT, || stats.snapshot().capped == 1));
    let _waiting = connect_from(CLIENT, serving.addr);
    let now = stats.snapshot();
    assert_eq!((now.accepted, now.open), (1, 1), "{now:?}");
    let workers = now.workers.unwrap();
    assert_eq!((workers.busy, workers.idle), (1, 0), "{now:?}");
    serving.finish();
    let now = stats.snapshot();
    assert_eq!(
        (now.accepted, now.requests.cut, now.open),
        (1, 1, 0),
        "{now:?}"
    );
}

/// What a state hook heard, in order.
type StateLog = Arc<Mutex<Vec<ConnState>>>;

/// Records what the state hook hears, in order.
fn state_log() -> (StateLog, impl Fn(&Addr, ConnState) + Send + Sync + 'static) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    (log, move |_: &Addr, state| seen.lock().unwrap().push(state))
}

/// Three requests over one connection, each answered before the next is sent, then a hang-up.
fn keep_alive(addr: SocketAddr) {
    let conn = connect_from(CLIENT, addr);
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(&conn);
    for _ in 0..3 {
        (&conn).write_all(b"fine\n").unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert_eq!(answer, "fine\n");
    }
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
}

/// Polls (bounded) until the hook heard `Closed`, and returns what it heard.
fn heard(log: &Mutex<Vec<ConnState>>) -> Vec<ConnState> {
    assert!(
        eventually(TIMEOUT, || log.lock().unwrap().last()
            == Some(&ConnState::Closed)),
        "no Closed: {:?}",
        log.lock().unwrap()
    );
    log.lock().unwrap().clone()
}

#[test]
fn the_state_hook_follows_a_keep_alive_connection_under_threading() {
    use ConnState::{Active, Closed, Idle, New};
    let (log, hook) = state_log();
    let server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0").unwrap(), lines)
        .unwrap()
        .conn_state(hook);
    let serving = Serving::start(server);
    keep_alive(serving.addr);
    // Active as the handler starts; idle as it waits for each request (the first included), active
    // again as each arrives; closed after the hang-up.
    assert_eq!(
        heard(&log),
        [
            New, Active, Idle, Active, Idle, Active, Idle, Active, Idle, Closed
        ]
    );
    serving.finish();
}

#[test]
fn the_state_hook_follows_a_keep_alive_connection_under_the_reactor() {
    use ConnState::{Active, Closed, Idle, New};
    let (log, hook) = state_log();
    let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0").unwrap(), LinesLoop)
        .unwrap()
        .conn_state(hook);
    let serving = Serving::start(server);
    keep_alive(serving.addr);
    // Active when bytes arrive, idle once the message is handled; the hang-up closes it.
    assert_eq!(
        heard(&log),
        [New, Active, Idle, Active, Idle, Active, Idle, Closed]
    );
    serving.finish();
}

/// A connection cut at the drain deadline ends as `Cut`, not `Closed`.
#[test]
fn the_state_hook_hears_a_cut() {
    use ConnState::{Active, Cut, Idle, New};
    let (log, hook) = state_log();
    let server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0").unwrap(), lines)
        .unwrap()
        .shutdown_timeout(Duration::from_millis(200))
        .handle_error(|_, _| {})
        .conn_state(hook);
    let serving = Serving::start(server);
    let (_slow, first) = open(CLIENT, serving.addr, "slow\n");
    assert_eq!(first, "waiting\n");
    serving.finish();
    // Active as the handler starts, idle until `slow` arrives, active while it waits for the rest of
    // its request: cut then, and nothing after.
    assert_eq!(*log.lock().unwrap(), [New, Active, Idle, Active, Cut]);
}
