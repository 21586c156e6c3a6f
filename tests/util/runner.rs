//! A test runner for test files whose tests must run one at a time with no other test thread in
//! the process: they fork, or count the process's threads. libtest would run them on threads of
//! their own, started while another test runs, and a thread count would see those threads come and
//! go. Such a file sets `harness = false` in Cargo.toml and calls [`run`] from its `main`; the runner
//! takes libtest's command line as far as it applies.

use std::time::Instant;

/// A named test.
pub type Test = (&'static str, fn());

/// Runs the `tests` the command line selects, one at a time on this thread, and exits 101 if any
/// failed (as libtest does). Include [`the_runner_takes_libtest_flags`] among them.
pub fn run(tests: &[Test]) {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            std::process::exit(101); // as libtest does for a bad command line
        }
    };
    if options.help {
        println!("{USAGE}");
        return;
    }
    let selected: Vec<&(&str, fn())> = tests
        .iter()
        .filter(|(name, _)| options.runs(name))
        .collect();
    let filtered = tests.len() - selected.len();
    if options.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        if !options.terse {
            println!("\n{} tests, 0 benchmarks", selected.len());
        }
        return;
    }
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    println!("\nrunning {} tests", selected.len());
    for (name, test) in selected {
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

const USAGE: &str = "Usage: <test binary> [OPTIONS] [FILTERS...]

Runs the tests whose names contain any FILTER (all without one), one at a time, in this process.
    --exact               FILTERS and --skip match whole names
    --skip FILTER         leave out tests whose names contain FILTER (repeatable)
    --list                list the tests instead of running them (--format terse: names only)
    --ignored             run only ignored tests (there are none)
    --include-ignored     run ignored tests too
    --test-threads N      accepted; these tests always run one at a time
    --format pretty|terse accepted; only --list prints differently (names only)
    --nocapture, --show-output, -q, --quiet, --color WHEN
                          accepted; output is never captured
    -h, --help            this text
Any other option is an error.";

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Options {
    filters: Vec<String>,
    skip: Vec<String>,
    exact: bool,
    list: bool,
    terse: bool,
    /// `--ignored`: only ignored tests, of which there are none.
    only_ignored: bool,
    help: bool,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            // `--flag=value` and `--flag value` alike.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag.as_str() {
                "--exact" => o.exact = true,
                "--skip" => o.skip.push(value("--skip")?),
                "--list" => o.list = true,
                "--ignored" => o.only_ignored = true,
                "--include-ignored" => {}
                "--test-threads" => {
                    let n = value("--test-threads")?;
                    if !n.parse::<usize>().is_ok_and(|n| n > 0) {
                        return Err(format!("--test-threads {n}: not a positive number"));
                    }
                }
                "--nocapture" | "--show-output" | "-q" | "--quiet" => {}
                "--color" => match value("--color")?.as_str() {
                    "auto" | "always" | "never" => {}
                    other => {
                        return Err(format!("--color {other}: expected auto, always or never"));
                    }
                },
                "--format" => match value("--format")?.as_str() {
                    "pretty" => {}
                    "terse" => o.terse = true,
                    other => return Err(format!("--format {other}: expected pretty or terse")),
                },
                "-h" | "--help" => o.help = true,
                _ if arg.starts_with('-') => return Err(format!("unrecognized option {arg:?}")),
                _ => o.filters.push(arg),
            }
        }
        Ok(o)
    }

    /// Whether the test `name` runs.
    fn runs(&self, name: &str) -> bool {
        let matches = |pattern: &String| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern.as_str())
            }
        };
        !self.only_ignored
            && (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
    }
}

/// The runner's own command line, checked like the tests it runs.
pub fn the_runner_takes_libtest_flags() {
    let parse = |args: &[&str]| Options::parse(args.iter().map(|a| a.to_string()));
    let all = parse(&[]).unwrap();
    assert!(all.runs("max_children_is_enforced_before_forking"));
    // `--skip x` leaves x out; it is not a filter for x.
    let skip = parse(&["--skip", "max_children"]).unwrap();
    assert!(!skip.runs("max_children_is_enforced_before_forking"));
    assert!(skip.runs("requests_run_in_separate_processes"));
    assert_eq!(parse(&["--skip=max_children"]).unwrap(), skip);
    // `--test-threads 2` takes its value: no filter named "2" that matches nothing.
    let threads = parse(&["--test-threads", "2"]).unwrap();
    assert_eq!(threads, all);
    assert_eq!(
        parse(&["--test-threads=1", "--nocapture", "-q"]).unwrap(),
        all
    );
    // Filters: any of several, or exact names.
    let two = parse(&["max_children", "sigpipe"]).unwrap();
    assert!(two.runs("max_children_is_enforced_before_forking"));
    assert!(two.runs("writing_to_a_vanished_peer_is_epipe_not_sigpipe"));
    assert!(!two.runs("requests_run_in_separate_processes"));
    let exact = parse(&["--exact", "max_children"]).unwrap();
    assert!(!exact.runs("max_children_is_enforced_before_forking"));
    assert!(
        !parse(&["--ignored"]).unwrap().runs("x"),
        "there are no ignored tests"
    );
    // Anything else is refused, not ignored.
    for bad in [
        &["--bogus"][..],
        &["--skip"],
        &["--test-threads", "two"],
        &["--format", "json"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?} was accepted");
    }
}
