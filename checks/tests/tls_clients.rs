//! The examples' TLS flags against real clients: `echo` and `http_hello`, started as processes with
//! `--tls-cert`/`--tls-key` (and `--tls-client-ca`, `--tls-alpn`), talked to by `openssl s_client` and
//! `curl` — the TLS coverage of `Forking` and `PreFork`, which `tls.rs` (in process) leaves out. Also:
//! mutual TLS, an expired certificate, ALPN, reload on `SIGHUP` with an old connection kept, and the
//! flags refused where TLS cannot be served.
//!
//! The examples must be built with TLS first: `cargo build --examples --all-features` (the README's
//! `cargo test --all-features` does it). `openssl` and `curl` come from the Debian packages of those
//! names (`.ci/run` installs them); without them a test fails in CI (where `CI` is set) and is
//! skipped, loudly, on a developer's machine.

mod common;
#[path = "../../tests/util/mod.rs"]
mod util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Once, mpsc};
use std::time::{Duration, Instant};

use common::pki::{self, Issued, Pki};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{ServerProc, TIMEOUT, example_bin, run_with_input};

/// Whether `tool` runs. Missing: the test fails under CI, and is skipped (loudly) elsewhere.
fn have(tool: &str) -> bool {
    let runs = Command::new(tool)
        .arg(if tool == "openssl" {
            "version"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !runs {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed, but CI is set: `.ci/run` must install the `{tool}` package"
        );
        eprintln!("\n\n*** SKIPPED: `{tool}` not found (apt-get install {tool}) ***\n");
    }
    runs
}

/// Fails at once, saying what to do, when the examples were built without the `tls` feature (they
/// refuse `--tls-cert` then), instead of each test failing on a server that never started.
fn examples_have_tls() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        let out = Command::new(example_bin("echo"))
            .args(["--tls-cert", "/nonexistent", "--tls-key", "/nonexistent"])
            .stdin(Stdio::null())
            .output()
            .expect("running the echo example");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("--features tls"),
            "the examples were built without TLS: run `cargo build --examples --all-features` \
             first\n{stderr}"
        );
    });
}

/// `--tls-cert` and `--tls-key` for `cert`, then `extra`.
fn tls_args<'a>(cert: &'a Issued, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--tls-cert", cert.chain_str(), "--tls-key", cert.key_str()];
    args.extend_from_slice(extra);
    args
}

/// The echo example serving TLS with `cert` (and `extra` flags).
fn echo_tls(cert: &Issued, extra: &[&str]) -> ServerProc {
    examples_have_tls();
    ServerProc::example("echo", &tls_args(cert, extra))
}

/// Stops `server` with `SIGTERM`, expecting the graceful exit 0.
fn stop(mut server: ServerProc) {
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "the server's exit: {status:?}");
}

/// An `openssl s_client` connected to a server (verifying it against a CA file, asking for
/// `localhost`), whose output is collected as it comes. Killed and reaped when dropped.
struct SClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    stderr: Option<util::Bounded<Vec<u8>>>,
}

/// How an `openssl s_client` ended.
#[derive(Debug)]
struct Ended {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl SClient {
    /// `openssl s_client -quiet -no_ign_eof` (only the data on stdout; end of input closes the
    /// connection) with `-verify_return_error` (a certificate that fails verification ends the
    /// handshake), then `extra`.
    fn start(addr: SocketAddr, ca: &Path, extra: &[&str]) -> SClient {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "localhost", "-CAfile"])
            .arg(ca)
            .args(["-verify_return_error", "-quiet", "-no_ign_eof"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = util::spawn_bounded(move || {
            let mut all = Vec::new();
            let _ = err.read_to_end(&mut all);
            all
        });
        SClient {
            stdin: child.stdin.take(),
            child,
            stdout,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    /// Sends `line` to the server (an `s_client` that already exited is found out by [`Self::finish`]).
    fn send(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Whether the output comes to contain `want` within [`TIMEOUT`] (false as soon as it ends
    /// without it).
    fn received(&mut self, want: &str) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        while !String::from_utf8_lossy(&self.seen).contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(_) => return false,
            }
        }
        true
    }

    /// Ends the input (`s_client` then closes the connection, if it has not ended already) and waits,
    /// bounded, for it to exit.
    fn finish(&mut self) -> Ended {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "openssl s_client did not exit within {TIMEOUT:?} of the end of its input"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        // Its output ends with it: what is left is in the channel, or comes at once.
        while let Ok(bytes) = self.stdout.recv_timeout(TIMEOUT) {
            self.seen.extend(bytes);
        }
        let stderr = self.stderr.take().expect("finished once").wait(TIMEOUT);
        Ended {
            status,
            stdout: String::from_utf8_lossy(&self.seen).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

impl Drop for SClient {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One line through `openssl s_client` and back; fails the test unless it comes back and
/// `s_client` then exits 0.
fn openssl_echo(addr: SocketAddr, ca: &Path, extra: &[&str], line: &str) {
    let mut client = SClient::start(addr, ca, extra);
    client.send(line);
    let echoed = client.received(line);
    let ended = client.finish();
    assert!(echoed, "no echo of {line:?}: {ended:#?}");
    assert!(ended.status.success(), "{ended:#?}");
}

/// Sends a line through `openssl s_client` to a server that must refuse it: no echo, and
/// `s_client` fails with `stderr` saying `why`.
fn openssl_refused(addr: SocketAddr, ca: &Path, extra: &[&str], why: &str) -> Ended {
    let mut client = SClient::start(addr, ca, extra);
    client.send("not for you\n");
    // The input stays open until `s_client` has ended by itself: the refusal is what ends it.
    let echoed = client.received("not for you");
    let ended = client.finish();
    assert!(
        !echoed && !ended.stdout.contains("not for you"),
        "echoed: {ended:#?}"
    );
    assert!(!ended.status.success(), "{ended:#?}");
    assert!(ended.stderr.contains(why), "{why:?} not in {ended:#?}");
    ended
}

/// `curl https://localhost:PORT/`, `localhost` resolved to the server's loopback address, trusting
/// `ca`; bounded and reaped.
fn curl(server: &ServerProc, ca: &Path) -> Output {
    let port = server.socket_addr().port();
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}/"));
    run_with_input(cmd, b"", TIMEOUT + Duration::from_secs(5))
}

// ---- openssl s_client against echo, under every blocking strategy ----

/// `openssl s_client` gets its line back from `echo --tls-cert … --concurrency <strategy>`, and the
/// server then exits 0 on `SIGTERM`.
fn openssl_gets_the_echo(strategy: &str, extra: &[&str]) {
    if !have("openssl") {
        return;
    }
    let pki = Pki::new();
    let cert = pki.server("server", &["localhost"]);
    let mut flags = vec!["--concurrency", strategy];
    flags.extend_from_slice(extra);
    let server = echo_tls(&cert, &flags);
    for n in 0..2 {
        openssl_echo(
            server.socket_addr(),
            &pki.ca_pem,
            &[],
            &format!("hello {n} over TLS under {strategy}\n"),
        );
    }
    stop(server);
}

macro_rules! openssl_echo_tests {
    ($($name:ident: $strategy:literal $(, $extra:literal)*;)*) => {
        $( #[test] fn $name() { openssl_gets_the_echo($strategy, &[$($extra),*]) } )*
    };
}

openssl_echo_tests! {
    openssl_gets_the_echo_under_sequential: "sequential";
    openssl_gets_the_echo_under_threading: "threading";
    openssl_gets_the_echo_under_forking: "forking";
    openssl_gets_the_echo_under_pool: "pool", "--workers", "2";
    openssl_gets_the_echo_under_prefork: "prefork", "--workers", "2";
    openssl_gets_the_echo_under_reactor: "reactor";
}

// ---- mutual TLS ----

/// `--tls-client-ca`: a client certificate the CA signed is let in; no certificate, or one of another
/// CA, is refused in the handshake and nothing is echoed.
#[test]
fn mutual_tls_lets_in_a_client_certificate_and_refuses_none_or_a_strangers() {
    if !have("openssl") {
        return;
    }
    let pki = Pki::new();
    let cert = pki.server("server", &["localhost"]);
    let client = pki.client("client");
    let other_ca = Pki::new();
    let stranger = other_ca.client("stranger");
    let ca = pki.ca_pem.to_str().unwrap();
    for strategy in ["threading", "forking"] {
        let server = echo_tls(&cert, &["--tls-client-ca", ca, "--concurrency", strategy]);
        let addr = server.socket_addr();
        let identity = ["-cert", client.chain_str(), "-key", client.key_str()];
        openssl_echo(addr, &pki.ca_pem, &identity, "with my certificate\n");
        // TLS 1.3: the client's handshake is done before the server has checked its certificate;
        // the refusal comes as an alert on its first read.
        openssl_refused(addr, &pki.ca_pem, &[], "alert certificate required");
        let foreign = ["-cert", stranger.chain_str(), "-key", stranger.key_str()];
        openssl_refused(addr, &pki.ca_pem, &foreign, "alert");
        stop(server);
    }
}

// ---- an expired certificate ----

/// A server certificate that expired in 2001 is refused by the clients: `openssl s_client
/// -verify_return_error` ends the handshake, curl fails with a certificate error (exit 60).
#[test]
fn an_expired_server_certificate_is_refused_by_openssl_and_curl() {
    let pki = Pki::new();
    let expired = pki.expired_server("expired", &["localhost"]);
    if have("openssl") {
        let server = echo_tls(&expired, &[]);
        openssl_refused(
            server.socket_addr(),
            &pki.ca_pem,
            &[],
            "certificate has expired",
        );
        stop(server);
    }
    if have("curl") {
        examples_have_tls();
        let server = ServerProc::example("http_hello", &tls_args(&expired, &[]));
        let out = curl(&server, &pki.ca_pem);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(60), "curl: {stderr}");
        assert!(stderr.contains("expired"), "curl: {stderr}");
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
        stop(server);
    }
}

// ---- ALPN ----

/// `openssl s_client -alpn <offer>` (and `extra`) against `server`: its output, the session summary
/// on stdout (not `-quiet`), ALPN included.
fn openssl_alpn(server: &ServerProc, ca: &Path, offer: &str, extra: &[&str]) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &server.addr])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(ca)
        .args(["-verify_return_error", "-no_ign_eof", "-alpn", offer])
        .args(extra);
    run_with_input(cmd, b"", TIMEOUT + Duration::from_secs(5))
}

/// `--tls-alpn h2,http/1.1`: the server's preference wins among what the client offers, and a client
/// offering none of them is refused — with RFC 7301's `no_application_protocol` alert under TLS 1.2.
#[test]
fn alpn_picks_the_servers_preference_and_refuses_a_client_with_none_in_common() {
    if !have("openssl") {
        return;
    }
    let pki = Pki::new();
    let cert = pki.server("server", &["localhost"]);
    let server = echo_tls(&cert, &["--tls-alpn", "h2,http/1.1"]);
    for (offer, chosen) in [("http/1.1,h2", "h2"), ("spdy/3,http/1.1", "http/1.1")] {
        for version in ["-tls1_3", "-tls1_2"] {
            let out = openssl_alpn(&server, &pki.ca_pem, offer, &[version]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{offer} {version}: {out:?}");
            assert!(
                stdout.contains(&format!("ALPN protocol: {chosen}\n")),
                "{offer} {version}: {stdout}"
            );
        }
    }
    for version in ["-tls1_3", "-tls1_2"] {
        let out = openssl_alpn(&server, &pki.ca_pem, "spdy/3", &[version]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("ALPN protocol:"), "{version}: {stdout}");
        assert!(stdout.contains("No ALPN negotiated"), "{version}: {stdout}");
    }
    let out = openssl_alpn(&server, &pki.ca_pem, "spdy/3", &["-tls1_2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alert no application protocol"), "{stderr}");
    stop(server);
}

/// Under TLS 1.3 the refusal is sent after the ServerHello, which is queued first: both must reach
/// the client, or it sees the connection end mid-handshake instead of the reason.
#[test]
fn alpn_refusal_reaches_a_tls13_client_as_an_alert() {
    if !have("openssl") {
        return;
    }
    let pki = Pki::new();
    let cert = pki.server("server", &["localhost"]);
    let server = echo_tls(&cert, &["--tls-alpn", "h2,http/1.1"]);
    let out = openssl_alpn(&server, &pki.ca_pem, "spdy/3", &["-tls1_3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alert no application protocol"), "{stderr}");
    stop(server);
}

// ---- curl against http_hello ----

/// `curl --cacert` gets http_hello's body over HTTPS — the same handler as over plain HTTP.
fn curl_gets_hello(strategy: &str) {
    if !have("curl") {
        return;
    }
    examples_have_tls();
    let pki = Pki::new();
    let cert = pki.server("server", &["localhost"]);
    let server = ServerProc::example("http_hello", &tls_args(&cert, &["--concurrency", strategy]));
    for _ in 0..2 {
        let out = curl(&server, &pki.ca_pem);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl: {:?} {stderr}", out.status);
        assert_eq!(out.stdout, b"hello\n", "curl: {stderr}");
    }
    stop(server);
}

#[test]
fn curl_gets_http_hello_over_tls_under_threading() {
    curl_gets_hello("threading");
}

#[test]
fn curl_gets_http_hello_over_tls_under_forking() {
    curl_gets_hello("forking");
}

#[test]
fn curl_gets_http_hello_over_tls_under_prefork() {
    curl_gets_hello("prefork");
}

// ---- reload on SIGHUP ----

/// With TLS on, `SIGHUP` makes the server re-read its certificate files: a connection opened after
/// it gets the new certificate, while one opened before keeps its own and still echoes (under
/// prefork, whose reload replaces the workers, it is closed cleanly at its boundary instead).
fn sighup_reloads_for_new_connections(strategy: &str) {
    examples_have_tls();
    let pki = Pki::new();
    let live = pki.server("live", &["localhost"]);
    let renewed = pki.server("renewed", &["localhost"]);
    let server = echo_tls(&live, &["--concurrency", strategy]);
    let addr = server.socket_addr();
    let config = pki.client_config(&[], None);
    let mut old = pki::connect(addr, "localhost", config.clone()).expect("the first connection");
    assert_eq!(pki::server_cert(&old), live.der);
    assert_eq!(pki::round_trip(&mut old, "before\n").unwrap(), "before\n");

    // The renewal, as certbot does it: new files in place, then SIGHUP.
    std::fs::copy(&renewed.chain, &live.chain).unwrap();
    std::fs::copy(&renewed.key, &live.key).unwrap();
    kill(Pid::from_raw(server.pid()), Signal::SIGHUP).expect("kill -HUP");

    // The reload runs on a thread of the server's: poll new connections until one sees it.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let new = pki::connect(addr, "localhost", config.clone()).expect("a new connection");
        if pki::server_cert(&new) == renewed.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{strategy}: new connections still get the old certificate {TIMEOUT:?} after SIGHUP"
        );
        drop(new);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut new = pki::connect(addr, "localhost", config).expect("a new connection");
    assert_eq!(pki::round_trip(&mut new, "new\n").unwrap(), "new\n");
    assert_eq!(pki::server_cert(&old), live.der);
    let after = pki::round_trip(&mut old, "after\n");
    if strategy == "prefork" {
        // A PreFork reload replaces the workers: the old one ends its idle connection at the
        // boundary, cleanly — `close_notify`, then the end of stream (rustls reports an end without
        // `close_notify` as an error) — and the client sends again on a new connection.
        assert_eq!(after.unwrap(), "", "prefork: the old worker's connection");
    } else {
        assert_eq!(after.unwrap(), "after\n");
    }
    drop((old, new));
    stop(server);
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_under_threading() {
    sighup_reloads_for_new_connections("threading");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_under_forking() {
    sighup_reloads_for_new_connections("forking");
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_under_prefork() {
    sighup_reloads_for_new_connections("prefork");
}

// ---- refused flags ----

/// The TLS flags are refused (exit 2, the reason, nothing served) where TLS cannot be served — a
/// datagram transport, http_hello's reactor mode — and when incomplete; an unreadable certificate
/// file is named.
#[test]
fn tls_flags_are_refused_where_tls_cannot_be_served() {
    examples_have_tls();
    let pki = Pki::new();
    let cert = pki.server("server", &["localhost"]);
    let (chain, key) = (cert.chain_str(), cert.key_str());
    let unix_dgram = pki.dir.path().join("dgram.sock");
    let cases: [(&str, Vec<&str>, &str); 6] = [
        (
            "http_hello",
            vec![
                "--concurrency",
                "reactor",
                "--tls-cert",
                chain,
                "--tls-key",
                key,
            ],
            "reactor",
        ),
        (
            "echo",
            vec!["--transport", "udp", "--tls-cert", chain, "--tls-key", key],
            "TLS needs a stream transport (tcp, unix), not --transport udp",
        ),
        (
            "echo",
            vec![
                "--transport",
                "unix-dgram",
                "--addr",
                unix_dgram.to_str().unwrap(),
                "--tls-cert",
                chain,
                "--tls-key",
                key,
            ],
            "not --transport unix-dgram",
        ),
        ("echo", vec!["--tls-cert", chain], "--tls-key"),
        ("http_hello", vec!["--tls-key", key], "--tls-cert"),
        (
            "echo",
            vec!["--tls-client-ca", pki.ca_pem.to_str().unwrap()],
            "--tls-cert",
        ),
    ];
    for (bin, args, why) in &cases {
        let out = Command::new(example_bin(bin))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin} {args:?}: {stderr}");
        assert!(stderr.contains(why), "{bin} {args:?}: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "{bin} {args:?} served: {:?}",
            out.stdout
        );
    }
    let missing = pki.dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let out = Command::new(example_bin("echo"))
        .args(["--tls-cert", missing, "--tls-key", key])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(missing), "{stderr}");
    assert!(out.stdout.is_empty(), "served: {:?}", out.stdout);
}
