//! Owning a Unix socket's path: binding without clobbering anything, with a file mode and no window in
//! which the socket is more open than asked, and removing the path again on close.
//!
//! What both Unix transports share; the transports add only their socket type.
//!
//! # The mode, without a window
//! On Linux, `bind(2)` creates the socket file with the mode of the socket's own inode, less the umask
//! (`unix_bind_bsd` in `net/unix/af_unix.c`). So the mode is set with `fchmod(2)` on the socket
//! **before** `bind(2)`, and the file is born with `mode & !umask`: never wider than asked, and nobody
//! can connect through a wider mode in between. Changing the process umask instead would race with
//! other threads creating files. When the umask removed bits that were asked for (`0o660` under umask
//! `022`), a `chmod(2)` after `bind(2)` adds them back; that only ever widens towards what was asked.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self as nsock, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;

use crate::sys::context;

/// Where a Unix socket is bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// A filesystem path: created by `bind(2)`, owned by the transport.
    Path(&'a Path),
    /// A Linux abstract name: no file, vanishes with the socket.
    Abstract(&'a [u8]),
}

/// How to bind a path: the options the two Unix builders share.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathOptions {
    /// The socket file's permission bits, applied race-free (see the module docs).
    pub(crate) mode: Option<u32>,
    /// Whether a stale socket file (nobody answers on it) may be removed to bind in its place.
    pub(crate) replace_stale: bool,
}

/// A socket path this process created with `bind(2)`, removed when dropped.
///
/// Only the process that bound it removes it (a forked child that somehow ran destructors would not),
/// and only if the path still names the very socket file bound (same device and inode): a path that
/// was since replaced — by a restarted server, say — is left alone.
#[derive(Debug)]
pub(crate) struct SocketPath {
    /// Absolute, so a later `chdir` cannot make the unlink miss or hit the wrong file.
    path: PathBuf,
    dev: u64,
    ino: u64,
    pid: u32,
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            return;
        }
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = fs::remove_file(&self.path) {
                    log::warn!("removing the socket {}: {e}", self.path.display());
                }
            }
            Ok(_) => log::info!(
                "not removing {}: it is no longer the socket this server bound",
                self.path.display()
            ),
            Err(e) => log::debug!("socket {} already gone: {e}", self.path.display()),
        }
    }
}

/// Creates a close-on-exec Unix socket of type `ty` and binds it to `target` with `opts`. Returns the
/// socket and, for a path, its ownership record.
///
/// # Errors
/// The failing syscall and path. A path that is in use gets a message saying why it cannot be taken:
/// a live server answers there, a stale socket file sits there (and `replace_stale` is off), or the
/// path is not a socket at all (which is never removed).
pub(crate) fn bind(
    ty: SockType,
    flags: SockFlag,
    target: Target<'_>,
    opts: &PathOptions,
) -> io::Result<(OwnedFd, Option<SocketPath>)> {
    let fd: OwnedFd = nsock::socket(
        AddressFamily::Unix,
        ty,
        flags | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| context(e.into(), format!("socket(AF_UNIX) for {}", show(target))))?;
    let path = match target {
        Target::Abstract(name) => {
            if opts.mode.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a file mode was set for the abstract socket {}, which has no file",
                        show(target)
                    ),
                ));
            }
            let addr = UnixAddr::new_abstract(name)
                .map_err(|e| context(e.into(), format!("abstract address {}", show(target))))?;
            nsock::bind(fd.as_raw_fd(), &addr)
                .map_err(|e| context(e.into(), format!("bind(2) on {}", show(target))))?;
            return Ok((fd, None));
        }
        Target::Path(path) => path,
    };
    let addr = UnixAddr::new(path).map_err(|e| {
        let why = format!(
            "socket path {} (at most {} bytes)",
            path.display(),
            MAX_PATH_LEN
        );
        context(e.into(), why)
    })?;
    let absolute = std::path::absolute(path)
        .map_err(|e| context(e, format!("resolving {}", path.display())))?;
    if let Some(mode) = opts.mode {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode & 0o777)).map_err(|e| {
            context(
                e.into(),
                format!("fchmod(2) on the socket for {}", path.display()),
            )
        })?;
    }
    let bound = match nsock::bind(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EADDRINUSE) => {
            clear_the_way(ty, path, opts.replace_stale)?;
            nsock::bind(fd.as_raw_fd(), &addr)
        }
        Err(e) => Err(e),
    };
    bound.map_err(|e| context(e.into(), format!("bind(2) on {}", path.display())))?;
    let meta = fs::symlink_metadata(path)
        .map_err(|e| context(e, format!("stat(2) on the new socket {}", path.display())))?;
    let owned = SocketPath {
        path: absolute,
        dev: meta.dev(),
        ino: meta.ino(),
        pid: std::process::id(),
    };
    if let Some(mode) = opts.mode {
        let mode = mode & 0o777;
        if meta.mode() & 0o777 != mode {
            // The umask removed bits that were asked for: add them back (this only widens to `mode`).
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| context(e, format!("chmod(2) on {}", path.display())))?;
        }
    }
    Ok((fd, Some(owned)))
}

/// Decides what sits at `path` after `bind(2)` said `EADDRINUSE`, removing it only if it is a stale
/// socket and the caller opted in. `Ok` means "try binding again".
fn clear_the_way(ty: SockType, path: &Path, replace_stale: bool) -> io::Result<()> {
    let in_use = |why: String| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("bind(2) on {}: {why}", path.display()),
        )
    };
    let before = match fs::symlink_metadata(path) {
        Ok(m) => m,
        // Gone since bind(2) failed: whoever held it let go.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(e, format!("stat(2) on {}", path.display()))),
    };
    if !before.file_type().is_socket() {
        return Err(in_use(
            "the path exists and is not a socket; it is left alone".into(),
        ));
    }
    match probe(ty, path) {
        Probe::Live => return Err(in_use("a server is already listening on it".into())),
        Probe::Unknown(e) => {
            return Err(in_use(format!(
                "a socket is there and probing it failed ({e}); it is left alone"
            )));
        }
        Probe::Stale => {}
    }
    if !replace_stale {
        return Err(in_use(
            "a stale socket file is in the way (nothing answers on it); remove it, or opt in \
             with replace_stale(true)"
                .into(),
        ));
    }
    // Remove it only if it is still the file just probed, not one a racing server put there since.
    match fs::symlink_metadata(path) {
        Ok(now) if now.dev() == before.dev() && now.ino() == before.ino() => {
            log::info!("replacing the stale socket {}", path.display());
            fs::remove_file(path)
                .map_err(|e| context(e, format!("removing the stale socket {}", path.display())))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => Err(in_use(
            "another socket replaced it while it was being checked".into(),
        )),
    }
}

/// What a probe found behind a socket file.
enum Probe {
    /// A server answers (or its backlog is full, or it is a socket of another type).
    Live,
    /// Nothing is bound behind the file: a crashed server's leftover.
    Stale,
    /// The probe itself failed (no permission to connect, say): assume it is in use.
    Unknown(nix::errno::Errno),
}

/// Probes `path` with a non-blocking `connect(2)` of the same socket type. Only `ECONNREFUSED` (no
/// socket behind the file) means stale; success, a full backlog (`EAGAIN`) or a socket of another type
/// (`EPROTOTYPE`) all mean someone is there.
fn probe(ty: SockType, path: &Path) -> Probe {
    use nix::errno::Errno;
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let probed = UnixAddr::new(path).and_then(|addr| {
        let socket = nsock::socket(AddressFamily::Unix, ty, flags, None)?;
        nsock::connect(socket.as_raw_fd(), &addr)
    });
    match probed {
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EPROTOTYPE) => Probe::Live,
        // ENOENT: the file went away since it was looked at, which is as good as stale.
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => Probe::Stale,
        Err(e) => Probe::Unknown(e),
    }
}

/// The longest path Linux's `sun_path` (108 bytes) holds, without its terminating NUL.
const MAX_PATH_LEN: usize = 107;

/// A target as the crate prints Unix addresses: the path, or `@name`.
pub(crate) fn show(target: Target<'_>) -> String {
    match target {
        Target::Path(p) => p.display().to_string(),
        Target::Abstract(name) => format!("@{}", String::from_utf8_lossy(name)),
    }
}
