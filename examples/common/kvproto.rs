//! The line protocol of `kv` and `kv_state`, and the in-memory store behind it.
//!
//! One command per line (`\n`, or `\r\n`), one reply line per command:
//!
//! | command | reply |
//! |---|---|
//! | `SET <key> <value>` | `OK` |
//! | `GET <key>` | `VALUE <value>` or `NONE` |
//! | `DEL <key>` | `DELETED` or `NONE` |
//! | `QUIT` | `BYE`, then the server closes the connection |
//! | anything else | `ERROR <reason>`; the connection stays open |
//!
//! Commands are case-insensitive; keys and values are case-sensitive. A key is 1 to [`MAX_KEY`] bytes
//! without spaces; a value is 1 to [`MAX_VALUE`] bytes and may contain spaces (everything after the
//! space that ends the key). Lines must be UTF-8 without control characters: a value comes back in a
//! reply line, so it must not be able to end that line early or send escape sequences to a terminal.
//!
//! `kv` and `kv_state` speak the same protocol, so `kv` forwards a client's command to the state
//! service and the reply back without translating either.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::sync::{Arc, Mutex, PoisonError};

use socketserver::StreamRequest;

/// The longest key, in bytes.
pub const MAX_KEY: usize = 256;

/// The longest value, in bytes.
pub const MAX_VALUE: usize = 1024;

/// The longest line, terminator excluded: a `SET` of the longest key and value. A longer line is
/// refused without being held: only its length is counted while the rest of it is skipped.
pub const MAX_LINE: usize = "SET ".len() + MAX_KEY + 1 + MAX_VALUE;

/// The most keys a store holds. Each entry holds at most `MAX_KEY + MAX_VALUE` bytes, so this bounds
/// the store's memory (to about 13 MiB) however many `SET`s clients send.
pub const MAX_KEYS: usize = 10_000;

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Set { key: String, value: String },
    Get { key: String },
    Del { key: String },
    Quit,
}

const COMMANDS: &str = "commands are SET <key> <value>, GET <key>, DEL <key> and QUIT";

impl Command {
    /// Parses one line (terminator removed). The error is the reason for the `ERROR` reply; it never
    /// quotes the line, so a peer cannot make the server echo bytes of its choosing.
    pub fn parse(line: &[u8]) -> Result<Command, String> {
        let line = std::str::from_utf8(line).map_err(|_| "the line is not UTF-8".to_string())?;
        if line.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
        let (verb, rest) = match line.split_once(' ') {
            Some((verb, rest)) => (verb, Some(rest)),
            None => (line, None),
        };
        let is = |name: &str| verb.eq_ignore_ascii_case(name);
        if is("SET") {
            let (key, value) = rest
                .and_then(|r| r.split_once(' '))
                .ok_or("usage: SET <key> <value>")?;
            check_key(key)?;
            check_value(value)?;
            Ok(Command::Set {
                key: key.into(),
                value: value.into(),
            })
        } else if is("GET") || is("DEL") {
            let key = rest.ok_or(if is("GET") {
                "usage: GET <key>"
            } else {
                "usage: DEL <key>"
            })?;
            check_key(key)?;
            let key = key.to_string();
            Ok(if is("GET") {
                Command::Get { key }
            } else {
                Command::Del { key }
            })
        } else if is("QUIT") {
            match rest {
                None => Ok(Command::Quit),
                Some(_) => Err("usage: QUIT (no arguments)".into()),
            }
        } else if line.is_empty() {
            Err(format!("empty line; {COMMANDS}"))
        } else {
            Err(format!("unknown command; {COMMANDS}"))
        }
    }

    /// The command as one line, terminator included.
    pub fn encode(&self) -> String {
        match self {
            Command::Set { key, value } => format!("SET {key} {value}\n"),
            Command::Get { key } => format!("GET {key}\n"),
            Command::Del { key } => format!("DEL {key}\n"),
            Command::Quit => "QUIT\n".into(),
        }
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("empty key".into())
    } else if key.contains(' ') {
        Err("a key cannot contain spaces".into())
    } else if key.len() > MAX_KEY {
        Err(format!("key longer than {MAX_KEY} bytes"))
    } else {
        Ok(())
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("empty value; usage: SET <key> <value>".into())
    } else if value.len() > MAX_VALUE {
        Err(format!("value longer than {MAX_VALUE} bytes"))
    } else {
        Ok(())
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Value(String),
    None,
    Deleted,
    Bye,
    Error(String),
}

impl Reply {
    /// The reply as one line, terminator included.
    pub fn encode(&self) -> String {
        match self {
            Reply::Ok => "OK\n".into(),
            Reply::Value(v) => format!("VALUE {v}\n"),
            Reply::None => "NONE\n".into(),
            Reply::Deleted => "DELETED\n".into(),
            Reply::Bye => "BYE\n".into(),
            Reply::Error(why) => format!("ERROR {why}\n"),
        }
    }

    /// Parses a reply line from a server (terminator removed), checking it as strictly as a command:
    /// a client forwards it to its own peer, so a confused or hostile server must not be able to
    /// inject lines or control characters through it.
    pub fn parse(line: &[u8]) -> Result<Reply, String> {
        let line =
            std::str::from_utf8(line).map_err(|_| "a reply that is not UTF-8".to_string())?;
        if line.chars().any(char::is_control) {
            return Err("a reply with control characters".into());
        }
        match line.split_once(' ') {
            None if line == "OK" => Ok(Reply::Ok),
            None if line == "NONE" => Ok(Reply::None),
            None if line == "DELETED" => Ok(Reply::Deleted),
            None if line == "BYE" => Ok(Reply::Bye),
            Some(("VALUE", v)) => check_value(v).map(|()| Reply::Value(v.into())),
            Some(("ERROR", why)) => Ok(Reply::Error(why.into())),
            _ => Err("an unknown reply".into()),
        }
    }
}

/// One line read by [`read_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole line, its `\n` or `\r\n` removed.
    Complete(Vec<u8>),
    /// The last bytes before the peer closed, with no `\n` after them.
    Unterminated(Vec<u8>),
    /// A line longer than the limit: its length (terminator excluded). Its bytes were skipped, up to
    /// and including its `\n`, so the next line can be read as usual.
    TooLong(u64),
    /// The peer closed between lines.
    Eof,
}

/// Reads one line of at most `max` bytes (terminator excluded), holding no more than `max + 1` bytes
/// of it however long it is: the rest of a longer line is counted and skipped, so a peer can cost the
/// server time (bounded by the server's timeouts) but never memory.
///
/// Unlike [`BufRead::read_until`], which grows its buffer until the `\n` arrives, and unlike the
/// crate's `framing::Lines`, whose over-long line is a fatal error, this lets the server answer
/// `ERROR` and go on with the next line.
pub fn read_line<R: BufRead + ?Sized>(reader: &mut R, max: usize) -> io::Result<Line> {
    let mut kept = Vec::new();
    // The line's length so far, and whether its last byte is `\r` (a `\r` right before the `\n` is
    // part of the terminator, so it may only be judged once the `\n` arrives).
    let mut len: u64 = 0;
    let mut ends_in_cr = false;
    let terminated = loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break false;
        }
        let (part, used, found) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        len += part.len() as u64;
        if let Some(&last) = part.last() {
            ends_in_cr = last == b'\r';
        }
        // Content plus a possible `\r`: anything past that makes the line too long in any case.
        let room = (max + 1).saturating_sub(kept.len());
        kept.extend_from_slice(&part[..part.len().min(room)]);
        reader.consume(used);
        if found {
            break true;
        }
    };
    if !terminated && len == 0 {
        return Ok(Line::Eof);
    }
    let content = if terminated && ends_in_cr {
        len - 1
    } else {
        len
    };
    if content > max as u64 {
        return Ok(Line::TooLong(content));
    }
    kept.truncate(content as usize);
    Ok(if terminated {
        Line::Complete(kept)
    } else {
        Line::Unterminated(kept)
    })
}

/// Where a server keeps its keys.
pub trait Store {
    /// Carries out `SET`, `GET` or `DEL` and says what to reply. (`QUIT` is the connection's
    /// business, handled by [`serve_connection`]; a store answers it `BYE` and does nothing.)
    fn apply(&self, command: &Command) -> Reply;
}

/// The map in this process's memory, shared by every clone.
///
/// Correct wherever requests share the process's memory — `Sequential`, `Threading`, `Pool` — and
/// wrong under `Forking` and `PreFork`, where each child process works on its own copy and changes
/// never reach the parent or the other children: there the map must live in one other process (see
/// `kv_state`).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    map: Arc<Mutex<HashMap<String, String>>>,
}

impl Store for MemoryStore {
    fn apply(&self, command: &Command) -> Reply {
        // A panic while the lock is held cannot leave the map half-updated (each operation is a
        // single `HashMap` call), so a poisoned lock is still a consistent map: keep serving.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        match command {
            Command::Set { key, value } => {
                if map.len() >= MAX_KEYS && !map.contains_key(key) {
                    return Reply::Error(format!("the store is full ({MAX_KEYS} keys); DEL some"));
                }
                map.insert(key.clone(), value.clone());
                Reply::Ok
            }
            Command::Get { key } => map
                .get(key)
                .map_or(Reply::None, |v| Reply::Value(v.clone())),
            Command::Del { key } => match map.remove(key) {
                Some(_) => Reply::Deleted,
                None => Reply::None,
            },
            Command::Quit => Reply::Bye,
        }
    }
}

/// Serves one connection: reads commands and replies to each, until `QUIT` or the peer closes.
///
/// A bad line gets `ERROR <reason>` and the connection goes on; only I/O errors (a timeout, a reset)
/// end it early, and they go to the server's error hook.
pub fn serve_connection(req: &mut StreamRequest, store: &impl Store) -> anyhow::Result<()> {
    loop {
        let reply = match read_line(&mut req.rfile, MAX_LINE)? {
            Line::Eof => return Ok(()),
            Line::TooLong(len) => Reply::Error(format!(
                "line of {len} bytes; the limit is {MAX_LINE} bytes"
            )),
            Line::Complete(line) | Line::Unterminated(line) => match Command::parse(&line) {
                Ok(Command::Quit) => {
                    req.wfile.write_all(Reply::Bye.encode().as_bytes())?;
                    return Ok(());
                }
                Ok(command) => store.apply(&command),
                Err(why) => Reply::Error(why),
            },
        };
        // One `write_all` per reply: `wfile` is unbuffered by default, so the reply leaves at once.
        req.wfile.write_all(reply.encode().as_bytes())?;
    }
}
