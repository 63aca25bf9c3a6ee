//! Index files (`index/<id>`): for each pack written, its id, length and a copy of its header
//! entries, so a reader finds any blob without opening pack headers.
//!
//! ```text
//! object    = "DVIX" ‖ version u8 = 1 ‖ reserved u8 × 3 = 0 ‖ pack count u32 ‖ pack ids (32 each)
//!           ‖ envelope (kind 1), whose associated data also covers every byte before it
//! plaintext = superseded count u32 ‖ superseded index ids (32 each)
//!           ‖ pack count u32 ‖ packs
//! pack      = pack id (32) ‖ pack length u64 ‖ entry count u32 ‖ entries (48 bytes each)
//! ```
//! `superseded` lists index files this one replaces (written by prune/repair); a reader that
//! sees both may ignore the superseded ones.
//!
//! The clear-text pack list (the same ids, in the same order, as the encrypted body) lets
//! `fsck --no-key` report packs an index refers to that are missing, without any key. It
//! reveals nothing a listing of `data/` does not already show.

use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, ObjectKind, Result};
use crate::format::bytes::Reader;
use crate::format::envelope;
use crate::format::pack::{BlobEntry, ENTRY_LEN, MAX_PACK_LEN, TRAILER_LEN};
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

pub const MAGIC: &[u8; 4] = b"DVIX";
pub const VERSION: u8 = 1;

/// The clear-text prefix of an index object: which packs it describes.
fn prefix(packs: &[PackId]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + packs.len() * 32);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[VERSION, 0, 0, 0]);
    b.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in packs {
        b.extend_from_slice(&p.0);
    }
    b
}

/// Split an index object into its clear-text pack list, the prefix bytes, and the envelope.
/// Needs no key; the list is authenticated only once the envelope is opened.
pub fn split_object<'a>(
    id: &ObjectId,
    bytes: &'a [u8],
) -> Result<(Vec<PackId>, &'a [u8], &'a [u8])> {
    let bad = |d: &str| Error::corrupt(ObjectKind::Index, id, d);
    let mut r = Reader::new(bytes);
    if r.take(4) != Some(MAGIC.as_slice()) {
        return Err(bad("bad magic"));
    }
    let hdr: [u8; 4] = r.array().ok_or_else(|| bad("truncated"))?;
    if hdr[0] > VERSION {
        return Err(Error::UnsupportedVersion {
            found: hdr[0] as u32,
            supported: VERSION as u32,
        });
    }
    if hdr != [VERSION, 0, 0, 0] {
        return Err(bad("bad version or reserved bytes"));
    }
    let n = r.u32().ok_or_else(|| bad("truncated"))? as usize;
    if !r.has_items(n, 32) {
        return Err(bad("pack count exceeds the object"));
    }
    let packs = (0..n)
        .map(|_| r.array().map(ObjectId).ok_or_else(|| bad("truncated")))
        .collect::<Result<Vec<_>>>()?;
    let (pre, env) = bytes.split_at(r.position());
    Ok((packs, pre, env))
}

impl IndexFile {
    /// The stored object: clear-text pack list, then the sealed body.
    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        let ids: Vec<PackId> = self.packs.iter().map(|p| p.id).collect();
        let mut out = prefix(&ids);
        let env = envelope::seal_bound(key, ObjectKind::Index, &out, &self.encode());
        out.extend_from_slice(&env);
        out
    }

    /// Open a stored index object and check its clear-text list against the body.
    pub fn open(key: &MasterKey, id: &ObjectId, bytes: &[u8]) -> Result<IndexFile> {
        let (packs, pre, env) = split_object(id, bytes)?;
        let plain = envelope::open_bound(key, ObjectKind::Index, id, pre, env)?;
        let f = IndexFile::decode(id, &plain)?;
        if !f.packs.iter().map(|p| p.id).eq(packs.iter().copied()) {
            return Err(Error::corrupt(
                ObjectKind::Index,
                id,
                "clear-text pack list disagrees with the sealed body",
            ));
        }
        Ok(f)
    }

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
        let mut seen = std::collections::HashSet::with_capacity(np);
        for _ in 0..np {
            let pid = ObjectId(r.array().ok_or_else(short)?);
            let len = r.u64().ok_or_else(short)?;
            let ne = r.u32().ok_or_else(short)? as usize;
            if !r.has_items(ne, ENTRY_LEN) {
                return Err(short());
            }
            // Rule I6: one record per pack, a length a pack can have, and entries laid out
            // as in a pack header (P11): increasing, not overlapping, before the smallest
            // header (the seal overhead and the count) and the trailer.
            if !seen.insert(pid) {
                return Err(bad(&format!("pack {pid} listed twice")));
            }
            if len > MAX_PACK_LEN {
                return Err(bad(&format!(
                    "pack {pid}: length {len} exceeds the maximum"
                )));
            }
            let blob_area = len.saturating_sub((TRAILER_LEN + SEAL_OVERHEAD + 4) as u64);
            let mut entries = Vec::with_capacity(ne);
            let mut next = 0u64;
            for _ in 0..ne {
                let e = BlobEntry::decode(&mut r).map_err(|d| bad(&format!("pack {pid}: {d}")))?;
                if (e.offset as u64) < next || e.end() > blob_area {
                    return Err(bad(&format!(
                        "pack {pid}: entry outside the blob area or overlapping"
                    )));
                }
                next = e.end();
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
    fn sealed_object_binds_its_clear_text_pack_list() {
        let key = MasterKey::generate();
        let f = IndexFile {
            superseded: vec![],
            packs: vec![IndexPack {
                id: ObjectId([7; 32]),
                len: 10,
                entries: vec![],
            }],
        };
        let b = f.seal(&key);
        let id = ObjectId::of(&b);
        assert_eq!(split_object(&id, &b).unwrap().0, vec![ObjectId([7; 32])]);
        assert_eq!(IndexFile::open(&key, &id, &b).unwrap(), f);
        let mut t = b.clone();
        t[12] ^= 1; // first byte of the clear-text pack id
        assert!(IndexFile::open(&key, &id, &t).is_err());
        for n in 0..b.len() {
            assert!(IndexFile::open(&key, &id, &b[..n]).is_err());
        }
    }

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

    /// Regression for issue X2: index records were not checked like pack headers (order,
    /// overlap, room for the header), nor for duplicate packs or impossible lengths.
    #[test]
    fn x2_rejects_disordered_duplicate_and_oversized_records() {
        let e = |offset, stored_len| BlobEntry {
            kind: BlobKind::Data,
            compression: Compression::None,
            raw_len: stored_len - 40,
            offset,
            stored_len,
            id: ChunkId([3; 32]),
        };
        let pack = |id: u8, len, entries| IndexPack {
            id: ObjectId([id; 32]),
            len,
            entries,
        };
        let decode = |packs| {
            let b = IndexFile {
                superseded: vec![],
                packs,
            }
            .encode();
            IndexFile::decode(&ObjectId::of(&b), &b)
        };
        assert!(decode(vec![pack(1, 1000, vec![e(0, 100), e(100, 100)])]).is_ok());
        // Overlapping, out of order, inside the header's room, duplicated, too long.
        assert!(decode(vec![pack(1, 1000, vec![e(0, 100), e(50, 100)])]).is_err());
        assert!(decode(vec![pack(1, 1000, vec![e(100, 100), e(0, 100)])]).is_err());
        assert!(decode(vec![pack(1, 1000, vec![e(0, 960)])]).is_err());
        assert!(decode(vec![pack(1, 1000, vec![]), pack(1, 1000, vec![])]).is_err());
        assert!(decode(vec![pack(1, 1 << 32, vec![])]).is_err());
    }
}
