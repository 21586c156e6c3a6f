//! The client of the `fileserver` example: the notes' interactive menu (L/G/P/Q), and the same
//! commands as subcommands for scripts.
//!
//! ```text
//! fileclient --addr 127.0.0.1:PORT                 # interactive menu
//! fileclient --addr 127.0.0.1:PORT list            # NAME<TAB>SIZE per line
//! fileclient --addr 127.0.0.1:PORT get NAME        # writes ./NAME (temp file + rename)
//! fileclient --addr 127.0.0.1:PORT put PATH        # uploads PATH under its base name
//! ```
//!
//! Transfers show a progress bar (rate, ETA) on stderr when it is a terminal, and stay quiet when
//! it is not. Errors are printed as `fileclient: <reason>` with exit status 1; a download is written
//! to a hidden temporary file and renamed into place only once its size and CRC-32 check out, so a
//! failed download never leaves a partial or clobbered file. The protocol is described in
//! `examples/fileserver.rs`.

mod common;

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::fileproto::{
    FrameWriter, MAX_LISTING_BYTES, MAX_LISTING_ENTRIES, MAX_NAME, Message, READ_BUFFER,
    ReceiveError, SendError, check_name, escape, read_frame, receive_stream, send_stream,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Parser, Debug)]
#[command(
    name = "fileclient",
    about = "Client of the fileserver example: list, get and put files, or an interactive menu"
)]
struct Args {
    /// The server's address.
    #[arg(long)]
    addr: String,
    /// Seconds to wait for the connection, and for each read or write on it.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Without a command: the interactive menu.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the server's files: NAME<TAB>SIZE per line.
    List,
    /// Download NAME into the current directory.
    Get { name: OsString },
    /// Upload the local file PATH under its base name.
    Put { path: PathBuf },
}

fn main() {
    let args: Args = common::parse_args();
    let result = match Client::connect(&args.addr, args.timeout) {
        Ok(mut client) => match args.command {
            Some(command) => run_command(&mut client, command),
            None => menu(&mut client),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        report(&e);
        std::process::exit(1);
    }
}

/// Prints a failure on stderr, escaped: its text may quote the server (a refusal, a name), and a
/// server must not be able to write lines or terminal commands of its own there.
fn report(e: &Failure) {
    eprintln!("fileclient: {}", escape(e.to_string().as_bytes()));
}

fn run_command(client: &mut Client, command: Command) -> Result<(), Failure> {
    match command {
        Command::List => print_listing(&client.list()?),
        Command::Get { name } => {
            let size = client.get(name.as_bytes(), Path::new("."))?;
            println!("saved {} ({size} bytes)", escape(name.as_bytes()));
        }
        Command::Put { path } => {
            let size = client.put(&path)?;
            println!(
                "uploaded {} ({size} bytes)",
                escape(path.as_os_str().as_bytes())
            );
        }
    }
    client.quit()
}

/// `NAME<TAB>SIZE` per file, the name escaped: whatever the server sends, each file is one line.
fn print_listing(files: &[(Vec<u8>, u64)]) {
    for (name, size) in files {
        println!("{}\t{size}", escape(name));
    }
}

const MENU: &str = "\
Commands:
  L          list the server's files
  G NAME     download NAME into the current directory
  P PATH     upload a local file
  Q          quit";

/// The notes' menu loop, minus its crashes: an empty line, a missing argument or an unknown command
/// gets a hint; a refusal is reported and the menu goes on; only a broken connection ends it.
fn menu(client: &mut Client) -> Result<(), Failure> {
    let interactive = io::stdin().is_terminal();
    println!("{MENU}");
    let mut stdin = io::stdin().lock();
    let mut line = String::new();
    loop {
        if interactive {
            print!("command> ");
            let _ = io::stdout().flush();
        }
        line.clear();
        if stdin.read_line(&mut line).map_err(Failure::local)? == 0 {
            return client.quit(); // EOF: as Q
        }
        let line = line.trim();
        let (cmd, arg) = match line.split_once(char::is_whitespace) {
            Some((cmd, arg)) => (cmd, arg.trim()),
            None => (line, ""),
        };
        let result = match (cmd.to_ascii_uppercase().as_str(), arg) {
            ("", _) => {
                println!("type L, G NAME, P PATH or Q");
                continue;
            }
            ("L", "") => client.list().map(|files| print_listing(&files)),
            ("G", "") => Err(Failure::Local("G needs a file name: G NAME".into())),
            ("G", name) => client
                .get(name.as_bytes(), Path::new("."))
                .map(|size| println!("saved {} ({size} bytes)", escape(name.as_bytes()))),
            ("P", "") => Err(Failure::Local("P needs a path: P PATH".into())),
            ("P", path) => client
                .put(Path::new(path))
                .map(|size| println!("uploaded {} ({size} bytes)", escape(path.as_bytes()))),
            ("Q", "") => return client.quit(),
            _ => Err(Failure::Local(format!("unknown command: {line}"))),
        };
        match result {
            Ok(()) => {}
            Err(e @ Failure::Fatal(_)) => return Err(e),
            Err(e) => report(&e),
        }
    }
}

/// Why a command failed, and whether the session can go on.
#[derive(Debug)]
enum Failure {
    /// The server said no; the session is fine.
    Refused(String),
    /// A local problem (bad argument, unreadable file) found before or without upsetting the session.
    Local(String),
    /// The connection broke or the protocol went out of step: the session is over.
    Fatal(String),
}

impl Failure {
    fn local(e: impl fmt::Display) -> Failure {
        Failure::Local(e.to_string())
    }

    fn fatal(e: impl fmt::Display) -> Failure {
        Failure::Fatal(e.to_string())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(why) => write!(f, "server refused: {why}"),
            Failure::Local(why) | Failure::Fatal(why) => f.write_str(why),
        }
    }
}

/// The connection, with its timeout's expiry reported as such.
///
/// A socket timeout surfaces as `EAGAIN`, which reads "Resource temporarily unavailable (os error
/// 11)"; every error that reaches the user through the protocol functions passes here first.
struct Patient {
    stream: TcpStream,
    timeout: Duration,
}

impl Patient {
    fn explain(&self, e: io::Error) -> io::Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {:?} (--timeout)", self.timeout),
            ),
            _ => e,
        }
    }
}

impl Read for Patient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).map_err(|e| self.explain(e))
    }
}

impl Write for Patient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().map_err(|e| self.explain(e))
    }
}

/// A session with the server.
struct Client {
    reader: BufReader<Patient>,
    writer: Patient,
    out: FrameWriter,
    progress: bool,
}

impl Client {
    fn connect(addr: &str, timeout: f64) -> Result<Client, Failure> {
        let timeout = Duration::try_from_secs_f64(timeout)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| Failure::Local(format!("bad --timeout {timeout}: want seconds > 0")))?;
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| Failure::Fatal(format!("resolving {addr}: {e}")))?;
        let mut last = None;
        let mut stream = None;
        for sock in resolved {
            match TcpStream::connect_timeout(&sock, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| match last {
            Some(e) => Failure::Fatal(format!("connecting to {addr}: {e}")),
            None => Failure::Fatal(format!("{addr} resolves to no address")),
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(Failure::fatal)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(Failure::fatal)?;
        let writer = Patient {
            stream: stream.try_clone().map_err(Failure::fatal)?,
            timeout,
        };
        let reader = Patient { stream, timeout };
        Ok(Client {
            reader: BufReader::with_capacity(READ_BUFFER, reader),
            writer,
            out: FrameWriter::default(),
            progress: io::stderr().is_terminal(),
        })
    }

    fn send(&mut self, msg: &Message<'_>) -> Result<(), Failure> {
        self.out
            .send(&mut self.writer, msg)
            .map_err(|e| Failure::Fatal(format!("sending to the server: {e}")))
    }

    /// The next message's frame; the caller parses it (the message borrows the frame).
    fn recv(&mut self) -> Result<Vec<u8>, Failure> {
        match read_frame(&mut self.reader) {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => Err(Failure::fatal("the server closed the connection")),
            Err(e) => Err(Failure::Fatal(format!("reading from the server: {e}"))),
        }
    }

    /// The server's files, held whole (a listing is printed all or nothing), within the protocol's
    /// bounds: a server that streams entries forever, or huge ones, gets a clear error once a bound
    /// is passed, not all of the client's memory.
    fn list(&mut self) -> Result<Vec<(Vec<u8>, u64)>, Failure> {
        self.send(&Message::List)?;
        expect_ok(&self.recv()?)?;
        let mut files = Vec::new();
        let mut bytes = 0;
        loop {
            let frame = self.recv()?;
            match Message::parse(&frame) {
                Ok(Message::Entry { name, .. }) if name.len() > MAX_NAME => {
                    return Err(Failure::Fatal(format!(
                        "protocol error: a listing entry's name is {} bytes, over the \
                         {MAX_NAME}-byte limit",
                        name.len()
                    )));
                }
                Ok(Message::Entry { .. }) if files.len() == MAX_LISTING_ENTRIES => {
                    return Err(Failure::Fatal(format!(
                        "the server's listing has more than {MAX_LISTING_ENTRIES} entries; giving up"
                    )));
                }
                Ok(Message::Entry { size, name }) => {
                    bytes += name.len();
                    if bytes > MAX_LISTING_BYTES {
                        return Err(Failure::Fatal(format!(
                            "the server's listing holds more than {} MiB of names; giving up",
                            MAX_LISTING_BYTES >> 20
                        )));
                    }
                    files.push((name.to_vec(), size));
                }
                Ok(Message::Done) => return Ok(files),
                other => return Err(unexpected("a listing entry", other)),
            }
        }
    }

    /// Downloads `name` into `dir`; returns its size.
    fn get(&mut self, name: &[u8], dir: &Path) -> Result<u64, Failure> {
        let shown = escape(name);
        let local = check_name(name)
            .map_err(|e| Failure::Local(format!("will not write \"{shown}\" here: {e}")))?;
        let target = dir.join(local);
        self.send(&Message::Get { name })?;
        let frame = self.recv()?;
        let size = match Message::parse(&frame) {
            Ok(Message::Sending { size }) => size,
            Ok(Message::Error(why)) => return Err(Failure::Refused(why.into_owned())),
            other => return Err(unexpected("a download", other)),
        };
        let mut temp = tempfile::Builder::new()
            .prefix(".fileclient-")
            .suffix(".part")
            .permissions(Permissions::from_mode(0o666)) // as any new file: the umask applies
            .tempfile_in(dir)
            .map_err(|e| {
                Failure::Fatal(format!(
                    "creating a temporary file in {}: {e}",
                    dir.display()
                ))
            })?;
        let bar = self.progress_bar(size, &shown);
        let received = receive_stream(&mut self.reader, temp.as_file_mut(), size, &mut |n| {
            bar.set_position(n)
        });
        bar.finish_and_clear();
        match received {
            Ok(()) => {}
            Err(e @ (ReceiveError::Mismatch(_) | ReceiveError::Aborted(_))) => {
                return Err(Failure::Refused(format!("download of {shown} failed: {e}")));
            }
            Err(e) => return Err(Failure::Fatal(format!("download of {shown} failed: {e}"))),
        }
        let stored = temp
            .as_file()
            .sync_all()
            .map_err(|e| e.to_string())
            .and_then(|()| {
                temp.persist(&target)
                    .map(drop)
                    .map_err(|e| e.error.to_string())
            });
        stored.map_err(|e| Failure::Local(format!("saving {}: {e}", target.display())))?;
        Ok(size)
    }

    /// Uploads the file at `path` under its base name; returns its size.
    fn put(&mut self, path: &Path) -> Result<u64, Failure> {
        let name = path
            .file_name()
            .ok_or_else(|| Failure::Local(format!("{} names no file", path.display())))?
            .to_owned();
        check_name(name.as_bytes())
            .map_err(|e| Failure::Local(format!("cannot upload {}: {e}", path.display())))?;
        let mut file = File::open(path)
            .map_err(|e| Failure::Local(format!("opening {}: {e}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(|e| Failure::Local(format!("reading {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(Failure::Local(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let size = meta.len();
        self.send(&Message::Put {
            size,
            name: name.as_bytes(),
        })?;
        expect_ok(&self.recv()?)?;
        let bar = self.progress_bar(size, &escape(name.as_bytes()));
        let sent = send_stream(&mut self.writer, &mut self.out, &mut file, size, &mut |n| {
            bar.set_position(n)
        });
        bar.finish_and_clear();
        let local_error = match sent {
            Ok(()) => None,
            Err(SendError::Source(e)) => Some(e), // the server was told; it replies X
            Err(e @ SendError::Connection(_)) => return Err(Failure::fatal(e)),
        };
        let reply = expect_ok(&self.recv()?);
        match local_error {
            Some(e) => Err(Failure::Local(format!("reading {}: {e}", path.display()))),
            None => reply.map(|()| size),
        }
    }

    fn quit(&mut self) -> Result<(), Failure> {
        self.send(&Message::Quit)?;
        expect_ok(&self.recv()?)
    }

    fn progress_bar(&self, size: u64, name: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_message(name.to_owned())
    }
}

/// `O`, or the server's refusal.
fn expect_ok(frame: &[u8]) -> Result<(), Failure> {
    match Message::parse(frame) {
        Ok(Message::Ok) => Ok(()),
        Ok(Message::Error(why)) => Err(Failure::Refused(why.into_owned())),
        other => Err(unexpected("ok", other)),
    }
}

/// A reply that makes no sense here: the session is out of step.
fn unexpected(wanted: &str, got: Result<Message<'_>, common::fileproto::ProtoError>) -> Failure {
    match got {
        Ok(Message::Error(why)) => Failure::Refused(why.into_owned()),
        Ok(msg) => Failure::Fatal(format!(
            "protocol error: expected {wanted}, got {}",
            msg.kind()
        )),
        Err(e) => Failure::Fatal(format!("protocol error: {e}")),
    }
}
