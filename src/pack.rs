//! Building and reading packs. A blob is compressed, then sealed with AAD binding its kind and
//! chunk ID; sealed blobs are appended to the open pack, which is closed by its sealed header
//! and trailer once it reaches the target size. Reading a blob re-derives the keyed hash of the
//! plaintext and compares it with the ID, so a restore never emits an unverified byte.

use crate::compress;
use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::format::index::IndexPack;
use crate::format::pack::{self as fmt, BlobEntry, BlobKind, Compression};
use crate::id::{ChunkId, ObjectId, PackId};

/// A compressed and sealed blob, ready to be appended to a pack.
pub struct SealedBlob {
    pub kind: BlobKind,
    pub id: ChunkId,
    pub compression: Compression,
    pub raw_len: u32,
    pub bytes: Vec<u8>,
}

/// Compress (when it helps) and seal one blob.
pub fn seal_blob(
    key: &MasterKey,
    zstd_level: i32,
    kind: BlobKind,
    id: ChunkId,
    plain: &[u8],
) -> SealedBlob {
    let (compression, body) = match compress::compress(zstd_level, plain) {
        Some(c) => (Compression::Zstd, c),
        None => (Compression::None, plain.to_vec()),
    };
    let bytes = key.seal(&fmt::blob_aad(kind, &id), &body);
    SealedBlob {
        kind,
        id,
        compression,
        raw_len: plain.len() as u32,
        bytes,
    }
}

/// Open, decompress and verify one sealed blob read from `pack`.
pub fn open_blob(key: &MasterKey, pack: &PackId, e: &BlobEntry, sealed: &[u8]) -> Result<Vec<u8>> {
    let bad = |d: String| Error::CorruptBlob {
        chunk: e.id.to_hex(),
        pack: pack.to_hex(),
        detail: d,
    };
    if sealed.len() != e.stored_len as usize {
        return Err(bad("short read".into()));
    }
    let body = key
        .open(&fmt::blob_aad(e.kind, &e.id), sealed)
        .ok_or_else(|| bad("authentication failed (tampered, truncated or misplaced)".into()))?;
    let plain = compress::decompress(e.compression, body, e.raw_len as usize).map_err(bad)?;
    if ChunkId::compute(&key.id_key, &plain) != e.id {
        return Err(bad("content does not hash to its chunk id".into()));
    }
    Ok(plain)
}

/// Accumulates sealed blobs into one pack.
pub struct PackWriter {
    target: usize,
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

/// A finished pack: its bytes, its name and the index record that describes it.
pub struct FinishedPack {
    pub bytes: Vec<u8>,
    pub record: IndexPack,
}

impl PackWriter {
    pub fn new(target: u32) -> Self {
        PackWriter {
            target: target as usize,
            buf: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `next_len` more bytes would push the pack past its target.
    pub fn would_overflow(&self, next_len: usize) -> bool {
        !self.is_empty() && self.buf.len() + next_len > self.target
    }

    pub fn add(&mut self, b: SealedBlob) {
        debug_assert!(b.bytes.len() >= SEAL_OVERHEAD);
        if self.buf.capacity() == 0 {
            self.buf.reserve(self.target + 64 * 1024);
        }
        self.entries.push(BlobEntry {
            kind: b.kind,
            compression: b.compression,
            raw_len: b.raw_len,
            offset: self.buf.len() as u32,
            stored_len: b.bytes.len() as u32,
            id: b.id,
        });
        self.buf.extend_from_slice(&b.bytes);
    }

    /// Close the pack: append the sealed header and trailer and name it.
    pub fn finish(&mut self, key: &MasterKey) -> FinishedPack {
        let entries = std::mem::take(&mut self.entries);
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.extend_from_slice(&fmt::encode_header(key, &entries));
        let id = ObjectId::of(&bytes);
        FinishedPack {
            record: IndexPack {
                id,
                len: bytes.len() as u64,
                entries,
            },
            bytes,
        }
    }
}

/// Read a pack's header through `read_range(offset, len)`, given the pack's total length.
pub fn read_header(
    key: &MasterKey,
    id: &PackId,
    pack_len: u64,
    read_range: impl Fn(u64, u64) -> Result<Vec<u8>>,
) -> Result<Vec<BlobEntry>> {
    if pack_len < fmt::TRAILER_LEN as u64 {
        return Err(Error::corrupt(
            crate::error::ObjectKind::Pack,
            id,
            "too short",
        ));
    }
    let trailer = read_range(pack_len - fmt::TRAILER_LEN as u64, fmt::TRAILER_LEN as u64)?;
    let (start, hlen) = fmt::parse_trailer(id, pack_len, &trailer)?;
    let sealed = read_range(start, hlen as u64)?;
    fmt::decode_header(key, id, start, &sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip_and_tamper() {
        let key = MasterKey::generate();
        let mut w = PackWriter::new(1 << 20);
        let blobs: Vec<Vec<u8>> = vec![b"a".repeat(5000), b"hello".to_vec(), vec![]];
        for b in &blobs {
            let id = ChunkId::compute(&key.id_key, b);
            w.add(seal_blob(&key, 3, BlobKind::Data, id, b));
        }
        let p = w.finish(&key);
        assert_eq!(p.record.id, ObjectId::of(&p.bytes));
        let bytes = p.bytes.clone();
        let rr = |o: u64, l: u64| Ok(bytes[o as usize..(o + l) as usize].to_vec());
        let entries = read_header(&key, &p.record.id, bytes.len() as u64, rr).unwrap();
        assert_eq!(entries, p.record.entries);
        for (e, b) in entries.iter().zip(&blobs) {
            let s = bytes[e.offset as usize..e.end() as usize].to_vec();
            assert_eq!(&open_blob(&key, &p.record.id, e, &s).unwrap(), b);
            let mut t = s.clone();
            let last = t.len() - 1;
            t[last] ^= 0x80;
            assert!(open_blob(&key, &p.record.id, e, &t).is_err());
        }
        // A blob moved under another id fails: AAD binds the chunk id.
        let mut moved = entries[1];
        moved.id = entries[0].id;
        let s = bytes[entries[1].offset as usize..entries[1].end() as usize].to_vec();
        assert!(open_blob(&key, &p.record.id, &moved, &s).is_err());
        // Truncated pack: the trailer no longer parses.
        let cut = &p.bytes[..p.bytes.len() - 3];
        let rr = |o: u64, l: u64| Ok(cut[o as usize..(o + l) as usize].to_vec());
        assert!(read_header(&key, &p.record.id, cut.len() as u64, rr).is_err());
    }
}
