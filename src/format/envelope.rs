//! The sealed envelope used for index files, snapshots, locks and verification records:
//! `magic "DVOB" ‖ kind u8 ‖ version u8 ‖ reserved u16 = 0 ‖ nonce ‖ ciphertext ‖ tag`.
//! The 8-byte header is the associated data, so an index cannot be passed off as a snapshot.

use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, ObjectKind, Result};
use crate::id::ObjectId;

pub const MAGIC: &[u8; 4] = b"DVOB";
pub const HEADER_LEN: usize = 8;
pub const VERSION: u8 = 1;

fn kind_byte(kind: ObjectKind) -> u8 {
    match kind {
        ObjectKind::Index => 1,
        ObjectKind::Snapshot => 2,
        ObjectKind::Lock => 3,
        ObjectKind::Verification => 4,
        // Other kinds have layouts of their own and are never enveloped.
        ObjectKind::Config | ObjectKind::Key | ObjectKind::Pack | ObjectKind::Wal => 0,
    }
}

fn header(kind: ObjectKind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind_byte(kind);
    h[5] = VERSION;
    h
}

pub fn seal(key: &MasterKey, kind: ObjectKind, plaintext: &[u8]) -> Vec<u8> {
    seal_bound(key, kind, &[], plaintext)
}

/// Seal with `bound` (bytes stored in the clear before the envelope) appended to the
/// associated data, so they cannot be altered without the envelope failing to open.
pub fn seal_bound(key: &MasterKey, kind: ObjectKind, bound: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let h = header(kind);
    let sealed = key.seal(&[&h[..], bound].concat(), plaintext);
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&sealed);
    out
}

/// Open an enveloped object. `id` is the object's name, used only to name it in errors.
pub fn open(key: &MasterKey, kind: ObjectKind, id: &ObjectId, bytes: &[u8]) -> Result<Vec<u8>> {
    open_bound(key, kind, id, &[], bytes)
}

/// Open an envelope sealed by [`seal_bound`] with the same `bound` bytes.
pub fn open_bound(
    key: &MasterKey,
    kind: ObjectKind,
    id: &ObjectId,
    bound: &[u8],
    bytes: &[u8],
) -> Result<Vec<u8>> {
    if bytes.len() < HEADER_LEN + SEAL_OVERHEAD {
        return Err(Error::corrupt(kind, id, "truncated envelope"));
    }
    let (h, sealed) = bytes.split_at(HEADER_LEN);
    if &h[..4] != MAGIC {
        return Err(Error::corrupt(kind, id, "bad magic"));
    }
    if h[5] == 0 {
        return Err(Error::corrupt(
            kind,
            id,
            "envelope version 0 is never valid",
        ));
    }
    if h[5] > VERSION {
        return Err(Error::UnsupportedVersion {
            found: h[5] as u32,
            supported: VERSION as u32,
        });
    }
    if h != header(kind) {
        return Err(Error::corrupt(
            kind,
            id,
            "envelope header names another object kind",
        ));
    }
    key.open(&[h, bound].concat(), sealed)
        .ok_or_else(|| Error::corrupt(kind, id, "authentication failed (tampered or truncated)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_bound() {
        let k = MasterKey::generate();
        let b = seal(&k, ObjectKind::Index, b"x");
        let id = ObjectId::of(&b);
        assert_eq!(open(&k, ObjectKind::Index, &id, &b).unwrap(), b"x");
        assert!(open(&k, ObjectKind::Snapshot, &id, &b).is_err());
        let mut forged = b.clone();
        forged[4] = 2; // claim it is a snapshot
        assert!(open(&k, ObjectKind::Snapshot, &id, &forged).is_err());
        assert!(open(&k, ObjectKind::Index, &id, &b[..b.len() - 3]).is_err());
    }

    /// Regression for issue X7: version 0 was reported as "names another object kind".
    #[test]
    fn x7_version_zero_is_damage() {
        let k = MasterKey::generate();
        let mut b = seal(&k, ObjectKind::Snapshot, b"x");
        b[5] = 0;
        let e = open(&k, ObjectKind::Snapshot, &ObjectId::of(&b), &b).unwrap_err();
        assert!(
            e.is_corruption() && e.to_string().contains("version 0"),
            "{e}"
        );
        b[5] = 2;
        let e = open(&k, ObjectKind::Snapshot, &ObjectId::of(&b), &b).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }
}
