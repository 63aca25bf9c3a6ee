//! A wrapper that counts requests by kind and bytes moved, for every backend, so a user can
//! price a night in S3 (`backup --json`, `stats`). Counts are of calls to the backend; an S3
//! backend's internal retries are not counted twice.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Backend, Name};
use crate::error::{ObjectKind, Result};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestCounts {
    pub put: u64,
    pub get: u64,
    pub head: u64,
    pub list: u64,
    pub delete: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Default)]
struct Counters {
    put: AtomicU64,
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    delete: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

pub struct Counting {
    inner: Arc<dyn Backend>,
    c: Counters,
}

impl Counting {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Counting {
            inner,
            c: Counters::default(),
        }
    }

    pub fn counts(&self) -> RequestCounts {
        RequestCounts {
            put: self.c.put.load(Relaxed),
            get: self.c.get.load(Relaxed),
            head: self.c.head.load(Relaxed),
            list: self.c.list.load(Relaxed),
            delete: self.c.delete.load(Relaxed),
            bytes_sent: self.c.sent.load(Relaxed),
            bytes_received: self.c.received.load(Relaxed),
        }
    }
}

impl RequestCounts {
    /// Counts accumulated between two readings.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts {
            put: self.put - earlier.put,
            get: self.get - earlier.get,
            head: self.head - earlier.head,
            list: self.list - earlier.list,
            delete: self.delete - earlier.delete,
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
        }
    }
}

impl Backend for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn exists(&self) -> Result<bool> {
        self.c.head.fetch_add(1, Relaxed);
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        self.c.list.fetch_add(1, Relaxed);
        self.inner.list(kind)
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.c.get.fetch_add(1, Relaxed);
        let v = self.inner.get(kind, name)?;
        self.c.received.fetch_add(v.len() as u64, Relaxed);
        Ok(v)
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.c.get.fetch_add(1, Relaxed);
        let v = self.inner.get_range(kind, name, offset, len)?;
        self.c.received.fetch_add(v.len() as u64, Relaxed);
        Ok(v)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        self.c.head.fetch_add(1, Relaxed);
        self.inner.size(kind, name)
    }
    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.c.head.fetch_add(1, Relaxed);
        self.inner.modified(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.c.put.fetch_add(1, Relaxed);
        self.c.sent.fetch_add(data.len() as u64, Relaxed);
        self.inner.put(kind, name, data)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.c.delete.fetch_add(1, Relaxed);
        self.inner.delete(kind, name)
    }
    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }
    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }
}
