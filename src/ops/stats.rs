//! `stats`: what the repository holds and what it costs.

use serde::Serialize;

use crate::error::{ObjectKind, Result};
use crate::id::ObjectId;
use crate::repo::Repo;

#[derive(Debug, Clone, Serialize)]
pub struct RepoStats {
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    pub index_files: usize,
    pub blobs: usize,
    /// Sum of the plaintext sizes of all snapshots' streams.
    pub logical_bytes: u64,
    /// logical_bytes / pack_bytes.
    pub dedup_ratio: f64,
    pub chunker: [u32; 3],
    pub pack_target: u32,
    pub format_version: u32,
    /// Per series: the storage requests of its newest backup (what a night costs).
    pub last_backup_requests:
        std::collections::BTreeMap<String, crate::backend::counting::RequestCounts>,
    /// Snapshots that exist but cannot be read: the figures above leave them out. Absent from
    /// the JSON when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_snapshots: Vec<DamagedInfo>,
    /// Archived WAL, one entry per cluster (empty when nothing is archived).
    pub wal: Vec<WalStats>,
}

/// One cluster's archived WAL: what is stored and the ranges it covers.
#[derive(Debug, Clone, Serialize)]
pub struct WalStats {
    pub cluster: String,
    pub files: u64,
    pub stored_bytes: u64,
    pub seg_size: u32,
    /// Per timeline: the archived ranges, the gaps between them, `.partial` files.
    pub timelines: Vec<crate::pg::TimelineReport>,
    pub last_segment: Option<String>,
    pub last_segment_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// A snapshot `stats` could not read, and why.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedInfo {
    pub id: ObjectId,
    pub error: String,
}

pub fn stats(repo: &mut Repo) -> Result<RepoStats> {
    let packs = repo.backend.list(ObjectKind::Pack)?;
    let index_files = repo.backend.list(ObjectKind::Index)?.len();
    // One damaged snapshot must not hide the figures of the others: count what is readable and
    // name the rest (the CLI then exits 7).
    let (snaps, damaged) = repo.snapshots_lenient()?;
    let blobs = repo.index()?.len();
    let mut wal = Vec::new();
    for cluster in crate::ops::wal::clusters(repo.backend.as_ref())? {
        let st = crate::ops::wal::status(repo, &cluster)?;
        wal.push(WalStats {
            cluster,
            files: st.files,
            stored_bytes: st.stored_bytes,
            seg_size: st.seg_size,
            timelines: st.timelines,
            last_segment: st.last_segment,
            last_segment_time: st.last_segment_time,
        });
    }
    let pack_bytes = packs.iter().fold(0u64, |a, (_, s)| a.saturating_add(*s));
    let logical_bytes = snaps
        .iter()
        .fold(0u64, |a, s| a.saturating_add(s.snapshot.total_size()));
    Ok(RepoStats {
        snapshots: snaps.len(),
        packs: packs.len(),
        pack_bytes,
        index_files,
        blobs,
        logical_bytes,
        dedup_ratio: if pack_bytes == 0 {
            0.0
        } else {
            logical_bytes as f64 / pack_bytes as f64
        },
        chunker: [
            repo.config.chunk_min,
            repo.config.chunk_avg,
            repo.config.chunk_max,
        ],
        pack_target: repo.config.pack_target,
        format_version: repo.config.version,
        last_backup_requests: snaps
            .iter()
            .filter_map(|s| s.snapshot.requests.map(|r| (s.snapshot.name.clone(), r)))
            .collect(),
        damaged_snapshots: damaged
            .into_iter()
            .map(|d| DamagedInfo {
                id: d.id,
                error: d.error.to_string(),
            })
            .collect(),
        wal,
    })
}
