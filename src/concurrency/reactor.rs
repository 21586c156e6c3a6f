//! [`Reactor`]: event loops, one per CPU by default, serve every connection.

use std::io;

use super::Concurrency;
use super::sealed::Strategy;
use crate::reactor::MessageHandler;
use crate::reactor::event_loop::{self, LoopOptions};
use crate::serving::{Core, Drained, ServeSummary, Shape};
use crate::transport::sealed::Pollable;
use crate::transport::{Stream, Transport};

/// Serves every connection from `epoll(7)` event loops, one per CPU by default
/// ([`threads`](Self::threads)): the strategy for many mostly-idle connections (chat, push
/// notifications, long polling, game lobbies, proxies).
///
/// # How it differs from the blocking strategies
///
/// [`Sequential`](crate::Sequential), [`Threading`](crate::Threading) and [`Forking`](crate::Forking)
/// give each connection a [`StreamHandler`](crate::StreamHandler) that *owns* it and blocks reading
/// it: simple to write, but a connection costs a thread (≈ 8 MiB of reserved stack, a scheduler entry)
/// or a process, and connections cannot see each other. Under `Reactor` a connection costs a few
/// hundred bytes of state, and the handler is a [`MessageHandler`](crate::reactor::MessageHandler): it is *called* with one decoded
/// message at a time, queues replies through [`Conn`](crate::reactor::Conn) — to its own connection or
/// any other, which is what a chat room needs — and must never block, since every connection waits
/// while a callback runs. A blocking `StreamHandler` does not compile under `Reactor`:
///
/// ```compile_fail
/// use socketserver::{Reactor, Server, StreamRequest, Tcp};
/// let blocking = |_req: &mut StreamRequest| -> anyhow::Result<()> { Ok(()) };
/// let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0")?, blocking)?; // no `Concurrency` impl
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Choose `Reactor` for thousands of connections, or when connections talk to each other; choose
/// `Threading` when handlers block (database calls, file I/O) or are easier to write as straight-line
/// code.
///
/// # What the loop guarantees
///
/// - **Bounded output, paced senders.** Each connection's queued output is bounded by
///   [`write_buffer_limit`](Self::write_buffer_limit). A connection whose own replies fill its
///   queue to the limit is *paused*: the loop stops reading from it until half the queue has drained,
///   so a peer that sends requests but never reads the replies is not served into unbounded memory.
///   A connection whose message takes *other* connections' queues past half the limit
///   ([`send_to`](crate::reactor::Conn::send_to),
///   [`broadcast_except`](crate::reactor::Conn::broadcast_except)) is *held back*: nothing more is
///   read or decoded from it until those queues are down to a quarter. So one client's burst is paced
///   by how fast its receivers read, instead of overflowing them; receivers that read are never
///   dropped for it. A message that would still take a queue past the limit is refused with
///   [`SendError::Full`](crate::reactor::SendError::Full), and the handler decides.
/// - **Write timeout.** A connection with queued output that takes none of it for the server's
///   [`write_timeout`](crate::Server::write_timeout) (60 s by default) is closed and reported, as a
///   blocking write would time out: a client that stopped reading cannot hold back the senders
///   paced by it for longer than that.
/// - **Lean idle connections.** Read and write buffers are allocated when bytes arrive or are queued
///   and released when empty; connection state lives in a slab (a vector with a free list). One read
///   buffer of 64 KiB is shared by the whole loop.
/// - **Idle timeout.** The server's [`read_timeout`](crate::Server::read_timeout) (60 s by default)
///   is the idle timeout here: a connection on which nothing was received or sent for that long is
///   closed. The loop's `epoll_wait` sleeps exactly until the next deadline — no periodic scan.
/// - **Prompt shutdown.** The [`ShutdownHandle`](crate::ShutdownHandle)'s eventfd is in the epoll set,
///   so `shutdown()` wakes the loop at once. The listener is then closed (new connections are refused),
///   nothing more is read, queued output is flushed for up to the server's
///   [`shutdown_timeout`](crate::Server::shutdown_timeout), and every connection is closed
///   (`on_close` runs for each). [`serve_forever`](crate::Server::serve_forever) returns a
///   [`ServeSummary`] counting connections accepted, open at shutdown, flushed and cut.
/// - **Failures stay local.** A callback's `Err` or panic, or input the codec cannot decode, is
///   reported to [`handle_error`](crate::Server::handle_error) and closes that connection only.
///   `EMFILE` on accept backs off (5 ms doubling to 1 s) as the other strategies do, and at
///   [`max_connections`](Self::max_connections) the listener is left unwatched, so excess connections
///   wait in the kernel's backlog.
///
/// # Using every core
///
/// Each loop is one thread with its own epoll set. It reads at most 1 MiB per connection per turn
/// (64 KiB, and more buffers while they come full and the connection's output keeps up, as a thread
/// serving a stream would), so one busy peer cannot starve the others; what it leaves unread it reads
/// again after the turn's other events. It watches plain connections edge-triggered, as tokio does
/// (epoll then looks at a socket once per change rather than again after every report), and those
/// with a TLS layer (or a PROXY header) level-triggered. The first loop accepts and hands each new
/// connection to the loop serving the fewest; from then on that loop alone touches it, so no lock is
/// on the path of a read or a write. Connections of different loops still talk to each other
/// ([`send_to`](crate::reactor::Conn::send_to), [`broadcast_except`](crate::reactor::Conn::broadcast_except)):
/// the message travels to the receiver's loop, in order, under the same bounds.
/// [`threads(1)`](Self::threads) gives the single-threaded loop, whose callbacks never run at the
/// same time.
///
/// # Examples
///
/// A byte echo (no framing: [`RawBytes`](crate::framing::RawBytes)):
///
/// ```
/// use std::io::{Read, Write};
/// use socketserver::framing::RawBytes;
/// use socketserver::reactor::{Conn, MessageHandler};
/// use socketserver::{Reactor, Server, Tcp};
///
/// struct Echo;
/// impl MessageHandler for Echo {
///     type Codec = RawBytes;
///     fn codec(&self) -> RawBytes {
///         RawBytes
///     }
///     fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
///         conn.send(&bytes)?;
///         Ok(())
///     }
/// }
///
/// let mut server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0")?, Echo)?;
/// let addr = server.local_addr().as_inet().unwrap();
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"hello")?;
/// client.shutdown(std::net::Shutdown::Write)?;
/// let mut reply = Vec::new();
/// client.read_to_end(&mut reply)?;
/// assert_eq!(reply, b"hello");
///
/// stop.shutdown();
/// let summary = serving.join().unwrap()?;
/// assert_eq!(summary.requests, 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reactor {
    max_connections: usize,
    write_buffer_limit: usize,
    threads: usize,
    coalesce: std::time::Duration,
    /// The summary of the run that `serve` ended, for `close` to return.
    summary: Option<ServeSummary>,
}

impl Default for Reactor {
    fn default() -> Self {
        Reactor::new()
    }
}

impl Reactor {
    /// The default cap on open connections.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Reactor;
    /// assert_eq!(Reactor::DEFAULT_MAX_CONNECTIONS, 65_536);
    /// // Keep the cap under the descriptor limit, leaving room for the listener and logs.
    /// let (soft, _hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    /// let room = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(16);
    /// let _reactor = Reactor::new().max_connections(room.min(Reactor::DEFAULT_MAX_CONNECTIONS));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;

    /// The default bound on one connection's queued output: 256 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Reactor;
    /// assert_eq!(Reactor::DEFAULT_WRITE_BUFFER_LIMIT, 256 * 1024);
    /// // Large replies (file chunks): four times the default.
    /// let _reactor = Reactor::new().write_buffer_limit(4 * Reactor::DEFAULT_WRITE_BUFFER_LIMIT);
    /// ```
    pub const DEFAULT_WRITE_BUFFER_LIMIT: usize = 256 * 1024;

    /// One event loop per CPU ([`default_threads`](Self::default_threads)), at most 65,536
    /// connections, 256 KiB of queued output per connection.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{Reactor, Server, Tcp};
    /// # use socketserver::{framing::RawBytes, reactor::{Conn, MessageHandler}};
    /// # struct Echo;
    /// # impl MessageHandler for Echo {
    /// #     type Codec = RawBytes;
    /// #     fn codec(&self) -> RawBytes { RawBytes }
    /// #     fn on_message(&self, c: &mut Conn<'_, RawBytes>, m: Vec<u8>) -> anyhow::Result<()> {
    /// #         Ok(c.send(&m)?)
    /// #     }
    /// # }
    /// let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0")?, Echo)?;
    /// # drop(server);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Self {
        Reactor {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            write_buffer_limit: Self::DEFAULT_WRITE_BUFFER_LIMIT,
            threads: Self::default_threads(),
            coalesce: std::time::Duration::ZERO,
            summary: None,
        }
    }

    /// The default number of event loops: one per CPU this process may run on
    /// ([`std::thread::available_parallelism`], which follows `taskset` and cgroup CPU limits), or
    /// one if that cannot be known.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Reactor;
    /// let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// assert_eq!(Reactor::default_threads(), cpus);
    /// ```
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Runs `n` event loops, each on a thread of its own (clamped to 1..=65,535; the default is
    /// [`default_threads`](Self::default_threads)).
    ///
    /// The thread that calls [`serve_forever`](crate::Server::serve_forever) runs the first loop:
    /// it accepts every connection and hands each to the loop serving the fewest, which serves it
    /// from then on. Nothing on a loop's path takes a lock; what a callback does to another loop's
    /// connection — [`send_to`](crate::reactor::Conn::send_to),
    /// [`broadcast_except`](crate::reactor::Conn::broadcast_except),
    /// [`disconnect`](crate::reactor::Conn::disconnect) — travels to that loop as a message, in
    /// order, and the bounded-output rules hold across loops (the receiver's loop queues under its
    /// bound and holds the sender back while the receiver is behind). The handler is shared by all
    /// loops, so its own state is what they share: keep its locks short.
    ///
    /// Connections are opened (their `on_open` runs) in the order their loops come to them, which
    /// across loops need not be the order they connected in: a broadcast reaches the connections
    /// opened by then, so of two clients that join a room at almost the same time, either may be the
    /// one that hears the other's join.
    ///
    /// One loop (`threads(1)`) is the single-threaded reactor: callbacks never run at the same time,
    /// and every `send_to` result is known at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    /// use socketserver::{Reactor, Server, Tcp};
    ///
    /// /// Every line goes to every other client, whichever loop serves it.
    /// struct Room;
    /// impl MessageHandler for Room {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         Ok(conn.send(b"welcome")?)
    ///     }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         let me = conn.id();
    ///         conn.broadcast_except(me, &line)?;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let mut server = Server::new(Reactor::new().threads(4), Tcp::bind("127.0.0.1:0")?, Room)?;
    /// let addr = server.local_addr().as_inet().unwrap();
    /// let stop = server.shutdown_handle();
    /// let serving = std::thread::spawn(move || server.serve_forever());
    ///
    /// let mut clients = Vec::new();
    /// for _ in 0..4 {
    ///     let client = std::net::TcpStream::connect(addr)?;
    ///     let mut lines = BufReader::new(client.try_clone()?).lines();
    ///     assert_eq!(lines.next().unwrap()?, "welcome");
    ///     clients.push((client, lines));
    /// }
    /// clients[0].0.write_all(b"hello, everyone\n")?;
    /// for (_, lines) in &mut clients[1..] {
    ///     assert_eq!(lines.next().unwrap()?, "hello, everyone");
    /// }
    /// stop.shutdown();
    /// serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.clamp(1, usize::from(u16::MAX));
        self
    }

    /// Lets output that *other* connections queued for a connection — a broadcast, a
    /// [`send_to`](crate::reactor::Conn::send_to) — wait up to `delay` for more to join it before it
    /// is written, instead of being written at once (the default, `Duration::ZERO`). It waits only
    /// while the loop has other work ready: a loop that would otherwise sleep writes it first, so an
    /// idle server adds no latency and a busy one batches.
    ///
    /// A chat room or pub/sub server then writes each member a batch of messages instead of one write
    /// per message: fewer system calls on the server, fewer wake-ups and reads on every client, for
    /// a bounded delay. A connection's replies to its own messages are never delayed (anything waiting
    /// goes out with them), nor is a queue already a quarter of the
    /// [`write_buffer_limit`](Self::write_buffer_limit), nor anything once the server drains.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// // A chat room of thousands: each member's lines go out together, at most 2 ms late.
    /// let reactor = socketserver::Reactor::new().coalesce(Duration::from_millis(2));
    /// # drop(reactor);
    /// ```
    pub fn coalesce(mut self, delay: std::time::Duration) -> Self {
        self.coalesce = delay;
        self
    }

    /// Caps open connections (clamped to at least 1). At the cap the loop stops accepting until one
    /// closes; keep it below the process's descriptor limit (`RLIMIT_NOFILE`).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = socketserver::Reactor::new().max_connections(10_000);
    /// # drop(reactor);
    /// ```
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Bounds each connection's queued output, in bytes (clamped to at least 1): reading from a
    /// connection pauses while its queue is at the bound, and messages from other connections that
    /// would pass it are refused. See [What the loop guarantees](Self#what-the-loop-guarantees).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = socketserver::Reactor::new().write_buffer_limit(64 * 1024);
    /// # drop(reactor);
    /// ```
    pub fn write_buffer_limit(mut self, bytes: usize) -> Self {
        self.write_buffer_limit = bytes.max(1);
        self
    }
}

impl<T, H> Strategy<T, H> for Reactor
where
    T: Transport<Kind = Stream> + Pollable,
    H: MessageHandler,
{
    const NAME: &'static str = "Reactor";
    const SHAPE: Shape = Shape::EventLoop;

    fn serve(&mut self, core: &mut Core<T, H>) -> io::Result<()> {
        let options = LoopOptions {
            max_connections: self.max_connections,
            write_buffer_limit: self.write_buffer_limit,
            threads: self.threads,
            coalesce: self.coalesce,
        };
        // The loop drains its connections before it returns, whether it ended by shutdown or by an
        // error: `close` only hands on the summary.
        let (served, summary) = event_loop::serve(options, core);
        self.summary = summary;
        served
    }

    fn close(&mut self, core: &mut Core<T, H>) -> ServeSummary {
        if let Some(summary) = self.summary.take() {
            return summary;
        }
        // Closed without serving: there is nothing to drain.
        if core.close_listener() {
            core.finish(Drained::default())
        } else {
            ServeSummary::default()
        }
    }
}

impl<T, H> Concurrency<T, H> for Reactor
where
    T: Transport<Kind = Stream> + Pollable,
    H: MessageHandler,
{
}
