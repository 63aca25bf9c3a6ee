//! Micro-benchmarks of each stage of the backup data path, one core each, on SQL-dump-like text
//! (`common::sql_dump`): FastCDC cut points, keyed BLAKE3 chunk IDs, zstd level 3, the
//! XChaCha20-Poly1305 seal, `pack::seal_blob` (compress + seal) and, for the restore side,
//! `pack::open_blob` (open + decompress + verify). Throughput is in bytes of plaintext, so the
//! numbers add up against `pipeline`'s (which runs hashing, compression and sealing on rayon).
//!
//! Run: `cargo bench --bench stages` (all groups) or `cargo bench --bench stages -- zstd`.
//! Ten samples and short measurement windows keep the suite to about a minute; pass
//! `-- --measurement-time 20` for tighter intervals.

mod common;

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use dumpvault::chunker::{self, Chunker, ChunkerParams};
use dumpvault::compress;
use dumpvault::crypto::MasterKey;
use dumpvault::format::pack::{blob_aad, BlobEntry, BlobKind};
use dumpvault::id::{ChunkId, ObjectId};
use dumpvault::pack;

/// Chunk size for the per-chunk stages: the default average (`chunker::DEFAULT_AVG`).
const CHUNK: usize = chunker::DEFAULT_AVG as usize;
/// The per-chunk stages run over the first 8 MiB of the stream (512 chunks): enough to average
/// over the content, short enough for many iterations per sample.
const SLICE: usize = 8 * common::MIB;
const ZSTD_LEVEL: i32 = 3;

fn stream() -> &'static [u8] {
    static STREAM: OnceLock<Vec<u8>> = OnceLock::new();
    STREAM.get_or_init(|| common::sql_dump(common::STREAM_LEN, 1))
}

fn chunks() -> std::slice::Chunks<'static, u8> {
    stream()[..SLICE].chunks(CHUNK)
}

fn key() -> MasterKey {
    MasterKey::from_bytes(&[7u8; 72]).expect("72 bytes make a master key")
}

fn params() -> ChunkerParams {
    ChunkerParams {
        min: chunker::DEFAULT_MIN,
        avg: chunker::DEFAULT_AVG,
        max: chunker::DEFAULT_MAX,
        seed: 0x0123_4567_89ab_cdef,
    }
}

fn chunking(c: &mut Criterion) {
    let data = stream();
    let p = params();
    let cuts = chunker::cut_points(data, p).len();
    eprintln!(
        "chunking: {} chunks in {} MiB, mean {} bytes (min/avg/max {}/{}/{})",
        cuts,
        data.len() / common::MIB,
        data.len() / cuts.max(1),
        p.min,
        p.avg,
        p.max
    );
    let mut g = c.benchmark_group("chunking");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sampling_mode(SamplingMode::Flat);
    // FastCDC over the whole buffer at once.
    g.bench_function("cut_points_64MiB", |b| {
        b.iter(|| chunker::cut_points(black_box(data), p))
    });
    // What backup actually runs: 2 MiB blocks read through `Read`, carry-over between blocks.
    g.bench_function("chunker_stream_64MiB", |b| {
        b.iter(|| {
            let mut chunker = Chunker::new(black_box(data), p);
            let mut n = 0usize;
            while let Some(batch) = chunker.next_batch().expect("reading memory cannot fail") {
                n += batch.chunks.len();
            }
            n
        })
    });
    g.finish();
}

fn chunk_ids(c: &mut Criterion) {
    let key = key();
    let mut g = c.benchmark_group("chunk_id");
    g.throughput(Throughput::Bytes(SLICE as u64));
    g.bench_function(format!("keyed_blake3_{}KiB", CHUNK / 1024), |b| {
        b.iter(|| {
            for ch in chunks() {
                black_box(ChunkId::compute(&key.id_key, black_box(ch)));
            }
        })
    });
    g.finish();
}

fn zstd(c: &mut Criterion) {
    let stored: usize = chunks()
        .map(|ch| compress::compress(ZSTD_LEVEL, ch).map_or(ch.len(), |z| z.len()))
        .sum();
    eprintln!(
        "zstd level {ZSTD_LEVEL} on {} KiB chunks: {:.2}x ({} -> {} bytes)",
        CHUNK / 1024,
        SLICE as f64 / stored as f64,
        SLICE,
        stored
    );
    let mut g = c.benchmark_group("zstd");
    g.throughput(Throughput::Bytes(SLICE as u64));
    g.bench_function(format!("compress_level3_{}KiB", CHUNK / 1024), |b| {
        b.iter(|| {
            for ch in chunks() {
                black_box(compress::compress(ZSTD_LEVEL, black_box(ch)));
            }
        })
    });
    g.finish();
}

fn seal(c: &mut Criterion) {
    let key = key();
    let aad = blob_aad(BlobKind::Data, &ChunkId([0; 32]));
    let mut g = c.benchmark_group("seal");
    g.throughput(Throughput::Bytes(SLICE as u64));
    // Includes one getrandom(2) call per item for the fresh nonce, as in production.
    g.bench_function(format!("xchacha20poly1305_{}KiB", CHUNK / 1024), |b| {
        b.iter(|| {
            for ch in chunks() {
                black_box(key.seal(&aad, black_box(ch)));
            }
        })
    });
    g.finish();
}

fn blobs(c: &mut Criterion) {
    let key = key();
    let ids: Vec<ChunkId> = chunks()
        .map(|ch| ChunkId::compute(&key.id_key, ch))
        .collect();
    let sealed: Vec<(BlobEntry, Vec<u8>)> = chunks()
        .zip(&ids)
        .map(|(ch, id)| {
            let s = pack::seal_blob(&key, ZSTD_LEVEL, BlobKind::Data, *id, ch);
            let e = BlobEntry {
                kind: s.kind,
                compression: s.compression,
                raw_len: s.raw_len,
                offset: 0,
                stored_len: s.bytes.len() as u32,
                id: s.id,
            };
            (e, s.bytes)
        })
        .collect();
    let pack_id = ObjectId([0; 32]);

    let mut g = c.benchmark_group("blob");
    g.throughput(Throughput::Bytes(SLICE as u64));
    // Backup's per-new-chunk work after hashing: compress (when it helps) and seal.
    g.bench_function(format!("seal_blob_{}KiB", CHUNK / 1024), |b| {
        b.iter(|| {
            for (ch, id) in chunks().zip(&ids) {
                black_box(pack::seal_blob(
                    &key,
                    ZSTD_LEVEL,
                    BlobKind::Data,
                    *id,
                    black_box(ch),
                ));
            }
        })
    });
    // The same with the pre-upload check backup runs by default: decompress and re-hash.
    g.bench_function(format!("seal_blob_verified_{}KiB", CHUNK / 1024), |b| {
        b.iter(|| {
            for (ch, id) in chunks().zip(&ids) {
                black_box(
                    pack::seal_blob_verified(&key, ZSTD_LEVEL, BlobKind::Data, *id, black_box(ch))
                        .expect("verifies"),
                );
            }
        })
    });
    // Restore's per-chunk work after the read: open, decompress, re-hash and compare.
    g.bench_function(format!("open_blob_{}KiB", CHUNK / 1024), |b| {
        b.iter(|| {
            for (e, bytes) in &sealed {
                let plain = pack::open_blob(&key, &pack_id, e, bytes).expect("authentic blob");
                black_box(plain);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = stages;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = chunking, chunk_ids, zstd, seal, blobs
}
criterion_main!(stages);
