//! Nothing here: this package holds `socketserver`'s property tests (`tests/*_props.rs`, proptest)
//! and compile-fail tests (`tests/compile_errors.rs`, trybuild). They are a package of their own
//! because a package's dev-dependencies are built for every one of its examples, and these two
//! tools would double the time `cargo run --release --example echo` takes from a fresh clone.
//! `cargo test` at the repository's root runs them with the rest.
