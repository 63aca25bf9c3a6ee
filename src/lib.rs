//! dumpvault: a content-addressed, deduplicating, encrypted backup repository for database dump
//! streams.
//!
//! The data path, in the order bytes travel (see `format-spec/` for every byte on disk):
//!
//! ```text
//! stdin / file / child ─ chunker (FastCDC, seeded) ─ id (keyed BLAKE3) ─ index lookup
//!     new chunk ─ compress (zstd) ─ crypto::seal ─ pack::PackWriter ─ backend.put(pack)
//!     end of stream ─ tree (chunk lists) ─ index file ─ snapshot (the commit point)
//! restore: snapshot ─ tree ─ index ─ backend.get_range ─ crypto::open ─ decompress ─ verify ─ out
//! ```
//!
//! Layers: `backend` moves opaque named objects; `format` turns structures into bytes and back
//! (and never panics on hostile input); `repo` ties a backend to the keys, the config, the index
//! and the cache; `ops` are the user-level operations; `cli` is the thin clap layer.

pub mod backend;
pub mod cache;
pub mod chunker;
pub mod cli;
pub mod compress;
pub mod crypto;
pub mod dumpkind;
pub mod error;
pub mod failpoint;
pub mod format;
pub mod id;
pub mod index;
pub mod lock;
pub mod metrics;
pub mod ops;
pub mod pack;
pub mod repo;
pub mod retention;
pub mod signals;
pub mod snapshot;
pub mod tree;

pub use error::{Error, Result};
