//! [`RequestError`]: what went wrong with one request, as handed to the `handle_error` hook.

use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Why a request failed, or why the server could not take one in.
///
/// The server never stops serving because one request failed: every failure is reported to the
/// `handle_error` hook (see [`Server::handle_error`](crate::Server::handle_error)) with the peer's
/// address, and the default hook logs it through the `log` facade. This is Python's
/// `handle_error(request, client_address)`, with the cause as a value instead of "the current exception".
///
/// # Examples
///
/// ```
/// use socketserver::RequestError;
/// let err = RequestError::Panicked("boom".into());
/// assert_eq!(err.to_string(), "handler panicked: boom");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// The handler's `setup`, `handle` or `finish` returned an error.
    Handler(anyhow::Error),
    /// The handler panicked; the payload's message if it had one. The server catches the panic, so one
    /// bad request never takes the server (or a worker thread) down.
    Panicked(String),
    /// Accepting a connection or receiving a datagram failed (`accept(2)`, `recvfrom(2)`), including
    /// descriptor exhaustion (`EMFILE`), after which the server backs off instead of spinning.
    Accept(io::Error),
    /// Sending a datagram reply failed (`sendto(2)`).
    Reply(io::Error),
    /// Preparing an accepted connection for its handler failed (setting its socket options, making it
    /// non-blocking for an event loop); the connection was closed without running the handler.
    Connection(io::Error),
    /// An event-loop connection had output queued and took none of it for the write timeout: its
    /// peer stopped reading, and it was closed (`Reactor`; a blocking handler's write reports the same
    /// as its own `TimedOut` error).
    Stalled(io::Error),
    /// The worker for an accepted request could not be started (`fork(2)` or thread creation failed:
    /// a process or memory limit). The connection was closed at once, and the server backs off before
    /// accepting again, as it does on descriptor exhaustion.
    Spawn(io::Error),
    /// A datagram was larger than the receive buffer. It is dropped rather than handed to the handler cut
    /// short; raise the transport's buffer size to accept it.
    DatagramTruncated {
        /// The datagram's real length, as reported by `MSG_TRUNC`.
        len: usize,
        /// The receive buffer's size.
        capacity: usize,
    },
    /// A forked child that handled the request ended abnormally (non-zero exit or a signal).
    ChildFailed(String),
    /// A trusted proxy's PROXY protocol header was missing, malformed, too long, cut short or too slow
    /// (see [`ProxyProtocol`](crate::proxy_protocol::ProxyProtocol)); the connection was closed without
    /// running the handler. The error's kind says which: `InvalidData` (wrapping a
    /// [`ProxyError`](crate::proxy_protocol::ProxyError)), `UnexpectedEof` or `TimedOut`.
    ProxyHeader(io::Error),
    /// The TLS layer refused the connection: its handshake failed (a plain-text client, no common
    /// protocol or cipher, a client certificate refused under mutual TLS), timed out
    /// ([`TlsBuilder::handshake_timeout`](crate::tls::TlsBuilder::handshake_timeout)), or the client
    /// left before it completed. The connection was closed without running the handler.
    #[cfg(feature = "tls")]
    Tls(io::Error),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Handler(e) => write!(f, "handler failed: {e:#}"),
            RequestError::Panicked(msg) => write!(f, "handler panicked: {msg}"),
            RequestError::Accept(e) => write!(f, "accept failed: {e}"),
            RequestError::Reply(e) => write!(f, "sending the reply failed: {e}"),
            RequestError::Connection(e) => write!(f, "preparing the connection failed: {e}"),
            RequestError::Spawn(e) => write!(f, "starting a worker for the request failed: {e}"),
            RequestError::Stalled(e) => write!(f, "closed a connection that stopped reading: {e}"),
            RequestError::DatagramTruncated { len, capacity } => write!(
                f,
                "datagram of {len} bytes exceeds the {capacity}-byte receive buffer; dropped"
            ),
            RequestError::ChildFailed(how) => write!(f, "forked child {how}"),
            RequestError::ProxyHeader(e) => write!(f, "PROXY protocol header refused: {e}"),
            #[cfg(feature = "tls")]
            RequestError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Handler(e) => Some(e.as_ref()),
            RequestError::Accept(e)
            | RequestError::Reply(e)
            | RequestError::Connection(e)
            | RequestError::Spawn(e)
            | RequestError::Stalled(e)
            | RequestError::ProxyHeader(e) => Some(e),
            #[cfg(feature = "tls")]
            RequestError::Tls(e) => Some(e),
            _ => None,
        }
    }
}

impl RequestError {
    /// Turns a caught panic payload into a `Panicked` error with its message.
    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let msg = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string panic payload)".to_string()
        };
        RequestError::Panicked(msg)
    }

    /// Whether this is a timeout of the connection's read or write (a slow or silent client), of a
    /// trusted proxy's PROXY protocol header, or of a TLS handshake.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::RequestError;
    /// let err = RequestError::Handler(std::io::Error::from(std::io::ErrorKind::WouldBlock).into());
    /// assert!(err.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        match self {
            RequestError::Handler(e) => e.chain().any(|c| {
                c.downcast_ref::<io::Error>().is_some_and(|io| {
                    matches!(
                        io.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    )
                })
            }),
            RequestError::ProxyHeader(e) => e.kind() == io::ErrorKind::TimedOut,
            #[cfg(feature = "tls")]
            RequestError::Tls(e) => e.kind() == io::ErrorKind::TimedOut,
            RequestError::Stalled(_) => true,
            _ => false,
        }
    }
}

/// Runs one hook of a handler, turning both `Err` and a panic into a [`RequestError`]: a handler can
/// never take down the thread (or the event loop) that called it.
pub(crate) fn guarded<R>(f: impl FnOnce() -> anyhow::Result<R>) -> Result<R, RequestError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(RequestError::Handler(e)),
        Err(payload) => Err(RequestError::from_panic(payload)),
    }
}
