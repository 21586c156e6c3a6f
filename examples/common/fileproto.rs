//! The wire protocol of `fileserver` and `fileclient` (specified in `examples/fileserver.rs`): every
//! message is one length-prefixed frame whose first byte says what it is, so message boundaries
//! never depend on timing (`sleep(0.1)`) or on a sentinel that file data could contain (`##`).
//!
//! Both ends use the same three pieces: [`Message`] (parse and encode one frame's payload),
//! [`FrameWriter`] / [`read_frame`] (frames on a stream), and [`send_stream`] / [`receive_stream`]
//! (a file's bytes as data frames, closed by an end marker carrying the size and CRC-32).

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use socketserver::framing::{Encoder, LengthPrefixed, read_length_prefixed};

/// File data per data frame. Large enough to keep per-frame overhead negligible, small enough that
/// a transfer needs only a few such buffers whatever the file size.
pub const CHUNK: usize = 64 * 1024;

/// The largest frame payload either side accepts: a data frame (tag + [`CHUNK`]) is the largest
/// legitimate message, so a peer announcing more is refused before a byte of it is buffered.
pub const MAX_FRAME: usize = 1 + CHUNK;

/// The capacity for buffered readers of this protocol: one whole data frame, header included, so a
/// frame arrives in one `read(2)` rather than a few 8 KiB ones.
pub const READ_BUFFER: usize = socketserver::framing::HEADER_LEN + MAX_FRAME;

/// The longest file name served, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;

/// Error texts are cut to this many bytes, when sent and when received: they always fit in a frame,
/// and a peer cannot fill a screen or a log line with one.
const MAX_ERROR_TEXT: usize = 4096;

/// The most entries a listing may have. A client holds a whole listing before printing it (sorted,
/// and all or nothing), so without a bound a server streaming entries forever grows it until memory
/// runs out; the server refuses to list a root with more files.
pub const MAX_LISTING_ENTRIES: usize = 100_000;

/// The most bytes of names a listing may carry (each entry also holds its 8-byte size): a second
/// bound on what a client holds, for listings of long names.
pub const MAX_LISTING_BYTES: usize = 16 << 20;

/// One protocol message: the payload of one frame.
///
/// Borrowed from the frame it was parsed from, so parsing a 64 KiB data frame copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// `L`: list the files in the root.
    List,
    /// `G` name: download a file.
    Get { name: &'a [u8] },
    /// `P` size(u64) name: upload `size` bytes under `name`.
    Put { size: u64, name: &'a [u8] },
    /// `Q`: end the session.
    Quit,
    /// `O`: accepted / done.
    Ok,
    /// `F` size(u64) name: one listing entry.
    Entry { size: u64, name: &'a [u8] },
    /// `.`: end of the listing.
    Done,
    /// `S` size(u64): a download of `size` bytes follows.
    Sending { size: u64 },
    /// `D` bytes: file data.
    Data(&'a [u8]),
    /// `E` size(u64) crc32(u32): end of file data, with what the receiver must have seen.
    End { size: u64, crc32: u32 },
    /// `X` text: the request was refused, or a transfer was aborted.
    Error(Cow<'a, str>),
}

impl<'a> Message<'a> {
    /// An error reply carrying `text`, cut to [`MAX_ERROR_TEXT`] bytes at a character boundary.
    pub fn error(text: impl fmt::Display) -> Message<'static> {
        Message::Error(Cow::Owned(cut_error_text(text.to_string())))
    }

    /// Parses one frame payload.
    ///
    /// # Errors
    ///
    /// [`ProtoError`] for an empty frame, an unknown tag, or a body of the wrong shape.
    pub fn parse(frame: &'a [u8]) -> Result<Self, ProtoError> {
        let (&tag, body) = frame.split_first().ok_or(ProtoError::Empty)?;
        let malformed = ProtoError::Malformed(tag);
        let msg = match tag {
            b'L' | b'Q' | b'O' | b'.' if !body.is_empty() => return Err(malformed),
            b'L' => Message::List,
            b'Q' => Message::Quit,
            b'O' => Message::Ok,
            b'.' => Message::Done,
            b'G' => Message::Get { name: body },
            b'P' => {
                let (size, name) = split_u64(body).ok_or(malformed)?;
                Message::Put { size, name }
            }
            b'F' => {
                let (size, name) = split_u64(body).ok_or(malformed)?;
                Message::Entry { size, name }
            }
            b'S' => match split_u64(body) {
                Some((size, [])) => Message::Sending { size },
                _ => return Err(malformed),
            },
            b'D' => Message::Data(body),
            b'E' => {
                let (size, rest) = split_u64(body).ok_or(malformed)?;
                let crc: [u8; 4] = rest.try_into().map_err(|_| malformed)?;
                Message::End {
                    size,
                    crc32: u32::from_be_bytes(crc),
                }
            }
            b'X' => match String::from_utf8_lossy(body) {
                Cow::Borrowed(text) if text.len() <= MAX_ERROR_TEXT => {
                    Message::Error(Cow::Borrowed(text))
                }
                text => Message::Error(Cow::Owned(cut_error_text(text.into_owned()))),
            },
            _ => return Err(ProtoError::Unknown(tag)),
        };
        Ok(msg)
    }

    /// Appends the frame payload (tag and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::List => out.push(b'L'),
            Message::Quit => out.push(b'Q'),
            Message::Ok => out.push(b'O'),
            Message::Done => out.push(b'.'),
            Message::Get { name } => {
                out.push(b'G');
                out.extend_from_slice(name);
            }
            Message::Put { size, name } => {
                out.push(b'P');
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(name);
            }
            Message::Entry { size, name } => {
                out.push(b'F');
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(name);
            }
            Message::Sending { size } => {
                out.push(b'S');
                out.extend_from_slice(&size.to_be_bytes());
            }
            Message::Data(bytes) => {
                out.push(b'D');
                out.extend_from_slice(bytes);
            }
            Message::End { size, crc32 } => {
                out.push(b'E');
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&crc32.to_be_bytes());
            }
            Message::Error(text) => {
                out.push(b'X');
                out.extend_from_slice(text.as_bytes());
            }
        }
    }

    /// What kind of message this is, for error texts.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::List => "list (L)",
            Message::Get { .. } => "get (G)",
            Message::Put { .. } => "put (P)",
            Message::Quit => "quit (Q)",
            Message::Ok => "ok (O)",
            Message::Entry { .. } => "entry (F)",
            Message::Done => "done (.)",
            Message::Sending { .. } => "sending (S)",
            Message::Data(_) => "data (D)",
            Message::End { .. } => "end (E)",
            Message::Error(_) => "error (X)",
        }
    }
}

/// `text` cut to [`MAX_ERROR_TEXT`] bytes, at a character boundary.
fn cut_error_text(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut cut = MAX_ERROR_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// A big-endian `u64` and whatever follows it.
fn split_u64(body: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = body.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*head), rest))
}

/// A frame that is not a valid message. The frame boundaries are intact, so the session can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// A frame with no payload at all.
    Empty,
    /// A tag no message has.
    Unknown(u8),
    /// A known tag whose body has the wrong length.
    Malformed(u8),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ProtoError::Empty => write!(f, "empty command"),
            ProtoError::Unknown(tag) => write!(f, "unknown command {}", Tag(tag)),
            ProtoError::Malformed(tag) => write!(f, "malformed {} message", Tag(tag)),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Shows a tag byte as `'L'` when printable, `0x00` otherwise.
struct Tag(u8);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02x}", self.0)
        }
    }
}

/// Why a name is not a plain, visible file name directly in the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The empty name.
    Empty,
    /// A NUL byte, which no file name can hold (and C would silently cut the name at).
    Nul,
    /// A `/`: an absolute or nested path rather than a name in the root.
    Path,
    /// A leading `.`: hidden files, `.` and `..`.
    Hidden,
    /// Longer than [`MAX_NAME`] bytes.
    TooLong,
    /// A control character (tab, newline, ESC, DEL, a C1 control) or a bidirectional-text control:
    /// printed in a listing or a log, it forges lines, moves the cursor, recolours the terminal or
    /// reverses what the name appears to say (see [`is_unsafe_char`]).
    Control,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty file name",
            NameError::Nul => "file name contains a NUL byte",
            NameError::Path => {
                "a path, not a file name: only files directly in the root are served"
            }
            NameError::Hidden => "hidden names (starting with '.', including '..') are not served",
            NameError::TooLong => "file name longer than 255 bytes",
            NameError::Control => "file name contains a control character",
        })
    }
}

impl std::error::Error for NameError {}

/// Checks that `name` is one visible component that prints as itself, and returns it as an `OsStr`.
///
/// Both ends check: the server before touching its root, the client before writing a download into
/// the current directory (it does not trust the server either).
///
/// # Errors
///
/// The first rule `name` breaks.
pub fn check_name(name: &[u8]) -> Result<&OsStr, NameError> {
    if name.is_empty() {
        Err(NameError::Empty)
    } else if name.contains(&0) {
        Err(NameError::Nul)
    } else if name.contains(&b'/') {
        Err(NameError::Path)
    } else if name.starts_with(b".") {
        Err(NameError::Hidden)
    } else if name.len() > MAX_NAME {
        Err(NameError::TooLong)
    } else if has_unsafe_char(name) {
        Err(NameError::Control)
    } else {
        Ok(OsStr::from_bytes(name))
    }
}

/// Whether printing `c` can do more than show a glyph: a control character (C0 such as tab, newline
/// and ESC, DEL, or C1 such as CSI, U+009B) or one of the bidirectional-text controls that make a
/// name read differently from what it is (`bidi\u{202e}fdp.exe` shows as `bidiexe.pdf`).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `bytes` holds an [unsafe character](is_unsafe_char), or a byte outside UTF-8 in the C1
/// range (0x80-0x9f), which a terminal in an 8-bit mode takes for a control too.
fn has_unsafe_char(bytes: &[u8]) -> bool {
    bytes.utf8_chunks().any(|chunk| {
        chunk.valid().chars().any(is_unsafe_char)
            || chunk.invalid().iter().any(|b| (0x80..=0x9f).contains(b))
    })
}

/// `bytes` made safe to print on a terminal or in a log line: [unsafe characters](is_unsafe_char)
/// become Rust-style escapes (`\t`, `\n`, `\u{1b}`) and bytes that are not UTF-8 become `\xNN`, so
/// every name is shown on one line, as the characters it has, and nothing in it reaches the terminal
/// as a command. Everything else, backslashes included, is left as it is: names people type stay as
/// they typed them.
///
/// For whatever came from a peer: names (a server's listing, a client's upload) and error texts.
pub fn escape(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_unsafe_char(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Reads one frame payload; `Ok(None)` when the peer closed the stream between frames.
///
/// # Errors
///
/// The stream's errors; [`io::ErrorKind::InvalidData`] for a frame longer than [`MAX_FRAME`] (garbage
/// or a different protocol: the stream cannot be resynchronised), [`io::ErrorKind::UnexpectedEof`]
/// for a stream cut inside a frame.
pub fn read_frame<R: Read + ?Sized>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    read_length_prefixed(reader, MAX_FRAME)
}

/// Writes messages as frames, reusing its buffers so a transfer allocates nothing per chunk.
#[derive(Debug, Default)]
pub struct FrameWriter {
    payload: Vec<u8>,
    wire: Vec<u8>,
}

impl FrameWriter {
    /// Sends `msg` as one frame (one `write_all`) and flushes.
    ///
    /// # Errors
    ///
    /// The writer's errors; [`io::ErrorKind::InvalidData`] if the message exceeds [`MAX_FRAME`] (a
    /// bug: every message this module builds fits).
    pub fn send<W: Write + ?Sized>(&mut self, writer: &mut W, msg: &Message<'_>) -> io::Result<()> {
        self.payload.clear();
        msg.encode(&mut self.payload);
        self.wire.clear();
        LengthPrefixed::with_max_frame_len(MAX_FRAME).encode(&self.payload, &mut self.wire)?;
        writer.write_all(&self.wire)?;
        writer.flush()
    }
}

/// Why sending a file's bytes stopped.
#[derive(Debug)]
pub enum SendError {
    /// Reading the file failed (or it shrank below the announced size). An error frame was sent in
    /// place of the end marker, so the peer discards what it received and the session goes on.
    Source(io::Error),
    /// The connection failed; the session is over.
    Connection(io::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Source(e) => write!(f, "reading the file: {e}"),
            SendError::Connection(e) if e.kind() == io::ErrorKind::TimedOut => write!(f, "{e}"),
            SendError::Connection(e) => write!(f, "connection: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Sends exactly `size` bytes of `source` as data frames, then the end marker with their CRC-32.
/// `progress` is told the running byte count after each frame.
///
/// # Errors
///
/// See [`SendError`].
pub fn send_stream<W, R>(
    conn: &mut W,
    out: &mut FrameWriter,
    source: &mut R,
    size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SendError>
where
    W: Write + ?Sized,
    R: Read + ?Sized,
{
    let mut buf = vec![0; CHUNK];
    let mut crc = crc32fast::Hasher::new();
    let mut sent = 0u64;
    while sent < size {
        let want = usize::try_from(size - sent).map_or(CHUNK, |left| left.min(CHUNK));
        let n = match source.read(&mut buf[..want]) {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file shrank while being sent ({sent} of {size} bytes)"),
                );
                return Err(abort(conn, out, e));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(abort(conn, out, e)),
        };
        let chunk = &buf[..n];
        crc.update(chunk);
        out.send(conn, &Message::Data(chunk))
            .map_err(SendError::Connection)?;
        sent += n as u64;
        progress(sent);
    }
    let end = Message::End {
        size,
        crc32: crc.finalize(),
    };
    out.send(conn, &end).map_err(SendError::Connection)
}

/// Tells the peer the transfer is off (an error frame instead of the end marker).
fn abort<W: Write + ?Sized>(conn: &mut W, out: &mut FrameWriter, e: io::Error) -> SendError {
    match out.send(conn, &Message::error(format!("transfer aborted: {e}"))) {
        Ok(()) => SendError::Source(e),
        Err(conn_err) => SendError::Connection(conn_err),
    }
}

/// Why receiving a file's bytes failed. Whatever was received must be discarded.
#[derive(Debug)]
pub enum ReceiveError {
    /// The end marker arrived but disagrees with the bytes received (size or checksum). The session
    /// is still in step.
    Mismatch(String),
    /// The sender aborted with an error frame. The session is still in step.
    Aborted(String),
    /// The peer broke the protocol (more data than announced, an unexpected message): the session
    /// is out of step and must end.
    Protocol(String),
    /// Writing the received bytes failed locally (disk full, …): the peer is still sending, so the
    /// session must end.
    Sink(io::Error),
    /// The connection failed or closed mid-transfer.
    Connection(io::Error),
}

impl ReceiveError {
    /// Whether the session can go on: both ends agree the transfer is over.
    pub fn in_step(&self) -> bool {
        matches!(self, ReceiveError::Mismatch(_) | ReceiveError::Aborted(_))
    }
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Mismatch(why) => write!(f, "verification failed: {why}"),
            ReceiveError::Aborted(why) => write!(f, "sender aborted: {why}"),
            ReceiveError::Protocol(why) => write!(f, "protocol error: {why}"),
            ReceiveError::Sink(e) => write!(f, "writing the file: {e}"),
            // A deadline that passed says so itself; the connection is fine, the peer too slow.
            ReceiveError::Connection(e) if e.kind() == io::ErrorKind::TimedOut => write!(f, "{e}"),
            ReceiveError::Connection(e) => write!(f, "connection lost mid-transfer: {e}"),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// Receives data frames into `sink` until the end marker, and checks that exactly `announced`
/// bytes came, with the CRC-32 the marker carries. `progress` is told the running byte count.
///
/// # Errors
///
/// See [`ReceiveError`]; a stream longer than announced is refused as soon as it is.
pub fn receive_stream<R, W>(
    conn: &mut R,
    sink: &mut W,
    announced: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ReceiveError>
where
    R: Read + ?Sized,
    W: Write + ?Sized,
{
    let mut crc = crc32fast::Hasher::new();
    let mut received = 0u64;
    loop {
        let frame = match read_frame(conn) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection");
                return Err(ReceiveError::Connection(e));
            }
            Err(e) => return Err(ReceiveError::Connection(e)),
        };
        match Message::parse(&frame) {
            Ok(Message::Data(chunk)) => {
                received += chunk.len() as u64;
                if received > announced {
                    return Err(ReceiveError::Protocol(format!(
                        "more data than the {announced} bytes announced"
                    )));
                }
                crc.update(chunk);
                sink.write_all(chunk).map_err(ReceiveError::Sink)?;
                progress(received);
            }
            Ok(Message::End { size, crc32 }) => {
                let actual = crc.finalize();
                return if size != announced || received != announced {
                    Err(ReceiveError::Mismatch(format!(
                        "announced {announced} bytes, received {received}, end marker says {size}"
                    )))
                } else if crc32 != actual {
                    Err(ReceiveError::Mismatch(format!(
                        "checksum mismatch: end marker says crc32 {crc32:08x}, data has {actual:08x}"
                    )))
                } else {
                    Ok(())
                };
            }
            Ok(Message::Error(why)) => return Err(ReceiveError::Aborted(why.into_owned())),
            Ok(other) => {
                return Err(ReceiveError::Protocol(format!(
                    "expected file data, got a {} message",
                    other.kind()
                )));
            }
            Err(e) => return Err(ReceiveError::Protocol(e.to_string())),
        }
    }
}
