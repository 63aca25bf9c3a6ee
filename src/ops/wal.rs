//! Continuous WAL archiving: `wal push` (PostgreSQL's `archive_command`), `wal fetch`
//! (`restore_command`), the listing of what is archived, the chain report (`wal status`,
//! `fsck`) and the WAL retention that `prune` applies.
//!
//! Invariants:
//! - A push returns `Ok` only once the object is durably stored (the backend's `put` is
//!   durable: fsynced file and directory, or a completed S3 PUT) *and* a read-back of its
//!   header shows this content under the name. Anything else is an error, so PostgreSQL keeps
//!   the segment and retries.
//! - A name is never overwritten. The same name with the same content is success with no
//!   write; with other content it is [`Error::WalConflict`], and the new content is kept beside
//!   the old as `<file>.conflict-<16 hex>` for a person to judge.
//! - Pushes take no repository lock: they only add objects under `wal/`, which nothing but
//!   the WAL retention of `prune` deletes, and that only deletes files older than the oldest
//!   base backup kept (format-spec/13-wal.md, "Concurrency"). A long prune never stalls
//!   archiving. Taking no lock, a push checks the config's `ro_compat` bits itself (C11).
//! - A base backup is judged against a cluster's chain, and can make its WAL deletable, only
//!   when its system identifier and the cluster's are both known and equal; LSNs of
//!   different clusters are unrelated. One of unknown origin only ever keeps WAL.
//! - A listed name that is neither a WAL file name nor a conflict copy (a stray) is never
//!   read, chained, copied or deleted. An object that vanishes between listing and reading
//!   (a concurrent prune) is passed over, not taken for damage.
//! - A fetched file is written to the destination only after its trailer, every frame's
//!   authentication tag and the keyed hash of the whole plaintext have been checked.

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Backend;
use crate::crypto::MasterKey;
use crate::error::{Error, ObjectKind, Result};
use crate::format::pack::Compression;
use crate::format::wal::{self as fmt, Frame, FRAME_LEN, PREFIX_LEN};
use crate::pg::{self, Archived, BaseBackupPoint, Chain, Lsn, WalKind, WalName};
use crate::repo::{get_range_exact, Repo};
use crate::snapshot::SnapshotEntry;

/// The cluster name used when none is given.
pub const DEFAULT_CLUSTER: &str = "main";
/// Marks a rejected different-content copy kept beside the archived file.
pub const CONFLICT_MARK: &str = ".conflict-";

/// Check a cluster name (`[a-z0-9_-]`, 1-32 characters: it becomes a directory).
pub fn check_cluster(c: &str) -> Result<()> {
    if crate::backend::valid_wal_name(&format!("{c}/x")) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "cluster name {c:?}: use 1-32 of a-z, 0-9, '_' and '-'"
        )))
    }
}

fn object_name(cluster: &str, file: &str) -> String {
    format!("{cluster}/{file}")
}

fn parse_wal_file(file: &str) -> Result<WalName> {
    WalName::parse(file).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{file:?} is not a WAL file name (a segment, .partial, .backup or .history file)"
        ))
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub file: String,
    /// False when the same content was already archived (nothing was written).
    pub stored: bool,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

fn keyed_hash(id_key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(id_key);
    if data.len() >= 1 << 20 {
        h.update_rayon(data);
    } else {
        h.update(data);
    }
    *h.finalize().as_bytes()
}

/// What WAL archiving needs of a repository: its storage, its key and its zstd level. Unlike
/// a [`Repo`] (whose cache is one SQLite connection) it can be shared between threads, so
/// `copy` can carry several files at once.
#[derive(Clone, Copy)]
pub struct Archive<'a> {
    pub backend: &'a dyn Backend,
    pub key: &'a MasterKey,
    pub zstd_level: i32,
}

impl<'a> Archive<'a> {
    pub fn of(repo: &'a Repo) -> Archive<'a> {
        Archive {
            backend: repo.backend.as_ref(),
            key: &repo.key,
            zstd_level: repo.config.zstd_level,
        }
    }
}

/// Seal `data` as the WAL object for `file`: compressed and sealed frame by frame, in parallel.
fn build_object(
    ar: Archive<'_>,
    cluster: &str,
    file: &str,
    data: &[u8],
    keyed: [u8; 32],
    mtime_ms: i64,
) -> Vec<u8> {
    let name = WalName::parse(file);
    let header = match name.as_ref().map(|n| n.kind) {
        Some(WalKind::Segment | WalKind::Partial) => pg::segment_header(data),
        _ => None,
    };
    let (sysid, seg_size) = header.unwrap_or((0, 0));
    let level = ar.zstd_level;
    let frames: Vec<Frame> = data
        .par_chunks(FRAME_LEN)
        .map(|c| match crate::compress::compress(level, c) {
            Some(z) => Frame {
                raw_len: c.len() as u32,
                compression: Compression::Zstd,
                bytes: z,
            },
            None => Frame {
                raw_len: c.len() as u32,
                compression: Compression::None,
                bytes: c.to_vec(),
            },
        })
        .collect();
    fmt::encode(
        ar.key,
        cluster,
        file,
        seg_size,
        mtime_ms,
        data.len() as u64,
        sysid,
        keyed,
        chrono::Utc::now().timestamp_millis(),
        frames,
    )
}

/// Read the stored header of `object` (one ranged read).
fn stored_header(
    ar: Archive<'_>,
    cluster: &str,
    file: &str,
    object: &str,
    size: u64,
) -> Result<(fmt::Prefix, fmt::Header)> {
    let b = ar.backend;
    let first = get_range_exact(b, ObjectKind::Wal, object, 0, (PREFIX_LEN as u64).min(size))?;
    let p = fmt::parse_prefix(object, &first)?;
    let want = (PREFIX_LEN as u64 + u64::from(p.header_len)).min(size);
    let head = get_range_exact(b, ObjectKind::Wal, object, 0, want)?;
    fmt::open_header(ar.key, cluster, file, object, &head)
}

/// Archive the file at `path` (what `archive_command` gets as `%p`).
pub fn push(repo: &Repo, cluster: &str, path: &Path) -> Result<PushReport> {
    check_cluster(cluster)?;
    // C11: a writer refuses an unknown ro_compat bit. Every other writer checks it when it
    // takes its lock; a push takes none (X30).
    repo.config.check_writable()?;
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{}: no file name", path.display())))?
        .to_string();
    parse_wal_file(&file)?;
    let data = std::fs::read(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if data.len() > fmt::MAX_FRAMES * FRAME_LEN {
        return Err(Error::InvalidInput(format!(
            "{}: {} bytes is larger than a WAL file can be (at most {} bytes are archived)",
            path.display(),
            data.len(),
            fmt::MAX_FRAMES * FRAME_LEN
        )));
    }
    crate::failpoint::hit("wal-push-read");
    let mtime_ms = std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64);
    store(Archive::of(repo), cluster, &file, &data, mtime_ms)
}

/// Archive `data` as `file` of `cluster`, with `mtime_ms` as its source modification time:
/// the whole of a push once the file is read (and what `copy` uses to carry WAL over).
pub fn store(
    ar: Archive<'_>,
    cluster: &str,
    file: &str,
    data: &[u8],
    mtime_ms: i64,
) -> Result<PushReport> {
    check_cluster(cluster)?;
    parse_wal_file(file)?;
    let object = object_name(cluster, file);
    let keyed = keyed_hash(&ar.key.id_key, data);
    let same = |h: &fmt::Header| h.keyed_id == keyed && h.plain_len == data.len() as u64;
    let report = |stored, stored_bytes| PushReport {
        file: file.to_string(),
        stored,
        raw_bytes: data.len() as u64,
        stored_bytes,
    };
    let refuse = |what: &str| conflict(ar, cluster, file, data, mtime_ms, keyed, what);
    // A stored copy is read whole and verified: PostgreSQL deletes its own file once told it
    // is archived, so a damaged copy must not pass for one.
    match read_object(ar, cluster, file) {
        Ok(o) if same(&o.header) => return Ok(report(false, 0)),
        Ok(_) => return refuse("different content"),
        Err(Error::ObjectNotFound { .. }) => {}
        Err(e) if e.is_corruption() => return refuse(&format!("a damaged copy ({e})")),
        Err(e) => return Err(e),
    }
    let bytes = build_object(ar, cluster, file, data, keyed, mtime_ms);
    crate::failpoint::hit("wal-push-before-put");
    ar.backend.put(ObjectKind::Wal, &object, &bytes)?;
    crate::failpoint::hit("wal-push-after-put");
    // Read back: proves the object is there and ours (a concurrent push of other content
    // under the same name would have won the race and be found here). Puts are whole or
    // nothing, and the header fixes every frame's length: one ranged read of exactly the
    // prefix and header we wrote suffices (one request, not three, on S3).
    let head_len = PREFIX_LEN as u64 + u64::from(fmt::parse_prefix(&object, &bytes)?.header_len);
    let head = get_range_exact(ar.backend, ObjectKind::Wal, &object, 0, head_len)?;
    let (_, h) = fmt::open_header(ar.key, cluster, file, &object, &head)?;
    if !same(&h) {
        return refuse("different content (a concurrent push)");
    }
    Ok(report(true, bytes.len() as u64))
}

fn conflict(
    ar: Archive<'_>,
    cluster: &str,
    file: &str,
    data: &[u8],
    mtime_ms: i64,
    keyed: [u8; 32],
    what: &str,
) -> Result<PushReport> {
    let copy = format!("{file}{CONFLICT_MARK}{}", &hex::encode(keyed)[..16]);
    // Sealed under the real file name, so it opens (and can be fetched by hand) as that file.
    let bytes = build_object(ar, cluster, file, data, keyed, mtime_ms);
    ar.backend
        .put(ObjectKind::Wal, &object_name(cluster, &copy), &bytes)?;
    Err(Error::WalConflict(format!(
        "{file} is already archived with {what}; the archived copy is kept, and this one is kept beside it as wal/{cluster}/{copy}. Compare them (dumpvault wal fetch {copy} FILE) and remove the wrong one by hand; archiving stays blocked until then"
    )))
}

/// Read and verify an archived file's whole plaintext. `object` is the stored name under the
/// cluster (the file name, or a `.conflict-` copy of it).
pub fn read_file(repo: &Repo, cluster: &str, object: &str) -> Result<Vec<u8>> {
    read_object(Archive::of(repo), cluster, object).map(|o| o.data)
}

/// An archived file as read and verified: its clear prefix, authenticated header and
/// plaintext.
pub struct WalObject {
    pub prefix: fmt::Prefix,
    pub header: fmt::Header,
    pub data: Vec<u8>,
}

/// [`read_file`], with the object's prefix and authenticated header.
pub fn read_object(ar: Archive<'_>, cluster: &str, object: &str) -> Result<WalObject> {
    let file = object.split(CONFLICT_MARK).next().unwrap_or(object);
    parse_wal_file(file)?;
    let full = object_name(cluster, object);
    let bytes = ar.backend.get(ObjectKind::Wal, &full)?;
    let (prefix, h, frames) = fmt::decode(ar.key, cluster, file, &full, &bytes)?;
    let mut out = vec![0u8; h.plain_len as usize];
    let mut slots = Vec::with_capacity(frames.len());
    let mut rest = out.as_mut_slice();
    for (f, _) in &frames {
        let (a, b) = rest.split_at_mut(f.raw_len as usize);
        slots.push(a);
        rest = b;
    }
    slots
        .into_par_iter()
        .zip(frames.par_iter())
        .try_for_each(|(dst, (f, src))| crate::compress::decompress_into(f.compression, src, dst))
        .map_err(|e| Error::corrupt(ObjectKind::Wal, &full, e))?;
    if keyed_hash(&ar.key.id_key, &out) != h.keyed_id {
        return Err(Error::corrupt(
            ObjectKind::Wal,
            &full,
            "plaintext does not match its keyed hash",
        ));
    }
    Ok(WalObject {
        prefix,
        header: h,
        data: out,
    })
}

/// Fetch `file` into `dest` (what `restore_command` gets as `%f` and `%p`): written to a
/// temporary name beside `dest` and renamed, after every check passed.
pub fn fetch(repo: &Repo, cluster: &str, file: &str, dest: &Path) -> Result<u64> {
    check_cluster(cluster)?;
    let data = read_file(repo, cluster, file)?;
    write_file_atomic(dest, &data)?;
    Ok(data.len() as u64)
}

/// Write `data` to `dest` through a temporary file in the same directory and a rename.
pub fn write_file_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut rnd = [0u8; 6];
    crate::crypto::random_bytes(&mut rnd);
    let tmp = dir.join(format!(
        ".{}.dumpvault-{}",
        dest.file_name().and_then(|f| f.to_str()).unwrap_or("wal"),
        hex::encode(rnd)
    ));
    let r = std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, dest))
        .map_err(|e| Error::io(format!("write {}", dest.display()), e));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// One archived object as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub file: String,
    pub size: u64,
    /// The WAL file name; `None` for a conflict copy and for a stray ([`Listed::is_stray`]).
    #[serde(skip)]
    pub name: Option<WalName>,
    /// A `.conflict-` copy.
    pub conflict: bool,
}

impl Listed {
    /// A name of the right shape (AW1) that is neither a WAL file name nor a conflict copy:
    /// not WAL, so it is never read, chained or deleted (format-spec/13-wal.md, AW1).
    pub fn is_stray(&self) -> bool {
        self.name.is_none() && !self.conflict
    }
}

/// What a listed file name under a cluster is: its WAL file name, and whether it is a
/// conflict copy (`<WAL file name>.conflict-<16 lower-case hex>`, whose WAL name is `None`).
/// Neither means a stray.
pub fn classify(file: &str) -> (Option<WalName>, bool) {
    if let Some((base, tag)) = file.split_once(CONFLICT_MARK) {
        let conflict = WalName::parse(base).is_some()
            && tag.len() == 16
            && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return (None, conflict);
    }
    (WalName::parse(file), false)
}

/// Everything archived for `cluster`, sorted by name.
pub fn list(backend: &dyn Backend, cluster: &str) -> Result<Vec<Listed>> {
    let prefix = format!("{cluster}/");
    let mut out: Vec<Listed> = backend
        .list(ObjectKind::Wal)?
        .into_iter()
        .filter_map(|(n, size)| {
            let file = n.strip_prefix(&prefix)?.to_string();
            let (name, conflict) = classify(&file);
            Some(Listed {
                name,
                file,
                size,
                conflict,
            })
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(out)
}

/// The clusters that have archived WAL.
pub fn clusters(backend: &dyn Backend) -> Result<Vec<String>> {
    let mut c: Vec<String> = backend
        .list(ObjectKind::Wal)?
        .into_iter()
        .filter_map(|(n, _)| n.split_once('/').map(|(c, _)| c.to_string()))
        .collect();
    c.sort();
    c.dedup();
    Ok(c)
}

/// A base backup snapshot as WAL reasoning sees it.
#[derive(Debug, Clone, Serialize)]
pub struct BaseBackup {
    pub snapshot: String,
    pub name: String,
    pub time: chrono::DateTime<chrono::Utc>,
    /// When the backup was complete (snapshot time plus its duration): recovery to a time
    /// before this cannot be consistent.
    pub done: chrono::DateTime<chrono::Utc>,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Option<Lsn>,
    pub wal_included: bool,
    pub sysid: Option<u64>,
    /// False for a base backup stored incomplete (`--allow-truncated`): it cannot be
    /// restored, so WAL retention never keeps WAL for it.
    pub complete: bool,
}

impl BaseBackup {
    /// Whether this base backup is one of the cluster whose WAL carries `cluster_sysid`:
    /// `Some` only when both system identifiers are known (a cluster's is 0 when unknown).
    /// LSNs of different clusters are unrelated, so a backup of unknown origin can be judged
    /// against no chain and must make no WAL deletable.
    pub fn of_cluster(&self, cluster_sysid: u64) -> Option<bool> {
        match (self.sysid, cluster_sysid) {
            (Some(s), c) if c != 0 => Some(s == c),
            _ => None,
        }
    }

    pub fn point(&self) -> BaseBackupPoint {
        BaseBackupPoint {
            timeline: self.timeline,
            start: self.start_lsn,
            end: self.end_lsn,
            wal_included: self.wal_included,
        }
    }
}

/// The base backups among `snaps`, oldest first.
pub fn base_backups(snaps: &[SnapshotEntry]) -> Vec<BaseBackup> {
    let mut out: Vec<BaseBackup> = snaps
        .iter()
        .filter_map(|e| {
            let s = &e.snapshot;
            let (b, complete) = s.streams.iter().find_map(|st| {
                let d = st.dump.as_ref()?;
                Some((d.base_backup.clone()?, !d.truncated()))
            })?;
            Some(BaseBackup {
                snapshot: e.id.to_hex(),
                name: s.name.clone(),
                time: s.time,
                done: s.time + chrono::Duration::milliseconds(s.duration_ms as i64),
                timeline: b.timeline,
                start_lsn: b.start_lsn,
                end_lsn: b.end_lsn,
                wal_included: b.wal_included,
                sysid: b.sysid,
                complete,
            })
        })
        .collect();
    out.sort_by_key(|b| (b.start_lsn, b.time));
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct BaseReach {
    #[serde(flatten)]
    pub backup: BaseBackup,
    pub reach: pg::Reach,
    /// `reach.until_mtime_ms` as a time: PITR to any moment up to this one is covered.
    pub pitr_until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    pub cluster: String,
    pub seg_size: u32,
    pub files: u64,
    pub stored_bytes: u64,
    pub timelines: Vec<pg::TimelineReport>,
    pub conflicts: Vec<String>,
    /// Objects found damaged while judging the chain (history files, and segments whose
    /// prefix or header was read for the cluster's identity): file name and error.
    pub damaged: Vec<(String, String)>,
    /// Listed names that are neither WAL file names nor conflict copies (AW1): not read.
    pub strays: Vec<String>,
    /// The base backups of this cluster: their system identifier is the cluster's.
    pub base_backups: Vec<BaseReach>,
    /// Base backups that may or may not be this cluster's (the system identifier of the
    /// backup or of the cluster is unknown), with the reach they would have if they were. Not
    /// judged (no problem is reported for them) and not chosen by `pg restore` unless named.
    pub unmatched: Vec<BaseReach>,
    /// Snapshots that could not be read (damage), so any base backup among them is missing
    /// above: id and error. Empty when the caller supplied the snapshots ([`status_of`]).
    pub unreadable_snapshots: Vec<(String, String)>,
    /// The newest archived segment and when its content was written.
    pub last_segment: Option<String>,
    pub last_segment_time: Option<chrono::DateTime<chrono::Utc>>,
}

impl WalStatus {
    /// Gaps, conflicts and base backups that cannot be made consistent: what is wrong with
    /// the chain itself (fsck reports damaged objects apart, by name).
    pub fn chain_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for t in &self.timelines {
            for g in &t.gaps {
                let cut: Vec<&str> = self
                    .base_backups
                    .iter()
                    .filter(|b| b.reach.cut_by_gap.as_ref() == Some(g))
                    .map(|b| b.backup.snapshot.get(..8).unwrap_or(""))
                    .collect();
                p.push(format!(
                    "gap on timeline {}: {} segment(s) missing, {} .. {}{}",
                    g.timeline,
                    g.segments,
                    g.first_missing,
                    g.last_missing,
                    if cut.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; it ends the PITR range of base backup(s) {}",
                            cut.join(", ")
                        )
                    }
                ));
            }
        }
        for c in &self.conflicts {
            p.push(format!(
                "conflicting copy {c}: a push of different content under an archived name"
            ));
        }
        for b in &self.base_backups {
            if let Some(m) = &b.reach.missing_for_consistency {
                p.push(format!(
                    "base backup {} cannot be restored to consistency: {m} is not archived",
                    b.backup.snapshot.get(..8).unwrap_or("")
                ));
            }
        }
        p
    }

    /// Every problem: the chain's, damaged objects and unreadable snapshots (all damage).
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.chain_problems();
        for (f, e) in &self.damaged {
            p.push(format!("{f}: {e}"));
        }
        for (id, e) in &self.unreadable_snapshots {
            p.push(format!(
                "snapshot {id} cannot be read, so a base backup it may be is not judged: {e}"
            ));
        }
        p
    }
}

fn ms_time(ms: i64) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp_millis(ms)
}

/// The clear prefix of an archived object (one small ranged read, no key needed).
pub fn prefix_of(backend: &dyn Backend, cluster: &str, file: &str) -> Result<fmt::Prefix> {
    let object = object_name(cluster, file);
    let b = get_range_exact(backend, ObjectKind::Wal, &object, 0, PREFIX_LEN as u64)?;
    fmt::parse_prefix(&object, &b)
}

/// What the newest segment of a cluster says of it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The WAL segment size (the default when unknown).
    pub seg_size: u32,
    /// The system identifier (0 when unknown).
    pub sysid: u64,
    /// The name and source mtime (Unix ms) of the segment they were read from.
    pub newest: Option<(String, i64)>,
    /// Newer segments whose prefix or header was found damaged on the way: name and error.
    pub damaged: Vec<(String, String)>,
}

/// The [`Identity`] of `cluster`, from its newest segment whose prefix and header open (one
/// ranged read of each); defaults when it has none. A damaged segment is recorded and the
/// next older one tried, and one deleted since the listing (a concurrent prune's WAL
/// retention) is passed over, so that neither stops `wal status` or `fsck` (X28, X29); a
/// storage error does.
pub fn cluster_identity(repo: &Repo, cluster: &str, listed: &[Listed]) -> Result<Identity> {
    let mut damaged = Vec::new();
    let segments = listed
        .iter()
        .rev()
        .filter(|l| l.name.as_ref().is_some_and(|n| n.kind == WalKind::Segment));
    for l in segments {
        let object = object_name(cluster, &l.file);
        match stored_header(Archive::of(repo), cluster, &l.file, &object, l.size) {
            Ok((p, h)) => {
                return Ok(Identity {
                    seg_size: if p.seg_size == 0 {
                        pg::DEFAULT_SEGMENT_SIZE
                    } else {
                        p.seg_size
                    },
                    sysid: h.sysid,
                    newest: Some((l.file.clone(), p.mtime_ms)),
                    damaged,
                })
            }
            Err(Error::ObjectNotFound { .. }) => {}
            Err(e) if e.is_corruption() => damaged.push((l.file.clone(), e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(Identity {
        seg_size: pg::DEFAULT_SEGMENT_SIZE,
        sysid: 0,
        newest: None,
        damaged,
    })
}

/// The chain of a listed cluster, with every timeline history file read, and the history
/// files that could not be read (damage).
pub fn chain(
    repo: &Repo,
    cluster: &str,
    listed: &[Listed],
    seg_size: u32,
) -> Result<(Chain, Vec<(String, String)>)> {
    let archived: Vec<Archived> = listed
        .iter()
        .filter_map(|l| {
            Some(Archived {
                name: l.name.clone()?,
                mtime_ms: None,
            })
        })
        .collect();
    let mut c = Chain::new(seg_size, &archived);
    let mut damaged = Vec::new();
    for l in listed {
        if l.name.as_ref().is_some_and(|n| n.kind == WalKind::History) {
            let tl = l.name.as_ref().map_or(0, |n| n.timeline);
            match read_file(repo, cluster, &l.file).and_then(|b| {
                pg::parse_history(&String::from_utf8_lossy(&b))
                    .map_err(|e| Error::corrupt(ObjectKind::Wal, &l.file, e))
            }) {
                Ok(h) => {
                    c.histories.insert(tl, h);
                }
                // Removed since the listing: not there to judge (N3).
                Err(Error::ObjectNotFound { .. }) => {}
                Err(e) if e.is_corruption() => damaged.push((l.file.clone(), e.to_string())),
                Err(e) => return Err(e),
            }
        }
    }
    Ok((c, damaged))
}

/// `wal status`: ranges, gaps and the PITR window of every base backup, judged against the
/// readable snapshots; damaged ones are named in `unreadable_snapshots`.
pub fn status(repo: &mut Repo, cluster: &str) -> Result<WalStatus> {
    check_cluster(cluster)?;
    let (snaps, bad) = repo.snapshots_lenient()?;
    let mut st = status_of(repo, cluster, &snaps)?;
    st.unreadable_snapshots = bad
        .into_iter()
        .map(|d| (d.id.to_hex(), d.error.to_string()))
        .collect();
    Ok(st)
}

/// [`status`] against the given snapshots (`fsck` passes those it could read and reports
/// the others itself).
pub fn status_of(repo: &Repo, cluster: &str, snaps: &[SnapshotEntry]) -> Result<WalStatus> {
    check_cluster(cluster)?;
    let listed = list(repo.backend.as_ref(), cluster)?;
    let id = cluster_identity(repo, cluster, &listed)?;
    let (chain, mut damaged) = chain(repo, cluster, &listed, id.seg_size)?;
    damaged.extend(id.damaged);
    damaged.sort();
    let mut bases = Vec::new();
    let mut unmatched = Vec::new();
    for b in base_backups(snaps) {
        // A base backup of another cluster (another system identifier) is not this one's.
        let mine = match b.of_cluster(id.sysid) {
            Some(false) => continue,
            Some(true) => true,
            None => false,
        };
        let mut reach = chain.reach(&b.point(), None);
        if let Some(last) = &reach.last_segment {
            if let Ok(p) = prefix_of(repo.backend.as_ref(), cluster, last) {
                reach.until_mtime_ms = Some(p.mtime_ms);
            }
        }
        let pitr_until = reach.until_mtime_ms.and_then(ms_time);
        let r = BaseReach {
            backup: b,
            reach,
            pitr_until,
        };
        if mine {
            bases.push(r);
        } else {
            unmatched.push(r);
        }
    }
    let (last, last_segment_time) = match id.newest {
        Some((f, mtime)) => (Some(f), ms_time(mtime)),
        None => (None, None),
    };
    Ok(WalStatus {
        cluster: cluster.to_string(),
        seg_size: chain.seg_size,
        files: listed.len() as u64,
        stored_bytes: listed.iter().map(|l| l.size).sum(),
        timelines: chain.report(),
        conflicts: listed
            .iter()
            .filter(|l| l.conflict)
            .map(|l| l.file.clone())
            .collect(),
        damaged,
        strays: listed
            .iter()
            .filter(|l| l.is_stray())
            .map(|l| l.file.clone())
            .collect(),
        base_backups: bases,
        unmatched,
        unreadable_snapshots: Vec::new(),
        last_segment: last,
        last_segment_time,
    })
}

/// The base backups whose WAL retention keeps for a cluster whose WAL carries the system
/// identifier `sysid` (0: unknown), with `keep` the `--wal-keep-base-backups` count (AW16).
/// Only complete base backups count: one stored incomplete cannot be restored. Of those,
/// the cluster's own (both identifiers known and equal, [`BaseBackup::of_cluster`]) count,
/// the `keep` newest by snapshot time if `keep` is given; time, not start LSN, because after
/// a point-in-time recovery that branched below older base backups the newest ones start at
/// lower LSNs (X26). Base backups whose identifier or the cluster's is unknown are added
/// whatever `keep` says, since they may be this cluster's: they can only keep WAL. And if
/// none is certainly the cluster's, none is returned, so nothing is deleted: the LSNs of
/// another cluster's base backup say nothing about this one's WAL (X25).
pub fn retained_base_backups(
    bases: &[BaseBackup],
    sysid: u64,
    keep: Option<usize>,
) -> Vec<BaseBackup> {
    let complete = bases.iter().filter(|b| b.complete);
    let mut mine: Vec<BaseBackup> = complete
        .clone()
        .filter(|b| b.of_cluster(sysid) == Some(true))
        .cloned()
        .collect();
    if mine.is_empty() {
        return mine;
    }
    if let Some(n) = keep {
        mine.sort_by_key(|b| std::cmp::Reverse((b.time, b.start_lsn)));
        mine.truncate(n.max(1));
    }
    mine.extend(complete.filter(|b| b.of_cluster(sysid).is_none()).cloned());
    mine
}

/// WAL retention: the files of `cluster` that no kept base backup needs. A segment (or
/// `.partial`, `.backup`) is needed when it holds WAL at or after the start of the oldest
/// base backup kept; LSNs grow across timelines, so the rule needs no timeline reasoning.
/// History files are always kept (they are tiny and every later timeline needs them). With
/// no base backup kept nothing is deleted: dumpvault never guesses which WAL is unneeded.
/// `keep_from` moves the cut earlier (an explicit archive retention, as an LSN).
pub fn retention_plan(
    listed: &[Listed],
    seg_size: u32,
    kept: &[BaseBackup],
    keep_from: Option<Lsn>,
) -> Vec<String> {
    let Some(oldest) = kept.iter().map(|b| b.start_lsn).min() else {
        return Vec::new();
    };
    let cut = keep_from.map_or(oldest, |k| k.min(oldest)).segno(seg_size);
    listed
        .iter()
        .filter(|l| !l.conflict)
        .filter(|l| {
            l.name.as_ref().is_some_and(|n| {
                n.kind != WalKind::History && n.segno(seg_size).is_some_and(|s| s < cut)
            })
        })
        .map(|l| l.file.clone())
        .collect()
}

/// Delete the files `retention_plan` chose.
pub fn delete_files(backend: &dyn Backend, cluster: &str, files: &[String]) -> Result<u64> {
    let mut n = 0;
    for f in files {
        match backend.delete(ObjectKind::Wal, &object_name(cluster, f)) {
            Ok(()) => n += 1,
            Err(Error::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::repo::InitOptions;
    use std::sync::Arc;

    fn repo() -> Repo {
        let opts = InitOptions {
            kdf: crate::crypto::KdfParams::FLOOR,
            ..Default::default()
        };
        Repo::init(Arc::new(MemoryBackend::default()), b"pw", &opts).unwrap()
    }

    fn segment(n: u8) -> Vec<u8> {
        let mut d = vec![n; 3 << 20];
        d[2..4].copy_from_slice(&2u16.to_le_bytes());
        d[24..32].copy_from_slice(&42u64.to_le_bytes());
        d[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        d
    }

    #[test]
    fn push_is_idempotent_conflicts_are_kept_and_fetch_verifies() {
        let r = repo();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("000000010000000000000003");
        std::fs::write(&p, segment(1)).unwrap();
        assert!(push(&r, "main", &p).unwrap().stored);
        assert!(!push(&r, "main", &p).unwrap().stored);
        std::fs::write(&p, segment(2)).unwrap();
        assert!(matches!(push(&r, "main", &p), Err(Error::WalConflict(_))));
        let l = list(r.backend.as_ref(), "main").unwrap();
        assert_eq!(l.len(), 2);
        assert!(l[1].conflict);
        // The archived copy is the first content; the conflict copy holds the second.
        let out = dir.path().join("got");
        fetch(&r, "main", "000000010000000000000003", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), segment(1));
        assert_eq!(read_file(&r, "main", &l[1].file).unwrap(), segment(2));
        assert!(matches!(
            fetch(&r, "main", "000000010000000000000004", &out),
            Err(Error::ObjectNotFound { .. })
        ));
        assert_eq!(
            prefix_of(r.backend.as_ref(), "main", "000000010000000000000003")
                .unwrap()
                .seg_size,
            16 << 20
        );
    }

    #[test]
    fn retention_keeps_history_and_everything_from_the_oldest_base() {
        let ss = pg::DEFAULT_SEGMENT_SIZE;
        let listed: Vec<Listed> = [
            "00000001.history",
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "000000020000000000000003",
            "00000002.history",
        ]
        .iter()
        .map(|f| Listed {
            file: f.to_string(),
            size: 1,
            name: WalName::parse(f),
            conflict: false,
        })
        .collect();
        let base = |lsn: u64| BaseBackup {
            snapshot: "s".into(),
            name: "n".into(),
            time: chrono::Utc::now(),
            done: chrono::Utc::now(),
            timeline: 1,
            start_lsn: Lsn(lsn),
            end_lsn: None,
            wal_included: false,
            sysid: None,
            complete: true,
        };
        assert!(retention_plan(&listed, ss, &[], None).is_empty());
        let del = retention_plan(
            &listed,
            ss,
            &[base(3 * ss as u64 + 5), base(5 * ss as u64)],
            None,
        );
        assert_eq!(
            del,
            vec![
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup"
            ]
        );
        let del = retention_plan(
            &listed,
            ss,
            &[base(3 * ss as u64)],
            Some(Lsn(2 * ss as u64)),
        );
        assert_eq!(del, vec!["000000010000000000000001"]);
    }
}
