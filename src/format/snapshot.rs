//! Snapshot manifests (`snapshots/<id>`, enveloped with kind 2). The plaintext is one UTF-8
//! JSON object (RFC 8259); the field list and meanings are in `format-spec/` and mirror the
//! serde structures in `crate::snapshot`. JSON is used here, and only here, because snapshots
//! are small, rare and the field set will grow; readers must ignore unknown fields.

use crate::error::{Error, ObjectKind, Result};
use crate::id::ObjectId;
use crate::snapshot::Snapshot;

/// Snapshots larger than this are refused (they hold metadata only).
pub const MAX_LEN: usize = 4 * 1024 * 1024;

pub fn encode(s: &Snapshot) -> Vec<u8> {
    serde_json::to_vec(s).expect("snapshot serialization cannot fail")
}

pub fn decode(id: &ObjectId, plain: &[u8]) -> Result<Snapshot> {
    if plain.len() > MAX_LEN {
        return Err(Error::corrupt(
            ObjectKind::Snapshot,
            id,
            "manifest too large",
        ));
    }
    let s: Snapshot = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt(ObjectKind::Snapshot, id, format!("bad manifest: {e}")))?;
    if s.format > 1 {
        return Err(Error::UnsupportedVersion {
            found: s.format,
            supported: 1,
        });
    }
    Ok(s)
}
