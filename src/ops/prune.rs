//! `prune`: reclaim the space of data no snapshot needs.
//!
//! Plan (read-only, all that `--dry-run` does): under the exclusive lock, read every index file
//! (one at a time, keeping per pack only its length and totals) and snapshot, mark every blob
//! reachable from a snapshot (tree blobs and data chunks) in a bitmap over the index table on
//! disk (the cache's or a scratch one: ~1 bit plus the fanout's half byte per entry), and
//! classify each pack: *delete* (nothing reachable), *unindexed* (no index lists it, and it
//! is older than the margin), *repack* (its unreachable share exceeds `max_unused`), or
//! *keep*. An unindexed pack younger than `unindexed_margin` (2 × the lock staleness
//! timeout, by the storage's clock) is kept and counted in `kept_unindexed`: it may belong
//! to a backup still writing whose lock went stale (format-spec 09, W9). A chunk stored twice is reachable in
//! one pack only (the one the index resolves it to). If any reachable blob is missing, or its
//! pack is, prune refuses and deletes nothing.
//!
//! Execution, in the order that makes a crash at any point harmless, and that frees space
//! before it needs any (on a full disk, repacking cannot start until something is deleted):
//! 1. delete the unindexed packs (no index lists them, so nothing refers to them);
//! 2. if there are wholly unused packs: write one index file describing every kept and
//!    repacked pack, superseding all old ones; delete the old index files; delete the unused
//!    packs. No kept blob lives in an unused pack, and no index lists it any more when it goes,
//!    so no reader ever resolves a chunk to a pack that is gone (W6);
//! 3. copy the reachable blobs of repacked packs (verified, still sealed) into new packs;
//! 4. write one new index file describing every kept and new pack, superseding the current
//!    ones; delete those; delete the repacked packs.
//!
//! A crash in 1 leaves fewer unindexed packs; in 2 or 4 between the index write and the
//! deletion of the old index files, both indexes are valid (every pack either lists exists);
//! after that, the packs still to delete are unindexed and the next prune deletes them; in 3,
//! new packs that no index lists, which the next prune deletes.
//!
//! Signals: SIGINT/SIGTERM are checked at the safe points between these steps (and between
//! repacked packs); prune then stops with `Error::Interrupted` (exit 130), leaving exactly
//! what a crash at that point would leave, and a second prune finishes the job.
//!
//! Concurrency: prune holds the exclusive lock for its whole run, so no backup (shared lock)
//! can be adding packs or relying on chunks it deletes. See format-spec/08-locks.md.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, ObjectKind, Result};
use crate::failpoint;
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::BlobKind;
use crate::format::tree::TreeNode;
use crate::id::{ObjectId, PackId};
use crate::index::{Bitmap, Hit, Index, Table};
use crate::pack::{PackWriter, SealedBlob};
use crate::repo::{list_ids, Repo};

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack a pack when more than this fraction of its bytes is unreachable.
    pub max_unused: f64,
    /// Delete a pack that no index lists only if it was stored at least this long ago.
    pub unindexed_margin: Duration,
    /// WAL retention: keep the WAL of only the newest N base backups (default: of every
    /// base backup kept), as pgBackRest's archive retention does.
    pub wal_keep_base_backups: Option<usize>,
    /// Entries per index file written; 0 means [`INDEX_FILE_ENTRIES`] (tests set it low).
    pub index_file_entries: usize,
}

/// The default margin for unindexed packs: twice the lock staleness timeout. A backup that
/// is still writing packs has refreshed its lock within `STALE`, unless it was suspended or
/// its clock is skewed; the second `STALE` is the allowance for that (format-spec 09, W9).
pub const UNINDEXED_MARGIN: Duration = Duration::from_secs(2 * crate::lock::STALE.as_secs());

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            unindexed_margin: UNINDEXED_MARGIN,
            wal_keep_base_backups: None,
            index_file_entries: 0,
        }
    }
}

/// An unindexed pack that prune leaves alone, and why.
#[derive(Debug, Clone, Serialize)]
pub struct KeptUnindexed {
    pub pack: PackId,
    /// Seconds since it was stored, by the storage's clock; `None` if the backend cannot tell.
    pub age_secs: Option<u64>,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PrunePlan {
    pub snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub reachable_blobs: usize,
    /// Packs deleted outright (nothing reachable in them).
    pub delete_packs: Vec<PackId>,
    /// Packs no index lists (left by interrupted backups or an interrupted prune), older than
    /// the margin: deleted.
    pub unindexed_packs: Vec<PackId>,
    /// Packs no index lists that are younger than the margin (or of unknown age): kept, since
    /// a backup may still be writing them.
    pub kept_unindexed: Vec<KeptUnindexed>,
    /// The margin applied, in seconds.
    pub unindexed_margin_secs: u64,
    /// Packs whose reachable blobs are copied out before they are deleted.
    pub repack_packs: Vec<PackId>,
    pub keep_packs: usize,
    /// Bytes of packs deleted or repacked.
    pub bytes_freed_gross: u64,
    /// Bytes copied into new packs by repacking.
    pub bytes_repacked: u64,
    /// For each repacked pack (same order): the blobs and bytes in use, which the copy must
    /// find in its header.
    #[serde(skip)]
    repack_used: Vec<Used>,
    #[serde(skip)]
    old_index: Vec<ObjectId>,
    #[serde(skip)]
    index_file_entries: usize,
    /// The mark: the index table the plan was made with, and its reachable entries.
    #[serde(skip)]
    marks: Option<Arc<Marks>>,
}

impl PrunePlan {
    pub fn is_noop(&self) -> bool {
        self.delete_packs.is_empty()
            && self.unindexed_packs.is_empty()
            && self.repack_packs.is_empty()
    }
}

/// Blobs of a pack that are reachable, and their stored bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Used {
    blobs: u64,
    bytes: u64,
}

/// The reachability mark (issue 14): one bit per entry of the index table, set for the entry
/// the table resolves each reachable blob to. A table on disk (the cache's, or a scratch one)
/// plus this bitmap is what bounds prune's memory: about 1 bit and the table's fanout (half a
/// byte) per index entry, where a set of chunk IDs took ~50 bytes.
struct Marks {
    index: Index,
    bits: Bitmap,
}

impl std::fmt::Debug for Marks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Marks({} bits)", self.bits.len())
    }
}

impl Marks {
    fn table(&self) -> &Table {
        self.index.table().expect("marks are made over a table")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneResult {
    pub plan: PrunePlan,
    pub executed: bool,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub new_packs: usize,
    /// The first index file written (null if none); all of them are in `new_index_files`.
    pub new_index: Option<ObjectId>,
    /// The index files that replace the old ones (each holds at most
    /// [`INDEX_FILE_ENTRIES`] entries).
    pub new_index_files: Vec<ObjectId>,
    pub duration_ms: u64,
    /// Restore-drill records of snapshots that no longer exist, or damaged ones, deleted
    /// (or, with a dry run, that would be).
    pub verifications_removed: usize,
    /// Archived WAL files older than every base backup kept, deleted (or, with a dry run,
    /// that would be).
    pub wal_removed: usize,
}

/// Entries per index file prune writes: the index of a large repository is written as many
/// files, so no more than this many entries are ever held at once (the size backup flushes
/// at).
pub const INDEX_FILE_ENTRIES: usize = crate::ops::backup::FLUSH_ENTRIES;

fn missing(what: String) -> Error {
    Error::Damaged(format!(
        "prune refused, nothing was deleted: {what}. Run `dumpvault fsck` to see the damage, and `dumpvault repair` to recover"
    ))
}

/// What the index files say of a pack: the first record of it wins.
struct PackStat {
    len: u64,
    blobs: u64,
    stored: u64,
}

/// Compute the plan. The caller holds the exclusive lock. A cache entry that fails its MAC
/// makes the plan start again over a rebuilt cache (a miss must not look like damage).
pub fn plan(repo: &mut Repo, opts: &PruneOptions) -> Result<PrunePlan> {
    match plan_once(repo, opts)? {
        Some(p) => Ok(p),
        None => {
            repo.drop_tainted_cache();
            plan_once(repo, opts)?.ok_or_else(|| {
                Error::Cache("the index table failed its checks twice; run with --no-cache".into())
            })
        }
    }
}

/// Give the tainted index back to `repo`, so that [`Repo::drop_tainted_cache`] sees it.
fn tainted(repo: &mut Repo, marks: Marks) -> Option<PrunePlan> {
    repo.index = Some(marks.index);
    None
}

/// One attempt at [`plan`]; `None` if the index table turned out tainted.
fn plan_once(repo: &mut Repo, opts: &PruneOptions) -> Result<Option<PrunePlan>> {
    let backend = Arc::clone(&repo.backend);
    let listed: HashMap<PackId, u64> = backend
        .list(ObjectKind::Pack)?
        .into_iter()
        .filter_map(|(n, s)| crate::repo::parse_name(&n).map(|id| (id, s)))
        .collect();
    let old_index = list_ids(backend.as_ref(), ObjectKind::Index)?;
    // The index files, one at a time: per pack only its length and totals are kept.
    let mut packs: HashMap<PackId, PackStat> = HashMap::new();
    for id in &old_index {
        check_interrupted()?;
        let f = repo.read_index_file(id)?;
        for p in f.packs {
            packs.entry(p.id).or_insert_with(|| PackStat {
                len: p.len,
                blobs: p.entries.len() as u64,
                stored: p.entries.iter().map(|e| e.stored_len as u64).sum(),
            });
        }
    }
    for (pid, p) in &packs {
        match listed.get(pid) {
            None => {
                return Err(missing(format!(
                    "pack {pid} is listed in the index but missing"
                )))
            }
            Some(&sz) if sz != p.len => {
                return Err(missing(format!(
                    "pack {pid} has {sz} bytes, the index says {}",
                    p.len
                )))
            }
            _ => {}
        }
    }

    // Mark, over the index table (synced with the listing just taken, under our lock).
    repo.index = None;
    repo.index()?;
    let index = repo.index.take().expect("loaded above");
    if index.table().is_none() {
        return Err(Error::Cache(
            "prune needs an index table on disk, and neither the cache nor a temporary directory could hold one".into(),
        ));
    }
    let positions = index.table().map_or(0, Table::positions);
    let mut marks = Marks {
        index,
        bits: Bitmap::new(positions),
    };
    let mut used: HashMap<PackId, Used> = HashMap::new();
    let mut reachable = 0usize;
    let mut account = |marks: &mut Marks, hit: &Hit, pos: u64| -> bool {
        if !marks.bits.set(pos) {
            return false;
        }
        reachable += 1;
        let u = used.entry(hit.origin.pack).or_default();
        u.blobs += 1;
        u.bytes += hit.entry.stored_len as u64;
        true
    };
    let snaps = list_ids(backend.as_ref(), ObjectKind::Snapshot)?;
    for sid in &snaps {
        // Nothing is written while planning: a signal here stops prune with nothing changed.
        check_interrupted()?;
        let s = repo.read_snapshot(sid)?;
        for st in &s.streams {
            let mut stack = vec![st.root];
            while let Some(id) = stack.pop() {
                let Some((hit, pos)) = marks.table().lookup_pos(&id) else {
                    if marks.table().is_tainted() {
                        return Ok(tainted(repo, marks));
                    }
                    return Err(missing(format!(
                        "blob {id} needed by snapshot {sid} is not in the index"
                    )));
                };
                if !account(&mut marks, &hit, pos) || hit.entry.kind != BlobKind::Tree {
                    continue; // a shared subtree already walked, or a data blob
                }
                let node = TreeNode::decode(&repo.read_blob(&marks.index, &id)?).map_err(|d| {
                    Error::CorruptBlob {
                        chunk: id.to_hex(),
                        pack: "-".into(),
                        detail: d,
                    }
                })?;
                if node.level > 0 {
                    stack.extend(node.entries.iter().map(|c| c.id));
                    continue;
                }
                // A leaf's chunks: look them up on both cores (each lookup reads the disk).
                let table = marks.table();
                let hits: Vec<Option<(Hit, u64)>> = node
                    .entries
                    .par_iter()
                    .map(|c| table.lookup_pos(&c.id))
                    .collect();
                for (c, h) in node.entries.iter().zip(hits) {
                    match h {
                        Some((hit, pos)) => {
                            account(&mut marks, &hit, pos);
                        }
                        None if marks.table().is_tainted() => return Ok(tainted(repo, marks)),
                        None => {
                            return Err(missing(format!(
                                "chunk {} needed by snapshot {sid} is not in the index",
                                c.id
                            )))
                        }
                    }
                }
            }
        }
    }
    if marks.table().is_tainted() {
        return Ok(tainted(repo, marks));
    }

    // Classify packs.
    let mut plan = PrunePlan {
        snapshots: snaps.len(),
        index_files: old_index.len(),
        packs: listed.len(),
        pack_bytes: listed.values().sum(),
        reachable_blobs: reachable,
        old_index,
        index_file_entries: match opts.index_file_entries {
            0 => INDEX_FILE_ENTRIES,
            n => n,
        },
        ..Default::default()
    };
    plan.unindexed_margin_secs = opts.unindexed_margin.as_secs();
    let mut ids: Vec<&PackId> = listed.keys().collect();
    ids.sort();
    let mut now = None;
    for pid in ids {
        let len = listed[pid];
        let Some(p) = packs.get(pid) else {
            // Few packs are unindexed, so one stat/HEAD each is cheap.
            let now = match now {
                Some(t) => t,
                None => *now.insert(storage_now(repo)?),
            };
            match unindexed_age(repo, pid, now)? {
                Some(age) if age >= opts.unindexed_margin => {
                    plan.unindexed_packs.push(*pid);
                    plan.bytes_freed_gross += len;
                }
                age => plan.kept_unindexed.push(KeptUnindexed {
                    pack: *pid,
                    age_secs: age.map(|a| a.as_secs()),
                    reason: match age {
                        Some(a) => format!(
                            "stored {}s ago, less than the {}s margin: a backup may still be writing it",
                            a.as_secs(),
                            opts.unindexed_margin.as_secs()
                        ),
                        None => "the storage does not report when it was stored".into(),
                    },
                }),
            }
            continue;
        };
        // A blob counts as used here only if the index resolves it to this pack.
        let u = used.get(pid).copied().unwrap_or_default();
        // What a repack would free: the unused blobs and their header entries. The pack's own
        // overhead (sealed header, trailer, the used blobs' entries) is not waste: counting it
        // made a pack of many small blobs (a base backup's pages: ~48 bytes of entry per ~0.9
        // KiB blob) look over `max_unused` and be repacked by every prune, whole.
        let unused_bytes = p.blobs.saturating_sub(u.blobs) * crate::format::pack::ENTRY_LEN as u64
            + p.stored.saturating_sub(u.bytes);
        if u.blobs == 0 {
            plan.delete_packs.push(*pid);
            plan.bytes_freed_gross += len;
        } else if unused_bytes as f64 > opts.max_unused * len as f64 {
            plan.repack_packs.push(*pid);
            plan.repack_used.push(u);
            plan.bytes_freed_gross += len;
            plan.bytes_repacked += u.bytes;
        } else {
            plan.keep_packs += 1;
        }
    }
    plan.marks = Some(Arc::new(marks));
    Ok(Some(plan))
}

/// "Now" for the margin: the earlier of this host's clock and the newest lock object's
/// modification time (our own lock, just written, by the storage's clock). Taking the earlier
/// means neither a fast client clock nor a fast store can shorten the margin.
fn storage_now(repo: &Repo) -> Result<SystemTime> {
    let backend = repo.backend.as_ref();
    let mut newest: Option<SystemTime> = None;
    for (name, _) in backend.list(ObjectKind::Lock)? {
        match backend.modified(ObjectKind::Lock, &name) {
            Ok(Some(t)) => newest = newest.max(Some(t)),
            // Released meanwhile (another holder's refresh): nothing to learn from it.
            Ok(None) | Err(Error::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let local = SystemTime::now();
    Ok(newest.map_or(local, |t| t.min(local)))
}

/// How long ago an unindexed pack was stored (`None`: unknown, or "in the future" by `now`,
/// which a skewed writer's clock can produce: both mean "too young to delete").
fn unindexed_age(repo: &Repo, pid: &PackId, now: SystemTime) -> Result<Option<Duration>> {
    match repo.backend.modified(ObjectKind::Pack, &pid.to_hex()) {
        Ok(Some(t)) => Ok(now.duration_since(t).ok()),
        Ok(None) => Ok(None),
        // Listed, then gone: nothing to delete, and deleting a missing pack is a no-op anyway.
        Err(Error::ObjectNotFound { .. }) => Ok(Some(Duration::MAX)),
        Err(e) => Err(e),
    }
}

/// Stop here if SIGINT/SIGTERM arrived: every caller sits at a point where the repository is
/// consistent (see the module doc), so unwinding is as safe as a crash and tidier.
fn check_interrupted() -> Result<()> {
    if crate::signals::interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Test hook: with `DUMPVAULT_PRUNE_PAUSE=<point>`, prune waits at the named point until a
/// signal arrives (at most a minute), so a test can interrupt it at a known step without
/// racing it; or, with `DUMPVAULT_PRUNE_RESUME=<file>`, until that file exists, and then goes
/// on (so a test can run something beside a prune that is half-way, then let it finish);
/// prune then writes `<file>.paused` when it reaches the point.
/// Costs one environment lookup per point.
fn pause_point(name: &str) {
    if std::env::var_os("DUMPVAULT_PRUNE_PAUSE").is_some_and(|v| v == name) {
        let resume = std::env::var_os("DUMPVAULT_PRUNE_RESUME").map(std::path::PathBuf::from);
        if let Some(f) = &resume {
            // Tell the test we are there, so it need not guess from the repository's state.
            let mut paused = f.clone().into_os_string();
            paused.push(".paused");
            let _ = std::fs::write(paused, name);
        }
        let t0 = Instant::now();
        while !crate::signals::interrupted() && t0.elapsed().as_secs() < 60 {
            if resume.as_ref().is_some_and(|f| f.exists()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Delete packs no index lists any more, checking for a signal before each.
fn delete_packs<'a>(repo: &Repo, packs: impl Iterator<Item = &'a PackId>) -> Result<()> {
    for pid in packs {
        check_interrupted()?;
        delete_if_present(repo, ObjectKind::Pack, pid)?;
        // After each deletion, counted over both phases (`prune:mid-pack-delete@N` kills
        // after the Nth).
        failpoint::hit("prune:mid-pack-delete");
    }
    Ok(())
}

/// Write the index files that replace `old`, then delete `old`. The new files hold the pack
/// records of `old` that `keep` accepts (the first record of each pack, read one old file at
/// a time), then `extra`, at most `limit` entries a file (unless one pack has more), each naming all of
/// `old` as superseded. Until the last old file is deleted, a pack may be listed twice, which
/// readers allow (the first record wins).
fn replace_index(
    repo: &mut Repo,
    old: &[ObjectId],
    keep: &dyn Fn(&PackId) -> bool,
    extra: Vec<IndexPack>,
    limit: usize,
    after_write: &str,
    after_delete: &str,
) -> Result<Vec<ObjectId>> {
    check_interrupted()?;
    let mut written: Vec<ObjectId> = Vec::new();
    let mut batch: Vec<IndexPack> = Vec::new();
    let mut entries = 0usize;
    let mut flush = |repo: &mut Repo, batch: &mut Vec<IndexPack>, entries: &mut usize| {
        if batch.is_empty() {
            return Ok(());
        }
        let id = repo.write_index_file(&IndexFile {
            superseded: old.to_vec(),
            packs: std::mem::take(batch),
        })?;
        *entries = 0;
        written.push(id);
        Ok::<(), Error>(())
    };
    let mut seen: HashSet<PackId> = HashSet::new();
    for id in old {
        check_interrupted()?;
        for p in repo.read_index_file(id)?.packs {
            if !keep(&p.id) || !seen.insert(p.id) {
                continue;
            }
            if entries > 0 && entries + p.entries.len() > limit {
                flush(repo, &mut batch, &mut entries)?;
            }
            entries += p.entries.len();
            batch.push(p);
        }
    }
    for p in extra {
        if entries > 0 && entries + p.entries.len() > limit {
            flush(repo, &mut batch, &mut entries)?;
        }
        entries += p.entries.len();
        batch.push(p);
    }
    flush(repo, &mut batch, &mut entries)?;
    failpoint::hit(after_write);
    pause_point(after_write);
    for id in old {
        if !written.contains(id) {
            check_interrupted()?;
            delete_if_present(repo, ObjectKind::Index, id)?;
        }
    }
    failpoint::hit(after_delete);
    pause_point(after_delete);
    Ok(written)
}

/// Carry out a plan. The caller holds the exclusive lock taken before planning. Returns the
/// number of packs written and the index files that replace the old ones.
pub fn execute(repo: &mut Repo, plan: &PrunePlan) -> Result<(usize, Vec<ObjectId>)> {
    let backend = Arc::clone(&repo.backend);
    // The stored index changes from here on: drop the loaded copy first, so that a failure
    // part-way cannot leave this `Repo` deduplicating against packs it has deleted.
    repo.index = None;
    pause_point("prune:planned");
    check_interrupted()?;
    let marks = plan
        .marks
        .clone()
        .ok_or_else(|| Error::InvalidInput("a prune plan without its mark".into()))?;

    // 1. Unindexed packs: nothing refers to them, so they go first, before anything is
    //    written (on a full disk this is the only step that needs no space).
    delete_packs(repo, plan.unindexed_packs.iter())?;
    failpoint::hit("prune:after-unindexed-delete");
    pause_point("prune:after-unindexed-delete");

    // 2. Wholly unused packs: first an index without them (they hold no kept blob, so it
    //    loses nothing), then they go. This frees their space before repacking needs any.
    let mut current = plan.old_index.clone();
    let mut new_index = Vec::new();
    if !plan.delete_packs.is_empty() {
        let gone: HashSet<&PackId> = plan.delete_packs.iter().collect();
        new_index = replace_index(
            repo,
            &current,
            &|p| !gone.contains(p),
            Vec::new(),
            plan.index_file_entries,
            "prune:after-free-index",
            "prune:after-free-index-delete",
        )?;
        current = new_index.clone();
        delete_packs(repo, plan.delete_packs.iter())?;
    }
    if plan.repack_packs.is_empty() {
        repo.index = None;
        return Ok((0, new_index));
    }

    // 3. Repack: copy the sealed blobs as they are (the AEAD binds kind and chunk ID, not the
    //    pack), after verifying each one so damage is never propagated. A pack's used blobs
    //    are those of its (authenticated) header that the mark resolved to it.
    let mut new_packs: Vec<IndexPack> = Vec::new();
    let mut writer = PackWriter::new(repo.config.pack_target);
    let flush = |w: &mut PackWriter, out: &mut Vec<IndexPack>| -> Result<()> {
        if w.is_empty() {
            return Ok(());
        }
        let p = w.finish(&repo.key);
        backend.put(ObjectKind::Pack, &p.record.id.to_hex(), &p.bytes)?;
        out.push(p.record);
        pause_point("prune:new-pack");
        Ok(())
    };
    let table = marks.table();
    for (pid, want) in plan.repack_packs.iter().zip(&plan.repack_used) {
        // Between repacked packs: what was stored so far is unindexed, which is harmless.
        check_interrupted()?;
        let bytes = backend.get(ObjectKind::Pack, &pid.to_hex())?;
        let header = crate::pack::read_header(&repo.key, pid, bytes.len() as u64, |o, l| {
            bytes
                .get(o as usize..(o + l) as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| {
                    Error::corrupt(ObjectKind::Pack, pid, "shorter than its header says")
                })
        })?;
        let keep: Vec<_> = header
            .par_iter()
            .map(|e| {
                table.lookup_pos(&e.id).is_some_and(|(h, pos)| {
                    h.origin.pack == *pid && h.entry.offset == e.offset && marks.bits.get(pos)
                })
            })
            .collect();
        let mut got = Used::default();
        for (e, _) in header.iter().zip(keep).filter(|(_, k)| *k) {
            let sealed = bytes
                .get(e.offset as usize..e.end() as usize)
                .ok_or_else(|| {
                    Error::corrupt(ObjectKind::Pack, pid, "shorter than its index says")
                })?;
            crate::pack::open_blob(&repo.key, pid, e, sealed)?;
            if writer.would_overflow(sealed.len()) {
                flush(&mut writer, &mut new_packs)?;
            }
            writer.add(SealedBlob {
                kind: e.kind,
                id: e.id,
                compression: e.compression,
                raw_len: e.raw_len,
                bytes: sealed.to_vec(),
            });
            got.blobs += 1;
            got.bytes += e.stored_len as u64;
        }
        if got != *want {
            // The header does not hold what the index says: copy nothing more, delete nothing
            // (the packs written so far are unindexed, and the next prune removes them).
            return Err(missing(format!(
                "pack {pid}'s header holds {} of the {} blobs in use the index names there",
                got.blobs, want.blobs
            )));
        }
    }
    flush(&mut writer, &mut new_packs)?;
    failpoint::hit("prune:after-repack");
    pause_point("prune:after-repack");

    // 4. Index files describing everything that stays, then the repacked packs go.
    let n_new = new_packs.len();
    let repacked: HashSet<&PackId> = plan.repack_packs.iter().collect();
    let new_index = replace_index(
        repo,
        &current,
        &|p| !repacked.contains(p),
        new_packs,
        plan.index_file_entries,
        "prune:after-index",
        "prune:after-index-delete",
    )?;
    delete_packs(repo, plan.repack_packs.iter())?;
    repo.index = None;
    Ok((n_new, new_index))
}

fn delete_if_present(repo: &Repo, kind: ObjectKind, id: &ObjectId) -> Result<()> {
    match repo.backend.delete(kind, &id.to_hex()) {
        Ok(()) | Err(Error::ObjectNotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Plan and, unless `dry_run`, execute, under one exclusive lock.
pub fn prune(repo: &mut Repo, opts: &PruneOptions, dry_run: bool) -> Result<PruneResult> {
    let started = Instant::now();
    let lock = repo.lock(true, "prune")?;
    let plan = plan(repo, opts)?;
    // Drill records only describe snapshots: those of removed snapshots go (under the lock,
    // so no `verify` is writing one for a snapshot being judged here).
    let orphans = crate::ops::verify::orphaned_records(repo)?;
    if !dry_run {
        crate::ops::verify::delete_records(repo, &orphans)?;
    }
    let wal_removed = prune_wal(repo, opts, dry_run)?;
    let bytes_before = plan.pack_bytes;
    if dry_run || plan.is_noop() {
        return Ok(PruneResult {
            bytes_after: bytes_before,
            plan,
            executed: false,
            bytes_before,
            new_packs: 0,
            new_index: None,
            new_index_files: Vec::new(),
            duration_ms: started.elapsed().as_millis() as u64,
            verifications_removed: orphans.len(),
            wal_removed,
        });
    }
    // Planning can take long on a big repository: make sure the lock is still ours (not
    // removed by `unlock --all`, not gone stale) before deleting anything.
    if !lock.still_held()? {
        return Err(Error::LockHeld(
            "prune's lock was removed or went stale while planning; nothing was deleted".into(),
        ));
    }
    let (new_packs, new_index_files) = execute(repo, &plan)?;
    let bytes_after = repo
        .backend
        .list(ObjectKind::Pack)?
        .iter()
        .map(|(_, s)| s)
        .sum();
    Ok(PruneResult {
        plan,
        executed: true,
        bytes_before,
        bytes_after,
        new_packs,
        new_index: new_index_files.first().copied(),
        new_index_files,
        duration_ms: started.elapsed().as_millis() as u64,
        verifications_removed: orphans.len(),
        wal_removed,
    })
}

/// WAL retention (ops::wal::retention_plan) for every cluster, under prune's lock. The base
/// backups that count are chosen by `ops::wal::retained_base_backups`: a cluster's own, by
/// system identifier, so two clusters in one repository never cut each other's WAL. The
/// snapshots are read strictly: a damaged one may be a base backup whose WAL is needed.
fn prune_wal(repo: &mut Repo, opts: &PruneOptions, dry_run: bool) -> Result<usize> {
    use crate::ops::wal;
    let clusters = wal::clusters(repo.backend.as_ref())?;
    if clusters.is_empty() {
        return Ok(0);
    }
    let snaps = repo.snapshots()?;
    let bases = wal::base_backups(&snaps);
    let mut removed = 0;
    for c in clusters {
        let listed = wal::list(repo.backend.as_ref(), &c)?;
        let wal::Identity {
            seg_size, sysid, ..
        } = wal::cluster_identity(repo, &c, &listed)?;
        let kept = wal::retained_base_backups(&bases, sysid, opts.wal_keep_base_backups);
        let del = wal::retention_plan(&listed, seg_size, &kept, None);
        removed += del.len();
        if !dry_run {
            wal::delete_files(repo.backend.as_ref(), &c, &del)?;
        }
    }
    Ok(removed)
}
