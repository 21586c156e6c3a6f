//! Who is who: each connection gets one line telling who the client is (behind a proxy: the original
//! client) and whom the server runs as — so a deployment's privilege drop and PROXY protocol set-up
//! can be checked with `nc`.
//!
//! ```text
//! sudo cargo run --example whoami -- --addr 127.0.0.1:79 --user nobody --chroot /var/empty
//! nc 127.0.0.1 79
//! peer=127.0.0.1:51234 via=- uid=65534/65534/65534 gid=65534/65534/65534 groups=65534 root=
//! ```
//!
//! The line reads: `peer` the client, `via` the trusted proxy it came through (`-` when direct),
//! `uid`/`gid` real/effective/saved ids, `groups` the supplementary groups, `root` the entries of `/`
//! as the server sees it (inside a chroot: the chroot's). The address is bound before the privileges
//! are dropped, so `--user` works with ports below 1024.

mod common;

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use nix::unistd;
use socketserver::proxy_protocol::ProxyProtocol;
use socketserver::{PrivDrop, StreamRequest, ThreadingTcpServer};

#[derive(Parser, Debug)]
#[command(about = "Replies with the client's address and the server's user and group ids")]
struct Args {
    /// Address to bind (as the starting user); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// After binding, switch to this user (name or uid). Needs root, unless already that user.
    #[arg(long)]
    user: Option<String>,
    /// With --user: the group (name or gid) instead of the user's primary group.
    #[arg(long, requires = "user")]
    group: Option<String>,
    /// With --user: chroot into this directory first.
    #[arg(long, requires = "user")]
    chroot: Option<PathBuf>,
    /// Read a PROXY protocol header from this proxy address or CIDR network (repeatable).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<String>,
}

fn whoami(req: &mut StreamRequest) -> anyhow::Result<()> {
    let uids = unistd::getresuid()?;
    let gids = unistd::getresgid()?;
    let groups: Vec<String> = unistd::getgroups()?.iter().map(|g| g.to_string()).collect();
    let mut root: Vec<String> = std::fs::read_dir("/")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("({e})")]);
    root.sort();
    let via = req.proxy_peer().map_or("-".to_string(), |p| p.to_string());
    let line = format!(
        "peer={} via={via} uid={}/{}/{} gid={}/{}/{} groups={} root={}\n",
        req.peer(),
        uids.real,
        uids.effective,
        uids.saved,
        gids.real,
        gids.effective,
        gids.saved,
        groups.join(","),
        root.join(",")
    );
    req.wfile.write_all(line.as_bytes())?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let args: Args = common::parse_args();
    let mut server = ThreadingTcpServer::bind(args.addr.as_str(), whoami)?;
    if !args.trusted_proxies.is_empty() {
        server = server.proxy_protocol(ProxyProtocol::trusted(&args.trusted_proxies)?);
    }
    if let Some(user) = args.user {
        let mut drop = PrivDrop::user(user);
        if let Some(group) = args.group {
            drop = drop.group(group);
        }
        if let Some(dir) = args.chroot {
            drop = drop.chroot(dir);
        }
        drop.apply()?;
    }
    common::serve(server)
}
