//! Pack files (`data/<xx>/<id>`): sealed blobs back to back, then the sealed header, then an
//! 8-byte trailer. Blob lengths live only in the encrypted header, so chunk sizes are hidden.
//!
//! ```text
//! blob 0 sealed ‖ blob 1 sealed ‖ … ‖ sealed header ‖ trailer
//! sealed blob   = nonce (24) ‖ ciphertext ‖ tag (16), AAD = "DVB1" ‖ blob kind u8 ‖ chunk id (32)
//! sealed header = nonce (24) ‖ ciphertext ‖ tag (16), AAD = "DVH1"
//! header plain  = entry count u32 ‖ entries (48 bytes each, see `BlobEntry`)
//! trailer       = sealed header length u32 ‖ "DVP" ‖ pack version u8 (= 1)
//! ```

use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, ObjectKind, Result};
use crate::format::bytes::Reader;
use crate::id::{ChunkId, PackId};

pub const TRAILER_LEN: usize = 8;
pub const TRAILER_MAGIC: &[u8; 3] = b"DVP";
pub const VERSION: u8 = 1;
pub const ENTRY_LEN: usize = 48;
pub const HEADER_AAD: &[u8; 4] = b"DVH1";
/// Largest plaintext a blob may have: the chunker's ceiling (16 MiB) with room for a tree blob.
pub const MAX_BLOB_RAW: u32 = 16 * 1024 * 1024 + 4096;
/// Largest pack a reader accepts (4 GiB - 1: offsets are u32).
pub const MAX_PACK_LEN: u64 = u32::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Data,
    Tree,
}

impl BlobKind {
    pub fn to_u8(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Zstd,
}

impl Compression {
    pub fn to_u8(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// One blob's place in a pack. 48 bytes on disk:
/// `kind u8 ‖ compression u8 ‖ reserved u16 = 0 ‖ raw_len u32 ‖ offset u32 ‖ stored_len u32 ‖ id (32)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub kind: BlobKind,
    pub compression: Compression,
    /// Plaintext length after decompression.
    pub raw_len: u32,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob (nonce + ciphertext + tag).
    pub stored_len: u32,
    pub id: ChunkId,
}

impl BlobEntry {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.kind.to_u8());
        out.push(self.compression.to_u8());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.id.0);
    }

    /// Decode one entry; `Err` carries what was wrong for the caller to name the object.
    pub fn decode(r: &mut Reader<'_>) -> std::result::Result<BlobEntry, String> {
        let short = || "truncated entry".to_string();
        let kind = r.u8().ok_or_else(short)?;
        let comp = r.u8().ok_or_else(short)?;
        let reserved = r.u16().ok_or_else(short)?;
        let raw_len = r.u32().ok_or_else(short)?;
        let offset = r.u32().ok_or_else(short)?;
        let stored_len = r.u32().ok_or_else(short)?;
        let id = ChunkId(r.array().ok_or_else(short)?);
        let kind = BlobKind::from_u8(kind).ok_or_else(|| format!("unknown blob kind {kind}"))?;
        let compression =
            Compression::from_u8(comp).ok_or_else(|| format!("unknown compression {comp}"))?;
        if reserved != 0 {
            return Err("reserved field is not zero".into());
        }
        if raw_len > MAX_BLOB_RAW {
            return Err(format!("blob length {raw_len} exceeds the maximum"));
        }
        if (stored_len as usize) < SEAL_OVERHEAD {
            return Err("stored length shorter than the seal overhead".into());
        }
        if compression == Compression::None
            && stored_len as usize != raw_len as usize + SEAL_OVERHEAD
        {
            return Err("uncompressed blob with inconsistent lengths".into());
        }
        // Writers compress only when it makes the blob smaller (rule P10).
        if compression == Compression::Zstd
            && stored_len as usize >= raw_len as usize + SEAL_OVERHEAD
        {
            return Err("compressed blob not smaller than its plaintext".into());
        }
        Ok(BlobEntry {
            kind,
            compression,
            raw_len,
            offset,
            stored_len,
            id,
        })
    }

    pub fn end(&self) -> u64 {
        self.offset as u64 + self.stored_len as u64
    }
}

/// AAD of a sealed blob: `"DVB1" ‖ kind ‖ chunk id`.
pub fn blob_aad(kind: BlobKind, id: &ChunkId) -> [u8; 37] {
    let mut a = [0u8; 37];
    a[..4].copy_from_slice(b"DVB1");
    a[4] = kind.to_u8();
    a[5..].copy_from_slice(&id.0);
    a
}

/// Encode the sealed header and trailer that close a pack whose blobs are `entries`.
pub fn encode_header(key: &MasterKey, entries: &[BlobEntry]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        e.encode_into(&mut plain);
    }
    let sealed = key.seal(HEADER_AAD, &plain);
    let mut out = sealed;
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(TRAILER_MAGIC);
    out.push(VERSION);
    out
}

/// Where the sealed header sits, read from the last 8 bytes of a pack of `pack_len` bytes.
pub fn parse_trailer(id: &PackId, pack_len: u64, trailer: &[u8]) -> Result<(u64, u32)> {
    let bad = |d: &str| Error::corrupt(ObjectKind::Pack, id, d);
    if trailer.len() != TRAILER_LEN || pack_len < TRAILER_LEN as u64 {
        return Err(bad("too short for a trailer"));
    }
    if &trailer[4..7] != TRAILER_MAGIC {
        return Err(bad("bad trailer magic (truncated or not a pack)"));
    }
    if trailer[7] == 0 {
        return Err(bad("pack trailer version 0 is never valid"));
    }
    if trailer[7] != VERSION {
        return Err(Error::UnsupportedVersion {
            found: trailer[7] as u32,
            supported: VERSION as u32,
        });
    }
    let hlen = u32::from_le_bytes(trailer[..4].try_into().expect("len checked"));
    let start = (pack_len - TRAILER_LEN as u64)
        .checked_sub(hlen as u64)
        .ok_or_else(|| bad("header length exceeds pack"))?;
    if (hlen as usize) < SEAL_OVERHEAD + 4 {
        return Err(bad("header too short"));
    }
    Ok((start, hlen))
}

/// Open and parse a sealed header that starts at `header_start`; checks every entry lies
/// inside the blob area and that entries do not overlap.
pub fn decode_header(
    key: &MasterKey,
    id: &PackId,
    header_start: u64,
    sealed: &[u8],
) -> Result<Vec<BlobEntry>> {
    let bad = |d: &str| Error::corrupt(ObjectKind::Pack, id, d);
    let plain = key
        .open(HEADER_AAD, sealed)
        .ok_or_else(|| bad("pack header failed authentication"))?;
    let mut r = Reader::new(&plain);
    let count = r.u32().ok_or_else(|| bad("truncated header"))? as usize;
    if !r.has_items(count, ENTRY_LEN) || r.remaining() != count * ENTRY_LEN {
        return Err(bad("header entry count disagrees with its length"));
    }
    let mut entries = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let e = BlobEntry::decode(&mut r).map_err(|d| bad(&d))?;
        if (e.offset as u64) < next || e.end() > header_start {
            return Err(bad("blob entry outside the blob area or overlapping"));
        }
        next = e.end();
        entries.push(e);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(compression: Compression, raw_len: u32, stored_len: u32) -> Vec<u8> {
        let mut b = Vec::new();
        BlobEntry {
            kind: BlobKind::Data,
            compression,
            raw_len,
            offset: 0,
            stored_len,
            id: ChunkId([1; 32]),
        }
        .encode_into(&mut b);
        b
    }

    /// Regression for issue X3: a zstd blob at least as long as its plaintext (which no writer
    /// makes) was accepted.
    #[test]
    fn x3_compressed_blob_not_smaller_than_its_plaintext_is_rejected() {
        let ok = entry(Compression::Zstd, 1000, 1039);
        assert!(BlobEntry::decode(&mut Reader::new(&ok)).is_ok());
        for stored in [1040, 5000] {
            let bad = entry(Compression::Zstd, 1000, stored);
            assert!(
                BlobEntry::decode(&mut Reader::new(&bad)).is_err(),
                "{stored}"
            );
        }
    }

    /// Regression for issue X7: trailer version 0 was reported as "newer than supported".
    #[test]
    fn x7_trailer_version_zero_is_damage() {
        let id = crate::id::ObjectId([0; 32]);
        let mut t = [100, 0, 0, 0, b'D', b'V', b'P', 0];
        let e = parse_trailer(&id, 200, &t).unwrap_err();
        assert!(
            e.is_corruption() && e.to_string().contains("version 0"),
            "{e}"
        );
        t[7] = 2;
        let e = parse_trailer(&id, 200, &t).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 2, .. }),
            "{e}"
        );
    }
}
