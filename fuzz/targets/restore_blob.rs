//! `pack::open_blob`, the last step before restore writes bytes out: AEAD open, bounded zstd
//! decompression, keyed-hash check. Input: `mode u8 ‖ entry (48 bytes) ‖ body`. The entry is
//! parsed with `format::pack::BlobEntry::decode`, so it passed the same checks as one read
//! from an index file or pack header. Then, by `mode % 3`:
//!
//! 0. `body` is the sealed blob exactly as read from the pack (authentication fails unless the
//!    entry and body are consistent; this covers the length and AEAD checks).
//! 1. `body` is the stored content (a zstd frame, or raw bytes), sealed under the fixed key
//!    with the entry's AAD and the entry's `stored_len` set to match, so every input reaches
//!    bounded decompression with a hostile frame and the claimed `raw_len`. When the content
//!    decompresses, the entry's chunk ID is set to the keyed hash of the result first, so the
//!    ID check passes too.
//! 2. `body` is a plaintext: `pack::seal_blob` then `open_blob` must give it back (zstd level
//!    1 to 3, from `mode / 3`).
//!
//! Oracles: in mode 1, `open_blob` succeeds exactly when the content decompresses to
//! `raw_len` bytes, and returns those bytes; in mode 2 the round trip is the identity.

use dumpvault::compress;
use dumpvault::crypto::{self, MasterKey, NONCE_LEN};
use dumpvault::format::bytes::Reader;
use dumpvault::format::pack::{blob_aad, BlobEntry, ENTRY_LEN};
use dumpvault::id::{ChunkId, ObjectId};
use dumpvault::pack::{open_blob, seal_blob};

pub fn run(data: &[u8]) {
    if data.len() < 1 + ENTRY_LEN {
        return;
    }
    let mode = data[0];
    let mut reader = Reader::new(&data[1..1 + ENTRY_LEN]);
    let Ok(mut entry) = BlobEntry::decode(&mut reader) else {
        return;
    };
    let body = &data[1 + ENTRY_LEN..];
    let pack = ObjectId([0; 32]);
    let key = MasterKey::from_bytes(&[7u8; 72]).expect("72 bytes make a master key");

    match mode % 3 {
        0 => {
            let _ = open_blob(&key, &pack, &entry, body);
        }
        1 => {
            let expected = {
                let mut out = vec![0u8; entry.raw_len as usize];
                compress::decompress_into(entry.compression, body, &mut out)
                    .ok()
                    .map(|()| out)
            };
            if let Some(plain) = &expected {
                entry.id = ChunkId::compute(&key.id_key, plain);
            }
            let aad = blob_aad(entry.kind, &entry.id);
            let sealed = crypto::seal_with_nonce(&key.data_key, &[0; NONCE_LEN], &aad, body);
            entry.stored_len = sealed.len() as u32;
            let got = open_blob(&key, &pack, &entry, &sealed);
            match expected {
                Some(plain) => assert_eq!(got.ok(), Some(plain)),
                None => assert!(got.is_err()),
            }
        }
        _ => {
            let level = 1 + (mode / 3 % 3) as i32;
            let id = ChunkId::compute(&key.id_key, body);
            let sealed = seal_blob(&key, level, entry.kind, id, body);
            let e = BlobEntry {
                kind: sealed.kind,
                compression: sealed.compression,
                raw_len: sealed.raw_len,
                offset: 0,
                stored_len: sealed.bytes.len() as u32,
                id,
            };
            let plain =
                open_blob(&key, &pack, &e, &sealed.bytes).expect("seal_blob output must open");
            assert_eq!(plain, body);
        }
    }
}
