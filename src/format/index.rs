//! Index files (`index/<id>`, enveloped with kind 1): for each pack written, its id, length and
//! a copy of its header entries, so a reader finds any blob without opening pack headers.
//!
//! ```text
//! plaintext = superseded count u32 ‖ superseded index ids (32 each)
//!           ‖ pack count u32 ‖ packs
//! pack      = pack id (32) ‖ pack length u64 ‖ entry count u32 ‖ entries (48 bytes each)
//! ```
//! `superseded` lists index files this one replaces (written by prune/repair); a reader that
//! sees both may ignore the superseded ones.

use crate::error::{Error, ObjectKind, Result};
use crate::format::bytes::Reader;
use crate::format::pack::{BlobEntry, ENTRY_LEN};
use crate::id::{ObjectId, PackId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPack {
    pub id: PackId,
    pub len: u64,
    pub entries: Vec<BlobEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexFile {
    pub superseded: Vec<ObjectId>,
    pub packs: Vec<IndexPack>,
}

impl IndexFile {
    pub fn encode(&self) -> Vec<u8> {
        let n: usize = self
            .packs
            .iter()
            .map(|p| 44 + p.entries.len() * ENTRY_LEN)
            .sum();
        let mut b = Vec::with_capacity(8 + self.superseded.len() * 32 + n);
        b.extend_from_slice(&(self.superseded.len() as u32).to_le_bytes());
        for s in &self.superseded {
            b.extend_from_slice(&s.0);
        }
        b.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            b.extend_from_slice(&p.id.0);
            b.extend_from_slice(&p.len.to_le_bytes());
            b.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
            for e in &p.entries {
                e.encode_into(&mut b);
            }
        }
        b
    }

    pub fn decode(id: &ObjectId, plain: &[u8]) -> Result<IndexFile> {
        let bad = |d: &str| Error::corrupt(ObjectKind::Index, id, d);
        let short = || bad("truncated");
        let mut r = Reader::new(plain);
        let ns = r.u32().ok_or_else(short)? as usize;
        if !r.has_items(ns, 32) {
            return Err(short());
        }
        let superseded = (0..ns)
            .map(|_| r.array().map(ObjectId).ok_or_else(short))
            .collect::<Result<Vec<_>>>()?;
        let np = r.u32().ok_or_else(short)? as usize;
        if !r.has_items(np, 44) {
            return Err(short());
        }
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let pid = ObjectId(r.array().ok_or_else(short)?);
            let len = r.u64().ok_or_else(short)?;
            let ne = r.u32().ok_or_else(short)? as usize;
            if !r.has_items(ne, ENTRY_LEN) {
                return Err(short());
            }
            let mut entries = Vec::with_capacity(ne);
            for _ in 0..ne {
                let e = BlobEntry::decode(&mut r).map_err(|d| bad(&format!("pack {pid}: {d}")))?;
                if e.end() > len {
                    return Err(bad(&format!("pack {pid}: entry beyond the pack's length")));
                }
                entries.push(e);
            }
            packs.push(IndexPack {
                id: pid,
                len,
                entries,
            });
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(IndexFile { superseded, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{BlobKind, Compression};
    use crate::id::ChunkId;

    #[test]
    fn round_trip_and_truncation() {
        let f = IndexFile {
            superseded: vec![ObjectId([1; 32])],
            packs: vec![IndexPack {
                id: ObjectId([2; 32]),
                len: 1000,
                entries: vec![BlobEntry {
                    kind: BlobKind::Data,
                    compression: Compression::Zstd,
                    raw_len: 500,
                    offset: 0,
                    stored_len: 300,
                    id: ChunkId([3; 32]),
                }],
            }],
        };
        let b = f.encode();
        let id = ObjectId::of(&b);
        assert_eq!(IndexFile::decode(&id, &b).unwrap(), f);
        for n in 0..b.len() {
            assert!(IndexFile::decode(&id, &b[..n]).is_err());
        }
        // A hostile count must not allocate: claims 2^32-1 superseded ids in 8 bytes.
        assert!(IndexFile::decode(&id, &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
    }
}
