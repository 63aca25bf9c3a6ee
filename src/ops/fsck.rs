//! `fsck`: prove the repository intact, or name exactly what is damaged and which snapshots
//! it affects.
//!
//! Levels:
//! - structure (default): config and key files parse; every index file opens; every pack an
//!   index lists exists with the recorded size; every snapshot opens and its chunk-list trees
//!   resolve (tree blobs are read and verified, data chunks are looked up, not read).
//! - `--read-data[-subset]`: additionally downloads the selected packs whole and checks the
//!   pack's name is the BLAKE3 of its bytes, the header opens and agrees with the index, and
//!   every blob opens, decompresses and hashes to its chunk ID; with the full set, the newest
//!   snapshot of each series is also streamed to check its whole-stream BLAKE3.
//! - `--no-key` (see `fsck_no_key`): with no password at all, every object's name against the
//!   BLAKE3 of its bytes, the config's and key files' layouts, and the packs that index files
//!   list in clear text.
//!
//! Problems have a severity: `damage` (data at risk: exit 7) or `warning` (harmless leftovers
//! such as unreferenced packs, which prune removes). Chunks stored in several packs make one
//! aggregated warning, with the chunks listed in its `duplicates` field, not one line each.
//!
//! Memory (issue 14) does not grow with the index beyond about 1 bit and half a byte per entry:
//! the index files are read one at a time into a scratch table of run files in `$TMPDIR`
//! (format-spec/14), never into a map; per pack only its length and a digest of its entries are
//! kept; the walk marks reached entries in a bitmap over the table and reads each tree blob
//! shared by several snapshots once; duplicates and unreferenced packs come from one merged pass
//! over the table in chunk order. Only when damage is found are the snapshots walked again, each
//! whole, to name every one it affects.
//!
//! Advice must match what prune would do: prune refuses to run on a damaged repository, and a
//! pack is called unreferenced only when every snapshot could be read and walked to the end
//! (otherwise the damaged snapshot may still need it: `reachability_unknown`).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Backend;
use crate::error::{Error, ObjectKind, Result};
use crate::format::config::Config;
use crate::format::index::split_object;
use crate::format::keyfile::KeyFile;
use crate::format::pack::{BlobEntry, BlobKind};
use crate::format::tree::TreeNode;
use crate::id::{ChunkId, ObjectId, PackId};
use crate::index::{Bitmap, Index, Table};
use crate::repo::{get_verified, list_ids, Repo};
use crate::snapshot::SnapshotEntry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Damage,
    Warning,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Affected {
    pub id: String,
    pub name: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// config, key, pack, index, snapshot, chunk, object
    pub object: String,
    pub id: String,
    /// Short code: missing, corrupt, size_mismatch, name_mismatch, unreferenced, unindexed,
    /// duplicate, foreign, unreadable.
    pub problem: String,
    pub detail: String,
    /// Every snapshot this problem makes unrestorable (empty for warnings, and for damage the
    /// tool cannot attribute without a key).
    pub affected_snapshots: Vec<Affected>,
    /// For the one `duplicate` problem: every chunk stored in more than one pack. Left out
    /// of the JSON for every other problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<Duplicate>,
}

/// A chunk that index files list in more than one pack.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Duplicate {
    pub chunk: String,
    /// The packs holding a copy, sorted.
    pub packs: Vec<String>,
    /// Stored bytes of the copies beyond the first.
    pub extra_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub key_files: usize,
    pub index_files: usize,
    pub packs: usize,
    pub packs_read: usize,
    pub blobs_verified: u64,
    pub bytes_read: u64,
    pub snapshots: usize,
    pub streams_verified: usize,
    /// Restore-drill records (`verifications/`).
    pub verifications: usize,
    /// Archived WAL files (`wal/`), and of them read whole and verified.
    pub wal_files: usize,
    pub wal_files_read: usize,
    /// Passes repeated because the index changed during a pass that found damage (a
    /// concurrent prune); the report is that of the last pass.
    pub rechecks: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    pub mode: String,
    pub counts: Counts,
    pub problems: Vec<Problem>,
}

impl FsckReport {
    pub fn damaged(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Damage)
    }

    fn add(
        &mut self,
        severity: Severity,
        object: &str,
        id: impl ToString,
        problem: &str,
        detail: impl Into<String>,
    ) -> usize {
        self.problems.push(Problem {
            severity,
            object: object.into(),
            id: id.to_string(),
            problem: problem.into(),
            detail: detail.into(),
            affected_snapshots: Vec::new(),
            duplicates: Vec::new(),
        });
        self.problems.len() - 1
    }

    /// Snapshots this report says are damaged (deduplicated, oldest first).
    pub fn damaged_snapshots(&self) -> Vec<Affected> {
        let mut v: Vec<Affected> = Vec::new();
        for p in self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Damage)
        {
            for a in &p.affected_snapshots {
                if !v.contains(a) {
                    v.push(a.clone());
                }
            }
        }
        v.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        v
    }
}

/// Which packs `--read-data-subset` selects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    All,
    /// Slice n of m (1-based): packs whose id, read as a u32 from its first bytes, is n-1 mod m.
    /// `n/m` with n = day of the month verifies everything over a month.
    Slice(u32, u32),
    /// A random fraction (0..=100) of the packs, drawn anew on every run.
    Percent(f64),
}

impl std::str::FromStr for Subset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Subset> {
        let bad = || {
            Error::InvalidInput(format!(
                "subset {s:?}: use N/M (1 <= N <= M) or P% (0 < P <= 100)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            // 0% would read nothing and still report the repository intact.
            if !(p > 0.0 && p <= 100.0) {
                return Err(Error::InvalidInput(format!(
                    "subset {s:?}: {} (use P% with 0 < P <= 100, or N/M with 1 <= N <= M)",
                    if p == 0.0 {
                        "0% would check no data at all"
                    } else {
                        "not a share of the packs"
                    }
                )));
            }
            return Ok(Subset::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if m == 0 || n == 0 || n > m {
            return Err(bad());
        }
        Ok(Subset::Slice(n, m))
    }
}

impl Subset {
    fn selects(&self, pack: &PackId) -> bool {
        match *self {
            Subset::All => true,
            Subset::Slice(n, m) => {
                u32::from_le_bytes([pack.0[0], pack.0[1], pack.0[2], pack.0[3]]) % m == n - 1
            }
            Subset::Percent(p) => {
                let mut r = [0u8; 4];
                crate::crypto::random_bytes(&mut r);
                (u32::from_le_bytes(r) as f64) < p / 100.0 * (u32::MAX as f64 + 1.0)
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct FsckOptions {
    pub read_data: Option<Subset>,
}

/// Progress: (what, done, total).
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// Errors that mean "could not look" rather than "looked and found damage": the check must
/// stop and say so (exit 10) instead of reporting damage that may not exist.
fn incomplete(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::Backend(_) | Error::CheckIncomplete(_)
    )
}

fn affected(s: &SnapshotEntry) -> Affected {
    Affected {
        id: s.id.to_hex(),
        name: s.snapshot.name.clone(),
        time: s.snapshot.time,
    }
}

/// What a walk of the snapshots learned about their chunk lists.
#[derive(Default)]
struct Walk {
    /// chunks that a snapshot needs and the repository cannot provide → snapshot indexes
    missing: HashMap<ChunkId, (String, BTreeSet<usize>)>,
    /// Snapshots whose walk stopped at a tree blob it could not read (what lies below was not
    /// seen).
    cut: BTreeSet<usize>,
    /// For the watched packs only: the snapshots that read from each.
    pack_users: HashMap<PackId, BTreeSet<usize>>,
    /// For the watched chunks only: the snapshots that need each.
    chunk_users: HashMap<ChunkId, BTreeSet<usize>>,
}

/// How to walk. The *marking* walk (`marks` given) sets the bit of every entry it reaches and
/// does not walk a subtree whose root is already marked: each tree blob is read once however
/// many snapshots share it, and memory is one bit per index entry (issue 14). It attributes a
/// problem only to the first snapshot that meets it, so when it finds any, fsck walks again
/// without marks (every snapshot whole) to name all the snapshots affected.
struct WalkCtx<'a> {
    repo: &'a Repo,
    index: &'a Index,
    present: &'a dyn Fn(&PackId) -> bool,
    watch_packs: &'a HashSet<PackId>,
    watch_chunks: &'a HashSet<ChunkId>,
}

/// Where the table puts `id`: its pack, entry and table position.
fn locate(t: &Table, id: &ChunkId) -> Option<(PackId, BlobEntry, u64)> {
    t.lookup_pos(id)
        .map(|(h, pos)| (h.origin.pack, h.entry, pos))
}

impl WalkCtx<'_> {
    fn table(&self) -> &Table {
        self.index.table().expect("fsck's index is a table")
    }

    /// Walk one stream's tree, recording every problem without stopping at the first one.
    /// Tree blobs are read and verified; data chunks are only looked up.
    fn walk_stream(
        &self,
        root: &ChunkId,
        size: u64,
        snap: usize,
        w: &mut Walk,
        mut marks: Option<&mut Bitmap>,
    ) -> Result<()> {
        let miss = |w: &mut Walk, id: ChunkId, why: String| {
            w.missing
                .entry(id)
                .or_insert_with(|| (why, BTreeSet::new()))
                .1
                .insert(snap);
        };
        let mut stack: Vec<(ChunkId, Option<u8>, u64)> = vec![(*root, None, size)];
        while let Some((id, level, len)) = stack.pop() {
            if self.watch_chunks.contains(&id) {
                w.chunk_users.entry(id).or_default().insert(snap);
            }
            let Some((pack, entry, pos)) = locate(self.table(), &id) else {
                miss(w, id, "not in any index".into());
                w.cut.insert(snap);
                continue;
            };
            if let Some(m) = marks.as_deref_mut() {
                if !m.set(pos) {
                    continue; // this subtree was walked already
                }
            }
            if self.watch_packs.contains(&pack) {
                w.pack_users.entry(pack).or_default().insert(snap);
            }
            if !(self.present)(&pack) {
                miss(w, id, format!("its pack {pack} is missing or damaged"));
                w.cut.insert(snap);
                continue;
            }
            let node = match self.repo.read_blob(self.index, &id) {
                Ok(p) if entry.kind == BlobKind::Tree => TreeNode::decode(&p),
                Ok(_) => Err("is a data blob where a tree blob was expected".to_string()),
                Err(e) if incomplete(&e) => return Err(e),
                Err(e) => Err(e.to_string()),
            };
            let node = match node {
                Ok(n) if level.is_some_and(|l| l != n.level) => Err(format!(
                    "tree level {} where {level:?} was expected",
                    n.level
                )),
                Ok(n) if n.total_len() != Some(len) => Err(format!(
                    "tree covers {:?} bytes, expected {len}",
                    n.total_len()
                )),
                other => other,
            };
            let node = match node {
                Ok(n) => n,
                Err(why) => {
                    miss(w, id, format!("unreadable tree blob: {why}"));
                    w.cut.insert(snap);
                    continue;
                }
            };
            if node.level > 0 {
                for e in node.entries.iter().rev() {
                    stack.push((e.id, Some(node.level - 1), e.len));
                }
                continue;
            }
            // A leaf's chunks: looked up on both cores (each lookup reads the disk).
            let t = self.table();
            let found: Vec<_> = node.entries.par_iter().map(|e| locate(t, &e.id)).collect();
            for (e, f) in node.entries.iter().zip(found) {
                if self.watch_chunks.contains(&e.id) {
                    w.chunk_users.entry(e.id).or_default().insert(snap);
                }
                match f {
                    None => miss(w, e.id, "not in any index".into()),
                    Some((p, be, pos)) => {
                        if let Some(m) = marks.as_deref_mut() {
                            m.set(pos);
                        }
                        if self.watch_packs.contains(&p) {
                            w.pack_users.entry(p).or_default().insert(snap);
                        }
                        if be.kind != BlobKind::Data || be.raw_len as u64 != e.len {
                            miss(w, e.id, "index entry disagrees with the chunk list".into());
                        } else if !(self.present)(&p) {
                            miss(w, e.id, format!("its pack {p} is missing or damaged"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Walk every snapshot (with `marks`: each shared subtree once).
    fn walk_all(
        &self,
        snaps: &[SnapshotEntry],
        mut marks: Option<&mut Bitmap>,
        progress: ProgressFn<'_>,
    ) -> Result<Walk> {
        let mut w = Walk::default();
        for (i, s) in snaps.iter().enumerate() {
            check_interrupted()?;
            progress("snapshots", i as u64, snaps.len() as u64);
            for st in &s.snapshot.streams {
                self.walk_stream(&st.root, st.size, i, &mut w, marks.as_deref_mut())?;
            }
        }
        Ok(w)
    }
}

/// What an index file says of a pack (the first record of it wins): its length and a digest
/// of its entries as encoded, which `--read-data` compares with the pack's own header.
struct PackRec {
    len: u64,
    entries: [u8; 32],
}

fn entries_digest(entries: &[BlobEntry]) -> [u8; 32] {
    let mut b = Vec::with_capacity(entries.len() * crate::format::pack::ENTRY_LEN);
    for e in entries {
        e.encode_into(&mut b);
    }
    *blake3::hash(&b).as_bytes()
}

/// How many times fsck checks again when the index changed under it (a concurrent prune).
/// A prune changes the index at most twice (format-spec 09, steps 3 and 5), so three passes
/// see one of them whole.
const MAX_PASSES: usize = 3;

/// Check the repository. fsck takes no lock (read-only credentials and mounts work), so a
/// `prune` may delete packs and index files while it runs. A pass that found damage is
/// believed only if the set of index files did not change during it: prune deletes an
/// indexed pack only after it has replaced the index files that list it (W6), so anything a
/// prune removed under a pass shows as a changed index listing. Otherwise fsck checks again
/// from fresh listings (`counts.rechecks`), and reports what the last pass found; if the
/// index is still changing after `MAX_PASSES`, it reports "could not check" (exit 10), never
/// damage that may not be there (format-spec 08, "Readers that take no lock").
pub fn fsck(repo: &mut Repo, opts: &FsckOptions, progress: ProgressFn<'_>) -> Result<FsckReport> {
    let mut rechecks = 0;
    loop {
        let before = index_listing(repo)?;
        let mut r = fsck_pass(repo, opts, progress)?;
        r.counts.rechecks = rechecks;
        if !r.damaged() || index_listing(repo)? == before {
            return Ok(r);
        }
        rechecks += 1;
        if rechecks >= MAX_PASSES {
            return Err(Error::CheckIncomplete(format!(
                "the index changed during each of {MAX_PASSES} passes (a prune or repair running?); run fsck again when it is done"
            )));
        }
        // The loaded index (used to stream snapshots) may name packs that are gone.
        repo.index = None;
    }
}

fn index_listing(repo: &Repo) -> Result<BTreeSet<ObjectId>> {
    Ok(list_ids(repo.backend.as_ref(), ObjectKind::Index)?
        .into_iter()
        .collect())
}

fn fsck_pass(repo: &mut Repo, opts: &FsckOptions, progress: ProgressFn<'_>) -> Result<FsckReport> {
    let mut r = FsckReport {
        mode: match opts.read_data {
            None => "structure".into(),
            Some(Subset::All) => "read-data".into(),
            Some(Subset::Slice(n, m)) => format!("read-data-subset {n}/{m}"),
            Some(Subset::Percent(p)) => format!("read-data-subset {p}%"),
        },
        ..Default::default()
    };
    let backend = std::sync::Arc::clone(&repo.backend);
    check_keys(backend.as_ref(), &mut r)?;

    let listed: HashMap<PackId, u64> = list_packs(backend.as_ref(), &mut r)?;
    r.counts.packs = listed.len();

    // Index files, read directly (the cache is not evidence), one at a time, into a scratch
    // table of run files: memory stays bounded however large the index (format-spec/14).
    let index_ids = list_ids(backend.as_ref(), ObjectKind::Index)?;
    r.counts.index_files = index_ids.len();
    let (_scratch_dir, mut scratch) = repo.scratch_cache()?;
    let indexed: std::cell::RefCell<HashMap<PackId, PackRec>> = Default::default();
    let index_problems: std::cell::RefCell<Vec<(ObjectId, String)>> = Default::default();
    let (table, _) = scratch.load_table(&index_ids, |id| match repo.read_index_file(id) {
        Ok(f) => {
            let mut ix = indexed.borrow_mut();
            for p in &f.packs {
                ix.entry(p.id).or_insert_with(|| PackRec {
                    len: p.len,
                    entries: entries_digest(&p.entries),
                });
            }
            Ok(f)
        }
        Err(e) if incomplete(&e) => Err(e),
        Err(e) => {
            index_problems.borrow_mut().push((*id, e.to_string()));
            Ok(crate::format::index::IndexFile::default())
        }
    })?;
    drop(scratch);
    let indexed = indexed.into_inner();
    for (id, e) in index_problems.into_inner() {
        r.add(Severity::Damage, "index", id, "corrupt", e);
    }
    let index = Index::with_table(table);
    let table = index.table().expect("made above");
    let mut bad_packs: HashMap<PackId, usize> = HashMap::new();
    for (pid, PackRec { len, .. }) in &indexed {
        match listed.get(pid) {
            None => {
                let i = r.add(
                    Severity::Damage,
                    "pack",
                    pid,
                    "missing",
                    "an index lists this pack but it does not exist",
                );
                bad_packs.insert(*pid, i);
            }
            Some(sz) if sz != len => {
                let i = r.add(
                    Severity::Damage,
                    "pack",
                    pid,
                    "size_mismatch",
                    format!("{sz} bytes stored, the index says {len} (truncated?)"),
                );
                bad_packs.insert(*pid, i);
            }
            Some(_) => {}
        }
    }
    // Snapshots and their trees.
    let mut snaps = Vec::new();
    // Snapshots that could not be read: their chunks are not counted as referenced.
    let mut unreadable: Vec<ObjectId> = Vec::new();
    for id in list_ids(backend.as_ref(), ObjectKind::Snapshot)? {
        check_interrupted()?;
        match repo.read_snapshot(&id) {
            Ok(s) => snaps.push(SnapshotEntry { id, snapshot: s }),
            // Listed, then deleted by a concurrent forget or repair: not there to check.
            Err(Error::ObjectNotFound { .. }) => {}
            Err(e) if incomplete(&e) => return Err(e),
            Err(e) => {
                unreadable.push(id);
                let i = r.add(Severity::Damage, "snapshot", id, "corrupt", e.to_string());
                // It cannot be restored: name it, so `repair snapshots` can remove it.
                r.problems[i].affected_snapshots = vec![Affected {
                    id: id.to_hex(),
                    name: "(unreadable)".into(),
                    time: DateTime::<Utc>::UNIX_EPOCH,
                }];
            }
        }
    }
    snaps.sort_by_key(|s| (s.snapshot.time, s.id));
    r.counts.snapshots = snaps.len();
    check_verifications(repo, &mut r)?;
    let present = |p: &PackId| !bad_packs.contains_key(p);
    let none_p = HashSet::new();
    let none_c = HashSet::new();
    let mut marks = Bitmap::new(table.positions());
    let mut walk = WalkCtx {
        repo,
        index: &index,
        present: &present,
        watch_packs: &none_p,
        watch_chunks: &none_c,
    }
    .walk_all(&snaps, Some(&mut marks), progress)?;
    if !walk.missing.is_empty() || !bad_packs.is_empty() {
        // Damage: walk every snapshot whole, to name each one it affects.
        let watch: HashSet<PackId> = bad_packs.keys().copied().collect();
        walk = WalkCtx {
            repo,
            index: &index,
            present: &present,
            watch_packs: &watch,
            watch_chunks: &none_c,
        }
        .walk_all(&snaps, None, progress)?;
    }

    // One pass over the table in chunk order: chunks stored in more than one pack, and the
    // packs holding a chunk some snapshot references (any copy of it counts).
    let mut referenced_packs: HashSet<PackId> = HashSet::new();
    let mut duplicates: Vec<Duplicate> = Vec::new();
    {
        let mut group: Vec<(PackId, u64)> = Vec::new();
        let mut group_id: Option<ChunkId> = None;
        let mut group_marked = false;
        let mut close = |id: Option<ChunkId>, group: &mut Vec<(PackId, u64)>, marked: bool| {
            if marked {
                referenced_packs.extend(group.iter().map(|(p, _)| *p));
            }
            group.sort();
            group.dedup_by_key(|(p, _)| *p);
            if let (Some(c), true) = (id, group.len() > 1) {
                duplicates.push(Duplicate {
                    chunk: c.to_hex(),
                    packs: group.iter().map(|(p, _)| p.to_hex()).collect(),
                    extra_bytes: group.iter().skip(1).map(|(_, b)| b).sum(),
                });
            }
            group.clear();
        };
        table.scan(|id, pack, pos, stored| {
            if group_id != Some(*id) {
                close(group_id, &mut group, group_marked);
                group_id = Some(*id);
                group_marked = false;
            }
            group_marked |= marks.get(pos);
            group.push((*pack, stored as u64));
        })?;
        close(group_id, &mut group, group_marked);
    }
    drop(marks);
    if !duplicates.is_empty() {
        duplicates.sort_by(|a, b| a.chunk.cmp(&b.chunk));
        let bytes: u64 = duplicates.iter().map(|d| d.extra_bytes).sum();
        let packs: BTreeSet<&String> = duplicates.iter().flat_map(|d| &d.packs).collect();
        let i = r.add(
            Severity::Warning,
            "chunk",
            "-",
            "duplicate",
            format!(
                "{} chunks are stored in more than one pack ({} packs, {bytes} bytes of extra copies); prune drops the extra copies when it deletes or repacks the packs holding them",
                duplicates.len(),
                packs.len()
            ),
        );
        r.problems[i].duplicates = duplicates;
    }

    // A damaged index file hides the chunks it listed: the snapshots it affects are those
    // needing a chunk that no readable index lists.
    let unindexed_users: BTreeSet<usize> = walk
        .missing
        .values()
        .filter(|(why, _)| why == "not in any index")
        .flat_map(|(_, u)| u.iter().copied())
        .collect();
    for p in r.problems.iter_mut().filter(|p| p.object == "index") {
        p.affected_snapshots = unindexed_users
            .iter()
            .map(|&u| affected(&snaps[u]))
            .collect();
    }
    let mut chunk_problems: Vec<_> = walk.missing.iter().collect();
    chunk_problems.sort_by_key(|(c, _)| **c);
    for (c, (why, users)) in chunk_problems {
        let i = r.add(Severity::Damage, "chunk", c, "missing", why.clone());
        r.problems[i].affected_snapshots = users.iter().map(|&u| affected(&snaps[u])).collect();
    }
    for (pid, &i) in &bad_packs {
        if let Some(users) = walk.pack_users.get(pid) {
            r.problems[i].affected_snapshots = users.iter().map(|&u| affected(&snaps[u])).collect();
        }
    }
    // What prune would do with the leftovers: it refuses to run on the damage found so far.
    let prune_note = if prune_refuses(&r) {
        "prune removes it only once the damage is repaired (it refuses to run on a damaged repository)"
    } else {
        "prune removes it"
    };
    for (pid, _) in listed.iter().filter(|(p, _)| !indexed.contains_key(p)) {
        r.add(
            Severity::Warning,
            "pack",
            pid,
            "unindexed",
            format!("no index lists this pack (left by an interrupted backup?); {prune_note}; repair index adopts it"),
        );
    }
    // `referenced` is complete only if every snapshot was read and walked to its leaves;
    // otherwise a pack no walked tree names may still hold a damaged snapshot's data.
    let mut unwalked: Vec<String> = unreadable.iter().map(|id| id.to_hex()).collect();
    unwalked.extend(walk.cut.iter().map(|&i| snaps[i].id.to_hex()));
    let unknown = unwalked.first().map(|first| {
        let more = match unwalked.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        format!(
            "no snapshot that could be read uses this pack, but whether one needs it cannot be determined because snapshot {first}{more} is damaged; prune refuses to run until the damage is repaired, and removes nothing meanwhile"
        )
    });
    for pid in indexed.keys() {
        if listed.contains_key(pid) && !referenced_packs.contains(pid) {
            match &unknown {
                Some(why) => r.add(
                    Severity::Warning,
                    "pack",
                    pid,
                    "reachability_unknown",
                    why.clone(),
                ),
                None => r.add(
                    Severity::Warning,
                    "pack",
                    pid,
                    "unreferenced",
                    format!("no snapshot uses this pack; {prune_note}"),
                ),
            };
        }
    }

    if let Some(subset) = opts.read_data {
        read_data(
            repo, &index, &indexed, &listed, &bad_packs, subset, &snaps, &mut r, progress,
        )?;
        if subset == Subset::All {
            verify_streams(repo, &snaps, &mut r, progress)?;
        }
    }
    check_wal(repo, &snaps, opts.read_data.is_some(), &mut r, progress)?;
    r.problems
        .sort_by(|a, b| (a.severity, &a.object, &a.id).cmp(&(b.severity, &b.object, &b.id)));
    Ok(r)
}

/// Whether `prune` would refuse to run on what the structure check found so far: it stops on
/// an index file or snapshot it cannot read, an indexed pack that is missing or of the wrong
/// size, and a reachable blob that is not in the index or cannot be read (see ops::prune).
/// Damage it does not look at (key files, drill records, data blobs' contents) does not stop it.
fn prune_refuses(r: &FsckReport) -> bool {
    r.problems.iter().any(|p| {
        p.severity == Severity::Damage
            && match p.object.as_str() {
                "index" | "snapshot" | "pack" => true,
                "chunk" => p.detail != "index entry disagrees with the chunk list",
                _ => false,
            }
    })
}

/// Stop here if SIGINT/SIGTERM arrived (fsck writes nothing, so any point is safe).
fn check_interrupted() -> Result<()> {
    if crate::signals::interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Restore-drill records: a damaged one is damage (named, so it can be deleted: prune does);
/// one whose snapshot is gone is a warning (prune removes it).
fn check_verifications(repo: &Repo, r: &mut FsckReport) -> Result<()> {
    let backend = repo.backend.as_ref();
    let snapshots: HashSet<ObjectId> = list_ids(backend, ObjectKind::Snapshot)?
        .into_iter()
        .collect();
    for id in list_ids(backend, ObjectKind::Verification)? {
        r.counts.verifications += 1;
        match crate::ops::verify::read_record(repo, &id) {
            Ok(v) if !snapshots.contains(&v.snapshot) => {
                r.add(
                    Severity::Warning,
                    "verification",
                    id,
                    "orphaned",
                    format!(
                        "records a drill of snapshot {}, which no longer exists; prune removes it",
                        v.snapshot.short()
                    ),
                );
            }
            // Listed, then deleted by a concurrent prune: nothing to check.
            Ok(_) | Err(Error::ObjectNotFound { .. }) => {}
            Err(e) if incomplete(&e) => return Err(e),
            Err(e @ Error::UnsupportedVersion { .. }) => {
                r.add(
                    Severity::Warning,
                    "verification",
                    id,
                    "unreadable",
                    e.to_string(),
                );
            }
            Err(e) => {
                r.add(
                    Severity::Damage,
                    "verification",
                    id,
                    "corrupt",
                    format!("{e} (a drill record only: no data is at risk; prune removes it)"),
                );
            }
        }
    }
    Ok(())
}

fn check_keys(backend: &dyn Backend, r: &mut FsckReport) -> Result<()> {
    for id in list_ids(backend, ObjectKind::Key)? {
        r.counts.key_files += 1;
        match get_verified(backend, ObjectKind::Key, &id).and_then(|b| KeyFile::decode(&id, &b)) {
            Ok(_) => {}
            Err(e) if incomplete(&e) => return Err(e),
            Err(e) => {
                r.add(Severity::Damage, "key", id, "corrupt", e.to_string());
            }
        }
    }
    if r.counts.key_files == 0 {
        r.add(
            Severity::Damage,
            "key",
            "-",
            "missing",
            "the repository has no key files",
        );
    }
    Ok(())
}

fn list_packs(backend: &dyn Backend, r: &mut FsckReport) -> Result<HashMap<PackId, u64>> {
    let mut out = HashMap::new();
    for (name, size) in backend.list(ObjectKind::Pack)? {
        match crate::repo::parse_name(&name) {
            Some(id) => {
                out.insert(id, size);
            }
            None => {
                r.add(
                    Severity::Warning,
                    "object",
                    format!("data/{name}"),
                    "foreign",
                    "not a dumpvault object name",
                );
            }
        }
    }
    Ok(out)
}

/// One pack read in full: (id, bytes read, blobs verified, problems, chunks that failed), or
/// the error that kept it from being read at all.
type PackCheck = std::result::Result<(PackId, u64, u64, Vec<String>, Vec<ChunkId>), Error>;

#[allow(clippy::too_many_arguments)]
fn read_data(
    repo: &Repo,
    index: &Index,
    indexed: &HashMap<PackId, PackRec>,
    listed: &HashMap<PackId, u64>,
    bad_packs: &HashMap<PackId, usize>,
    subset: Subset,
    snaps: &[SnapshotEntry],
    r: &mut FsckReport,
    progress: ProgressFn<'_>,
) -> Result<()> {
    let mut chosen: Vec<PackId> = listed
        .keys()
        .filter(|p| !bad_packs.contains_key(p) && subset.selects(p))
        .copied()
        .collect();
    chosen.sort();
    let total = chosen.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let (backend, key) = (repo.backend.as_ref(), &repo.key);
    // Two packs in flight: enough to keep both cores busy, bounded memory.
    let results: Vec<PackCheck> = chosen
        .par_iter()
        .with_max_len(1)
        .map(|pid| {
            check_interrupted()?;
            let mut errs = Vec::new();
            let mut bad_chunks = Vec::new();
            let mut verified = 0u64;
            let bytes = match backend.get(ObjectKind::Pack, &pid.to_hex()) {
                Ok(b) => b,
                // Listed, then deleted by a concurrent prune: no index lists it, so nothing
                // needed it (an indexed pack that vanishes is reported, and the index change
                // that must precede its deletion makes `fsck` check again).
                Err(Error::ObjectNotFound { .. }) if !indexed.contains_key(pid) => {
                    return Ok((*pid, 0, 0, vec![], vec![]))
                }
                Err(e) if incomplete(&e) => return Err(e),
                Err(e) => return Ok((*pid, 0, 0, vec![format!("cannot read: {e}")], vec![])),
            };
            if ObjectId::of(&bytes) != *pid {
                errs.push("content does not hash to its name".to_string());
            }
            let len = bytes.len() as u64;
            let header = crate::pack::read_header(key, pid, len, |o, l| {
                Ok(bytes[o as usize..(o + l) as usize].to_vec())
            });
            match header {
                Err(e) => errs.push(format!("header: {e}")),
                Ok(entries) => {
                    if let Some(rec) = indexed.get(pid) {
                        if rec.entries != entries_digest(&entries) {
                            errs.push("pack header disagrees with the index".into());
                        }
                    }
                    for e in &entries {
                        let s = &bytes[e.offset as usize..e.end() as usize];
                        match crate::pack::open_blob(key, pid, e, s) {
                            Ok(_) => verified += 1,
                            Err(_) => bad_chunks.push(e.id),
                        }
                    }
                    if !bad_chunks.is_empty() {
                        errs.push(format!(
                            "{} of {} blobs fail verification (first: chunk {})",
                            bad_chunks.len(),
                            entries.len(),
                            bad_chunks[0]
                        ));
                    }
                }
            }
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress("read-data", n, total);
            Ok((*pid, len, verified, errs, bad_chunks))
        })
        .collect();
    let mut corrupt: Vec<(usize, PackId, Vec<ChunkId>)> = Vec::new();
    for res in results {
        let (pid, len, verified, errs, bad_chunks) = res?;
        if len == 0 && errs.is_empty() {
            continue; // gone before it was read, and not needed (see above)
        }
        r.counts.packs_read += 1;
        r.counts.bytes_read += len;
        r.counts.blobs_verified += verified;
        if errs.is_empty() {
            continue;
        }
        let i = r.add(Severity::Damage, "pack", pid, "corrupt", errs.join("; "));
        corrupt.push((i, pid, bad_chunks));
    }
    if corrupt.is_empty() {
        return Ok(());
    }
    // Who is affected: one walk of every snapshot, watching the damaged packs and blobs. A
    // damaged header or name makes the whole pack suspect; damaged blobs affect exactly the
    // snapshots that need them.
    let watch_packs: HashSet<PackId> = corrupt.iter().map(|(_, p, _)| *p).collect();
    let watch_chunks: HashSet<ChunkId> = corrupt.iter().flat_map(|(_, _, c)| c.clone()).collect();
    let present = |_: &PackId| true;
    // Already checked once; an error here only narrows the attribution.
    let w = WalkCtx {
        repo,
        index,
        present: &present,
        watch_packs: &watch_packs,
        watch_chunks: &watch_chunks,
    }
    .walk_all(snaps, None, &|_, _, _| {})
    .unwrap_or_default();
    for (i, pid, bad_chunks) in corrupt {
        let users: BTreeSet<usize> = if bad_chunks.is_empty() {
            w.pack_users.get(&pid).cloned().unwrap_or_default()
        } else {
            bad_chunks
                .iter()
                .filter_map(|c| w.chunk_users.get(c))
                .flatten()
                .copied()
                .collect()
        };
        r.problems[i].affected_snapshots = users.iter().map(|&u| affected(&snaps[u])).collect();
    }
    Ok(())
}

/// Stream the newest snapshot of each series through restore (every chunk and the whole-stream
/// BLAKE3 verified) into a sink.
fn verify_streams(
    repo: &mut Repo,
    snaps: &[SnapshotEntry],
    r: &mut FsckReport,
    progress: ProgressFn<'_>,
) -> Result<()> {
    let mut newest: HashMap<&str, &SnapshotEntry> = HashMap::new();
    for s in snaps {
        newest.insert(&s.snapshot.name, s);
    }
    let mut list: Vec<&SnapshotEntry> = newest.into_values().collect();
    list.sort_by_key(|s| s.id);
    for (i, s) in list.iter().enumerate() {
        check_interrupted()?;
        progress("streams", i as u64, list.len() as u64);
        for st in &s.snapshot.streams {
            let res =
                crate::ops::restore::restore(repo, s, Some(&st.name), &mut std::io::sink(), |_| {});
            match res {
                Ok(_) => r.counts.streams_verified += 1,
                Err(e) if incomplete(&e) => return Err(e),
                Err(e) => {
                    let i = r.add(
                        Severity::Damage,
                        "snapshot",
                        s.id,
                        "stream_mismatch",
                        format!("stream {:?}: {e}", st.name),
                    );
                    r.problems[i].affected_snapshots = vec![affected(s)];
                }
            }
        }
    }
    Ok(())
}

/// Check without any key: names against BLAKE3, config and key-file layouts, and the packs index
/// files list in clear text. Cannot check: that blobs decrypt, that snapshots' chunk lists
/// resolve, or which snapshots a problem affects.
pub fn fsck_no_key(backend: &dyn Backend, progress: ProgressFn<'_>) -> Result<FsckReport> {
    let mut r = FsckReport {
        mode: "no-key".into(),
        ..Default::default()
    };
    match backend.get(ObjectKind::Config, "config") {
        Err(Error::ObjectNotFound { .. }) => return Err(Error::NoRepository(backend.location())),
        Err(e) => return Err(e),
        Ok(b) => {
            if let Err(e) = Config::decode(&b) {
                if matches!(
                    e,
                    Error::UnsupportedVersion { .. } | Error::UnsupportedFeatures(_)
                ) {
                    return Err(e);
                }
                r.add(
                    Severity::Damage,
                    "config",
                    "config",
                    "corrupt",
                    e.to_string(),
                );
            }
        }
    }
    check_keys(backend, &mut r)?;
    let listed = list_packs(backend, &mut r)?;
    r.counts.packs = listed.len();
    let mut referenced: HashSet<PackId> = HashSet::new();
    for kind in [
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Verification,
        ObjectKind::Pack,
    ] {
        let names = backend.list(kind)?;
        let total = names.len() as u64;
        for (i, (name, _)) in names.into_iter().enumerate() {
            progress(kind.as_str(), i as u64, total);
            let Ok(id) = name.parse::<ObjectId>() else {
                if kind != ObjectKind::Pack {
                    r.add(
                        Severity::Warning,
                        "object",
                        format!("{kind}/{name}"),
                        "foreign",
                        "not a dumpvault object name",
                    );
                }
                continue;
            };
            let bytes = match backend.get(kind, &name) {
                Ok(b) => b,
                Err(e) if incomplete(&e) => return Err(e),
                Err(e) => {
                    r.add(
                        Severity::Damage,
                        kind.as_str(),
                        id,
                        "unreadable",
                        e.to_string(),
                    );
                    continue;
                }
            };
            r.counts.bytes_read += bytes.len() as u64;
            match kind {
                ObjectKind::Index => r.counts.index_files += 1,
                ObjectKind::Snapshot => r.counts.snapshots += 1,
                ObjectKind::Verification => r.counts.verifications += 1,
                _ => r.counts.packs_read += 1,
            }
            if ObjectId::of(&bytes) != id {
                r.add(
                    Severity::Damage,
                    kind.as_str(),
                    id,
                    "name_mismatch",
                    "content does not hash to its name",
                );
                continue;
            }
            if kind == ObjectKind::Index {
                match split_object(&id, &bytes) {
                    Ok((packs, _, _)) => referenced.extend(packs),
                    Err(e) => {
                        r.add(Severity::Damage, "index", id, "corrupt", e.to_string());
                    }
                }
            }
        }
    }
    let mut missing: Vec<_> = referenced
        .iter()
        .filter(|p| !listed.contains_key(p))
        .collect();
    missing.sort();
    for p in missing {
        r.add(Severity::Damage, "pack", p, "missing", "an index lists this pack but it does not exist (the snapshots affected can only be named with the key)");
    }
    let mut extra: Vec<_> = listed.keys().filter(|p| !referenced.contains(p)).collect();
    extra.sort();
    for p in extra {
        r.add(
            Severity::Warning,
            "pack",
            p,
            "unindexed",
            "no index lists this pack",
        );
    }
    check_wal_no_key(backend, &mut r, progress)?;
    r.problems
        .sort_by(|a, b| (a.severity, &a.object, &a.id).cmp(&(b.severity, &b.object, &b.id)));
    Ok(r)
}

/// The WAL archive of every cluster: the chain (gaps, conflicts, base backups that cannot
/// reach consistency), the objects found damaged on the way (history files, the newest
/// segments' headers), stray names, and with `read` every object opened whole. `snaps` are
/// the snapshots this fsck could read (the damaged ones it has reported already). An object
/// deleted since the listing (a concurrent prune's WAL retention, which fsck's lack of a
/// lock allows) is skipped, not damage (N3, X28).
fn check_wal(
    repo: &Repo,
    snaps: &[SnapshotEntry],
    read: bool,
    r: &mut FsckReport,
    progress: ProgressFn<'_>,
) -> Result<()> {
    let incomplete = |e: &Error| !e.is_corruption();
    for cluster in crate::ops::wal::clusters(repo.backend.as_ref())? {
        let st = crate::ops::wal::status_of(repo, &cluster, snaps)?;
        r.counts.wal_files += st.files as usize;
        for p in st.chain_problems() {
            r.add(Severity::Damage, "wal", &cluster, "chain", p);
        }
        for (f, e) in &st.damaged {
            r.add(
                Severity::Damage,
                "wal",
                format!("{cluster}/{f}"),
                "corrupt",
                e.clone(),
            );
        }
        for f in &st.strays {
            r.add(
                Severity::Warning,
                "wal",
                format!("{cluster}/{f}"),
                "foreign",
                "not a WAL file name or conflict copy: not read, never deleted",
            );
        }
        if read {
            let listed = crate::ops::wal::list(repo.backend.as_ref(), &cluster)?;
            let total = listed.len() as u64;
            for (i, l) in listed.iter().enumerate() {
                progress("wal", i as u64, total);
                // Strays are not WAL; damaged objects are reported once, above.
                if l.is_stray() || st.damaged.iter().any(|(f, _)| *f == l.file) {
                    continue;
                }
                match crate::ops::wal::read_file(repo, &cluster, &l.file) {
                    Ok(_) => r.counts.wal_files_read += 1,
                    Err(Error::ObjectNotFound { .. }) => {}
                    Err(e) if incomplete(&e) => return Err(e),
                    Err(e) => {
                        r.add(
                            Severity::Damage,
                            "wal",
                            format!("{cluster}/{}", l.file),
                            "corrupt",
                            e.to_string(),
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Without a key: every WAL object must match its BLAKE3 trailer.
fn check_wal_no_key(
    backend: &dyn Backend,
    r: &mut FsckReport,
    progress: ProgressFn<'_>,
) -> Result<()> {
    let names = backend.list(ObjectKind::Wal)?;
    let total = names.len() as u64;
    for (i, (name, _)) in names.into_iter().enumerate() {
        progress("wal", i as u64, total);
        let file = name.split_once('/').map_or(name.as_str(), |(_, f)| f);
        let (wal_name, conflict) = crate::ops::wal::classify(file);
        if wal_name.is_none() && !conflict {
            r.counts.wal_files += 1;
            r.add(
                Severity::Warning,
                "wal",
                &name,
                "foreign",
                "not a WAL file name or conflict copy: not read, never deleted",
            );
            continue;
        }
        let bytes = match backend.get(ObjectKind::Wal, &name) {
            Ok(b) => b,
            // Deleted since the listing by a concurrent prune's WAL retention (N3, X28).
            Err(Error::ObjectNotFound { .. }) => continue,
            Err(e) if !e.is_corruption() => return Err(e),
            Err(e) => {
                r.add(Severity::Damage, "wal", &name, "unreadable", e.to_string());
                continue;
            }
        };
        r.counts.wal_files += 1;
        r.counts.wal_files_read += 1;
        r.counts.bytes_read += bytes.len() as u64;
        if let Err(e) = crate::format::wal::check_trailer(&name, &bytes) {
            r.add(Severity::Damage, "wal", &name, "corrupt", e.to_string());
        }
    }
    Ok(())
}
