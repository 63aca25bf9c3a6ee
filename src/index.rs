//! The in-memory index: chunk ID → where its blob lives. Built from index files (through the
//! local cache when there is one). Pack IDs are interned so an entry costs ~56 bytes.

use std::collections::HashMap;

use crate::format::index::IndexFile;
use crate::format::pack::BlobEntry;
use crate::id::{ChunkId, PackId};

#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: u32,
    pub entry: BlobEntry,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<ChunkId, Location>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn get(&self, id: &ChunkId) -> Option<(PackId, BlobEntry)> {
        self.blobs
            .get(id)
            .map(|l| (self.packs[l.pack as usize], l.entry))
    }

    pub fn add(&mut self, pack: PackId, entry: BlobEntry) {
        let n = self.packs.len() as u32;
        let p = *self.pack_pos.entry(pack).or_insert(n);
        if p == n {
            self.packs.push(pack);
        }
        // First writer wins: a duplicate blob in a later pack is redundant, not a conflict.
        self.blobs
            .entry(entry.id)
            .or_insert(Location { pack: p, entry });
    }

    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            for e in &p.entries {
                self.add(p.id, *e);
            }
        }
    }
}
