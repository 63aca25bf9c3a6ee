//! Building and walking chunk-list trees (byte layout in `format::tree`).
//!
//! Node boundaries are content-defined: a node closes after an entry whose chunk ID's first two
//! bytes, read as a little-endian u16, have their low 10 bits zero (about one entry in 1024),
//! or when it reaches `MAX_ENTRIES`. Since chunk IDs are keyed, boundaries are unpredictable to
//! an outsider, and an insertion early in a dump re-creates only the nodes around it.
//! Memory is one open node per level, whatever the stream's length.

use crate::error::Result;
use crate::format::tree::{TreeEntry, TreeNode, MAX_ENTRIES, MAX_LEVEL};
use crate::id::ChunkId;

const BOUNDARY_MASK: u16 = 0x03ff;

pub fn is_boundary(id: &ChunkId) -> bool {
    u16::from_le_bytes([id.0[0], id.0[1]]) & BOUNDARY_MASK == 0
}

/// Where finished tree nodes go: the caller stores the encoded node as a tree blob and returns
/// its chunk ID.
pub trait NodeSink {
    fn store_node(&mut self, plaintext: Vec<u8>) -> Result<ChunkId>;
}

#[derive(Default)]
pub struct TreeBuilder {
    /// Open node per level, and how many nodes each level has emitted so far.
    levels: Vec<(Vec<TreeEntry>, u64)>,
}

impl TreeBuilder {
    pub fn push(&mut self, entry: TreeEntry, sink: &mut dyn NodeSink) -> Result<()> {
        self.push_at(0, entry, sink)
    }

    fn push_at(&mut self, level: usize, entry: TreeEntry, sink: &mut dyn NodeSink) -> Result<()> {
        if self.levels.len() <= level {
            self.levels.push((Vec::new(), 0));
        }
        self.levels[level].0.push(entry);
        if is_boundary(&entry.id) || self.levels[level].0.len() >= MAX_ENTRIES {
            self.flush(level, sink)?;
        }
        Ok(())
    }

    fn flush(&mut self, level: usize, sink: &mut dyn NodeSink) -> Result<()> {
        let entries = std::mem::take(&mut self.levels[level].0);
        self.levels[level].1 += 1;
        let node = TreeNode {
            level: level as u8,
            entries,
        };
        let len = node.total_len().unwrap_or(u64::MAX);
        let id = sink.store_node(node.encode())?;
        self.push_at(level + 1, TreeEntry { id, len }, sink)
    }

    /// Close every open node and return the root's ID. The top level never has emitted a node
    /// (emitting creates the level above), so its open node is the root; a root holding a
    /// single child is skipped in favour of that child.
    pub fn finish(mut self, sink: &mut dyn NodeSink) -> Result<ChunkId> {
        if self.levels.is_empty() {
            self.levels.push((Vec::new(), 0));
        }
        let mut level = 0;
        loop {
            let top = level + 1 == self.levels.len();
            if top && self.levels[level].1 == 0 {
                let entries = std::mem::take(&mut self.levels[level].0);
                if level > 0 && entries.len() == 1 {
                    return Ok(entries[0].id);
                }
                debug_assert!(level as u8 <= MAX_LEVEL);
                let node = TreeNode {
                    level: level as u8,
                    entries,
                };
                return sink.store_node(node.encode());
            }
            if !self.levels[level].0.is_empty() {
                self.flush(level, sink)?;
            }
            level += 1;
        }
    }
}

/// Depth-first walk over the data-chunk entries under `root`, in stream order. `load` fetches
/// and decodes a tree blob. Memory is one node per level.
pub struct LeafWalker<F> {
    load: F,
    stack: Vec<(TreeNode, usize)>,
}

impl<F: FnMut(&ChunkId, Option<u8>) -> Result<TreeNode>> LeafWalker<F> {
    /// Start at `root`, which must cover exactly `size` bytes (the snapshot's stream size).
    pub fn new(root: &ChunkId, size: u64, mut load: F) -> Result<Self> {
        let node = load(root, None)?;
        if node.total_len() != Some(size) {
            return Err(crate::error::Error::CorruptBlob {
                chunk: root.to_hex(),
                pack: "-".into(),
                detail: format!(
                    "root covers {:?} bytes, the snapshot says {size}",
                    node.total_len()
                ),
            });
        }
        Ok(LeafWalker {
            load,
            stack: vec![(node, 0)],
        })
    }

    /// Next data chunk, or `None` at the end. `load` receives the level the child must have;
    /// it must reject a node whose level differs (a malformed tree could otherwise loop).
    pub fn next_leaf(&mut self) -> Result<Option<TreeEntry>> {
        loop {
            let Some((node, pos)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if *pos >= node.entries.len() {
                self.stack.pop();
                continue;
            }
            let e = node.entries[*pos];
            *pos += 1;
            if node.level == 0 {
                return Ok(Some(e));
            }
            let child = (self.load)(&e.id, Some(node.level - 1))?;
            if child.total_len() != Some(e.len) {
                return Err(crate::error::Error::CorruptBlob {
                    chunk: e.id.to_hex(),
                    pack: "-".into(),
                    detail: format!(
                        "tree node covers {:?} bytes, its parent says {}",
                        child.total_len(),
                        e.len
                    ),
                });
            }
            self.stack.push((child, 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MapSink(HashMap<ChunkId, Vec<u8>>);
    impl NodeSink for MapSink {
        fn store_node(&mut self, p: Vec<u8>) -> Result<ChunkId> {
            let id = ChunkId(*blake3::hash(&p).as_bytes());
            self.0.insert(id, p);
            Ok(id)
        }
    }

    fn leaf(i: u64) -> TreeEntry {
        TreeEntry {
            id: ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
            len: i + 1,
        }
    }

    fn build_and_walk(n: u64) {
        let mut sink = MapSink::default();
        let mut b = TreeBuilder::default();
        for i in 0..n {
            b.push(leaf(i), &mut sink).unwrap();
        }
        let root = b.finish(&mut sink).unwrap();
        let nodes = sink.0;
        let total: u64 = (1..=n).sum();
        let mut w = LeafWalker::new(&root, total, |id: &ChunkId, lvl: Option<u8>| {
            let n = TreeNode::decode(&nodes[id]).unwrap();
            if let Some(l) = lvl {
                assert_eq!(n.level, l);
            }
            Ok(n)
        })
        .unwrap();
        let mut got = Vec::new();
        while let Some(e) = w.next_leaf().unwrap() {
            got.push(e);
        }
        assert_eq!(got, (0..n).map(leaf).collect::<Vec<_>>(), "n={n}");
        // Every inner entry's length is the sum beneath it.
        for bytes in nodes.values() {
            let node = TreeNode::decode(bytes).unwrap();
            if node.level > 0 {
                for e in &node.entries {
                    let child = TreeNode::decode(&nodes[&e.id]).unwrap();
                    assert_eq!(child.total_len().unwrap(), e.len);
                }
            }
        }
    }

    #[test]
    fn trees_of_many_sizes_walk_back_in_order() {
        for n in [0, 1, 2, 5, 1000, 4095, 4096, 4097, 20_000, 300_000] {
            build_and_walk(n);
        }
    }

    #[test]
    fn insertion_rewrites_few_nodes() {
        let build = |items: &[TreeEntry]| {
            let mut sink = MapSink::default();
            let mut b = TreeBuilder::default();
            for e in items {
                b.push(*e, &mut sink).unwrap();
            }
            b.finish(&mut sink).unwrap();
            sink.0
        };
        let a: Vec<_> = (0..50_000).map(leaf).collect();
        let mut b2 = a.clone();
        b2.insert(10, leaf(1_000_000));
        let (na, nb) = (build(&a), build(&b2));
        let fresh = nb.keys().filter(|k| !na.contains_key(k)).count();
        assert!(fresh <= 4, "{fresh} new nodes after one insertion");
    }
}
