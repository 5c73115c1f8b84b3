//! libFuzzer's entry to the `read_image` target; its body (and what counts as a bug) is in
//! `crates/fuzzing/src/read_image.rs`, which `cargo test` also replays over the seeds.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ishare_fuzzing::read_image::run(data));
