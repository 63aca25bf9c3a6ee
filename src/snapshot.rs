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
    #[serde(deserialize_with = "crate::snapshot::json::de_time")]
    pub time: DateTime<Utc>,
    pub host: String,
    /// Series name (`--name`), e.g. "shop".
    pub name: String,
    #[serde(default, deserialize_with = "crate::snapshot::json::de_tags")]
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

/// The strict JSON rules of the manifest's fields that serde's derive does not express
/// (format-spec/07, S3): a `time` must have the RFC 3339 date-time shape, and no tag may appear
/// twice. `format::snapshot` decodes with them.
pub mod json {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};
    use serde::de::{Deserializer, Error as _, MapAccess, Visitor};

    /// Whether `s` has the shape of an RFC 3339 (section 5.6) `date-time` with 1 to 9 fractional
    /// digits: `YYYY-MM-DD` `T`|`t` `hh:mm:ss` [`.` 1–9 digits] then `Z`|`z` or `+hh:mm`|`-hh:mm`.
    /// Ranges (month, day of month, hour, leap second) are chrono's to check.
    pub fn is_rfc3339_shape(s: &str) -> bool {
        let b = s.as_bytes();
        let digits =
            |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
        if b.len() < 20
            || !digits(0..4)
            || b[4] != b'-'
            || !digits(5..7)
            || b[7] != b'-'
            || !digits(8..10)
            || !matches!(b[10], b'T' | b't')
            || !digits(11..13)
            || b[13] != b':'
            || !digits(14..16)
            || b[16] != b':'
            || !digits(17..19)
        {
            return false;
        }
        let mut i = 19;
        if b[i] == b'.' {
            let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&n) {
                return false;
            }
            i += 1 + n;
        }
        match &b[i..] {
            [b'Z' | b'z'] => true,
            [b'+' | b'-', h1, h2, b':', m1, m2] => {
                [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
            }
            _ => false,
        }
    }

    /// Parse a snapshot `time` (07, S3): the shape of [`is_rfc3339_shape`], and a real date and
    /// time (chrono's RFC 3339 parser; seconds `60` is a leap second), converted to UTC.
    pub fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
        if !is_rfc3339_shape(s) {
            return Err(format!(
                "time {s:?} is not an RFC 3339 date-time with at most 9 fractional digits"
            ));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("time {s:?}: {e}"))
    }

    /// `deserialize_with` for `Snapshot::time`.
    pub fn de_time<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        parse_time(&s).map_err(D::Error::custom)
    }

    /// `deserialize_with` for an optional field that may be absent but not `null` (07,
    /// encoding; X31). It lives in `dumpkind`, whose `dump` fields use it too, so that the
    /// layer order has no cycle.
    pub use crate::dumpkind::de_present;

    /// `deserialize_with` for `Snapshot::tags`: an object of strings in which no key appears twice
    /// (serde's map would silently keep the last value).
    pub fn de_tags<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<BTreeMap<String, String>, D::Error> {
        struct Tags;
        impl<'de> Visitor<'de> for Tags {
            type Value = BTreeMap<String, String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object mapping tag names to strings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if out.contains_key(&k) {
                        return Err(A::Error::custom(format!("duplicate tag {k:?}")));
                    }
                    out.insert(k, v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Tags)
    }
}
