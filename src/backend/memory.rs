//! In-process backend for tests: a map behind a mutex, with the same contract as `local`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::{Backend, Name};
use crate::error::{Error, ObjectKind, Result};

#[derive(Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<(ObjectKind, Name), Vec<u8>>>,
    /// When each object was stored (kept apart so `tamper` and the map stay simple).
    stored_at: Mutex<BTreeMap<(ObjectKind, Name), SystemTime>>,
}

impl MemoryBackend {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(ObjectKind, Name), Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Test hook: pretend an object was stored at `t` (to age it past prune's margin).
    pub fn set_modified(&self, kind: ObjectKind, name: &str, t: SystemTime) {
        if let Some(v) = self
            .stored_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(kind, name.to_string()))
        {
            *v = t;
        }
    }

    /// Test hook: replace an object's bytes in place (to simulate damage).
    pub fn tamper(&self, kind: ObjectKind, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(v) = self.map().get_mut(&(kind, name.to_string())) {
            f(v)
        }
    }
}

fn not_found(kind: ObjectKind, name: &str) -> Error {
    Error::ObjectNotFound {
        kind,
        id: name.to_string(),
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".into()
    }
    fn exists(&self) -> Result<bool> {
        Ok(self
            .map()
            .contains_key(&(ObjectKind::Config, "config".into())))
    }
    fn create(&self) -> Result<()> {
        Ok(())
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        Ok(self
            .map()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), v)| (n.clone(), v.len() as u64))
            .collect())
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.map()
            .get(&(kind, name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(kind, name))
    }
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let m = self.map();
        let v = m
            .get(&(kind, name.to_string()))
            .ok_or_else(|| not_found(kind, name))?;
        let end = offset
            .checked_add(len)
            .filter(|e| *e <= v.len() as u64)
            .ok_or_else(|| Error::corrupt(kind, name, "range beyond the end of the object"))?;
        Ok(v[offset as usize..end as usize].to_vec())
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        self.map()
            .get(&(kind, name.to_string()))
            .map(|v| v.len() as u64)
            .ok_or_else(|| not_found(kind, name))
    }
    fn modified(&self, kind: ObjectKind, name: &str) -> Result<Option<SystemTime>> {
        self.size(kind, name)?;
        Ok(self
            .stored_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, name.to_string()))
            .copied())
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        let mut m = self.map();
        if let std::collections::btree_map::Entry::Vacant(e) = m.entry((kind, name.to_string())) {
            e.insert(data.to_vec());
            // Under the objects lock, so the time and the object appear together.
            self.stored_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((kind, name.to_string()), SystemTime::now());
        }
        Ok(())
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        let mut m = self.map();
        self.stored_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind, name.to_string()));
        m.remove(&(kind, name.to_string()))
            .map(|_| ())
            .ok_or_else(|| not_found(kind, name))
    }
}
