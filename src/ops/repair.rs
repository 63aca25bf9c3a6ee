//! `repair`: recover what can be recovered, never silently.
//!
//! - `repair index` rebuilds the index from pack headers alone (one ranged read of the trailer
//!   and header per pack). The new index file is written, naming every old one as superseded,
//!   before the old ones are deleted, so a crash leaves a usable index either way. Packs that
//!   are gone or whose header does not open drop out of the index; their chunks become unknown,
//!   so the next backup of the same data uploads them again (self-healing).
//! - `repair snapshots` lists the snapshots a structure check finds unrestorable, and deletes
//!   them only when asked (`--remove`).

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{ObjectKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::id::ObjectId;
use crate::ops::fsck::{self, Affected, FsckOptions};
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
    pub skipped: Vec<SkippedPack>,
    pub new_index: Option<ObjectId>,
    pub removed_index_files: Vec<ObjectId>,
}

pub fn repair_index(repo: &mut Repo, progress: fsck::ProgressFn<'_>) -> Result<RepairIndexReport> {
    let _lock = repo.lock(true, "repair index")?;
    let old = list_ids(repo.backend.as_ref(), ObjectKind::Index)?;
    let packs = repo.backend.list(ObjectKind::Pack)?;
    let total = packs.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let (backend, key) = (repo.backend.as_ref(), &repo.key);
    let results: Vec<std::result::Result<IndexPack, SkippedPack>> = packs
        .par_iter()
        .map(|(name, len)| {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress("packs", n, total);
            let skip = |reason: String| SkippedPack {
                id: name.clone(),
                reason,
            };
            let id: ObjectId = name.parse().map_err(|_| skip("not a pack name".into()))?;
            let entries = crate::pack::read_header(key, &id, *len, |o, l| {
                backend.get_range(ObjectKind::Pack, name, o, l)
            })
            .map_err(|e| skip(e.to_string()))?;
            Ok(IndexPack {
                id,
                len: *len,
                entries,
            })
        })
        .collect();
    let mut good = Vec::new();
    let mut skipped = Vec::new();
    for r in results {
        match r {
            Ok(p) => good.push(p),
            Err(s) => skipped.push(s),
        }
    }
    good.sort_by_key(|p| p.id);
    let blobs_indexed = good.iter().map(|p| p.entries.len()).sum();
    let packs_indexed = good.len();
    let new_index = if good.is_empty() {
        None
    } else {
        Some(repo.write_index_file(&IndexFile {
            superseded: old.clone(),
            packs: good,
        })?)
    };
    let mut removed = Vec::new();
    for id in old {
        if Some(id) == new_index {
            continue;
        }
        repo.backend.delete(ObjectKind::Index, &id.to_hex())?;
        removed.push(id);
    }
    // The in-memory index described the old files; reload from the new one when next needed.
    repo.index = None;
    Ok(RepairIndexReport {
        packs_indexed,
        blobs_indexed,
        skipped,
        new_index,
        removed_index_files: removed,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct RepairSnapshotsReport {
    pub unrestorable: Vec<Affected>,
    pub removed: bool,
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
            repo.backend.delete(ObjectKind::Snapshot, &a.id)?;
        }
    }
    Ok(RepairSnapshotsReport {
        removed: remove && !unrestorable.is_empty(),
        unrestorable,
    })
}
