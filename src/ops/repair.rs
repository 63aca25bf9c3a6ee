//! `repair`: recover what can be recovered, never silently.
//!
//! - `repair index` rebuilds the index from the packs. By default it reads every pack whole and
//!   leaves out blobs that fail verification, so the next backup stores those chunks again
//!   instead of deduplicating against damaged copies; `--headers-only` reads just the trailer
//!   and header of each pack (fast, but trusts the blobs). The new index is written as files of
//!   at most [`INDEX_FILE_ENTRIES`] entries as the packs are read (memory stays bounded), each
//!   naming every old file as superseded, before the old ones are deleted, so a crash leaves a
//!   usable index either way. Packs that
//!   are gone or whose header does not open drop out of the index; their chunks become unknown,
//!   so the next backup of the same data uploads them again (self-healing).
//! - `repair snapshots` lists the snapshots a structure check finds unrestorable, and deletes
//!   them only when asked (`--remove`). Listing unrestorable snapshots without removing them
//!   is a finding of damage, so its verdict (`RepairSnapshotsReport::verdict`) is exit 7, as
//!   fsck's; after `--remove` every remaining snapshot is restorable, so it is exit 0.
//!
//! Both stop with `Error::Interrupted` on SIGINT/SIGTERM before they delete anything (repair
//! index: before each new index file, so the files already written sit beside the old ones,
//! every pack they list exists, and the next run supersedes both; repair snapshots: before its
//! first deletion).

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, ObjectKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::id::ObjectId;
use crate::ops::fsck::{self, Affected, FsckOptions};
use crate::ops::prune::INDEX_FILE_ENTRIES;
use crate::repo::{list_ids, Repo};

#[derive(Debug, Clone, Serialize)]
pub struct SkippedPack {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairIndexReport {
    pub packs_indexed: usize,
    pub blobs_indexed: usize,
    /// Blobs left out because they failed verification: (pack, chunk).
    pub bad_blobs: Vec<(String, String)>,
    pub skipped: Vec<SkippedPack>,
    /// The first index file written (null if none); all are in `new_index_files`.
    pub new_index: Option<ObjectId>,
    /// The index files written, at most [`INDEX_FILE_ENTRIES`] entries each.
    pub new_index_files: Vec<ObjectId>,
    pub removed_index_files: Vec<ObjectId>,
}

pub fn repair_index(
    repo: &mut Repo,
    verify_blobs: bool,
    progress: fsck::ProgressFn<'_>,
) -> Result<RepairIndexReport> {
    let _lock = repo.lock(true, "repair index")?;
    let old = list_ids(repo.backend.as_ref(), ObjectKind::Index)?;
    let packs = repo.backend.list(ObjectKind::Pack)?;
    let total = packs.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let (backend_arc, key) = (std::sync::Arc::clone(&repo.backend), repo.key.clone());
    let (backend, key) = (backend_arc.as_ref(), &key);
    // Outer error: storage failure (abort everything: a pack we could not read is not a pack
    // that is gone). Inner: the pack is damaged and is left out.
    type Checked = Result<std::result::Result<(IndexPack, Vec<(String, String)>), SkippedPack>>;
    let check = |(name, len): &(String, u64)| -> Checked {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress("packs", n, total);
        let skip = |e: crate::error::Error| -> Checked {
            if matches!(
                e,
                crate::error::Error::Io { .. } | crate::error::Error::Backend(_)
            ) {
                return Err(e);
            }
            Ok(Err(SkippedPack {
                id: name.clone(),
                reason: e.to_string(),
            }))
        };
        let Some(id) = crate::repo::parse_name(name) else {
            return Ok(Err(SkippedPack {
                id: name.clone(),
                reason: "not a pack name".into(),
            }));
        };
        if !verify_blobs {
            let entries = crate::pack::read_header(key, &id, *len, |o, l| {
                crate::repo::get_range_exact(backend, ObjectKind::Pack, name, o, l)
            });
            let entries = match entries {
                Ok(e) => e,
                Err(e) => return skip(e),
            };
            return Ok(Ok((
                IndexPack {
                    id,
                    len: *len,
                    entries,
                },
                Vec::new(),
            )));
        }
        let bytes = match backend.get(ObjectKind::Pack, name) {
            Ok(b) => b,
            Err(e) => return skip(e),
        };
        let entries = match crate::pack::read_header(key, &id, bytes.len() as u64, |o, l| {
            Ok(bytes[o as usize..(o + l) as usize].to_vec())
        }) {
            Ok(e) => e,
            Err(e) => return skip(e),
        };
        let mut bad = Vec::new();
        let good: Vec<_> = entries
            .into_iter()
            .filter(|e| {
                let ok = crate::pack::open_blob(
                    key,
                    &id,
                    e,
                    &bytes[e.offset as usize..e.end() as usize],
                )
                .is_ok();
                if !ok {
                    bad.push((name.clone(), e.id.to_hex()));
                }
                ok
            })
            .collect();
        Ok(Ok((
            IndexPack {
                id,
                len: bytes.len() as u64,
                entries: good,
            },
            bad,
        )))
    };
    // The packs in order, a few at a time (two in flight on two cores): the new index is
    // written as files of at most INDEX_FILE_ENTRIES entries as it grows, so memory does not
    // grow with the repository (issue 14).
    let mut packs = packs;
    packs.sort();
    let mut written: Vec<ObjectId> = Vec::new();
    let mut batch: Vec<IndexPack> = Vec::new();
    let mut batch_entries = 0usize;
    let (mut packs_indexed, mut blobs_indexed) = (0usize, 0usize);
    let mut skipped = Vec::new();
    let mut bad_blobs = Vec::new();
    let mut flush = |repo: &mut Repo, batch: &mut Vec<IndexPack>, n: &mut usize| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // A signal stops the rebuild before each index file: what was written sits beside the
        // old files (every pack it lists exists), and the next repair supersedes both.
        if crate::signals::interrupted() {
            return Err(Error::Interrupted);
        }
        written.push(repo.write_index_file(&IndexFile {
            superseded: old.clone(),
            packs: std::mem::take(batch),
        })?);
        *n = 0;
        Ok(())
    };
    for group in packs.chunks(16) {
        let results: Vec<Checked> = group.par_iter().with_max_len(1).map(&check).collect();
        for r in results {
            match r? {
                Ok((p, bad)) => {
                    bad_blobs.extend(bad);
                    if p.entries.is_empty() {
                        continue;
                    }
                    if batch_entries > 0 && batch_entries + p.entries.len() > INDEX_FILE_ENTRIES {
                        flush(repo, &mut batch, &mut batch_entries)?;
                    }
                    packs_indexed += 1;
                    blobs_indexed += p.entries.len();
                    batch_entries += p.entries.len();
                    batch.push(p);
                }
                Err(s) => skipped.push(s),
            }
        }
    }
    flush(repo, &mut batch, &mut batch_entries)?;
    let mut removed = Vec::new();
    for id in old {
        if written.contains(&id) {
            continue;
        }
        repo.backend.delete(ObjectKind::Index, &id.to_hex())?;
        removed.push(id);
    }
    // The in-memory index described the old files; reload from the new ones when next needed.
    repo.index = None;
    Ok(RepairIndexReport {
        packs_indexed,
        blobs_indexed,
        bad_blobs,
        skipped,
        new_index: written.first().copied(),
        new_index_files: written,
        removed_index_files: removed,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairSnapshotsReport {
    pub unrestorable: Vec<Affected>,
    pub removed: bool,
}

impl RepairSnapshotsReport {
    /// The outcome as an exit status, for after the report is printed: unrestorable
    /// snapshots that are still there are damage (exit 7, as fsck); none, or all of them
    /// removed, is success (what is left is consistent; their packs are prune's to reclaim).
    pub fn verdict(&self) -> Result<()> {
        if self.removed || self.unrestorable.is_empty() {
            return Ok(());
        }
        Err(Error::Damaged(format!(
            "{} unrestorable snapshot(s); `dumpvault repair snapshots --remove` deletes them",
            self.unrestorable.len()
        )))
    }
}

pub fn repair_snapshots(
    repo: &mut Repo,
    remove: bool,
    progress: fsck::ProgressFn<'_>,
) -> Result<RepairSnapshotsReport> {
    // With --remove, hold the exclusive lock across the check too: a prune running between the
    // check and the deletion could otherwise make healthy snapshots look broken.
    let _lock = if remove {
        Some(repo.lock(true, "repair snapshots")?)
    } else {
        None
    };
    let report = fsck::fsck(repo, &FsckOptions::default(), progress)?;
    let unrestorable = report.damaged_snapshots();
    if remove && !unrestorable.is_empty() {
        for a in &unrestorable {
            if crate::signals::interrupted() {
                return Err(Error::Interrupted);
            }
            repo.backend.delete(ObjectKind::Snapshot, &a.id)?;
        }
    }
    Ok(RepairSnapshotsReport {
        removed: remove && !unrestorable.is_empty(),
        unrestorable,
    })
}
