//! cargo-fuzz entry point of the `keyfile` target. The body, and its documentation, is
//! `fuzz/targets/keyfile.rs`, shared with the stable replay test `tests/integration/fuzz_replay.rs`.
#![no_main]

#[path = "../targets/keyfile.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
