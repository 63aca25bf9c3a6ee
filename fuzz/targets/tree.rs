//! `format::tree::TreeNode::decode` on raw tree-blob plaintext, then `tree::LeafWalker` over a
//! small forest cut from the same input, as restore walks a snapshot's chunk list.
//!
//! The forest: the input read as `len u16 ‖ node bytes` records (at most 64 nodes); a chunk ID
//! names node `id[0] % nodes`, and the root is `ChunkId([0; 32])`, i.e. node 0. The loader
//! decodes the node and rejects a level other than the one the parent implies, exactly as
//! `ops::restore::load_tree` does, and gives up after `MAX_LOADS` loads: a DAG of nodes that
//! share children, or of empty subtrees, can otherwise make one walk arbitrarily long (see
//! README.md, "Findings").
//!
//! Oracles: the node layout is canonical (decode → encode gives back the input); a decoded
//! node respects `MAX_LEVEL` and `MAX_ENTRIES`; the walk ends.

use dumpvault::format::tree::{TreeNode, MAX_ENTRIES, MAX_LEVEL};
use dumpvault::id::ChunkId;
use dumpvault::tree::LeafWalker;
use dumpvault::Error;

const MAX_NODES: usize = 64;
const MAX_LOADS: u32 = 10_000;
const MAX_LEAVES: u32 = 100_000;

pub fn run(data: &[u8]) {
    if let Ok(node) = TreeNode::decode(data) {
        assert_eq!(
            node.encode(),
            data,
            "decode accepted a non-canonical tree node"
        );
        assert!(node.level <= MAX_LEVEL);
        assert!(node.entries.len() <= MAX_ENTRIES);
        let _ = node.total_len();
    }
    walk(data);
}

fn walk(data: &[u8]) {
    let mut nodes: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && nodes.len() < MAX_NODES {
        let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        nodes.push(&rest[2..2 + n]);
        rest = &rest[2 + n..];
    }
    if nodes.is_empty() {
        return;
    }
    let mut loads = 0u32;
    let load = |id: &ChunkId, level: Option<u8>| -> dumpvault::Result<TreeNode> {
        loads += 1;
        if loads > MAX_LOADS {
            return Err(Error::InvalidInput("load budget exhausted".into()));
        }
        let bytes = nodes[id.0[0] as usize % nodes.len()];
        let node = TreeNode::decode(bytes).map_err(Error::InvalidInput)?;
        if level.is_some_and(|l| l != node.level) {
            return Err(Error::InvalidInput(format!(
                "tree level {} where {level:?} was expected",
                node.level
            )));
        }
        Ok(node)
    };
    // The size a snapshot would record for this root, so the walk gets past the root check.
    let size = TreeNode::decode(nodes[0])
        .ok()
        .and_then(|n| n.total_len())
        .unwrap_or(0);
    let Ok(mut walker) = LeafWalker::new(&ChunkId([0; 32]), size, load) else {
        return;
    };
    let mut leaves = 0u32;
    while let Ok(Some(_)) = walker.next_leaf() {
        leaves += 1;
        if leaves >= MAX_LEAVES {
            break;
        }
    }
}
