//! The default error report (Python's `handle_error`): with no logger installed it goes to standard
//! error, one line per failure with the peer and the error chain, so a server is never silent about
//! its failures; with a logger installed it goes to the logger only. Each case runs in a process of
//! its own (this binary re-run with one `#[ignore]`d case selected), since a logger is process-wide.

use std::io::{BufRead, Write};
use std::process::Command;

use socketserver::testing::{MockConn, MockStream};
use socketserver::{Sequential, Server, StreamRequest};

/// A handler whose request fails with a chain of two errors.
fn failing(req: &mut StreamRequest) -> anyhow::Result<()> {
    let mut line = String::new();
    req.read_line(&mut line)?;
    Err(anyhow::anyhow!("the disk is full")).map_err(|e| e.context(format!("saving {line:?}")))
}

/// Serves one failing request on the mock transport with the default error hook.
fn serve_one_failure() {
    let transport = MockStream::new().unwrap();
    transport.push(
        MockConn::new()
            .peer("192.0.2.7:5000".parse::<std::net::SocketAddr>().unwrap())
            .read("report\n"),
    );
    let mut server = Server::new(Sequential::new(), transport, failing).unwrap();
    server.handle_request().unwrap();
}

/// Runs the `#[ignore]`d case `name` of this binary in a process of its own.
fn run_case(name: &str) -> std::process::Output {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            name,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{name}: {output:?}");
    output
}

fn lines(bytes: &[u8]) -> Vec<String> {
    bytes.lines().map(Result::unwrap).collect()
}

#[test]
fn without_a_logger_failures_go_to_stderr() {
    let output = run_case("case_without_a_logger");
    let stderr = lines(&output.stderr);
    let reports: Vec<&String> = stderr
        .iter()
        .filter(|l| l.starts_with("socketserver: "))
        .collect();
    assert_eq!(
        reports,
        [
            "socketserver: request from 192.0.2.7:5000: handler failed: saving \"report\\n\": the disk is full"
        ],
        "{stderr:?}"
    );
}

#[test]
fn with_a_logger_failures_go_to_the_logger_only() {
    let output = run_case("case_with_a_logger");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("socketserver: "), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "LOG ERROR request from 192.0.2.7:5000: handler failed: saving \"report\\n\": the disk is full"
        ),
        "{stdout}"
    );
}

#[test]
#[ignore = "a case of `without_a_logger_failures_go_to_stderr`, run in its own process"]
fn case_without_a_logger() {
    serve_one_failure();
}

#[test]
#[ignore = "a case of `with_a_logger_failures_go_to_the_logger_only`, run in its own process"]
fn case_with_a_logger() {
    struct ToStdout;
    impl log::Log for ToStdout {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            if record.level() <= log::Level::Warn {
                println!("LOG {} {}", record.level(), record.args());
                let _ = std::io::stdout().flush();
            }
        }
        fn flush(&self) {}
    }
    log::set_logger(&ToStdout).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    serve_one_failure();
}
