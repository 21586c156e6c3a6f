//! Reading one HTTP/1.x request head (request line and header fields) from a buffered connection, with
//! limits, into the few facts the server acts on. Anything malformed becomes a status to answer with
//! before closing the connection — never a panic, and never an unbounded read.

use std::io::{self, BufRead, Read};

/// The largest request head accepted (request line + header fields), like most servers' 8 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header fields accepted.
pub const MAX_FIELDS: usize = 100;

/// The request's HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// What the server needs from a request head.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The path, without the query; from an absolute-form target (`http://host/path`), its path.
    pub path: String,
    pub version: Version,
    /// `Connection: close` (any version), or HTTP/1.0 without `Connection: keep-alive`.
    pub close: bool,
    /// The body's length (`Content-Length`, 0 when absent).
    pub content_length: u64,
    /// `Expect: 100-continue`: the client may still be waiting to send the body.
    pub expect_continue: bool,
}

/// The outcome of reading a head.
#[derive(Debug)]
pub enum Parsed {
    Request(Head),
    /// The connection ended (or stayed idle past the read timeout) before a request began, or ended
    /// in the middle of one: nothing to answer.
    Closed,
    /// A request the server refuses: answer with this status, then close.
    Reject(u16),
}

/// Reads the next request head from `r`, consuming exactly the head (the body, if any, is next).
///
/// # Errors
/// I/O errors other than end of stream and a read timeout (those are [`Parsed::Closed`], or 408 in the
/// middle of a head).
pub fn read_head<R: BufRead>(r: &mut R, line: &mut Vec<u8>) -> io::Result<Parsed> {
    let mut budget = MAX_HEAD;
    // RFC 9112 §2.2: ignore empty lines before the request line (bounded by the head budget).
    let request_line = loop {
        match read_line(r, line, &mut budget, true)? {
            Line::Full if line.is_empty() => continue,
            Line::Full => break std::str::from_utf8(line).ok().map(str::to_owned),
            Line::Gone => return Ok(Parsed::Closed),
            Line::TimedOut => return Ok(Parsed::Closed),
            Line::TooLong => return Ok(Parsed::Reject(431)),
        }
    };
    let Some(request_line) = request_line else {
        return Ok(Parsed::Reject(400));
    };
    let (method, target, version) = match parse_request_line(&request_line) {
        Ok(parts) => parts,
        Err(status) => return Ok(Parsed::Reject(status)),
    };
    let Some(path) = path_of(target) else {
        return Ok(Parsed::Reject(400));
    };
    let mut head = Head {
        method: method.to_owned(),
        path: path.to_owned(),
        version,
        close: false,
        content_length: 0,
        expect_continue: false,
    };
    let (mut hosts, mut fields, mut length, mut chunked) = (0, 0, None, false);
    let (mut saw_close, mut saw_keep_alive) = (false, false);
    loop {
        match read_line(r, line, &mut budget, false)? {
            Line::Full if line.is_empty() => break,
            Line::Full => {}
            Line::Gone => return Ok(Parsed::Closed),
            Line::TimedOut => return Ok(Parsed::Reject(408)),
            Line::TooLong => return Ok(Parsed::Reject(431)),
        }
        fields += 1;
        if fields > MAX_FIELDS {
            return Ok(Parsed::Reject(431));
        }
        let Some((name, value)) = parse_field(line) else {
            return Ok(Parsed::Reject(400));
        };
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = parse_length(value) else {
                return Ok(Parsed::Reject(400));
            };
            if length.is_some_and(|m| m != n) {
                return Ok(Parsed::Reject(400));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                saw_close |= token.eq_ignore_ascii_case(b"close");
                saw_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    // HTTP/1.1 stays open unless asked to close; HTTP/1.0 closes unless asked to stay open.
    head.close = saw_close || (version == Version::Http10 && !saw_keep_alive);
    if chunked {
        // No transfer coding is implemented (RFC 9112 §6.1): 501, and the body cannot be skipped.
        return Ok(Parsed::Reject(if length.is_some() { 400 } else { 501 }));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host field is a 400.
    if version == Version::Http11 && hosts != 1 {
        return Ok(Parsed::Reject(400));
    }
    head.content_length = length.unwrap_or(0);
    Ok(Parsed::Request(head))
}

enum Line {
    /// A whole line is in the buffer, without its `\r\n` or `\n`.
    Full,
    /// End of stream (or a reset connection) before the line ended.
    Gone,
    /// The read timeout passed before the line ended.
    TimedOut,
    /// The head budget ran out.
    TooLong,
}

/// Reads one line into `line`, spending at most `budget` bytes of the head.
fn read_line<R: BufRead>(
    r: &mut R,
    line: &mut Vec<u8>,
    budget: &mut usize,
    first: bool,
) -> io::Result<Line> {
    line.clear();
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX);
    let read = r.by_ref().take(limit).read_until(b'\n', line);
    *budget = budget.saturating_sub(line.len());
    match read {
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Line::Full)
        }
        Ok(_) if *budget == 0 => Ok(Line::TooLong),
        Ok(_) => Ok(Line::Gone),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Ok(if first && line.is_empty() {
                Line::Gone
            } else {
                Line::TimedOut
            })
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(Line::Gone)
        }
        Err(e) => Err(e),
    }
}

/// `METHOD SP request-target SP HTTP-version`, or the status to reject it with.
fn parse_request_line(line: &str) -> Result<(&str, &str, Version), u16> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(400);
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(400);
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        v if is_http_version(v) => return Err(505),
        _ => return Err(400),
    };
    Ok((method, target, version))
}

/// `HTTP/D.D`: well-formed but maybe not a version served here.
fn is_http_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 8
        && v.starts_with("HTTP/")
        && b[5].is_ascii_digit()
        && b[6] == b'.'
        && b[7].is_ascii_digit()
}

/// The path of an origin-form (`/p?q`) or absolute-form (`http://host/p?q`) target; `*` is `*`.
fn path_of(target: &str) -> Option<&str> {
    let without_query = target.split(['?', '#']).next().unwrap_or(target);
    if without_query.starts_with('/') || without_query == "*" {
        return Some(without_query);
    }
    let rest = without_query
        .strip_prefix("http://")
        .or_else(|| without_query.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// `name: value` with a token name and no control characters in the value; `None` if malformed
/// (including obsolete line folding, which starts with whitespace and so has no token name).
fn parse_field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().copied().all(is_tchar) {
        return None;
    }
    let value = value.trim_ascii();
    if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
        return None;
    }
    Some((name, value))
}

/// A `Content-Length` value: digits only, within `u64`.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// RFC 9110 `tchar`: the characters of a method or field name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
