//! Pack headers, in three ways per input:
//!
//! (a) `format::pack::parse_trailer` alone: the pack length is the input's first 8 bytes (u64
//!     LE), the trailer the next up to 8 bytes (shorter trailers exercise the length check).
//! (b) The whole input as a pack, read through `pack::read_header` with a bounds-checked range
//!     reader, as fsck and index repair read a pack (trailer → header range → open → parse).
//! (c) The plaintext header parser behind the AEAD: the first 8 bytes are `header_start`, the
//!     rest is sealed as a header under a fixed key and nonce with the header AAD and handed to
//!     `format::pack::decode_header`, so authentication passes and every input reaches the
//!     entry parser and the overlap/bounds checks.
//!
//! Oracles: a parsed trailer places the header exactly before the trailer; `read_header` never
//! asks for bytes outside the pack; accepted entries are in order, inside the blob area, and
//! re-encode to exactly the plaintext (the layout is canonical).

use dumpvault::crypto::{self, MasterKey, NONCE_LEN};
use dumpvault::format::pack::{decode_header, parse_trailer, HEADER_AAD, TRAILER_LEN};
use dumpvault::id::ObjectId;
use dumpvault::pack::read_header;

fn u64_at(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

pub fn run(data: &[u8]) {
    let id = ObjectId([0; 32]);
    let key = MasterKey::from_bytes(&[7u8; 72]).expect("72 bytes make a master key");

    // (a)
    if let Some(pack_len) = u64_at(data) {
        let trailer = &data[8..data.len().min(8 + TRAILER_LEN)];
        if let Ok((start, hlen)) = parse_trailer(&id, pack_len, trailer) {
            assert_eq!(start + hlen as u64 + TRAILER_LEN as u64, pack_len);
        }
    }

    // (b)
    let pack_len = data.len() as u64;
    let _ = read_header(&key, &id, pack_len, |offset, len| {
        let end = offset.checked_add(len).filter(|&end| end <= pack_len);
        let end = end.expect("read_header asked for a range outside the pack");
        Ok(data[offset as usize..end as usize].to_vec())
    });

    // (c)
    if let Some(header_start) = u64_at(data) {
        let plain = &data[8..];
        let sealed = crypto::seal_with_nonce(&key.data_key, &[0; NONCE_LEN], HEADER_AAD, plain);
        if let Ok(entries) = decode_header(&key, &id, header_start, &sealed) {
            let mut again = (entries.len() as u32).to_le_bytes().to_vec();
            let mut next = 0u64;
            for e in &entries {
                assert!(e.offset as u64 >= next, "overlapping entries accepted");
                assert!(e.end() <= header_start, "entry inside the header accepted");
                next = e.end();
                e.encode_into(&mut again);
            }
            assert_eq!(again, plain, "decode accepted a non-canonical header");
        }
    }
}
