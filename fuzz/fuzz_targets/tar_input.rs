//! libFuzzer's entry to the `tar_input` target; its body (and what counts as a bug) is in
//! `crates/fuzzing/src/tar_input.rs`, which `cargo test` also replays over the seeds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ishare_fuzzing::tar_input::run(data));
