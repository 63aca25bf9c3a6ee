//! The whole data path, end to end, on an in-memory repository (`backend::memory`), so the
//! numbers are the CPU cost of dumpvault itself with no disk or network in the way:
//!
//! - `backup_new_64MiB`: a 64 MiB SQL-dump-like stream into an empty repository, so every chunk
//!   is new: chunk → hash → compress → seal → pack → tree → index → snapshot. A fresh
//!   repository is made for each iteration, outside the timing.
//! - `backup_unchanged_64MiB`: the same stream again into a repository that already holds it,
//!   as a nightly dump of an unchanged database: chunk → hash → index lookup → tree.
//! - `restore_64MiB`: that snapshot back out to `io::sink()`: tree walk → ranged reads → open →
//!   decompress → verify, plus the whole-stream BLAKE3.
//!
//! Throughput is bytes of stream per second. Each backup also takes and releases the
//! repository lock; releasing joins the lock refresher thread, which can add up to 200 ms
//! (`lock::LockGuard`'s polling interval) to a backup, about 100 ms on average.
//!
//! Run: `cargo bench --bench pipeline`. For a real disk or S3 backend, use the CLI on the
//! corpora of `../shared/bench/` instead; this bench isolates the CPU side.

mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use dumpvault::backend::memory::MemoryBackend;
use dumpvault::backend::Backend;
use dumpvault::crypto::KdfParams;
use dumpvault::ops::backup::{backup, BackupOptions, BackupResult};
use dumpvault::ops::restore::restore;
use dumpvault::repo::{InitOptions, Repo};
use dumpvault::snapshot::{SnapshotEntry, Source};

const PASSWORD: &[u8] = b"bench password";

fn new_repo() -> Repo {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let opts = InitOptions {
        // The cheapest key derivation init accepts: key wrapping is not what is measured.
        kdf: KdfParams::FLOOR,
        ..Default::default()
    };
    Repo::init(backend, PASSWORD, &opts).expect("init an in-memory repository")
}

fn backup_opts() -> BackupOptions {
    BackupOptions {
        name: "bench".into(),
        tags: Vec::new(),
        host: "bench".into(),
        time: None,
        stream_name: "stdin".into(),
        allow_empty: false,
        ..Default::default()
    }
}

fn backup_stream(repo: &mut Repo, data: &[u8]) -> BackupResult {
    backup(repo, data, &backup_opts(), || Ok(Source::Stdin), |_| {}).expect("backup")
}

fn pipeline(c: &mut Criterion) {
    let data = common::sql_dump(common::STREAM_LEN, 1);
    let data = data.as_slice();

    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    // Each iteration takes around a second: flat sampling runs ten samples of one or a few
    // iterations instead of linear sampling's 1 + 2 + ... + 10.
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(6));

    g.bench_function("backup_new_64MiB", |b| {
        b.iter_batched(
            new_repo,
            |mut repo| {
                backup_stream(&mut repo, data);
                // Returned so that dropping the repository is not timed.
                repo
            },
            BatchSize::PerIteration,
        )
    });

    let mut repo = new_repo();
    let first = backup_stream(&mut repo, data);
    let s = &first.stats;
    eprintln!(
        "pipeline: {} chunks, {} packs, {} tree blobs, {} stored bytes ({:.2}x smaller)",
        s.chunks,
        s.packs_written,
        s.tree_blobs,
        s.new_bytes,
        data.len() as f64 / s.new_bytes.max(1) as f64
    );

    // Every further run adds only a snapshot (and a lock, removed again): no packs, no index.
    g.bench_function("backup_unchanged_64MiB", |b| {
        b.iter(|| backup_stream(&mut repo, data))
    });

    let snapshot = SnapshotEntry {
        id: first.snapshot_id,
        snapshot: first.snapshot.clone(),
    };
    g.bench_function("restore_64MiB", |b| {
        b.iter(|| {
            restore(&mut repo, &snapshot, None, &mut std::io::sink(), |_| {}).expect("restore")
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
