//! Storage backends: a dumb byte-level store of named objects. Everything above this trait is
//! backend-agnostic; encryption, caching and naming live in the layers above.
//!
//! Contract every backend keeps (the conformance tests check it):
//! - `put` is atomic: readers see the whole object under its name or nothing, even if the
//!   process dies mid-write. Objects are content-named, so `put` never replaces an existing
//!   object: if the name exists the call succeeds without writing.
//! - `list` returns every complete object of a kind with its size, never a partial one.
//! - `get_range` of a range past the end is an error, not a short read.
//! - `modified` reports when an object was stored, by the storage's clock where it has one;
//!   `None` means "not known", which callers must treat as "just now" (prune then keeps an
//!   unindexed pack rather than guess its age).

pub mod append_only;
pub mod counting;
pub mod fault;
pub mod local;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;

use crate::error::{ObjectKind, Result};

/// An object's name: the 64-hex id for content-named kinds, "config" for the config.
pub type Name = String;

pub trait Backend: Send + Sync {
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// Whether a repository (its config) exists here.
    fn exists(&self) -> Result<bool>;
    /// Prepare an empty location for `init` (create directories, etc.).
    fn create(&self) -> Result<()>;
    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>>;
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>>;
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Size of one object, or `ObjectNotFound`.
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64>;
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()>;
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()>;
    /// When the object was stored (a file's mtime, S3 `LastModified`), or `None` if this
    /// backend cannot tell; `ObjectNotFound` if it does not exist. One stat or HEAD per call:
    /// prune asks only about the few packs no index lists, so the listing stays (name, size).
    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        // Unknown by default: the safe answer for a backend that was not taught to tell.
        self.size(kind, name).map(|_| None)
    }
    /// How many puts may usefully run at once (latency-bound stores want several).
    fn upload_concurrency(&self) -> usize {
        1
    }
    /// How many ranged reads restore keeps in flight.
    fn read_concurrency(&self) -> usize {
        rayon::current_num_threads()
    }
}

/// Whether `name` has the shape of a WAL object name, `<cluster>/<file>`: a cluster of 1-32
/// of `[a-z0-9_-]`, a file of 1-80 of `[0-9A-Za-z._-]` not starting with a dot. Backends
/// check it so that no name can leave `wal/`; `pg` judges whether the file is really WAL.
pub fn valid_wal_name(name: &str) -> bool {
    let Some((cluster, file)) = name.split_once('/') else {
        return false;
    };
    (1..=32).contains(&cluster.len())
        && cluster
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
        && (1..=80).contains(&file.len())
        && !file.starts_with('.')
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Open the backend a `--repo` string names. A plain path (or `file://path`) is a local
/// directory; `s3://BUCKET/PREFIX` an S3 bucket (options from `DUMPVAULT_S3_*`); `memory:` an
/// in-process store for tests.
pub fn open(location: &str) -> Result<Box<dyn Backend>> {
    if let Some(rest) = location.strip_prefix("file://") {
        return Ok(Box::new(local::LocalBackend::new(rest)));
    }
    if location.starts_with("s3://") {
        #[cfg(feature = "s3")]
        return Ok(Box::new(s3::S3Backend::open(
            location,
            s3::S3Options::from_env()?,
        )?));
        #[cfg(not(feature = "s3"))]
        return Err(crate::Error::InvalidInput(
            "this dumpvault was built without the `s3` feature".into(),
        ));
    }
    if location == "memory:" {
        return Ok(Box::new(memory::MemoryBackend::default()));
    }
    Ok(Box::new(local::LocalBackend::new(location)))
}
