//! [`MessageHandler`]: serving decoded messages on an event loop, without blocking.

use super::Conn;
use crate::framing::{Decoder, Encoder};

/// Serves the messages of many connections from event-loop threads (one per CPU by default): the
/// handler of the [`Reactor`](crate::Reactor) strategy.
///
/// Where a [`StreamHandler`](crate::StreamHandler) owns its connection and blocks reading it, a message
/// handler is *called*: once when a connection opens, once per complete message (a frame cut from the
/// byte stream by the handler's [`Codec`](Self::Codec)), and once when it closes. It replies — to this
/// connection or to any other one — by queuing bytes through [`Conn`], never by writing to a socket, and
/// it must return quickly: every connection of the loop waits while a callback runs. Do blocking work
/// (a database query, a file read) on another thread, or use a blocking strategy instead.
///
/// One handler value serves every connection, on every event loop of the
/// [`Reactor`](crate::Reactor) (one per CPU by default, [`Reactor::threads`](crate::Reactor::threads)),
/// so its methods take `&self` and may run at the same time on different loops: state shared between
/// connections lives in the handler behind a `Mutex` or atomics (held briefly: a loop waiting on a
/// lock serves nobody), per-connection state in a map keyed by [`ConnId`](super::ConnId) or in the
/// codec.
///
/// A callback that returns `Err` or panics is reported to the server's
/// [`handle_error`](crate::Server::handle_error) hook with the peer's address; that connection is then
/// closed (after its queued output is sent) and the others carry on.
///
/// # Examples
///
/// An upper-casing line server:
///
/// ```
/// use socketserver::framing::Lines;
/// use socketserver::reactor::{Conn, MessageHandler};
/// use socketserver::{Reactor, Server, Tcp};
///
/// struct Upper;
/// impl MessageHandler for Upper {
///     type Codec = Lines;
///     fn codec(&self) -> Lines {
///         Lines::with_max_line_len(4096)
///     }
///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
///         conn.send(&line.to_ascii_uppercase())?;
///         Ok(())
///     }
/// }
///
/// let server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0")?, Upper)?;
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), std::io::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `MessageHandler`, which `Reactor` needs: implement it, or serve a `StreamHandler` with Threading, Pool, Forking, PreFork or Sequential",
    label = "`Reactor` needs a `MessageHandler` here",
    note = "`Reactor` calls a `MessageHandler` with one decoded message at a time; the blocking strategies hand a `StreamHandler` (or a closure taking `&mut StreamRequest`) the whole connection"
)]
pub trait MessageHandler: Send + Sync + 'static {
    /// Cuts messages from each connection's bytes and frames what is sent to it
    /// ([`Lines`](crate::framing::Lines), [`LengthPrefixed`](crate::framing::LengthPrefixed),
    /// [`RawBytes`](crate::framing::RawBytes) for no framing at all, …).
    type Codec: Decoder + Encoder<[u8]> + Send + 'static;

    /// A codec for a new connection (each connection has its own: decoders keep per-stream state).
    fn codec(&self) -> Self::Codec;

    /// A connection was accepted (and passed `verify_request`); greet it, announce it to the others.
    ///
    /// # Errors
    /// Any error; reported with the peer, and the connection is closed.
    fn on_open(&self, conn: &mut Conn<'_, Self::Codec>) -> anyhow::Result<()> {
        let _ = conn;
        Ok(())
    }

    /// One complete message arrived.
    ///
    /// # Errors
    /// Any error; reported with the peer, and the connection is closed once its queued output is sent.
    fn on_message(
        &self,
        conn: &mut Conn<'_, Self::Codec>,
        message: <Self::Codec as Decoder>::Frame,
    ) -> anyhow::Result<()>;

    /// The connection is closing (the peer hung up, it failed, it idled out, it was closed, or the
    /// server is shutting down); nothing more can be sent to it, but the others can be told.
    fn on_close(&self, conn: &mut Conn<'_, Self::Codec>) {
        let _ = conn;
    }
}
