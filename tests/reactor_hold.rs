//! A `Reactor` server holds 2,000 concurrent connections, keeps serving newcomers, and spends little
//! memory on each. Runs the `reactor_idle` example (its own processes: it raises `RLIMIT_NOFILE`);
//! `cargo run --release --example reactor_idle` does the same with 10,000 connections.

mod util;

use std::process::Command;

use util::example_bin;

#[test]
fn holds_2000_connections_with_little_memory_each() {
    let out = Command::new(example_bin("reactor_idle"))
        .args(["--connections", "2000"])
        .output()
        .expect("running reactor_idle");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("connections: 2000 open and echoed"),
        "{stdout}"
    );
    assert!(stdout.contains("new client served: yes"), "{stdout}");
    let per_conn: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("per connection: "))
        .and_then(|v| v.trim_end_matches(" bytes").parse().ok())
        .unwrap_or_else(|| panic!("no per-connection figure in {stdout}"));
    // The target is 4 KiB of user memory per idle connection (buffers released when empty); a
    // buffer kept per connection (64 KiB) would be far over it.
    assert!(
        per_conn <= 4096.0,
        "{per_conn} bytes per idle connection\n{stdout}"
    );
}
