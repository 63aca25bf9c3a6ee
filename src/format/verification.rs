//! Verification records (`verifications/<id>`, enveloped with kind 4): the verdict of one
//! restore drill (`dumpvault verify`). The plaintext is one UTF-8 JSON object, like a snapshot
//! manifest; fields and meanings are in `format-spec/11-verifications.md` and are
//! [`Verification`]'s. Readers must ignore unknown fields.

use crate::error::{Error, ObjectKind, Result};
use crate::id::ObjectId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One restore drill's verdict, as stored (JSON inside envelope kind 4).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    /// Record format; 1 for this version.
    pub format: u32,
    /// The snapshot drilled (its object id).
    pub snapshot: ObjectId,
    /// The stream of that snapshot that was restored.
    pub stream: String,
    /// When the drill ended.
    pub time: DateTime<Utc>,
    /// Host the drill ran on.
    pub host: String,
    /// The verifier command and its arguments.
    pub argv: Vec<String>,
    /// The verifier's exit status; `null` when it was killed by a signal or could not start.
    pub exit_status: Option<i32>,
    /// The signal that killed the verifier, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the restore itself verified (every blob, the stream's size and BLAKE3).
    pub restore_verified: bool,
    /// Bytes of the stream written to the verifier.
    pub bytes: u64,
    /// The verdict: `restore_verified` and the verifier exited 0 after reading everything.
    pub ok: bool,
    /// One line saying why, for people.
    pub detail: String,
    /// dumpvault version that ran the drill.
    pub tool_version: String,
    /// Wall-clock milliseconds the drill took.
    pub duration_ms: u64,
}

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
