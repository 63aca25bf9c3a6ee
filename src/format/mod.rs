//! Byte layouts of everything dumpvault stores, mirroring `format-spec/` section by section.
//! All integers are little-endian. Decoders take untrusted bytes: they check every length
//! before using it, never allocate more than the input could justify, and never panic; a
//! failure is a `Corrupt` error naming the object.

pub mod bytes;
pub mod config;
pub mod envelope;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;
pub mod verification;
pub mod wal;

/// The repository format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
