//! The local metadata cache of one repository (named by repository id): a SQLite file for
//! snapshot manifests, local events and the bookkeeping of the index, and a directory of
//! index run files ([`crate::index::run`]) that hold the index entries themselves, sorted, so
//! that lookups read the disk instead of memory (issue 14; format-spec/14-cache.md). It only
//! saves downloads and memory: the repository is the truth, so the cache is reconciled with a
//! listing on every open (index files that vanished are dropped, new ones fetched), and a
//! cache that cannot be opened or read is deleted and rebuilt. Deleting it loses nothing.
//!
//! Whoever can write the cache must not be able to make `backup` skip uploading a chunk
//! (format-spec X10). So every run entry carries a MAC under `MasterKey::cache_table_key` over
//! the chunk ID, the full pack and index-file IDs and the location
//! ([`crate::index::table::entry_mac`]); an entry is only ever built from an authenticated
//! index file of this repository, and a lookup skips an entry whose MAC fails (the table is
//! then tainted and rebuilt). Which index files still exist is the repository listing's word,
//! not the cache's (`load_table`).
//!
//! Runs are written whole and synced before their name is recorded; they are never modified.
//! Every change of the index bookkeeping runs in one `BEGIN IMMEDIATE` transaction, so two
//! processes sharing a cache take turns. Runs are merged (a k-way merge, bounded memory) so
//! that there are few of them: the newest runs, back to the first older run that holds more
//! than four times their sum, and enough of them to leave at most [`MAX_RUNS`]; all of them at
//! once when more than a third of their entries are dead (their index files were deleted by a
//! prune). A merge drops dead entries.
//!
//! Schema 3 (schema 2 kept index rows in SQLite, ~230 bytes an entry; such a cache is deleted
//! and rebuilt on open).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::id::{ObjectId, PackId};
use crate::index::run::{self, Run, RunEntry};
use crate::index::table::{entry_mac, Table};
use crate::snapshot::{Snapshot, SnapshotEntry};

/// A locally remembered verdict (the last fsck): when, whether it passed, its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalEvent {
    pub time: i64,
    pub ok: bool,
    pub code: i32,
}

const SCHEMA_VERSION: i64 = 3;
/// At most this many runs remain after a merge, whatever their sizes.
pub const MAX_RUNS: usize = 8;
/// Entries sorted in memory before they are written as one run (64 bytes each: 16 MiB).
const RUN_BUFFER: usize = 256 * 1024;

pub struct Cache {
    conn: Connection,
    path: PathBuf,
    /// The directory of run files, `<repo id>.runs` beside the SQLite file.
    runs_dir: PathBuf,
    /// `MasterKey::cache_table_key`; without it (`open`), index entries can be neither written
    /// nor trusted, and only the local events are usable.
    table_key: Option<zeroize::Zeroizing<[u8; 32]>>,
}

/// How a cache error caused by another process holding the cache too long begins: the cache
/// is fine, so the caller must not rebuild it (only do without it this time).
pub const BUSY: &str = "busy";

fn ce(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked) => {
            Error::Cache(format!("{BUSY}: another process holds the cache ({e})"))
        }
        _ => Error::Cache(e.to_string()),
    }
}

/// Whether `e` says the cache was busy (see [`BUSY`]).
pub fn is_busy(e: &Error) -> bool {
    matches!(e, Error::Cache(m) if m.starts_with(BUSY))
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
        c.table_key = Some(key.cache_table_key());
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
        // Another process syncing the same cache holds the write lock while it downloads new
        // index files: wait for it rather than fail.
        conn.busy_timeout(std::time::Duration::from_secs(600))
            .map_err(ce)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
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
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS tfiles (
                         num INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL,
                         entries INTEGER NOT NULL);
                     CREATE TABLE IF NOT EXISTS tpacks (
                         num INTEGER PRIMARY KEY, id BLOB UNIQUE NOT NULL);
                     CREATE TABLE IF NOT EXISTS truns (
                         name TEXT PRIMARY KEY, seq INTEGER NOT NULL, entries INTEGER NOT NULL);
                     CREATE TABLE IF NOT EXISTS snapshots (id TEXT PRIMARY KEY, json TEXT NOT NULL);",
                )
                .map_err(ce)?;
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(ce)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => return Err(Error::Cache(format!("unknown cache schema {other}"))),
        }
        let runs_dir = path.with_extension("runs");
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&runs_dir)
            .map_err(|e| Error::io(format!("create {}", runs_dir.display()), e))?;
        Ok(Cache {
            conn,
            path: path.to_path_buf(),
            runs_dir,
            table_key: None,
        })
    }

    /// Delete the files and start an empty cache (after entries failed their MAC): a fresh
    /// file also drops anything else a writer may have put in it (triggers, views). The local
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
        match std::fs::remove_dir_all(&self.runs_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("remove {}", self.runs_dir.display()), e))
            }
            _ => {}
        }
        self.conn = Self::open_file(&self.path)?.conn;
        Ok(())
    }

    fn table_key(&self) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        self.table_key
            .clone()
            .ok_or_else(|| Error::Cache("opened without the key: index entries unusable".into()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn runs_dir(&self) -> &Path {
        &self.runs_dir
    }

    /// Run `f` inside one `BEGIN IMMEDIATE` transaction with the table key and the runs
    /// directory; `f` returns its result and the run files it replaced, which are deleted only
    /// once the transaction has committed (a crash in between leaves orphans, which the next
    /// sync removes).
    fn write_tx<T>(
        &mut self,
        f: impl FnOnce(
            &rusqlite::Transaction<'_>,
            zeroize::Zeroizing<[u8; 32]>,
            &Path,
        ) -> Result<(T, Vec<PathBuf>)>,
    ) -> Result<T> {
        let key = self.table_key()?;
        let runs_dir = self.runs_dir.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(ce)?;
        let (out, unlink) = f(&tx, key, &runs_dir)?;
        tx.commit().map_err(ce)?;
        for p in unlink {
            let _ = std::fs::remove_file(p);
        }
        Ok(out)
    }

    /// Bring the cached index in line with `remote` (the index files the repository lists),
    /// fetching only the ones not cached yet, and open it. Returns the table and how many index
    /// files were fetched.
    pub fn load_table(
        &mut self,
        remote: &[ObjectId],
        fetch: impl Fn(&ObjectId) -> Result<IndexFile>,
    ) -> Result<(Table, usize)> {
        self.write_tx(|tx, key, runs_dir| {
            let mut unlink = remove_orphan_runs(tx, runs_dir)?;
            let cached: HashMap<String, u32> = {
                let mut st = tx.prepare("SELECT id, num FROM tfiles").map_err(ce)?;
                let rows = st
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
                    .map_err(ce)?;
                rows.collect::<std::result::Result<_, _>>().map_err(ce)?
            };
            let remote_set: HashSet<String> = remote.iter().map(|i| i.to_hex()).collect();
            for gone in cached.keys().filter(|k| !remote_set.contains(*k)) {
                // Its entries stay in the runs, dead, until a merge drops them.
                tx.execute("DELETE FROM tfiles WHERE id = ?1", [gone])
                    .map_err(ce)?;
            }
            let mut w = RunWriter::new(tx, &key, runs_dir)?;
            let mut fetched = 0;
            for id in remote {
                if cached.contains_key(&id.to_hex()) {
                    continue;
                }
                let file = fetch(id)?;
                w.add_file(id, &file)?;
                fetched += 1;
            }
            w.finish()?;
            unlink.extend(compact(tx, runs_dir)?);
            let table = open_table(tx, key, runs_dir, Vec::new())?;
            Ok(((table, fetched), unlink))
        })
    }

    /// Record an index file this process just wrote, so the next run need not download it,
    /// and make `table` (if given) see it: its runs are reopened, since a merge may have
    /// folded the new run into older ones.
    pub fn add_index_file(
        &mut self,
        id: &ObjectId,
        file: &IndexFile,
        table: Option<&mut Table>,
    ) -> Result<()> {
        self.write_tx(|tx, key, runs_dir| {
            let known: Option<u32> = tx
                .query_row("SELECT num FROM tfiles WHERE id = ?1", [id.to_hex()], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(ce)?;
            let mut unlink = Vec::new();
            if known.is_none() {
                let mut w = RunWriter::new(tx, &key, runs_dir)?;
                w.add_file(id, file)?;
                w.finish()?;
                unlink = compact(tx, runs_dir)?;
            }
            if let Some(t) = table {
                // Runs that are still listed are kept open as they are (their fanouts are not
                // read again: ~100 ms at 60M entries); the rest are dropped before the new ones
                // load.
                let reuse = t.take_runs();
                let old = std::mem::replace(t, Table::new(key.clone()));
                *t = open_table(tx, key, runs_dir, reuse)?;
                t.carry_from(&old);
            }
            Ok(((), unlink))
        })
    }

    /// The number of run files and the bytes they take (for `stats` and the benchmarks).
    pub fn run_files(&self) -> Result<(usize, u64)> {
        let mut st = self.conn.prepare("SELECT name FROM truns").map_err(ce)?;
        let names: Vec<String> = st
            .query_map([], |r| r.get(0))
            .map_err(ce)?
            .collect::<std::result::Result<_, _>>()
            .map_err(ce)?;
        let mut bytes = 0;
        for n in &names {
            bytes += std::fs::metadata(self.runs_dir.join(n))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        Ok((names.len(), bytes))
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

/// Delete run files that no `truns` row names (left by a process that died before its commit).
/// Runs only inside the write transaction, when no other process can be writing one.
fn remove_orphan_runs(tx: &rusqlite::Transaction<'_>, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut st = tx.prepare("SELECT name FROM truns").map_err(ce)?;
    let names: HashSet<String> = st
        .query_map([], |r| r.get(0))
        .map_err(ce)?
        .collect::<std::result::Result<_, _>>()
        .map_err(ce)?;
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if !names.contains(&name) {
            out.push(ent.path());
        }
    }
    Ok(out)
}

fn new_run_name() -> String {
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).expect("OS random numbers");
    format!("{}.run", hex::encode(r))
}

/// Turns index files into run entries (numbering new packs and files as it goes) and writes
/// them as runs of at most [`RUN_BUFFER`] entries.
struct RunWriter<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    key: &'t [u8; 32],
    dir: &'t Path,
    packs: HashMap<PackId, u32>,
    next_pack: u32,
    next_file: u32,
    next_seq: i64,
    buf: Vec<RunEntry>,
}

impl<'t> RunWriter<'t> {
    fn new(tx: &'t rusqlite::Transaction<'t>, key: &'t [u8; 32], dir: &'t Path) -> Result<Self> {
        let mut packs = HashMap::new();
        {
            let mut st = tx.prepare("SELECT num, id FROM tpacks").map_err(ce)?;
            let mut rows = st.query([]).map_err(ce)?;
            while let Some(r) = rows.next().map_err(ce)? {
                let num: u32 = r.get(0).map_err(ce)?;
                let id: Vec<u8> = r.get(1).map_err(ce)?;
                let id = ObjectId::from_slice(&id)
                    .ok_or_else(|| Error::Cache("a cached pack id is malformed".into()))?;
                packs.insert(id, num);
            }
        }
        let max = |sql: &str| -> Result<i64> {
            tx.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
                .map_err(ce)
                .map(|v| v.unwrap_or(-1))
        };
        let next_pack = (max("SELECT MAX(num) FROM tpacks")? + 1) as u32;
        let next_file = (max("SELECT MAX(num) FROM tfiles")? + 1) as u32;
        let next_seq = max("SELECT MAX(seq) FROM truns")? + 1;
        Ok(RunWriter {
            tx,
            key,
            dir,
            packs,
            next_pack,
            next_file,
            next_seq,
            buf: Vec::new(),
        })
    }

    fn add_file(&mut self, id: &ObjectId, file: &IndexFile) -> Result<()> {
        let num = self.next_file;
        self.next_file += 1;
        let entries: usize = file.packs.iter().map(|p| p.entries.len()).sum();
        self.tx
            .execute(
                "INSERT INTO tfiles(num, id, entries) VALUES (?1, ?2, ?3)",
                params![num, id.to_hex(), entries as i64],
            )
            .map_err(ce)?;
        for p in &file.packs {
            let pn = match self.packs.get(&p.id) {
                Some(n) => *n,
                None => {
                    let n = self.next_pack;
                    self.next_pack += 1;
                    self.tx
                        .execute(
                            "INSERT INTO tpacks(num, id) VALUES (?1, ?2)",
                            params![n, &p.id.0[..]],
                        )
                        .map_err(ce)?;
                    self.packs.insert(p.id, n);
                    n
                }
            };
            for e in &p.entries {
                let mut r = RunEntry {
                    id: e.id,
                    pack: pn,
                    file: num,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    kind: e.kind.to_u8(),
                    comp: e.compression.to_u8(),
                    mac: [0; 8],
                };
                r.mac = entry_mac(self.key, &r, &p.id, id);
                self.buf.push(r);
                if self.buf.len() >= RUN_BUFFER {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.sort_unstable_by_key(|e| e.id);
        let name = new_run_name();
        let n = run::write(
            &self.dir.join(&name),
            self.buf.len() as u64,
            self.buf.drain(..).map(Ok),
        )?;
        self.tx
            .execute(
                "INSERT INTO truns(name, seq, entries) VALUES (?1, ?2, ?3)",
                params![name, self.next_seq, n as i64],
            )
            .map_err(ce)?;
        self.next_seq += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.flush()
    }
}

/// Merge the newest runs while the policy of the module doc asks for it; returns the files
/// to delete once the transaction has committed.
fn compact(tx: &rusqlite::Transaction<'_>, dir: &Path) -> Result<Vec<PathBuf>> {
    let live: HashSet<u32> = {
        let mut st = tx.prepare("SELECT num FROM tfiles").map_err(ce)?;
        let v = st
            .query_map([], |r| r.get(0))
            .map_err(ce)?
            .collect::<std::result::Result<_, _>>()
            .map_err(ce)?;
        v
    };
    let live_entries: u64 = tx
        .query_row("SELECT COALESCE(SUM(entries), 0) FROM tfiles", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(ce)?
        .max(0) as u64;
    let mut unlink = Vec::new();
    loop {
        let runs: Vec<(String, i64, u64)> = {
            let mut st = tx
                .prepare("SELECT name, seq, entries FROM truns ORDER BY seq")
                .map_err(ce)?;
            let v = st
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })
                .map_err(ce)?
                .collect::<std::result::Result<_, _>>()
                .map_err(ce)?;
            v
        };
        let n = runs.len();
        if n == 0 {
            break;
        }
        let total: u64 = runs.iter().map(|r| r.2).sum();
        // Mostly dead (a prune deleted many index files): rewrite everything, once.
        let take = if total > live_entries + live_entries / 2 + 1024 {
            n
        } else {
            // The newest runs, back to the first older one more than 4x their sum (and enough
            // of them to leave at most MAX_RUNS), in one k-way merge: a bulk load of many
            // equal runs is one linear merge, not a cascade.
            let (mut k, mut sum) = (1, runs[n - 1].2);
            while k < n && (runs[n - 1 - k].2 <= 4 * sum || n - k >= MAX_RUNS) {
                sum += runs[n - 1 - k].2;
                k += 1;
            }
            if k < 2 {
                break;
            }
            k
        };
        let inputs = &runs[n - take..];
        let opened = inputs
            .iter()
            .map(|r| Run::open(&dir.join(&r.0)))
            .collect::<Result<Vec<Run>>>()?;
        let iters = opened.iter().map(Run::iter).collect::<Result<Vec<_>>>()?;
        let name = new_run_name();
        let merged = run::merge(iters, |e| live.contains(&e.file));
        let max: u64 = inputs.iter().map(|r| r.2).sum();
        let count = run::write(&dir.join(&name), max, merged)?;
        for r in inputs {
            tx.execute("DELETE FROM truns WHERE name = ?1", [&r.0])
                .map_err(ce)?;
            unlink.push(dir.join(&r.0));
        }
        tx.execute(
            "INSERT INTO truns(name, seq, entries) VALUES (?1, ?2, ?3)",
            params![name, inputs[0].1, count as i64],
        )
        .map_err(ce)?;
        if take == n {
            break;
        }
    }
    Ok(unlink)
}

/// Open every recorded run (taking those in `reuse` that are still recorded as they are) and
/// load the pack and index-file numbering.
fn open_table(
    tx: &rusqlite::Transaction<'_>,
    key: zeroize::Zeroizing<[u8; 32]>,
    dir: &Path,
    mut reuse: Vec<Run>,
) -> Result<Table> {
    let mut t = Table::new(key);
    let bad = || Error::Cache("a cached id is malformed".into());
    {
        let mut st = tx.prepare("SELECT num, id FROM tpacks").map_err(ce)?;
        let mut rows = st.query([]).map_err(ce)?;
        while let Some(r) = rows.next().map_err(ce)? {
            let id: Vec<u8> = r.get(1).map_err(ce)?;
            t.add_pack(
                r.get(0).map_err(ce)?,
                ObjectId::from_slice(&id).ok_or_else(bad)?,
            );
        }
    }
    {
        let mut st = tx
            .prepare("SELECT num, id, entries FROM tfiles")
            .map_err(ce)?;
        let mut rows = st.query([]).map_err(ce)?;
        while let Some(r) = rows.next().map_err(ce)? {
            let id: String = r.get(1).map_err(ce)?;
            let entries: i64 = r.get(2).map_err(ce)?;
            t.add_file(
                r.get(0).map_err(ce)?,
                id.parse().map_err(|_| bad())?,
                entries.max(0) as u64,
            );
        }
    }
    let mut st = tx.prepare("SELECT name FROM truns").map_err(ce)?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(ce)?
        .collect::<std::result::Result<_, _>>()
        .map_err(ce)?;
    for n in names {
        let path = dir.join(n);
        let run = match reuse.iter().position(|r| r.path() == path) {
            Some(i) => reuse.swap_remove(i),
            None => Run::open(&path)?,
        };
        t.add_run(run);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexPack;
    use crate::format::pack::{BlobEntry, BlobKind, Compression};
    use crate::id::ChunkId;

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
                                    let mut seed = [0u8; 12];
                                    seed[..4].copy_from_slice(&f.to_le_bytes());
                                    seed[4..8].copy_from_slice(&p.to_le_bytes());
                                    seed[8..].copy_from_slice(&e.to_le_bytes());
                                    let c = *blake3::hash(&seed).as_bytes();
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

    fn fetcher(all: &[(ObjectId, IndexFile)]) -> impl Fn(&ObjectId) -> Result<IndexFile> + '_ {
        move |id| Ok(all.iter().find(|(i, _)| i == id).unwrap().1.clone())
    }

    fn synced(dir: &Path, all: &[(ObjectId, IndexFile)]) -> (Cache, Table) {
        let mut c = Cache::open_keyed(dir, &[7; 32], &key()).unwrap();
        let ids: Vec<ObjectId> = all.iter().map(|(i, _)| *i).collect();
        let (t, _) = c.load_table(&ids, fetcher(all)).unwrap();
        (c, t)
    }

    fn all_found(t: &Table, all: &[(ObjectId, IndexFile)]) -> bool {
        all.iter().all(|(fid, f)| {
            f.packs.iter().all(|p| {
                p.entries.iter().all(|e| {
                    t.lookup(&e.id).is_some_and(|h| {
                        h.origin.file == Some(*fid) && h.origin.pack == p.id && h.entry == *e
                    })
                })
            })
        })
    }

    /// The only run file of `c`.
    fn only_run(c: &Cache) -> PathBuf {
        let runs: Vec<PathBuf> = std::fs::read_dir(c.runs_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs[0].clone()
    }

    /// X10 (3): entries are found with their index file and pack, and any edit of an entry,
    /// an entry moved to another pack, or a key other than the one that wrote them makes the
    /// lookup miss (never a wrong location) and taints the table.
    #[test]
    fn cache_entries_are_authenticated() {
        let t = tempfile::tempdir().unwrap();
        let all = files(3, 200);
        let (c, table) = synced(t.path(), &all);
        assert_eq!(table.live_entries(), 600);
        assert!(all_found(&table, &all));
        assert!(!table.is_tainted());
        let run = only_run(&c);
        let good = std::fs::read(&run).unwrap();
        let entries_at = run::HEADER_LEN as usize + 4 * (1 << run::bits_for(600));
        // Which chunk entry 5 is, before any edit.
        let e5 = RunEntry::decode(&good[entries_at + 5 * 64..entries_at + 6 * 64]).unwrap();
        // (what, byte within entry 5, bits flipped)
        let edits = [
            ("offset", 40, 1u8),
            ("pack number", 32, 1),
            ("file number", 36, 1),
            ("mac", 60, 1),
            ("kind", 52, 1),
        ];
        drop(table);
        for (what, at, bits) in edits {
            let mut b = good.clone();
            b[entries_at + 5 * 64 + at] ^= bits;
            std::fs::write(&run, &b).unwrap();
            let mut c = Cache::open_keyed(t.path(), &[7; 32], &key()).unwrap();
            let ids: Vec<ObjectId> = all.iter().map(|(i, _)| *i).collect();
            let (table, fetched) = c.load_table(&ids, |_| unreachable!()).unwrap();
            assert_eq!(fetched, 0);
            if let Some(h) = table.lookup(&e5.id) {
                // Only a file-number edit that lands on a dead number may miss instead.
                panic!("{what}: edited entry still found at {:?}", h.origin);
            }
            assert!(
                table.is_tainted() || what == "file number",
                "{what}: not tainted"
            );
        }
        std::fs::write(&run, &good).unwrap();
        // A cache written under another key: every entry fails.
        let other = MasterKey::from_bytes(&[6; crate::crypto::MASTER_KEY_LEN]).unwrap();
        let mut c = Cache::open_keyed(t.path(), &[7; 32], &other).unwrap();
        let ids: Vec<ObjectId> = all.iter().map(|(i, _)| *i).collect();
        let (table, _) = c.load_table(&ids, |_| unreachable!()).unwrap();
        assert!(table.lookup(&e5.id).is_none());
        assert!(table.is_tainted());
        // Without the key, index entries are not usable at all.
        let mut c = Cache::open(t.path(), &[7; 32]).unwrap();
        assert!(c.load_table(&ids, |_| unreachable!()).is_err());
    }

    /// Index files that vanish from the listing stop answering at once; many small syncs
    /// stay few runs; merges drop dead entries; all live entries are found throughout.
    #[test]
    fn runs_follow_the_listing_and_stay_few() {
        let t = tempfile::tempdir().unwrap();
        let all = files(40, 100);
        let mut c = Cache::open_keyed(t.path(), &[7; 32], &key()).unwrap();
        // One new index file per open, like one backup a day.
        for n in 1..=all.len() {
            let ids: Vec<ObjectId> = all[..n].iter().map(|(i, _)| *i).collect();
            let (table, fetched) = c.load_table(&ids, fetcher(&all)).unwrap();
            assert_eq!(fetched, 1);
            assert!(table.runs() <= MAX_RUNS, "{} runs", table.runs());
            assert!(all_found(&table, &all[..n]));
        }
        let (runs, bytes) = c.run_files().unwrap();
        assert!(
            runs <= MAX_RUNS && bytes >= 4000 * 64,
            "{runs} runs, {bytes} bytes"
        );
        // A prune deleted the first 30 files: their chunks are unknown from now on.
        let ids: Vec<ObjectId> = all[30..].iter().map(|(i, _)| *i).collect();
        let (table, fetched) = c.load_table(&ids, fetcher(&all)).unwrap();
        assert_eq!(fetched, 0);
        assert_eq!(table.live_entries(), 1000);
        assert!(all_found(&table, &all[30..]));
        let gone = all[0].1.packs[0].entries[0].id;
        assert!(table.lookup(&gone).is_none());
        assert!(!table.is_tainted());
        // Mostly dead: rewritten into one run of the live entries.
        assert_eq!(table.runs(), 1);
        let (_, bytes) = c.run_files().unwrap();
        assert!(bytes < 1100 * 64, "dead entries kept: {bytes} bytes");
        // An added file merges with the rest and the merge drops the dead entries.
        let more = files(41, 100);
        let mut ids = ids;
        ids.push(more[40].0);
        let joined: Vec<(ObjectId, IndexFile)> = all.iter().chain(&more[40..]).cloned().collect();
        for _ in 0..4 {
            c.add_index_file(&more[40].0, &more[40].1, None).unwrap();
        }
        let (table, _) = c.load_table(&ids, fetcher(&joined)).unwrap();
        assert!(all_found(&table, &joined[30..]));
    }

    /// A run file left by a process that died before its commit is deleted on the next sync,
    /// and a damaged run makes `load_table` fail (the caller rebuilds the cache).
    #[test]
    fn orphan_runs_go_and_damaged_runs_fail() {
        let t = tempfile::tempdir().unwrap();
        let all = files(2, 100);
        let (mut c, _) = synced(t.path(), &all);
        let orphan = c.runs_dir().join("0000000000000000.run");
        std::fs::write(&orphan, b"half written").unwrap();
        let ids: Vec<ObjectId> = all.iter().map(|(i, _)| *i).collect();
        c.load_table(&ids, |_| unreachable!()).unwrap();
        assert!(!orphan.exists());
        let run = only_run(&c);
        let b = std::fs::read(&run).unwrap();
        std::fs::write(&run, &b[..b.len() - 1]).unwrap();
        assert!(matches!(
            c.load_table(&ids, |_| unreachable!()),
            Err(Error::Cache(_))
        ));
        c.rebuild().unwrap();
        let (table, fetched) = c.load_table(&ids, fetcher(&all)).unwrap();
        assert_eq!(fetched, 2);
        assert!(all_found(&table, &all));
    }

    /// The cost of opening the cached index: 200 000 entries in 20 index files, already
    /// cached (`cargo test --lib cache_open_cost -- --ignored --nocapture`).
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
            let (table, _) = c.load_table(&ids, |_| unreachable!("all cached")).unwrap();
            assert_eq!(table.live_entries(), 200_000);
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "cache open of 200k entries: median {:.1} ms, min {:.1} ms",
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
