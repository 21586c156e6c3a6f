//! Starting a successor process with descriptors at fixed numbers — systemd's socket-activation
//! layout (`3, 4, …`) — and `LISTEN_PID` naming the successor itself, which only the child can know:
//! `fork(2)`, then, in the child, only async-signal-safe calls until `execve(2)`.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

use super::context;

/// The `LISTEN_PID=` entry's room for the child's pid: ten digits hold any `pid_t`.
const PID_DIGITS: usize = 10;

/// A program, its arguments and environment, prepared before the fork: the child allocates nothing.
pub(crate) struct Exec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<Vec<u8>>,
    /// Index in `env` of `LISTEN_PID=` followed by [`PID_DIGITS`] bytes and a NUL, filled in by the
    /// child.
    listen_pid: usize,
}

impl Exec {
    /// `program` with `args` (after `argv[0]`, which is the program), and `env` plus
    /// `LISTEN_PID=<the child's pid>`.
    ///
    /// # Errors
    /// `InvalidInput` for a NUL byte in any of them.
    pub(crate) fn new<'a>(
        program: &OsStr,
        args: impl IntoIterator<Item = &'a OsStr>,
        env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    ) -> io::Result<Exec> {
        let c = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{s:?} holds a NUL byte"),
                )
            })
        };
        let program = c(program)?;
        let mut argv = vec![program.clone()];
        for arg in args {
            argv.push(c(arg)?);
        }
        let mut entries = Vec::new();
        for (key, value) in env {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            entries.push(c(OsStr::from_bytes(&entry))?.into_bytes_with_nul());
        }
        let mut listen_pid = b"LISTEN_PID=".to_vec();
        listen_pid.extend_from_slice(&[b'0'; PID_DIGITS]);
        listen_pid.push(0);
        entries.push(listen_pid);
        Ok(Exec {
            program,
            listen_pid: entries.len() - 1,
            argv,
            env: entries,
        })
    }
}

/// Forks and executes `exec` with each of `fds` at descriptor `3 + i` (open across the exec; every
/// other descriptor of this process is close-on-exec, as the crate and Rust's standard library
/// open them), the signal mask cleared and `SIGPIPE` back to its default. Returns the child's pid.
///
/// # Errors
/// `fork(2)` failing. A child that cannot exec exits with status 127.
pub(crate) fn spawn(exec: &mut Exec, fds: &[RawFd]) -> io::Result<libc::pid_t> {
    let argv: Vec<*const libc::c_char> = exec
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = exec
        .env
        .iter()
        .map(|e| e.as_ptr().cast())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let pid_slot = exec.env[exec.listen_pid].as_mut_ptr();
    let program = exec.program.as_ptr();
    // Above every target number, so that placing one never overwrites another still to be placed.
    let staging = 3 + fds.len() as libc::c_int + 64;
    // SAFETY: fork(2) itself; the child runs only the block below.
    match unsafe { libc::fork() } {
        -1 => Err(context(
            io::Error::last_os_error(),
            "fork(2) for the successor",
        )),
        // SAFETY: in the child, only async-signal-safe calls (getpid, fcntl, dup2, sigemptyset,
        // sigprocmask, signal, execve, _exit) and writes to memory prepared before the fork, within
        // the bounds it was prepared with; every pointer handed to execve points into it.
        0 => unsafe {
            // LISTEN_PID=<pid>, zero-padded on the left: the parser takes leading zeros.
            let mut pid = libc::getpid() as u32;
            let digits = pid_slot.add(b"LISTEN_PID=".len());
            for i in (0..PID_DIGITS).rev() {
                *digits.add(i) = b'0' + (pid % 10) as u8;
                pid /= 10;
            }
            let mut staged = [0 as libc::c_int; 64];
            for (i, &fd) in fds.iter().enumerate().take(staged.len()) {
                staged[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, staging);
                if staged[i] < 0 {
                    libc::_exit(127);
                }
            }
            for (i, &fd) in staged.iter().enumerate().take(fds.len()) {
                // dup2 leaves the new descriptor without FD_CLOEXEC: it survives the exec.
                if libc::dup2(fd, 3 + i as libc::c_int) < 0 {
                    libc::_exit(127);
                }
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(program, argv.as_ptr(), envp.as_ptr());
            libc::_exit(127)
        },
        child => Ok(child),
    }
}
