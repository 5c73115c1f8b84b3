//! libFuzzer's entry to the `build_tree` target; its body (and what counts as a bug) is in
//! `crates/fuzzing/src/build_tree.rs`, which `cargo test` also replays over the seeds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ishare_fuzzing::build_tree::run(data));
