//! The local metadata cache: a SQLite file per repository (named by repository id) holding the
//! decoded index entries and snapshot manifests already fetched. It only saves downloads:
//! the repository is the truth, so the cache is reconciled with a listing on every open
//! (index files or snapshots that vanished are dropped, new ones fetched) and a cache that
//! cannot be opened or read is deleted and rebuilt. Deleting it loses nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::format::pack::{BlobEntry, BlobKind, Compression};
use crate::id::{ChunkId, ObjectId};
use crate::index::Index;
use crate::snapshot::{Snapshot, SnapshotEntry};

/// A locally remembered verdict (the last fsck): when, whether it passed, its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEvent {
    pub time: i64,
    pub ok: bool,
    pub code: i32,
}

const SCHEMA_VERSION: i64 = 1;

pub struct Cache {
    conn: Connection,
    path: PathBuf,
}

fn ce(e: rusqlite::Error) -> Error {
    Error::Cache(e.to_string())
}

/// Where caches live: `$DUMPVAULT_CACHE_DIR`, else `$XDG_CACHE_HOME/dumpvault`, else
/// `~/.cache/dumpvault`.
pub fn default_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DUMPVAULT_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("dumpvault"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("dumpvault"))
}

impl Cache {
    /// Open (or create) the cache for `repo_id` in `dir`. A damaged file is replaced.
    pub fn open(dir: &Path, repo_id: &[u8; 32]) -> Result<Cache> {
        // The cache names every chunk and pack of the repository and backup trusts it for
        // deduplication (format-spec X10): directories it creates are 0700 and the database
        // 0600 (SQLite gives its -wal and -shm files the database's mode). An existing
        // directory keeps its mode.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| Error::io(format!("create cache dir {}", dir.display()), e))?;
        let path = dir.join(format!("{}.sqlite", hex::encode(repo_id)));
        match Self::open_file(&path) {
            Ok(c) => Ok(c),
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                Self::open_file(&path)
            }
        }
    }

    fn open_file(path: &Path) -> Result<Cache> {
        let conn = Connection::open(path).map_err(ce)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(format!("restrict cache file {}", path.display()), e))?;
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS index_files (id TEXT PRIMARY KEY);
             CREATE TABLE IF NOT EXISTS blobs (
                 index_file TEXT NOT NULL, pack BLOB NOT NULL, chunk BLOB NOT NULL,
                 kind INTEGER NOT NULL, comp INTEGER NOT NULL, raw_len INTEGER NOT NULL,
                 offset INTEGER NOT NULL, stored_len INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS blobs_by_file ON blobs(index_file);
             CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, json TEXT NOT NULL);",
        )
        .map_err(ce)?;
        let v: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(ce)?;
        match v {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(ce)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => return Err(Error::Cache(format!("unknown cache schema {other}"))),
        }
        Ok(Cache {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bring the cached index in line with `remote` (the index files the repository lists),
    /// fetching only the ones not cached yet. Returns how many were fetched.
    pub fn sync_index(
        &mut self,
        remote: &[ObjectId],
        fetch: impl Fn(&ObjectId) -> Result<IndexFile>,
    ) -> Result<usize> {
        let cached: HashSet<String> = {
            let mut st = self
                .conn
                .prepare("SELECT id FROM index_files")
                .map_err(ce)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0)).map_err(ce)?;
            rows.collect::<std::result::Result<_, _>>().map_err(ce)?
        };
        let remote_set: HashSet<String> = remote.iter().map(|i| i.to_hex()).collect();
        let tx = self.conn.transaction().map_err(ce)?;
        for gone in cached.difference(&remote_set) {
            tx.execute("DELETE FROM blobs WHERE index_file = ?1", [gone])
                .map_err(ce)?;
            tx.execute("DELETE FROM index_files WHERE id = ?1", [gone])
                .map_err(ce)?;
        }
        let mut fetched = 0;
        for id in remote {
            let hex = id.to_hex();
            if cached.contains(&hex) {
                continue;
            }
            let file = fetch(id)?;
            insert_index_file(&tx, &hex, &file)?;
            fetched += 1;
        }
        tx.commit().map_err(ce)?;
        Ok(fetched)
    }

    /// Record an index file this process just wrote, so the next run need not download it.
    pub fn add_index_file(&mut self, id: &ObjectId, file: &IndexFile) -> Result<()> {
        let tx = self.conn.transaction().map_err(ce)?;
        insert_index_file(&tx, &id.to_hex(), file)?;
        tx.commit().map_err(ce)
    }

    pub fn load_index(&self, index: &mut Index) -> Result<()> {
        let mut st = self
            .conn
            .prepare("SELECT pack, chunk, kind, comp, raw_len, offset, stored_len FROM blobs")
            .map_err(ce)?;
        let mut rows = st.query([]).map_err(ce)?;
        while let Some(r) = rows.next().map_err(ce)? {
            let bad = || Error::Cache("malformed row".into());
            let pack: Vec<u8> = r.get(0).map_err(ce)?;
            let chunk: Vec<u8> = r.get(1).map_err(ce)?;
            let e = BlobEntry {
                kind: BlobKind::from_u8(r.get(2).map_err(ce)?).ok_or_else(bad)?,
                compression: Compression::from_u8(r.get(3).map_err(ce)?).ok_or_else(bad)?,
                raw_len: r.get(4).map_err(ce)?,
                offset: r.get(5).map_err(ce)?,
                stored_len: r.get(6).map_err(ce)?,
                id: ChunkId::from_slice(&chunk).ok_or_else(bad)?,
            };
            index.add(ObjectId::from_slice(&pack).ok_or_else(bad)?, e);
        }
        Ok(())
    }

    /// Bring cached snapshots in line with `remote`, fetching the missing ones, and return all.
    /// `fetch` returning `Ok(None)` skips a snapshot (it is not cached, so it is tried again).
    pub fn sync_snapshots(
        &mut self,
        remote: &[ObjectId],
        fetch: impl Fn(&ObjectId) -> Result<Option<Snapshot>>,
    ) -> Result<Vec<SnapshotEntry>> {
        let remote_set: HashSet<String> = remote.iter().map(|i| i.to_hex()).collect();
        let cached: Vec<(String, String)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, json FROM snapshots")
                .map_err(ce)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(ce)?;
            rows.collect::<std::result::Result<_, _>>().map_err(ce)?
        };
        let tx = self.conn.transaction().map_err(ce)?;
        let mut out = Vec::new();
        let mut have = HashSet::new();
        for (id, json) in cached {
            if !remote_set.contains(&id) {
                tx.execute("DELETE FROM snapshots WHERE id = ?1", [&id])
                    .map_err(ce)?;
                continue;
            }
            match serde_json::from_str::<Snapshot>(&json) {
                Ok(s) => {
                    have.insert(id.clone());
                    out.push(SnapshotEntry {
                        id: id.parse()?,
                        snapshot: s,
                    });
                }
                Err(_) => {
                    tx.execute("DELETE FROM snapshots WHERE id = ?1", [&id])
                        .map_err(ce)?;
                }
            }
        }
        for id in remote {
            let hex = id.to_hex();
            if have.contains(&hex) {
                continue;
            }
            let Some(s) = fetch(id)? else { continue };
            let json = serde_json::to_string(&s).map_err(|e| Error::Cache(e.to_string()))?;
            tx.execute(
                "INSERT OR REPLACE INTO snapshots(id, json) VALUES (?1, ?2)",
                params![hex, json],
            )
            .map_err(ce)?;
            out.push(SnapshotEntry {
                id: *id,
                snapshot: s,
            });
        }
        tx.commit().map_err(ce)?;
        Ok(out)
    }
}

/// Local knowledge the repository does not hold (for `--metrics-file`): the last verdict of
/// `fsck` run from this machine, and per series the last backup attempt, the last failure and
/// the last producer exit status. The table is created on first use, so caches made by older
/// versions gain it without a schema change; losing it loses only those metrics.
impl Cache {
    fn events_table(&self) -> Result<()> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS events (
                     kind TEXT PRIMARY KEY, time INTEGER NOT NULL,
                     ok INTEGER NOT NULL, code INTEGER NOT NULL);",
            )
            .map_err(ce)
    }

    /// Remember the latest `kind` event (e.g. "fsck"), replacing the previous one.
    pub fn record_event(&self, kind: &str, e: LocalEvent) -> Result<()> {
        self.events_table()?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO events(kind, time, ok, code) VALUES (?1, ?2, ?3, ?4)",
                params![kind, e.time, e.ok as i64, e.code],
            )
            .map_err(ce)?;
        Ok(())
    }

    /// Every event whose kind starts with `prefix`, with its kind, in kind order.
    pub fn events_with_prefix(&self, prefix: &str) -> Result<Vec<(String, LocalEvent)>> {
        self.events_table()?;
        let mut st = self
            .conn
            .prepare("SELECT kind, time, ok, code FROM events WHERE substr(kind, 1, ?2) = ?1 ORDER BY kind")
            .map_err(ce)?;
        let rows = st
            .query_map(params![prefix, prefix.len() as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    LocalEvent {
                        time: r.get(1)?,
                        ok: r.get::<_, i64>(2)? != 0,
                        code: r.get(3)?,
                    },
                ))
            })
            .map_err(ce)?;
        rows.collect::<std::result::Result<_, _>>().map_err(ce)
    }

    pub fn event(&self, kind: &str) -> Result<Option<LocalEvent>> {
        self.events_table()?;
        self.conn
            .query_row(
                "SELECT time, ok, code FROM events WHERE kind = ?1",
                [kind],
                |r| {
                    Ok(LocalEvent {
                        time: r.get(0)?,
                        ok: r.get::<_, i64>(1)? != 0,
                        code: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(ce)
    }
}

fn insert_index_file(tx: &rusqlite::Transaction<'_>, hex: &str, file: &IndexFile) -> Result<()> {
    tx.execute("INSERT OR IGNORE INTO index_files(id) VALUES (?1)", [hex])
        .map_err(ce)?;
    let mut st = tx
        .prepare_cached(
            "INSERT INTO blobs(index_file, pack, chunk, kind, comp, raw_len, offset, stored_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(ce)?;
    for p in &file.packs {
        for e in &p.entries {
            st.execute(params![
                hex,
                &p.id.0[..],
                &e.id.0[..],
                e.kind.to_u8(),
                e.compression.to_u8(),
                e.raw_len,
                e.offset,
                e.stored_len
            ])
            .map_err(ce)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// X10 (1): only the owner can read or write the cache.
    #[cfg(unix)]
    #[test]
    fn cache_dir_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("new").join("cache");
        let c = Cache::open(&dir, &[7; 32]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&t.path().join("new")), 0o700);
        assert_eq!(mode(c.path()), 0o600);
        let wal = c.path().with_extension("sqlite-wal");
        assert!(wal.exists(), "WAL mode creates the -wal file");
        assert_eq!(mode(&wal), 0o600);
    }
}
