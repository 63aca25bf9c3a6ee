//! The local metadata cache: a SQLite file per repository (named by repository id) holding the
//! decoded index entries and snapshot manifests already fetched. It only saves downloads:
//! the repository is the truth, so the cache is reconciled with a listing on every open
//! (index files or snapshots that vanished are dropped, new ones fetched) and a cache that
//! cannot be opened or read is deleted and rebuilt. Deleting it loses nothing.
//!
//! Whoever can write the file must not be able to make `backup` skip uploading a chunk
//! (format-spec X10). So the cached rows of each index file carry a keyed BLAKE3 MAC under
//! `MasterKey::cache_rows_key` (derived from the data key) over their canonical encoding
//! ([`rows_mac`]): the index file's ID, its pack list, then every row in insertion (rowid)
//! order. [`Cache::load_index`] checks every MAC and refuses a row of an index file the cache
//! does not list; the caller then rebuilds the cache from the repository. A row can therefore
//! only be one that an authenticated index file of this repository contains. Which index files
//! still exist is the repository listing's word, not the cache's (`sync_index`).
//!
//! Schema 2 (schema 1 had no MACs; such a cache is deleted and rebuilt on open).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::crypto::MasterKey;
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

const SCHEMA_VERSION: i64 = 2;

pub struct Cache {
    conn: Connection,
    path: PathBuf,
    /// `MasterKey::cache_rows_key`; without it (`open`), index rows can be neither written nor
    /// trusted, and only the local events are usable.
    rows_key: Option<zeroize::Zeroizing<[u8; 32]>>,
}

/// The MAC of one cached index file's rows, fed in rowid order (format-spec X10):
/// keyed BLAKE3 over `index file id (32) ‖ pack count u32 ‖ pack ids (32 each) ‖ rows ‖ row
/// count u64`, each row `pack id (32) ‖ chunk id (32) ‖ kind u8 ‖ compression u8 ‖ raw_len u32
/// ‖ offset u32 ‖ stored_len u32`, integers little-endian. Rows have a fixed size, so the
/// encoding is unambiguous.
struct RowsMac {
    h: blake3::Hasher,
    rows: u64,
}

impl RowsMac {
    fn new(key: &[u8; 32], file: &ObjectId, packs: &[u8]) -> RowsMac {
        let mut h = blake3::Hasher::new_keyed(key);
        h.update(&file.0);
        h.update(&((packs.len() / 32) as u32).to_le_bytes());
        h.update(packs);
        RowsMac { h, rows: 0 }
    }

    fn row(&mut self, pack: &[u8], e: &BlobEntry) {
        let mut b = [0u8; 78];
        b[..32].copy_from_slice(pack);
        b[32..64].copy_from_slice(&e.id.0);
        b[64] = e.kind.to_u8();
        b[65] = e.compression.to_u8();
        b[66..70].copy_from_slice(&e.raw_len.to_le_bytes());
        b[70..74].copy_from_slice(&e.offset.to_le_bytes());
        b[74..78].copy_from_slice(&e.stored_len.to_le_bytes());
        self.h.update(&b);
        self.rows += 1;
    }

    fn finish(mut self) -> blake3::Hash {
        self.h.update(&self.rows.to_le_bytes());
        self.h.finalize()
    }
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
    /// Open (or create) the cache of the repository `repo_id` whose key is `key`, for index
    /// and snapshot metadata. A damaged file is replaced.
    pub fn open_keyed(dir: &Path, repo_id: &[u8; 32], key: &MasterKey) -> Result<Cache> {
        let mut c = Self::open(dir, repo_id)?;
        c.rows_key = Some(key.cache_rows_key());
        Ok(c)
    }

    /// Open (or create) the cache for `repo_id` in `dir`, without the key: only the local
    /// events can be used. A damaged file is replaced.
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
             CREATE TABLE IF NOT EXISTS index_files (
                 id TEXT PRIMARY KEY, packs BLOB NOT NULL, mac BLOB NOT NULL);
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
            rows_key: None,
        })
    }

    /// Delete the file and start an empty one (after rows failed their MAC): a fresh file
    /// also drops anything else a writer may have put in it (triggers, views). The local
    /// events go with it.
    pub fn rebuild(&mut self) -> Result<()> {
        let old = std::mem::replace(&mut self.conn, Connection::open_in_memory().map_err(ce)?);
        drop(old);
        for ext in ["sqlite", "sqlite-wal", "sqlite-shm"] {
            let p = self.path.with_extension(ext);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("remove cache file {}", p.display()), e))
                }
                _ => {}
            }
        }
        self.conn = Self::open_file(&self.path)?.conn;
        Ok(())
    }

    fn rows_key(&self) -> Result<&[u8; 32]> {
        self.rows_key
            .as_deref()
            .ok_or_else(|| Error::Cache("opened without the key: index rows unusable".into()))
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
        let key = *self.rows_key()?;
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
            insert_index_file(&tx, &key, id, &file)?;
            fetched += 1;
        }
        tx.commit().map_err(ce)?;
        Ok(fetched)
    }

    /// Record an index file this process just wrote, so the next run need not download it.
    pub fn add_index_file(&mut self, id: &ObjectId, file: &IndexFile) -> Result<()> {
        let key = *self.rows_key()?;
        let tx = self.conn.transaction().map_err(ce)?;
        insert_index_file(&tx, &key, id, file)?;
        tx.commit().map_err(ce)
    }

    /// Add every cached row to `index`, each with the index file it belongs to, checking
    /// every index file's MAC. An error (a MAC mismatch, a row of an index file the cache does
    /// not list, a malformed value) means the cache cannot be trusted: `index` then holds
    /// rows that must not be used, and the caller rebuilds the cache.
    pub fn load_index(&self, index: &mut Index) -> Result<()> {
        let key = self.rows_key()?;
        let untrusted = |why: &str| Error::Cache(format!("cache rows fail verification: {why}"));
        struct File {
            n: u32,
            mac: Vec<u8>,
            check: RowsMac,
        }
        let mut files: Vec<File> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        {
            let mut st = self
                .conn
                .prepare("SELECT id, packs, mac FROM index_files")
                .map_err(ce)?;
            let mut rows = st.query([]).map_err(ce)?;
            while let Some(r) = rows.next().map_err(ce)? {
                let name: String = r.get(0).map_err(ce)?;
                let packs: Vec<u8> = r.get(1).map_err(ce)?;
                let id: ObjectId = name
                    .parse()
                    .map_err(|_| untrusted("an index file name is not an id"))?;
                if !packs.len().is_multiple_of(32) {
                    return Err(untrusted("a pack list is not a list of ids"));
                }
                let ids: Vec<ObjectId> = packs
                    .chunks_exact(32)
                    .filter_map(ObjectId::from_slice)
                    .collect();
                let n = index.begin_file(id, &ids);
                by_name.insert(name, files.len());
                files.push(File {
                    n,
                    mac: r.get(2).map_err(ce)?,
                    check: RowsMac::new(key, &id, &packs),
                });
            }
        }
        // Rows of one index file were inserted together, so a scan in rowid order (the table's
        // own order, no sort) meets them in the order their MAC was computed in.
        let mut st = self
            .conn
            .prepare(
                "SELECT index_file, pack, chunk, kind, comp, raw_len, offset, stored_len
                 FROM blobs ORDER BY rowid",
            )
            .map_err(ce)?;
        let mut rows = st.query([]).map_err(ce)?;
        let mut last: Option<(String, usize)> = None;
        while let Some(r) = rows.next().map_err(ce)? {
            let bad = || untrusted("malformed row");
            let name = r.get_ref(0).map_err(ce)?.as_str().map_err(|_| bad())?;
            let f = match &last {
                Some((n, f)) if n == name => *f,
                _ => {
                    let f = *by_name.get(name).ok_or_else(|| {
                        untrusted("a row of an index file the cache does not list")
                    })?;
                    last = Some((name.to_string(), f));
                    f
                }
            };
            let pack = r.get_ref(1).map_err(ce)?.as_blob().map_err(|_| bad())?;
            let pack_id = ObjectId::from_slice(pack).ok_or_else(bad)?;
            let chunk = r.get_ref(2).map_err(ce)?.as_blob().map_err(|_| bad())?;
            let e = BlobEntry {
                kind: BlobKind::from_u8(r.get(3).map_err(|_| bad())?).ok_or_else(bad)?,
                compression: Compression::from_u8(r.get(4).map_err(|_| bad())?).ok_or_else(bad)?,
                raw_len: r.get(5).map_err(|_| bad())?,
                offset: r.get(6).map_err(|_| bad())?,
                stored_len: r.get(7).map_err(|_| bad())?,
                id: ChunkId::from_slice(chunk).ok_or_else(bad)?,
            };
            let file = &mut files[f];
            file.check.row(pack, &e);
            index.add_from(file.n, pack_id, e);
        }
        for f in files {
            // blake3::Hash compares in constant time.
            let ok = <[u8; 32]>::try_from(f.mac.as_slice())
                .map(|m| f.check.finish() == m)
                .unwrap_or(false);
            if !ok {
                return Err(untrusted("an index file's rows do not match their MAC"));
            }
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

/// Replace the cached rows of index file `id` by `file`'s, with their MAC.
fn insert_index_file(
    tx: &rusqlite::Transaction<'_>,
    key: &[u8; 32],
    id: &ObjectId,
    file: &IndexFile,
) -> Result<()> {
    let hex = id.to_hex();
    // Rows left from an earlier insert of the same file would break its MAC.
    tx.execute("DELETE FROM blobs WHERE index_file = ?1", [&hex])
        .map_err(ce)?;
    let packs: Vec<u8> = file.packs.iter().flat_map(|p| p.id.0).collect();
    let mut mac = RowsMac::new(key, id, &packs);
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
            mac.row(&p.id.0, e);
        }
    }
    tx.execute(
        "INSERT OR REPLACE INTO index_files(id, packs, mac) VALUES (?1, ?2, ?3)",
        params![hex, packs, &mac.finish().as_bytes()[..]],
    )
    .map_err(ce)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexPack;

    fn key() -> MasterKey {
        MasterKey::from_bytes(&[5; crate::crypto::MASTER_KEY_LEN]).unwrap()
    }

    /// `files` index files of `per_file` entries each (100 per pack), distinct chunk ids.
    fn files(files: u32, per_file: u32) -> Vec<(ObjectId, IndexFile)> {
        (0..files)
            .map(|f| {
                let packs = (0..per_file / 100)
                    .map(|p| {
                        let mut pid = [0u8; 32];
                        pid[..8].copy_from_slice(&((f as u64) << 32 | p as u64).to_le_bytes());
                        IndexPack {
                            id: ObjectId(pid),
                            len: 100 * 1000,
                            entries: (0..100u32)
                                .map(|e| {
                                    let mut c = [1u8; 32];
                                    c[..4].copy_from_slice(&f.to_le_bytes());
                                    c[4..8].copy_from_slice(&p.to_le_bytes());
                                    c[8..12].copy_from_slice(&e.to_le_bytes());
                                    BlobEntry {
                                        kind: BlobKind::Data,
                                        compression: Compression::Zstd,
                                        raw_len: 900,
                                        offset: e * 1000,
                                        stored_len: 1000,
                                        id: ChunkId(c),
                                    }
                                })
                                .collect(),
                        }
                    })
                    .collect();
                let mut id = [2u8; 32];
                id[..4].copy_from_slice(&f.to_le_bytes());
                (
                    ObjectId(id),
                    IndexFile {
                        superseded: vec![],
                        packs,
                    },
                )
            })
            .collect()
    }

    fn synced(dir: &Path, all: &[(ObjectId, IndexFile)]) -> Cache {
        let mut c = Cache::open_keyed(dir, &[7; 32], &key()).unwrap();
        let ids: Vec<ObjectId> = all.iter().map(|(i, _)| *i).collect();
        c.sync_index(&ids, |id| {
            Ok(all.iter().find(|(i, _)| i == id).unwrap().1.clone())
        })
        .unwrap();
        c
    }

    /// X10 (3): rows load with their index file, and any edit of a row, a moved row, or a key
    /// other than the one that wrote them fails the load.
    #[test]
    fn cache_rows_are_authenticated() {
        let t = tempfile::tempdir().unwrap();
        let all = files(3, 200);
        let c = synced(t.path(), &all);
        let mut ix = Index::default();
        c.load_index(&mut ix).unwrap();
        assert_eq!(ix.len(), 600);
        let first = all[0].1.packs[0].entries[0].id;
        assert!(ix.location(&first).is_some());
        let tamper = |sql: &str| {
            let c = synced(t.path(), &all);
            c.conn.execute_batch(sql).unwrap();
            let mut ix = Index::default();
            let e = c.load_index(&mut ix).unwrap_err();
            assert!(e.to_string().contains("verification"), "{sql}: {e}");
            drop(c);
            let mut c = Cache::open_keyed(t.path(), &[7; 32], &key()).unwrap();
            c.rebuild().unwrap();
        };
        tamper("UPDATE blobs SET offset = offset + 1 WHERE rowid = 5");
        tamper(
            "UPDATE blobs SET pack = (SELECT pack FROM blobs WHERE rowid = 500) WHERE rowid = 5",
        );
        tamper("UPDATE blobs SET index_file = (SELECT id FROM index_files LIMIT 1 OFFSET 1) WHERE rowid = 5");
        tamper("INSERT INTO blobs SELECT index_file, pack, x'00', kind, comp, raw_len, offset, stored_len FROM blobs WHERE rowid = 1");
        tamper("DELETE FROM blobs WHERE rowid = 7");
        tamper("UPDATE blobs SET index_file = 'ff' WHERE rowid = 9");
        tamper("UPDATE blobs SET raw_len = 'x' WHERE rowid = 9");
        tamper("UPDATE index_files SET packs = x'00'");
        // A cache written under another key.
        let c = synced(t.path(), &all);
        drop(c);
        let other = MasterKey::from_bytes(&[6; crate::crypto::MASTER_KEY_LEN]).unwrap();
        let c = Cache::open_keyed(t.path(), &[7; 32], &other).unwrap();
        assert!(c.load_index(&mut Index::default()).is_err());
        // Without the key, index rows are not usable at all.
        let c = Cache::open(t.path(), &[7; 32]).unwrap();
        assert!(c.load_index(&mut Index::default()).is_err());
    }

    /// The cost of opening the index through the cache: 200 000 entries in 20 index files,
    /// already cached (`cargo test --lib cache_open_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn cache_open_cost() {
        let t = tempfile::tempdir().unwrap();
        let all = files(20, 10_000);
        drop(synced(t.path(), &all));
        let ids: Vec<ObjectId> = all.iter().map(|(i, _)| *i).collect();
        let mut times = Vec::new();
        for _ in 0..7 {
            let t0 = std::time::Instant::now();
            let mut c = Cache::open_keyed(t.path(), &[7; 32], &key()).unwrap();
            c.sync_index(&ids, |_| unreachable!("all cached")).unwrap();
            let mut ix = Index::default();
            c.load_index(&mut ix).unwrap();
            assert_eq!(ix.len(), 200_000);
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "cache open + load of 200k entries: median {:.1} ms, min {:.1} ms",
            times[3], times[0]
        );
    }

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
