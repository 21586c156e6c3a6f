//! Opt-in: turn `SIGINT` and `SIGTERM` into a graceful shutdown, and `SIGHUP` into a graceful reload.
//!
//! [`shutdown_on_signals`] installs an async-signal-safe handler that does what
//! [`ShutdownHandle::shutdown`] does — set the handle's flag, write its eventfd — so `serve_forever`
//! stops accepting, drains in-flight requests up to the server's shutdown timeout, and returns. The
//! process then exits normally (status 0), which is what process managers expect of `SIGTERM`.
//!
//! Forked children (of `Forking` and `PreFork`) restore the default dispositions at once, so a signal
//! sent to a child ends that child only (a `PreFork` worker: finishes its request and exits), and never
//! reaches the parent's loop through the shared eventfd.
//!
//! [`reload_on_sighup`] does the same for a [`PreFork`](crate::PreFork) server's
//! [`ReloadHandle`]: `SIGHUP` replaces every worker process gracefully.
//!
//! Writes to a peer that has gone away fail with `EPIPE` rather than killing the process with
//! `SIGPIPE`: the crate sends with `MSG_NOSIGNAL`, and Rust programs ignore `SIGPIPE` from start-up.

use std::io;

use nix::sys::signal::Signal;
use parking_lot::Mutex;

use crate::concurrency::ReloadHandle;
use crate::shutdown::ShutdownHandle;
use crate::sys::signal;

/// Every handle a signal was ever routed to, kept alive so that a handler running while the signals
/// move to another handle never touches a freed eventfd.
static ROUTED: Mutex<Vec<Routed>> = Mutex::new(Vec::new());

#[allow(dead_code)] // held only to keep the handles alive
enum Routed {
    Shutdown(ShutdownHandle),
    Reload(ReloadHandle),
    Size(crate::concurrency::SizeHandle),
    /// The eventfd a thread of its own waits on (an upgrade, a TLS reload).
    Woken(std::sync::Arc<crate::sys::EventFd>),
}

/// Makes `SIGINT` and `SIGTERM` request a graceful shutdown through `handle`; a second signal cuts the
/// in-flight requests at once ([`ShutdownHandle::force`]) instead of waiting for the drain deadline, as
/// a second Ctrl-C is expected to.
///
/// Call it once the server is bound; a later call moves the signals to another server's handle.
///
/// # Errors
/// `sigaction(2)` failing.
///
/// # Examples
///
/// ```
/// use socketserver::{signals, StreamRequest, ThreadingTcpServer};
///
/// let mut server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// signals::shutdown_on_signals(&server.shutdown_handle())?;
/// // A SIGTERM now makes serve_forever drain and return.
/// nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
/// server.serve_forever()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn shutdown_on_signals(handle: &ShutdownHandle) -> io::Result<()> {
    let mut routed = ROUTED.lock();
    routed.push(Routed::Shutdown(handle.clone()));
    signal::route(
        &[Signal::SIGINT, Signal::SIGTERM],
        handle.poke(),
        Some(handle.force_poke()),
        &[],
    )
}

/// Makes `SIGHUP` replace a [`PreFork`](crate::PreFork) server's workers gracefully through `handle`
/// (see [`ReloadHandle::reload`]), as `SIGHUP` does for Apache, nginx and gunicorn.
///
/// Opt-in, like [`shutdown_on_signals`]: without it `SIGHUP` keeps its default action (ending the
/// process). A later call moves the signal to another handle. Worker processes restore the default
/// at once, so only the supervisor reloads.
///
/// # Errors
/// `sigaction(2)` failing.
///
/// # Examples
///
/// ```
/// use socketserver::{signals, PreFork};
///
/// let prefork = PreFork::new(4);
/// signals::reload_on_sighup(&prefork.reload_handle())?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn reload_on_sighup(handle: &ReloadHandle) -> io::Result<()> {
    let mut routed = ROUTED.lock();
    routed.push(Routed::Reload(handle.clone()));
    signal::route(&[Signal::SIGHUP], handle.poke(), None, &[])
}

/// Makes `SIGHUP` reload `tls`'s certificates ([`Tls::reload`](crate::tls::Tls::reload)): what a
/// certbot renewal hook sends. New connections get the new certificates, open ones keep theirs; a file
/// that cannot be read or parsed is logged as an error and the old certificates stay in use. The
/// reload runs on a thread of its own, never in the signal handler. (The `tls` feature.)
///
/// Not for a [`PreFork`](crate::PreFork) server: its workers were forked with the certificates of
/// their time. Route `SIGHUP` to [`reload_on_sighup`] instead, whose reload reads the certificates
/// again before it forks new workers.
///
/// # Errors
/// `sigaction(2)`, `eventfd(2)` or starting the thread failing.
///
/// # Examples
///
/// ```no_run
/// use socketserver::{signals, tls::Tls};
/// let tls = Tls::builder().cert("cert.pem", "key.pem").build()?;
/// signals::reload_tls_on_sighup(&tls)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(feature = "tls")]
pub fn reload_tls_on_sighup(tls: &crate::tls::Tls) -> io::Result<()> {
    let tls = tls.clone();
    on_a_thread(Signal::SIGHUP, "socketserver-tls-reload", move || {
        match tls.reload() {
            Ok(()) => log::info!("TLS: certificates reloaded"),
            Err(e) => log::error!("TLS: reload failed, the old certificates stay: {e}"),
        }
        true
    })
}

/// Makes `SIGUSR2` start `upgrade` (see [`upgrade`](crate::upgrade)): the successor is started and,
/// once it is ready, the upgrade's servers drain and their `serve_forever` returns; if it fails, the
/// servers serve on and the failure is logged — and a later `SIGUSR2` tries again. The upgrade runs
/// on a thread of its own, so serving goes on meanwhile.
///
/// # Errors
/// `sigaction(2)`, `eventfd(2)` or starting the thread failing.
///
/// # Examples
///
/// ```
/// use socketserver::upgrade::Upgrade;
/// use socketserver::{signals, StreamRequest, ThreadingTcpServer};
///
/// let server = ThreadingTcpServer::bind("127.0.0.1:0", |_r: &mut StreamRequest| Ok(()))?;
/// signals::upgrade_on_sigusr2(Upgrade::new()?.listener("echo", &server)?)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn upgrade_on_sigusr2(upgrade: crate::upgrade::Upgrade) -> io::Result<()> {
    on_a_thread(
        Signal::SIGUSR2,
        "socketserver-upgrade",
        move || match upgrade.run() {
            Ok(pid) => {
                log::info!("upgrade: handed over to process {pid}");
                false
            }
            Err(e) => {
                log::error!("{e}; serving on");
                true
            }
        },
    )
}

/// Runs `work` on a thread named `name` each time `sig` comes (never in the signal handler: the
/// handler pokes an eventfd the thread waits on), until `work` returns `false`.
///
/// # Errors
/// `sigaction(2)`, `eventfd(2)` or starting the thread failing.
fn on_a_thread(
    sig: Signal,
    name: &str,
    mut work: impl FnMut() -> bool + Send + 'static,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    let trigger = std::sync::Arc::new(crate::sys::EventFd::new(false)?);
    let waiting = trigger.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                let mut fds = [crate::sys::readable(waiting.as_fd())];
                if crate::sys::poll(&mut fds, None).is_err() || !waiting.take() {
                    continue;
                }
                if !work() {
                    return;
                }
            }
        })
        .map_err(|e| crate::sys::context(e, format!("starting the {name} thread")))?;
    let mut routed = ROUTED.lock();
    routed.push(Routed::Woken(trigger.clone()));
    signal::route(&[sig], signal::Poke::eventfd(trigger.as_fd()), None, &[])
}

/// Makes `SIGTTIN` grow a [`PreFork`](crate::PreFork) server by one worker and `SIGTTOU` shrink it by
/// one, through `handle` (see [`SizeHandle`](crate::SizeHandle)), as gunicorn and Perl's
/// `Net::Server` do. (Their default action would stop the process, as for a background job reading
/// the terminal; routed, they never do.)
///
/// # Errors
/// `sigaction(2)` failing.
///
/// # Examples
///
/// ```
/// use socketserver::{signals, PreFork};
/// let prefork = PreFork::new(4);
/// signals::resize_on_ttin_ttou(&prefork.size_handle())?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn resize_on_ttin_ttou(handle: &crate::SizeHandle) -> io::Result<()> {
    let mut routed = ROUTED.lock();
    routed.push(Routed::Size(handle.clone()));
    signal::route(&[Signal::SIGTTIN], handle.grow_poke(), None, &[])?;
    signal::route(&[Signal::SIGTTOU], handle.shrink_poke(), None, &[])
}
