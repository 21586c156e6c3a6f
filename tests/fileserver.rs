//! The `fileserver` and `fileclient` examples over real sockets: round trips of a binary file full
//! of the notes' `##` sentinel and NUL bytes under every strategy, path traversal and symlink
//! escapes, uploads cut off or failing verification, oversize uploads, garbage commands, the
//! interactive menu, and quiet output when piped. Server-side rules are checked with a raw-protocol
//! client written here from the protocol's documentation, so the client's own checks cannot hide a
//! server that trusts its input.

mod util;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use util::{ServerProc, TIMEOUT, connect, eventually, example_bin, run_with_input};

const MIB: usize = 1024 * 1024;

/// 5 MiB that break the notes' protocol every way: not UTF-8, full of NULs, and full of the `##`
/// sentinel (including a chunk that is exactly `##` at the end).
fn nasty_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    for at in (0..len.saturating_sub(16)).step_by(4093) {
        data[at..at + 12].copy_from_slice(b"##\0\0##\r\n##\0#");
    }
    let n = data.len();
    data[n - 2..].copy_from_slice(b"##");
    data
}

fn start(root: &Path, extra: &[&str]) -> ServerProc {
    let mut cmd = Command::new(example_bin("fileserver"));
    cmd.args(["--addr", "127.0.0.1:0", "--root"])
        .arg(root)
        .args(extra)
        .env("RUST_LOG", "off");
    ServerProc::start(cmd)
}

/// Runs `fileclient --addr <addr> <args>` in `cwd` with `input` on stdin (all pipes).
fn client(addr: &str, cwd: &Path, args: &[&str], input: &str) -> Output {
    let mut cmd = Command::new(example_bin("fileclient"));
    cmd.args(["--addr", addr, "--timeout", "10"])
        .args(args)
        .current_dir(cwd);
    run_with_input(cmd, input.as_bytes(), TIMEOUT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn hidden_names(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// A client speaking the wire protocol byte by byte, as documented in `examples/fileserver.rs`.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        Raw {
            stream: connect(addr),
        }
    }

    fn send(&mut self, tag: u8, body: &[u8]) {
        let len = u32::try_from(1 + body.len()).unwrap();
        let mut frame = len.to_be_bytes().to_vec();
        frame.push(tag);
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    fn send_put(&mut self, size: u64, name: &[u8]) {
        let mut body = size.to_be_bytes().to_vec();
        body.extend_from_slice(name);
        self.send(b'P', &body);
    }

    fn send_data(&mut self, data: &[u8]) {
        for chunk in data.chunks(64 * 1024) {
            self.send(b'D', chunk);
        }
    }

    fn send_end(&mut self, size: u64, crc: u32) {
        let mut body = size.to_be_bytes().to_vec();
        body.extend_from_slice(&crc.to_be_bytes());
        self.send(b'E', &body);
    }

    /// The next message as (tag, body), or `None` at EOF.
    fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0; 4];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a reply: {e}"),
        }
        let len = u32::from_be_bytes(header) as usize;
        assert!((1..=65_537).contains(&len), "frame length {len}");
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).unwrap();
        let tag = payload.remove(0);
        Some((tag, payload))
    }

    #[track_caller]
    fn expect(&mut self, tag: u8) -> Vec<u8> {
        match self.recv() {
            Some((t, body)) if t == tag => body,
            Some((t, body)) => panic!(
                "expected {:?}, got {:?} {:?}",
                char::from(tag),
                char::from(t),
                text(&body)
            ),
            None => panic!("expected {:?}, got EOF", char::from(tag)),
        }
    }

    /// The text of an error reply (`X`).
    #[track_caller]
    fn expect_error(&mut self) -> String {
        text(&self.expect(b'X'))
    }

    /// `L`, returning (name, size) entries.
    fn list(&mut self) -> Vec<(String, u64)> {
        self.send(b'L', b"");
        self.expect(b'O');
        let mut entries = Vec::new();
        loop {
            match self.recv() {
                Some((b'F', body)) => {
                    let size = u64::from_be_bytes(body[..8].try_into().unwrap());
                    entries.push((text(&body[8..]), size));
                }
                Some((b'.', _)) => return entries,
                other => panic!("unexpected listing message {other:?}"),
            }
        }
    }

    /// Reads until the server closes; panics if it sends anything but errors first.
    fn expect_close(&mut self) {
        while let Some((tag, body)) = self.recv() {
            assert_eq!(tag, b'X', "{:?}", text(&body));
        }
    }
}

// --- Round trips ----------------------------------------------------------------------------

fn round_trip(strategy: &str) {
    let root = TempDir::new().unwrap();
    let up = TempDir::new().unwrap();
    let down = TempDir::new().unwrap();
    let files: [(&str, Vec<u8>); 3] = [
        ("nasty.bin", nasty_bytes(5 * MIB)),
        ("hash", b"##".to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, data) in &files {
        fs::write(up.path().join(name), data).unwrap();
    }
    let mut server = start(root.path(), &["--concurrency", strategy]);

    for (name, data) in &files {
        let out = client(&server.addr, up.path(), &["put", name], "");
        assert_success(&out);
        assert!(
            out.stderr.is_empty(),
            "progress or noise on a pipe: {}",
            text(&out.stderr)
        );
        assert_eq!(
            text(&out.stdout),
            format!("uploaded {name} ({} bytes)\n", data.len())
        );
        assert!(
            fs::read(root.path().join(name)).unwrap() == *data,
            "{strategy}: {name} uploaded"
        );
    }

    let out = client(&server.addr, up.path(), &["list"], "");
    assert_success(&out);
    assert_eq!(
        text(&out.stdout),
        format!("empty\t0\nhash\t2\nnasty.bin\t{}\n", 5 * MIB)
    );

    for (name, data) in &files {
        let out = client(&server.addr, down.path(), &["get", name], "");
        assert_success(&out);
        assert!(
            out.stderr.is_empty(),
            "progress or noise on a pipe: {}",
            text(&out.stderr)
        );
        let got = fs::read(down.path().join(name)).unwrap();
        assert!(got == *data, "{strategy}: {name} downloaded byte-exact");
    }
    assert!(
        hidden_names(root.path()).is_empty(),
        "temporary files left in the root"
    );
    assert!(
        hidden_names(down.path()).is_empty(),
        "temporary files left by get"
    );
    assert_eq!(server.terminate().code(), Some(0), "{strategy}");
}

#[test]
fn round_trip_sequential() {
    round_trip("sequential");
}

#[test]
fn round_trip_threading() {
    round_trip("threading");
}

#[test]
fn round_trip_forking() {
    round_trip("forking");
}

/// The strategies the shared `--concurrency` definition brought.
#[test]
fn round_trip_pool() {
    round_trip("pool");
}

#[test]
fn round_trip_prefork() {
    round_trip("prefork");
}

#[test]
fn a_download_replaces_a_local_file_only_when_complete() {
    let root = TempDir::new().unwrap();
    let down = TempDir::new().unwrap();
    fs::write(root.path().join("f"), b"new contents").unwrap();
    fs::write(down.path().join("f"), b"old").unwrap();
    let server = start(root.path(), &[]);
    let out = client(&server.addr, down.path(), &["get", "f"], "");
    assert_success(&out);
    assert_eq!(fs::read(down.path().join("f")).unwrap(), b"new contents");

    // A failed download (no such file) leaves the local file alone and no temporary file behind.
    fs::write(down.path().join("g"), b"keep me").unwrap();
    fs::remove_file(root.path().join("f")).unwrap();
    let out = client(&server.addr, down.path(), &["get", "f"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fs::read(down.path().join("f")).unwrap(), b"new contents");
    assert_eq!(names(down.path()), ["f", "g"]);
}

// --- Confinement ---------------------------------------------------------------------------

#[test]
fn hostile_names_are_refused_and_the_session_goes_on() {
    let outer = TempDir::new().unwrap();
    let root = outer.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(outer.path().join("secret"), b"top secret").unwrap();
    fs::write(root.join("ok.txt"), b"fine").unwrap();
    fs::write(root.join(".hidden"), b"hidden").unwrap();
    let server = start(&root, &[]);
    let long = vec![b'a'; 256];

    let mut raw = Raw::connect(&server.addr);
    let cases: [(&[u8], &str); 11] = [
        (b"../secret", "a path"),
        (b"/etc/passwd", "a path"),
        (b"sub/ok.txt", "a path"),
        (b"./ok.txt", "a path"),
        (b"ok.txt\0", "NUL"),
        (b"a\0/../secret", "NUL"),
        (b"", "empty file name"),
        (b".hidden", "hidden"),
        (b"..", "hidden"),
        (b".", "hidden"),
        (&long, "longer than 255"),
    ];
    for (name, why) in cases {
        raw.send(b'G', name);
        let err = raw.expect_error();
        assert!(
            err.starts_with("bad file name"),
            "G {:?}: {err}",
            text(name)
        );
        assert!(err.contains(why), "G {:?}: {err}", text(name));
        raw.send_put(4, name);
        let err = raw.expect_error();
        assert!(err.contains(why), "P {:?}: {err}", text(name));
    }
    // Nothing was written anywhere, and the session still works.
    assert_eq!(raw.list(), [("ok.txt".to_string(), 4)]);
    assert_eq!(names(outer.path()), ["root", "secret"]);
    assert_eq!(names(&root), [".hidden", "ok.txt"]);

    // The client refuses to write outside the current directory even before asking.
    let cwd = TempDir::new().unwrap();
    let out = client(&server.addr, cwd.path(), &["get", "../secret"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("fileclient: "),
        "{}",
        text(&out.stderr)
    );
    assert!(names(cwd.path()).is_empty());
}

#[test]
fn symlinks_are_never_followed() {
    let outer = TempDir::new().unwrap();
    let root = outer.path().join("root");
    fs::create_dir(&root).unwrap();
    let secret = outer.path().join("secret");
    fs::write(&secret, b"top secret").unwrap();
    fs::write(root.join("ok.txt"), b"fine").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("escape")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("relative")).unwrap();
    fs::create_dir(root.join("subdir")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let server = start(&root, &[]);

    let mut raw = Raw::connect(&server.addr);
    for link in ["escape", "relative"] {
        raw.send(b'G', link.as_bytes());
        let err = raw.expect_error();
        assert_eq!(
            err,
            format!("{link} is a symbolic link, and links are not served")
        );
    }
    // Not regular files: refused, and the FIFO does not hang the server.
    for name in ["subdir", "fifo"] {
        raw.send(b'G', name.as_bytes());
        assert_eq!(raw.expect_error(), format!("not a regular file: {name}"));
    }
    assert_eq!(
        raw.list(),
        [("ok.txt".to_string(), 4)],
        "links, dirs, FIFOs unlisted"
    );

    // Through the client, as a user sees it.
    let cwd = TempDir::new().unwrap();
    let out = client(&server.addr, cwd.path(), &["get", "escape"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "fileclient: server refused: escape is a symbolic link, and links are not served\n"
    );
    assert!(names(cwd.path()).is_empty());

    // Uploading over a link replaces the link in the root, never writes through it.
    let data = b"uploaded";
    raw.send_put(data.len() as u64, b"escape");
    raw.expect(b'O');
    raw.send_data(data);
    raw.send_end(data.len() as u64, crc32fast::hash(data));
    raw.expect(b'O');
    assert_eq!(fs::read(&secret).unwrap(), b"top secret");
    assert!(fs::symlink_metadata(root.join("escape")).unwrap().is_file());
    assert_eq!(fs::read(root.join("escape")).unwrap(), data);
}

// --- Uploads that fail -----------------------------------------------------------------------

/// Announces 1 MiB, sends half, disconnects: no file, no temporary file, and the existing file
/// (if any) untouched.
fn cut_upload(strategy: &str) {
    let root = TempDir::new().unwrap();
    fs::write(root.path().join("keep.txt"), b"original").unwrap();
    let server = start(root.path(), &["--concurrency", strategy]);
    let data = nasty_bytes(MIB);
    for name in ["cut.bin", "keep.txt"] {
        let mut raw = Raw::connect(&server.addr);
        raw.send_put(data.len() as u64, name.as_bytes());
        raw.expect(b'O');
        raw.send_data(&data[..MIB / 2]);
        // The upload is in progress, into a hidden temporary file...
        assert!(
            eventually(TIMEOUT, || hidden_names(root.path()).len() == 1),
            "{strategy}: no temporary file during the upload: {:?}",
            names(root.path())
        );
        drop(raw);
        // ...which goes away with the connection.
        assert!(
            eventually(TIMEOUT, || hidden_names(root.path()).is_empty()),
            "{strategy}: temporary file left behind: {:?}",
            names(root.path())
        );
        assert_eq!(names(root.path()), ["keep.txt"], "{strategy}");
        assert_eq!(fs::read(root.path().join("keep.txt")).unwrap(), b"original");
    }
    assert_eq!(
        Raw::connect(&server.addr).list(),
        [("keep.txt".to_string(), 8)]
    );
}

#[test]
fn upload_cut_off_midway_leaves_no_file_sequential() {
    cut_upload("sequential");
}

#[test]
fn upload_cut_off_midway_leaves_no_file_threading() {
    cut_upload("threading");
}

#[test]
fn upload_cut_off_midway_leaves_no_file_forking() {
    cut_upload("forking");
}

#[test]
fn failed_verification_stores_nothing_and_the_session_goes_on() {
    let root = TempDir::new().unwrap();
    fs::write(root.path().join("keep.txt"), b"original").unwrap();
    let server = start(root.path(), &[]);
    let mut raw = Raw::connect(&server.addr);
    let data = b"replacement";
    let size = data.len() as u64;

    // Right size, wrong checksum (a corrupted byte in transit).
    raw.send_put(size, b"keep.txt");
    raw.expect(b'O');
    raw.send_data(data);
    raw.send_end(size, crc32fast::hash(data) ^ 1);
    assert!(raw.expect_error().contains("checksum mismatch"));

    // Fewer bytes than announced, with an end marker that admits it.
    raw.send_put(size, b"keep.txt");
    raw.expect(b'O');
    raw.send_data(&data[..5]);
    raw.send_end(5, crc32fast::hash(&data[..5]));
    assert!(
        raw.expect_error()
            .contains("announced 11 bytes, received 5")
    );

    // The sender cancels.
    raw.send_put(size, b"keep.txt");
    raw.expect(b'O');
    raw.send_data(&data[..5]);
    raw.send(b'X', b"disk on fire");
    assert!(raw.expect_error().contains("disk on fire"));

    assert_eq!(fs::read(root.path().join("keep.txt")).unwrap(), b"original");
    assert_eq!(raw.list(), [("keep.txt".to_string(), 8)]);
    assert!(hidden_names(root.path()).is_empty());

    // And a good upload on the same session replaces it.
    raw.send_put(size, b"keep.txt");
    raw.expect(b'O');
    raw.send_data(data);
    raw.send_end(size, crc32fast::hash(data));
    raw.expect(b'O');
    assert_eq!(fs::read(root.path().join("keep.txt")).unwrap(), data);
}

#[test]
fn oversize_uploads_are_refused() {
    let root = TempDir::new().unwrap();
    let up = TempDir::new().unwrap();
    fs::write(root.path().join("big"), b"original").unwrap();
    fs::write(up.path().join("big"), vec![7; 1001]).unwrap();
    fs::write(up.path().join("fits"), vec![7; 1000]).unwrap();
    let server = start(root.path(), &["--max-upload", "1000"]);

    let out = client(&server.addr, up.path(), &["put", "big"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "fileclient: server refused: big is 1001 bytes, over the upload limit of 1000 bytes\n"
    );
    assert_eq!(fs::read(root.path().join("big")).unwrap(), b"original");
    assert_success(&client(&server.addr, up.path(), &["put", "fits"], ""));
    assert_eq!(fs::read(root.path().join("fits")).unwrap(), vec![7; 1000]);

    // Refused before any data: the reply comes without a byte of data sent.
    let mut raw = Raw::connect(&server.addr);
    raw.send_put(u64::MAX, b"huge");
    assert!(raw.expect_error().contains("over the upload limit"));
    // A stream longer than announced is cut off: error, then the connection is closed.
    raw.send_put(10, b"liar");
    raw.expect(b'O');
    raw.send_data(&[1; 20]);
    assert!(
        raw.expect_error()
            .contains("more data than the 10 bytes announced")
    );
    raw.expect_close();
    assert!(eventually(TIMEOUT, || hidden_names(root.path()).is_empty()));
    assert_eq!(names(root.path()), ["big", "fits"]);
}

// --- Bad commands ----------------------------------------------------------------------------

fn garbage(strategy: &str) {
    let root = TempDir::new().unwrap();
    fs::write(root.path().join("f"), b"x").unwrap();
    let server = start(root.path(), &["--concurrency", strategy]);
    // A sequential server serves one connection at a time, so only the others can hold one open.
    let mut bystander = (strategy != "sequential").then(|| Raw::connect(&server.addr));

    let mut raw = Raw::connect(&server.addr);
    raw.stream.write_all(&[0, 0, 0, 0]).unwrap(); // an empty frame: the notes' data[0] crash
    assert_eq!(raw.expect_error(), "empty command");
    raw.send(b'Z', b"zzz");
    assert_eq!(raw.expect_error(), "unknown command 'Z'");
    raw.send(0xff, b"");
    assert_eq!(raw.expect_error(), "unknown command 0xff");
    raw.send(b'L', b"extra");
    assert_eq!(raw.expect_error(), "malformed 'L' message");
    raw.send(b'O', b"");
    assert!(raw.expect_error().starts_with("expected a command"));
    raw.send(b'D', b"stray data");
    assert!(raw.expect_error().starts_with("expected a command"));
    assert_eq!(raw.list(), [("f".to_string(), 1)], "the session goes on");
    drop(raw);

    // Not this protocol at all: an error, then the connection is closed.
    let mut http = Raw::connect(&server.addr);
    http.stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(http.expect_error().starts_with("bad frame"));
    http.expect_close();

    // The notes' client protocol: "L" and "G name" as bare bytes, also refused.
    let mut notes = Raw::connect(&server.addr);
    notes.stream.write_all(b"G ../../etc/passwd").unwrap();
    assert!(notes.expect_error().starts_with("bad frame"));
    notes.expect_close();

    // Everyone else is still served.
    if let Some(bystander) = &mut bystander {
        assert_eq!(bystander.list(), [("f".to_string(), 1)]);
    }
    assert_eq!(Raw::connect(&server.addr).list(), [("f".to_string(), 1)]);
}

#[test]
fn garbage_commands_sequential() {
    garbage("sequential");
}

#[test]
fn garbage_commands_forking() {
    garbage("forking");
}

#[test]
fn quit_ends_the_session() {
    let root = TempDir::new().unwrap();
    let server = start(root.path(), &[]);
    let mut raw = Raw::connect(&server.addr);
    raw.send(b'Q', b"");
    raw.expect(b'O');
    assert!(raw.recv().is_none(), "closed after Q");
}

// --- The client ------------------------------------------------------------------------------

#[test]
fn interactive_menu_driven_through_stdin() {
    let root = TempDir::new().unwrap();
    let cwd = TempDir::new().unwrap();
    fs::write(root.path().join("a.txt"), b"alpha").unwrap();
    fs::write(cwd.path().join("up.bin"), nasty_bytes(100_000)).unwrap();
    let server = start(root.path(), &[]);

    let script = "L\n\n   \nG a.txt\nX\nG\nP\nG ../etc/passwd\nP up.bin\nG missing\nl\nQ\nL\n";
    let out = client(&server.addr, cwd.path(), &[], script);
    assert_success(&out);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.starts_with("Commands:\n"), "the menu: {stdout}");
    assert!(stdout.contains("  Q          quit\na.txt\t5\n"), "{stdout}");
    assert!(stdout.contains("saved a.txt (5 bytes)\n"), "{stdout}");
    assert!(
        stdout.contains("uploaded up.bin (100000 bytes)\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("a.txt\t5\nup.bin\t100000\n"), "{stdout}");
    assert_eq!(
        stdout.matches("type L, G NAME, P PATH or Q").count(),
        2,
        "{stdout}"
    );
    for expected in [
        "fileclient: unknown command: X\n",
        "fileclient: G needs a file name: G NAME\n",
        "fileclient: P needs a path: P PATH\n",
        "fileclient: will not write \"../etc/passwd\" here",
        "fileclient: server refused: no such file: missing\n",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert_eq!(fs::read(cwd.path().join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::read(root.path().join("up.bin")).unwrap(),
        nasty_bytes(100_000)
    );

    // End of input is a quit too.
    let out = client(&server.addr, cwd.path(), &[], "L\n");
    assert_success(&out);
    assert!(text(&out.stdout).ends_with("a.txt\t5\nup.bin\t100000\n"));
}

#[test]
fn progress_output_absent_when_piped() {
    let root = TempDir::new().unwrap();
    let cwd = TempDir::new().unwrap();
    fs::write(root.path().join("big"), nasty_bytes(5 * MIB)).unwrap();
    let server = start(root.path(), &[]);
    let out = client(&server.addr, cwd.path(), &["get", "big"], "");
    assert_success(&out);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("saved big ({} bytes)\n", 5 * MIB)
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`), the same download draws a progress
/// bar with the rate and ETA on stderr.
#[test]
fn progress_bar_on_a_terminal() {
    let root = TempDir::new().unwrap();
    let cwd = TempDir::new().unwrap();
    fs::write(root.path().join("big"), nasty_bytes(5 * MIB)).unwrap();
    let server = start(root.path(), &[]);
    let client = example_bin("fileclient");
    let command_line = format!("'{}' --addr {} get big", client.display(), server.addr);
    let mut cmd = Command::new("script");
    cmd.args([
        "--quiet",
        "--return",
        "--command",
        &command_line,
        "/dev/null",
    ]);
    // As in a terminal emulator: without TERM, indicatif assumes a dumb terminal and draws nothing.
    cmd.env("TERM", "xterm").current_dir(cwd.path());
    let out = run_with_input(cmd, b"", TIMEOUT);
    let terminal = text(&out.stdout); // script copies the terminal's output to its stdout
    assert!(out.status.success(), "{terminal}\n{}", text(&out.stderr));
    assert!(terminal.contains("saved big (5242880 bytes)"), "{terminal}");
    assert!(terminal.contains("big ["), "no progress bar: {terminal}");
    assert!(
        terminal.contains("MiB") && terminal.contains("ETA"),
        "{terminal}"
    );
    assert_eq!(
        fs::read(cwd.path().join("big")).unwrap(),
        nasty_bytes(5 * MIB)
    );
}

#[test]
fn client_errors_are_plain_with_a_nonzero_exit() {
    let root = TempDir::new().unwrap();
    let cwd = TempDir::new().unwrap();
    let server = start(root.path(), &[]);
    let out = client(&server.addr, cwd.path(), &["get", "x"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "fileclient: server refused: no such file: x\n"
    );
    assert!(out.stdout.is_empty());

    let out = client(&server.addr, cwd.path(), &["put", "nope"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("fileclient: opening nope: "));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = client(&addr, cwd.path(), &["list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("fileclient: connecting to {addr}: ")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    let root = TempDir::new().unwrap();
    let root = root.path().to_str().unwrap();
    for (bin, args) in [
        ("fileserver", &["--addr", "127.0.0.1:0"][..]), // --root is required
        ("fileserver", &["--root", root, "--concurrency", "bogus"]),
        ("fileserver", &["--root", root, "--max-upload", "-1"]),
        ("fileclient", &["list"]), // --addr is required
        ("fileclient", &["--addr", "127.0.0.1:1", "frobnicate"]),
    ] {
        let out = Command::new(example_bin(bin)).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}");
        assert!(text(&out.stderr).contains("Usage"), "{bin} {args:?}");
    }
    let out = Command::new(example_bin("fileserver"))
        .args(["--root", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("opening the root directory /nonexistent/dir"));
}

// --- Hostile names and hostile servers ---------------------------------------------------------

/// A stand-in for the file server on a std `TcpListener`: serves one connection with `script` (which
/// gets the stream, read and write timeouts set) on a thread, and hands back what the script returns.
fn fake_server<T: Send + 'static>(
    script: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (String, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        script(stream)
    });
    (addr, thread)
}

/// One frame: the length, the tag, the body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(1 + body.len())
        .unwrap()
        .to_be_bytes()
        .to_vec();
    frame.push(tag);
    frame.extend_from_slice(body);
    frame
}

/// A listing entry frame (`F` size name).
fn entry(size: u64, name: &[u8]) -> Vec<u8> {
    let mut body = size.to_be_bytes().to_vec();
    body.extend_from_slice(name);
    frame(b'F', &body)
}

/// Reads one whole frame from a client and returns its tag.
fn read_command(stream: &mut TcpStream) -> u8 {
    let mut header = [0; 4];
    stream.read_exact(&mut header).unwrap();
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).unwrap();
    payload[0]
}

/// The hostile review's forged line: uploaded as `innocent.txt<TAB>6<LF>fake-file.pdf`, a name printed
/// as `fake-file.pdf<TAB>…` on a line of its own in `fileclient list`. Names with control characters
/// (and ESC sequences, C1 controls, bidirectional overrides) are refused by the server, whatever
/// the client, and by the client before it asks; refusals quote the name escaped.
#[test]
fn names_with_control_characters_are_refused() {
    let root = TempDir::new().unwrap();
    fs::write(root.path().join("real.txt"), b"x").unwrap();
    let server = start(root.path(), &[]);
    let forged: &[u8] = b"innocent.txt\t6\nfake-file.pdf";
    let hostile: [&[u8]; 6] = [
        forged,
        b"\x1b]0;pwned\x07title",
        b"red\x1b[31m",
        b"del\x7f",
        "c1-csi\u{9b}31m".as_bytes(),
        "bidi\u{202e}fdp.exe".as_bytes(),
    ];
    let mut raw = Raw::connect(&server.addr);
    for name in hostile {
        raw.send_put(6, name);
        let err = raw.expect_error();
        assert!(err.contains("control character"), "P {name:?}: {err}");
        assert!(!err.chars().any(char::is_control), "P {name:?}: {err:?}");
        raw.send(b'G', name);
        let err = raw.expect_error();
        assert!(err.contains("control character"), "G {name:?}: {err}");
    }
    assert_eq!(raw.list(), [("real.txt".to_string(), 1)]);
    assert_eq!(names(root.path()), ["real.txt"]);

    // Such a file already in the root is neither listed nor served.
    fs::write(root.path().join("evil\n\x1b[31mred"), b"y").unwrap();
    let cwd = TempDir::new().unwrap();
    let out = client(&server.addr, cwd.path(), &["list"], "");
    assert_success(&out);
    assert_eq!(text(&out.stdout), "real.txt\t1\n");

    // The client refuses to upload it, and its error is one line with the name escaped.
    let name = std::ffi::OsStr::from_bytes(forged);
    fs::write(cwd.path().join(name), b"123456").unwrap();
    let mut cmd = Command::new(example_bin("fileclient"));
    cmd.args(["--addr", &server.addr, "put"])
        .arg(name)
        .current_dir(cwd.path());
    let out = run_with_input(cmd, b"", TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("control character"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains(r"innocent.txt\t6\nfake-file.pdf"),
        "{stderr:?}"
    );
    assert_eq!(names(root.path()), ["evil\n\x1b[31mred", "real.txt"]);
}

/// A malicious server's names and error texts reach the terminal escaped: no forged listing line,
/// no ESC sequence.
#[test]
fn the_client_escapes_what_a_hostile_server_sends() {
    let (addr, server) = fake_server(|mut s| {
        assert_eq!(read_command(&mut s), b'L');
        let mut reply = frame(b'O', b"");
        reply.extend(entry(6, b"innocent.txt\t6\nfake-file.pdf"));
        reply.extend(entry(1, b"\x1b[2J\x1b]0;pwned\x07"));
        reply.extend(frame(b'.', b""));
        s.write_all(&reply).unwrap();
        assert_eq!(read_command(&mut s), b'Q');
        s.write_all(&frame(b'O', b"")).unwrap();
    });
    let cwd = TempDir::new().unwrap();
    let out = client(&addr, cwd.path(), &["list"], "");
    server.join().unwrap();
    assert_success(&out);
    assert_eq!(
        text(&out.stdout),
        "innocent.txt\\t6\\nfake-file.pdf\t6\n\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\t1\n"
    );

    let (addr, server) = fake_server(|mut s| {
        assert_eq!(read_command(&mut s), b'G');
        s.write_all(&frame(b'X', b"no\x1b[2J\nfileclient: all good"))
            .unwrap();
    });
    let out = client(&addr, cwd.path(), &["get", "f"], "");
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "fileclient: server refused: no\\u{1b}[2J\\nfileclient: all good\n"
    );
}

/// The `i`th entry frame of a fake listing.
type EntryAt = fn(u64) -> Vec<u8>;

/// Streams listing entries (`O`, then `F` frames made by `entry_at`) until the client hangs up, for at
/// most 60 s or 4 GiB; returns how many bytes went out before the connection broke.
fn endless_listing(mut s: TcpStream, entry_at: EntryAt) -> u64 {
    assert_eq!(read_command(&mut s), b'L');
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let mut batch = frame(b'O', b"");
    for i in 0..u64::MAX {
        batch.extend(entry_at(i));
        if batch.len() < 64 * 1024 {
            continue;
        }
        if s.write_all(&batch).is_err() {
            return sent;
        }
        sent += batch.len() as u64;
        batch.clear();
        if sent > 4 << 30 || started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    sent
}

/// The hostile review's endless listing (the client grew to 1.39 GB in 8 s): the client bounds the
/// entries, the bytes and each name of a listing, and fails with a clear error, soon, having read a
/// bounded amount (so holding a bounded amount: what it received is all it can hold).
#[test]
fn an_endless_listing_fails_with_a_bound() {
    let cwd = TempDir::new().unwrap();
    let cases: [(EntryAt, &str); 3] = [
        // Small entries: the entry count runs out first.
        (|i| entry(i, format!("file-{i:012}").as_bytes()), "entries"),
        // The longest names: the byte count runs out first.
        (|i| entry(i, format!("{i:0>255}").as_bytes()), "MiB"),
        // One name far over NAME_MAX.
        (|_| entry(1, &[b'n'; 60_000]), "255"),
    ];
    for (entry_at, bound) in cases {
        let (addr, server) = fake_server(move |s| endless_listing(s, entry_at));
        let started = std::time::Instant::now();
        let mut cmd = Command::new(example_bin("fileclient"));
        cmd.args(["--addr", &addr, "list"]).current_dir(cwd.path());
        let out = run_with_input(cmd, b"", Duration::from_secs(15));
        let took = started.elapsed();
        let sent = server.join().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bound}: {stderr}");
        assert!(
            stderr.starts_with("fileclient: ")
                && stderr.contains("listing")
                && stderr.contains(bound),
            "{bound}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{bound}: printed a partial listing");
        assert!(took < Duration::from_secs(10), "{bound}: took {took:?}");
        assert!(sent < 64 << 20, "{bound}: the client read {sent} bytes");
    }
}

// --- Deadlines -------------------------------------------------------------------------------

/// Reads frames from `stream` on a thread until EOF (or reset, or [`TIMEOUT`]); reports each error
/// text (`X`) and, at the end, the moment the server closed the connection.
fn watch(stream: &TcpStream) -> mpsc::Receiver<Result<String, Instant>> {
    let mut raw = Raw {
        stream: stream.try_clone().unwrap(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Some((tag, body)) = raw.recv() {
            if tag == b'X' && tx.send(Ok(text(&body))).is_err() {
                return;
            }
        }
        let _ = tx.send(Err(Instant::now()));
    });
    rx
}

/// Writes `bytes` a few at a time, `every` apart — each read on the server comes well within any
/// per-read timeout — until the server closes the connection (`watch` says so) or 8 s pass. Returns
/// the error texts the server sent and when it closed, if it did.
fn trickle(raw: &mut Raw, bytes: &[u8], every: Duration) -> (Vec<String>, Option<Instant>) {
    let events = watch(&raw.stream);
    let mut errors = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(8);
    let mut chunks = bytes.chunks(8);
    while Instant::now() < give_up {
        match events.recv_timeout(every) {
            Ok(Ok(error)) => errors.push(error),
            Ok(Err(closed)) => return (errors, Some(closed)),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let Some(chunk) = chunks.next() else { break };
                if raw.stream.write_all(chunk).is_err() {
                    break;
                }
            }
        }
    }
    (errors, None)
}

/// The hostile review's trickler: one byte every 2 s kept a session 21 s under `--idle-timeout 3`,
/// as the timeout was per read. It is a deadline for the whole next command now.
#[test]
fn a_trickled_command_is_cut_at_the_idle_deadline() {
    let root = TempDir::new().unwrap();
    let server = start(root.path(), &["--idle-timeout", "1"]);
    let mut raw = Raw::connect(&server.addr);
    let mut body = 1u64.to_be_bytes().to_vec();
    body.extend_from_slice(&[b'n'; 250]);
    let command = frame(b'P', &body);
    let started = Instant::now();
    let (errors, closed) = trickle(&mut raw, &command, Duration::from_millis(100));
    let closed = closed.expect("the server let the trickling client keep its session");
    let took = closed - started;
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "cut after {took:?}"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("--idle-timeout"), "{errors:?}");
}

/// An upload trickled a few bytes at a time is cut at `--transfer-timeout` from its start, and the
/// reason names that flag (it said `read_timeout`, a socket option the user never set).
#[test]
fn a_trickled_upload_is_cut_at_the_transfer_deadline() {
    let root = TempDir::new().unwrap();
    let server = start(root.path(), &["--transfer-timeout", "1"]);
    let mut raw = Raw::connect(&server.addr);
    raw.send_put(MIB as u64, b"slow.bin");
    raw.expect(b'O');
    let started = Instant::now();
    let (errors, closed) = trickle(
        &mut raw,
        &frame(b'D', &[7; 60_000]),
        Duration::from_millis(100),
    );
    let closed = closed.expect("the server let the trickled upload run on");
    let took = closed - started;
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&took),
        "cut after {took:?}"
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("--transfer-timeout"), "{errors:?}");
    assert!(eventually(TIMEOUT, || hidden_names(root.path()).is_empty()));
    assert!(names(root.path()).is_empty());
}

/// A download to a reader that takes a little at a time is cut at `--transfer-timeout` (it took
/// about 9 s under `--transfer-timeout 3`). Seen from outside through a sequential server: the next
/// client is served as soon as the slow one is cut.
#[test]
fn a_slow_download_is_cut_at_the_transfer_deadline() {
    use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn, sockopt};
    use std::os::fd::AsRawFd;
    let root = TempDir::new().unwrap();
    fs::write(root.path().join("big"), vec![1; 16 * MIB]).unwrap();
    let server = start(
        root.path(),
        &["--concurrency", "sequential", "--transfer-timeout", "1"],
    );
    // A small receive buffer, so the kernel cannot take the file off the server's hands.
    let fd = sock::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    sock::setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    let std::net::SocketAddr::V4(v4) = server.socket_addr() else {
        panic!("IPv4 expected")
    };
    sock::connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).unwrap();
    let mut slow = TcpStream::from(fd);
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    slow.write_all(&frame(b'G', b"big")).unwrap();
    let started = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            let give_up = Instant::now() + Duration::from_secs(10);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < give_up {
                match slow.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    // Queued behind the download until the server is done with it.
    let mut next = Raw::connect(&server.addr);
    let listing = next.list();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reading.join().unwrap();
    assert_eq!(listing, [("big".to_string(), 16 * MIB as u64)]);
    assert!(
        took < Duration::from_secs(4),
        "the slow download held the server {took:?}"
    );
}

/// `--connection-timeout` ends a session however busy it keeps itself (a default of 15 minutes
/// applies unless set).
#[test]
fn a_busy_session_ends_at_the_connection_deadline() {
    let root = TempDir::new().unwrap();
    let out = Command::new(example_bin("fileserver"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        text(&out.stdout).contains("[default: 900]"),
        "{}",
        text(&out.stdout)
    );
    let server = start(root.path(), &["--connection-timeout", "2"]);
    let mut raw = Raw::connect(&server.addr);
    let started = Instant::now();
    let mut cut = None;
    for _ in 0..100 {
        raw.send(b'L', b"");
        match raw.recv() {
            Some((b'O', _)) => assert_eq!(raw.expect(b'.'), b""),
            Some((b'X', why)) => {
                cut = Some((started.elapsed(), text(&why)));
                break;
            }
            other => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (took, why) = cut.expect("the session outlived --connection-timeout");
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(5)).contains(&took),
        "cut after {took:?}"
    );
    assert!(why.contains("--connection-timeout"), "{why}");
    assert!(raw.recv().is_none(), "closed after the notice");
}

/// A client timeout reads as one: "timed out after 1s", not "Resource temporarily unavailable
/// (os error 11)".
#[test]
fn the_client_reports_a_timeout_as_one() {
    let (addr, server) = fake_server(|mut s| {
        assert_eq!(read_command(&mut s), b'L');
        // Says nothing until the client gives up.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    let cwd = TempDir::new().unwrap();
    let mut cmd = Command::new(example_bin("fileclient"));
    cmd.args(["--addr", &addr, "--timeout", "1", "list"])
        .current_dir(cwd.path());
    let out = run_with_input(cmd, b"", TIMEOUT);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "fileclient: reading from the server: timed out after 1s (--timeout)\n"
    );
}
