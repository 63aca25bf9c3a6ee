//! Chunk-list ("tree") blobs: a stream is the in-order concatenation of the data chunks reached
//! by a depth-first walk of a tree whose root the snapshot names.
//!
//! ```text
//! plaintext = level u8 ‖ reserved u8 × 3 = 0 ‖ entry count u32 ‖ entries
//! entry     = chunk id (32) ‖ length u64      (40 bytes)
//! ```
//! At level 0 an entry names a data blob and `length` is its plaintext length; at level L > 0
//! it names a tree blob of level L-1 and `length` is the total stream bytes beneath it.
//! Node boundaries are content-defined (see `crate::tree`), so an insertion early in a dump
//! does not rewrite every later tree blob. Entry lengths are never zero, and an inner entry's
//! length equals the total of the node it names (readers check both).

use crate::id::ChunkId;

pub const ENTRY_LEN: usize = 40;
/// A node never holds more entries than this (160 KiB of plaintext).
pub const MAX_ENTRIES: usize = 4096;
/// Deepest tree a reader follows; 4096^8 chunks is far beyond any stream.
pub const MAX_LEVEL: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeEntry {
    pub id: ChunkId,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub level: u8,
    pub entries: Vec<TreeEntry>,
}

impl TreeNode {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + self.entries.len() * ENTRY_LEN);
        b.extend_from_slice(&[self.level, 0, 0, 0]);
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            b.extend_from_slice(&e.id.0);
            b.extend_from_slice(&e.len.to_le_bytes());
        }
        b
    }

    /// Decode a tree blob's plaintext; `Err` says what is wrong (the caller names the blob).
    pub fn decode(plain: &[u8]) -> std::result::Result<TreeNode, String> {
        let mut r = crate::format::bytes::Reader::new(plain);
        let hdr: [u8; 4] = r.array().ok_or("truncated tree blob")?;
        let count = r.u32().ok_or("truncated tree blob")? as usize;
        if hdr[1..] != [0, 0, 0] {
            return Err("reserved bytes are not zero".into());
        }
        if hdr[0] > MAX_LEVEL {
            return Err(format!("tree level {} exceeds {MAX_LEVEL}", hdr[0]));
        }
        if count > MAX_ENTRIES || r.remaining() != count * ENTRY_LEN {
            return Err("entry count disagrees with the blob's length".into());
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let id = ChunkId(r.array().ok_or("truncated")?);
            let len = r.u64().ok_or("truncated")?;
            // Chunks are never empty (an empty stream is a root with no entries), so a zero
            // length can only be forged; refusing it bounds a walk's work by the stream size.
            if len == 0 {
                return Err("zero-length entry".into());
            }
            entries.push(TreeEntry { id, len });
        }
        Ok(TreeNode {
            level: hdr[0],
            entries,
        })
    }

    pub fn total_len(&self) -> Option<u64> {
        self.entries
            .iter()
            .try_fold(0u64, |a, e| a.checked_add(e.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_input() {
        let n = TreeNode {
            level: 1,
            entries: vec![TreeEntry {
                id: ChunkId([5; 32]),
                len: 77,
            }],
        };
        let b = n.encode();
        assert_eq!(TreeNode::decode(&b).unwrap(), n);
        for k in 0..b.len() {
            assert!(TreeNode::decode(&b[..k]).is_err());
        }
        let mut bad = b.clone();
        bad[0] = 200;
        assert!(TreeNode::decode(&bad).is_err());
    }
}
