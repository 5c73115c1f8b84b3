//! libFuzzer's entry to the `file_contexts` target; its body (and what counts as a bug)
//! is in `crates/fuzzing/src/file_contexts.rs`, which `cargo test` also replays over
//! the seeds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ishare_fuzzing::file_contexts::run(data));
