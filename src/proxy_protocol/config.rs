//! [`ProxyProtocol`]: a stream server's opt-in to PROXY protocol headers from trusted proxies.

use std::time::Duration;

use super::cidr::{Cidr, CidrError};
use crate::addr::Addr;

/// Makes a stream server read a PROXY protocol header (v1 or v2) from its trusted proxies, so that
/// [`StreamRequest::peer`](crate::StreamRequest::peer) is the original client rather than the proxy.
/// Set it with [`Server::proxy_protocol`](crate::Server::proxy_protocol).
///
/// # The policy
///
/// - **Trusted peers must send a header.** A connection from a trusted proxy starts with a v1 or v2
///   header; the handler's `peer()` becomes the header's source address, and the proxy's own address
///   stays available as [`proxy_peer()`](crate::StreamRequest::proxy_peer). A `LOCAL` header (the
///   proxy's own health checks), a v1 `UNKNOWN` or an address family that is not IP keeps the proxy's
///   address as `peer()`. A missing, malformed or oversized header, or one not complete within the
///   [header timeout](Self::header_timeout), closes the connection and is reported to the error hook as
///   [`RequestError::ProxyHeader`](crate::RequestError::ProxyHeader); the handler never runs.
/// - **Untrusted peers are served as they are.** A connection from any other address is served with
///   its real address and its bytes untouched: if it sends something that looks like a PROXY header,
///   the handler reads it as ordinary data. A header is never believed from a peer that is not a
///   configured proxy, as HAProxy's specification requires — otherwise any client could claim any
///   address.
///
/// The header is read by the worker that serves the connection (the thread, the forked child, or — for
/// `Sequential` — the serving loop), never by the accept loop, so a slow proxy stalls only its own
/// connection, for at most the header timeout. Hooks that run before the header is read see the
/// connection's own peer (the proxy): [`verify_request`](crate::Server::verify_request) runs in the
/// accept loop, and the error hook is given the connection's peer too.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use socketserver::proxy_protocol::ProxyProtocol;
/// use socketserver::{StreamRequest, ThreadingTcpServer};
///
/// let proxies = ProxyProtocol::trusted(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])?
///     .header_timeout(Duration::from_secs(2));
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |req: &mut StreamRequest| {
///     log::info!("client {} via {:?}", req.peer(), req.proxy_peer());
///     Ok(())
/// })?
/// .proxy_protocol(proxies);
/// println!("listening on {}", server.local_addr());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    trusted: Trusted,
    pub(crate) header_timeout: Duration,
    pub(crate) max_v2_len: usize,
}

#[derive(Debug, Clone)]
enum Trusted {
    Every,
    Nets(Vec<Cidr>),
}

impl ProxyProtocol {
    /// How long a trusted proxy has to send its whole header, by default: generous for a proxy on the
    /// same network (it sends the header with, or before, the first client bytes), short enough that a
    /// connection that never sends one is soon closed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// assert_eq!(ProxyProtocol::DEFAULT_HEADER_TIMEOUT, Duration::from_secs(5));
    /// // A proxy across a slow WAN link: twice the default.
    /// let _pp = ProxyProtocol::trusted(["10.0.0.0/8"])?.header_timeout(ProxyProtocol::DEFAULT_HEADER_TIMEOUT * 2);
    /// # Ok::<(), socketserver::proxy_protocol::CidrError>(())
    /// ```
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

    /// The default cap on a v2 header's length field: room for the addresses and a few kilobytes of
    /// TLVs (TLS details, unique ids), far less than the 64 KiB the format allows a peer to announce.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// assert_eq!(ProxyProtocol::DEFAULT_MAX_V2_LEN, 4096);
    /// // A proxy that adds large TLVs (client certificates): room for 16 KiB.
    /// let _pp = ProxyProtocol::trusted(["10.0.0.0/8"])?.max_v2_len(4 * ProxyProtocol::DEFAULT_MAX_V2_LEN);
    /// # Ok::<(), socketserver::proxy_protocol::CidrError>(())
    /// ```
    pub const DEFAULT_MAX_V2_LEN: usize = 4096;

    /// Trusts the proxies in `nets` — networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`) or single
    /// addresses (`127.0.0.1`, `::1`). An IPv4 peer seen through a dual-stack IPv6 listener
    /// (`::ffff:10.0.0.1`) matches the IPv4 networks, and a network given in IPv4-mapped form
    /// (`::ffff:10.0.0.1`) is the IPv4 one, matching the peer either way. Unix-socket peers are never in a network; use
    /// [`trust_all`](Self::trust_all) for a Unix socket only the proxy can reach.
    ///
    /// # Errors
    /// The first entry that is not a valid network (see [`Cidr`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// assert!(ProxyProtocol::trusted(["192.168.0.0/16", "::1"]).is_ok());
    /// assert!(ProxyProtocol::trusted(["192.168.0.1/16"]).is_err()); // host bits set: a typo?
    /// ```
    pub fn trusted<I>(nets: I) -> Result<Self, CidrError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nets = nets
            .into_iter()
            .map(|n| n.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(Self::with(Trusted::Nets(nets)))
    }

    /// Trusts every peer: every connection must start with a PROXY header. Only for a listener no one
    /// but the proxy can reach — a Unix socket with restrictive permissions, or a port that a firewall
    /// opens to the proxy alone — since any peer that can connect can then claim any address.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::{proxy_protocol::ProxyProtocol, Addr};
    /// let any = Addr::from("203.0.113.9:1234".parse::<std::net::SocketAddr>().unwrap());
    /// assert!(ProxyProtocol::trust_all().is_trusted(&any));
    /// ```
    pub fn trust_all() -> Self {
        Self::with(Trusted::Every)
    }

    fn with(trusted: Trusted) -> Self {
        ProxyProtocol {
            trusted,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            max_v2_len: Self::DEFAULT_MAX_V2_LEN,
        }
    }

    /// How long a trusted proxy has to send the whole header, from the moment the worker starts
    /// reading it (default [`DEFAULT_HEADER_TIMEOUT`](Self::DEFAULT_HEADER_TIMEOUT)). It is a deadline
    /// for the header as a whole, so a proxy trickling bytes cannot stretch it; it is separate from the
    /// connection's read timeout, which applies from the first byte after the header.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// let pp = ProxyProtocol::trusted(["127.0.0.1"])?.header_timeout(Duration::from_millis(500));
    /// println!("{pp:?}");
    /// # Ok::<(), socketserver::proxy_protocol::CidrError>(())
    /// ```
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// The largest v2 length field accepted (bytes after the 16-byte fixed part; default
    /// [`DEFAULT_MAX_V2_LEN`](Self::DEFAULT_MAX_V2_LEN)). A header announcing more is refused before
    /// any of it is buffered.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::ProxyProtocol;
    /// let pp = ProxyProtocol::trusted(["127.0.0.1"])?.max_v2_len(512);
    /// println!("{pp:?}");
    /// # Ok::<(), socketserver::proxy_protocol::CidrError>(())
    /// ```
    pub fn max_v2_len(mut self, len: usize) -> Self {
        self.max_v2_len = len;
        self
    }

    /// Whether a connection from `peer` must start with a PROXY header (and its header is believed).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use socketserver::{proxy_protocol::ProxyProtocol, Addr};
    ///
    /// let pp = ProxyProtocol::trusted(["10.0.0.0/8"])?;
    /// assert!(pp.is_trusted(&Addr::from("10.9.9.9:5000".parse::<SocketAddr>()?)));
    /// assert!(!pp.is_trusted(&Addr::from("192.0.2.1:5000".parse::<SocketAddr>()?)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_trusted(&self, peer: &Addr) -> bool {
        match &self.trusted {
            Trusted::Every => true,
            Trusted::Nets(nets) => peer
                .as_inet()
                .is_some_and(|a| nets.iter().any(|n| n.contains(a.ip()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn inet(s: &str) -> Addr {
        Addr::from(s.parse::<SocketAddr>().unwrap())
    }

    #[test]
    fn trust_follows_the_networks() {
        let pp = ProxyProtocol::trusted(["127.0.0.1", "10.0.0.0/8", "fd00::/8"]).unwrap();
        assert!(pp.is_trusted(&inet("127.0.0.1:1")));
        assert!(pp.is_trusted(&inet("[::ffff:10.2.3.4]:1")));
        assert!(pp.is_trusted(&inet("[fd12::1]:1")));
        assert!(!pp.is_trusted(&inet("127.0.0.2:1")));
        assert!(!pp.is_trusted(&inet("[::1]:1")));
        let unix = std::os::unix::net::SocketAddr::from_pathname("/run/p.sock").unwrap();
        assert!(!pp.is_trusted(&Addr::from(unix.clone())));
        assert!(ProxyProtocol::trust_all().is_trusted(&Addr::from(unix)));
    }

    /// A proxy named in IPv4-mapped form is trusted whether the listener reports it as IPv4 or, on
    /// a dual-stack `[::]` socket, IPv4-mapped.
    #[test]
    fn ipv4_mapped_proxies_are_trusted() {
        for trusted in ["::ffff:127.0.0.1", "127.0.0.1", "::ffff:127.0.0.0/104"] {
            let pp = ProxyProtocol::trusted([trusted]).unwrap();
            assert!(pp.is_trusted(&inet("127.0.0.1:1")), "{trusted}");
            assert!(pp.is_trusted(&inet("[::ffff:127.0.0.1]:1")), "{trusted}");
            assert!(!pp.is_trusted(&inet("[::1]:1")), "{trusted}");
        }
    }

    #[test]
    fn no_networks_trusts_no_one() {
        let pp = ProxyProtocol::trusted(Vec::<String>::new()).unwrap();
        assert!(!pp.is_trusted(&inet("127.0.0.1:1")));
    }

    #[test]
    fn a_bad_network_is_named() {
        let err = ProxyProtocol::trusted(["10.0.0.0/8", "10.0.0.300"]).unwrap_err();
        assert!(err.to_string().contains("10.0.0.300"), "{err}");
    }
}
