//! Lock objects (`locks/<id>`, enveloped with kind 3). Plaintext is UTF-8 JSON:
//! `{"host": str, "pid": u32, "exclusive": bool, "created": RFC 3339, "refreshed": RFC 3339,
//!   "operation": str}`. See `crate::lock` for the protocol.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ObjectKind, Result};
use crate::id::ObjectId;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    pub exclusive: bool,
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
    pub operation: String,
}

pub fn encode(l: &LockInfo) -> Vec<u8> {
    serde_json::to_vec(l).expect("lock serialization cannot fail")
}

pub fn decode(id: &ObjectId, plain: &[u8]) -> Result<LockInfo> {
    serde_json::from_slice(plain)
        .map_err(|e| Error::corrupt(ObjectKind::Lock, id, format!("bad lock: {e}")))
}
