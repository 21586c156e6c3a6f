//! HAProxy PROXY protocol, versions 1 (text) and 2 (binary).
//!
//! Why: a server behind a TCP load balancer (HAProxy, nginx `stream`, AWS
//! NLB, ...) only sees the balancer's address. With the PROXY protocol the
//! balancer sends a small header before the client's data that carries the
//! original source and destination addresses. This module parses that header
//! (incrementally, rejecting non-PROXY streams as early as possible), offers a
//! blocking [`read_header`] for stream handlers, and can encode headers for
//! test clients. To have a server read the header of every connection from
//! its trusted proxies, so that handlers see the original client, set a
//! [`ProxyProtocol`] with [`Server::proxy_protocol`](crate::Server::proxy_protocol).
//!
//! Behaviour follows HAProxy's `proxy-protocol.txt`:
//!
//! * v1: `PROXY TCP4|TCP6|UNKNOWN ...\r\n`, at most [`V1_MAX_LEN`] bytes,
//!   exactly one space between fields, no leading zeros in numbers.
//!   `UNKNOWN` yields no addresses (anything up to the CRLF is ignored).
//! * v2: the 12-byte [`V2_SIGNATURE`], version 2, command `LOCAL` or `PROXY`,
//!   a family/transport byte and a big-endian length. For `LOCAL` and for
//!   `AF_UNSPEC` the whole address block is discarded, as the specification
//!   instructs. `AF_UNIX` addresses are not mapped (both addresses are
//!   `None`), but TLVs after them are still exposed. The transport (stream or
//!   datagram) is validated but not reported.
//!
//! ```
//! use socketserver::proxy_protocol::{parse, Parsed};
//!
//! let data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
//! let Ok(Parsed::Complete { header, len }) = parse(data) else { panic!("not parsed") };
//! assert_eq!(header.source, Some("192.168.0.1:56324".parse().unwrap()));
//! assert_eq!(&data[len..], b"GET / HTTP/1.1\r\n");
//! ```

use std::fmt;
use std::io::{self, BufRead};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

mod cidr;
mod config;

pub use cidr::{Cidr, CidrError};
pub use config::ProxyProtocol;

/// Maximum length of a v1 header, CRLF included (the specification's worst
/// case `PROXY UNKNOWN` line with two full IPv6 addresses and ports).
///
/// Why: a receiver must give up when no CRLF shows up within this many bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(socketserver::proxy_protocol::V1_MAX_LEN, 107);
/// ```
pub const V1_MAX_LEN: usize = 107;

/// The 12-byte signature opening every v2 header.
///
/// Why: it is deliberately not valid text in common protocols, so a v2
/// header can never be mistaken for application data.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::V2_SIGNATURE;
/// assert_eq!(&V2_SIGNATURE, b"\r\n\r\n\0\r\nQUIT\n");
/// ```
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Default cap on the v2 length field (bytes after the 16-byte fixed header):
/// the largest value the 16-bit field can hold.
///
/// Why: [`parse`] accepts every header the specification allows; use
/// [`parse_with_limit`] or [`read_header`] with a smaller value to bound the
/// memory an untrusted peer can make a server buffer.
///
/// # Examples
///
/// ```
/// assert_eq!(socketserver::proxy_protocol::DEFAULT_MAX_V2_LEN, 65535);
/// ```
pub const DEFAULT_MAX_V2_LEN: usize = u16::MAX as usize;

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_FIXED_LEN: usize = 16;
/// Longest textual IPv6 address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const V6_TEXT_MAX: usize = 45;

/// Which version of the protocol a header was received in.
///
/// Why: lets callers log or enforce the version their balancer should send.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse, Parsed, Version};
///
/// let Ok(Parsed::Complete { header, .. }) = parse(b"PROXY UNKNOWN\r\n") else { panic!() };
/// assert_eq!(header.version, Version::V1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Human-readable text header.
    V1,
    /// Binary header.
    V2,
}

/// What the sender asks the receiver to do with the addresses.
///
/// Why: `Local` (v2 only) marks connections the proxy made on its own, e.g.
/// health checks; the receiver must then use the real connection endpoints.
/// v1 has no command, so v1 headers always report `Proxy`.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse, Command, Parsed};
///
/// let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
/// let Ok(Parsed::Complete { header, .. }) = parse(local) else { panic!() };
/// assert_eq!(header.command, Command::Local);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// The connection was established by the proxy itself; no addresses.
    Local,
    /// The connection is relayed on behalf of a client.
    Proxy,
}

/// A decoded PROXY protocol header.
///
/// Why: carries the original client (`source`) and the address it connected
/// to (`destination`). Both are `Some` or both are `None`; `None` means "use
/// the real socket addresses" (v1 `UNKNOWN`, v2 `LOCAL`, `AF_UNSPEC`, or
/// `AF_UNIX`, which is not mapped to [`SocketAddr`]). Parsed IPv6 addresses
/// have zero flow info and scope id.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse, Command, Parsed, ProxyHeader, Version};
///
/// let header = ProxyHeader {
///     version: Version::V2,
///     command: Command::Proxy,
///     source: Some("10.0.0.1:4000".parse().unwrap()),
///     destination: Some("10.0.0.2:80".parse().unwrap()),
///     tlvs: vec![(0x01, b"h2".to_vec())],
/// };
/// let bytes = header.to_v2();
/// assert_eq!(parse(&bytes), Ok(Parsed::Complete { header, len: bytes.len() }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    /// Protocol version the header was (or is to be) sent in; ignored by the
    /// encoders, which pick the format by method.
    pub version: Version,
    /// `Local` or `Proxy`.
    pub command: Command,
    /// Original client address.
    pub source: Option<SocketAddr>,
    /// Address the client connected to (usually the proxy's listener).
    pub destination: Option<SocketAddr>,
    /// Raw v2 type-length-value extensions as `(type, value)`, in wire order.
    /// Only filled for v2 `PROXY` headers with an address family other than
    /// `AF_UNSPEC`; empty otherwise.
    pub tlvs: Vec<(u8, Vec<u8>)>,
}

/// Outcome of [`parse`] on a buffer that is not (yet) invalid.
///
/// Why: network reads arrive in pieces; `Incomplete` tells the caller to read
/// more and try again, `Complete` says how many bytes the header occupied so
/// the rest can be handed to the application.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse, Parsed};
///
/// assert_eq!(parse(b"PROXY TCP4 1.2"), Ok(Parsed::Incomplete));
/// assert!(matches!(parse(b"PROXY UNKNOWN\r\n"), Ok(Parsed::Complete { len: 15, .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole, valid header was found at the start of the buffer.
    Complete {
        /// The decoded header.
        header: ProxyHeader,
        /// Number of bytes the header occupies; application data starts here.
        len: usize,
    },
    /// Everything seen so far is a valid header prefix; more bytes are needed.
    Incomplete,
}

/// Why a buffer was rejected.
///
/// Why: servers should close such connections; `NotProxy` in particular is
/// reported from the very first byte that rules out both signatures, so a
/// client speaking the application protocol directly is rejected at once.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse, ProxyError};
///
/// assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
/// let err: std::io::Error = ProxyError::TooLong.into();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyError {
    /// The data does not start with either PROXY protocol signature.
    NotProxy,
    /// No CRLF within [`V1_MAX_LEN`] bytes (v1), or the v2 length field
    /// exceeds the configured limit.
    TooLong,
    /// The header is malformed; the text says which part.
    Invalid(&'static str),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("not a PROXY protocol header"),
            ProxyError::TooLong => f.write_str("PROXY protocol header too long"),
            ProxyError::Invalid(why) => write!(f, "invalid PROXY protocol header: {why}"),
        }
    }
}

impl std::error::Error for ProxyError {}

impl From<ProxyError> for io::Error {
    fn from(err: ProxyError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

/// Parses a PROXY protocol header (v1 or v2) at the start of `buf`, with the
/// v2 length capped at [`DEFAULT_MAX_V2_LEN`].
///
/// Why: the non-blocking building block; call it on whatever has arrived so
/// far. Bytes after the header are never inspected beyond the v1 search
/// window.
///
/// # Errors
///
/// [`ProxyError::NotProxy`] as soon as the first bytes match neither
/// signature, [`ProxyError::TooLong`] for an over-long header, and
/// [`ProxyError::Invalid`] as soon as the bytes seen cannot begin a valid
/// header.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse, Parsed, ProxyError};
///
/// assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
/// assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n").unwrap_err(),
///            ProxyError::Invalid("invalid source port"));
/// ```
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    parse_with_limit(buf, DEFAULT_MAX_V2_LEN)
}

/// Like [`parse`], but rejects v2 headers whose length field (bytes after the
/// 16-byte fixed part) exceeds `max_v2_len`.
///
/// Why: bounds how much a peer can make the server buffer before the header
/// is known to be complete.
///
/// # Errors
///
/// As [`parse`]; [`ProxyError::TooLong`] is returned as soon as the length
/// field is readable and above `max_v2_len`.
///
/// # Examples
///
/// ```
/// use socketserver::proxy_protocol::{parse_with_limit, ProxyError};
///
/// let big = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x10\x00";
/// assert_eq!(parse_with_limit(big, 1024), Err(ProxyError::TooLong));
/// ```
pub fn parse_with_limit(buf: &[u8], max_v2_len: usize) -> Result<Parsed, ProxyError> {
    Ok(match step(buf, max_v2_len)? {
        Step::Done(header, len) => Parsed::Complete { header, len },
        Step::Need(_) => Parsed::Incomplete,
    })
}

/// Reads one PROXY protocol header from `reader`, consuming exactly the
/// header's bytes; whatever follows stays in the reader for the application.
///
/// Why: the convenient entry point for blocking stream handlers. Wrap the
/// socket in a [`std::io::BufReader`] and keep using that reader afterwards.
/// This function does not time out on its own: a peer that sends slowly
/// blocks it for as long as the underlying reader allows, so set a read
/// timeout on the socket (e.g. `TcpStream::set_read_timeout`) to bound it.
/// `max_v2_len` caps the v2 length field, see [`parse_with_limit`].
///
/// # Errors
///
/// [`io::ErrorKind::UnexpectedEof`] if the stream ends before the header is
/// complete, [`io::ErrorKind::InvalidData`] (wrapping a [`ProxyError`]) for a
/// missing or malformed header, and any error of the reader itself (such as
/// `WouldBlock`/`TimedOut` from a read timeout).
///
/// # Examples
///
/// ```
/// use std::io::{BufReader, Read};
/// use socketserver::proxy_protocol::read_header;
///
/// let wire: &[u8] = b"PROXY TCP6 ::1 ::2 1000 2000\r\nHELLO";
/// let mut reader = BufReader::new(wire);
/// let header = read_header(&mut reader, 4096)?;
/// assert_eq!(header.destination, Some("[::2]:2000".parse().unwrap()));
/// let mut rest = String::new();
/// reader.read_to_string(&mut rest)?;
/// assert_eq!(rest, "HELLO");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn read_header<R: BufRead + ?Sized>(
    reader: &mut R,
    max_v2_len: usize,
) -> io::Result<ProxyHeader> {
    let mut acc: Vec<u8> = Vec::new();
    // Minimum total header length known so far; no point parsing before it.
    let mut need = 1;
    loop {
        let avail = match reader.fill_buf() {
            Ok(avail) => avail,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended before the PROXY protocol header was complete",
            ));
        }
        let before = acc.len();
        let taken = avail.len();
        acc.extend_from_slice(avail);
        if acc.len() >= need {
            match step(&acc, max_v2_len)? {
                Step::Done(header, len) => {
                    // `acc[..before]` was an incomplete header, so len > before.
                    reader.consume(len.saturating_sub(before));
                    return Ok(header);
                }
                Step::Need(n) => need = n,
            }
        }
        // The header is longer than `acc`, so all of `avail` belongs to it.
        reader.consume(taken);
    }
}

impl ProxyHeader {
    /// Encodes the header as a v1 text line (CRLF included).
    ///
    /// Why: for test clients and proxies written with this crate. Emits
    /// `TCP4`/`TCP6` when the command is `Proxy` and both addresses are
    /// present and of the same IP family, otherwise `PROXY UNKNOWN\r\n`.
    /// Ports, TLVs, flow info and scope ids not representable in v1 are
    /// dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::{Command, ProxyHeader, Version};
    ///
    /// let header = ProxyHeader {
    ///     version: Version::V1,
    ///     command: Command::Proxy,
    ///     source: Some("192.168.0.1:56324".parse().unwrap()),
    ///     destination: Some("192.168.0.11:443".parse().unwrap()),
    ///     tlvs: Vec::new(),
    /// };
    /// assert_eq!(header.to_v1(), "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    /// ```
    pub fn to_v1(&self) -> String {
        match self.same_family_addrs() {
            Some((SocketAddr::V4(s), SocketAddr::V4(d))) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            ),
            Some((SocketAddr::V6(s), SocketAddr::V6(d))) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            ),
            _ => "PROXY UNKNOWN\r\n".to_owned(),
        }
    }

    /// Encodes the header in the v2 binary format.
    ///
    /// Why: for test clients and proxies written with this crate. `Local`
    /// becomes `LOCAL`/`AF_UNSPEC` with an empty block. `Proxy` with two
    /// addresses of one family becomes `TCP4`/`TCP6` (stream transport)
    /// followed by the TLVs; otherwise `AF_UNSPEC` with an empty block. A TLV
    /// that would overflow a 16-bit length field is omitted.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::proxy_protocol::{Command, ProxyHeader, Version};
    ///
    /// let header = ProxyHeader {
    ///     version: Version::V2,
    ///     command: Command::Proxy,
    ///     source: Some("172.19.0.1:42578".parse().unwrap()),
    ///     destination: Some("172.19.0.3:80".parse().unwrap()),
    ///     tlvs: Vec::new(),
    /// };
    /// let mut expected = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    /// expected.extend_from_slice(&[172, 19, 0, 1, 172, 19, 0, 3, 0xa6, 0x52, 0, 80]);
    /// assert_eq!(header.to_v2(), expected);
    /// ```
    pub fn to_v2(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let (ver_cmd, fam) = match (self.command, self.same_family_addrs()) {
            (Command::Local, _) => (0x20, 0x00),
            (Command::Proxy, Some((SocketAddr::V4(s), SocketAddr::V4(d)))) => {
                body.extend_from_slice(&s.ip().octets());
                body.extend_from_slice(&d.ip().octets());
                body.extend_from_slice(&s.port().to_be_bytes());
                body.extend_from_slice(&d.port().to_be_bytes());
                (0x21, 0x11)
            }
            (Command::Proxy, Some((SocketAddr::V6(s), SocketAddr::V6(d)))) => {
                body.extend_from_slice(&s.ip().octets());
                body.extend_from_slice(&d.ip().octets());
                body.extend_from_slice(&s.port().to_be_bytes());
                body.extend_from_slice(&d.port().to_be_bytes());
                (0x21, 0x21)
            }
            (Command::Proxy, _) => (0x21, 0x00),
        };
        if fam != 0x00 {
            for (kind, value) in &self.tlvs {
                let Ok(vlen) = u16::try_from(value.len()) else {
                    continue;
                };
                if body.len() + 3 + value.len() > DEFAULT_MAX_V2_LEN {
                    continue;
                }
                body.push(*kind);
                body.extend_from_slice(&vlen.to_be_bytes());
                body.extend_from_slice(value);
            }
        }
        // The loop above keeps the body within u16 range.
        let body_len = u16::try_from(body.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(V2_FIXED_LEN + body.len());
        out.extend_from_slice(&V2_SIGNATURE);
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&body_len.to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Both addresses, if this is a `Proxy` header and they share a family.
    fn same_family_addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        match (self.command, self.source, self.destination) {
            (Command::Proxy, Some(s), Some(d)) if s.is_ipv4() == d.is_ipv4() => Some((s, d)),
            _ => None,
        }
    }
}

/// Internal parse result: a header and its length, or the minimum total
/// number of bytes needed before parsing again can make progress.
enum Step {
    Done(ProxyHeader, usize),
    Need(usize),
}

fn step(buf: &[u8], max_v2_len: usize) -> Result<Step, ProxyError> {
    match buf.first() {
        None => Ok(Step::Need(1)),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf, max_v2_len),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

// ---------------------------------------------------------------- v1 ----

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

fn parse_v1(buf: &[u8]) -> Result<Step, ProxyError> {
    let head = buf.get(..V1_PREFIX.len()).unwrap_or(buf);
    if !V1_PREFIX.starts_with(head) {
        return Err(ProxyError::NotProxy);
    }
    let window = buf.get(..V1_MAX_LEN).unwrap_or(buf);
    if let Some(end) = window.windows(2).position(|w| w == b"\r\n") {
        let line = window
            .get(V1_PREFIX.len()..end)
            .ok_or(ProxyError::Invalid("missing protocol"))?;
        let addrs = v1_line(line)?;
        let header = ProxyHeader {
            version: Version::V1,
            command: Command::Proxy,
            source: addrs.map(|(s, _)| s),
            destination: addrs.map(|(_, d)| d),
            tlvs: Vec::new(),
        };
        return Ok(Step::Done(header, end + 2));
    }
    // No CRLF yet: what we have must be the start of a valid line.
    let partial = window.get(V1_PREFIX.len()..).unwrap_or(&[]);
    match partial.split_last() {
        // A trailing CR must be followed by LF, so the line must be whole.
        Some((b'\r', line)) => v1_line(line).map(drop)?,
        _ => v1_prefix(partial)?,
    }
    if window.len() >= V1_MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    Ok(Step::Need(buf.len() + 1))
}

const FIELD_ERRORS: [&str; 4] = [
    "invalid source address",
    "invalid destination address",
    "invalid source port",
    "invalid destination port",
];

/// Validates a complete v1 line (without `PROXY ` and CRLF).
fn v1_line(line: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, ProxyError> {
    let mut fields = line.split(|&b| b == b' ');
    let family = match fields.next() {
        Some(b"UNKNOWN") => return Ok(None),
        Some(b"TCP4") => Family::V4,
        Some(b"TCP6") => Family::V6,
        _ => return Err(ProxyError::Invalid("unknown protocol")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::Invalid("expected four fields after protocol"));
    };
    let src = parse_ip(family, src).ok_or(ProxyError::Invalid(FIELD_ERRORS[0]))?;
    let dst = parse_ip(family, dst).ok_or(ProxyError::Invalid(FIELD_ERRORS[1]))?;
    let sport = parse_port(sport).ok_or(ProxyError::Invalid(FIELD_ERRORS[2]))?;
    let dport = parse_port(dport).ok_or(ProxyError::Invalid(FIELD_ERRORS[3]))?;
    Ok(Some((
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
    )))
}

/// Checks that `partial` (after `PROXY `, no CRLF) can still become a valid line.
fn v1_prefix(partial: &[u8]) -> Result<(), ProxyError> {
    let mut fields = partial.split(|&b| b == b' ');
    let proto = fields.next().unwrap_or_default();
    let mut rest = fields.peekable();
    if rest.peek().is_none() {
        let known: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
        return if known.iter().any(|p| p.starts_with(proto)) {
            Ok(())
        } else {
            Err(ProxyError::Invalid("unknown protocol"))
        };
    }
    let family = match proto {
        b"UNKNOWN" => return Ok(()),
        b"TCP4" => Family::V4,
        b"TCP6" => Family::V6,
        _ => return Err(ProxyError::Invalid("unknown protocol")),
    };
    let mut index = 0;
    while let Some(field) = rest.next() {
        let last = rest.peek().is_none();
        let ok = match (index, last) {
            (0 | 1, false) => parse_ip(family, field).is_some(),
            (0 | 1, true) => ip_prefix_ok(family, field),
            (2, false) => parse_port(field).is_some(),
            (2 | 3, true) => parse_dec(field, 65535).is_some() || field.is_empty(),
            _ => return Err(ProxyError::Invalid("too many fields")),
        };
        if !ok {
            let why = FIELD_ERRORS
                .get(index)
                .copied()
                .unwrap_or("too many fields");
            return Err(ProxyError::Invalid(why));
        }
        index += 1;
    }
    Ok(())
}

/// Decimal number without sign or leading zeros, at most `max`.
fn parse_dec(digits: &[u8], max: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 5 || (digits.len() > 1 && digits.first() == Some(&b'0'))
    {
        return None;
    }
    let mut value: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    (value <= max).then_some(value)
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    parse_dec(digits, 65535).and_then(|v| u16::try_from(v).ok())
}

fn parse_ip(family: Family, text: &[u8]) -> Option<IpAddr> {
    match family {
        Family::V4 => parse_v4(text).map(IpAddr::V4),
        Family::V6 => std::str::from_utf8(text)
            .ok()?
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
    }
}

/// Strict dotted quad: exactly four decimal octets, no leading zeros.
fn parse_v4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut parts = text.split(|&b| b == b'.');
    let mut octets = [0u8; 4];
    for octet in &mut octets {
        *octet = u8::try_from(parse_dec(parts.next()?, 255)?).ok()?;
    }
    match parts.next() {
        None => Some(Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

fn ip_prefix_ok(family: Family, text: &[u8]) -> bool {
    match family {
        Family::V4 => {
            let parts: Vec<&[u8]> = text.split(|&b| b == b'.').collect();
            let Some((last, done)) = parts.split_last() else {
                return true;
            };
            done.len() < 4
                && done.iter().all(|p| parse_dec(p, 255).is_some())
                && (last.is_empty() || parse_dec(last, 255).is_some())
        }
        Family::V6 => {
            text.len() <= V6_TEXT_MAX
                && text
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
    }
}

// ---------------------------------------------------------------- v2 ----

fn parse_v2(buf: &[u8], max_len: usize) -> Result<Step, ProxyError> {
    let head = buf.get(..V2_SIGNATURE.len()).unwrap_or(buf);
    if !V2_SIGNATURE.starts_with(head) {
        return Err(ProxyError::NotProxy);
    }
    let command = match buf.get(12) {
        None => return Ok(Step::Need(V2_FIXED_LEN)),
        Some(&b) if b >> 4 != 2 => return Err(ProxyError::Invalid("unsupported version")),
        Some(&b) => match b & 0x0f {
            0 => Command::Local,
            1 => Command::Proxy,
            _ => return Err(ProxyError::Invalid("unknown command")),
        },
    };
    // LOCAL: the family byte is ignored along with the whole block.
    let (family, addr_len) = match (command, buf.get(13)) {
        (_, None) => return Ok(Step::Need(V2_FIXED_LEN)),
        (Command::Local, Some(_)) => (0, 0),
        (Command::Proxy, Some(&b)) => match b {
            0x00 => (0, 0),
            0x11 | 0x12 => (1, 12),
            0x21 | 0x22 => (2, 36),
            0x31 | 0x32 => (3, 216),
            _ => return Err(ProxyError::Invalid("unknown address family or transport")),
        },
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(Step::Need(V2_FIXED_LEN));
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > max_len {
        return Err(ProxyError::TooLong);
    }
    if len < addr_len {
        return Err(ProxyError::Invalid("address block too short for family"));
    }
    let total = V2_FIXED_LEN + len;
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Step::Need(total));
    };
    let short = ProxyError::Invalid("address block too short for family");
    let addrs = match family {
        1 => {
            let (s, d) = (array::<4>(block, 0), array::<4>(block, 4));
            let (sp, dp) = (array::<2>(block, 8), array::<2>(block, 10));
            let (Some(s), Some(d), Some(sp), Some(dp)) = (s, d, sp, dp) else {
                return Err(short);
            };
            let src = SocketAddrV4::new(Ipv4Addr::from(s), u16::from_be_bytes(sp));
            let dst = SocketAddrV4::new(Ipv4Addr::from(d), u16::from_be_bytes(dp));
            Some((SocketAddr::V4(src), SocketAddr::V4(dst)))
        }
        2 => {
            let (s, d) = (array::<16>(block, 0), array::<16>(block, 16));
            let (sp, dp) = (array::<2>(block, 32), array::<2>(block, 34));
            let (Some(s), Some(d), Some(sp), Some(dp)) = (s, d, sp, dp) else {
                return Err(short);
            };
            let src = SocketAddrV6::new(Ipv6Addr::from(s), u16::from_be_bytes(sp), 0, 0);
            let dst = SocketAddrV6::new(Ipv6Addr::from(d), u16::from_be_bytes(dp), 0, 0);
            Some((SocketAddr::V6(src), SocketAddr::V6(dst)))
        }
        _ => None,
    };
    let tlvs = if family == 0 {
        Vec::new()
    } else {
        parse_tlvs(block.get(addr_len..).unwrap_or_default())?
    };
    let header = ProxyHeader {
        version: Version::V2,
        command,
        source: addrs.map(|(s, _)| s),
        destination: addrs.map(|(_, d)| d),
        tlvs,
    };
    Ok(Step::Done(header, total))
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, ProxyError> {
    let truncated = ProxyError::Invalid("truncated TLV");
    let mut tlvs = Vec::new();
    while let Some((&kind, after)) = rest.split_first() {
        let len = usize::from(u16::from_be_bytes(array::<2>(after, 0).ok_or(truncated)?));
        let value = after.get(2..2 + len).ok_or(truncated)?;
        tlvs.push((kind, value.to_vec()));
        rest = after.get(2 + len..).unwrap_or_default();
    }
    Ok(tlvs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { header, len }) => (header, len),
            other => panic!("expected complete header, got {other:?}"),
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// Every strict prefix must be Incomplete.
    fn assert_prefixes_incomplete(buf: &[u8], len: usize) {
        for n in 0..len {
            assert_eq!(
                parse(&buf[..n]),
                Ok(Parsed::Incomplete),
                "prefix {n} of {buf:?}"
            );
        }
    }

    const V1_TCP4: &[u8] = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    const V1_UNKNOWN_MAX: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    #[test]
    fn v1_spec_examples() {
        let (h, len) = complete(V1_TCP4);
        assert_eq!(len, 56);
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.source, addr("255.255.255.255:65535"));
        assert_eq!(h.destination, addr("255.255.255.255:65535"));

        let (h, len) = complete(V1_TCP6);
        assert_eq!(len, 104);
        assert_eq!(
            h.source,
            addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
        );

        let (h, len) = complete(b"PROXY UNKNOWN\r\n");
        assert_eq!((h.source, h.destination, len), (None, None, 15));

        assert_eq!(V1_UNKNOWN_MAX.len(), V1_MAX_LEN);
        let (h, len) = complete(V1_UNKNOWN_MAX);
        assert_eq!((h.source, len), (None, 107));

        let data = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        let (h, len) = complete(data);
        assert_eq!(h.source, addr("192.168.0.1:56324"));
        assert_eq!(h.destination, addr("192.168.0.11:443"));
        assert_eq!(&data[len..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn v1_prefixes_incomplete() {
        for line in [V1_TCP4, V1_TCP6, V1_UNKNOWN_MAX, b"PROXY UNKNOWN\r\n"] {
            assert_prefixes_incomplete(line, line.len());
        }
    }

    #[test]
    fn v1_rejects_malformed() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 070\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 ::1 ::g 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
            b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
        ];
        for line in bad {
            assert!(
                matches!(parse(line), Err(ProxyError::Invalid(_))),
                "{:?} gave {:?}",
                String::from_utf8_lossy(line),
                parse(line)
            );
        }
        // Rejected early, before any CRLF arrives.
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4x").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4  ").is_err());
        assert!(parse(b"PROXY TCP4 300").is_err());
        assert!(parse(b"PROXY TCP6 ::1 ::z").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r ").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r").is_err());
        assert!(parse(b"PROXY HTTP").is_err());
    }

    #[test]
    fn v1_too_long() {
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN, b'x');
        assert_eq!(parse(&long[..V1_MAX_LEN - 1]), Ok(Parsed::Incomplete));
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        // CRLF just past the limit does not count.
        long.truncate(V1_MAX_LEN - 1);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        // CRLF ending exactly at the limit does.
        long.truncate(V1_MAX_LEN - 2);
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&long),
            Ok(Parsed::Complete {
                len: V1_MAX_LEN,
                ..
            })
        ));
    }

    #[test]
    fn not_proxy_detected_early() {
        for garbage in [
            &b"G"[..],
            b"GET / HTTP/1.1\r\n",
            b"PR0",
            b"PROXY\r",
            b"\r\n\r\n\x01",
            b"\n",
            b"\0",
        ] {
            assert_eq!(parse(garbage), Err(ProxyError::NotProxy), "{garbage:?}");
        }
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"\r\n\r\n\0\r"), Ok(Parsed::Incomplete));
    }

    const SIG: &[u8] = &V2_SIGNATURE;

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = SIG.to_vec();
        out.push(ver_cmd);
        out.push(fam);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v2_proxy_tcp4_from_haproxy_capture() {
        // haproxy-emitted header, followed by an HTTP request.
        let mut data = v2(
            0x21,
            0x11,
            &[0xac, 0x13, 0, 1, 0xac, 0x13, 0, 3, 0xa6, 0x52, 0, 0x50],
        );
        assert_eq!(data.len(), 28);
        data.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (h, len) = complete(&data);
        assert_eq!(len, 28);
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.source, addr("172.19.0.1:42578"));
        assert_eq!(h.destination, addr("172.19.0.3:80"));
        assert!(h.tlvs.is_empty());
        assert_prefixes_incomplete(&data, len);
    }

    #[test]
    fn v2_proxy_tcp6_and_udp6_with_tlvs() {
        let mut body = Vec::new();
        body.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']); // PP2_TYPE_ALPN
        body.extend_from_slice(&[0x04, 0x00, 0x00]); // PP2_TYPE_NOOP, empty
        for fam in [0x21, 0x22] {
            let data = v2(0x21, fam, &body);
            let (h, len) = complete(&data);
            assert_eq!(len, data.len());
            assert_eq!(h.source, addr("[::1]:4660"));
            assert_eq!(h.destination, addr("[2001:db8::1]:443"));
            assert_eq!(h.tlvs, vec![(0x01, b"h2".to_vec()), (0x04, Vec::new())]);
            assert_prefixes_incomplete(&data, len);
        }
    }

    #[test]
    fn v2_local_ignores_block() {
        let (h, len) = complete(&v2(0x20, 0x00, &[]));
        assert_eq!(
            (h.command, h.source, h.destination, len),
            (Command::Local, None, None, 16)
        );
        // LOCAL with an address block and TLVs (even a bogus family): discarded.
        let data = v2(
            0x20,
            0xff,
            &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x01, 0x00],
        );
        let (h, len) = complete(&data);
        assert_eq!(
            (h.command, h.source, h.tlvs.len(), len),
            (Command::Local, None, 0, 30)
        );
    }

    #[test]
    fn v2_unspec_and_unix() {
        let (h, _) = complete(&v2(0x21, 0x00, &[9, 9, 9]));
        assert_eq!((h.source, h.destination), (None, None));
        let mut body = vec![0u8; 216];
        body.extend_from_slice(&[0xe0, 0x00, 0x01, 7]);
        let (h, len) = complete(&v2(0x21, 0x31, &body));
        assert_eq!(
            (h.source, h.tlvs.clone(), len),
            (None, vec![(0xe0, vec![7])], 236)
        );
    }

    #[test]
    fn v2_rejects_malformed() {
        let four = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            (
                v2(0x11, 0x11, &four),
                ProxyError::Invalid("unsupported version"),
            ),
            (
                v2(0x22, 0x11, &four),
                ProxyError::Invalid("unknown command"),
            ),
            (
                v2(0x21, 0x13, &four),
                ProxyError::Invalid("unknown address family or transport"),
            ),
            (
                v2(0x21, 0x41, &four),
                ProxyError::Invalid("unknown address family or transport"),
            ),
            (
                v2(0x21, 0x10, &four),
                ProxyError::Invalid("unknown address family or transport"),
            ),
            (
                v2(0x21, 0x11, &four[..11]),
                ProxyError::Invalid("address block too short for family"),
            ),
            (
                v2(0x21, 0x21, &four),
                ProxyError::Invalid("address block too short for family"),
            ),
            (
                v2(0x21, 0x11, &[&four[..], &[1, 0]].concat()),
                ProxyError::Invalid("truncated TLV"),
            ),
            (
                v2(0x21, 0x11, &[&four[..], &[1, 0, 2, 9]].concat()),
                ProxyError::Invalid("truncated TLV"),
            ),
        ];
        for (data, err) in cases {
            assert_eq!(parse(&data), Err(err), "{data:?}");
        }
        // Errors show up before the block has arrived.
        assert_eq!(
            parse(&[SIG, &[0x31]].concat()),
            Err(ProxyError::Invalid("unsupported version"))
        );
        assert_eq!(
            parse(&[SIG, &[0x21, 0x11, 0, 4]].concat()),
            Err(ProxyError::Invalid("address block too short for family"))
        );
    }

    #[test]
    fn v2_length_limit() {
        let data = v2(0x21, 0x00, &[0u8; 100]);
        assert!(matches!(
            parse_with_limit(&data, 100),
            Ok(Parsed::Complete { len: 116, .. })
        ));
        assert_eq!(parse_with_limit(&data, 99), Err(ProxyError::TooLong));
        assert_eq!(parse_with_limit(&data[..16], 99), Err(ProxyError::TooLong));
        assert_eq!(parse_with_limit(&data[..16], 100), Ok(Parsed::Incomplete));
    }

    #[test]
    fn writers_round_trip() {
        let h = ProxyHeader {
            version: Version::V1,
            command: Command::Proxy,
            source: addr("[::ffff:1.2.3.4]:1"),
            destination: addr("[fe80::1]:2"),
            tlvs: Vec::new(),
        };
        assert_eq!(complete(h.to_v1().as_bytes()).0, h);
        let mixed = ProxyHeader {
            destination: addr("1.2.3.4:5"),
            ..h.clone()
        };
        assert_eq!(mixed.to_v1(), "PROXY UNKNOWN\r\n");
        assert_eq!(mixed.to_v2(), v2(0x21, 0x00, &[]));
        let local = ProxyHeader {
            command: Command::Local,
            ..h
        };
        assert_eq!(local.to_v1(), "PROXY UNKNOWN\r\n");
        assert_eq!(local.to_v2(), v2(0x20, 0x00, &[]));
    }

    #[test]
    fn io_error_conversion_and_display() {
        let e: io::Error = ProxyError::Invalid("x").into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "invalid PROXY protocol header: x");
    }

    #[test]
    fn read_header_eof_and_leftover() {
        let mut r: &[u8] = b"PROXY TCP4 1.2.3.4";
        assert_eq!(
            read_header(&mut r, 100).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut r: &[u8] = b"";
        assert_eq!(
            read_header(&mut r, 100).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut r: &[u8] = b"HELO";
        assert_eq!(
            read_header(&mut r, 100).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut data = v2(0x21, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]);
        data.extend_from_slice(b"rest");
        let mut r: &[u8] = &data;
        let h = read_header(&mut r, 100).unwrap();
        assert_eq!(h.source, addr("1.2.3.4:1"));
        assert_eq!(r, b"rest");
    }
}
