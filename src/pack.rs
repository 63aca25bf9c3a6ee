//! Building and reading packs. A blob is compressed, then sealed with AAD binding its kind and
//! chunk ID; sealed blobs are appended to the open pack, which is closed by its sealed header
//! and trailer once it reaches the target size. Reading a blob re-derives the keyed hash of the
//! plaintext and compares it with the ID, so a restore never emits an unverified byte.
//!
//! A backup verifies what it stores in two steps, so that a compression bug or a flipped bit
//! in RAM fails the backup instead of silently storing a blob that can never be restored:
//! `seal_blob_verified` decompresses each compressed body and checks it hashes to the chunk ID
//! before sealing it (in parallel, while the data is still in cache), and `verify_finished`
//! re-opens the finished pack before upload: its name, its header, and every blob's
//! authentication tag, which proves each sealed body is byte for byte the one checked.

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
    let (compression, body) = compress_body(zstd_level, plain);
    seal_body(key, kind, id, compression, &body, plain.len())
}

/// [`seal_blob`], after checking that the compressed body decompresses to bytes that hash to
/// `id`, exactly as a restore will check them. A failure names the chunk; nothing is sealed.
pub fn seal_blob_verified(
    key: &MasterKey,
    zstd_level: i32,
    kind: BlobKind,
    id: ChunkId,
    plain: &[u8],
) -> Result<SealedBlob> {
    let (compression, body) = compress_body(zstd_level, plain);
    check_body(key, &id, compression, &body, plain.len())?;
    Ok(seal_body(key, kind, id, compression, &body, plain.len()))
}

fn compress_body(zstd_level: i32, plain: &[u8]) -> (Compression, std::borrow::Cow<'_, [u8]>) {
    match compress::compress(zstd_level, plain) {
        Some(c) => (Compression::Zstd, c.into()),
        None => (Compression::None, plain.into()),
    }
}

fn seal_body(
    key: &MasterKey,
    kind: BlobKind,
    id: ChunkId,
    compression: Compression,
    body: &[u8],
    raw_len: usize,
) -> SealedBlob {
    SealedBlob {
        kind,
        id,
        compression,
        raw_len: raw_len as u32,
        bytes: key.seal(&fmt::blob_aad(kind, &id), body),
    }
}

thread_local! {
    /// Decompression target of `check_body`, reused: it only grows, to the largest chunk.
    static CHECK_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The pre-seal check: `body` (under `compression`) must decompress to `raw_len` bytes whose
/// keyed hash is `id`.
fn check_body(
    key: &MasterKey,
    id: &ChunkId,
    compression: Compression,
    body: &[u8],
    raw_len: usize,
) -> Result<()> {
    let ok = CHECK_BUF.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < raw_len {
            b.resize(raw_len, 0);
        }
        restores_to(key, id, compression, body, &mut b[..raw_len]).is_ok()
    });
    if ok {
        return Ok(());
    }
    Err(Error::CorruptBlob {
        chunk: id.to_hex(),
        pack: "(not yet packed)".into(),
        detail: "pre-upload verification failed, nothing was uploaded: the compressed blob does not restore to its content (a compression bug or a memory error)".into(),
    })
}

/// Open, decompress and verify one sealed blob read from `pack`.
pub fn open_blob(key: &MasterKey, pack: &PackId, e: &BlobEntry, sealed: &[u8]) -> Result<Vec<u8>> {
    let mut sealed = sealed.to_vec();
    let body = open_sealed(key, pack, e, &mut sealed)?;
    // Allocated only once the header's length is vouched for by an authentic blob.
    let mut plain = vec![0u8; e.raw_len as usize];
    finish_blob(key, pack, e, body, &mut plain)?;
    Ok(plain)
}

/// [`open_blob`] into a caller's buffer: the verified plaintext is written to `dst`, which
/// must be exactly `e.raw_len` bytes. On error `dst` holds unverified bytes and must not be
/// used. Only the sealed (compressed) bytes are copied, to decrypt them in place.
pub fn open_blob_into(
    key: &MasterKey,
    pack: &PackId,
    e: &BlobEntry,
    sealed: &[u8],
    dst: &mut [u8],
) -> Result<()> {
    let mut sealed = sealed.to_vec();
    let body = open_sealed(key, pack, e, &mut sealed)?;
    finish_blob(key, pack, e, body, dst)
}

fn blob_error(pack: &PackId, e: &BlobEntry, detail: String) -> Error {
    Error::CorruptBlob {
        chunk: e.id.to_hex(),
        pack: pack.to_hex(),
        detail,
    }
}

/// Check the length and authenticate `sealed` in place; returns the compressed body.
fn open_sealed<'b>(
    key: &MasterKey,
    pack: &PackId,
    e: &BlobEntry,
    sealed: &'b mut [u8],
) -> Result<&'b [u8]> {
    if sealed.len() != e.stored_len as usize {
        return Err(blob_error(pack, e, "short read".into()));
    }
    key.open_in_place(&fmt::blob_aad(e.kind, &e.id), sealed)
        .ok_or_else(|| {
            blob_error(
                pack,
                e,
                "authentication failed (tampered, truncated or misplaced)".into(),
            )
        })
}

/// Decompress an authentic body into `dst` (exactly `e.raw_len` bytes) and check that it
/// hashes to the chunk ID.
fn finish_blob(
    key: &MasterKey,
    pack: &PackId,
    e: &BlobEntry,
    body: &[u8],
    dst: &mut [u8],
) -> Result<()> {
    if dst.len() != e.raw_len as usize {
        return Err(blob_error(
            pack,
            e,
            format!(
                "{} bytes expected where the header says {}",
                dst.len(),
                e.raw_len
            ),
        ));
    }
    restores_to(key, &e.id, e.compression, body, dst).map_err(|d| blob_error(pack, e, d))
}

/// The one content check of a blob, before sealing and after opening: `body` decompresses to
/// exactly `dst.len()` bytes whose keyed hash is `id`. Err is the detail of the failure.
fn restores_to(
    key: &MasterKey,
    id: &ChunkId,
    compression: Compression,
    body: &[u8],
    dst: &mut [u8],
) -> std::result::Result<(), String> {
    compress::decompress_into(compression, body, dst)?;
    if ChunkId::compute(&key.id_key, dst) != *id {
        return Err("content does not hash to its chunk id".into());
    }
    Ok(())
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

/// Re-open a finished pack as a reader would, before it leaves the process: its bytes hash to
/// its name, the trailer and sealed header parse and agree with the index record, and every
/// blob authenticates under its kind and chunk ID. Together with the check each body passed
/// before it was sealed (`seal_blob_verified`), every blob is then known to restore to its
/// content. Any failure names the pack; the caller must then upload nothing.
pub fn verify_finished(key: &MasterKey, p: &FinishedPack) -> Result<()> {
    let id = &p.record.id;
    let refuse = |detail: String| {
        Error::corrupt(
            crate::error::ObjectKind::Pack,
            id,
            format!("pre-upload verification failed, nothing was uploaded: {detail}"),
        )
    };
    if p.bytes.len() as u64 != p.record.len || ObjectId::of(&p.bytes) != *id {
        return Err(refuse("its bytes do not hash to its name".into()));
    }
    let bytes = &p.bytes;
    let range = |o: u64, l: u64| -> Result<Vec<u8>> {
        let end = o.checked_add(l).filter(|&e| e <= bytes.len() as u64);
        match end {
            Some(e) => Ok(bytes[o as usize..e as usize].to_vec()),
            None => Err(Error::corrupt(
                crate::error::ObjectKind::Pack,
                id,
                "range beyond the pack",
            )),
        }
    };
    let entries =
        read_header(key, id, bytes.len() as u64, range).map_err(|e| refuse(e.to_string()))?;
    if entries != p.record.entries {
        return Err(refuse("its header disagrees with its index record".into()));
    }
    // Serial, on purpose: this runs in the uploader thread while rayon workers may be blocked
    // handing it the next pack; waiting on rayon here could deadlock (and did).
    let mut scratch = Vec::new();
    entries.iter().try_for_each(|e| {
        scratch.clear();
        scratch.extend_from_slice(&bytes[e.offset as usize..e.end() as usize]);
        open_sealed(key, id, e, &mut scratch)
            .map(|_| ())
            .map_err(|err| refuse(err.to_string()))
    })
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

    fn finished(key: &MasterKey) -> FinishedPack {
        let mut w = PackWriter::new(1 << 20);
        for (i, b) in [b"x".repeat(20_000), b"tree node".to_vec(), vec![7u8; 3]]
            .iter()
            .enumerate()
        {
            let kind = if i == 1 {
                BlobKind::Tree
            } else {
                BlobKind::Data
            };
            w.add(seal_blob(key, 3, kind, ChunkId::compute(&key.id_key, b), b));
        }
        w.finish(key)
    }

    #[test]
    fn seal_time_check_refuses_a_body_that_restores_to_other_bytes() {
        let key = MasterKey::generate();
        let plain = b"INSERT INTO t VALUES (1);\n".repeat(500);
        let id = ChunkId::compute(&key.id_key, &plain);
        let b = seal_blob_verified(&key, 3, BlobKind::Data, id, &plain).unwrap();
        assert_eq!(b.compression, Compression::Zstd);
        // A "compressor" that produced the compression of other bytes.
        let mut other = plain.clone();
        other[100] ^= 1;
        let wrong = compress::compress(3, &other).unwrap();
        let err = check_body(&key, &id, Compression::Zstd, &wrong, plain.len()).unwrap_err();
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        assert!(err.to_string().contains("pre-upload verification"), "{err}");
        // Garbage that does not decompress, a wrong length, and raw bytes that differ.
        assert!(check_body(&key, &id, Compression::Zstd, &wrong[1..], plain.len()).is_err());
        assert!(check_body(&key, &id, Compression::Zstd, &wrong, plain.len() + 1).is_err());
        assert!(check_body(&key, &id, Compression::None, &other, plain.len()).is_err());
        check_body(&key, &id, Compression::None, &plain, plain.len()).unwrap();
        // A plain-text flip after hashing (the ID no longer matches the bytes) is caught too.
        assert!(seal_blob_verified(&key, 3, BlobKind::Data, id, &other).is_err());
    }

    #[test]
    fn verify_finished_accepts_a_good_pack() {
        let key = MasterKey::generate();
        verify_finished(&key, &finished(&key)).unwrap();
    }

    #[test]
    fn verify_finished_refuses_any_flipped_byte_and_names_the_pack() {
        let key = MasterKey::generate();
        let good = finished(&key);
        // Every byte of the pack: blobs, header, trailer. The pack is renamed after the flip
        // (as if the damage happened before naming), so only the re-open can catch it.
        for at in 0..good.bytes.len() {
            let mut p = FinishedPack {
                bytes: good.bytes.clone(),
                record: good.record.clone(),
            };
            p.bytes[at] ^= 0x04;
            p.record.id = ObjectId::of(&p.bytes);
            let err = verify_finished(&key, &p).expect_err("flipped byte accepted");
            let msg = err.to_string();
            assert!(msg.contains(&p.record.id.to_hex()), "{msg}");
            assert!(msg.contains("pre-upload verification"), "{msg}");
        }
        // Damage after naming: the name check alone refuses it.
        let mut p = FinishedPack {
            bytes: good.bytes.clone(),
            record: good.record.clone(),
        };
        p.bytes[5] ^= 1;
        assert!(verify_finished(&key, &p).is_err());
        // A record that disagrees with the header (e.g. a wrong raw length) is refused too.
        let mut p = FinishedPack {
            bytes: good.bytes.clone(),
            record: good.record.clone(),
        };
        p.record.entries[0].raw_len += 1;
        assert!(verify_finished(&key, &p).is_err());
        // Another key (a mixed-up master key) cannot open it.
        assert!(verify_finished(&MasterKey::generate(), &good).is_err());
    }
}
