//! [`Conn`]: what a [`MessageHandler`](super::MessageHandler) can do with its connection, and with the
//! others of its event loop.

use std::fmt;

use super::id::ConnId;
use super::registry::Registry;
use super::send::{Broadcast, SendError};
use crate::addr::Addr;
use crate::framing::{Encoder, FrameError};
use crate::shutdown::ShutdownHandle;

/// One connection of a [`Reactor`](crate::Reactor), as its [`MessageHandler`](super::MessageHandler)
/// sees it during a callback: reply to it, send to other connections, close it.
///
/// Nothing here touches a socket or blocks. Sends encode the message with the receiving connection's
/// codec and **queue** it; the event loop writes queued bytes when the socket can take them. Closing is
/// likewise carried out by the loop once the callback returns.
///
/// `C` is the handler's codec ([`MessageHandler::Codec`](super::MessageHandler::Codec)).
///
/// # Examples
///
/// ```
/// use socketserver::reactor::{Conn, MessageHandler};
/// use socketserver::framing::Lines;
///
/// /// Replies to each line with its length, and hangs up on "bye".
/// struct Lengths;
/// impl MessageHandler for Lengths {
///     type Codec = Lines;
///     fn codec(&self) -> Lines { Lines::with_max_line_len(1024) }
///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
///         if line == b"bye" {
///             conn.close(); // after the queued replies are sent
///         } else {
///             conn.send(line.len().to_string().as_bytes())?;
///         }
///         Ok(())
///     }
/// }
/// let server = socketserver::Server::new(
///     socketserver::Reactor::new(),
///     socketserver::Tcp::bind("127.0.0.1:0")?,
///     Lengths,
/// )?;
/// # drop(server);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Conn<'a, C> {
    id: ConnId,
    peer: Addr,
    conns: &'a mut Registry<C>,
}

impl<C> fmt::Debug for Conn<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("peer", &self.peer())
            .finish_non_exhaustive()
    }
}

impl<'a, C> Conn<'a, C> {
    /// A view of open connection `id`; `None` if it is not open.
    pub(crate) fn new(id: ConnId, conns: &'a mut Registry<C>) -> Option<Self> {
        let peer = conns.slab.get(id)?.addr.clone();
        Some(Conn { id, peer, conns })
    }

    /// This connection's id, to hand to other connections' [`send_to`](Self::send_to).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct WhoAmI;
    /// impl MessageHandler for WhoAmI {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
    ///         let id = conn.id();
    ///         conn.send(id.to_string().as_bytes())?;
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, WhoAmI)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// let mut lines = BufReader::new(client.try_clone()?).lines();
    /// client.write_all(b"who am I?\n")?;
    /// let reply = lines.next().unwrap()?;
    /// assert!(reply.starts_with('#'), "{reply}"); // `#slot.generation`
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address (Python's `client_address`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Mirror;
    /// impl MessageHandler for Mirror {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
    ///         let peer = conn.peer().to_string();
    ///         conn.send(peer.as_bytes())?;
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Mirror)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// let mut lines = BufReader::new(client.try_clone()?).lines();
    /// client.write_all(b"where am I?\n")?;
    /// assert_eq!(lines.next().unwrap()?, client.local_addr()?.to_string());
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peer(&self) -> &Addr {
        &self.peer
    }

    /// The proxy this connection came through, when a trusted proxy sent a PROXY protocol header
    /// (see [`Server::proxy_protocol`](crate::Server::proxy_protocol)); `None` for a connection
    /// straight from its client. [`peer`](Self::peer) is then the client.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Via;
    /// impl MessageHandler for Via {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         let via = conn.proxy_peer().map_or("direct".to_string(), |p| format!("via {p}"));
    ///         conn.send(via.as_bytes())?;
    ///         Ok(())
    ///     }
    ///     fn on_message(&self, _conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// let mut driver = socketserver::testing::MessageDriver::new(Via)?;
    /// let client = driver.connect("192.0.2.9:4000".parse::<std::net::SocketAddr>().unwrap());
    /// assert_eq!(driver.sent_text(client), "direct\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn proxy_peer(&self) -> Option<&Addr> {
        self.proxied().map(|p| &p.via)
    }

    /// The PROXY protocol header a trusted proxy sent for this connection, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Dest;
    /// impl MessageHandler for Dest {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
    ///         let dest = conn.proxy_header().and_then(|h| h.destination);
    ///         conn.send(format!("{dest:?}").as_bytes())?;
    ///         Ok(())
    ///     }
    /// }
    /// let mut driver = socketserver::testing::MessageDriver::new(Dest)?;
    /// let client = driver.connect("192.0.2.9:4000".parse::<std::net::SocketAddr>().unwrap());
    /// driver.send(client, "where?\n");
    /// assert_eq!(driver.sent_text(client), "None\n"); // not behind a proxy
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn proxy_header(&self) -> Option<&crate::proxy_protocol::ProxyHeader> {
        self.proxied().map(|p| &p.header)
    }

    /// What the TLS handshake settled, for a connection served over TLS
    /// ([`Server::tls`](crate::Server::tls)); `None` for a plain one. The handler's `on_open` runs
    /// once the handshake is done, so this is set from `on_open` on. (The `tls` feature.)
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::reactor::{Conn, MessageHandler};
    /// use socketserver::framing::Lines;
    ///
    /// /// Greets each client with its TLS version, or "plain".
    /// struct Hello;
    /// impl MessageHandler for Hello {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         let how = conn.tls().map_or("plain".to_string(), |t| t.version().to_string());
    ///         conn.send(how.as_bytes())?;
    ///         Ok(())
    ///     }
    ///     fn on_message(&self, _c: &mut Conn<'_, Lines>, _m: Vec<u8>) -> anyhow::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// # let _ = Hello;
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::tls::TlsInfo> {
        self.conns.slab.get(self.id)?.info.tls.as_deref()
    }

    fn proxied(&self) -> Option<&crate::transport::Proxied> {
        self.conns.slab.get(self.id)?.info.proxied.as_deref()
    }

    /// The address of another open connection, in any of the reactor's event loops.
    ///
    /// # Examples
    ///
    /// Telling anyone who asks where the first connection (the host) is:
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    /// use std::sync::Mutex;
    /// use socketserver::reactor::ConnId;
    ///
    /// struct Host(Mutex<Option<ConnId>>);
    /// impl MessageHandler for Host {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         self.0.lock().unwrap().get_or_insert(conn.id());
    ///         Ok(())
    ///     }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
    ///         let host = *self.0.lock().unwrap();
    ///         let answer = match host.and_then(|id| conn.peer_of(id)) {
    ///             Some(addr) => addr.to_string(),
    ///             None => "no host".to_string(),
    ///         };
    ///         conn.send(answer.as_bytes())?;
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Host(Mutex::new(None)))?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// let mut lines = BufReader::new(client.try_clone()?).lines();
    /// client.write_all(b"who hosts?\n")?;
    /// assert_eq!(lines.next().unwrap()?, client.local_addr()?.to_string()); // the first one is us
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn peer_of(&self, id: ConnId) -> Option<Addr> {
        self.conns.peer_of(id)
    }

    /// How many connections the server has open, in all its event loops, this one included.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Lobby;
    /// impl MessageHandler for Lobby {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         let online = conn.connections();
    ///         conn.send(format!("{online} online").as_bytes())?;
    ///         Ok(())
    ///     }
    ///     fn on_message(&self, _conn: &mut Conn<'_, Lines>, _line: Vec<u8>) -> anyhow::Result<()> {
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Lobby)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let client = std::net::TcpStream::connect(addr)?;
    /// let mut lines = BufReader::new(client.try_clone()?).lines();
    /// assert_eq!(lines.next().unwrap()?, "1 online");
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connections(&self) -> usize {
        self.conns.connections()
    }

    /// Bytes queued for this connection that the socket has not taken yet.
    ///
    /// # Examples
    ///
    /// Nothing is written during the callback: replies queue until it returns.
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Queued;
    /// impl MessageHandler for Queued {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         conn.send(&line)?;
    ///         let queued = conn.pending(); // the line and its `\n`
    ///         conn.send(queued.to_string().as_bytes())?;
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Queued)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// let mut lines = BufReader::new(client.try_clone()?).lines();
    /// client.write_all(b"abc\n")?;
    /// assert_eq!(lines.next().unwrap()?, "abc");
    /// assert_eq!(lines.next().unwrap()?, "4");
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pending(&self) -> usize {
        self.conns.slab.get(self.id).map_or(0, |p| p.output.len())
    }

    /// Closes this connection once everything queued for it has been sent. Nothing more is read from
    /// it; [`on_close`](super::MessageHandler::on_close) runs when it is closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Polite;
    /// impl MessageHandler for Polite {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         if line == b"bye" {
    ///             conn.send(b"see you")?;
    ///             conn.close(); // after "see you" is sent
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Polite)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// client.write_all(b"bye\n")?;
    /// let mut rest = String::new();
    /// client.read_to_string(&mut rest)?; // ends: the server closed the connection
    /// assert_eq!(rest, "see you\n");
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&mut self) {
        self.conns.close_gracefully(self.id);
    }

    /// Closes connection `id` (this one or another) at once, discarding what is queued for it — for a
    /// peer that does not read. Does nothing if it is already closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Strict;
    /// impl MessageHandler for Strict {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         if line == b"spam" {
    ///             conn.send(b"never sent")?;
    ///             let me = conn.id();
    ///             conn.disconnect(me); // at once: what was queued is dropped
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Strict)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// client.write_all(b"spam\n")?;
    /// let mut rest = Vec::new();
    /// let _ = client.read_to_end(&mut rest); // EOF, or a reset
    /// assert!(rest.is_empty());
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn disconnect(&mut self, id: ConnId) {
        self.conns.disconnect(id);
    }

    /// The server's shutdown handle: `conn.server().shutdown()` stops the server from a handler.
    ///
    /// # Examples
    ///
    /// An admin command that stops the server:
    ///
    /// ```
    /// use std::io::Write;
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Admin;
    /// impl MessageHandler for Admin {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         if line == b"shutdown" {
    ///             conn.server().shutdown();
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Admin)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// client.write_all(b"shutdown\n")?;
    /// let summary = serving.join().unwrap()?; // serve_forever returned: the server stopped itself
    /// assert_eq!(summary.requests, 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn server(&self) -> &ShutdownHandle {
        &self.conns.shutdown
    }
}

impl<C: Encoder<[u8]>> Conn<'_, C> {
    /// Queues `item`, framed by the codec, for this connection.
    ///
    /// Replies are never refused for being too many: instead the loop stops reading from a connection
    /// while its queue is at the [limit](crate::Reactor::write_buffer_limit), so a peer that sends
    /// requests without reading the replies is paused, not served into unbounded memory.
    ///
    /// # Errors
    /// [`SendError::Encode`] if the codec cannot frame `item`; [`SendError::Closed`] in `on_close`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Reverse;
    /// impl MessageHandler for Reverse {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         let reversed: Vec<u8> = line.iter().rev().copied().collect();
    ///         conn.send(&reversed)?; // framed by the codec: a `\n` is appended
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Reverse)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// let mut lines = BufReader::new(client.try_clone()?).lines();
    /// client.write_all(b"stressed\n")?;
    /// assert_eq!(lines.next().unwrap()?, "desserts");
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send(&mut self, item: &[u8]) -> Result<(), SendError> {
        self.conns.send(self.id, item, false)
    }

    /// Queues an owned buffer for this connection, as [`send`](Self::send) does a slice. With a codec
    /// that sends bytes as they are ([`RawBytes`](crate::framing::RawBytes)), the buffer itself is
    /// queued when nothing else is waiting — no copy — and, once sent, reused for a later read: a
    /// handler that passes bytes through (an echo, a proxy) moves them from socket to socket without
    /// allocating per chunk.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use socketserver::framing::RawBytes;
    /// use socketserver::reactor::{Conn, MessageHandler};
    ///
    /// struct Echo;
    /// impl MessageHandler for Echo {
    ///     type Codec = RawBytes;
    ///     fn codec(&self) -> RawBytes { RawBytes }
    ///     fn on_message(&self, conn: &mut Conn<'_, RawBytes>, bytes: Vec<u8>) -> anyhow::Result<()> {
    ///         conn.send_vec(bytes)?; // the chunk read is the chunk written
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Echo)?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let mut client = std::net::TcpStream::connect(addr)?;
    /// client.write_all(&[7; 100_000])?;
    /// let mut back = vec![0; 100_000];
    /// client.read_exact(&mut back)?;
    /// assert!(back.iter().all(|&b| b == 7));
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_vec(&mut self, bytes: Vec<u8>) -> Result<(), SendError> {
        self.conns.send_vec(self.id, bytes)
    }

    /// Queues `item` for another connection.
    ///
    /// A connection of another event loop ([`Reactor::threads`](crate::Reactor::threads)) gets
    /// `item` framed by this connection's codec and handed to its loop, which queues it under the
    /// same bound and holds this sender back while that receiver is behind. What one connection sends
    /// to another arrives in the order it was sent, whichever loops they are in.
    ///
    /// # Errors
    /// [`SendError::Closed`] if `id` is not open; [`SendError::Full`] (nothing queued) if it would take
    /// that connection's queue past the limit; [`SendError::Encode`] if the codec cannot frame `item`.
    /// For a connection of another loop, only `Encode` is known at once, and `Closed` if that loop
    /// has stopped: a message its loop finds closed, or full, is dropped there.
    ///
    /// # Examples
    ///
    /// Forwarding every message to the first member:
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    /// use std::sync::Mutex;
    /// use socketserver::reactor::ConnId;
    ///
    /// struct Relay { members: Mutex<Vec<ConnId>> }
    /// impl MessageHandler for Relay {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         self.members.lock().unwrap().push(conn.id());
    ///         conn.send(b"welcome")?;
    ///         Ok(())
    ///     }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         let first = self.members.lock().unwrap().first().copied();
    ///         if let Some(first) = first {
    ///             conn.send_to(first, &line)?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Relay { members: Mutex::default() })?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let join = || -> std::io::Result<_> {
    ///     let client = std::net::TcpStream::connect(addr)?;
    ///     let mut lines = BufReader::new(client.try_clone()?).lines();
    ///     assert_eq!(lines.next().unwrap()?, "welcome"); // the server has registered it
    ///     Ok((client, lines))
    /// };
    /// let (_alice, mut alice_lines) = join()?;
    /// let (mut bob, _bob_lines) = join()?;
    /// bob.write_all(b"hi alice\n")?;
    /// assert_eq!(alice_lines.next().unwrap()?, "hi alice");
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_to(&mut self, id: ConnId, item: &[u8]) -> Result<(), SendError> {
        self.conns.send_to(self.id, id, item)
    }

    /// Queues `item` for every open connection except `except` (usually [`self.id()`](Self::id)),
    /// skipping, and listing in [`Broadcast::full`], those whose queue it would take past the limit.
    /// Connections of the other event loops get it through their loops, as with
    /// [`send_to`](Self::send_to), and are counted in [`Broadcast::forwarded`].
    ///
    /// # Errors
    /// The codec cannot frame `item`.
    ///
    /// # Examples
    ///
    /// A chat room: every line goes to everyone else.
    ///
    /// ```
    /// use std::io::{BufRead, BufReader, Write};
    /// use socketserver::framing::Lines;
    /// use socketserver::reactor::{Conn, MessageHandler};
    /// use std::sync::Mutex;
    /// use socketserver::reactor::ConnId;
    ///
    /// struct Room { members: Mutex<Vec<ConnId>> }
    /// impl MessageHandler for Room {
    ///     type Codec = Lines;
    ///     fn codec(&self) -> Lines { Lines::new() }
    ///     fn on_open(&self, conn: &mut Conn<'_, Lines>) -> anyhow::Result<()> {
    ///         self.members.lock().unwrap().push(conn.id());
    ///         conn.send(b"welcome")?;
    ///         Ok(())
    ///     }
    ///     fn on_message(&self, conn: &mut Conn<'_, Lines>, line: Vec<u8>) -> anyhow::Result<()> {
    ///         let me = conn.id();
    ///         let delivery = conn.broadcast_except(me, &line)?;
    ///         let reached = delivery.sent + delivery.forwarded;
    ///         conn.send(format!("delivered to {reached}").as_bytes())?;
    ///         Ok(())
    ///     }
    /// }
    /// # let mut server = socketserver::Server::new(socketserver::Reactor::new(), socketserver::Tcp::bind("127.0.0.1:0")?, Room { members: Mutex::default() })?;
    /// # let addr = server.local_addr().as_inet().unwrap();
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let join = || -> std::io::Result<_> {
    ///     let client = std::net::TcpStream::connect(addr)?;
    ///     let mut lines = BufReader::new(client.try_clone()?).lines();
    ///     assert_eq!(lines.next().unwrap()?, "welcome"); // the server has registered it
    ///     Ok((client, lines))
    /// };
    /// let (_alice, mut alice_lines) = join()?;
    /// let (mut bob, mut bob_lines) = join()?;
    /// bob.write_all(b"hello\n")?;
    /// assert_eq!(alice_lines.next().unwrap()?, "hello");
    /// assert_eq!(bob_lines.next().unwrap()?, "delivered to 1");
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn broadcast_except(
        &mut self,
        except: ConnId,
        item: &[u8],
    ) -> Result<Broadcast, FrameError> {
        self.conns.broadcast_except(self.id, except, item)
    }
}
