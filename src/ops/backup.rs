//! Backup: stream → chunks → new blobs sealed into packs → chunk-list tree → index → snapshot.
//!
//! Threads: the caller's thread reads 2 MiB blocks and cuts each (its two halves in parallel
//! on rayon, `chunker::cut_block`); a worker thread takes block N while block N+1 is read: the
//! whole-stream hash, keyed chunk hashing, dedup, and compression + pre-seal check + sealing of
//! new chunks run on rayon in order-preserving batches; pack uploader threads put finished
//! packs (after `pack::verify_finished`), fed through a bounded channel, so uploads overlap
//! with chunking and at most `PACKS_IN_FLIGHT` packs wait in memory (backpressure).
//!
//! A snapshot may hold several named streams (`backup_streams`): they are read one after
//! another through the same dedup state and packs, so the snapshot is atomic — all its streams
//! commit together or none does.
//!
//! Commit discipline: the index file is written only after every pack it lists is stored, and
//! the snapshot only after the index and after each stream's `finish` approved its producer
//! (exit 0, output not empty). Any failure before that returns an error and leaves only
//! unreferenced packs, which prune removes.
//!
//! Deduplication trusts the loaded index, which may come from the local cache. So before
//! anything is committed, every chunk deduplicated against the index must come from an index
//! file of the listing this backup took, in a pack that file lists (`Index::check_sources`,
//! format-spec X10); the cache's MACs make the rows themselves those of authenticated index
//! files. The check costs one set insert per deduplicated chunk.
//!
//! Memory stays flat in the size of the stream and of the repository (issue 14): the index is
//! the cache's table on disk, and once the packs written so far hold [`FLUSH_ENTRIES`] blobs,
//! those that are already stored are written out as an index file of their own (allowed by the
//! write order: packs, then index, then snapshot) and recorded in the cache, so neither their
//! entries nor the set of chunks pending in this backup grow without bound. Such an index file
//! without a snapshot is what an interrupted backup leaves anyway: its packs are unreferenced
//! and `prune` removes them.

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use crate::backend::Backend;
use crate::cache::Cache;
use crate::chunker::Chunker;
use crate::dumpkind::DumpInfo;
use crate::error::{Error, ObjectKind, Result};
use crate::format::index::{IndexFile, IndexPack};
use crate::format::pack::BlobKind;
use crate::format::tree::TreeEntry;
use crate::id::{ChunkId, ObjectId, PackId};
use crate::index::{Index, Origin};
use crate::pack::{seal_blob, FinishedPack, PackWriter};
use crate::repo::Repo;
use crate::snapshot::{Snapshot, Source, Stream};
use crate::tree::{NodeSink, TreeBuilder};

const PACKS_IN_FLIGHT: usize = 1;
/// Blobs written before the stored ones among them are flushed into an index file (~4 GiB of
/// new data at 16 KiB chunks; each costs ~130 bytes of memory until then).
pub const FLUSH_ENTRIES: usize = 256 * 1024;

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub name: String,
    pub tags: Vec<(String, String)>,
    pub host: String,
    pub time: Option<DateTime<Utc>>,
    pub stream_name: String,
    pub allow_empty: bool,
    /// Skip the pre-upload verification (`pack::seal_blob_verified` and
    /// `pack::verify_finished`). Off by default: only for benchmarking the verification's cost.
    pub skip_pack_verification: bool,
    /// Commit a stream that `dumpkind` judges an evidently truncated dump (default: refuse).
    pub allow_truncated: bool,
    /// Blobs written before the stored ones are flushed into an index file; 0 means
    /// [`FLUSH_ENTRIES`] (tests set it low to exercise the flush).
    pub flush_entries: usize,
}

/// Counters reported while running and at the end.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackupStats {
    pub bytes_read: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// Sealed (compressed and encrypted) bytes of the new blobs, tree blobs included.
    pub new_bytes: u64,
    /// The same blobs before compression: `new_raw_bytes / new_bytes` is what compression
    /// saved, `new_raw_bytes / bytes_read` the share of the input that was new.
    pub new_raw_bytes: u64,
    pub packs_written: u64,
    pub tree_blobs: u64,
    /// The stream being read (for progress displays; not part of the JSON).
    #[serde(skip)]
    pub current_stream: String,
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
    backend: &'a dyn Backend,
    zstd_level: i32,
    verify: bool,
    index: &'a mut Index,
    cache: Option<&'a mut Cache>,
    pending: HashSet<ChunkId>,
    /// Origins (index file, pack) of every chunk deduplicated against `index`.
    hits: HashSet<Origin>,
    packer: PackWriter,
    /// Packs written whose entries are in no index file yet, and how many blobs they hold.
    written: Vec<IndexPack>,
    written_entries: usize,
    flush_entries: usize,
    /// Packs the uploaders have stored (and that `written` may still hold).
    uploaded: Arc<std::sync::Mutex<HashSet<PackId>>>,
    /// Index files written before the end (`flush_index`).
    flushed: Vec<ObjectId>,
    tx: Option<SyncSender<FinishedPack>>,
    uploaders: Vec<JoinHandle<Result<()>>>,
    stats: BackupStats,
}

impl<'a> Store<'a> {
    fn new(
        repo: &'a Repo,
        index: &'a mut Index,
        cache: Option<&'a mut Cache>,
        verify: bool,
    ) -> Result<Self> {
        let (tx, rx) = sync_channel::<FinishedPack>(PACKS_IN_FLIGHT);
        // Latency-bound stores (S3) get several uploaders sharing one bounded queue: memory
        // stays at (uploaders + queue + the open pack) packs.
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let uploaded = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let mut uploaders = Vec::new();
        for _ in 0..repo.backend.upload_concurrency() {
            let backend: Arc<dyn Backend> = Arc::clone(&repo.backend);
            let rx = Arc::clone(&rx);
            let done = Arc::clone(&uploaded);
            let verify_key = verify.then(|| repo.key.clone());
            let h = std::thread::Builder::new()
                .name("pack-upload".into())
                .spawn(move || -> Result<()> {
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(p) = next else { return Ok(()) };
                        if let Some(key) = &verify_key {
                            crate::pack::verify_finished(key, &p)?;
                        }
                        backend.put(ObjectKind::Pack, &p.record.id.to_hex(), &p.bytes)?;
                        crate::failpoint::hit("backup:after-pack-upload");
                        done.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(p.record.id);
                    }
                })
                .map_err(|e| Error::io("spawn uploader", e))?;
            uploaders.push(h);
        }
        Ok(Store {
            key: &repo.key,
            backend: repo.backend.as_ref(),
            zstd_level: repo.config.zstd_level,
            verify,
            index,
            cache,
            pending: HashSet::new(),
            hits: HashSet::new(),
            packer: PackWriter::new(repo.config.pack_target),
            written: Vec::new(),
            written_entries: 0,
            flush_entries: FLUSH_ENTRIES,
            uploaded,
            flushed: Vec::new(),
            tx: Some(tx),
            uploaders,
            stats: BackupStats::default(),
        })
    }

    /// Write the packs already stored among `written` as an index file, so that their entries
    /// leave memory for the cache's table (see the module doc).
    fn flush_index(&mut self) -> Result<()> {
        let done = std::mem::take(&mut *self.uploaded.lock().unwrap_or_else(|p| p.into_inner()));
        let (ready, rest): (Vec<IndexPack>, Vec<IndexPack>) = std::mem::take(&mut self.written)
            .into_iter()
            .partition(|p| done.contains(&p.id));
        self.written = rest;
        if ready.is_empty() {
            return Ok(());
        }
        crate::failpoint::hit("backup:flush-index");
        let file = IndexFile {
            superseded: vec![],
            packs: ready,
        };
        let id = crate::repo::store_index_file(
            self.backend,
            self.key,
            self.cache.as_deref_mut(),
            Some(&mut *self.index),
            &file,
        )?;
        for p in &file.packs {
            self.written_entries -= p.entries.len();
            for e in &p.entries {
                self.pending.remove(&e.id);
            }
        }
        self.flushed.push(id);
        Ok(())
    }

    /// Whether `id` is stored already (or earlier in this backup); a hit in the index is
    /// remembered for the pre-commit check.
    fn is_known(&mut self, id: &ChunkId) -> bool {
        let hit = self.index.location(id);
        self.known_given(id, hit)
    }

    /// [`Store::is_known`], given the index's answer for `id` (looked up in a batch).
    fn known_given(&mut self, id: &ChunkId, hit: Option<crate::index::Hit>) -> bool {
        if let Some(h) = hit {
            self.hits.insert(h.origin);
            return true;
        }
        self.pending.contains(id)
    }

    fn add_sealed(&mut self, b: crate::pack::SealedBlob) -> Result<()> {
        if self.packer.would_overflow(b.bytes.len()) {
            self.flush_pack()?;
        }
        self.stats.new_bytes += b.bytes.len() as u64;
        self.stats.new_raw_bytes += b.raw_len as u64;
        self.packer.add(b);
        Ok(())
    }

    fn flush_pack(&mut self) -> Result<()> {
        if self.packer.is_empty() {
            return Ok(());
        }
        let p = self.packer.finish(self.key);
        self.written_entries += p.record.entries.len();
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
        if self.written_entries >= self.flush_entries {
            self.flush_index()?;
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
        // The block's lookups are batched and run on both cores: with the index on disk each
        // may read a run file (issue 14). Then, in order, what this backup already holds.
        let index = &*self.index;
        let found: Vec<_> = ids
            .par_iter()
            .with_min_len(16)
            .map(|id| index.location(id))
            .collect();
        let mut todo = Vec::new();
        for (i, (id, hit)) in ids.iter().zip(found).enumerate() {
            if !self.known_given(id, hit) {
                self.pending.insert(*id);
                todo.push(i);
            }
        }
        let (level, verify) = (self.zstd_level, self.verify);
        let sealed: Vec<_> = todo
            .par_iter()
            .map(|&i| {
                seal(
                    key,
                    level,
                    verify,
                    BlobKind::Data,
                    ids[i],
                    &data[ranges[i].clone()],
                )
            })
            .collect::<Result<_>>()?;
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
        crate::failpoint::hit("backup:tree-node");
        let id = ChunkId::compute(&self.key.id_key, &plaintext);
        if !self.is_known(&id) {
            self.pending.insert(id);
            self.stats.tree_blobs += 1;
            let b = seal(
                self.key,
                self.zstd_level,
                self.verify,
                BlobKind::Tree,
                id,
                &plaintext,
            )?;
            self.add_sealed(b)?;
        }
        Ok(id)
    }
}

/// Compress and seal one blob, checked before sealing unless verification is off.
fn seal(
    key: &crate::crypto::MasterKey,
    level: i32,
    verify: bool,
    kind: BlobKind,
    id: ChunkId,
    plain: &[u8],
) -> Result<crate::pack::SealedBlob> {
    if verify {
        crate::pack::seal_blob_verified(key, level, kind, id, plain)
    } else {
        Ok(seal_blob(key, level, kind, id, plain))
    }
}

/// One stream of a snapshot: its name and how to open it. Opening is deferred until the
/// previous stream has ended and been judged, so producers run one after another (never two
/// dumps at once, and a later producer is not started when an earlier one failed).
pub struct StreamInput<'a> {
    pub name: String,
    pub open: Box<dyn FnOnce() -> Result<OpenedStream<'a>> + 'a>,
}

/// An opened stream: the bytes, and the verdict on them.
pub struct OpenedStream<'a> {
    pub reader: Box<dyn Read + 'a>,
    /// Runs after the stream's end and before anything is committed: returns the source to
    /// record, or the error that stops the commit (a failed producer, a failed restore).
    pub finish: Box<dyn FnOnce() -> Result<Source> + 'a>,
}

impl<'a> StreamInput<'a> {
    /// A stream whose reader already exists (stdin, an open file, a running producer).
    pub fn ready(
        name: impl Into<String>,
        reader: impl Read + 'a,
        finish: impl FnOnce() -> Result<Source> + 'a,
    ) -> Self {
        let reader: Box<dyn Read + 'a> = Box::new(reader);
        let finish: Box<dyn FnOnce() -> Result<Source> + 'a> = Box::new(finish);
        StreamInput {
            name: name.into(),
            open: Box::new(move || Ok(OpenedStream { reader, finish })),
        }
    }
}

/// Longest stream name, in bytes (format-spec/07-snapshots.md, "Stream names").
pub const MAX_STREAM_NAME: usize = 255;

/// The rules every stream name of a new snapshot follows: non-empty, at most
/// `MAX_STREAM_NAME` bytes, no control characters, unique within the snapshot.
pub fn validate_stream_names<'n>(names: impl IntoIterator<Item = &'n str>) -> Result<()> {
    let mut seen = HashSet::new();
    for n in names {
        if n.is_empty() || n.len() > MAX_STREAM_NAME || n.chars().any(char::is_control) {
            return Err(Error::InvalidInput(format!(
                "stream name {n:?}: must be 1 to {MAX_STREAM_NAME} bytes without control characters"
            )));
        }
        if !seen.insert(n) {
            return Err(Error::InvalidInput(format!(
                "stream name {n:?} is given twice: names must be unique within a snapshot"
            )));
        }
    }
    Ok(())
}

/// The series name, the host and every tag key and value are printed one per field in the
/// `snapshots` table and used as metrics labels: they must be one line of printable text. Name,
/// host and tag keys are 1 to [`MAX_LABEL`] bytes, tag values 0 to [`MAX_LABEL`], none with a
/// control character (format-spec/07, "Labels").
pub fn validate_labels(name: &str, host: &str, tags: &[(String, String)]) -> Result<()> {
    let check = |what: &str, v: &str, may_be_empty: bool| {
        if (v.is_empty() && !may_be_empty) || v.len() > MAX_LABEL || v.chars().any(char::is_control)
        {
            let shown: String = v.chars().take(64).collect();
            let more = if v.chars().count() > 64 { "…" } else { "" };
            return Err(Error::InvalidInput(format!(
                "{what} {shown:?}{more}: must be {} to {MAX_LABEL} bytes without control characters (it is {} bytes)",
                if may_be_empty { 0 } else { 1 },
                v.len()
            )));
        }
        Ok(())
    };
    check("series name", name, false)?;
    check("host", host, false)?;
    for (k, v) in tags {
        check("tag key", k, false)?;
        check(&format!("value of tag {k:?}"), v, true)?;
    }
    Ok(())
}

/// Longest series name, host, tag key or tag value, in bytes.
pub const MAX_LABEL: usize = 255;

/// Back up one stream (named `opts.stream_name`). `finish_source` runs after the stream's end
/// and before anything is committed; it returns the source to record, or the error that stops
/// the commit (a failed producer). `progress` is called after each block with the running
/// counters.
pub fn backup<'a>(
    repo: &mut Repo,
    reader: impl Read + 'a,
    opts: &BackupOptions,
    finish_source: impl FnOnce() -> Result<Source> + 'a,
    progress: impl FnMut(&BackupStats),
) -> Result<BackupResult> {
    let input = StreamInput::ready(opts.stream_name.clone(), reader, finish_source);
    backup_streams(repo, vec![input], opts, progress)
}

/// Back up several streams into ONE snapshot, atomically: they are stored one after another,
/// in the given order, into the same packs; one index file and one snapshot are written at the
/// end, and only if every stream succeeded (its `finish` approved it and it is not empty unless
/// `allow_empty`). Any failure commits nothing and leaves only unreferenced packs.
/// `opts.stream_name` is not used: each input carries its name.
pub fn backup_streams(
    repo: &mut Repo,
    inputs: Vec<StreamInput<'_>>,
    opts: &BackupOptions,
    mut progress: impl FnMut(&BackupStats),
) -> Result<BackupResult> {
    if inputs.is_empty() {
        return Err(Error::InvalidInput(
            "a snapshot needs at least one stream".into(),
        ));
    }
    validate_stream_names(inputs.iter().map(|i| i.name.as_str()))?;
    validate_labels(&opts.name, &opts.host, &opts.tags)?;
    let started = Instant::now();
    let requests_before = repo.requests();
    let time = opts.time.unwrap_or_else(Utc::now);
    let lock = repo.lock(false, "backup")?;
    repo.index()?;
    let mut index = repo.index.take().expect("loaded by index()");
    let mut cache = repo.cache.take();
    let result = store_streams(
        repo,
        &mut index,
        cache.as_mut(),
        inputs,
        opts,
        &mut progress,
    );
    repo.index = Some(index);
    repo.cache = cache;
    let (streams, stats, written, hits, flushed) = result?;
    // An evidently cut-short dump is a failed dump: refused like a failed producer.
    if !opts.allow_truncated {
        crate::dumpkind::refuse_truncated(
            streams.iter().map(|s| (s.name.as_str(), s.dump.as_ref())),
        )?;
    }

    if crate::signals::interrupted() {
        return Err(Error::Interrupted);
    }
    if !lock.still_held()? {
        return Err(Error::LockHeld(
            "this backup's lock was removed while it ran (unlock --all?); a prune may have deleted data it relies on, so nothing was committed".into(),
        ));
    }
    // Nothing deduplicated against a row the repository does not confirm may be committed.
    repo.index
        .as_ref()
        .expect("put back above")
        .check_sources(&hits)?;
    crate::failpoint::hit("backup:before-index");
    let index_id = if written.is_empty() {
        flushed.last().copied()
    } else {
        Some(repo.write_index_file(&IndexFile {
            superseded: vec![],
            packs: written,
        })?)
    };
    crate::failpoint::hit("backup:after-index");
    let snapshot = Snapshot {
        format: 1,
        time,
        host: opts.host.clone(),
        name: opts.name.clone(),
        tags: opts.tags.iter().cloned().collect(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        duration_ms: started.elapsed().as_millis() as u64,
        requests: Some(repo.requests().since(&requests_before)),
        streams,
    };
    let snapshot_id = repo.write_snapshot(&snapshot)?;
    crate::failpoint::hit("backup:after-snapshot");
    // A cached entry that failed its MAC was treated as a miss (the chunk was stored again);
    // the cache is rebuilt so that the next run trusts only what the repository says.
    repo.drop_tainted_cache();
    Ok(BackupResult {
        snapshot_id,
        snapshot,
        index_id,
        stats,
    })
}

/// What `store_streams` returns: the streams, the totals, the packs written and not yet in an
/// index file, the origins of the chunks deduplicated against the index, and the index files
/// written on the way.
type Stored = (
    Vec<Stream>,
    BackupStats,
    Vec<IndexPack>,
    HashSet<Origin>,
    Vec<ObjectId>,
);

/// Store every stream through one `Store` (shared packs and dedup state); returns the streams
/// for the manifest, the totals, the packs written and the dedup hits' sources.
fn store_streams(
    repo: &Repo,
    index: &mut Index,
    cache: Option<&mut Cache>,
    inputs: Vec<StreamInput<'_>>,
    opts: &BackupOptions,
    progress: &mut impl FnMut(&BackupStats),
) -> Result<Stored> {
    let allow_empty = opts.allow_empty;
    let several = inputs.len() > 1;
    let mut store = Store::new(repo, index, cache, !opts.skip_pack_verification)?;
    if opts.flush_entries > 0 {
        store.flush_entries = opts.flush_entries;
    }
    let outcome = (|| -> Result<Vec<Stream>> {
        let mut streams = Vec::new();
        let mut read_before = 0u64;
        for input in inputs {
            let name = input.name;
            // With several streams, say which one failed.
            let named = |e: Error| match e {
                Error::ProducerFailed(m) if several => {
                    Error::ProducerFailed(format!("stream {name:?}: {m}"))
                }
                Error::EmptyInput if several => Error::ProducerFailed(format!(
                    "stream {name:?} is empty (pass --allow-empty to store an empty stream)"
                )),
                e => e,
            };
            let before = store.stats.clone();
            store.stats.current_stream = name.clone();
            let opened = (input.open)().map_err(named)?;
            let (root, size, hash, dump) =
                chunk_stream(repo, &mut store, opened.reader, read_before, progress)?;
            read_before += size;
            // The producer's verdict comes before any commit, and before the next stream
            // starts: a failed dump must leave no trace.
            let source = (opened.finish)().map_err(named)?;
            if size == 0 && !allow_empty {
                return Err(named(match source {
                    Source::Command { .. } => {
                        Error::ProducerFailed("the command wrote no output".into())
                    }
                    _ => Error::EmptyInput,
                }));
            }
            let s = &store.stats;
            streams.push(Stream {
                name,
                source,
                size,
                blake3: hash,
                root,
                chunks: s.chunks - before.chunks,
                new_chunks: s.new_chunks - before.new_chunks,
                new_bytes: s.new_bytes - before.new_bytes,
                dump,
            });
        }
        store.flush_pack()?;
        Ok(streams)
    })();
    // Always wait for the uploader: on success every pack must be stored before the index is
    // written; on failure we must not leave a thread writing behind our back.
    let uploaded = store.join_uploader();
    let streams = outcome?;
    uploaded?;
    Ok((
        streams,
        store.stats,
        store.written,
        store.hits,
        store.flushed,
    ))
}

/// Chunk and store one stream; returns its root tree blob, size, unkeyed BLAKE3 (hex) and
/// what kind of dump it is (`dumpkind`).
/// `read_before` is what earlier streams of the snapshot read, for the running total.
///
/// Two stages overlap: this thread reads and cuts block N+1 (the reader need not be `Send`)
/// while a worker hashes (whole stream and chunk IDs, in parallel), dedups, seals and packs
/// block N. The channel holds one block, so at most three blocks (~6 MiB) are in memory.
fn chunk_stream(
    repo: &Repo,
    store: &mut Store<'_>,
    reader: impl Read,
    read_before: u64,
    progress: &mut impl FnMut(&BackupStats),
) -> Result<(ChunkId, u64, String, Option<DumpInfo>)> {
    let mut chunker = Chunker::new(reader, repo.chunker_params());
    let shared = std::sync::Mutex::new(store.stats.clone());
    let st = &mut *store;
    let out = std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Msg>(1);
        // Consumed blocks travel back to the chunker for reuse.
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let shared = &shared;
        let store = st;
        let worker = std::thread::Builder::new()
            .name("backup-store".into())
            .spawn_scoped(scope, move || store_blocks(store, rx, back_tx, shared))
            .map_err(|e| Error::io("spawn backup worker", e))?;
        let mut size = 0u64;
        let read = (|| -> Result<()> {
            loop {
                while let Ok(buf) = back_rx.try_recv() {
                    chunker.recycle(buf);
                }
                let Some(batch) = chunker.next_batch()? else {
                    break;
                };
                size += batch.data.len() as u64;
                if tx.send(Msg::Block(batch)).is_err() {
                    return Ok(()); // the worker failed: its error wins below
                }
                let s = {
                    let mut g = shared.lock().unwrap_or_else(|p| p.into_inner());
                    g.bytes_read = read_before + size;
                    g.clone()
                };
                progress(&s);
                if crate::signals::interrupted() {
                    return Err(Error::Interrupted);
                }
            }
            let _ = tx.send(Msg::End);
            Ok(())
        })();
        drop(tx);
        let worked = worker
            .join()
            .unwrap_or_else(|_| Err(Error::Backend("backup worker panicked".into())));
        read?;
        let (root, hash, dump) = worked?;
        Ok((root, size, hash, dump))
    });
    if let Ok((_, size, _, _)) = &out {
        store.stats.bytes_read = read_before + size;
    }
    out
}

/// One block for the store worker; `End` marks a complete stream, and a channel closed
/// without it means the reader failed.
enum Msg {
    Block(crate::chunker::Batch),
    End,
}

/// The worker half of `chunk_stream`: per block, the whole-stream hash (and dump sniffer) runs
/// beside the parallel chunk hashing, dedup and sealing; then the chunk list grows. Publishes
/// its counters to `shared` after each block for the progress display.
fn store_blocks(
    store: &mut Store<'_>,
    rx: std::sync::mpsc::Receiver<Msg>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    shared: &std::sync::Mutex<BackupStats>,
) -> Result<(ChunkId, String, Option<DumpInfo>)> {
    let mut tree = TreeBuilder::default();
    let mut hasher = blake3::Hasher::new();
    let mut sniffer = crate::dumpkind::Sniffer::new();
    loop {
        let batch = match rx.recv() {
            Ok(Msg::Block(b)) => b,
            Ok(Msg::End) => break,
            // The reader stopped with an error, which it reports.
            Err(_) => return Err(Error::Interrupted),
        };
        let data = &batch.data;
        let (_, entries) = rayon::join(
            || {
                hasher.update(data);
                sniffer.update(data);
            },
            || store.store_batch(data, &batch.chunks),
        );
        for e in entries? {
            tree.push(e, store)?;
        }
        if let Ok(buf) = std::sync::Arc::try_unwrap(batch.data) {
            let _ = back.send(buf); // the reader may be gone already; then the buffer is freed
        }
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        let bytes_read = s.bytes_read;
        *s = store.stats.clone();
        s.bytes_read = bytes_read;
    }
    let root = tree.finish(store)?;
    Ok((
        root,
        hasher.finalize().to_hex().to_string(),
        sniffer.finish(),
    ))
}
