//! The bodies of the fuzz targets, in the main workspace so that stable `cargo test`
//! replays every seed and every input that ever crashed one (`tests/replay.rs`), while
//! `fuzz/` (cargo-fuzz, nightly or `RUSTC_BOOTSTRAP=1`) only wraps them for libFuzzer.
//!
//! Each target takes the fuzzer's bytes and panics only on a bug: a panic in the code
//! under test, or a broken invariant that the target states in its comment. Refusing
//! bad input with an error is never a bug.

pub mod build_tree;
pub mod file_contexts;
pub mod read_image;
pub mod serve_image;
pub mod tar_input;

/// A fuzz target: its name (the folder of its seeds and crashes) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("read_image", read_image::run),
    ("tar_input", tar_input::run),
    ("build_tree", build_tree::run),
    ("serve_image", serve_image::run),
    ("file_contexts", file_contexts::run),
];
