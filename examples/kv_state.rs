//! The state service for `kv`: one process owning the one map, served on a Unix socket by this
//! crate, speaking kv's own line protocol (`examples/common/kvproto.rs`).
//!
//! ```text
//! cargo run --release --example kv_state -- --path /tmp/kv.sock
//! cargo run --release --example kv -- --concurrency forking --state unix:/tmp/kv.sock
//! ```
//!
//! Why it exists: under `Forking` and `PreFork` every request runs in a child process on a copy of
//! the server's memory, so a map kept in the handler is never shared (see `kv --state memory`). Kept
//! here instead, in a `Threading` server — whose requests all share this process's memory — the map
//! is one, whatever strategy the servers that ask it use. `kv` opens one connection per command.
//!
//! The socket is created with mode 0600, before the file exists, so only this user (and root) can
//! connect: the service trusts whoever connects with every key. For anything but a try-out, put it
//! in a directory only this user can write, such as `$XDG_RUNTIME_DIR`, rather than `/tmp`.
//!
//! The first line on stdout is `listening on <path>`; `SIGINT` or `SIGTERM` shuts it down gracefully
//! (removing the socket file) and it exits 0. The map lives in memory only: it is gone when the
//! service stops.

mod common;

use std::path::PathBuf;

use clap::Parser;
use common::kvproto::{self, MemoryStore};
use socketserver::{Server, StreamRequest, Threading, UnixStream};

#[derive(Parser, Debug)]
#[command(about = "State service for kv: one shared map, served on a Unix socket")]
struct Args {
    /// The socket's path; created with mode 0600.
    #[arg(long)]
    path: PathBuf,
    /// Replace a stale socket file (one nothing answers on, left by a service that was killed).
    #[arg(long)]
    replace_stale: bool,
}

fn main() -> anyhow::Result<()> {
    let args: Args = common::parse_args();
    common::init_logging();
    let unix = UnixStream::builder()
        .mode(0o600)
        .replace_stale(args.replace_stale)
        .bind(&args.path)?;
    let store = MemoryStore::default();
    // Threading, never Forking or PreFork: this is the process whose memory every client must share.
    let server = Server::new(Threading::new(), unix, move |req: &mut StreamRequest| {
        kvproto::serve_connection(req, &store)
    })?;
    common::serve(server)
}
