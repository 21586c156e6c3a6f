//! `--metrics-addr`: the examples' Prometheus endpoint, scraped with `curl` and read with Python's
//! `prometheus_client` text parser (which `.ci/run` installs), as a Prometheus server would. The
//! counts equal the requests the test made — under `Forking` and `PreFork` too, whose requests are
//! counted in child processes.

mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::process::Command;
use std::time::{Duration, Instant};

use util::{ServerProc, TIMEOUT, connect, run_with_input};

/// Reads the exposition on stdin with `prometheus_client`'s parser; prints one `name{labels} value`
/// line per sample, the labels sorted.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;

/// The samples at `http://<metrics>/metrics`, as the parser read them.
fn scrape(metrics: &str) -> HashMap<String, f64> {
    let mut curl = Command::new("curl");
    curl.args([
        "-sSf",
        "--max-time",
        "10",
        &format!("http://{metrics}/metrics"),
    ]);
    let page = run_with_input(curl, b"", TIMEOUT);
    assert!(page.status.success(), "curl: {page:?}");
    let mut python = Command::new("python3");
    python.args(["-c", PARSE]);
    let parsed = run_with_input(python, &page.stdout, TIMEOUT);
    assert!(
        parsed.status.success(),
        "prometheus_client could not parse the page (is it installed? `.ci/run` installs it): {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    String::from_utf8(parsed.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// Starts an example with `--metrics-addr 127.0.0.1:0`; returns it and the endpoint's address.
fn start(example: &str, args: &[&str]) -> (ServerProc, String) {
    let mut all = vec!["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let server = ServerProc::example(example, &all);
    let line = server.next_line(TIMEOUT).expect("a second stdout line");
    let metrics = line
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("second line {line:?}, not `metrics on <addr>`"))
        .to_string();
    (server, metrics)
}

/// One echo request over a connection of its own: `hello` comes back.
fn echo_once(addr: &str) {
    let mut conn = connect(addr);
    conn.write_all(b"hello").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"hello");
}

/// Scrapes until `name` reaches `want` (a request's end is counted just after its client sees the
/// connection close), bounded by [`TIMEOUT`]; returns the last scrape.
fn scrape_until(metrics: &str, name: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let samples = scrape(metrics);
        if samples.get(name) == Some(&want) || Instant::now() >= deadline {
            return samples;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn echo_counts_reach_the_endpoint(concurrency: &str, strategy: &str) {
    const REQUESTS: u32 = 5;
    let (mut server, metrics) = start("echo", &["--concurrency", concurrency]);
    for _ in 0..REQUESTS {
        echo_once(&server.addr);
    }
    let labels = format!("addr={},strategy={strategy}", server.addr);
    let sample = |name: &str| format!("{name}{{{labels}}}");
    let n = f64::from(REQUESTS);
    let samples = scrape_until(&metrics, &sample("socketserver_requests_finished_total"), n);
    let want = [
        ("socketserver_connections_accepted_total", n),
        ("socketserver_requests_started_total", n),
        ("socketserver_requests_finished_total", n),
        ("socketserver_requests_failed_total", 0.0),
        ("socketserver_requests_panicked_total", 0.0),
        ("socketserver_requests_cut_total", 0.0),
        ("socketserver_connections_open", 0.0),
        ("socketserver_request_duration_seconds_count", n),
    ];
    for (name, value) in want {
        assert_eq!(
            samples.get(&sample(name)),
            Some(&value),
            "{concurrency}: {name} in {samples:#?}"
        );
    }
    // Every request took more than a microsecond and less than an hour: all in the finite buckets.
    let below = |le: &str| {
        let addr = &server.addr;
        samples[&format!(
            "socketserver_request_duration_seconds_bucket{{addr={addr},le={le},strategy={strategy}}}"
        )]
    };
    assert_eq!(below("0.000001"), 0.0, "{samples:#?}");
    assert_eq!(below("+Inf"), n, "{samples:#?}");
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn threading_counts_reach_the_endpoint() {
    echo_counts_reach_the_endpoint("threading", "Threading");
}

#[test]
fn forking_counts_reach_the_endpoint() {
    echo_counts_reach_the_endpoint("forking", "Forking");
}

#[test]
fn prefork_counts_reach_the_endpoint() {
    echo_counts_reach_the_endpoint("prefork", "PreFork");
}

#[test]
fn reactor_counts_reach_the_endpoint() {
    echo_counts_reach_the_endpoint("reactor", "Reactor");
}

/// http_hello has the same endpoint: three keep-alive requests on one connection are one connection
/// served.
#[test]
fn http_hello_serves_its_figures() {
    let (mut server, metrics) = start("http_hello", &[]);
    let mut conn = connect(&server.addr);
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answers = String::new();
    conn.read_to_string(&mut answers).unwrap();
    assert_eq!(answers.matches("200 OK").count(), 3, "{answers}");
    let labels = format!("addr={},strategy=Threading", server.addr);
    let finished = format!("socketserver_requests_finished_total{{{labels}}}");
    let samples = scrape_until(&metrics, &finished, 1.0);
    assert_eq!(samples.get(&finished), Some(&1.0), "{samples:#?}");
    // Anything but GET /metrics is refused.
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{metrics}/other"),
    ]);
    let out = run_with_input(curl, b"", TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    assert_eq!(server.terminate().code(), Some(0));
}
