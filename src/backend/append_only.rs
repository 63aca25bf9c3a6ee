//! A wrapper that makes any backend append-only, for `--append-only` (`DUMPVAULT_APPEND_ONLY`):
//! what S3 credentials without `s3:DeleteObject` give on a bucket, for a local directory. A
//! database server that is broken into holds the backup password and whatever the backup can
//! do; under this wrapper it can add objects but not destroy the ones already stored.
//!
//! Rules (docs/operations.md, "Append-only credentials"; format-spec/12-security.md):
//! - `delete` outside `locks/` is refused with `Error::Backend` (exit 1), before the inner
//!   backend sees it. Locks are how concurrent processes coordinate; a backup must be able to
//!   refresh and remove its own.
//! - `put` of a name that already exists outside `locks/` never reaches the inner backend: it
//!   succeeds without writing, as the backend contract says for content-named objects. The
//!   inner backends already never replace an object; checking here as well means a bug below
//!   (or a store that ignores conditional writes) cannot turn a put into an overwrite.
//! - Reads, lists and new objects pass through unchanged, so backup, restore, verify (its
//!   records are new objects), fsck, snapshots and stats work as before.
//!
//! This is a safety net for honest mistakes and for a tool run with the wrong flags, not a
//! security boundary: whoever can run dumpvault without the flag, or write the directory
//! directly, is not stopped by it. The boundary is the storage's permissions (an IAM policy,
//! a separate Unix user with a write-only drop directory, a server-side append-only mode).

use std::sync::Arc;

use super::{Backend, Name};
use crate::error::{Error, ObjectKind, Result};

pub struct AppendOnly {
    inner: Arc<dyn Backend>,
}

impl AppendOnly {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        AppendOnly { inner }
    }
}

impl Backend for AppendOnly {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        self.inner.list(kind)
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.inner.get_range(kind, name, offset, len)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.inner.modified(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        if kind != ObjectKind::Lock {
            match self.inner.size(kind, name) {
                // Already stored: the put is a no-op by contract; never pass it down.
                Ok(_) => return Ok(()),
                Err(Error::ObjectNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.put(kind, name, data)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        if kind == ObjectKind::Lock {
            return self.inner.delete(kind, name);
        }
        Err(Error::Backend(format!(
            "append-only: refused to delete {kind} {name} in {}: this command needs delete \
             rights; run it without --append-only (and DUMPVAULT_APPEND_ONLY unset), with the \
             full credentials",
            self.inner.location()
        )))
    }
    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }
    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn append_only_refuses_deletes_and_overwrites_outside_locks() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let b = AppendOnly::new(Arc::clone(&inner));
        for kind in [
            ObjectKind::Pack,
            ObjectKind::Index,
            ObjectKind::Snapshot,
            ObjectKind::Key,
            ObjectKind::Verification,
        ] {
            b.put(kind, A, b"first").unwrap();
            // A second put under the same name leaves the first bytes.
            b.put(kind, A, b"other").unwrap();
            assert_eq!(inner.get(kind, A).unwrap(), b"first", "{kind}");
            let e = b.delete(kind, A).unwrap_err();
            assert!(matches!(e, Error::Backend(_)), "{kind}: {e}");
            assert!(e.to_string().contains("append-only"), "{e}");
            assert_eq!(e.exit_code(), crate::error::exit::ERROR);
            assert_eq!(inner.get(kind, A).unwrap(), b"first", "{kind}: kept");
        }
        // Locks are the exception: written, removed.
        b.put(ObjectKind::Lock, A, b"l").unwrap();
        b.delete(ObjectKind::Lock, A).unwrap();
        assert!(inner.list(ObjectKind::Lock).unwrap().is_empty());
    }
}
