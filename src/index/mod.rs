//! The index: chunk ID → where its blob lives, and which index file said so. Two parts:
//! - the cached [`Table`] of run files on disk (`table`, `run`), when the repository has a
//!   cache: lookups read the disk, so memory does not grow with the repository (issue 14);
//! - an in-memory map, for a repository opened without a cache and for index files this
//!   process wrote that the cache could not take. Pack IDs and index-file IDs are interned, so
//!   an in-memory entry costs ~64 bytes.
//!
//! Invariant (format-spec X10): a hit names the index file it came from and its pack
//! ([`Origin`]), so `backup` can check before it commits that each chunk it deduplicated comes
//! from an index file of the listing it took, in a pack that file lists
//! ([`Index::check_sources`]). Table entries prove the pair with their MAC; in-memory entries
//! with the index file's own pack list.

pub mod run;
pub mod table;

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::index::IndexFile;
use crate::format::pack::BlobEntry;
use crate::id::{ChunkId, ObjectId, PackId};
pub use table::Table;

/// One bit per position of a [`Table`] ([`Table::lookup_pos`]): how prune and fsck mark the
/// entries they reach, at one bit per index entry instead of a set of 32-byte IDs.
pub struct Bitmap(Vec<u64>);

impl Bitmap {
    pub fn new(positions: u64) -> Bitmap {
        Bitmap(vec![0; positions.div_ceil(64) as usize])
    }

    /// Set the bit of `pos`; whether it was clear.
    pub fn set(&mut self, pos: u64) -> bool {
        let (w, b) = ((pos / 64) as usize, 1u64 << (pos % 64));
        let was = self.0[w] & b == 0;
        self.0[w] |= b;
        was
    }

    pub fn get(&self, pos: u64) -> bool {
        self.0[(pos / 64) as usize] & (1u64 << (pos % 64)) != 0
    }

    /// Bits held.
    pub fn len(&self) -> u64 {
        self.0.len() as u64 * 64
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The file number of entries added without saying which index file they came from.
const NO_FILE: u32 = u32::MAX;

/// Which index file (if known) and pack a found blob is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Option<ObjectId>,
    pub pack: PackId,
}

/// A found blob: where it is and its entry.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub origin: Origin,
    pub entry: BlobEntry,
}

#[derive(Debug, Clone, Copy)]
struct Location {
    pack: u32,
    /// Position in `Index::files`, or `NO_FILE`.
    file: u32,
    entry: BlobEntry,
}

/// An index file the in-memory part was built from: its ID and its own pack list (interned,
/// sorted). With `table`, the pack list of a table entry's file is proven by its MAC.
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
    table: Option<Table>,
    /// The listing of `index/` this index was loaded from, when it was (`Repo::index`).
    listing: HashSet<ObjectId>,
}

impl Index {
    /// An index over the cached `table`, with an empty in-memory part.
    pub fn with_table(table: Table) -> Index {
        Index {
            table: Some(table),
            ..Index::default()
        }
    }

    pub fn table(&self) -> Option<&Table> {
        self.table.as_ref()
    }

    pub fn table_mut(&mut self) -> Option<&mut Table> {
        self.table.as_mut()
    }

    /// Whether a cached entry failed its MAC or could not be read: the caller should rebuild
    /// the cache (and, where a miss matters, look again without it).
    pub fn is_tainted(&self) -> bool {
        self.table.as_ref().is_some_and(Table::is_tainted)
    }

    /// Entries known (a chunk stored in two packs counts twice in the table).
    pub fn len(&self) -> usize {
        self.blobs.len() + self.table.as_ref().map_or(0, |t| t.live_entries() as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.location(id).is_some()
    }

    pub fn get(&self, id: &ChunkId) -> Option<(PackId, BlobEntry)> {
        self.location(id).map(|h| (h.origin.pack, h.entry))
    }

    /// Where `id` is, with the origin `check_sources` takes. The in-memory part first: it
    /// holds what this process wrote.
    pub fn location(&self, id: &ChunkId) -> Option<Hit> {
        if let Some(l) = self.blobs.get(id) {
            return Some(Hit {
                origin: Origin {
                    file: self.files.get(l.file as usize).map(|s| s.id),
                    pack: self.packs[l.pack as usize],
                },
                entry: l.entry,
            });
        }
        self.table.as_ref().and_then(|t| t.lookup(id))
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

    /// The pre-commit check of `backup` (format-spec X10): every origin of a deduplicated
    /// chunk (from [`Hit`]) names an index file of the listing and a pack that file lists.
    /// A failure means the index (the cache) claimed a chunk the repository may not hold, so
    /// nothing may be committed that relies on it.
    pub fn check_sources(&self, hits: &HashSet<Origin>) -> Result<()> {
        let mem_files: HashMap<&ObjectId, &Source> =
            self.files.iter().map(|s| (&s.id, s)).collect();
        for o in hits {
            let listed = o.file.is_some_and(|f| self.listing.contains(&f));
            // A table entry's pair is proven by its MAC; an in-memory one by its file's list.
            let lists_pack = |f: &ObjectId| match mem_files.get(f) {
                Some(s) => self
                    .pack_pos
                    .get(&o.pack)
                    .is_some_and(|p| s.packs.binary_search(p).is_ok()),
                None => self.table.is_some(),
            };
            if !(listed && o.file.as_ref().is_some_and(lists_pack)) {
                let named = o.file.map_or("an unknown index file".to_string(), |f| {
                    format!("index file {f}")
                });
                return Err(Error::Cache(format!(
                    "a deduplicated chunk is said to be in pack {} of {named}, which the repository's listing of index files does not confirm; nothing was committed (delete the cache and run the backup again)",
                    o.pack.to_hex()
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
            HashSet::from([l.origin])
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
