//! Creating and binding internet sockets: what [`Tcp`](super::Tcp) and [`Udp`](super::Udp) share.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    self as nsock, AddressFamily, SockFlag, SockType, SockaddrStorage, sockopt,
};

use crate::sys::context;

/// The socket options that must be set before `bind(2)` to have any effect.
#[derive(Debug, Clone, Default)]
pub(crate) struct BindOptions {
    pub(crate) reuse_addr: bool,
    pub(crate) reuse_port: bool,
    pub(crate) only_v6: Option<bool>,
}

/// Resolves `addr` and returns the first address `bind` succeeds on, or the last error — the rule
/// `std::net::TcpListener::bind` follows.
pub(crate) fn bind_first<T>(
    addr: impl ToSocketAddrs,
    mut bind: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for a in addr
        .to_socket_addrs()
        .map_err(|e| context(e, "resolving the listen address"))?
    {
        match bind(a) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// `socket(2)` (close-on-exec, plus `flags`), the options, then `bind(2)` on `addr`. On failure the
/// socket is closed and the error names the syscall and the address.
pub(crate) fn bound_socket(
    addr: SocketAddr,
    ty: SockType,
    flags: SockFlag,
    opts: &BindOptions,
) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = nsock::socket(family, ty, flags | SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| context(e.into(), format!("socket(2) for {addr}")))?;
    let set = |r: nix::Result<()>, name: &str| {
        r.map_err(|e| context(e.into(), format!("setsockopt({name}) on {addr}")))
    };
    if opts.reuse_addr {
        set(
            nsock::setsockopt(&fd, sockopt::ReuseAddr, &true),
            "SO_REUSEADDR",
        )?;
    }
    if opts.reuse_port {
        set(
            nsock::setsockopt(&fd, sockopt::ReusePort, &true),
            "SO_REUSEPORT",
        )?;
    }
    if let (Some(v6only), true) = (opts.only_v6, addr.is_ipv6()) {
        set(
            nsock::setsockopt(&fd, sockopt::Ipv6V6Only, &v6only),
            "IPV6_V6ONLY",
        )?;
    }
    nsock::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))
        .map_err(|e| context(e.into(), format!("bind(2) on {addr}")))?;
    Ok(fd)
}
