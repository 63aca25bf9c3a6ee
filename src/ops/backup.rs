//! Backup: stream → chunks → new blobs sealed into packs → chunk-list tree → index → snapshot.
//!
//! Threads: the caller's thread reads and chunks (serial, large blocks); per block, keyed
//! hashing and compression+sealing of new chunks run on rayon in order-preserving batches; one
//! uploader thread puts finished packs, fed through a bounded channel, so uploads overlap with
//! chunking and at most `PACKS_IN_FLIGHT` packs wait in memory (backpressure).
//!
//! Commit discipline: the index file is written only after every pack it lists is stored, and
//! the snapshot only after the index and after `finish_source` approved the producer (exit 0,
//! output not empty). Any failure before that returns an error and leaves only unreferenced
//! packs, which prune removes.

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use crate::backend::Backend;
use crate::chunker::Chunker;
use crate::error::{Error, ObjectKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::BlobKind;
use crate::format::tree::TreeEntry;
use crate::id::{ChunkId, ObjectId};
use crate::index::Index;
use crate::pack::{seal_blob, FinishedPack, PackWriter};
use crate::repo::Repo;
use crate::snapshot::{Snapshot, Source, Stream};
use crate::tree::{NodeSink, TreeBuilder};

const PACKS_IN_FLIGHT: usize = 1;

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub name: String,
    pub tags: Vec<(String, String)>,
    pub host: String,
    pub time: Option<DateTime<Utc>>,
    pub stream_name: String,
    pub allow_empty: bool,
}

/// Counters reported while running and at the end.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackupStats {
    pub bytes_read: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub packs_written: u64,
    pub tree_blobs: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupResult {
    pub snapshot_id: ObjectId,
    pub snapshot: Snapshot,
    pub index_id: Option<ObjectId>,
    pub stats: BackupStats,
}

/// Everything that stores blobs during one backup: dedup state, the open pack, the uploader.
struct Store<'a> {
    key: &'a crate::crypto::MasterKey,
    zstd_level: i32,
    index: &'a Index,
    pending: HashSet<ChunkId>,
    packer: PackWriter,
    written: Vec<IndexPack>,
    tx: Option<SyncSender<FinishedPack>>,
    uploaders: Vec<JoinHandle<Result<()>>>,
    stats: BackupStats,
}

impl<'a> Store<'a> {
    fn new(repo: &'a Repo, index: &'a Index) -> Result<Self> {
        let (tx, rx) = sync_channel::<FinishedPack>(PACKS_IN_FLIGHT);
        // Latency-bound stores (S3) get several uploaders sharing one bounded queue: memory
        // stays at (uploaders + queue + the open pack) packs.
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let mut uploaders = Vec::new();
        for _ in 0..repo.backend.upload_concurrency() {
            let backend: Arc<dyn Backend> = Arc::clone(&repo.backend);
            let rx = Arc::clone(&rx);
            let h = std::thread::Builder::new()
                .name("pack-upload".into())
                .spawn(move || -> Result<()> {
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(p) = next else { return Ok(()) };
                        backend.put(ObjectKind::Pack, &p.record.id.to_hex(), &p.bytes)?;
                    }
                })
                .map_err(|e| Error::io("spawn uploader", e))?;
            uploaders.push(h);
        }
        Ok(Store {
            key: &repo.key,
            zstd_level: repo.config.zstd_level,
            index,
            pending: HashSet::new(),
            packer: PackWriter::new(repo.config.pack_target),
            written: Vec::new(),
            tx: Some(tx),
            uploaders,
            stats: BackupStats::default(),
        })
    }

    fn is_known(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.pending.contains(id)
    }

    fn add_sealed(&mut self, b: crate::pack::SealedBlob) -> Result<()> {
        if self.packer.would_overflow(b.bytes.len()) {
            self.flush_pack()?;
        }
        self.stats.new_bytes += b.bytes.len() as u64;
        self.packer.add(b);
        Ok(())
    }

    fn flush_pack(&mut self) -> Result<()> {
        if self.packer.is_empty() {
            return Ok(());
        }
        let p = self.packer.finish(self.key);
        self.written.push(p.record.clone());
        self.stats.packs_written += 1;
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(p).is_ok())
            .unwrap_or(false);
        if !sent {
            // The uploader stopped: its error explains why.
            return Err(self
                .join_uploader()
                .err()
                .unwrap_or_else(|| Error::Backend("pack uploader stopped unexpectedly".into())));
        }
        Ok(())
    }

    /// Close the queue and wait for every uploader; the first error wins.
    fn join_uploader(&mut self) -> Result<()> {
        self.tx.take();
        let mut result = Ok(());
        for h in self.uploaders.drain(..) {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(Error::Backend("pack uploader panicked".into())));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Hash, dedup, compress and seal one block's chunks; returns their tree entries in order.
    fn store_batch(
        &mut self,
        data: &[u8],
        ranges: &[std::ops::Range<usize>],
    ) -> Result<Vec<TreeEntry>> {
        let key = self.key;
        let ids: Vec<ChunkId> = ranges
            .par_iter()
            .map(|r| ChunkId::compute(&key.id_key, &data[r.clone()]))
            .collect();
        let mut todo = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if !self.is_known(id) {
                self.pending.insert(*id);
                todo.push(i);
            }
        }
        let level = self.zstd_level;
        let sealed: Vec<_> = todo
            .par_iter()
            .map(|&i| seal_blob(key, level, BlobKind::Data, ids[i], &data[ranges[i].clone()]))
            .collect();
        self.stats.chunks += ranges.len() as u64;
        self.stats.new_chunks += sealed.len() as u64;
        for b in sealed {
            self.add_sealed(b)?;
        }
        Ok(ids
            .iter()
            .zip(ranges)
            .map(|(id, r)| TreeEntry {
                id: *id,
                len: r.len() as u64,
            })
            .collect())
    }
}

impl NodeSink for Store<'_> {
    fn store_node(&mut self, plaintext: Vec<u8>) -> Result<ChunkId> {
        let id = ChunkId::compute(&self.key.id_key, &plaintext);
        if !self.is_known(&id) {
            self.pending.insert(id);
            self.stats.tree_blobs += 1;
            let b = seal_blob(self.key, self.zstd_level, BlobKind::Tree, id, &plaintext);
            self.add_sealed(b)?;
        }
        Ok(id)
    }
}

/// Back up one stream. `finish_source` runs after the stream's end and before anything is
/// committed; it returns the source to record, or the error that stops the commit (a failed
/// producer). `progress` is called after each block with the running counters.
pub fn backup(
    repo: &mut Repo,
    reader: impl Read,
    opts: &BackupOptions,
    finish_source: impl FnOnce() -> Result<Source>,
    mut progress: impl FnMut(&BackupStats),
) -> Result<BackupResult> {
    let started = Instant::now();
    let requests_before = repo.requests();
    let time = opts.time.unwrap_or_else(Utc::now);
    let lock = repo.lock(false, "backup")?;
    repo.index()?;
    let index = repo.index.take().expect("loaded by index()");
    let result = run(repo, &index, reader, &mut progress);
    repo.index = Some(index);
    let (root, stats, written, size, hash) = result?;

    // The producer's verdict comes before any commit: a failed dump must leave no trace.
    let source = finish_source()?;
    if size == 0 && !opts.allow_empty {
        return Err(match source {
            Source::Command { .. } => Error::ProducerFailed("the command wrote no output".into()),
            _ => Error::EmptyInput,
        });
    }
    if crate::signals::interrupted() {
        return Err(Error::Interrupted);
    }
    if !lock.still_held()? {
        return Err(Error::LockHeld(
            "this backup's lock was removed while it ran (unlock --all?); a prune may have deleted data it relies on, so nothing was committed".into(),
        ));
    }
    let index_id = if written.is_empty() {
        None
    } else {
        Some(repo.write_index_file(&IndexFile {
            superseded: vec![],
            packs: written,
        })?)
    };
    let snapshot = Snapshot {
        format: 1,
        time,
        host: opts.host.clone(),
        name: opts.name.clone(),
        tags: opts.tags.iter().cloned().collect(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
        requests: Some(repo.requests().since(&requests_before)),
        streams: vec![Stream {
            name: opts.stream_name.clone(),
            source,
            size,
            blake3: hash,
            root,
            chunks: stats.chunks,
            new_chunks: stats.new_chunks,
            new_bytes: stats.new_bytes,
        }],
    };
    let snapshot_id = repo.write_snapshot(&snapshot)?;
    Ok(BackupResult {
        snapshot_id,
        snapshot,
        index_id,
        stats,
    })
}

type RunOutput = (ChunkId, BackupStats, Vec<IndexPack>, u64, String);

fn run(
    repo: &Repo,
    index: &Index,
    reader: impl Read,
    progress: &mut impl FnMut(&BackupStats),
) -> Result<RunOutput> {
    let mut store = Store::new(repo, index)?;
    let outcome = (|| -> Result<(ChunkId, u64, String)> {
        let mut chunker = Chunker::new(reader, repo.chunker_params());
        let mut tree = TreeBuilder::default();
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(batch) = chunker.next_batch()? {
            hasher.update(&batch.data);
            size += batch.data.len() as u64;
            for e in store.store_batch(&batch.data, &batch.chunks)? {
                tree.push(e, &mut store)?;
            }
            store.stats.bytes_read = size;
            progress(&store.stats);
            if crate::signals::interrupted() {
                return Err(Error::Interrupted);
            }
        }
        let root = tree.finish(&mut store)?;
        store.flush_pack()?;
        Ok((root, size, hasher.finalize().to_hex().to_string()))
    })();
    // Always wait for the uploader: on success every pack must be stored before the index is
    // written; on failure we must not leave a thread writing behind our back.
    let uploaded = store.join_uploader();
    let (root, size, hash) = outcome?;
    uploaded?;
    Ok((root, store.stats, store.written, size, hash))
}
