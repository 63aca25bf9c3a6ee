//! cargo-fuzz entry point of the `pack_header` target. The body, and its documentation, is
//! `fuzz/targets/pack_header.rs`, shared with the stable replay test `tests/integration/fuzz_replay.rs`.
#![no_main]

#[path = "../targets/pack_header.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
