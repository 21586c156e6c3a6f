//! Compile-fail tests: a server composed of parts that do not fit together must not compile, and the
//! first line of its error must say what is wrong and what to do. Each `tests/ui/*.rs` is one such
//! program; its `.stderr` beside it is the expected error, compared verbatim (on the toolchain of
//! `rust-version`). After changing a diagnostic on purpose, regenerate the snapshots with
//! `TRYBUILD=overwrite cargo test -p socketserver-checks --test compile_errors` and review every one.

#[test]
fn mismatched_servers_explain_themselves() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
