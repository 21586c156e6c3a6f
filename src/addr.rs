//! [`Addr`]: the address of a peer or of the server itself, on any transport.

use std::fmt;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr as UnixSocketAddr;

/// A socket address on any of the crate's transports: an IP address and port, or a Unix socket address.
///
/// Handlers receive the peer as an `Addr` whatever the transport, so one handler (and its logging and
/// access checks) works unchanged on TCP, UDP, Unix sockets and the mock transports. It is Python's
/// `client_address` / `server_address`.
///
/// # Examples
///
/// ```
/// use socketserver::Addr;
///
/// let addr = Addr::from("127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(addr.to_string(), "127.0.0.1:8080");
/// assert_eq!(addr.as_inet().map(|a| a.port()), Some(8080));
/// ```
#[derive(Clone)]
pub enum Addr {
    /// An IPv4 or IPv6 address and port (TCP, UDP).
    Inet(SocketAddr),
    /// A Unix domain socket address: a path, a Linux abstract name, or unnamed.
    Unix(UnixSocketAddr),
}

impl Addr {
    /// The IP address and port, if this is an internet address.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Addr;
    /// let addr = Addr::from("[::1]:9".parse::<std::net::SocketAddr>().unwrap());
    /// assert!(addr.as_inet().unwrap().is_ipv6());
    /// ```
    pub fn as_inet(&self) -> Option<SocketAddr> {
        match self {
            Addr::Inet(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix socket address, if this is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::Addr;
    /// let unix = std::os::unix::net::SocketAddr::from_pathname("/run/app.sock").unwrap();
    /// assert!(Addr::from(unix).as_unix().is_some());
    /// ```
    pub fn as_unix(&self) -> Option<&UnixSocketAddr> {
        match self {
            Addr::Unix(a) => Some(a),
            Addr::Inet(_) => None,
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Addr::Inet(a)
    }
}

impl From<UnixSocketAddr> for Addr {
    fn from(a: UnixSocketAddr) -> Self {
        Addr::Unix(a)
    }
}

impl PartialEq for Addr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Addr::Inet(a), Addr::Inet(b)) => a == b,
            (Addr::Unix(a), Addr::Unix(b)) => {
                a.as_pathname() == b.as_pathname()
                    && a.as_abstract_name() == b.as_abstract_name()
                    && a.is_unnamed() == b.is_unnamed()
            }
            _ => false,
        }
    }
}

impl Eq for Addr {}

/// Internet addresses print as `ip:port`, Unix paths as the path, abstract names as `@name` (the
/// convention of `ss` and systemd), and unnamed Unix peers as `(unnamed)`.
impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(a) => {
                if let Some(p) = a.as_pathname() {
                    write!(f, "{}", p.display())
                } else if let Some(name) = a.as_abstract_name() {
                    write!(f, "@{}", String::from_utf8_lossy(name))
                } else {
                    f.write_str("(unnamed)")
                }
            }
        }
    }
}

impl fmt::Debug for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Addr({self})")
    }
}
