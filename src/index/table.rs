//! The cached index as a set of run files ([`super::run`]) plus the small maps that turn an
//! entry's cache-local pack and index-file numbers back into IDs. Built by the cache
//! ([`crate::cache::Cache::load_table`]); lookups read the disk, so memory does not grow with
//! the number of entries (about 4 bytes per 8 entries of fanout, plus one pack ID per pack).
//!
//! Trust (format-spec X10, rule K5): the cache is writable by whoever owns the cache
//! directory, so an entry counts only if its 8-byte MAC, keyed with
//! [`crate::crypto::MasterKey::cache_table_key`] over the chunk ID, the full pack and index-file
//! IDs and the location, checks out. An entry that fails is skipped (a miss: `backup` uploads
//! the chunk again) and marks the table tainted, so that the caller rebuilds the cache.
//! An entry whose index file is no longer in the cache (deleted by a prune) is dead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::run::{Run, RunEntry};
use super::{Hit, Origin};
use crate::error::{Error, Result};
use crate::format::pack::{BlobEntry, BlobKind, Compression};
use crate::id::{ChunkId, ObjectId, PackId};

/// The MAC of one entry: the first 8 bytes of keyed BLAKE3 over `chunk id ‖ pack id ‖ index
/// file id ‖ kind u8 ‖ compression u8 ‖ raw_len u32 ‖ offset u32 ‖ stored_len u32` (LE).
pub fn entry_mac(key: &[u8; 32], e: &RunEntry, pack: &PackId, file: &ObjectId) -> [u8; 8] {
    let mut b = [0u8; 110];
    b[..32].copy_from_slice(&e.id.0);
    b[32..64].copy_from_slice(&pack.0);
    b[64..96].copy_from_slice(&file.0);
    b[96] = e.kind;
    b[97] = e.comp;
    b[98..102].copy_from_slice(&e.raw_len.to_le_bytes());
    b[102..106].copy_from_slice(&e.offset.to_le_bytes());
    b[106..110].copy_from_slice(&e.stored_len.to_le_bytes());
    let h = blake3::keyed_hash(key, &b);
    h.as_bytes()[..8].try_into().expect("8 bytes")
}

pub struct Table {
    /// Probed biggest first: most hits are in the oldest, largest run.
    runs: Vec<Run>,
    packs: Vec<Option<PackId>>,
    files: HashMap<u32, ObjectId>,
    key: zeroize::Zeroizing<[u8; 32]>,
    live_entries: u64,
    tainted: AtomicBool,
    /// The run that answered the last [`Table::lookup`] (an index into `runs`).
    last_hit: AtomicUsize,
    /// Lookups so far, and whether the runs have been handed to the kernel's readahead
    /// ([`Table::note_lookup`]).
    lookups: AtomicU64,
    prefetched: AtomicBool,
    /// The lookup count that starts the read-ahead, kept as runs are added.
    prefetch_at: u64,
}

/// A table is read ahead whole once it has served this many lookups or one per
/// [`PREFETCH_PER`] positions, whichever is more. With a cold page cache each probe of a page
/// not yet cached is a random read (~10k/s on the bench VM's disk), until a large backup or
/// restore has touched most pages one at a time (~1 M of them at 60 M entries); past that
/// point one sequential read of every run (64 bytes an entry) is cheaper, while a small
/// backup or restore never reads a large table it barely touches. Measured (scale bench,
/// `coldincr`, 60 M entries, 4 GiB all known): 11.2 s cold without, 7.0 s with, 2.5 s warm.
pub const PREFETCH_MIN: u64 = 4096;
pub const PREFETCH_PER: u64 = 1024;

impl Table {
    pub fn new(key: zeroize::Zeroizing<[u8; 32]>) -> Table {
        Table {
            runs: Vec::new(),
            packs: Vec::new(),
            files: HashMap::new(),
            key,
            live_entries: 0,
            tainted: AtomicBool::new(false),
            last_hit: AtomicUsize::new(0),
            lookups: AtomicU64::new(0),
            prefetched: AtomicBool::new(false),
            prefetch_at: PREFETCH_MIN,
        }
    }

    /// Count a lookup; the one that crosses the threshold ([`PREFETCH_MIN`], [`PREFETCH_PER`])
    /// starts a background thread that asks the kernel to read every run ahead. Failure to
    /// start or to advise costs only speed, so it is ignored.
    fn note_lookup(&self) {
        let n = self.lookups.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.prefetch_at || self.prefetched.swap(true, Ordering::Relaxed) {
            return;
        }
        let jobs: Vec<_> = self
            .runs
            .iter()
            .filter_map(|r| r.prefetcher().ok())
            .collect();
        let _ = std::thread::Builder::new()
            .name("index-prefetch".into())
            .spawn(move || {
                for job in jobs {
                    let _ = job();
                }
            });
    }

    /// Whether [`Table::note_lookup`] has started the read-ahead.
    pub fn prefetch_started(&self) -> bool {
        self.prefetched.load(Ordering::Relaxed)
    }

    pub fn add_run(&mut self, run: Run) {
        self.runs.push(run);
        self.runs.sort_by_key(|r| std::cmp::Reverse(r.count()));
        self.prefetch_at = PREFETCH_MIN.max(self.positions() / PREFETCH_PER);
    }

    pub fn add_pack(&mut self, num: u32, id: PackId) {
        let n = num as usize;
        if self.packs.len() <= n {
            self.packs.resize(n + 1, None);
        }
        self.packs[n] = Some(id);
    }

    /// Index file `num` is live and holds `entries` entries.
    pub fn add_file(&mut self, num: u32, id: ObjectId, entries: u64) {
        if self.files.insert(num, id).is_none() {
            self.live_entries += entries;
        }
    }

    /// Hand the open runs over (to a table reopened after a write, which keeps those still
    /// recorded); this table is left without runs.
    pub fn take_runs(&mut self) -> Vec<Run> {
        std::mem::take(&mut self.runs)
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Entries of live index files (a chunk stored twice counts twice).
    pub fn live_entries(&self) -> u64 {
        self.live_entries
    }

    pub fn is_tainted(&self) -> bool {
        self.tainted.load(Ordering::Relaxed)
    }

    /// Carry over what a table this one replaces had learnt (it was reopened after a write):
    /// its verdict, and its lookups and read-ahead, so that a backup reopening its table after
    /// each index flush does not read every run ahead again each time (runs a merge wrote anew
    /// were just written, so they are in the page cache anyway).
    pub fn carry_from(&self, old: &Table) {
        if old.is_tainted() {
            self.tainted.store(true, Ordering::Relaxed);
        }
        self.lookups
            .fetch_add(old.lookups.load(Ordering::Relaxed), Ordering::Relaxed);
        if old.prefetch_started() {
            self.prefetched.store(true, Ordering::Relaxed);
        }
    }

    fn taint(&self, why: &str) {
        if !self.tainted.swap(true, Ordering::Relaxed) {
            eprintln!("dumpvault: warning: cache: {why}; the entry is ignored and the cache will be rebuilt");
        }
    }

    /// Where `id` is, from a live entry whose MAC checks out. The run that answered the last
    /// lookup is probed first: a stream's neighbouring chunks were mostly stored together, so
    /// an incremental backup whose chunks sit in a small recent run does not first pay a miss
    /// (a read) in every bigger run (issue 14: at 60 M entries that was three misses a chunk).
    /// Which copy of a chunk stored twice it finds may change from call to call; callers that
    /// need one fixed answer use [`Table::lookup_pos`].
    pub fn lookup(&self, id: &ChunkId) -> Option<Hit> {
        self.note_lookup();
        let mut found = Vec::new();
        let first = self.last_hit.load(Ordering::Relaxed);
        if first < self.runs.len() {
            if let Some((h, _)) = self.probe(first, id, &mut found) {
                return Some(h);
            }
        }
        for i in (0..self.runs.len()).filter(|&i| i != first) {
            if let Some((h, _)) = self.probe(i, id, &mut found) {
                self.last_hit.store(i, Ordering::Relaxed);
                return Some(h);
            }
        }
        None
    }

    /// Entry positions of the open table: `lookup_pos` numbers its entries (live or dead)
    /// `0..positions()`, in an order fixed while it is open.
    pub fn positions(&self) -> u64 {
        self.runs.iter().map(Run::count).sum()
    }

    /// Every live entry in chunk-ID order (the entries of a chunk stored twice are adjacent),
    /// with its pack, its position (as [`Table::lookup_pos`] numbers them) and its stored length, in one k-way
    /// merge over the runs (64 KiB of buffer each). MACs are not checked: this is for a table
    /// the caller built itself from index files it read (fsck's scratch table).
    pub fn scan(&self, mut f: impl FnMut(&ChunkId, &PackId, u64, u32)) -> Result<()> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut iters = Vec::with_capacity(self.runs.len());
        let mut bases = Vec::with_capacity(self.runs.len());
        let mut base = 0u64;
        for r in &self.runs {
            iters.push(r.iter()?);
            bases.push(base);
            base += r.count();
        }
        // (chunk, run, position in the run, pack number, file number, stored length)
        type Head = Reverse<(ChunkId, usize, u64, u32, u32, u32)>;
        let mut heap: BinaryHeap<Head> = BinaryHeap::new();
        let next =
            |i: usize, at: u64, iters: &mut Vec<super::run::RunIter>| -> Result<Option<Head>> {
                Ok(match iters[i].next() {
                    Some(e) => {
                        let e = e?;
                        Some(Reverse((e.id, i, at, e.pack, e.file, e.stored_len)))
                    }
                    None => None,
                })
            };
        for i in 0..iters.len() {
            if let Some(h) = next(i, 0, &mut iters)? {
                heap.push(h);
            }
        }
        while let Some(Reverse((id, i, at, pack, file, stored))) = heap.pop() {
            if let Some(h) = next(i, at + 1, &mut iters)? {
                heap.push(h);
            }
            if !self.files.contains_key(&file) {
                continue; // dead: its index file is gone
            }
            let Some(Some(pid)) = self.packs.get(pack as usize) else {
                return Err(Error::Cache("an index entry names an unknown pack".into()));
            };
            f(&id, pid, bases[i] + at, stored);
        }
        Ok(())
    }

    /// [`Table::lookup`], with the position of the entry found: the same ID always gives the
    /// same position, so a bitmap of `positions()` bits can mark chunks (prune, fsck) at one
    /// bit per entry instead of a set of IDs.
    pub fn lookup_pos(&self, id: &ChunkId) -> Option<(Hit, u64)> {
        self.note_lookup();
        let mut found = Vec::new();
        let mut base = 0u64;
        for i in 0..self.runs.len() {
            if let Some((h, pos)) = self.probe(i, id, &mut found) {
                return Some((h, base + pos));
            }
            base += self.runs[i].count();
        }
        None
    }

    /// The first live entry of `id` in run `i` whose MAC checks out, and its position in the
    /// run.
    fn probe(
        &self,
        i: usize,
        id: &ChunkId,
        found: &mut Vec<(u64, RunEntry)>,
    ) -> Option<(Hit, u64)> {
        found.clear();
        if let Err(e) = self.runs[i].find(id, found) {
            self.taint(&e.to_string());
            return None;
        }
        for (pos, e) in found.iter() {
            let Some(file) = self.files.get(&e.file) else {
                continue; // an index file a prune deleted
            };
            let Some(Some(pack)) = self.packs.get(e.pack as usize) else {
                self.taint("an index entry names an unknown pack");
                continue;
            };
            let mac = entry_mac(&self.key, e, pack, file);
            // Constant-time comparison: the MAC guards against a writer of the cache.
            let ok = mac
                .iter()
                .zip(e.mac.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            let (Some(kind), Some(compression), true) =
                (BlobKind::from_u8(e.kind), Compression::from_u8(e.comp), ok)
            else {
                self.taint("an index entry fails its MAC");
                continue;
            };
            let hit = Hit {
                origin: Origin {
                    file: Some(*file),
                    pack: *pack,
                },
                entry: BlobEntry {
                    kind,
                    compression,
                    raw_len: e.raw_len,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    id: e.id,
                },
            };
            return Some((hit, *pos));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_reads_ahead_once_past_its_lookup_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r");
        let mut entries: Vec<RunEntry> = (0..100u32)
            .map(|i| RunEntry {
                id: ChunkId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                pack: 0,
                file: 0,
                offset: i,
                stored_len: 1,
                raw_len: 1,
                kind: 0,
                comp: 0,
                mac: [0; 8],
            })
            .collect();
        entries.sort_by_key(|e| e.id);
        super::super::run::write(&p, 100, entries.into_iter().map(Ok)).unwrap();
        let mut t = Table::new(zeroize::Zeroizing::new([7; 32]));
        t.add_run(Run::open(&p).unwrap());
        let miss = ChunkId([0xEE; 32]);
        for _ in 1..PREFETCH_MIN {
            assert!(t.lookup(&miss).is_none());
        }
        assert!(!t.prefetch_started(), "started before the threshold");
        assert!(t.lookup_pos(&miss).is_none());
        assert!(t.prefetch_started(), "not started at the threshold");
        // Later lookups neither start it again nor fail.
        assert!(t.lookup(&miss).is_none());
        // A table reopened after a write inherits the read-ahead, and the count of one that
        // has not started it yet.
        let reopened = |from: &Table| {
            let t2 = Table::new(zeroize::Zeroizing::new([7; 32]));
            t2.carry_from(from);
            t2
        };
        assert!(reopened(&t).prefetch_started());
        let fresh = reopened(&Table::new(zeroize::Zeroizing::new([7; 32])));
        for _ in 1..PREFETCH_MIN {
            fresh.lookup(&miss);
        }
        let mut next = reopened(&fresh);
        next.add_run(Run::open(&p).unwrap());
        assert!(!next.prefetch_started());
        next.lookup(&miss);
        assert!(next.prefetch_started(), "the count was not carried over");
    }
}
