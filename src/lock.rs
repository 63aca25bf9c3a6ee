//! Repository locks. Backups take a shared lock; operations that delete (prune, key removal of
//! data) take an exclusive one. A lock is an enveloped object in `locks/`, refreshed (rewritten
//! under a new name, old one deleted) every `REFRESH` by a background thread while held.
//!
//! A lock is stale, and ignored, when its `refreshed` time is older than `STALE`, or when it
//! was taken on this host by a process that no longer exists. `unlock` removes only stale
//! locks unless told otherwise, so clearing can never break a live process on another host
//! that keeps refreshing.
//!
//! Acquisition: list, check for conflicts, write ours, list again and re-check (so two
//! processes racing both see each other; at worst both back off).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::error::{Error, ObjectKind, Result};
use crate::format::{envelope, lock::LockInfo};
use crate::id::ObjectId;

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE: Duration = Duration::from_secs(30 * 60);

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

pub fn is_stale(l: &LockInfo) -> bool {
    let age = Utc::now().signed_duration_since(l.refreshed);
    if age.to_std().is_ok_and(|a| a > STALE) {
        return true;
    }
    l.host == hostname() && l.pid != std::process::id() && !pid_alive(l.pid)
}

/// Every lock in the repository with its parsed content (unreadable locks are reported as
/// errors in the list so `unlock` can still remove them).
pub fn list_locks(
    backend: &dyn Backend,
    key: &MasterKey,
) -> Result<Vec<(String, Result<LockInfo>)>> {
    let mut out = Vec::new();
    for (name, _) in backend.list(ObjectKind::Lock)? {
        // Not a lock object's name (rule N2: a stray or upper-case file): not a lock.
        let Some(id) = crate::id::parse_name(&name) else {
            continue;
        };
        let parsed = match backend.get(ObjectKind::Lock, &name) {
            // Rule N1, as for every other object: a lock is named by the BLAKE3 of its bytes
            // (a refresh writes a new object under a new name), so a mismatch is damage.
            Ok(bytes) if ObjectId::of(&bytes) != id => Err(Error::corrupt(
                ObjectKind::Lock,
                id,
                "content does not hash to its name",
            )),
            Ok(bytes) => envelope::open(key, ObjectKind::Lock, &id, &bytes)
                .and_then(|p| crate::format::lock::decode(&id, &p)),
            // Deleted between list and get: its holder released it.
            Err(Error::ObjectNotFound { .. }) => continue,
            Err(e) => Err(e),
        };
        out.push((name, parsed));
    }
    Ok(out)
}

fn conflicts(
    backend: &dyn Backend,
    key: &MasterKey,
    exclusive: bool,
    ours: Option<&str>,
) -> Result<()> {
    for (name, l) in list_locks(backend, key)? {
        if Some(name.as_str()) == ours {
            continue;
        }
        let l = match l {
            Ok(l) => l,
            // A lock we cannot read (damaged, or written by a newer dumpvault) might be live:
            // treat it as held. `unlock --all` removes it.
            Err(e) => {
                return Err(Error::LockHeld(format!(
                    "unreadable lock {} ({e}); if nothing is running, remove it with `dumpvault unlock --all`",
                    &name[..8]
                )))
            }
        };
        if is_stale(&l) {
            continue;
        }
        if exclusive || l.exclusive {
            return Err(Error::LockHeld(format!(
                "{} lock by {} (pid {}) on {} since {} ({}); if that process is gone, run `dumpvault unlock`",
                if l.exclusive { "exclusive" } else { "shared" },
                l.operation,
                l.pid,
                l.host,
                l.created.format("%Y-%m-%d %H:%M:%S UTC"),
                &name[..8]
            )));
        }
    }
    Ok(())
}

fn write_lock(backend: &dyn Backend, key: &MasterKey, info: &LockInfo) -> Result<String> {
    let bytes = envelope::seal(key, ObjectKind::Lock, &crate::format::lock::encode(info));
    let name = ObjectId::of(&bytes).to_hex();
    backend.put(ObjectKind::Lock, &name, &bytes)?;
    Ok(name)
}

pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    /// When the lock object was last written successfully.
    refreshed: Arc<Mutex<std::time::Instant>>,
    /// Dropping it wakes and stops the refresher.
    stop: Option<std::sync::mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// Whether our lock object is still in the repository. A backup checks this before it
    /// commits: if someone removed the lock (`unlock --all`) a prune may have run meanwhile.
    pub fn still_held(&self) -> Result<bool> {
        // If refreshing failed for so long that others may consider the lock stale, it is not
        // ours any more, whatever the storage says.
        let refreshed = *self.refreshed.lock().unwrap_or_else(|p| p.into_inner());
        if refreshed.elapsed() >= STALE - REFRESH {
            return Ok(false);
        }
        let name = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match self.backend.size(ObjectKind::Lock, &name) {
            Ok(_) => Ok(true),
            Err(Error::ObjectNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn acquire(
        backend: Arc<dyn Backend>,
        key: &MasterKey,
        exclusive: bool,
        operation: &str,
    ) -> Result<LockGuard> {
        conflicts(backend.as_ref(), key, exclusive, None)?;
        let now = Utc::now();
        let mut info = LockInfo {
            host: hostname(),
            pid: std::process::id(),
            exclusive,
            created: now,
            refreshed: now,
            operation: operation.to_string(),
        };
        let name = write_lock(backend.as_ref(), key, &info)?;
        crate::signals::register_lock(Arc::clone(&backend), &name);
        if let Err(e) = conflicts(backend.as_ref(), key, exclusive, Some(&name)) {
            let _ = backend.delete(ObjectKind::Lock, &name);
            crate::signals::unregister_lock(&name);
            return Err(e);
        }
        let name = Arc::new(Mutex::new(name));
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let refreshed = Arc::new(Mutex::new(std::time::Instant::now()));
        let refresher = {
            let (backend, name, stop, key) = (
                Arc::clone(&backend),
                Arc::clone(&name),
                stop_rx,
                key.clone(),
            );
            let refreshed = Arc::clone(&refreshed);
            std::thread::Builder::new()
                .name("lock-refresh".into())
                .spawn(move || {
                    // Sleeps until the next refresh, or until the guard drops the sender.
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stop.recv_timeout(REFRESH)
                    {
                        info.refreshed = Utc::now();
                        if let Ok(new) = write_lock(backend.as_ref(), &key, &info) {
                            *refreshed.lock().unwrap_or_else(|p| p.into_inner()) =
                                std::time::Instant::now();
                            let mut cur = name.lock().unwrap_or_else(|p| p.into_inner());
                            crate::signals::register_lock(Arc::clone(&backend), &new);
                            let _ = backend.delete(ObjectKind::Lock, &cur);
                            crate::signals::unregister_lock(&cur);
                            *cur = new;
                        }
                    }
                })
                .map_err(|e| Error::io("spawn lock refresher", e))?
        };
        Ok(LockGuard {
            backend,
            name,
            refreshed,
            stop: Some(stop),
            refresher: Some(refresher),
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = self.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = self.backend.delete(ObjectKind::Lock, &name);
        crate::signals::unregister_lock(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[test]
    fn shared_locks_coexist_exclusive_conflicts() {
        let b: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let k = MasterKey::generate();
        let s1 = LockGuard::acquire(Arc::clone(&b), &k, false, "backup").unwrap();
        let s2 = LockGuard::acquire(Arc::clone(&b), &k, false, "backup").unwrap();
        assert!(matches!(
            LockGuard::acquire(Arc::clone(&b), &k, true, "prune"),
            Err(Error::LockHeld(_))
        ));
        drop((s1, s2));
        assert!(
            b.list(ObjectKind::Lock).unwrap().is_empty(),
            "drop releases"
        );
        let x = LockGuard::acquire(Arc::clone(&b), &k, true, "prune").unwrap();
        assert!(LockGuard::acquire(Arc::clone(&b), &k, false, "backup").is_err());
        drop(x);
    }

    #[test]
    fn stale_locks_are_ignored() {
        let b: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let k = MasterKey::generate();
        let old = Utc::now() - chrono::Duration::hours(2);
        let dead = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            exclusive: true,
            created: old,
            refreshed: old,
            operation: "prune".into(),
        };
        write_lock(b.as_ref(), &k, &dead).unwrap();
        LockGuard::acquire(Arc::clone(&b), &k, false, "backup").unwrap();
    }

    /// Rule N1 applies to locks too: an intact, openable lock stored under a name that is not
    /// the BLAKE3 of its bytes is damage, hence unreadable, hence a conflict (L4).
    #[test]
    fn n1_lock_under_another_name_is_damage() {
        let b: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
        let k = MasterKey::generate();
        let now = Utc::now();
        let info = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            exclusive: false,
            created: now,
            refreshed: now,
            operation: "backup".into(),
        };
        let name = write_lock(b.as_ref(), &k, &info).unwrap();
        let listed = list_locks(b.as_ref(), &k).unwrap();
        assert!(matches!(&listed[..], [(n, Ok(_))] if *n == name));
        let bytes = b.get(ObjectKind::Lock, &name).unwrap();
        b.delete(ObjectKind::Lock, &name).unwrap();
        let wrong = ObjectId::of(b"another object").to_hex();
        b.put(ObjectKind::Lock, &wrong, &bytes).unwrap();
        let listed = list_locks(b.as_ref(), &k).unwrap();
        match &listed[..] {
            [(n, Err(e))] => {
                assert_eq!(*n, wrong);
                assert!(
                    e.is_corruption() && e.to_string().contains("hash to its name"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A shared lock would not conflict with a shared one; the damaged one does.
        assert!(matches!(
            LockGuard::acquire(Arc::clone(&b), &k, false, "backup"),
            Err(Error::LockHeld(m)) if m.contains("unreadable")
        ));
    }
}
