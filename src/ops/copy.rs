//! `copy`: copy snapshots from one repository to another (local→S3, S3→S3, local→local), for
//! the 3-2-1 rule and cross-region copies.
//!
//! Chunk IDs are keyed per repository and each repository has its own chunker seed, so stored
//! blobs cannot be moved between repositories as they are: the same bytes have other cut
//! points and other IDs in the target. Each stream is therefore restored from the source
//! (every blob authenticated and hash-checked, then the whole stream's size and BLAKE3) and fed
//! through an in-process pipe into the target's backup pipeline, which stores only the chunks
//! the target lacks. The target snapshot keeps the source's time, host, name, tags, stream
//! names and sources (`tool_version`, `duration_ms` and `requests` describe the copy).
//!
//! Cost: the source reads and decrypts every blob of each copied stream (ranged reads, as a
//! restore does); the target chunks and hashes the whole stream and uploads only new chunks,
//! one index file and one snapshot per copied snapshot.
//!
//! Idempotence: a snapshot is skipped ("present") when the target already holds one with the
//! same name, host, time and streams (name, size, BLAKE3, in order), so re-running a copy
//! costs one listing. Atomicity is the backup's: a failed or interrupted copy of a snapshot
//! commits nothing for it in the target (snapshots copied before it stay).
//!
//! Drill records (`verifications/`, format-spec/11-verifications.md) travel with their
//! snapshots: a copied snapshot gets a new id in the target (other key, other chunk ids), so
//! each record of a selected source snapshot is re-targeted at the target snapshot's id and
//! sealed anew under the target's key. This holds for snapshots copied now and for those
//! already present, so a drill run on the source after an earlier copy still reaches the
//! target. A record is skipped when the target already holds one with the same content (same
//! drill, same target snapshot): re-running a copy adds no duplicates.
//!
//! WAL (`wal/`, format-spec/13-wal.md) travels file by file: each archived file the target
//! lacks (by name, one listing per cluster) is read and verified in the source (trailer, every
//! frame, the keyed hash of the plaintext) and archived in the target exactly as `wal push`
//! would, with the source's modification time, then read back. A name the target already
//! holds is left alone (its content is `fsck`'s business there), so a re-run costs one listing
//! per cluster. `.conflict-` copies are not carried: they wait for a person in the source.
//!
//! Invariant: a restore failure can never look like a clean end of stream. The pipe's EOF only
//! ends the reading; the stream's `finish` waits for the restore's verdict and any error stops
//! the commit.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::ops::backup::{self, BackupOptions, BackupStats, OpenedStream, StreamInput};
use crate::ops::restore::{self, RestoreStats};
use crate::ops::verify::{self, Verification};
use crate::ops::wal;
use crate::repo::Repo;
use crate::snapshot::{Snapshot, SnapshotEntry};

/// Bytes per message through the pipe, and messages in flight: memory stays at about 5 MiB.
const PIPE_BLOCK: usize = 1 << 20;
const PIPE_DEPTH: usize = 4;

/// What happened to one selected snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct CopiedSnapshot {
    /// Snapshot id in the source repository.
    pub source_id: String,
    /// Snapshot id in the target: the new one for "copied", the matching one for "present".
    pub target_id: String,
    /// "copied" or "present" (an identical snapshot was already in the target).
    pub status: &'static str,
    pub time: DateTime<Utc>,
    pub name: String,
    pub host: String,
    pub streams: Vec<String>,
    /// Plaintext bytes of the snapshot's streams.
    pub size: u64,
    /// Stored bytes the copy added to the target (0 when present).
    pub new_bytes: u64,
    /// Data chunks the copy added to the target (0 when present).
    pub new_chunks: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyReport {
    pub snapshots: Vec<CopiedSnapshot>,
    pub copied: u64,
    pub present: u64,
    /// Plaintext bytes read from the source (restored and verified).
    pub bytes_read: u64,
    /// Stored bytes new to the target.
    pub new_bytes: u64,
    /// Drill records written to the target (re-targeted at the copied snapshots).
    pub verifications_copied: u64,
    /// Archived WAL, per cluster (empty when WAL was not asked for or there is none).
    pub wal: Vec<WalCopied>,
    pub duration_ms: u64,
}

/// What `copy` did with one cluster's archived WAL.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalCopied {
    pub cluster: String,
    /// Files archived in the target now.
    pub copied: u64,
    /// Files the target already had under the same name.
    pub present: u64,
    /// `.conflict-` copies in the source, not carried over.
    pub conflicts_skipped: u64,
    /// Plaintext bytes of the copied files.
    pub bytes: u64,
    /// Stored bytes they added to the target.
    pub stored_bytes: u64,
}

/// Files archived at once while copying WAL: the work is mostly waiting on storage.
const WAL_COPY_PARALLEL: usize = 8;

/// Running totals for progress displays.
#[derive(Debug, Clone, Default)]
pub struct CopyProgress {
    pub bytes_read: u64,
    pub new_bytes: u64,
    pub snapshot: String,
    /// Plaintext bytes of the snapshots that will be copied (not those already present).
    pub total: u64,
}

/// What makes two snapshots "the same" for copy: name, host, time and streams.
type Identity = (String, String, DateTime<Utc>, Vec<(String, u64, String)>);

fn identity(s: &Snapshot) -> Identity {
    (
        s.name.clone(),
        s.host.clone(),
        s.time,
        s.streams
            .iter()
            .map(|x| (x.name.clone(), x.size, x.blake3.to_ascii_lowercase()))
            .collect(),
    )
}

/// Copy `selected` (snapshots of `src`) into `dst`, oldest first, skipping those `dst` already
/// holds, then (with `wal`) every cluster's archived WAL. Holds a shared lock on the source for
/// the whole run, so a prune there cannot delete data or WAL under the copy; each copied
/// snapshot is one backup (with its own lock) in the target.
pub fn copy(
    src: &mut Repo,
    dst: &mut Repo,
    selected: &[SnapshotEntry],
    wal: bool,
    mut progress: impl FnMut(&CopyProgress),
) -> Result<CopyReport> {
    let started = Instant::now();
    let _lock = src.lock(false, "copy")?;
    let mut present: Vec<(Identity, String)> = dst
        .snapshots()?
        .into_iter()
        .map(|e| (identity(&e.snapshot), e.id.to_hex()))
        .collect();
    let mut order: Vec<&SnapshotEntry> = selected.iter().collect();
    order.sort_by_key(|a| (a.snapshot.time, a.id));
    let mut seen = HashSet::new();
    order.retain(|e| seen.insert(e.id));

    // What is already there (or comes twice in the selection) is known before copying, so the
    // progress total counts only what will be read.
    let mut todo = HashSet::new();
    let mut idents: Vec<Identity> = present.iter().map(|(i, _)| i.clone()).collect();
    let mut total = 0u64;
    for e in &order {
        let ident = identity(&e.snapshot);
        if !idents.contains(&ident) {
            todo.insert(e.id);
            total += e.snapshot.total_size();
            idents.push(ident);
        }
    }

    progress(&CopyProgress {
        total,
        ..Default::default()
    });

    let mut report = CopyReport::default();
    for entry in order {
        let snap = &entry.snapshot;
        let ident = identity(snap);
        let mut done = CopiedSnapshot {
            source_id: entry.id.to_hex(),
            target_id: String::new(),
            status: "present",
            time: snap.time,
            name: snap.name.clone(),
            host: snap.host.clone(),
            streams: snap.streams.iter().map(|s| s.name.clone()).collect(),
            size: snap.total_size(),
            new_bytes: 0,
            new_chunks: 0,
        };
        let found = present.iter().find(|(i, _)| *i == ident);
        if let Some((_, id)) = found.filter(|_| !todo.contains(&entry.id)) {
            done.target_id = id.clone();
            report.present += 1;
            report.snapshots.push(done);
            continue;
        }
        // Between snapshots: those copied so far are committed in the target, the rest are
        // not started. (Within one, the target's backup stops on the signal by itself.)
        if crate::signals::interrupted() {
            return Err(Error::Interrupted);
        }
        let (read0, new0) = (report.bytes_read, report.new_bytes);
        let label = entry.id.short();
        let r = copy_one(src, dst, entry, |b: &BackupStats| {
            progress(&CopyProgress {
                bytes_read: read0 + b.bytes_read,
                new_bytes: new0 + b.new_bytes,
                snapshot: label.clone(),
                total,
            })
        })?;
        report.bytes_read += r.stats.bytes_read;
        report.new_bytes += r.stats.new_bytes;
        report.copied += 1;
        done.status = "copied";
        done.target_id = r.snapshot_id.to_hex();
        done.new_bytes = r.stats.new_bytes;
        done.new_chunks = r.stats.new_chunks;
        present.push((identity(&r.snapshot), done.target_id.clone()));
        report.snapshots.push(done);
    }
    report.verifications_copied = copy_records(src, dst, &report.snapshots)?;
    if wal {
        report.wal = copy_wal(src, dst)?;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Write into `dst` the source's drill records of every snapshot in `done` (copied or present),
/// pointing at the target's snapshot id; returns how many were written. Records the source
/// cannot read are left behind (a damaged one protects nothing; a newer one this dumpvault
/// cannot re-seal faithfully).
fn copy_records(src: &Repo, dst: &Repo, done: &[CopiedSnapshot]) -> Result<u64> {
    let targets: HashMap<ObjectId, ObjectId> = done
        .iter()
        .filter_map(|d| Some((d.source_id.parse().ok()?, d.target_id.parse().ok()?)))
        .collect();
    let (records, _damaged) = verify::list_records(src)?;
    let wanted: Vec<Verification> = records
        .into_iter()
        .filter_map(|(_, mut v)| {
            v.snapshot = *targets.get(&v.snapshot)?;
            Some(v)
        })
        .collect();
    if wanted.is_empty() {
        return Ok(0);
    }
    // Shared, like `verify`: a prune in the target must not judge these records orphaned
    // while they are written (their snapshots are committed by now).
    let _lock = dst.lock(false, "copy")?;
    let (existing, _) = verify::list_records(dst)?;
    let mut have: Vec<Verification> = existing.into_iter().map(|(_, v)| v).collect();
    let mut written = 0;
    for v in wanted {
        if have.contains(&v) {
            continue;
        }
        verify::write_record(dst, &v)?;
        have.push(v);
        written += 1;
    }
    Ok(written)
}

/// Carry every cluster's archived WAL that the target lacks into it (see the module
/// comment). Files are copied several at once; one that fails stops the copy with its error
/// (those stored before it stay: each is whole on its own).
fn copy_wal(src: &Repo, dst: &Repo) -> Result<Vec<WalCopied>> {
    // Storing WAL takes no lock, so C11 is checked here (X30): with every snapshot present
    // no backup into the target ran to check it.
    dst.config.check_writable()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(WAL_COPY_PARALLEL)
        .build()
        .map_err(|e| Error::Backend(format!("copy: cannot start WAL copy threads: {e}")))?;
    let (from, to) = (wal::Archive::of(src), wal::Archive::of(dst));
    let mut out = Vec::new();
    for cluster in wal::clusters(src.backend.as_ref())? {
        let listed = wal::list(src.backend.as_ref(), &cluster)?;
        let have: HashSet<String> = wal::list(dst.backend.as_ref(), &cluster)?
            .into_iter()
            .map(|l| l.file)
            .collect();
        let mut c = WalCopied {
            cluster: cluster.clone(),
            ..Default::default()
        };
        let mut todo = Vec::new();
        for l in &listed {
            if l.conflict {
                c.conflicts_skipped += 1;
            } else if l.is_stray() {
                // Not WAL (AW1): nothing to carry, and not readable as WAL.
            } else if have.contains(&l.file) {
                c.present += 1;
            } else {
                todo.push(l.file.as_str());
            }
        }
        let done: Vec<wal::PushReport> = pool.install(|| {
            todo.par_iter()
                .with_max_len(1)
                .map(|f| {
                    if crate::signals::interrupted() {
                        return Err(Error::Interrupted);
                    }
                    let o = wal::read_object(from, &cluster, f)?;
                    wal::store(to, &cluster, f, &o.data, o.prefix.mtime_ms)
                })
                .collect::<Result<_>>()
        })?;
        for r in done {
            c.copied += 1;
            c.bytes += r.raw_bytes;
            c.stored_bytes += r.stored_bytes;
        }
        out.push(c);
    }
    Ok(out)
}

/// Copy one snapshot: a thread restores its streams, in order, into one pipe each; this
/// thread backs them up into `dst` as one snapshot.
fn copy_one(
    src: &mut Repo,
    dst: &mut Repo,
    entry: &SnapshotEntry,
    progress: impl FnMut(&BackupStats),
) -> Result<backup::BackupResult> {
    let snap = &entry.snapshot;
    if snap.streams.is_empty() {
        return Err(Error::corrupt(
            crate::error::ObjectKind::Snapshot,
            entry.id,
            "snapshot has no streams",
        ));
    }
    // restore() finds streams by name: a snapshot with repeated names cannot be copied
    // faithfully (and a new snapshot may not have them).
    backup::validate_stream_names(snap.streams.iter().map(|s| s.name.as_str()))?;
    let opts = BackupOptions {
        name: snap.name.clone(),
        tags: snap
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        host: snap.host.clone(),
        time: Some(snap.time),
        stream_name: String::new(),
        // The source already judged emptiness when it committed.
        allow_empty: true,
        // ... and truncation (dumpkind): a snapshot that exists is copied as it is.
        allow_truncated: true,
        skip_pack_verification: false,
        flush_entries: 0,
    };
    let mut writers = Vec::new();
    let mut verdict_txs = Vec::new();
    let mut inputs = Vec::new();
    for s in &snap.streams {
        let (tx, rx) = sync_channel::<Vec<u8>>(PIPE_DEPTH);
        let (vtx, vrx) = sync_channel::<Result<RestoreStats>>(1);
        writers.push(PipeWriter {
            tx,
            buf: Vec::with_capacity(PIPE_BLOCK),
        });
        verdict_txs.push(vtx);
        let reader = PipeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let source = s.source.clone();
        let finish = move || match vrx.recv() {
            Ok(Ok(_)) => Ok(source),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Backend(
                "copy: the source restore stopped without a verdict".into(),
            )),
        };
        inputs.push(StreamInput {
            name: s.name.clone(),
            open: Box::new(move || {
                Ok(OpenedStream {
                    reader: Box::new(reader),
                    finish: Box::new(finish),
                })
            }),
        });
    }
    std::thread::scope(|scope| {
        let names: Vec<String> = snap.streams.iter().map(|s| s.name.clone()).collect();
        scope.spawn(move || {
            for ((name, mut w), vtx) in names.iter().zip(writers).zip(verdict_txs) {
                let r = restore::restore(src, entry, Some(name), &mut w, |_| {})
                    .and_then(|st| w.close().map(|()| st));
                let failed = r.is_err();
                // Close the pipe (EOF) only after the verdict is queued: `finish` then finds it.
                let _ = vtx.send(r);
                drop(w);
                if failed {
                    // Later pipes close without a verdict, so their streams fail too.
                    return;
                }
            }
        });
        backup::backup_streams(dst, inputs, &opts, progress)
    })
}

/// The writing end of an in-process pipe: blocks of `PIPE_BLOCK` bytes over a bounded channel.
struct PipeWriter {
    tx: SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(PIPE_BLOCK));
        self.tx
            .send(block)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    fn close(&mut self) -> Result<()> {
        self.send().map_err(|e| Error::io("copy pipe", e))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(PIPE_BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= PIPE_BLOCK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The reading end: EOF when the writer is gone (which says nothing about success).
struct PipeReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_carries_bytes_in_order_and_ends_at_eof() {
        let (tx, rx) = sync_channel(PIPE_DEPTH);
        let data: Vec<u8> = (0..3 * PIPE_BLOCK + 17).map(|i| (i * 7) as u8).collect();
        let d2 = data.clone();
        let t = std::thread::spawn(move || {
            let mut w = PipeWriter {
                tx,
                buf: Vec::new(),
            };
            for part in d2.chunks(5000) {
                w.write_all(part).unwrap();
            }
            w.close().unwrap();
        });
        let mut r = PipeReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn writer_fails_when_reader_is_gone() {
        let (tx, rx) = sync_channel(PIPE_DEPTH);
        drop(rx);
        let mut w = PipeWriter {
            tx,
            buf: Vec::new(),
        };
        let e = w.write_all(&vec![0u8; 2 * PIPE_BLOCK]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
