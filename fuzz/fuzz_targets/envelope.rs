//! cargo-fuzz entry point of the `envelope` target. The body, and its documentation, is
//! `fuzz/targets/envelope.rs`, shared with the stable replay test `tests/integration/fuzz_replay.rs`.
#![no_main]

#[path = "../targets/envelope.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
