//! Restore: snapshot → tree walk → index lookups → ranged pack reads → open → decompress →
//! verify → output, in stream order.
//!
//! Leaves are taken in batches; within a batch, blobs that sit next to each other in the same
//! pack are fetched with one ranged read, reads and decryption run in parallel (rayon), and
//! output is written in order. Batches are pipelined: while the caller's thread hashes and
//! writes batch N, a worker fetches and opens batch N+1, so the serial part (whole-stream hash,
//! output) overlaps with the parallel part. Latency-bound stores (S3) fetch up to three
//! batches ahead. Every blob is verified (AEAD and keyed hash) before a byte of it
//! is written, and the whole-stream BLAKE3 and size are checked at the end. When the output is
//! a file, the caller writes to a temporary name and renames only after this returns Ok.

use std::io::Write;

use rayon::prelude::*;

use crate::error::{Error, ObjectKind, Result};
use crate::format::pack::{BlobEntry, BlobKind};
use crate::format::tree::{TreeEntry, TreeNode};
use crate::id::{ChunkId, PackId};
use crate::index::Index;
use crate::repo::Repo;
use crate::snapshot::SnapshotEntry;
use crate::tree::LeafWalker;

/// A batch ends at this many leaves or this many bytes of output, whichever comes first (the
/// byte bound keeps memory flat when chunks are large: at most `ahead` + 1 batch buffers, two
/// locally and four on S3, are alive at once).
const BATCH_LEAVES: usize = 1024;
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// The largest single coalesced read.
const MAX_READ: u64 = 8 * 1024 * 1024;
/// Blobs of one pack at most this far apart share a read; the gap's bytes are fetched and
/// dropped. A request costs far more than 256 KiB of transfer on object stores (Garage spent
/// 5 CPU-s serving a 292 MB restore as 1,756 ranged GETs), and little on a local disk.
const MAX_GAP: u64 = 256 * 1024;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreStats {
    pub bytes_written: u64,
    pub chunks: u64,
    pub reads: u64,
    /// Times the index was reloaded because a pack it named had gone (a concurrent prune).
    pub index_reloads: u64,
}

/// Load and decode a tree blob, checking it has the level its parent implies.
pub fn load_tree(repo: &Repo, index: &Index, id: &ChunkId, level: Option<u8>) -> Result<TreeNode> {
    let plain = repo.read_blob(index, id)?;
    let pack = index.get(id).map(|(p, _)| p.to_hex()).unwrap_or_default();
    let bad = |d: String| Error::CorruptBlob {
        chunk: id.to_hex(),
        pack: pack.clone(),
        detail: d,
    };
    if index.get(id).is_some_and(|(_, e)| e.kind != BlobKind::Tree) {
        return Err(bad("expected a tree blob, found a data blob".into()));
    }
    let node = TreeNode::decode(&plain).map_err(bad)?;
    if level.is_some_and(|l| l != node.level) {
        return Err(bad(format!(
            "tree level {} where {level:?} was expected",
            node.level
        )));
    }
    Ok(node)
}

struct Read {
    pack: PackId,
    start: u64,
    end: u64,
    /// (position in batch, entry)
    blobs: Vec<(usize, BlobEntry)>,
}

/// Plan the ranged reads for one batch: blobs are grouped per pack and sorted by offset, so a
/// stream that alternates between old and new packs (every incremental snapshot does) still
/// costs one read per pack region, not one per switch; output order is restored by position.
fn plan_reads(index: &Index, leaves: &[TreeEntry]) -> Result<Vec<Read>> {
    let mut located = Vec::with_capacity(leaves.len());
    for (i, leaf) in leaves.iter().enumerate() {
        let (pack, e) = index.get(&leaf.id).ok_or_else(|| Error::CorruptBlob {
            chunk: leaf.id.to_hex(),
            pack: "-".into(),
            detail: "not in the index (missing from the repository)".into(),
        })?;
        if e.kind != BlobKind::Data || e.raw_len as u64 != leaf.len {
            return Err(Error::CorruptBlob {
                chunk: leaf.id.to_hex(),
                pack: pack.to_hex(),
                detail: "index entry disagrees with the chunk list (kind or length)".into(),
            });
        }
        located.push((pack, e, i));
    }
    located.sort_by_key(|(pack, e, i)| (*pack, e.offset, *i));
    let mut reads: Vec<Read> = Vec::new();
    for (pack, e, i) in located {
        let (start, end) = (e.offset as u64, e.end());
        match reads.last_mut() {
            // The same blob again (a chunk repeated within the batch): already covered.
            Some(r) if r.pack == pack && start >= r.start && end <= r.end => r.blobs.push((i, e)),
            Some(r)
                if r.pack == pack
                    && start >= r.end
                    && start - r.end <= MAX_GAP
                    && end - r.start <= MAX_READ =>
            {
                r.end = end;
                r.blobs.push((i, e));
            }
            _ => reads.push(Read {
                pack,
                start,
                end,
                blobs: vec![(i, e)],
            }),
        }
    }
    Ok(reads)
}

/// The thread-safe parts of an open repository that fetching needs (the cache is not `Sync`).
#[derive(Clone, Copy)]
struct Fetcher<'a> {
    backend: &'a dyn crate::backend::Backend,
    key: &'a crate::crypto::MasterKey,
    index: &'a Index,
    pool: &'a rayon::ThreadPool,
}

/// One planned read and, for each blob it carries, where its plaintext goes.
type ReadJob<'r, 'b> = (&'r Read, Vec<(&'b mut [u8], &'r BlobEntry)>);

/// Fetch, open and verify one batch of leaves into `buf` (reused between batches), which
/// comes back holding exactly the batch's plaintext, in stream order; also returns the number
/// of ranged reads made. Every blob is decompressed straight into its place in `buf`.
fn fetch_batch(f: Fetcher<'_>, leaves: &[TreeEntry], mut buf: Vec<u8>) -> Result<(Vec<u8>, u64)> {
    let Fetcher {
        backend,
        key,
        index,
        pool,
    } = f;
    let reads = plan_reads(index, leaves)?;
    let total: usize = leaves.iter().map(|l| l.len as usize).sum();
    // Stale bytes are harmless: every byte of `buf[..total]` is overwritten below or the
    // batch fails. Only growth pays for zeroing.
    if buf.len() < total {
        buf.resize(total, 0);
    }
    buf.truncate(total);
    // One disjoint output slice per leaf position, handed to the read that carries it.
    let mut slots: Vec<Option<&mut [u8]>> = Vec::with_capacity(leaves.len());
    let mut rest = &mut buf[..];
    for l in leaves {
        let (slot, tail) = std::mem::take(&mut rest).split_at_mut(l.len as usize);
        slots.push(Some(slot));
        rest = tail;
    }
    let jobs: Vec<ReadJob<'_, '_>> = reads
        .iter()
        .map(|r| {
            let outs = r
                .blobs
                .iter()
                .map(|(i, e)| (slots[*i].take().expect("each position is planned once"), e))
                .collect();
            (r, outs)
        })
        .collect();
    // The pool is sized for the backend's latency: reads from S3 overlap many at a time.
    pool.install(|| {
        jobs.into_par_iter()
            .try_for_each(|(r, outs)| -> Result<()> {
                let bytes =
                    crate::repo::get_pack_range(backend, &r.pack, r.start, r.end - r.start)?;
                outs.into_par_iter().try_for_each(|(dst, e)| {
                    let s = (e.offset as u64 - r.start) as usize;
                    let sealed = &bytes[s..s + e.stored_len as usize];
                    crate::pack::open_blob_into(key, &r.pack, e, sealed, dst)
                })
            })
    })?;
    Ok((buf, reads.len() as u64))
}

fn join_worker<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(Error::Backend("restore worker panicked".into())))
}

/// Restore stream `stream` of `snap` into `out`, verifying everything.
pub fn restore(
    repo: &mut Repo,
    snap: &SnapshotEntry,
    stream: Option<&str>,
    out: &mut dyn Write,
    mut progress: impl FnMut(&RestoreStats),
) -> Result<RestoreStats> {
    let s = match stream {
        Some(n) => snap
            .snapshot
            .streams
            .iter()
            .find(|s| s.name == n)
            .ok_or_else(|| Error::InvalidInput(format!("snapshot has no stream named {n:?}")))?,
        None => snap.snapshot.streams.first().ok_or_else(|| {
            Error::corrupt(ObjectKind::Snapshot, snap.id, "snapshot has no streams")
        })?,
    }
    .clone();
    let mut hasher = blake3::Hasher::new();
    let mut stats = RestoreStats::default();
    repo.index()?;
    // A prune running beside this restore (restore takes no lock, so that read-only storage
    // credentials suffice) may repack the blobs it needs and delete the packs the loaded index
    // names. On the first missing pack, reload the index once and resume where the output
    // stopped; a pack still missing after that is damage.
    // Likewise, a cached index entry that failed its MAC (format-spec X10) reads as a missing
    // chunk: rebuild the cache from the repository once and resume.
    let mut reloaded = false;
    let mut rebuilt = false;
    loop {
        match restore_from(repo, &s, out, &mut hasher, &mut stats, &mut progress) {
            Err(e) if !reloaded && crate::repo::is_missing_pack(&e) => {
                reloaded = true;
                stats.index_reloads += 1;
                repo.reload_index()?;
            }
            Err(e) if !rebuilt && repo.rebuild_tainted_cache()? => {
                let _ = e;
                rebuilt = true;
                stats.index_reloads += 1;
            }
            done => break done?,
        }
    }
    out.flush().map_err(|e| Error::io("write output", e))?;
    let hash = hasher.finalize().to_hex().to_string();
    if stats.bytes_written != s.size || !hash.eq_ignore_ascii_case(&s.blake3) {
        return Err(Error::StreamMismatch {
            snapshot: snap.id.to_hex(),
            detail: format!(
                "restored {} bytes with BLAKE3 {hash}, snapshot says {} bytes with {}",
                stats.bytes_written, s.size, s.blake3
            ),
        });
    }
    Ok(stats)
}

/// Restore `s` from the leaf after `stats.bytes_written` to the end, continuing `hasher` and
/// `stats`, with the index `repo` has loaded.
fn restore_from(
    repo: &Repo,
    s: &crate::snapshot::Stream,
    out: &mut dyn Write,
    hasher: &mut blake3::Hasher,
    stats: &mut RestoreStats,
    progress: &mut impl FnMut(&RestoreStats),
) -> Result<()> {
    let index = repo.index.as_ref().expect("loaded by restore");
    let mut walker = LeafWalker::new(&s.root, s.size, |id: &ChunkId, lvl: Option<u8>| {
        load_tree(repo, index, id, lvl)
    })?;
    // Resuming: the leaves already written (always whole batches) are walked past.
    let mut skipped = 0u64;
    while skipped < stats.bytes_written {
        match walker.next_leaf()? {
            Some(e) => skipped += e.len,
            None => break,
        }
    }
    if skipped != stats.bytes_written {
        return Err(Error::Backend(format!(
            "cannot resume the restore at byte {}: the chunk list has a leaf boundary at {skipped}",
            stats.bytes_written
        )));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(repo.backend.read_concurrency().max(1))
        .thread_name(|i| format!("restore-{i}"))
        .build()
        .map_err(|e| Error::Backend(format!("restore thread pool: {e}")))?;
    let fetcher = Fetcher {
        backend: repo.backend.as_ref(),
        key: &repo.key,
        index,
        pool: &pool,
    };
    // Batches fetched ahead while this thread writes: one for a local disk (its reads are
    // CPU-bound and the pool already uses every core), more for latency-bound stores, whose
    // pool is larger than the machine. Each costs one batch buffer (<= 16 MiB).
    let ahead = (repo.backend.read_concurrency() / rayon::current_num_threads().max(1)).clamp(1, 3);
    std::thread::scope(|scope| -> Result<()> {
        // Batches being fetched by workers, oldest first, with their leaf counts; output
        // buffers go back and forth between the workers and this thread.
        let mut inflight = std::collections::VecDeque::new();
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let mut walked_all = false;
        loop {
            while !walked_all && inflight.len() <= ahead {
                // Tree nodes are loaded here, on the caller's thread (they need the cache).
                let mut batch = Vec::with_capacity(BATCH_LEAVES);
                let mut bytes = 0u64;
                while batch.len() < BATCH_LEAVES && bytes < BATCH_BYTES {
                    match walker.next_leaf()? {
                        Some(e) => {
                            bytes += e.len;
                            batch.push(e);
                        }
                        None => break,
                    }
                }
                if crate::signals::interrupted() {
                    return Err(Error::Interrupted);
                }
                if batch.is_empty() {
                    walked_all = true;
                    break;
                }
                let n = batch.len() as u64;
                let buf = spare.pop().unwrap_or_default();
                let h = std::thread::Builder::new()
                    .name("restore-fetch".into())
                    .spawn_scoped(scope, move || fetch_batch(fetcher, &batch, buf))
                    .map_err(|e| Error::io("spawn restore worker", e))?;
                inflight.push_back((h, n));
            }
            let Some((h, n)) = inflight.pop_front() else {
                return Ok(());
            };
            let (plain, reads): (Vec<u8>, u64) = join_worker(h)?;
            stats.reads += reads;
            // 16 MiB at a time: the whole-stream hash runs on both cores.
            hasher.update_rayon(&plain);
            out.write_all(&plain)
                .map_err(|e| Error::io("write output", e))?;
            stats.bytes_written += plain.len() as u64;
            stats.chunks += n;
            spare.push(plain);
            progress(stats);
        }
    })?;
    Ok(())
}
