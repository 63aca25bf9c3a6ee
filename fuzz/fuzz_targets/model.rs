//! cargo-fuzz entry point of the `model` target. The body, and its documentation, is
//! `fuzz/targets/model.rs`, shared with the stable tests in `tests/integration/fuzz_replay.rs`.
#![no_main]

#[path = "../targets/model.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
