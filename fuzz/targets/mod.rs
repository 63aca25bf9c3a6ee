//! The fuzz targets' bodies, one module per target, each `pub fn run(data: &[u8])`. The
//! cargo-fuzz entry points in `fuzz/fuzz_targets/` include one module each; the stable test
//! `tests/integration/fuzz_replay.rs` includes this file and replays the seed corpus through
//! every body, so the oracles run in every `cargo test` too.

pub mod config;
pub mod envelope;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod model;
pub mod pack_header;
pub mod restore_blob;
pub mod snapshot;
pub mod tree;

/// A target's body: runs one input, panics on a finding.
pub type Body = fn(&[u8]);

/// Every target: (name, body). The name is the cargo-fuzz target and the `seeds/` directory.
pub const ALL: &[(&str, Body)] = &[
    ("config", config::run),
    ("envelope", envelope::run),
    ("index", index::run),
    ("keyfile", keyfile::run),
    ("lock", lock::run),
    ("model", model::run),
    ("pack_header", pack_header::run),
    ("restore_blob", restore_blob::run),
    ("snapshot", snapshot::run),
    ("tree", tree::run),
];
