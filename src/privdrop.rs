//! [`PrivDrop`]: bind as root, then serve as an unprivileged user — Perl `Net::Server`'s `user`,
//! `group` and `chroot`.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::{self, Gid, Group, Uid, User};

use crate::sys::context;

/// Drops root privileges for good: optionally `chroot`s, then becomes a named user and group.
///
/// A server that must bind a privileged port (below 1024) starts as root, binds, and then calls
/// [`apply`](Self::apply) before [`serve_forever`](crate::Server::serve_forever): the listening socket
/// stays open, but no request is ever served with root's powers.
///
/// `apply` does, in this order, and stops at the first failure with an error naming the step:
///
/// 1. resolve the user and group names (before `chroot`, which usually hides `/etc/passwd`); a name
///    that is all digits and names no user or group is taken as a numeric id;
/// 2. `chroot(2)` into the directory, then `chdir("/")`, so no path leads back out;
/// 3. `setgroups(2)` to the one target group, dropping root's supplementary groups;
/// 4. `setresgid(2)`, then `setresuid(2)`: real, effective and saved ids all become the target — the
///    group first, while there is still the privilege to change it;
/// 5. verify: the real, effective and saved ids and the group list are exactly the target, and
///    `setuid(0)` (and `setgid(0)`) now fail. A drop that could be undone is an error, never a warning.
///
/// The group defaults to the user's primary group. Without root, `apply` refuses (`PermissionDenied`)
/// unless the process already runs as exactly the target user and group, in which case there is
/// nothing to drop and it succeeds — so one configuration works both as root and under a service
/// manager that already switched users.
///
/// The ids change for the whole process: glibc applies `setresuid`/`setresgid` to every thread.
/// Descriptors opened before the drop (the listener, log files) stay usable.
///
/// # Examples
///
/// ```
/// use socketserver::{PrivDrop, StreamRequest, TcpServer};
///
/// let server = TcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?; // as root: port 80
/// if nix::unistd::geteuid().is_root() {
///     PrivDrop::user("nobody").apply()?;
///     assert!(!nix::unistd::getuid().is_root());
/// }
/// # let _ = server; // then: server.serve_forever()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivDrop {
    user: String,
    group: Option<String>,
    chroot: Option<PathBuf>,
}

/// The ids a drop ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    uid: Uid,
    gid: Gid,
}

impl PrivDrop {
    /// Drops to user `name` (a name, or a numeric uid), in its primary group unless
    /// [`group`](Self::group) says otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let drop = socketserver::PrivDrop::user("www-data");
    /// println!("{drop:?}");
    /// ```
    pub fn user(name: impl Into<String>) -> Self {
        PrivDrop {
            user: name.into(),
            group: None,
            chroot: None,
        }
    }

    /// The group to run as (a name, or a numeric gid), instead of the user's primary group. It is also
    /// the only supplementary group left.
    ///
    /// # Examples
    ///
    /// ```
    /// let drop = socketserver::PrivDrop::user("nobody").group("nogroup");
    /// println!("{drop:?}");
    /// ```
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// `chroot(2)` into `dir` (then `chdir("/")`) before switching ids. Needs root. Everything the
    /// server opens by path afterwards — files, Unix sockets, `/etc/resolv.conf` — is looked up inside
    /// `dir`.
    ///
    /// # Examples
    ///
    /// ```
    /// let drop = socketserver::PrivDrop::user("nobody").chroot("/var/empty");
    /// println!("{drop:?}");
    /// ```
    pub fn chroot(mut self, dir: impl Into<PathBuf>) -> Self {
        self.chroot = Some(dir.into());
        self
    }

    /// Performs the drop (see [`PrivDrop`] for the steps).
    ///
    /// # Errors
    /// - `NotFound`: the user or group does not exist;
    /// - `PermissionDenied`: not running as root, and not already the target user and group (or a
    ///   `chroot` was asked for without root); or a drop that verification found could be undone;
    /// - the failing syscall's error, with the step named (`setresuid(65534) while dropping privileges
    ///   to "nobody": …`).
    ///
    /// Once an error is returned the process may be half-way (chrooted, say): treat it as fatal and
    /// exit rather than serve.
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::PrivDrop;
    /// let err = PrivDrop::user("no-such-user-here").apply().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    /// assert!(err.to_string().contains("no-such-user-here"));
    /// ```
    pub fn apply(&self) -> io::Result<()> {
        let target = self.resolve()?;
        let step = |what: String| move |e: Errno| context(e.into(), self.during(&what));
        if !unistd::geteuid().is_root() {
            return self.unprivileged(target);
        }
        if let Some(dir) = &self.chroot {
            unistd::chroot(dir).map_err(step(format!("chroot({})", dir.display())))?;
            unistd::chdir("/").map_err(step("chdir(\"/\") after chroot".into()))?;
        }
        unistd::setgroups(&[target.gid]).map_err(step(format!("setgroups([{}])", target.gid)))?;
        unistd::setresgid(target.gid, target.gid, target.gid)
            .map_err(step(format!("setresgid({})", target.gid)))?;
        unistd::setresuid(target.uid, target.uid, target.uid)
            .map_err(step(format!("setresuid({})", target.uid)))?;
        self.verify(target)?;
        log::info!(
            "dropped privileges to user {:?} (uid {}, gid {}){}",
            self.user,
            target.uid,
            target.gid,
            self.chroot
                .as_deref()
                .map(|d| format!(", chrooted to {}", d.display()))
                .unwrap_or_default()
        );
        Ok(())
    }

    /// Without root nothing can be changed: succeed only if there is nothing to change.
    fn unprivileged(&self, target: Target) -> io::Result<()> {
        let uids = unistd::getresuid().map_err(|e| context(e.into(), "getresuid(2)"))?;
        let gids = unistd::getresgid().map_err(|e| context(e.into(), "getresgid(2)"))?;
        let already = [uids.real, uids.effective, uids.saved] == [target.uid; 3]
            && [gids.real, gids.effective, gids.saved] == [target.gid; 3];
        if already && self.chroot.is_none() {
            return Ok(());
        }
        let why = if already {
            "chroot(2) needs root".to_string()
        } else {
            format!(
                "running as uid {} gid {}, not root, so cannot switch to uid {} gid {}",
                uids.effective, gids.effective, target.uid, target.gid
            )
        };
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            self.during(&why),
        ))
    }

    /// Checks that the drop took and cannot be undone.
    fn verify(&self, target: Target) -> io::Result<()> {
        let fail =
            |what: String| io::Error::new(io::ErrorKind::PermissionDenied, self.during(&what));
        let uids = unistd::getresuid().map_err(|e| context(e.into(), "getresuid(2)"))?;
        let gids = unistd::getresgid().map_err(|e| context(e.into(), "getresgid(2)"))?;
        let groups = unistd::getgroups().map_err(|e| context(e.into(), "getgroups(2)"))?;
        if [uids.real, uids.effective, uids.saved] != [target.uid; 3] {
            return Err(fail(format!(
                "verifying: uids are {}/{}/{} (real/effective/saved), not {}",
                uids.real, uids.effective, uids.saved, target.uid
            )));
        }
        if [gids.real, gids.effective, gids.saved] != [target.gid; 3] {
            return Err(fail(format!(
                "verifying: gids are {}/{}/{} (real/effective/saved), not {}",
                gids.real, gids.effective, gids.saved, target.gid
            )));
        }
        if groups != [target.gid] {
            return Err(fail(format!(
                "verifying: supplementary groups are {groups:?}, not [{}]",
                target.gid
            )));
        }
        if !target.uid.is_root() {
            if unistd::setuid(Uid::from_raw(0)).is_ok() {
                return Err(fail("verifying: setuid(0) succeeded after the drop".into()));
            }
            if target.gid.as_raw() != 0 && unistd::setgid(Gid::from_raw(0)).is_ok() {
                return Err(fail("verifying: setgid(0) succeeded after the drop".into()));
            }
        }
        Ok(())
    }

    /// Looks the names up (before any chroot hides the user database).
    fn resolve(&self) -> io::Result<Target> {
        let user = lookup(&self.user, "user", User::from_name, |id| {
            User::from_uid(Uid::from_raw(id))
        })?;
        let (uid, primary) = match user {
            Found::Entry(u) => (u.uid, Some(u.gid)),
            Found::Id(id) => (Uid::from_raw(id), None),
        };
        let gid = match &self.group {
            Some(name) => match lookup(name, "group", Group::from_name, |id| {
                Group::from_gid(Gid::from_raw(id))
            })? {
                Found::Entry(g) => g.gid,
                Found::Id(id) => Gid::from_raw(id),
            },
            None => primary.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    self.during(&format!("uid {uid} has no passwd entry, so name a group")),
                )
            })?,
        };
        Ok(Target { uid, gid })
    }

    /// Names the drop in an error message.
    fn during(&self, what: &str) -> String {
        format!("{what} while dropping privileges to {:?}", self.user)
    }
}

/// A user or group database entry, or a bare numeric id with no entry.
enum Found<T> {
    Entry(T),
    Id(u32),
}

/// Resolves `name` with `by_name`, falling back to a numeric id (with its entry when there is one).
fn lookup<T>(
    name: &str,
    kind: &str,
    by_name: impl Fn(&str) -> nix::Result<Option<T>>,
    by_id: impl Fn(u32) -> nix::Result<Option<T>>,
) -> io::Result<Found<T>> {
    let failed = |e: Errno| context(e.into(), format!("looking up {kind} {name:?}"));
    if let Some(entry) = by_name(name).map_err(failed)? {
        return Ok(Found::Entry(entry));
    }
    let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    match name.parse::<u32>() {
        Ok(id) if numeric => Ok(match by_id(id).map_err(failed)? {
            Some(entry) => Found::Entry(entry),
            None => Found::Id(id),
        }),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such {kind} {name:?} (dropping privileges)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    //! Only what cannot change this test process's ids: lookups that fail before any syscall. The
    //! drop itself is tested in its own process (`tests/privdrop.rs` runs `examples/whoami`).
    use super::*;

    #[test]
    fn unknown_user_is_not_found_and_named() {
        let err = PrivDrop::user("no-such-user-zz").apply().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("\"no-such-user-zz\""), "{err}");
        assert!(err.to_string().contains("user"), "{err}");
    }

    #[test]
    fn unknown_group_is_not_found_and_named() {
        let err = PrivDrop::user("root")
            .group("no-such-group-zz")
            .apply()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string().contains("group \"no-such-group-zz\""),
            "{err}"
        );
    }

    #[test]
    fn numeric_ids_without_entries_resolve() {
        let drop = PrivDrop::user("4000000").group("4000001");
        assert_eq!(
            drop.resolve().unwrap(),
            Target {
                uid: Uid::from_raw(4_000_000),
                gid: Gid::from_raw(4_000_001)
            }
        );
        let err = PrivDrop::user("4000000").resolve().unwrap_err();
        assert!(err.to_string().contains("name a group"), "{err}");
        assert!(PrivDrop::user("+5").resolve().is_err());
    }

    #[test]
    fn names_resolve_to_the_primary_group() {
        let root = PrivDrop::user("root").resolve().unwrap();
        assert_eq!(
            root,
            Target {
                uid: Uid::from_raw(0),
                gid: Gid::from_raw(0)
            }
        );
    }
}
