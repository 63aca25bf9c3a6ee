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
//! Layers, bottom to top. A module may use only modules in its own layer or below it; nothing
//! points up, and there is no import cycle (a new file goes into the lowest layer that holds
//! everything it needs):
//!
//! 1. `error`, `failpoint`, `id`, `crypto`: the error type and exit codes, test failpoints,
//!    newtype IDs and object-name parsing, keys and AEAD.
//! 2. `backend`, `signals`: storage that moves opaque named objects (local, S3, memory; and
//!    wrappers for fault injection, request counting and append-only use); the interruption
//!    flag and the cleanup of lock objects.
//! 3. `chunker`, `dumpkind`, `pg`, `snapshot`: cutting a stream; recognising what kind of dump
//!    it is; PostgreSQL's WAL names, backup labels and chain arithmetic; the snapshot model
//!    (what a manifest says).
//! 4. `format`: turns structures into bytes and back, and never panics on hostile input.
//! 5. `compress`, `pack`, `tree`, `index`: the content structures built on those layouts.
//! 6. `cache`, `lock`: the local SQLite cache of index and snapshot metadata, repository locks.
//! 7. `repo`: ties a backend to the keys, the config, the index and the cache.
//! 8. `retention`, `ops`, `metrics`: the pure GFS policy, the user-level operations, and the
//!    Prometheus rendering of their results.
//! 9. `cli`: the thin clap layer, one file per command.

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
pub mod pg;
pub mod repo;
pub mod retention;
pub mod signals;
pub mod snapshot;
pub mod tree;

pub use error::{Error, Result};
