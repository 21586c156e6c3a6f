//! [`run_stream`] and [`run_datagram`]: one request through exactly the code path a server uses.

use std::sync::Arc;

use super::conn::{MockConn, default_peer};
use super::transports::ReplyRecorder;
use crate::error::RequestError;
use crate::handler::sealed::Handles;
use crate::handler::{DatagramHandler, Env, StreamHandler};
use crate::transport::{Datagram, Incoming, Packet, Stream};

/// An environment for one request served outside a server: a fresh shutdown handle, the default
/// options.
fn standalone_env() -> Result<Env, RequestError> {
    Env::standalone().map_err(RequestError::Connection)
}

/// Serves one scripted connection with `handler`, exactly as a server would (setup → handle → finish,
/// panics caught, `wfile` flushed, the connection closed), and returns the request's first failure.
///
/// # Errors
/// What the server would report to its error hook for this request.
///
/// # Examples
///
/// ```
/// use socketserver::{testing::{run_stream, MockConn}, RequestError, StreamRequest};
///
/// let panicky = |_req: &mut StreamRequest| -> anyhow::Result<()> { panic!("bug") };
/// let err = run_stream(&panicky, MockConn::new()).unwrap_err();
/// assert!(matches!(err, RequestError::Panicked(ref m) if m == "bug"));
/// ```
pub fn run_stream<H: StreamHandler>(handler: &H, conn: MockConn) -> Result<(), RequestError> {
    let env = standalone_env()?;
    let peer = conn.peer.clone();
    let incoming = Incoming::new(Arc::new(conn), peer);
    Handles::<Stream>::serve(handler, incoming, &env)
}

/// Serves one datagram `data` from `127.0.0.1:40000` with `handler`, as a server would, and returns the
/// reply datagram it would send (`None` when the handler wrote nothing).
///
/// # Errors
/// What the server would report to its error hook for this datagram.
///
/// # Examples
///
/// ```
/// use socketserver::{testing::run_datagram, DatagramRequest};
/// let silent = |_req: &mut DatagramRequest| -> anyhow::Result<()> { Ok(()) };
/// assert_eq!(run_datagram(&silent, b"x")?, None);
/// # Ok::<(), socketserver::RequestError>(())
/// ```
pub fn run_datagram<H: DatagramHandler>(
    handler: &H,
    data: &[u8],
) -> Result<Option<Vec<u8>>, RequestError> {
    let env = standalone_env()?;
    let socket = Arc::new(ReplyRecorder::default());
    let packet = Packet {
        data: data.to_vec(),
        peer: default_peer(),
        socket: socket.clone(),
    };
    Handles::<Datagram>::serve(handler, packet, &env)?;
    let reply = socket.sent.lock().pop().map(|(_, bytes)| bytes);
    Ok(reply)
}
