//! Handlers that panic over and over leak nothing: no threads, no descriptors (in-process strategies;
//! the forking strategy's children are checked in `tests/forking.rs`). Its own process, and its own
//! runner (`harness = false`): the tests count this process's threads, so no other test thread may
//! come or go while one runs.

mod util;

use socketserver::{
    Addr, Concurrency, RequestError, Sequential, Server, StreamRequest, Tcp, Threading,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use util::{TIMEOUT, eventually, fd_count, round_trip};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn panicky(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut req.rfile, &mut line)?;
    if line == "ok\n" {
        std::io::Write::write_all(&mut req.wfile, b"ok\n")?;
        return Ok(());
    }
    panic!("panic number {}", line.trim());
}

fn panic_loop<C: Concurrency<Tcp, fn(&mut StreamRequest) -> anyhow::Result<()>>>(strategy: C) {
    let reported = Arc::new(AtomicUsize::new(0));
    let seen = reported.clone();
    let mut server = Server::new(
        strategy,
        Tcp::bind("127.0.0.1:0").unwrap(),
        panicky as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap()
    .handle_error(move |_: Option<&Addr>, e: &RequestError| {
        assert!(matches!(e, RequestError::Panicked(_)), "{e}");
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let addr = server.local_addr().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever());
    assert_eq!(round_trip(addr, b"ok\n"), b"ok\n");
    let me = std::process::id() as i32;
    let (threads_before, fds_before) = (threads(), fd_count(me));
    for i in 0..500 {
        assert_eq!(round_trip(addr, format!("{i}\n").as_bytes()), b"");
    }
    assert!(eventually(TIMEOUT, || reported.load(Ordering::SeqCst) == 500));
    assert!(
        eventually(TIMEOUT, || threads() <= threads_before),
        "threads {threads_before} -> {}",
        threads()
    );
    assert!(
        eventually(TIMEOUT, || fd_count(me) <= fds_before),
        "fds {fds_before} -> {}",
        fd_count(me)
    );
    assert_eq!(round_trip(addr, b"ok\n"), b"ok\n");
    stop.shutdown();
    assert_eq!(t.join().unwrap().unwrap().requests, 502);
}

fn panics_in_a_loop_leak_nothing() {
    // 1,000 messages from the handler's own panics would only be noise; any other panic is shown.
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let asked = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("panic number"));
        if !asked {
            default(info);
        }
    }));
    panic_loop(Threading::new());
    panic_loop(Sequential::new());
}

fn idle_threads_exit_after_the_idle_timeout() {
    let server = Server::new(
        Threading::new().thread_idle_timeout(std::time::Duration::from_millis(100)),
        Tcp::bind("127.0.0.1:0").unwrap(),
        panicky as fn(&mut StreamRequest) -> anyhow::Result<()>,
    )
    .unwrap();
    let server = util::Serving::start(server);
    let before = threads();
    // Eight requests at once need eight threads; once they are done and idle, the threads exit.
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || round_trip(server.addr, b"ok\n")))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), b"ok\n");
    }
    assert!(
        eventually(TIMEOUT, || threads() <= before),
        "threads {before} -> {}",
        threads()
    );
    server.finish();
}

fn main() {
    util::runner::run(&[
        (
            "panics_in_a_loop_leak_nothing",
            panics_in_a_loop_leak_nothing,
        ),
        (
            "idle_threads_exit_after_the_idle_timeout",
            idle_threads_exit_after_the_idle_timeout,
        ),
        (
            "the_runner_takes_libtest_flags",
            util::runner::the_runner_takes_libtest_flags,
        ),
    ]);
}
