//! `format::envelope::open`, the wrapper around index files, snapshots and locks. The first
//! input byte picks the kind (index, snapshot, lock); the rest is used twice:
//!
//! (a) as an enveloped object exactly as read from the backend (only the pre-AEAD checks can
//!     pass: magic, version, kind);
//! (b) as `header (8) ‖ plaintext`, sealed under a fixed key and nonce with that header as the
//!     AAD, so authentication passes whenever the header checks do; the opened plaintext then
//!     goes to the kind's decoder, as `Repo::read_index_file`, `Repo::read_snapshot` and
//!     `lock::list_locks` do.
//!
//! Oracles: (b) opens only when the header is the canonical one for the kind, and then yields
//! exactly the plaintext that was sealed.

use dumpvault::crypto::{self, MasterKey, NONCE_LEN};
use dumpvault::error::ObjectKind;
use dumpvault::format::envelope::{self, HEADER_LEN};
use dumpvault::format::{index::IndexFile, lock, snapshot};
use dumpvault::id::ObjectId;

pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let kind = match selector % 3 {
        0 => ObjectKind::Index,
        1 => ObjectKind::Snapshot,
        _ => ObjectKind::Lock,
    };
    let id = ObjectId([0; 32]);
    let key = MasterKey::from_bytes(&[7u8; 72]).expect("72 bytes make a master key");

    // (a)
    let _ = envelope::open(&key, kind, &id, rest);

    // (b)
    if rest.len() < HEADER_LEN {
        return;
    }
    let (header, plain) = rest.split_at(HEADER_LEN);
    let mut object = header.to_vec();
    object.extend_from_slice(&crypto::seal_with_nonce(
        &key.data_key,
        &[0; NONCE_LEN],
        header,
        plain,
    ));
    let Ok(opened) = envelope::open(&key, kind, &id, &object) else {
        return;
    };
    assert_eq!(opened, plain);
    let canonical = envelope::seal(&key, kind, b"");
    assert_eq!(
        header,
        &canonical[..HEADER_LEN],
        "opened under a non-canonical header"
    );
    match kind {
        ObjectKind::Index => {
            let _ = IndexFile::decode(&id, &opened);
        }
        ObjectKind::Snapshot => {
            let _ = snapshot::decode(&id, &opened);
        }
        _ => {
            let _ = lock::decode(&id, &opened);
        }
    }
}
