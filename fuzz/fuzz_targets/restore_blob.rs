//! cargo-fuzz entry point of the `restore_blob` target. The body, and its documentation, is
//! `fuzz/targets/restore_blob.rs`, shared with the stable replay test `tests/integration/fuzz_replay.rs`.
#![no_main]

#[path = "../targets/restore_blob.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
