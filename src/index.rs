//! The in-memory index: chunk ID → where its blob lives, and which index file said so. Built
//! from index files (through the local cache when there is one). Pack IDs and index-file IDs
//! are interned so an entry costs ~64 bytes.
//!
//! Invariant (format-spec X10): an entry loaded by [`Index::add_indexed_file`] or from the
//! cache records the index file it came from, and every index file records its own pack list,
//! so `backup` can check before it commits that each chunk it deduplicated comes from an index
//! file of the listing it took, in a pack that file lists ([`Index::check_sources`]).

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::format::pack::BlobEntry;
use crate::id::{ChunkId, ObjectId, PackId};

/// The file number of entries added without saying which index file they came from.
const NO_FILE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub pack: u32,
    /// Position in `Index::files`, or `NO_FILE`.
    pub file: u32,
    pub entry: BlobEntry,
}

/// An index file the index was built from: its ID and its own pack list (interned, sorted).
struct Source {
    id: ObjectId,
    packs: Vec<u32>,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<PackId>,
    pack_pos: HashMap<PackId, u32>,
    files: Vec<Source>,
    blobs: HashMap<ChunkId, Location>,
    /// The listing of `index/` this index was loaded from, when it was (`Repo::index`).
    listing: HashSet<ObjectId>,
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

    /// Where `id` is, with the numbers `check_sources` takes.
    pub fn location(&self, id: &ChunkId) -> Option<&Location> {
        self.blobs.get(id)
    }

    fn pack_number(&mut self, pack: PackId) -> u32 {
        let n = self.packs.len() as u32;
        let p = *self.pack_pos.entry(pack).or_insert(n);
        if p == n {
            self.packs.push(pack);
        }
        p
    }

    /// Add an entry of no known index file (such an entry never passes `check_sources`).
    pub fn add(&mut self, pack: PackId, entry: BlobEntry) {
        self.add_from(NO_FILE, pack, entry);
    }

    /// Start an index file `id` listing `packs`; returns the number `add_from` takes.
    pub fn begin_file(&mut self, id: ObjectId, packs: &[PackId]) -> u32 {
        let mut nums: Vec<u32> = packs.iter().map(|p| self.pack_number(*p)).collect();
        nums.sort_unstable();
        nums.dedup();
        self.files.push(Source { id, packs: nums });
        (self.files.len() - 1) as u32
    }

    /// Add an entry that index file number `file` (from `begin_file`) lists.
    pub fn add_from(&mut self, file: u32, pack: PackId, entry: BlobEntry) {
        let p = self.pack_number(pack);
        // First writer wins: a duplicate blob in a later pack is redundant, not a conflict.
        self.blobs.entry(entry.id).or_insert(Location {
            pack: p,
            file,
            entry,
        });
    }

    /// Add an index file without its ID (prune, fsck: they never deduplicate).
    pub fn add_file(&mut self, f: &IndexFile) {
        for p in &f.packs {
            for e in &p.entries {
                self.add(p.id, *e);
            }
        }
    }

    /// Add index file `id`, remembering for each entry that it came from `id`.
    pub fn add_indexed_file(&mut self, id: ObjectId, f: &IndexFile) {
        let packs: Vec<PackId> = f.packs.iter().map(|p| p.id).collect();
        let n = self.begin_file(id, &packs);
        for p in &f.packs {
            for e in &p.entries {
                self.add_from(n, p.id, *e);
            }
        }
    }

    /// Record the listing of `index/` this index is built from (and, later, index files this
    /// process stored itself).
    pub fn set_listing(&mut self, ids: impl IntoIterator<Item = ObjectId>) {
        self.listing = ids.into_iter().collect();
    }

    pub fn add_to_listing(&mut self, id: ObjectId) {
        self.listing.insert(id);
    }

    /// The pre-commit check of `backup` (format-spec X10): every `(file, pack)` pair of a
    /// deduplicated chunk (from [`Location`]) names an index file of the listing, and a pack
    /// that file lists itself. A failure means the index (the cache) claimed a chunk the
    /// repository may not hold, so nothing may be committed that relies on it.
    pub fn check_sources(&self, hits: &HashSet<(u32, u32)>) -> Result<()> {
        for &(file, pack) in hits {
            let src = self.files.get(file as usize);
            let ok = src.is_some_and(|s| {
                self.listing.contains(&s.id) && s.packs.binary_search(&pack).is_ok()
            });
            if !ok {
                let named = src.map_or("an unknown index file".to_string(), |s| {
                    format!("index file {}", s.id)
                });
                let pack = self
                    .packs
                    .get(pack as usize)
                    .map_or("?".to_string(), |p| p.to_hex());
                return Err(Error::Cache(format!(
                    "a deduplicated chunk is said to be in pack {pack} of {named}, which the repository's listing of index files does not confirm; nothing was committed (delete the cache and run the backup again)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexPack;
    use crate::format::pack::{BlobKind, Compression};

    fn entry(b: u8) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            compression: Compression::None,
            raw_len: 1,
            offset: 0,
            stored_len: 41,
            id: ChunkId([b; 32]),
        }
    }

    #[test]
    fn check_sources_wants_a_listed_file_and_one_of_its_packs() {
        let mut ix = Index::default();
        let f = IndexFile {
            superseded: vec![],
            packs: vec![IndexPack {
                id: ObjectId([1; 32]),
                len: 100,
                entries: vec![entry(1)],
            }],
        };
        ix.add_indexed_file(ObjectId([9; 32]), &f);
        let n = ix.begin_file(ObjectId([8; 32]), &[ObjectId([1; 32])]);
        ix.add_from(n, ObjectId([2; 32]), entry(2));
        ix.add(ObjectId([1; 32]), entry(3));
        ix.set_listing([ObjectId([9; 32]), ObjectId([8; 32])]);
        let hit = |ix: &Index, b: u8| {
            let l = ix.location(&ChunkId([b; 32])).unwrap();
            HashSet::from([(l.file, l.pack)])
        };
        ix.check_sources(&hit(&ix, 1)).unwrap();
        // Pack 2 is not in file 8's own pack list.
        assert!(ix.check_sources(&hit(&ix, 2)).is_err());
        // No known file.
        assert!(ix.check_sources(&hit(&ix, 3)).is_err());
        // File 9 is no longer listed.
        ix.set_listing([ObjectId([8; 32])]);
        assert!(ix.check_sources(&hit(&ix, 1)).is_err());
    }
}
