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
//!
//! # Never following a link
//! Between `bind(2)` and that `chmod(2)`, whoever can write the directory can replace the socket
//! file — with a symbolic link to some unrelated file, say — and a `chmod(2)` by path would follow
//! it and open that file up. So the path is opened once with `O_PATH | O_NOFOLLOW` right after
//! `bind(2)`, which never follows a final link, and everything after works on that descriptor: it
//! must be a socket (or binding fails, naming what is there now); its device and inode are what the
//! ownership record keeps; and the mode is set on it through `/proc/self/fd/N` (`fchmod(2)` refuses
//! `O_PATH` descriptors), which names that very inode whatever happens to the path meanwhile.
//! Before that `chmod(2)` the file must also look like the one `bind(2)` made: owned by this
//! process's user and with no other hard link — a planted hard link to someone else's socket (where
//! `fs.protected_hardlinks` allows one) is refused rather than opened up.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, OFlag};
use nix::sys::socket::{self as nsock, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fstat};
use nix::unistd::geteuid;

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
    #[cfg(test)]
    tests::after_bind(path);
    // From here on, the file bind(2) made is reached through this descriptor only: the path may
    // name something else by now (see "Never following a link" above).
    let file = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        context(
            e.into(),
            format!("opening the new socket {}", path.display()),
        )
    })?;
    let stat = fstat(&file).map_err(|e| {
        context(
            e.into(),
            format!("fstat(2) on the new socket {}", path.display()),
        )
    })?;
    if file_type(stat.st_mode) != SFlag::S_IFSOCK {
        return Err(replaced(path, file_type(stat.st_mode)));
    }
    let owned = SocketPath {
        path: absolute,
        dev: stat.st_dev,
        ino: stat.st_ino,
        pid: std::process::id(),
    };
    if let Some(mode) = opts.mode {
        let mode = mode & 0o777;
        if stat.st_mode & 0o777 != mode {
            // The umask removed bits that were asked for: add them back (this only widens to `mode`),
            // on the file bind(2) made and nothing else.
            if stat.st_uid != geteuid().as_raw() || stat.st_nlink != 1 {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "bind(2) on {}: the socket there is not the one just bound (another owner, \
                         or other hard links): it was replaced, and its mode is left alone",
                        path.display()
                    ),
                ));
            }
            set_mode(&file, mode).map_err(|e| {
                context(e, format!("chmod(2) on {} (by descriptor)", path.display()))
            })?;
        }
    }
    Ok((fd, Some(owned)))
}

/// The `S_IFMT` bits of a mode.
fn file_type(mode: libc::mode_t) -> SFlag {
    SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits())
}

/// The error for a socket path that names something else than a socket right after `bind(2)`.
fn replaced(path: &Path, now: SFlag) -> io::Error {
    let what = match now {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        _ => "something else",
    };
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "bind(2) on {}: the socket file was replaced right after it was created ({what} is \
             there now), so it is not served and nothing there is touched",
            path.display()
        ),
    )
}

/// Sets the permission bits of the file `file` (an `O_PATH` descriptor) refers to.
///
/// `fchmod(2)` fails with `EBADF` on an `O_PATH` descriptor; its `/proc/self/fd` entry, however,
/// resolves to the very inode the descriptor holds, whatever has happened to the path since.
fn set_mode(file: &OwnedFd, mode: u32) -> io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    nix::sys::stat::fchmodat(
        AT_FDCWD,
        proc_path.as_str(),
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
    .map_err(|e| match e {
        nix::errno::Errno::ENOENT => io::Error::new(
            io::ErrorKind::NotFound,
            "/proc is not mounted, and the mode cannot be set without following links otherwise",
        ),
        e => e.into(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// What a test does to the socket path in the window after `bind(2)`.
    type Hook = Box<dyn FnMut(&Path)>;

    thread_local! {
        /// Fault injection: runs right after `bind(2)` has created the socket file, before anything
        /// else looks at it — the window in which whoever can write the directory may swap the file.
        /// Per thread, so tests running in parallel do not see each other's.
        static AFTER_BIND: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn after_bind(path: &Path) {
        AFTER_BIND.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook(path);
            }
        });
    }

    /// Binds `path` with `mode`, with `attack` run in the window after `bind(2)`.
    fn bind_under_attack(
        path: &Path,
        mode: u32,
        attack: impl FnMut(&Path) + 'static,
    ) -> io::Result<(OwnedFd, Option<SocketPath>)> {
        AFTER_BIND.with(|hook| *hook.borrow_mut() = Some(Box::new(attack)));
        let opts = PathOptions {
            mode: Some(mode),
            replace_stale: false,
        };
        let bound = bind(
            SockType::Stream,
            SockFlag::empty(),
            Target::Path(path),
            &opts,
        );
        AFTER_BIND.with(|hook| *hook.borrow_mut() = None);
        bound
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o777
    }

    /// The hostile review's race: the socket swapped for a symbolic link to an unrelated 0600 file
    /// between `bind(2)` and the `chmod(2)` that adds back what the umask removed. The file's mode
    /// must not change; binding fails, saying why.
    #[test]
    fn a_symlink_planted_after_bind_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("app.sock");
        let (aside, target) = (dir.path().join("moved.sock"), victim.clone());
        let bound = bind_under_attack(&path, 0o666, move |path| {
            fs::rename(path, &aside).unwrap();
            symlink(&target, path).unwrap();
        });
        assert_eq!(
            mode_of(&victim),
            0o600,
            "chmod(2) followed the planted link"
        );
        let err = bound.expect_err("bound although the path is a link now");
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("symbolic link"),
            "{msg}"
        );
        assert!(
            fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    /// Without interference, the mode asked for is what the file gets, umask or not (added back
    /// through the descriptor when the umask removed bits), and the record names that file.
    #[test]
    fn the_mode_asked_for_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [
            ("wide.sock", 0o666),
            ("narrow.sock", 0o600),
            ("group.sock", 0o660),
        ] {
            let path = dir.path().join(name);
            let (_fd, owned) = bind_under_attack(&path, mode, |_| {}).unwrap();
            assert_eq!(mode_of(&path), mode, "{name}");
            let owned = owned.expect("a path is owned");
            let meta = fs::symlink_metadata(&path).unwrap();
            assert_eq!((owned.dev, owned.ino), (meta.dev(), meta.ino()), "{name}");
        }
    }

    /// A hard link to another socket planted in the window (where `fs.protected_hardlinks` allows
    /// one): a socket, but not the one bound. Its mode is left alone.
    #[test]
    fn a_hard_link_planted_after_bind_is_not_opened_up() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
        let path = dir.path().join("app.sock");
        let (aside, target) = (dir.path().join("moved.sock"), other.clone());
        let bound = bind_under_attack(&path, 0o666, move |path| {
            fs::rename(path, &aside).unwrap();
            fs::hard_link(&target, path).unwrap();
        });
        assert_eq!(mode_of(&other), 0o600, "the other socket was opened up");
        let msg = bound.expect_err("bound over a planted link").to_string();
        assert!(msg.contains("not the one just bound"), "{msg}");
    }

    /// Something other than a socket in the window: binding fails naming it, and it is untouched.
    #[test]
    fn a_file_planted_after_bind_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        let bound = bind_under_attack(&path, 0o600, |path| {
            fs::remove_file(path).unwrap();
            fs::write(path, b"planted").unwrap();
        });
        let msg = bound.expect_err("bound over a planted file").to_string();
        assert!(msg.contains("a regular file is there now"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), b"planted");
    }
}
