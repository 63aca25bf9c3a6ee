//! Verification records (`verifications/<id>`, enveloped with kind 4): the verdict of one
//! restore drill (`dumpvault verify`). The plaintext is one UTF-8 JSON object, like a snapshot
//! manifest; fields and meanings are in `format-spec/11-verifications.md` and mirror
//! `ops::verify::Verification`. Readers must ignore unknown fields.

use crate::error::{Error, ObjectKind, Result};
use crate::id::ObjectId;
use crate::ops::verify::Verification;

/// Records larger than this are refused (they hold a few hundred bytes of metadata).
pub const MAX_LEN: usize = 64 * 1024;

pub fn encode(v: &Verification) -> Vec<u8> {
    serde_json::to_vec(v).expect("verification serialization cannot fail")
}

pub fn decode(id: &ObjectId, plain: &[u8]) -> Result<Verification> {
    let kind = ObjectKind::Verification;
    if plain.len() > MAX_LEN {
        return Err(Error::corrupt(kind, id, "record too large"));
    }
    let v: Verification = serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt(kind, id, format!("bad record: {e}")))?;
    if v.format > 1 {
        return Err(Error::UnsupportedVersion {
            found: v.format,
            supported: 1,
        });
    }
    Ok(v)
}
