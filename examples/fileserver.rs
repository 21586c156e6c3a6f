//! The file-transfer server from the notes (commands L list, G get, P put, Q quit), done right.
//!
//! ```text
//! cargo run --example fileserver -- --addr 127.0.0.1:0 --root ./shared --concurrency forking
//! cargo run --example fileclient -- --addr 127.0.0.1:PORT            # the interactive menu
//! ```
//!
//! The first line on stdout is `listening on <bound address>`; `SIGINT` or `SIGTERM` shuts it down
//! gracefully (exit 0). It runs under any blocking strategy:
//! `--concurrency sequential|threading|forking|pool|prefork` (not `reactor`, which needs an
//! event-loop handler).
//!
//! # What the notes' version got wrong, and what this one does
//!
//! - Message boundaries: the notes `sleep(0.1)` between sends and end a file with `##`, so a file
//!   containing `##` (or a slow network) breaks the transfer. Here every message is a length-prefixed
//!   frame ([`socketserver::framing`]) and file data travels in tagged data frames, so no byte of a
//!   file can be mistaken for the end.
//! - Binary files: the notes write uploads in text mode. Here bytes are bytes, and every transfer is
//!   verified end to end (size and CRC-32).
//! - Paths: the notes join the name to the root (`G ../../etc/passwd` works). Here a name must be
//!   one visible component, and is opened relative to the root's directory descriptor (below).
//! - Dropped uploads: the notes leave a partial file (and truncate an existing one first). Here an
//!   upload goes to a hidden temporary file, renamed over the target only once complete and verified.
//! - An empty or unknown command crashes the notes' server (`data[0]` of `""`); here it gets an
//!   error reply and the session goes on.
//!
//! # The protocol
//!
//! Every message, both ways, is one frame: a 4-byte big-endian payload length, then the payload.
//! The payload's first byte (the tag) says what the message is; the rest (the body) is its fields.
//! Sizes are big-endian `u64`, checksums big-endian `u32` (CRC-32, IEEE). A payload is at most
//! 65,537 bytes (tag + a 64 KiB data chunk); a longer announced length is refused unread.
//!
//! | tag | body | sent by | meaning |
//! |---|---|---|---|
//! | `L` | — | client | list the root |
//! | `G` | name | client | download `name` |
//! | `P` | size, name | client | upload `size` bytes as `name` |
//! | `Q` | — | client | end the session (server replies `O`, then closes) |
//! | `O` | — | server | accepted / done |
//! | `F` | size, name | server | one listing entry |
//! | `.` | — | server | end of the listing |
//! | `S` | size | server | a download of `size` bytes follows |
//! | `D` | bytes | both | file data (1 to 65,536 bytes) |
//! | `E` | size, crc32 | both | end of file data: the total size and its CRC-32 |
//! | `X` | UTF-8 text | both | refused / aborted, with the reason (at most 4,096 bytes are kept) |
//!
//! Exchanges (client → server, then the server's reply):
//!
//! - `L` → `O`, then an `F` per file, then `.` (or `X`). Only regular, non-hidden files are listed,
//!   sorted by name. A listing holds at most 100,000 entries and 16 MiB of names, each name at most
//!   255 bytes: the client holds a listing whole, so it refuses one past these bounds (a server
//!   streaming entries forever cannot exhaust its memory), and the server refuses, with `X`, to list
//!   a root that holds more.
//! - `G name` → `X reason`, or `S size`, then `D` frames, then `E size crc32`. If reading fails
//!   midway the server sends `X` instead of `E`, and the client discards what it got.
//! - `P size name` → `X reason` (bad name, over `--max-upload`, …) before any data is sent, or `O`;
//!   then the client sends `D` frames and `E size crc32` (or `X` to cancel), and the server replies
//!   `O` once the file is stored, or `X reason` (size or checksum mismatch) having stored nothing.
//! - `Q` → `O`, and the server closes the connection.
//! - An empty frame, an unknown tag, a malformed body, or a message that is not a command gets `X`,
//!   and the session goes on. A stream that is not frames at all (a length over the limit: garbage,
//!   or another protocol) gets `X` and the connection is closed, as does a transfer that breaks the
//!   protocol (more data than announced, a non-data message inside an upload).
//!
//! The end marker cannot collide with data: it is a different tag, not a byte sequence inside the
//! data, and the data frames' lengths tell the receiver exactly where each chunk ends.
//!
//! # Confinement to the root
//!
//! A name must be non-empty, at most 255 bytes, without `/` or NUL, and not start with `.` (so no
//! `.`, `..`, hidden files, or the server's own temporary files). Nor may it hold a control character
//! (tab, newline, ESC, DEL, C1) or a bidirectional-text control: shown in a listing or a log, such a
//! name forges lines, drives the terminal, or reads as something else. Files in the root with such
//! names are neither listed nor served, and names in messages and logs are escaped
//! (`innocent.txt\t6\nfake.pdf`). The root is opened once as a
//! directory descriptor; every operation is relative to it (`openat`, `fstatat`, `renameat`,
//! `unlinkat`), and files are opened with `O_NOFOLLOW`. Since a name is a single component, there is
//! no intermediate directory to swap, and the final component is never followed if it is a symbolic
//! link: there is no check-then-use window to race. Symbolic links are therefore never served,
//! wherever they point (to stay simple and safe); uploading over one replaces the link itself, never
//! its target. Files are opened `O_NONBLOCK`, so a FIFO dropped into the root cannot hang a worker;
//! anything but a regular file is refused.
//!
//! # Uploads
//!
//! An upload is written to a hidden temporary file in the root (`.upload-<pid>-<n>-<nanos>`, created
//! with `O_EXCL`), `fsync`ed and renamed over the target only after the end marker has checked the
//! size and checksum; every failure removes the temporary file. A client that disconnects midway
//! leaves nothing, and an existing file is either fully replaced or untouched. (Only `SIGKILL` of
//! the server mid-upload can leave a temporary file behind; it is hidden, never listed or served.)
//!
//! # Timeouts
//!
//! Every phase of a session has a deadline, not a per-read timeout (a client sending a byte just
//! before each read would time out could otherwise hold a worker for ever):
//!
//! - `--idle-timeout` (default 300 s, for people at the menu): from the end of one command to the
//!   whole of the next having arrived;
//! - `--transfer-timeout` (default 600 s): one command's whole exchange — a listing, a download or an
//!   upload, however the peer trickles or reads slowly (raise it for large files over slow links: a
//!   1 GiB upload needs about 1.8 MB/s to finish in 600 s);
//! - `--connection-timeout` (default 900 s, 0 for none): the whole session, however busy.
//!
//! Each socket operation waits at most the time left before the nearest deadline, and an expiry is
//! reported to the client (when a frame can still be sent whole) and logged naming the flag. Under
//! `--concurrency sequential` one session is served at a time, as with Python's `TCPServer`: the
//! next client waits until the current one quits or runs out of time.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use common::cli::{self, ConcurrencyArgs, PeerArgs, Strategy};
use common::fileproto::{
    FrameWriter, MAX_LISTING_BYTES, MAX_LISTING_ENTRIES, Message, READ_BUFFER, SendError,
    check_name, escape, read_frame, receive_stream, send_stream,
};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use socketserver::{
    Concurrency, Sequential, Server, StreamHandler, StreamOptions, StreamRequest, Tcp,
};

#[derive(Parser, Debug)]
#[command(
    name = "fileserver",
    about = "File server: list, download and upload the files of one directory"
,
    mut_arg("max_per_peer", |a| a.default_value("8")))]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// The directory served; nothing outside it is ever read or written.
    #[arg(long)]
    root: PathBuf,
    #[command(flatten)]
    concurrency: ConcurrencyArgs,
    #[command(flatten)]
    peers: PeerArgs,
    /// The largest upload accepted, in bytes; larger ones are refused before any data is sent.
    #[arg(long, default_value_t = 1 << 30)]
    max_upload: u64,
    /// Seconds a session may wait for its next whole command (a deadline, not a per-read timeout).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// Seconds one command's whole exchange may take: a listing, a download or an upload.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    transfer_timeout: u64,
    /// Seconds a whole session may last, however busy; 0 for no limit.
    #[arg(long, default_value_t = 900)]
    connection_timeout: u64,
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args: Args = common::parse_args();
    args.concurrency.check();
    let root = Root::open(&args.root)?;
    let handler = FileServer {
        root,
        max_upload: args.max_upload,
        idle_timeout: Duration::from_secs(args.idle_timeout),
        transfer_timeout: Duration::from_secs(args.transfer_timeout),
        connection_timeout: (args.connection_timeout > 0)
            .then(|| Duration::from_secs(args.connection_timeout)),
    };
    let tcp = Tcp::bind(args.addr.as_str())?;
    // The handler sets the socket timeouts itself, from its deadlines (see `Deadline`); the read
    // buffer holds a whole frame.
    let options = StreamOptions {
        rbufsize: READ_BUFFER,
        ..StreamOptions::default()
    };
    let c = &args.concurrency;
    let peers = args.peers.limit();
    match c.concurrency {
        Strategy::Sequential => run(Sequential::new(), tcp, handler, options, peers),
        Strategy::Threading => run(c.threading(), tcp, handler, options, peers),
        Strategy::Forking => run(c.forking(), tcp, handler, options, peers),
        Strategy::Pool => run(c.pool(), tcp, handler, options, peers),
        Strategy::Prefork => run(c.prefork(), tcp, handler, options, peers),
        Strategy::Reactor => cli::refuse(
            "--concurrency reactor needs an event-loop handler; the file server blocks on its \
             files and sockets (use sequential, threading, forking, pool or prefork)",
        ),
    }
}

fn run<C: Concurrency<Tcp, FileServer>>(
    strategy: C,
    tcp: Tcp,
    handler: FileServer,
    options: StreamOptions,
    max_per_peer: Option<usize>,
) -> anyhow::Result<()> {
    let server = Server::new(strategy, tcp, handler)?
        .stream_options(options)
        .max_connections_per_peer(max_per_peer);
    common::serve(server)
}

/// Serves one session: commands until `Q`, EOF, a deadline, or a broken stream.
#[derive(Debug)]
struct FileServer {
    root: Root,
    max_upload: u64,
    idle_timeout: Duration,
    transfer_timeout: Duration,
    connection_timeout: Option<Duration>,
}

/// Whether the session goes on after a command.
enum Next {
    Continue,
    Close,
}

impl StreamHandler for FileServer {
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        let mut out = FrameWriter::default();
        let peer = req.peer().to_string();
        let session = self
            .connection_timeout
            .map(|t| Deadline::after(t, Limit::Connection));
        loop {
            req.idle(); // between commands
            let idle = Deadline::after(self.idle_timeout, Limit::Idle).or_sooner(session);
            let frame = match read_frame(&mut Timed::new(req, idle)) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    log::info!("{peer}: {e}, closing");
                    let reply = Message::error(format!("{e}, closing"));
                    let _ = out.send(&mut Timed::last_words(req), &reply);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // Not frames of this protocol: there is no way to find the next message.
                    let reply = Message::error(format!("bad frame ({e}), closing"));
                    let _ = out.send(&mut Timed::last_words(req), &reply);
                    return Err(e).context("reading a command");
                }
                Err(e) => return Err(e).context("reading a command"),
            };
            let transfer =
                Deadline::after(self.transfer_timeout, Limit::Transfer).or_sooner(session);
            let conn = &mut Timed::new(req, transfer);
            let next = match Message::parse(&frame) {
                Ok(Message::List) => self.list(conn, &mut out)?,
                Ok(Message::Get { name }) => self.get(conn, &mut out, &peer, name)?,
                Ok(Message::Put { size, name }) => self.put(conn, &mut out, &peer, size, name)?,
                Ok(Message::Quit) => {
                    out.send(conn, &Message::Ok)?;
                    Next::Close
                }
                Ok(other) => {
                    let why = format!("expected a command (L, G, P or Q), got {}", other.kind());
                    out.send(conn, &Message::error(why))?;
                    Next::Continue
                }
                Err(e) => {
                    out.send(conn, &Message::error(e))?;
                    Next::Continue
                }
            };
            if let Next::Close = next {
                return Ok(());
            }
        }
    }
}

impl FileServer {
    fn list(&self, conn: &mut Timed<'_>, out: &mut FrameWriter) -> anyhow::Result<Next> {
        let entries = match self.root.list() {
            Ok(entries) => entries,
            Err(e) => {
                let reply = Message::error(format!("cannot list the root: {e}"));
                out.send(conn, &reply)?;
                return Ok(Next::Continue);
            }
        };
        out.send(conn, &Message::Ok)?;
        for (name, size) in &entries {
            let entry = Message::Entry { size: *size, name };
            out.send(conn, &entry)?;
        }
        out.send(conn, &Message::Done)?;
        Ok(Next::Continue)
    }

    fn get(
        &self,
        conn: &mut Timed<'_>,
        out: &mut FrameWriter,
        peer: &str,
        name: &[u8],
    ) -> anyhow::Result<Next> {
        let (mut file, size) = match self.root.open_file(name) {
            Ok(opened) => opened,
            Err(refusal) => {
                out.send(conn, &Message::error(refusal))?;
                return Ok(Next::Continue);
            }
        };
        out.send(conn, &Message::Sending { size })?;
        match send_stream(conn, out, &mut file, size, &mut |_| {}) {
            Ok(()) => {
                log::info!("{peer}: sent {} ({size} bytes)", show(name));
                Ok(Next::Continue)
            }
            Err(SendError::Source(e)) => {
                log::warn!("{peer}: sending {} aborted: {e}", show(name));
                Ok(Next::Continue)
            }
            // No farewell: a write may have stopped inside a frame, so the client could not read
            // one. It sees the connection close mid-download and discards what it got.
            Err(e @ SendError::Connection(_)) => {
                Err(e).with_context(|| format!("sending {}", show(name)))
            }
        }
    }

    fn put(
        &self,
        conn: &mut Timed<'_>,
        out: &mut FrameWriter,
        peer: &str,
        size: u64,
        name: &[u8],
    ) -> anyhow::Result<Next> {
        let refusal = match check_name(name) {
            Err(e) => Some(format!("bad file name \"{}\": {e}", show(name))),
            Ok(_) if size > self.max_upload => Some(format!(
                "{} is {size} bytes, over the upload limit of {} bytes",
                show(name),
                self.max_upload
            )),
            Ok(_) => None,
        };
        if let Some(why) = refusal {
            out.send(conn, &Message::error(why))?;
            return Ok(Next::Continue);
        }
        let mut temp = match self.root.create_temp() {
            Ok(temp) => temp,
            Err(e) => {
                let why = format!("cannot store {}: {e}", show(name));
                out.send(conn, &Message::error(why))?;
                return Ok(Next::Continue);
            }
        };
        out.send(conn, &Message::Ok)?;
        let received = receive_stream(conn, &mut temp.file, size, &mut |_| {});
        let outcome = received
            .map_err(|e| (e.in_step(), e.to_string()))
            .and_then(|()| {
                temp.persist(name)
                    .map_err(|e| (true, format!("cannot store {}: {e}", show(name))))
            });
        match outcome {
            Ok(()) => {
                out.send(conn, &Message::Ok)?;
                log::info!("{peer}: stored {} ({size} bytes)", show(name));
                Ok(Next::Continue)
            }
            Err((in_step, why)) => {
                // `temp` is dropped (and removed) on return. `why` may quote the client's own
                // cancel message: escaped like a name.
                log::warn!(
                    "{peer}: upload of {} failed: {}",
                    show(name),
                    escape(why.as_bytes())
                );
                // Only reads failed, so frames still go out whole: the reason is sent even past a
                // deadline (best effort when the connection itself broke).
                let reply = Message::error(format!("upload failed: {why}"));
                match (in_step, out.send(&mut conn.farewell(), &reply)) {
                    (true, Ok(())) => Ok(Next::Continue),
                    _ => Ok(Next::Close),
                }
            }
        }
    }
}

/// Which limit a [`Deadline`] enforces, for the message when it passes.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// `--idle-timeout`: the next whole command.
    Idle,
    /// `--transfer-timeout`: one command's whole exchange (a listing, a download, an upload).
    Transfer,
    /// `--connection-timeout`: the whole session.
    Connection,
    /// The last message before closing, once another deadline has passed.
    Farewell,
}

/// The moment one phase of a session must be over by.
///
/// A per-read timeout cannot stop a peer that trickles a byte just before each read would time out:
/// the phase goes on for ever. So each phase has a deadline, and every socket operation waits only
/// for the time left until it ([`Timed`]).
///
/// The deadlines are kept here rather than in [`Server::connection_timeout`]: the library's timer
/// assumes the socket timeouts are its own, and would lengthen the ones set here whenever its own
/// deadline came closer.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    limit: Duration,
    what: Limit,
}

impl Deadline {
    /// `limit` from now.
    fn after(limit: Duration, what: Limit) -> Deadline {
        Deadline {
            at: Instant::now() + limit,
            limit,
            what,
        }
    }

    /// Whichever of the two passes first.
    fn or_sooner(self, other: Option<Deadline>) -> Deadline {
        match other {
            Some(other) if other.at < self.at => other,
            _ => self,
        }
    }

    /// The time left, or the `TimedOut` error saying which limit passed.
    fn left(&self) -> io::Result<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(self.passed())
        } else {
            Ok(left)
        }
    }

    /// The error for this deadline having passed, naming the flag that set it.
    fn passed(&self) -> io::Error {
        let limit = self.limit;
        let what = match self.what {
            Limit::Idle => format!("no complete command within {limit:?} (--idle-timeout)"),
            Limit::Transfer => {
                format!("the transfer did not finish within {limit:?} (--transfer-timeout)")
            }
            Limit::Connection => format!("the session lasted {limit:?} (--connection-timeout)"),
            Limit::Farewell => format!("the last reply could not be sent within {limit:?}"),
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

/// How long the last message before closing may take, once a deadline has passed.
const FAREWELL: Duration = Duration::from_secs(1);

/// The connection under a [`Deadline`]: every read or write that may block first shrinks the
/// socket's timeout to the time left, so no operation outlasts the deadline however the peer
/// trickles, and a timeout is reported as the deadline that passed (not as the socket option).
struct Timed<'r> {
    req: &'r mut StreamRequest,
    deadline: Deadline,
}

impl<'r> Timed<'r> {
    fn new(req: &'r mut StreamRequest, deadline: Deadline) -> Timed<'r> {
        Timed { req, deadline }
    }

    /// The connection with [`FAREWELL`] left, for the reason of a close.
    fn last_words(req: &mut StreamRequest) -> Timed<'_> {
        Timed::new(req, Deadline::after(FAREWELL, Limit::Farewell))
    }

    /// This connection with [`FAREWELL`] left instead of its own deadline.
    fn farewell(&mut self) -> Timed<'_> {
        Timed::last_words(self.req)
    }

    /// Maps a socket timeout to this deadline's error: the socket timeout is always the time left.
    fn explain(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.deadline.passed(),
            _ => e,
        }
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Only a read the buffer cannot serve reaches the socket (one `read(2)` at most).
        if self.req.rfile.buffer().is_empty() {
            let left = self.deadline.left()?;
            self.req.set_read_timeout(Some(left))?;
        }
        self.req.rfile.read(buf).map_err(|e| self.explain(e))
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.deadline.left()?;
        self.req.set_write_timeout(Some(left))?;
        self.req.wfile.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        let left = self.deadline.left()?;
        self.req.set_write_timeout(Some(left))?;
        self.req.wfile.flush().map_err(|e| self.explain(e))
    }
}

/// A name as text for messages and logs: escaped, since a peer chose it (a newline would forge a log
/// line, an ESC sequence would reach the terminal of whoever reads the log).
fn show(name: &[u8]) -> String {
    escape(name)
}

/// The served directory, held open: every access is relative to this descriptor (see the module
/// docs), so the files served are those of the directory opened at start, whatever later happens to
/// its path.
#[derive(Debug)]
struct Root {
    dir: OwnedFd,
}

impl Root {
    fn open(path: &std::path::Path) -> anyhow::Result<Root> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = nix::fcntl::open(path, flags, Mode::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("opening the root directory {}", path.display()))?;
        Ok(Root { dir })
    }

    /// The regular, non-hidden files with their sizes, sorted by name; an error past the protocol's
    /// listing bounds, which a client would refuse anyway (and which bound what is held here).
    fn list(&self) -> io::Result<Vec<(Vec<u8>, u64)>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = nix::dir::Dir::openat(&self.dir, ".", flags, Mode::empty())?;
        let mut files = Vec::new();
        let mut bytes = 0;
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if check_name(name).is_err() {
                continue; // hidden, or otherwise unservable
            }
            // Not following links: a symbolic link is not listed, as it is not served.
            let Ok(stat) = fstatat(&self.dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue; // removed meanwhile
            };
            if is_regular(stat.st_mode) {
                bytes += name.len();
                if files.len() == MAX_LISTING_ENTRIES || bytes > MAX_LISTING_BYTES {
                    return Err(io::Error::other(format!(
                        "more files than a listing may hold ({MAX_LISTING_ENTRIES} entries, {} MiB \
                         of names)",
                        MAX_LISTING_BYTES >> 20
                    )));
                }
                files.push((name.to_vec(), u64::try_from(stat.st_size).unwrap_or(0)));
            }
        }
        files.sort();
        Ok(files)
    }

    /// Opens a file for download, or says why not (the text goes to the client).
    fn open_file(&self, name: &[u8]) -> Result<(File, u64), String> {
        let os_name =
            check_name(name).map_err(|e| format!("bad file name \"{}\": {e}", show(name)))?;
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let shown = show(name);
        let fd = openat(&self.dir, os_name, flags, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => format!("no such file: {shown}"),
            Errno::ELOOP => format!("{shown} is a symbolic link, and links are not served"),
            Errno::EACCES | Errno::EPERM => format!("permission denied: {shown}"),
            e => format!("cannot open {shown}: {}", io::Error::from(e)),
        })?;
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot open {shown}: {e}"))?;
        if !meta.file_type().is_file() {
            return Err(format!("not a regular file: {shown}"));
        }
        Ok((file, meta.len()))
    }

    /// Creates a hidden, uniquely named file to receive an upload.
    fn create_temp(&self) -> io::Result<TempUpload<'_>> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut last = Errno::EEXIST;
        for _ in 0..8 {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!(".upload-{}-{n}-{nanos}", std::process::id());
            match openat(
                &self.dir,
                name.as_str(),
                flags,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(fd) => {
                    return Ok(TempUpload {
                        root: self,
                        name,
                        file: File::from(fd),
                        stored: false,
                    });
                }
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }
}

fn is_regular(mode: nix::libc::mode_t) -> bool {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG
}

/// An upload in progress: removed on drop unless [`persist`](Self::persist)ed.
#[derive(Debug)]
struct TempUpload<'a> {
    root: &'a Root,
    name: String,
    file: File,
    stored: bool,
}

impl TempUpload<'_> {
    /// Makes the data durable, then atomically renames it over `name`.
    fn persist(&mut self, name: &[u8]) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_all()?;
        let target = OsStr::from_bytes(name);
        renameat(&self.root.dir, self.name.as_str(), &self.root.dir, target)?;
        self.stored = true;
        // The rename itself is durable once the directory is synced; the file is in place either way.
        if let Err(e) = nix::unistd::fsync(&self.root.dir) {
            log::warn!("fsync of the root directory: {e}");
        }
        Ok(())
    }
}

impl Drop for TempUpload<'_> {
    fn drop(&mut self) {
        if !self.stored
            && let Err(e) = unlinkat(
                &self.root.dir,
                self.name.as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
        {
            log::warn!("removing the temporary file {}: {e}", self.name);
        }
    }
}
