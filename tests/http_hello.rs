//! The `http_hello` example over real sockets: keep-alive, pipelining, `Connection: close` and HTTP/1.0
//! semantics, request bodies, malformed requests (400 and close), limits, every strategy, and `curl`.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;

use nix::sys::signal::Signal;
use util::{ServerProc, TIMEOUT, connect, example_bin};

/// One parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that reads responses one at a time (by `Content-Length`).
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn new(server: &ServerProc) -> Client {
        let writer = connect(&server.addr);
        let reader = BufReader::new(writer.try_clone().unwrap());
        Client { writer, reader }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one response; `head_only` for the response to a HEAD request (no body despite its length).
    fn response(&mut self, head_only: bool) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let mut parts = line.trim_end().splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
        let status = parts.next().unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.ends_with("\r\n"), "header line {line:?}");
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.trim_end().split_once(": ").unwrap();
            headers.push((name.to_string(), value.to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let len: usize = response
            .header("Content-Length")
            .expect("every response has Content-Length")
            .parse()
            .unwrap();
        if !head_only {
            response.body = vec![0; len];
            self.reader.read_exact(&mut response.body).unwrap();
        }
        response
    }

    /// Whether the server closed the connection (end of stream, nothing more to read).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

fn start(concurrency: &str) -> ServerProc {
    ServerProc::example(
        "http_hello",
        &["--addr", "127.0.0.1:0", "--concurrency", concurrency],
    )
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = start("threading");
    let mut client = Client::new(&server);
    for _ in 0..5 {
        client.send(GET);
        let r = client.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello\n");
        assert_eq!(r.header("Content-Length"), Some("6"));
        assert_eq!(r.header("Connection"), None, "HTTP/1.1 stays open");
        assert!(
            r.header("Date")
                .is_some_and(|d| d.ends_with(" GMT") && d.len() == 29)
        );
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = start("threading");
    let mut client = Client::new(&server);
    client.send(
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /missing HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: t\r\n\r\nDELETE / HTTP/1.1\r\nHost: t\r\n\r\nGET /?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    let r = client.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello\n"[..]));
    assert_eq!(client.response(false).status, 404);
    let head = client.response(true);
    assert_eq!(
        (head.status, head.header("Content-Length")),
        (200, Some("6"))
    );
    let delete = client.response(false);
    assert_eq!(
        (delete.status, delete.header("Allow")),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(
        client.response(false).body,
        b"hello\n",
        "the query is ignored"
    );
    client.send(GET);
    assert_eq!(
        client.response(false).status,
        200,
        "still open after the batch"
    );
}

#[test]
fn connection_close_closes_after_the_response() {
    let server = start("threading");
    let mut client = Client::new(&server);
    client.send(GET);
    assert_eq!(client.response(false).status, 200);
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = client.response(false);
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    assert!(client.closed());
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked() {
    let server = start("threading");
    let mut client = Client::new(&server);
    client.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = client.response(false);
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    assert!(client.closed());

    let mut client = Client::new(&server);
    for _ in 0..3 {
        client.send(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        let r = client.response(false);
        assert_eq!(
            (r.status, r.header("Connection")),
            (200, Some("keep-alive"))
        );
    }
}

#[test]
fn a_request_body_is_skipped_and_the_connection_kept() {
    let server = start("threading");
    let mut client = Client::new(&server);
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nGET / HTTP/");
    assert_eq!(client.response(false).status, 405);
    client.send(GET);
    let r = client.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello\n"[..]));
}

/// Each of these gets its status, `Connection: close`, and then the end of the stream.
#[test]
fn malformed_requests_get_an_error_and_close() {
    let server = start("threading");
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let many_fields = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X: y\r\n".repeat(101)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("two spaces", b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /\r\n\r\n".to_vec(), 400),
        ("bad version", b"GET / HTTX/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 505),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : t\r\n\r\n".to_vec(), 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n".to_vec(), 400),
        ("control char", b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x01b\r\n\r\n".to_vec(), 400),
        ("bad length", b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n".to_vec(), 400),
        (
            "conflicting lengths",
            b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            400,
        ),
        (
            "chunked",
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            501,
        ),
        (
            "huge body",
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
            413,
        ),
        ("long header", long_header.into_bytes(), 431),
        ("many fields", many_fields.into_bytes(), 431),
    ];
    for (what, request, status) in cases {
        let mut client = Client::new(&server);
        client.send(&request);
        let r = client.response(false);
        assert_eq!(r.status, status, "{what}");
        assert_eq!(r.header("Connection"), Some("close"), "{what}");
        assert!(client.closed(), "{what}: the connection stays open");
    }
    // The server is still serving.
    let mut client = Client::new(&server);
    client.send(GET);
    assert_eq!(client.response(false).status, 200);
}

#[test]
fn every_strategy_serves_and_exits_0_on_sigterm() {
    for concurrency in ["sequential", "threading", "forking", "pool", "prefork"] {
        let mut server = start(concurrency);
        let mut client = Client::new(&server);
        for _ in 0..2 {
            client.send(GET);
            assert_eq!(client.response(false).body, b"hello\n", "{concurrency}");
        }
        drop(client);
        let status = server.stop_with(Signal::SIGTERM);
        assert_eq!(status.code(), Some(0), "{concurrency}: {status:?}");
    }
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    let out = Command::new(example_bin("http_hello"))
        .args(["--concurrency", "telepathy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Usage"));
}

/// `curl` (when installed; required under CI) gets `hello`, and reuses the connection for a second URL.
#[test]
fn curl_gets_hello_over_one_connection() {
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "curl is required under CI (.ci/run installs it)"
        );
        eprintln!("skipping: curl is not installed");
        return;
    }
    let server = start("threading");
    let url = format!("http://{}/", server.addr);
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time"])
        .arg(TIMEOUT.as_secs().to_string())
        .args([&url, &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl failed: {stderr}");
    assert_eq!(out.stdout, b"hello\nhello\n");
    assert!(stderr.contains("HTTP/1.1 200 OK"), "{stderr}");
    assert!(
        stderr
            .to_lowercase()
            .contains("re-using existing connection"),
        "curl did not keep the connection alive: {stderr}"
    );
}
