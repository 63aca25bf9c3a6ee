//! The snapshot manifest: what a user sees in `snapshots`, and the commit point of a backup.
//! A snapshot holds one or more named streams; each stream names the root of its chunk-list
//! tree and carries the size and BLAKE3 of the whole plaintext, so a restore can prove it
//! reproduced the stream byte for byte.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, ObjectId};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// Manifest format; 1 for this version.
    pub format: u32,
    /// When the dump was taken (`--time` overrides it when importing older dumps).
    #[serde(deserialize_with = "crate::format::snapshot::de_time")]
    pub time: DateTime<Utc>,
    pub host: String,
    /// Series name (`--name`), e.g. "shop".
    pub name: String,
    #[serde(default, deserialize_with = "crate::format::snapshot::de_tags")]
    pub tags: BTreeMap<String, String>,
    /// dumpvault version that wrote it.
    pub tool_version: String,
    /// Wall-clock time the backup took, in milliseconds.
    pub duration_ms: u64,
    pub streams: Vec<Stream>,
    /// Storage requests the backup made up to (not including) writing this manifest: what a
    /// night costs on a metered store. Absent in manifests from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<crate::backend::counting::RequestCounts>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stream {
    /// Stream name inside the snapshot, unique per snapshot ("stdin", a file name, "dump"…).
    pub name: String,
    pub source: Source,
    /// Plaintext length in bytes.
    pub size: u64,
    /// Unkeyed BLAKE3 of the whole plaintext stream, hex.
    pub blake3: String,
    /// Root tree blob of the chunk list.
    pub root: ChunkId,
    /// Data chunks in the stream (with repeats).
    pub chunks: u64,
    /// Data chunks that were new to the repository.
    pub new_chunks: u64,
    /// Stored (compressed, sealed) bytes of the new blobs, trees included.
    pub new_bytes: u64,
    /// What kind of dump the stream was recognised as (`dumpkind`); absent when unknown and in
    /// manifests written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<crate::dumpkind::DumpInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Stdin,
    File {
        path: String,
    },
    Command {
        argv: Vec<String>,
        /// The producer's exit status (always 0 in a stored snapshot: failures never commit).
        exit_status: i32,
    },
}

impl Snapshot {
    pub fn total_size(&self) -> u64 {
        self.streams
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.size))
    }
}

/// A snapshot together with the name it is stored under.
#[derive(Debug, Clone)]
pub struct SnapshotEntry {
    pub id: ObjectId,
    pub snapshot: Snapshot,
}

/// Filters shared by `snapshots`, `restore` and (later) `forget`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub name: Option<String>,
    pub host: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        self.name.as_ref().is_none_or(|n| &s.name == n)
            && self.host.as_ref().is_none_or(|h| &s.host == h)
            && self
                .tags
                .iter()
                .all(|(k, v)| s.tags.get(k).is_some_and(|x| x == v))
    }
}

/// Parse `key=value`.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("tag {s:?} is not key=value")),
    }
}
