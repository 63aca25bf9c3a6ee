//! Archived WAL files (`wal/<cluster>/<file name>`, format-spec/13-wal.md): one object per
//! file PostgreSQL hands to `archive_command`, never chunked, so a year of archiving adds
//! objects, not index entries.
//!
//! ```text
//! off   len  field
//!   0     8  magic "DVWALOBJ"
//!   8     4  version (u32) = 1
//!  12     4  WAL segment size from the segment's long page header (u32; 0: not a segment)
//!  16     8  source file modification time, Unix milliseconds (i64)
//!  24     4  H: length of the sealed header (u32, <= 64 KiB)
//!  28     H  sealed header: nonce ‖ ciphertext ‖ tag; associated data = bytes 0..28 ‖
//!            "/" ‖ cluster ‖ "/" ‖ file name. Plaintext:
//!              u64 plaintext length, u64 system identifier (0: unknown),
//!              32 keyed BLAKE3 of the plaintext (id key), i64 archived at (Unix ms),
//!              u32 frame count F (<= 1024), F × { u32 sealed length, u32 raw length,
//!              u8 compression (0 none, 1 zstd) }
//!  28+H   …  F sealed frames, frame i with associated data bytes 0..28 ‖ keyed id ‖ u32 i
//!  end-32 32 BLAKE3 (unkeyed) of every byte before it
//! ```
//! The trailer lets `fsck --no-key` prove an object intact without a key (decision 2, kept
//! for objects that PostgreSQL, not their content, names). Frames are at most
//! [`FRAME_LEN`] raw bytes, so that sealing and opening run on every core.

use rayon::prelude::*;

use crate::crypto::{MasterKey, SEAL_OVERHEAD};
use crate::error::{Error, ObjectKind, Result};
use crate::format::bytes::Reader;
use crate::format::pack::Compression;

pub const MAGIC: &[u8; 8] = b"DVWALOBJ";
pub const VERSION: u32 = 1;
pub const PREFIX_LEN: usize = 28;
pub const TRAILER_LEN: usize = 32;
/// Raw bytes per frame.
pub const FRAME_LEN: usize = 2 << 20;
pub const MAX_FRAMES: usize = 1024;
const MAX_HEADER: usize = 64 * 1024;

/// What the clear prefix says (readable without a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub seg_size: u32,
    pub mtime_ms: i64,
    pub header_len: u32,
}

/// What the sealed header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub plain_len: u64,
    pub sysid: u64,
    pub keyed_id: [u8; 32],
    pub archived_ms: i64,
    pub frames: Vec<FrameInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub sealed_len: u32,
    pub raw_len: u32,
    pub compression: Compression,
}

/// A frame before sealing: its raw length and its (possibly compressed) bytes.
pub struct Frame {
    pub raw_len: u32,
    pub compression: Compression,
    pub bytes: Vec<u8>,
}

fn prefix_bytes(p: &Prefix) -> [u8; PREFIX_LEN] {
    let mut b = [0u8; PREFIX_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&p.seg_size.to_le_bytes());
    b[16..24].copy_from_slice(&p.mtime_ms.to_le_bytes());
    b[24..28].copy_from_slice(&p.header_len.to_le_bytes());
    b
}

fn header_aad(prefix: &[u8], cluster: &str, file: &str) -> Vec<u8> {
    [prefix, b"/", cluster.as_bytes(), b"/", file.as_bytes()].concat()
}

fn frame_aad(prefix: &[u8], keyed_id: &[u8; 32], i: u32) -> Vec<u8> {
    [prefix, &keyed_id[..], &i.to_le_bytes()].concat()
}

/// Build the object for `file` of `cluster`. `frames` hold the plaintext in order.
#[allow(clippy::too_many_arguments)]
pub fn encode(
    key: &MasterKey,
    cluster: &str,
    file: &str,
    seg_size: u32,
    mtime_ms: i64,
    plain_len: u64,
    sysid: u64,
    keyed_id: [u8; 32],
    archived_ms: i64,
    frames: Vec<Frame>,
) -> Vec<u8> {
    let header_len = (8 + 8 + 32 + 8 + 4 + frames.len() * 9 + SEAL_OVERHEAD) as u32;
    let prefix = prefix_bytes(&Prefix {
        seg_size,
        mtime_ms,
        header_len,
    });
    let sealed: Vec<Vec<u8>> = frames
        .par_iter()
        .enumerate()
        .map(|(i, f)| key.seal(&frame_aad(&prefix, &keyed_id, i as u32), &f.bytes))
        .collect();
    let mut h = Vec::with_capacity(header_len as usize);
    h.extend_from_slice(&plain_len.to_le_bytes());
    h.extend_from_slice(&sysid.to_le_bytes());
    h.extend_from_slice(&keyed_id);
    h.extend_from_slice(&archived_ms.to_le_bytes());
    h.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for (f, s) in frames.iter().zip(&sealed) {
        h.extend_from_slice(&(s.len() as u32).to_le_bytes());
        h.extend_from_slice(&f.raw_len.to_le_bytes());
        h.push(f.compression.to_u8());
    }
    let sealed_header = key.seal(&header_aad(&prefix, cluster, file), &h);
    debug_assert_eq!(sealed_header.len(), header_len as usize);
    let total = PREFIX_LEN + sealed_header.len() + sealed.iter().map(Vec::len).sum::<usize>();
    let mut out = Vec::with_capacity(total + TRAILER_LEN);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&sealed_header);
    for s in &sealed {
        out.extend_from_slice(s);
    }
    let trailer = blake3::hash(&out);
    out.extend_from_slice(trailer.as_bytes());
    out
}

fn corrupt(name: &str, detail: impl Into<String>) -> Error {
    Error::corrupt(ObjectKind::Wal, name, detail)
}

/// Parse the clear prefix (the first [`PREFIX_LEN`] bytes).
pub fn parse_prefix(name: &str, b: &[u8]) -> Result<Prefix> {
    if b.len() < PREFIX_LEN || &b[..8] != MAGIC {
        return Err(corrupt(
            name,
            "not a dumpvault WAL object (bad magic or too short)",
        ));
    }
    let mut r = Reader::new(&b[8..PREFIX_LEN]);
    let version = r.u32().unwrap_or(0);
    // Version 0 was never written: damage, not "too new" (X7, X22), so that `wal push` keeps
    // a conflict copy beside such an object and fsck reports it instead of stopping.
    if version == 0 {
        return Err(corrupt(name, "WAL object version 0 is never valid"));
    }
    if version != VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let p = Prefix {
        seg_size: r.u32().unwrap_or(0),
        mtime_ms: r.i64().unwrap_or(0),
        header_len: r.u32().unwrap_or(0),
    };
    if (p.header_len as usize) < SEAL_OVERHEAD + 60 || p.header_len as usize > MAX_HEADER {
        return Err(corrupt(name, "header length out of range"));
    }
    Ok(p)
}

/// Check the trailer: the object is exactly what was written (no key needed).
pub fn check_trailer(name: &str, b: &[u8]) -> Result<Prefix> {
    let p = parse_prefix(name, b)?;
    if b.len() < PREFIX_LEN + p.header_len as usize + TRAILER_LEN {
        return Err(corrupt(name, "truncated"));
    }
    let (body, trailer) = b.split_at(b.len() - TRAILER_LEN);
    if blake3::hash(body).as_bytes() != trailer {
        return Err(corrupt(name, "content does not match its BLAKE3 trailer"));
    }
    Ok(p)
}

/// Open the sealed header from the first `PREFIX_LEN + header_len` bytes (a ranged read is
/// enough: `wal push` compares a stored copy with a local file this way).
pub fn open_header(
    key: &MasterKey,
    cluster: &str,
    file: &str,
    name: &str,
    b: &[u8],
) -> Result<(Prefix, Header)> {
    let p = parse_prefix(name, b)?;
    let end = PREFIX_LEN + p.header_len as usize;
    if b.len() < end {
        return Err(corrupt(name, "truncated header"));
    }
    let plain = key
        .open(
            &header_aad(&b[..PREFIX_LEN], cluster, file),
            &b[PREFIX_LEN..end],
        )
        .ok_or_else(|| {
            corrupt(
                name,
                "header fails authentication (damaged, or moved from another name)",
            )
        })?;
    let mut r = Reader::new(&plain);
    let short = || corrupt(name, "header truncated");
    let plain_len = r.u64().ok_or_else(short)?;
    let sysid = r.u64().ok_or_else(short)?;
    let keyed_id = r.array().ok_or_else(short)?;
    let archived_ms = r.i64().ok_or_else(short)?;
    let n = r.u32().ok_or_else(short)? as usize;
    if n > MAX_FRAMES || !r.has_items(n, 9) {
        return Err(corrupt(name, "bad frame count"));
    }
    let mut frames = Vec::with_capacity(n);
    let mut raw = 0u64;
    for _ in 0..n {
        let sealed_len = r.u32().ok_or_else(short)?;
        let raw_len = r.u32().ok_or_else(short)?;
        let compression = Compression::from_u8(r.u8().ok_or_else(short)?)
            .ok_or_else(|| corrupt(name, "unknown compression"))?;
        if raw_len as usize > FRAME_LEN || (sealed_len as usize) < SEAL_OVERHEAD {
            return Err(corrupt(name, "frame length out of range"));
        }
        raw += u64::from(raw_len);
        frames.push(FrameInfo {
            sealed_len,
            raw_len,
            compression,
        });
    }
    if raw != plain_len || !r.is_empty() {
        return Err(corrupt(
            name,
            "frame lengths disagree with the plaintext length",
        ));
    }
    Ok((
        p,
        Header {
            plain_len,
            sysid,
            keyed_id,
            archived_ms,
            frames,
        },
    ))
}

/// An opened object: prefix, header, and each frame's info with its (still compressed) bytes.
pub type Opened = (Prefix, Header, Vec<(FrameInfo, Vec<u8>)>);

/// Open a whole object: trailer, header, then every frame (in parallel). Returns the frames
/// still compressed as stored, with their raw lengths; the caller decompresses them and
/// checks the keyed hash of the result against `Header::keyed_id`.
pub fn decode(key: &MasterKey, cluster: &str, file: &str, name: &str, b: &[u8]) -> Result<Opened> {
    check_trailer(name, b)?;
    let (p, h) = open_header(key, cluster, file, name, b)?;
    let mut off = PREFIX_LEN + p.header_len as usize;
    let mut spans = Vec::with_capacity(h.frames.len());
    for f in &h.frames {
        let end = off
            .checked_add(f.sealed_len as usize)
            .filter(|&e| e <= b.len() - TRAILER_LEN)
            .ok_or_else(|| corrupt(name, "frames run past the end"))?;
        spans.push((off, end));
        off = end;
    }
    if off != b.len() - TRAILER_LEN {
        return Err(corrupt(name, "bytes after the last frame"));
    }
    let prefix = &b[..PREFIX_LEN];
    let frames = spans
        .par_iter()
        .zip(h.frames.par_iter())
        .enumerate()
        .map(|(i, (&(a, e), f))| {
            key.open(&frame_aad(prefix, &h.keyed_id, i as u32), &b[a..e])
                .map(|pt| (*f, pt))
                .ok_or_else(|| corrupt(name, format!("frame {i} fails authentication")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((p, h, frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &MasterKey) -> Vec<u8> {
        let frames = vec![
            Frame {
                raw_len: 3,
                compression: Compression::None,
                bytes: b"abc".to_vec(),
            },
            Frame {
                raw_len: 2,
                compression: Compression::None,
                bytes: b"de".to_vec(),
            },
        ];
        encode(
            key,
            "main",
            "000000010000000000000001",
            16 << 20,
            5,
            5,
            9,
            [7; 32],
            6,
            frames,
        )
    }

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let key = MasterKey::generate();
        let b = object(&key);
        let (p, h, f) = decode(&key, "main", "000000010000000000000001", "x", &b).unwrap();
        assert_eq!((p.seg_size, p.mtime_ms), (16 << 20, 5));
        assert_eq!(
            (h.plain_len, h.sysid, h.keyed_id, h.archived_ms),
            (5, 9, [7; 32], 6)
        );
        assert_eq!(
            f.iter().flat_map(|(_, b)| b.clone()).collect::<Vec<u8>>(),
            b"abcde"
        );
        // Another name or cluster does not open it: objects cannot be moved.
        assert!(decode(&key, "main", "000000010000000000000002", "x", &b).is_err());
        assert!(decode(&key, "other", "000000010000000000000001", "x", &b).is_err());
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 1;
            assert!(
                decode(&key, "main", "000000010000000000000001", "x", &c).is_err(),
                "byte {i}"
            );
        }
        for n in 0..b.len() {
            assert!(decode(&key, "main", "000000010000000000000001", "x", &b[..n]).is_err());
        }
        // The header alone opens from a prefix of the object.
        let hl = PREFIX_LEN + p.header_len as usize;
        assert_eq!(
            open_header(&key, "main", "000000010000000000000001", "x", &b[..hl])
                .unwrap()
                .1,
            h
        );
    }

    #[test]
    fn x22_version_zero_is_damage() {
        let key = MasterKey::generate();
        let mut b = object(&key);
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        for e in [
            parse_prefix("x", &b).unwrap_err(),
            check_trailer("x", &b).unwrap_err(),
            decode(&key, "main", "000000010000000000000001", "x", &b).unwrap_err(),
        ] {
            assert!(
                e.is_corruption() && e.to_string().contains("version 0"),
                "{e}"
            );
        }
        b[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            parse_prefix("x", &b),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }
}
