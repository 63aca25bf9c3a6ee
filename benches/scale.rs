//! How dumpvault behaves as the repository grows: N million index entries, M snapshots.
//!
//! For each N it synthesises a format-valid repository on the local backend without writing
//! N × 16 KiB of data: index files of 100,000 entries each (100 packs of 1,000 blobs), sealed
//! with the repository's key, whose entries name packs that do not exist (random pack and chunk
//! IDs). That is all that lookups, opening and planning read. A tiny real stream is backed up
//! first, and the snapshots are copies of its snapshot, so restoring them works. The synthetic
//! index files are added to the cache as they are written ([`Cache::add_index_file`], what a
//! backup does), so the cache is warm and shaped as a cache grown backup after backup.
//!
//! With the `coldincr` group, a random stream of `SCALE_INCR_MB` MiB is also backed up with the
//! release CLI before the synthetic index files are added (N > 0 only), so that the cache merges
//! its entries into the big runs: last night's chunks of a nightly backup, where they sit in a
//! cache grown backup after backup (a stream backed up after the synthesis would form a small
//! run of its own, which a cold page cache barely slows).
//!
//! Then, per N (N = 0 is the empty baseline: only the tiny stream):
//! - in process: the warm index load (`Repo::index`) and lookups per second, hits and
//!   misses in random order, one thread;
//! - the release CLI under `/usr/bin/time`, with the machine key (no KDF) unless said:
//!   `snapshots` (warm), `backup` of 1 MiB of random bytes, `restore` of it (median of 5
//!   each), `backup` of a 256 MiB random stream once (all new) and 3 times more (every chunk
//!   found; median), `restore` with an empty cache (the cache rebuilt from the repository),
//!   the `coldincr` stream (first of all, right after the build, N > 0) backed up again with
//!   every run file dropped from the page cache
//!   (`POSIX_FADV_DONTNEED`, as after a reboot or under a database's memory pressure) and once
//!   more right after (warm), that pair 3 times (medians), every backup finding every chunk
//!   (`--json`: `new_chunks` must be 0, else the bench fails),
//!   and after 9,990 more snapshots `snapshots`, `restore` and `backup` of 1 MiB again, the
//!   latter also opened with the password key (default Argon2id parameters, 64 MiB, 3 passes:
//!   the one password key of the repository, so one Argon2 run);
//! - `copy` (release CLI, machine keys on both sides, before the M snapshots): the tiny snapshot
//!   out of the N-entry repository into a fresh empty one (`init` with the cheapest KDF, then a
//!   machine key), a new one each time, median of 3, then once more into the last one; and 3
//!   snapshots of 8 MiB of random bytes each, backed up in a small fresh repository, copied
//!   into the N-entry repository (every chunk looked up in its table, all new; median), then
//!   the last once more. Every copy's `--json` is checked (`copied`, `present`, `bytes_read`,
//!   new chunks), and each second copy must find its snapshot present (else the bench fails);
//! - at the end, with M snapshots, the maintenance commands: `fsck` (structure level),
//!   `prune --dry-run`, then `prune` (executed), once each, in that order (the last one
//!   changes the repository).
//!
//! For the maintenance rows the synthetic repository is made whole enough for them to accept
//! it: every synthetic pack exists, as a sparse file of exactly the length its index entry
//! records (`File::set_len`: no disk), and one more snapshot ("synthetic") references half of
//! the synthetic chunks through a real chunk-list tree (`tree::TreeBuilder` nodes, sealed into
//! real packs and indexed, as a backup stores them): the chunks of the even packs of each index
//! file, so that prune's mark and fsck's walk look up N/2 chunks, and the odd packs are wholly
//! garbage, which prune deletes outright (a partly used pack would be repacked, which reads it,
//! and sparse packs hold zeros). It is one of the first 10 snapshots, replacing a copy.
//!
//! Markdown tables go to stdout, progress to stderr. Run it through `benches/scale.sh`, which
//! builds the binaries; environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `SCALE_N` | `1,10` | millions of index entries, comma separated (fractions allowed) |
//! | `SCALE_BIG` | unset | `1`: add 60 million |
//! | `SCALE_DIR` | `/tmp/dvscale` | where repositories and caches go |
//! | `DUMPVAULT_BIN` | `target/release/dumpvault` | the CLI binary measured |
//! | `SCALE_SNAPSHOTS` | `10000` | the large snapshot count M |
//! | `SCALE_INCR_MB` | `256` | size of the incremental-backup streams (`incr`, `coldincr`); 0 skips both |
//! | `SCALE_LOOKUPS` | `200000` | lookups timed per kind (hits, misses) |
//! | `SCALE_COLD_MAX` | unset (all) | largest N (millions) whose empty-cache restore is measured |
//! | `SCALE_ONLY` | all | row groups to measure, comma separated: `index` (in-process load and lookups), `cli` (`snapshots`, 1 MiB `backup`/`restore`), `incr` (the incremental backup), `coldincr` (the incremental backup of a stream stored before the synthesis, with the run files out of the page cache, then warm), `cold` (empty-cache restore), `many` (`snapshots`/`restore`/1 MiB `backup` at M snapshots), `copy` (`copy` out of and into the N-entry repository), `prune` (`fsck`, `prune --dry-run`, `prune`); `cold` and `many` need `cli` |
//! | `KEEP` | unset | `1`: leave the repositories and caches in `SCALE_DIR` |
//! | `SCALE_GIT` | `git describe` now | the checkout named in the output (scale.sh records it before building) |

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use common::XorShift;
use dumpvault::backend::local::LocalBackend;
use dumpvault::backend::Backend;
use dumpvault::cache::Cache;
use dumpvault::crypto::{KdfParams, MasterKey};
use dumpvault::error::ObjectKind;
use dumpvault::format::index::{IndexFile, IndexPack};
use dumpvault::format::pack::{BlobEntry, BlobKind, Compression};
use dumpvault::format::tree::TreeEntry;
use dumpvault::format::{envelope, snapshot as snapshot_format};
use dumpvault::id::{ChunkId, ObjectId};
use dumpvault::index::run::Run;
use dumpvault::ops::backup::{backup, BackupOptions};
use dumpvault::pack::{seal_blob, PackWriter};
use dumpvault::repo::{InitOptions, OpenOptions, Repo};
use dumpvault::snapshot::{Snapshot, Source, Stream};
use dumpvault::tree::{NodeSink, TreeBuilder};
use rayon::prelude::*;

/// Entries per synthetic index file, and per synthetic pack (16 MiB packs of 16 KiB chunks).
const PER_FILE: u64 = 100_000;
const PER_PACK: u64 = 1_000;
/// Every synthetic blob: a 16 KiB chunk that zstd halved.
const RAW_LEN: u32 = 16_384;
const STORED_LEN: u32 = 8_232;
const CHUNK_KEY: &[u8; 32] = b"dumpvault scale bench chunk ids!";
const PACK_KEY: &[u8; 32] = b"dumpvault scale bench pack ids!!";
const MIB: usize = 1024 * 1024;
/// Snapshots every repository starts with (the tiny backup and copies of it).
const FEW_SNAPSHOTS: u64 = 10;
/// Timed repetitions of the commands that do not change what later ones measure.
const REPEATS: usize = 5;
/// Repetitions of the `coldincr` pair (run files dropped, backup; backup again warm).
const COLD_REPEATS: usize = 3;
/// The password of each repository's password key (default Argon2id parameters).
const PASSWORD: &str = "scale bench password";

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Synthetic chunk number `g` (the same in every repository; numbers past N are misses).
fn chunk_id(g: u64) -> ChunkId {
    ChunkId(*blake3::keyed_hash(CHUNK_KEY, &g.to_le_bytes()).as_bytes())
}

fn pack_id(file: u64, pack: u64) -> ObjectId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&file.to_le_bytes());
    b[8..].copy_from_slice(&pack.to_le_bytes());
    ObjectId(*blake3::keyed_hash(PACK_KEY, &b).as_bytes())
}

/// Index file `f`: `count` entries, chunk numbers `f·PER_FILE ..`, in packs of `PER_PACK`
/// laid out as a writer would (increasing offsets, header room at the end: format-spec/05 I6).
fn synth_file(f: u64, count: u64) -> IndexFile {
    let packs = (0..count.div_ceil(PER_PACK))
        .map(|p| {
            let first = p * PER_PACK;
            let n = PER_PACK.min(count - first);
            let entries: Vec<BlobEntry> = (0..n)
                .map(|e| BlobEntry {
                    kind: BlobKind::Data,
                    compression: Compression::Zstd,
                    raw_len: RAW_LEN,
                    offset: (e * STORED_LEN as u64) as u32,
                    stored_len: STORED_LEN,
                    id: chunk_id(f * PER_FILE + first + e),
                })
                .collect();
            // Blobs, then the sealed header (4 + 48·n + 40) and the 8-byte trailer.
            let len = n * STORED_LEN as u64 + 4 + 48 * n + 40 + 8;
            IndexPack {
                id: pack_id(f, p),
                len,
                entries,
            }
        })
        .collect();
    IndexFile {
        superseded: vec![],
        packs,
    }
}

/// Whether pack `p` of a synthetic index file is garbage: the odd ones are. Whole packs, so
/// that prune deletes them; a partly used pack would be repacked, which reads it.
fn garbage_pack(p: u64) -> bool {
    p % 2 == 1
}

/// Garbage packs among the synthetic packs of `n` entries.
fn garbage_packs(n: u64) -> u64 {
    (0..n.div_ceil(PER_FILE))
        .map(|f| PER_FILE.min(n - f * PER_FILE).div_ceil(PER_PACK) / 2)
        .sum()
}

/// The chunk numbers of index file `f` (of `count` entries) that the synthetic snapshot
/// references, in order: those of its packs that are not garbage.
fn referenced_in_file(f: u64, count: u64) -> impl Iterator<Item = u64> {
    (0..count.div_ceil(PER_PACK))
        .filter(|&p| !garbage_pack(p))
        .flat_map(move |p| {
            let first = p * PER_PACK;
            (first..count.min(first + PER_PACK)).map(move |e| f * PER_FILE + e)
        })
}

/// Seals chunk-list nodes into real packs, as a backup stores tree blobs, and stores each pack
/// when it is full. Memory: one open pack.
struct TreeSink<'a> {
    backend: &'a dyn Backend,
    key: &'a MasterKey,
    zstd_level: i32,
    writer: PackWriter,
    packs: Vec<IndexPack>,
    bytes: u64,
}

impl TreeSink<'_> {
    fn flush(&mut self) -> dumpvault::error::Result<()> {
        if self.writer.is_empty() {
            return Ok(());
        }
        let p = self.writer.finish(self.key);
        self.backend
            .put(ObjectKind::Pack, &p.record.id.to_hex(), &p.bytes)?;
        self.bytes += p.bytes.len() as u64;
        self.packs.push(p.record);
        Ok(())
    }
}

impl NodeSink for TreeSink<'_> {
    fn store_node(&mut self, plaintext: Vec<u8>) -> dumpvault::error::Result<ChunkId> {
        let id = ChunkId::compute(&self.key.id_key, &plaintext);
        let b = seal_blob(self.key, self.zstd_level, BlobKind::Tree, id, &plaintext);
        if self.writer.would_overflow(b.bytes.len()) {
            self.flush()?;
        }
        self.writer.add(b);
        Ok(id)
    }
}

/// What [`synth_tree`] stored.
#[derive(Clone, Copy, Default)]
struct TreeStats {
    /// Data chunks the tree references.
    chunks: u64,
    packs: usize,
    bytes: u64,
    secs: f64,
}

/// Write the snapshot "synthetic": one stream whose chunk list references the non-garbage
/// synthetic chunks of `n` entries (as data chunks of `RAW_LEN`, what the index says). The
/// tree is built by the library's `TreeBuilder` and sealed into real packs, streamed (chunk
/// IDs are computed per index file, never all held); their index file is stored and added to
/// `cache`. The stream's BLAKE3 is a placeholder: only `restore` and `fsck --read-data`, which
/// read the (sparse) data, check it.
#[allow(clippy::too_many_arguments)]
fn synth_tree(
    backend: &Arc<dyn Backend>,
    key: &MasterKey,
    zstd_level: i32,
    pack_target: u32,
    cache: &mut Cache,
    n: u64,
    template: &Snapshot,
) -> Res<TreeStats> {
    let t0 = Instant::now();
    let mut sink = TreeSink {
        backend: backend.as_ref(),
        key,
        zstd_level,
        writer: PackWriter::new(pack_target),
        packs: Vec::new(),
        bytes: 0,
    };
    let mut tree = TreeBuilder::default();
    let mut chunks = 0u64;
    for f in 0..n.div_ceil(PER_FILE) {
        let gs: Vec<u64> = referenced_in_file(f, PER_FILE.min(n - f * PER_FILE)).collect();
        let ids: Vec<ChunkId> = gs.par_iter().map(|&g| chunk_id(g)).collect();
        for id in ids {
            let len = RAW_LEN as u64;
            tree.push(TreeEntry { id, len }, &mut sink)?;
        }
        chunks += gs.len() as u64;
    }
    let root = tree.finish(&mut sink)?;
    sink.flush()?;
    let tree_bytes = sink.bytes;
    let file = IndexFile {
        superseded: vec![],
        packs: std::mem::take(&mut sink.packs),
    };
    let bytes = file.seal(key);
    let id = ObjectId::of(&bytes);
    backend.put(ObjectKind::Index, &id.to_hex(), &bytes)?;
    cache.add_index_file(&id, &file, None)?;
    let mut s = template.clone();
    s.name = "synthetic".into();
    s.time = template.time - chrono::Duration::seconds(30);
    s.streams = vec![Stream {
        name: "synthetic".into(),
        source: Source::Stdin,
        size: chunks * RAW_LEN as u64,
        blake3: "0".repeat(64),
        root,
        chunks,
        new_chunks: chunks,
        new_bytes: chunks * STORED_LEN as u64 + tree_bytes,
        dump: None,
    }];
    put_snapshot(backend, key, &s).map_err(|e| e.to_string())?;
    Ok(TreeStats {
        chunks,
        packs: file.packs.len(),
        bytes: tree_bytes,
        secs: t0.elapsed().as_secs_f64(),
    })
}

/// Synthetic and tree packs under `repo/data/` (files not starting with a dot).
fn count_packs(repo: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(repo.join("data")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|d| std::fs::read_dir(d.path()).ok())
        .flat_map(|r| r.flatten())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count() as u64
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One repository under test: its directory, cache, machine-key secret file, and the password
/// file of its password key (default Argon2id parameters).
struct Site {
    root: PathBuf,
    repo: PathBuf,
    cache: PathBuf,
    secret_file: PathBuf,
    password_file: PathBuf,
}

impl Site {
    fn backend(&self) -> Arc<dyn Backend> {
        Arc::new(LocalBackend::new(&self.repo))
    }

    fn new(dir: &Path, label: &str) -> Site {
        let root = dir.join(label);
        Site {
            repo: root.join("repo"),
            cache: root.join("cache"),
            secret_file: root.join("machine.secret"),
            password_file: root.join("password"),
            root,
        }
    }

    /// Open with the machine key (no Argon2 run).
    fn open(&self, cache: bool) -> Res<Repo> {
        let opts = OpenOptions {
            cache_dir: cache.then(|| self.cache.clone()),
            ..Default::default()
        };
        let secret = std::fs::read_to_string(&self.secret_file)?;
        Ok(Repo::open(self.backend(), secret.trim().as_bytes(), &opts)?)
    }
}

/// How a maintenance command ended: its cost, exit code (`None`: killed by a signal), and a
/// summary of what it printed, for the table.
#[derive(Clone, Default)]
struct Outcome {
    cost: Cost,
    code: Option<i32>,
    note: String,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Wall seconds, peak RSS and bytes written to disk (`ru_oublock`) of one CLI run.
#[derive(Clone, Copy, Default)]
struct Cost {
    secs: f64,
    rss: u64,
    written: u64,
}

fn median(mut v: Vec<Cost>) -> Cost {
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let mut rss: Vec<u64> = v.iter().map(|c| c.rss).collect();
    rss.sort_unstable();
    Cost {
        rss: rss[rss.len() / 2],
        ..v[v.len() / 2]
    }
}

struct Cli {
    bin: PathBuf,
}

impl Cli {
    /// Run `dumpvault -q ARGS` on `site` (with `cache` as the cache directory) under
    /// `/usr/bin/time`; stdin from `input` (else /dev/null); stdout returned when `capture`,
    /// else discarded.
    fn run(
        &self,
        site: &Site,
        cache: &Path,
        args: &[&str],
        input: Option<&Path>,
        capture: bool,
    ) -> Res<(Cost, String)> {
        let (cost, status, out, _) =
            self.exec(site, cache, &site.secret_file, args, input, capture, false)?;
        if !status.success() {
            return Err(format!("dumpvault {args:?} failed: {status}").into());
        }
        Ok((cost, out))
    }

    /// Run `dumpvault -q ARGS` on `site` (its own cache) whatever its exit status; stdout and
    /// stderr captured (stderr is copied to ours, and its last line returned).
    fn run_any(
        &self,
        site: &Site,
        args: &[&str],
    ) -> Res<(Cost, std::process::ExitStatus, String, String)> {
        self.exec(site, &site.cache, &site.secret_file, args, None, true, true)
    }

    /// Run `dumpvault -q ARGS` on `site` with `cache` and the password (or machine secret) in
    /// `password_file`.
    #[allow(clippy::too_many_arguments)]
    fn exec(
        &self,
        site: &Site,
        cache: &Path,
        password_file: &Path,
        args: &[&str],
        input: Option<&Path>,
        capture: bool,
        capture_err: bool,
    ) -> Res<(Cost, std::process::ExitStatus, String, String)> {
        let time_out = site.root.join("time.out");
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f")
            .arg("%M %O")
            .arg("-o")
            .arg(&time_out)
            .arg(&self.bin)
            .arg("-q")
            .args(args)
            .env("DUMPVAULT_REPO", &site.repo)
            .env("DUMPVAULT_PASSWORD_FILE", password_file)
            .env("DUMPVAULT_CACHE_DIR", cache)
            .env_remove("DUMPVAULT_PASSWORD")
            .env_remove("DUMPVAULT_PASSWORD_COMMAND")
            .env_remove("DUMPVAULT_METRICS_FILE")
            // `copy` names its target and the target's key file with arguments.
            .env_remove("DUMPVAULT_TO_REPO")
            .env_remove("DUMPVAULT_TO_PASSWORD")
            .env_remove("DUMPVAULT_TO_PASSWORD_FILE")
            .env_remove("DUMPVAULT_TO_PASSWORD_COMMAND")
            .stderr(if capture_err {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stdout(if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdin(match input {
                Some(p) => Stdio::from(std::fs::File::open(p)?),
                None => Stdio::null(),
            });
        // Dirty pages of earlier steps (a synthetic index just written, the previous command's
        // packs) are written back first, untimed, as compare.sh does: otherwise a command's own
        // fsyncs wait behind them, and a 20 ms backup measures the disk's queue.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        let t0 = Instant::now();
        let out = c.output()?;
        let secs = t0.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !stderr.is_empty() {
            eprint!("{stderr}");
        }
        let text = std::fs::read_to_string(&time_out)?;
        let nums: Vec<u64> = text
            .lines()
            .last()
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let [kib, blocks] = nums[..] else {
            return Err(format!("/usr/bin/time wrote {text:?}").into());
        };
        Ok((
            Cost {
                secs,
                rss: kib * 1024,
                written: blocks * 512,
            },
            out.status,
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr.lines().last().unwrap_or_default().to_string(),
        ))
    }

    fn median_of(&self, site: &Site, args: &[&str]) -> Res<Cost> {
        let mut v = Vec::new();
        for _ in 0..REPEATS {
            v.push(self.run(site, &site.cache, args, None, false)?.0);
        }
        Ok(median(v))
    }

    /// `backup` of 1 MiB of new random bytes (seeds `seed ..`), median of [`REPEATS`]; opened
    /// with the password key (an Argon2id run) when `password`, else the machine key. Returns
    /// the cost, the largest disk writes and the last snapshot's ID.
    fn backup_1m(&self, site: &Site, seed: u64, password: bool) -> Res<(Cost, u64, String)> {
        let key = if password {
            &site.password_file
        } else {
            &site.secret_file
        };
        let p = site.root.join("one-mib.bin");
        let args = ["backup", "--name", "one-mib", "--host", "scale", "-"];
        let (mut costs, mut last) = (Vec::new(), String::new());
        for i in 0..REPEATS {
            std::fs::write(&p, random_bytes(MIB, seed + i as u64))?;
            let (c, status, out, _) =
                self.exec(site, &site.cache, key, &args, Some(&p), true, false)?;
            if !status.success() {
                return Err(format!("dumpvault {args:?} failed: {status}").into());
            }
            last = out.lines().last().unwrap_or_default().to_string();
            costs.push(c);
        }
        let written = costs.iter().map(|c| c.written).max().unwrap_or(0);
        Ok((median(costs), written, last))
    }
}

/// Everything measured for one N.
#[derive(Default)]
struct Row {
    n: u64,
    files: u64,
    build_s: f64,
    cache_bytes: u64,
    runs: usize,
    index_open_ms: f64,
    hits_per_s: f64,
    misses_per_s: f64,
    cold_hits_per_s: f64,
    cold_misses_per_s: f64,
    snapshots_few: Cost,
    backup_1m: Cost,
    backup_1m_written_max: u64,
    restore_1m: Cost,
    incr_new: Option<Cost>,
    incr_again: Option<Cost>,
    coldincr: Option<ColdIncr>,
    cold_restore: Option<Cost>,
    add_snapshots_s: f64,
    snapshots_sync: Cost,
    snapshots_many: Cost,
    restore_many: Cost,
    /// `backup` of 1 MiB at M snapshots, with the machine key and with the password.
    backup_many: Cost,
    backup_many_password: Cost,
    /// The `copy` group, when measured.
    copy: Option<CopyRows>,
    /// The synthetic snapshot's tree (maintenance rows only, N > 0).
    tree: Option<TreeStats>,
    garbage_packs: u64,
    fsck: Option<Outcome>,
    prune_dry: Option<Outcome>,
    prune: Option<Outcome>,
    /// Pack files before and after the executed prune.
    packs_before: u64,
    packs_after: u64,
    /// What went wrong in the maintenance rows (exit codes, counts that disagree).
    trouble: Vec<String>,
}

/// The `coldincr` rows of one N.
#[derive(Clone)]
struct ColdIncr {
    /// Its first backup (all new, before the synthesis), the chunks it counted, and the backups
    /// of the same stream with the run files out of the page cache and right after (medians).
    first: Cost,
    chunks: u64,
    cold: Cost,
    warm: Cost,
    layout: Layout,
    /// The share of the run files' pages in the page cache after the eviction, and after the
    /// cold backup (how much of the runs it read, or had read ahead); medians.
    evicted: f64,
    after_cold: f64,
}

/// The `copy` rows of one N: the tiny snapshot copied out of the N-entry repository into a
/// fresh one, and [`COPY_MIB`] MiB copied from a small fresh repository into it (medians of
/// [`COPY_REPEATS`]); each time once more, when the snapshot must be found present.
#[derive(Clone, Copy, Default)]
struct CopyRows {
    out: Cost,
    out_again: Cost,
    into: Cost,
    into_again: Cost,
    /// Data chunks the copies in added to the N-entry repository (median).
    into_chunks: u64,
}

/// Which row groups to measure (`SCALE_ONLY`).
#[derive(Clone, Copy)]
struct Groups {
    index: bool,
    cli: bool,
    incr: bool,
    coldincr: bool,
    cold: bool,
    many: bool,
    copy: bool,
    prune: bool,
}

impl Groups {
    fn parse(v: Option<String>) -> Res<Groups> {
        let Some(v) = v else {
            return Ok(Groups {
                index: true,
                cli: true,
                incr: true,
                coldincr: true,
                cold: true,
                many: true,
                copy: true,
                prune: true,
            });
        };
        let mut g = Groups {
            index: false,
            cli: false,
            incr: false,
            coldincr: false,
            cold: false,
            many: false,
            copy: false,
            prune: false,
        };
        for w in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "index" => g.index = true,
                "cli" => g.cli = true,
                "incr" => g.incr = true,
                "coldincr" => g.coldincr = true,
                "cold" => g.cold = true,
                "many" => g.many = true,
                "copy" => g.copy = true,
                "prune" => g.prune = true,
                other => {
                    return Err(format!(
                        "SCALE_ONLY: unknown group {other:?} (index, cli, incr, coldincr, cold, many, copy, prune)"
                    )
                    .into())
                }
            }
        }
        if (g.cold || g.many) && !g.cli {
            return Err(
                "SCALE_ONLY: cold and many need cli (they restore its 1 MiB snapshot)".into(),
            );
        }
        Ok(g)
    }
}

struct Cfg {
    dir: PathBuf,
    cli: Cli,
    many: u64,
    incr_mb: usize,
    lookups: usize,
    cold_max: u64,
    keep: bool,
    groups: Groups,
}

fn say(msg: impl AsRef<str>) {
    eprintln!("scale: {}", msg.as_ref());
}

fn put_snapshot(backend: &Arc<dyn Backend>, key: &MasterKey, s: &Snapshot) -> Result<(), String> {
    let bytes = envelope::seal(key, ObjectKind::Snapshot, &snapshot_format::encode(s));
    let id = ObjectId::of(&bytes);
    backend
        .put(ObjectKind::Snapshot, &id.to_hex(), &bytes)
        .map_err(|e| e.to_string())
}

/// Seal and store `count` copies of `template`, each a minute older than the last.
fn add_snapshots(
    backend: &Arc<dyn Backend>,
    key: &MasterKey,
    template: &Snapshot,
    from: u64,
    count: u64,
) -> Res<()> {
    (from..from + count)
        .into_par_iter()
        .try_for_each(|i| -> Result<(), String> {
            let mut s = template.clone();
            s.time = template.time - chrono::Duration::minutes(i as i64 + 1);
            put_snapshot(backend, key, &s)
        })?;
    Ok(())
}

/// What [`build`] made: the tiny snapshot (the template of the others), the build time (the
/// tree's and the `coldincr` stream's backup excluded), the tree's figures, and the `coldincr`
/// stream's first backup.
struct Built {
    template: Snapshot,
    /// The tiny snapshot's ID (what the `copy` group copies out).
    tiny_id: String,
    secs: f64,
    tree: Option<TreeStats>,
    early: Option<Early>,
}

/// The `coldincr` stream's first backup (all new), made before the synthetic index files.
struct Early {
    cost: Cost,
    stats: Stats,
    /// Entries of the cache after it (the tiny stream's and this one's), and every 16th of
    /// their IDs: where they are after the synthesis says whether the merges took them in.
    entries: u64,
    sample: Vec<ChunkId>,
}

/// Init the repository of `site`, back up the tiny stream, then (with `early`: the CLI and a
/// stream file) that stream with the CLI, write `n` synthetic entries and the first snapshots.
/// With `maintenance`, also the sparse synthetic packs and (N > 0) the snapshot "synthetic"
/// with its tree ([`synth_tree`]).
fn build(site: &Site, n: u64, maintenance: bool, early: Option<(&Cli, &Path)>) -> Res<Built> {
    let _ = std::fs::remove_dir_all(&site.root);
    std::fs::create_dir_all(&site.root)?;
    let t0 = Instant::now();
    // The password key has the default Argon2id parameters (what `init` gives): the one
    // password-opened row measures a real open; every other run uses the machine key.
    let opts = InitOptions {
        kdf: KdfParams::DEFAULT,
        ..Default::default()
    };
    let repo = Repo::init(site.backend(), PASSWORD.as_bytes(), &opts)?;
    let (_, secret) = repo.add_machine_key(Some("scale bench"))?;
    drop(repo);
    for (path, text) in [
        (&site.secret_file, secret.as_str()),
        (&site.password_file, PASSWORD),
    ] {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
    }
    let mut repo = site.open(true)?;
    let tiny = random_bytes(64 * 1024, 7);
    let opts = BackupOptions {
        name: "tiny".into(),
        host: "scale".into(),
        stream_name: "stdin".into(),
        ..Default::default()
    };
    let tiny = backup(&mut repo, &tiny[..], &opts, || Ok(Source::Stdin), |_| {})?;
    let (tiny_id, tiny) = (tiny.snapshot_id.to_hex(), tiny.snapshot);
    let backend = Arc::clone(&repo.backend);
    let key = repo.key.clone();
    let repo_id = repo.config.repo_id;
    let (zstd_level, pack_target) = (repo.config.zstd_level, repo.config.pack_target);
    drop(repo);
    // The `coldincr` stream, before the synthetic files: the merges that add those take its
    // entries into the big runs.
    let early = match early {
        Some((cli, stream)) => {
            say("  CLI: backup of the coldincr stream (all new), before the synthetic index");
            let (cost, stats) = json_backup(cli, site, "coldincr", stream)?;
            if stats.new_chunks == 0 {
                return Err("the coldincr stream's first backup stored no new chunk".into());
            }
            let mut ids = Vec::new();
            for p in run_paths(&site.cache)? {
                for e in Run::open(&p)?.iter()? {
                    ids.push(e?.id);
                }
            }
            let entries = ids.len() as u64;
            let sample = ids.into_iter().step_by(16).collect();
            Some(Early {
                cost,
                stats,
                entries,
                sample,
            })
        }
        None => None,
    };
    let early_s = early.as_ref().map_or(0.0, |e| e.cost.secs);
    // Where the local backend keeps a pack (data/<2 hex>/<id>).
    let local = LocalBackend::new(&site.repo);

    // Index files: generated, sealed and stored on the rayon pool; added to the cache (MACs,
    // sorted run, merges) on this thread, one at a time, as backups add theirs.
    let mut cache = Cache::open_keyed(&site.cache, &repo_id, &key)?;
    let files = n.div_ceil(PER_FILE);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(ObjectId, IndexFile)>(4);
    let (backend_ref, key_ref, local_ref) = (&backend, &key, &local);
    std::thread::scope(|s| -> Res<()> {
        let producer = s.spawn(move || {
            (0..files)
                .into_par_iter()
                .try_for_each_with(tx, |tx, f| -> Result<(), String> {
                    let file = synth_file(f, PER_FILE.min(n - f * PER_FILE));
                    let bytes = file.seal(key_ref);
                    let id = ObjectId::of(&bytes);
                    backend_ref
                        .put(ObjectKind::Index, &id.to_hex(), &bytes)
                        .map_err(|e| e.to_string())?;
                    if maintenance {
                        // Sparse: the length prune and fsck compare, no blocks.
                        for p in &file.packs {
                            let path = local_ref.path(ObjectKind::Pack, &p.id.to_hex());
                            let dir = path.parent().expect("pack paths have a parent");
                            std::fs::create_dir_all(dir)
                                .and_then(|_| std::fs::File::create(&path))
                                .and_then(|f| f.set_len(p.len))
                                .map_err(|e| format!("{}: {e}", path.display()))?;
                        }
                    }
                    tx.send((id, file)).map_err(|e| e.to_string())
                })
        });
        let mut added = 0u64;
        for (id, file) in rx.iter() {
            cache.add_index_file(&id, &file, None)?;
            added += 1;
            if added.is_multiple_of(50) {
                say(format!(
                    "  {added}/{files} index files, {:.0} s",
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        producer.join().expect("the producer thread panicked")?;
        Ok(())
    })?;
    let tree = if maintenance && n > 0 {
        say("  the synthetic snapshot's tree");
        let t = synth_tree(
            &backend,
            &key,
            zstd_level,
            pack_target,
            &mut cache,
            n,
            &tiny,
        )?;
        say(format!(
            "  tree: {} chunks referenced, {} packs, {:.0} MB, {:.1} s",
            t.chunks,
            t.packs,
            t.bytes as f64 / 1e6,
            t.secs
        ));
        Some(t)
    } else {
        None
    };
    drop(cache);
    // The synthetic snapshot and the coldincr one are among the first ones.
    add_snapshots(
        &backend,
        &key,
        &tiny,
        0,
        FEW_SNAPSHOTS - 1 - tree.is_some() as u64 - early.is_some() as u64,
    )?;
    let secs = t0.elapsed().as_secs_f64() - tree.map_or(0.0, |t| t.secs) - early_s;
    Ok(Built {
        template: tiny,
        tiny_id,
        secs,
        tree,
        early,
    })
}

/// What `backup --json` reports (`BackupStats`, src/ops/backup.rs).
#[derive(Clone, Copy, Default)]
struct Stats {
    chunks: u64,
    new_chunks: u64,
}

/// `dumpvault --json backup --name NAME` of `stream` with the machine key: its cost and the
/// chunk counts it reports.
fn json_backup(cli: &Cli, site: &Site, name: &str, stream: &Path) -> Res<(Cost, Stats)> {
    let args = ["--json", "backup", "--name", name, "--host", "scale", "-"];
    let (cost, out) = cli.run(site, &site.cache, &args, Some(stream), true)?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| {
        format!(
            "{}: `backup --json` printed no JSON ({e}): {:.200}",
            cli.bin.display(),
            out
        )
    })?;
    let field = |k: &str| {
        v["stats"][k].as_u64().ok_or_else(|| {
            format!(
                "{}: `backup --json` has no stats.{k} (BackupStats): {:.200}",
                cli.bin.display(),
                out
            )
        })
    };
    Ok((
        cost,
        Stats {
            chunks: field("chunks")?,
            new_chunks: field("new_chunks")?,
        },
    ))
}

/// The run files of every cache under `cache` (`<repo id>.runs/*.run`).
fn run_paths(cache: &Path) -> Res<Vec<PathBuf>> {
    let mut v = Vec::new();
    for d in std::fs::read_dir(cache)?.flatten() {
        if !d.file_name().to_string_lossy().ends_with(".runs") {
            continue;
        }
        for e in std::fs::read_dir(d.path())?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".run") {
                v.push(e.path());
            }
        }
    }
    Ok(v)
}

/// Where the `coldincr` stream's entries are after the synthesis: the runs' sizes (largest
/// first), the size of the run holding most of the sampled entries, and the share of the
/// sample found there.
#[derive(Clone, Default)]
struct Layout {
    runs: Vec<u64>,
    home: u64,
    found: usize,
    sampled: usize,
    /// The stream's entries (with the tiny stream's) before the synthesis.
    entries: u64,
}

impl Layout {
    /// Whether the stream sits in a big run, as in a cache grown backup after backup: all of
    /// the sample in one run at least 4 times the stream's size (the cache's merge ratio), so
    /// the stream is at most a fifth of it.
    fn merged(&self) -> bool {
        self.found == self.sampled && self.home >= 4 * self.entries
    }

    fn describe(&self) -> String {
        let sizes: Vec<String> = self.runs.iter().map(|&c| entries(c)).collect();
        format!(
            "{} runs ({}); {} of {} sampled stream entries in the {} run",
            self.runs.len(),
            sizes.join(", "),
            self.found,
            self.sampled,
            entries(self.home)
        )
    }
}

fn entries(c: u64) -> String {
    if c >= 1_000_000 {
        format!("{:.2}M", c as f64 / 1e6)
    } else if c >= 1_000 {
        format!("{:.0}k", c as f64 / 1e3)
    } else {
        c.to_string()
    }
}

fn layout(cache: &Path, early: &Early) -> Res<Layout> {
    let runs = run_paths(cache)?
        .iter()
        .map(|p| Run::open(p))
        .collect::<Result<Vec<Run>, _>>()?;
    let mut best = (0usize, 0u64);
    let mut out = Vec::new();
    for r in &runs {
        let mut found = 0;
        for id in &early.sample {
            out.clear();
            r.find(id, &mut out)?;
            found += !out.is_empty() as usize;
        }
        if (found, r.count()) > (best.0, best.1) {
            best = (found, r.count());
        }
    }
    let mut sizes: Vec<u64> = runs.iter().map(Run::count).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    Ok(Layout {
        runs: sizes,
        home: best.1,
        found: best.0,
        sampled: early.sample.len(),
        entries: early.entries,
    })
}

/// Drop the run files under `cache` from the page cache (`POSIX_FADV_DONTNEED`; they are
/// written and synced, so the pages are clean and go).
fn evict_runs(cache: &Path) -> Res<()> {
    use std::os::fd::AsRawFd;
    for p in run_paths(cache)? {
        let f = std::fs::File::open(&p)?;
        // SAFETY: a plain advisory call on a descriptor this function owns.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(format!("posix_fadvise {}: error {r}", p.display()).into());
        }
    }
    Ok(())
}

/// The `coldincr` rows: where the stream's entries are, then its backup with every run file
/// out of the page cache, then again warm. Every chunk must be found (else a problem, and the
/// bench fails at the end).
fn cold_incr(cfg: &Cfg, site: &Site, stream: &Path, early: Early, row: &mut Row) -> Res<()> {
    let layout = layout(&site.cache, &early)?;
    say(format!("  coldincr layout: {}", layout.describe()));
    if !layout.merged() {
        let msg = format!(
            "N = {}: the coldincr stream's {} entries are not merged into a big run ({}): the \
             cold figures measure a small run of their own",
            row.n,
            early.entries,
            layout.describe()
        );
        say(format!("  {msg}"));
    }
    // The input in the page cache for both runs (a dump is piped, not read from disk).
    std::io::copy(&mut std::fs::File::open(stream)?, &mut std::io::sink())?;
    let (mut cold, mut warm, mut evicted, mut after_cold) = (vec![], vec![], vec![], vec![]);
    for i in 1..=COLD_REPEATS {
        say(format!(
            "  CLI: backup of the coldincr stream again, run files dropped from the page cache, \
             then warm ({i}/{COLD_REPEATS})"
        ));
        evict_runs(&site.cache)?;
        evicted.push(resident_runs(&site.cache)?);
        let (c, cold_stats) = json_backup(&cfg.cli, site, "coldincr", stream)?;
        after_cold.push(resident_runs(&site.cache)?);
        let (w, warm_stats) = json_backup(&cfg.cli, site, "coldincr", stream)?;
        say(format!(
            "    cold {:.2} s, warm {:.2} s; run pages in the page cache: {:.1}% after the \
             eviction, {:.1}% after the cold backup",
            c.secs,
            w.secs,
            evicted[i - 1] * 100.0,
            after_cold[i - 1] * 100.0
        ));
        cold.push(c);
        warm.push(w);
        for (what, st) in [("cold", cold_stats), ("warm", warm_stats)] {
            if st.new_chunks != 0 || st.chunks != early.stats.chunks {
                let msg = format!(
                    "N = {}: the coldincr backup ({what}) stored {} new chunks of {} (the first \
                     backup had {}): every chunk should have been found",
                    row.n, st.new_chunks, st.chunks, early.stats.chunks
                );
                say(format!("  {msg}"));
                row.trouble.push(msg);
            }
        }
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    row.coldincr = Some(ColdIncr {
        first: early.cost,
        chunks: early.stats.chunks,
        cold: median(cold),
        warm: median(warm),
        layout,
        evicted: mid(evicted),
        after_cold: mid(after_cold),
    });
    Ok(())
}

/// The share of the pages of the run files under `cache` that are in the page cache
/// (`mincore` over a read-only mapping of each).
fn resident_runs(cache: &Path) -> Res<f64> {
    let (mut resident, mut pages) = (0usize, 0usize);
    for p in run_paths(cache)? {
        let (r, n) = dumpvault::index::run::resident_pages(&p, 0)
            .map_err(|e| format!("mincore {}: {e}", p.display()))?;
        resident += r;
        pages += n;
    }
    Ok(if pages == 0 {
        0.0
    } else {
        resident as f64 / pages as f64
    })
}

/// Repetitions of each `copy` row (median): into fresh targets, or of distinct snapshots.
const COPY_REPEATS: usize = 3;
/// MiB of random bytes in each snapshot copied into the N-entry repository.
const COPY_MIB: usize = 8;

/// A fresh repository made with the CLI under `parent`: `init` with the cheapest KDF allowed,
/// then a machine key, which every later command on it uses (no Argon2 run in the figures).
/// Its cache goes to `cache`, where the `copy` runs look for it too (one process, one cache
/// directory: the N-entry repository's, keyed by repository ID).
fn small_site(cli: &Cli, parent: &Path, label: &str, cache: &Path) -> Res<Site> {
    let site = Site::new(parent, label);
    let _ = std::fs::remove_dir_all(&site.root);
    std::fs::create_dir_all(&site.root)?;
    std::fs::write(&site.password_file, PASSWORD)?;
    let secret = site.secret_file.to_string_lossy().into_owned();
    for args in [
        &["init", "--kdf-memory", "19456", "--kdf-iterations", "2"][..],
        &["key", "add-machine", "--secret-file", &secret][..],
    ] {
        let (_, status, _, err) =
            cli.exec(&site, cache, &site.password_file, args, None, true, true)?;
        if !status.success() {
            return Err(format!("dumpvault {args:?} failed: {status}: {err}").into());
        }
    }
    Ok(site)
}

/// What `copy --json` reported (`CopyReport`, src/ops/copy.rs); `new_chunks` summed over
/// its snapshots.
#[derive(Clone, Copy, Default)]
struct Copied {
    copied: u64,
    present: u64,
    bytes_read: u64,
    new_chunks: u64,
}

/// `dumpvault --json copy ID --to TARGET --to-password-file KEY` from `from` into `to`, each
/// opened with its machine key, both caches in `cache`: its cost, and what it reported or why
/// it failed.
fn json_copy(
    cli: &Cli,
    from: &Site,
    cache: &Path,
    id: &str,
    to: &Site,
) -> Res<(Cost, Result<Copied, String>)> {
    let (target, key) = (to.repo.to_string_lossy(), to.secret_file.to_string_lossy());
    let args = [
        "--json",
        "copy",
        id,
        "--to",
        &target,
        "--to-password-file",
        &key,
    ];
    let (cost, status, out, err) =
        cli.exec(from, cache, &from.secret_file, &args, None, true, true)?;
    if !status.success() {
        let what = status
            .code()
            .map_or(format!("killed ({status})"), |c| format!("exit {c}"));
        return Ok((cost, Err(format!("{what}: {err}"))));
    }
    let v: serde_json::Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => return Ok((cost, Err(format!("printed no JSON ({e}): {out:.200}")))),
    };
    let top = |k: &str| {
        v[k].as_u64()
            .ok_or_else(|| format!("no {k} in its JSON (CopyReport): {out:.200}"))
    };
    let new_chunks = v["snapshots"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["new_chunks"].as_u64()).sum());
    let parsed = (|| {
        Ok(Copied {
            copied: top("copied")?,
            present: top("present")?,
            bytes_read: top("bytes_read")?,
            new_chunks: new_chunks
                .ok_or_else(|| format!("no snapshots in its JSON (CopyReport): {out:.200}"))?,
        })
    })();
    Ok((cost, parsed))
}

/// A problem for the row unless the copy succeeded having copied `copied` snapshots (reading
/// `bytes` from the source, adding chunks to the target) and found `present` present.
fn check_copy(
    row: &mut Row,
    what: &str,
    got: &Result<Copied, String>,
    copied: u64,
    present: u64,
    bytes: u64,
) {
    let wrong = match got {
        Err(e) => Some(e.clone()),
        Ok(c)
            if c.copied != copied
                || c.present != present
                || c.bytes_read != bytes
                || (c.new_chunks > 0) != (copied > 0) =>
        {
            Some(format!(
                "copied {}, present {}, {} bytes read, {} new chunks; expected copied {copied}, \
                 present {present}, {bytes} bytes read, {} new chunks",
                c.copied,
                c.present,
                c.bytes_read,
                c.new_chunks,
                if copied > 0 { "some" } else { "no" }
            ))
        }
        Ok(_) => None,
    };
    if let Some(w) = wrong {
        let msg = format!("N = {}: `{what}`: {w}", row.n);
        say(format!("  {msg}"));
        row.trouble.push(msg);
    }
}

/// The `copy` rows ([`CopyRows`]): the tiny snapshot `tiny_id` (`tiny_size` bytes) out of the
/// N-entry repository of `site` into [`COPY_REPEATS`] fresh repositories, then again into the
/// last one (present); [`COPY_REPEATS`] snapshots of [`COPY_MIB`] MiB of random bytes from a
/// fresh repository into it, then the last one again (present). The repositories made here
/// live under `site.root`, their caches beside the N-entry one's.
fn copy_rows(cli: &Cli, site: &Site, tiny_id: &str, tiny_size: u64, row: &mut Row) -> Res<()> {
    say(format!(
        "  CLI: copy out, the tiny snapshot into {COPY_REPEATS} fresh repositories, then again"
    ));
    let (mut out, mut targets) = (Vec::new(), Vec::new());
    for i in 0..COPY_REPEATS {
        let to = small_site(cli, &site.root, &format!("copy-to-{i}"), &site.cache)?;
        let (c, r) = json_copy(cli, site, &site.cache, tiny_id, &to)?;
        check_copy(row, "copy out", &r, 1, 0, tiny_size);
        out.push(c);
        targets.push(to);
    }
    let to = targets.last().expect("COPY_REPEATS > 0");
    let (out_again, r) = json_copy(cli, site, &site.cache, tiny_id, to)?;
    check_copy(row, "copy out, again", &r, 0, 1, 0);

    say(format!(
        "  CLI: copy in, {COPY_REPEATS} snapshots of {COPY_MIB} MiB from a fresh repository, \
         then the last again"
    ));
    let from = small_site(cli, &site.root, "copy-from", &site.cache)?;
    let stream = from.root.join("stream.bin");
    let mut ids = Vec::new();
    for i in 0..COPY_REPEATS {
        std::fs::write(&stream, random_bytes(COPY_MIB * MIB, 500 + i as u64))?;
        let args = ["backup", "--name", "copy-in", "--host", "scale", "-"];
        let (_, printed) = cli.run(&from, &site.cache, &args, Some(&stream), true)?;
        ids.push(printed.lines().last().unwrap_or_default().to_string());
    }
    std::fs::remove_file(&stream)?;
    let (mut into, mut chunks) = (Vec::new(), Vec::new());
    for id in &ids {
        let (c, r) = json_copy(cli, &from, &site.cache, id, site)?;
        check_copy(row, "copy in", &r, 1, 0, (COPY_MIB * MIB) as u64);
        chunks.push(r.map_or(0, |r| r.new_chunks));
        into.push(c);
    }
    let last = ids.last().expect("COPY_REPEATS > 0");
    let (into_again, r) = json_copy(cli, &from, &site.cache, last, site)?;
    check_copy(row, "copy in, again", &r, 0, 1, 0);
    chunks.sort_unstable();
    row.copy = Some(CopyRows {
        out: median(out),
        out_again,
        into: median(into),
        into_again,
        into_chunks: chunks[chunks.len() / 2],
    });
    Ok(())
}

/// Per second, over `ids`: how many `probe` answered true must be `expect`.
fn rate(ids: &[ChunkId], expect: bool, probe: impl Fn(&ChunkId) -> bool) -> f64 {
    let t0 = Instant::now();
    let answered = ids.iter().filter(|id| probe(id)).count();
    let secs = t0.elapsed().as_secs_f64();
    let want = if expect { ids.len() } else { 0 };
    assert_eq!(answered, want, "lookups answered wrong");
    ids.len() as f64 / secs
}

fn measure(cfg: &Cfg, n: u64) -> Res<Row> {
    let label = if n == 0 {
        "empty".to_string()
    } else {
        format!("n{n}")
    };
    let site = Site::new(&cfg.dir, &label);
    let cli = &cfg.cli;
    let mut row = Row {
        n,
        files: n.div_ceil(PER_FILE),
        ..Default::default()
    };
    say(format!("N = {n}: building {} index files", row.files));
    // Another seed than `incr`'s stream, which must be all new when that group backs it up.
    let cold_stream = cfg.dir.join(format!("stream-cold-{}MiB.bin", cfg.incr_mb));
    let coldincr = cfg.groups.coldincr && cfg.incr_mb > 0 && n > 0;
    if coldincr && !cold_stream.exists() {
        std::fs::write(&cold_stream, random_bytes(cfg.incr_mb * MIB, 199))?;
    }
    let built = build(
        &site,
        n,
        cfg.groups.prune,
        coldincr.then_some((cli, cold_stream.as_path())),
    )?;
    let (template, tiny_id) = (built.template, built.tiny_id);
    row.build_s = built.secs;
    row.tree = built.tree;
    row.cache_bytes = dir_bytes(&site.cache);

    // First, while the cache is as the synthesis left it.
    if let Some(early) = built.early {
        cold_incr(cfg, &site, &cold_stream, early, &mut row)?;
    }

    if cfg.groups.index {
        say("  in-process index load and lookups");
        let mut repo = site.open(true)?;
        let t0 = Instant::now();
        let index = repo.index()?;
        row.index_open_ms = t0.elapsed().as_secs_f64() * 1e3;
        row.runs = index.table().map_or(0, |t| t.runs());
        assert!(
            index.len() as u64 >= n,
            "{} entries in the index",
            index.len()
        );
        let mut rng = XorShift::new(42);
        if n > 0 {
            let hits: Vec<ChunkId> = (0..cfg.lookups).map(|_| chunk_id(rng.below(n))).collect();
            row.hits_per_s = rate(&hits, true, |id| index.location(id).is_some());
        }
        let misses: Vec<ChunkId> = (0..cfg.lookups)
            .map(|_| chunk_id(u64::MAX - rng.below(1 << 40)))
            .collect();
        row.misses_per_s = rate(&misses, false, |id| index.contains(id));
        // The same with the run files out of the page cache (as after a reboot): other IDs, so
        // that the buckets read above do not help.
        let cold = (cfg.lookups / 10).max(1);
        if n > 0 {
            let hits: Vec<ChunkId> = (0..cold).map(|_| chunk_id(rng.below(n))).collect();
            evict_runs(&site.cache)?;
            row.cold_hits_per_s = rate(&hits, true, |id| index.location(id).is_some());
        }
        let misses: Vec<ChunkId> = (0..cold)
            .map(|_| chunk_id(u64::MAX - rng.below(1 << 40)))
            .collect();
        evict_runs(&site.cache)?;
        row.cold_misses_per_s = rate(&misses, false, |id| index.contains(id));
        assert!(!index.is_tainted(), "the cached index is tainted");
    }

    let mut one_mib = String::new();
    if cfg.groups.cli {
        say("  CLI: snapshots, backup and restore of 1 MiB");
        cli.run(&site, &site.cache, &["snapshots"], None, false)?;
        row.snapshots_few = cli.median_of(&site, &["snapshots"])?;
        let (c, written, id) = cli.backup_1m(&site, 1000, false)?;
        (row.backup_1m, row.backup_1m_written_max, one_mib) = (c, written, id);
        row.restore_1m = cli.median_of(&site, &["restore", &one_mib])?;
    }

    if cfg.groups.incr && cfg.incr_mb > 0 {
        say(format!("  CLI: backup of {} MiB, 4 times", cfg.incr_mb));
        let p = cfg.dir.join(format!("stream-{}MiB.bin", cfg.incr_mb));
        if !p.exists() {
            std::fs::write(&p, random_bytes(cfg.incr_mb * MIB, 99))?;
        }
        let args = ["backup", "--name", "incr", "--host", "scale", "-"];
        row.incr_new = Some(cli.run(&site, &site.cache, &args, Some(&p), true)?.0);
        let mut again = Vec::new();
        for _ in 0..3 {
            again.push(cli.run(&site, &site.cache, &args, Some(&p), true)?.0);
        }
        row.incr_again = Some(median(again));
    }

    if cfg.groups.cold && n <= cfg.cold_max {
        say("  CLI: restore with an empty cache");
        let cold = site.root.join("cold-cache");
        let args = ["restore", one_mib.as_str()];
        row.cold_restore = Some(cli.run(&site, &cold, &args, None, false)?.0);
        std::fs::remove_dir_all(&cold)?;
    }

    // Before the snapshots of `many` and the maintenance rows (prune deletes half the entries).
    if cfg.groups.copy {
        copy_rows(cli, &site, &tiny_id, template.total_size(), &mut row)?;
    }

    if cfg.groups.many || cfg.groups.prune {
        let repo = site.open(false)?;
        let have =
            dumpvault::repo::list_ids(repo.backend.as_ref(), ObjectKind::Snapshot)?.len() as u64;
        let more = cfg.many.saturating_sub(have);
        say(format!("  {more} more snapshots"));
        let t0 = Instant::now();
        add_snapshots(&repo.backend, &repo.key, &template, FEW_SNAPSHOTS, more)?;
        row.add_snapshots_s = t0.elapsed().as_secs_f64();
    }
    if cfg.groups.many {
        say("  CLI: snapshots and restore");
        row.snapshots_sync = cli.run(&site, &site.cache, &["snapshots"], None, false)?.0;
        row.snapshots_many = cli.median_of(&site, &["snapshots"])?;
        row.restore_many = cli.median_of(&site, &["restore", &one_mib])?;
        say("  CLI: backup of 1 MiB, machine key and password (Argon2id, default parameters)");
        row.backup_many = cli.backup_1m(&site, 2000, false)?.0;
        row.backup_many_password = cli.backup_1m(&site, 3000, true)?.0;
    }
    if cfg.groups.prune {
        maintenance(cli, &site, &mut row)?;
    }

    if !cfg.keep {
        std::fs::remove_dir_all(&site.root)?;
    }
    Ok(row)
}

/// The number that follows `key` in `text` ("delete 12 unused" → 12 for "delete ").
fn num_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Run one maintenance command, echo what its failure printed, and name the failure.
fn maintain(cli: &Cli, site: &Site, args: &[&str], row: &mut Row) -> Res<(Outcome, String)> {
    let (cost, status, stdout, err_tail) = cli.run_any(site, args)?;
    let code = status.code();
    let mut o = Outcome {
        cost,
        code,
        note: String::new(),
    };
    if !o.ok() {
        let what = match code {
            Some(c) => format!("exit {c}"),
            None => format!("killed ({status})"),
        };
        say(format!(
            "  dumpvault {args:?} failed: {what}; stderr: {err_tail}"
        ));
        // What it reported, less the expected warnings (one line per garbage pack).
        for l in stdout
            .lines()
            .filter(|l| !l.contains(" unreferenced: "))
            .take(40)
        {
            eprintln!("    {l}");
        }
        o.note = format!("**{what}**: {err_tail}");
        row.trouble.push(format!(
            "N = {}: `{}` {what}: {err_tail}",
            row.n,
            args.join(" ")
        ));
    }
    Ok((o, stdout))
}

/// `fsck`, `prune --dry-run`, `prune`, in that order, each once (the last changes the
/// repository), checked against what the synthetic repository holds.
fn maintenance(cli: &Cli, site: &Site, row: &mut Row) -> Res<()> {
    say("  CLI: fsck, prune --dry-run, prune");
    let n = row.n;
    let garbage = garbage_packs(n);
    row.garbage_packs = garbage;
    let check = |row: &mut Row, what: &str, got: Option<u64>| {
        if got != Some(garbage) {
            let msg = format!("N = {n}: {what} is {got:?}, {garbage} garbage packs expected");
            say(format!("  {msg}"));
            row.trouble.push(msg);
        }
    };

    let (mut o, out) = maintain(cli, site, &["fsck"], row)?;
    let unreferenced = out
        .lines()
        .filter(|l| l.contains(" unreferenced: "))
        .count() as u64;
    let result = out
        .lines()
        .rfind(|l| l.starts_with("result: "))
        .map_or("no result line", |l| &l["result: ".len()..]);
    if o.ok() {
        o.note = format!("{result}; {unreferenced} unreferenced");
        check(row, "fsck's unreferenced pack count", Some(unreferenced));
    }
    row.fsck = Some(o);

    let (mut o, out) = maintain(cli, site, &["prune", "--dry-run"], row)?;
    if o.ok() {
        let plan = out
            .lines()
            .find(|l| l.starts_with("prune plan: "))
            .unwrap_or("");
        let (del, rep, keep) = (
            num_after(plan, "delete "),
            num_after(plan, "repack "),
            num_after(plan, "keep "),
        );
        o.note = format!(
            "delete {}, repack {}, keep {}",
            del.map_or("?".into(), |v| v.to_string()),
            rep.map_or("?".into(), |v| v.to_string()),
            keep.map_or("?".into(), |v| v.to_string())
        );
        check(row, "the dry run's delete count", del);
        if rep != Some(0) {
            row.trouble.push(format!(
                "N = {n}: the dry run plans to repack {rep:?} packs"
            ));
        }
    }
    row.prune_dry = Some(o);

    row.packs_before = count_packs(&site.repo);
    let (mut o, out) = maintain(cli, site, &["prune"], row)?;
    row.packs_after = count_packs(&site.repo);
    if o.ok() {
        o.note = match out.lines().find(|l| l.starts_with("pruned: ")) {
            Some(l) => l["pruned: ".len()..].to_string(),
            None if out.lines().any(|l| l == "nothing to prune") => "nothing to prune".into(),
            None => "no \"pruned:\" line".into(),
        };
        check(
            row,
            "the pack files prune deleted",
            row.packs_before.checked_sub(row.packs_after),
        );
    }
    row.prune = Some(o);
    Ok(())
}

fn millions(n: u64) -> String {
    match n {
        0 => "0 (empty)".into(),
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// Bytes written to disk, in MB (decimal: these are I/O volumes).
fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// "wall s / peak RSS MiB", or "–" for a run not made.
fn cost(c: Cost) -> String {
    if c.secs == 0.0 {
        return "–".into();
    }
    format!("{:.3} s / {:.1} MiB", c.secs, c.rss as f64 / MIB as f64)
}

/// (RSS − RSS of the empty repository) per entry, and the time ratio to the empty one.
fn versus(c: Cost, base: Cost, n: u64) -> (String, String) {
    if n == 0 {
        return ("–".into(), "1.00".into());
    }
    let per = (c.rss as f64 - base.rss as f64) / n as f64;
    (format!("{per:.2}"), format!("{:.2}", c.secs / base.secs))
}

fn tables(cfg: &Cfg, rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let base = rows.iter().find(|r| r.n == 0);
    let rate = |r: f64| {
        if r == 0.0 {
            "–".to_string()
        } else {
            format!("{:.1}k", r / 1e3)
        }
    };
    let _ = writeln!(
        s,
        "\n**Build, cache and in-process index** (index files of {PER_FILE} entries; cache = \
         run files + SQLite; lookups single-threaded, random order; cold = run files dropped from the page cache \
         first, {} lookups)\n",
        (cfg.lookups / 10).max(1)
    );
    s += "| N entries | index files | build s | cache bytes/entry | runs | `index()` ms | hits/s | misses/s | hits/s cold | misses/s cold |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let per = if r.n == 0 {
            "–".to_string()
        } else {
            format!("{:.1}", r.cache_bytes as f64 / r.n as f64)
        };
        let (runs, open_ms) = if cfg.groups.index {
            (r.runs.to_string(), format!("{:.1}", r.index_open_ms))
        } else {
            ("–".into(), "–".into())
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {per} | {runs} | {open_ms} | {} | {} | {} | {} |",
            millions(r.n),
            r.files,
            r.build_s,
            rate(r.hits_per_s),
            rate(r.misses_per_s),
            rate(r.cold_hits_per_s),
            rate(r.cold_misses_per_s)
        );
    }
    if cfg.groups.cli {
        cli_table(&mut s, rows, base);
    }
    if cfg.groups.incr && cfg.incr_mb > 0 {
        incr_table(&mut s, cfg, rows, base);
    }
    if cfg.groups.coldincr && cfg.incr_mb > 0 {
        cold_incr_table(&mut s, cfg, rows);
    }
    if cfg.groups.many || cfg.groups.cold {
        many_table(&mut s, cfg, rows, base);
    }
    if cfg.groups.copy {
        copy_table(&mut s, rows, base);
    }
    if cfg.groups.prune {
        maintenance_table(&mut s, cfg, rows, base);
    }
    let trouble: Vec<&String> = rows.iter().flat_map(|r| &r.trouble).collect();
    if !trouble.is_empty() {
        s += "\nProblems:\n";
        for t in trouble {
            let _ = writeln!(s, "- {t}");
        }
    }
    s
}

fn cold_incr_table(s: &mut String, cfg: &Cfg, rows: &[Row]) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\n**Incremental backup, cold page cache**: {} MiB of random bytes backed up (all new) \
         before the synthetic index files, whose merges take its entries into the big runs (as \
         last night's chunks of a nightly backup); then every run file dropped from the page \
         cache (`POSIX_FADV_DONTNEED`) and the same stream backed up again (every chunk found), \
         then once more right after (warm); that pair {COLD_REPEATS} times, medians. MB/s = 10^6 \
         bytes/s; RSS = peak, cold / warm; runs resident = the share of the run files' pages in \
         the page cache (`mincore`) after the eviction → after the cold backup\n",
        cfg.incr_mb
    );
    *s += "| N | runs (entries) and the stream's | chunks | first (all new) s | cold s | cold MB/s | warm s | warm MB/s | cold ÷ warm | RSS MiB | runs resident |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    let bytes = (cfg.incr_mb * MIB) as f64 / 1e6;
    for r in rows {
        let Some(c) = &r.coldincr else {
            continue;
        };
        let l = &c.layout;
        let sizes: Vec<String> = l.runs.iter().map(|&n| entries(n)).collect();
        let place = if l.merged() {
            format!("{}; stream in the {}", sizes.join(", "), entries(l.home))
        } else {
            format!(
                "**not merged**: {}; {}/{} sampled in the {}",
                sizes.join(", "),
                l.found,
                l.sampled,
                entries(l.home)
            )
        };
        let _ = writeln!(
            s,
            "| {} | {place} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} / {:.0} | {:.0}% → {:.0}% |",
            millions(r.n),
            c.chunks,
            c.first.secs,
            c.cold.secs,
            bytes / c.cold.secs,
            c.warm.secs,
            bytes / c.warm.secs,
            c.cold.secs / c.warm.secs,
            c.cold.rss as f64 / MIB as f64,
            c.warm.rss as f64 / MIB as f64,
            c.evicted * 100.0,
            c.after_cold * 100.0
        );
    }
}

fn cli_table(s: &mut String, rows: &[Row], base: Option<&Row>) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\n**CLI, M = {FEW_SNAPSHOTS} snapshots** (wall / peak RSS, median of {REPEATS}; ΔRSS = \
         (RSS − RSS empty) / N; × = time ÷ empty)\n"
    );
    *s += "| N | `snapshots` | `backup` 1 MiB | `restore` 1 MiB | backup ΔRSS B/entry | restore ΔRSS B/entry | backup × | restore × | backup disk writes (max) |\n|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let (bd, bt) = base.map_or(("?".into(), "?".into()), |b| {
            versus(r.backup_1m, b.backup_1m, r.n)
        });
        let (rd, rt) = base.map_or(("?".into(), "?".into()), |b| {
            versus(r.restore_1m, b.restore_1m, r.n)
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {bd} | {rd} | {bt} | {rt} | {} |",
            millions(r.n),
            cost(r.snapshots_few),
            cost(r.backup_1m),
            cost(r.restore_1m),
            mb(r.backup_1m_written_max)
        );
    }
}

fn incr_table(s: &mut String, cfg: &Cfg, rows: &[Row], base: Option<&Row>) {
    use std::fmt::Write;
    {
        let _ = writeln!(
            s,
            "\n**Incremental backup**: {} MiB of random bytes once (all new), then the same \
             again 3 times (every chunk found; median of 3); MB/s = 10^6 bytes/s; ÷ 1M = again \
             MB/s ÷ that at N = 1M\n",
            cfg.incr_mb
        );
        *s += "| N | first (all new) | MB/s | its disk writes | again (all hits) | MB/s | again ÷ 1M | again × empty | again ΔRSS B/entry |\n|---|---|---|---|---|---|---|---|---|\n";
        let bytes = (cfg.incr_mb * MIB) as f64 / 1e6;
        let at_1m = rows
            .iter()
            .find(|r| r.n == 1_000_000)
            .and_then(|r| r.incr_again)
            .map(|c| bytes / c.secs);
        for r in rows {
            let (Some(a), Some(b)) = (r.incr_new, r.incr_again) else {
                continue;
            };
            let (d, t) = base
                .and_then(|x| x.incr_again)
                .map_or(("?".into(), "?".into()), |x| versus(b, x, r.n));
            let vs_1m = at_1m.map_or("–".into(), |x| format!("{:.2}", bytes / b.secs / x));
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {} | {:.0} | {vs_1m} | {t} | {d} |",
                millions(r.n),
                cost(a),
                bytes / a.secs,
                mb(a.written),
                cost(b),
                bytes / b.secs
            );
        }
    }
}

fn many_table(s: &mut String, cfg: &Cfg, rows: &[Row], base: Option<&Row>) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\n**M = {} snapshots**, and `restore` with an empty cache (rebuilt from the \
         repository; skipped above `SCALE_COLD_MAX`). `backup` 1 MiB, median of {REPEATS}: \
         with the machine key (no KDF), and with the password key (Argon2id {} MiB, {} passes, \
         the default), so the open's Argon2 run included\n",
        cfg.many,
        KdfParams::DEFAULT.m_cost / 1024,
        KdfParams::DEFAULT.t_cost
    );
    *s += "| N | write snapshots s | first `snapshots` (sync) | `snapshots` (warm) | `restore` 1 MiB | `backup` 1 MiB | `backup` 1 MiB, password | restore, empty cache | its disk writes | its ΔRSS B/entry |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let (cold, written, cold_d) = match r.cold_restore {
            Some(c) => (
                cost(c),
                mb(c.written),
                base.and_then(|b| b.cold_restore)
                    .map_or("?".into(), |b| versus(c, b, r.n).0),
            ),
            None => ("skipped".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {:.1} | {} | {} | {} | {} | {} | {cold} | {written} | {cold_d} |",
            millions(r.n),
            r.add_snapshots_s,
            cost(r.snapshots_sync),
            cost(r.snapshots_many),
            cost(r.restore_many),
            cost(r.backup_many),
            cost(r.backup_many_password)
        );
    }
}

fn copy_table(s: &mut String, rows: &[Row], base: Option<&Row>) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\n**`copy`**, M = {FEW_SNAPSHOTS} snapshots, machine keys on both sides (wall / peak \
         RSS, median of {COPY_REPEATS}; ΔRSS = (RSS − RSS empty) / N; × = time ÷ empty). *Out*: \
         the tiny snapshot (64 KiB) from the N-entry repository into a fresh empty one, a new \
         one each time (the source side: every blob looked up and verified there). *In*: \
         {COPY_MIB} MiB of random bytes from a small fresh repository into the N-entry one, \
         another snapshot each time (the target side: every chunk looked up in the N-entry \
         table, all new). *Again*: the last copy once more, which must find the snapshot \
         present (checked, as are the counts of the others)\n"
    );
    *s += "| N | copy out | out again | copy in | in: new chunks | in again | out ΔRSS B/entry | in ΔRSS B/entry | out × | in × |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        let Some(c) = r.copy else {
            continue;
        };
        let b = base.and_then(|b| b.copy);
        let (od, ot) = b.map_or(("?".into(), "?".into()), |b| versus(c.out, b.out, r.n));
        let (id, it) = b.map_or(("?".into(), "?".into()), |b| versus(c.into, b.into, r.n));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {od} | {id} | {ot} | {it} |",
            millions(r.n),
            cost(c.out),
            cost(c.out_again),
            cost(c.into),
            c.into_chunks,
            cost(c.into_again)
        );
    }
}

fn maintenance_table(s: &mut String, cfg: &Cfg, rows: &[Row], base: Option<&Row>) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\n**Maintenance, M = {} snapshots**: `fsck` (structure level), `prune --dry-run`, then \
         `prune`, once each, wall / peak RSS; ΔRSS = (RSS − RSS empty) / N. Synthetic packs are \
         sparse files; the snapshot \"synthetic\" references the chunks of the even packs of \
         each index file (N/2) through a real tree, and the odd packs are garbage, which prune \
         deletes. Tree: its packs, MB and build seconds.\n",
        cfg.many
    );
    *s += "| N | referenced chunks | garbage packs | tree | `fsck` | `prune --dry-run` | `prune` | fsck ΔRSS B/entry | dry-run ΔRSS B/entry | prune ΔRSS B/entry | fsck says | dry run plans | prune says | pack files deleted |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let pick = |r: &Row, f: fn(&Row) -> &Option<Outcome>| f(r).clone().unwrap_or_default();
    for r in rows {
        let get = |f: fn(&Row) -> &Option<Outcome>| {
            let o = pick(r, f);
            let d = base.map_or("?".into(), |b| versus(o.cost, pick(b, f).cost, r.n).0);
            (o, d)
        };
        let (fsck, fd) = get(|r| &r.fsck);
        let (dry, dd) = get(|r| &r.prune_dry);
        let (prune, pd) = get(|r| &r.prune);
        let tree = r.tree.map_or("–".into(), |t| {
            format!(
                "{} packs, {:.0} MB, {:.1} s",
                t.packs,
                t.bytes as f64 / 1e6,
                t.secs
            )
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {tree} | {} | {} | {} | {fd} | {dd} | {pd} | {} | {} | {} | {} |",
            millions(r.n),
            r.tree.map_or(0, |t| t.chunks),
            r.garbage_packs,
            cost(fsck.cost),
            cost(dry.cost),
            cost(prune.cost),
            fsck.note,
            dry.note,
            prune.note,
            r.packs_before.saturating_sub(r.packs_after)
        );
    }
}

fn main() -> Res<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sizes: Vec<f64> = std::env::var("SCALE_N")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()?;
    if std::env::var("SCALE_BIG").is_ok_and(|v| v == "1") && !sizes.contains(&60.0) {
        sizes.push(60.0);
    }
    let cfg = Cfg {
        dir: env_or("SCALE_DIR", PathBuf::from("/tmp/dvscale")),
        cli: Cli {
            bin: env_or("DUMPVAULT_BIN", manifest.join("target/release/dumpvault")),
        },
        many: env_or("SCALE_SNAPSHOTS", 10_000),
        incr_mb: env_or("SCALE_INCR_MB", 256),
        lookups: env_or("SCALE_LOOKUPS", 200_000),
        cold_max: (env_or("SCALE_COLD_MAX", f64::INFINITY) * 1e6) as u64,
        keep: std::env::var("KEEP").is_ok_and(|v| v == "1"),
        groups: Groups::parse(std::env::var("SCALE_ONLY").ok())?,
    };
    if !cfg.cli.bin.exists() {
        return Err(format!(
            "{}: no such binary (set DUMPVAULT_BIN)",
            cfg.cli.bin.display()
        )
        .into());
    }
    std::fs::create_dir_all(&cfg.dir)?;
    // The checkout the binaries were built from: scale.sh records it before building (commits
    // landing during a run would otherwise be named).
    let git = std::env::var("SCALE_GIT").unwrap_or_else(|_| {
        Command::new("git")
            .args([
                "-C",
                &manifest.to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or("(not a git checkout)".into(), |o| {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            })
    });
    let t0 = Instant::now();
    let mut rows = Vec::new();
    for n in std::iter::once(0).chain(sizes.iter().map(|m| (m * 1e6).round() as u64)) {
        let t = Instant::now();
        rows.push(measure(&cfg, n)?);
        say(format!(
            "N = {n} done in {:.0} s{}",
            t.elapsed().as_secs_f64(),
            tables(&cfg, &rows)
        ));
    }
    println!(
        "dumpvault scale bench: built from {git}, {} cores, binary {}, {:.0} s in all",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cfg.cli.bin.display(),
        t0.elapsed().as_secs_f64()
    );
    print!("{}", tables(&cfg, &rows));
    let trouble = rows.iter().map(|r| r.trouble.len()).sum::<usize>();
    if !cfg.keep {
        for e in std::fs::read_dir(&cfg.dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("stream-") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    if trouble > 0 {
        return Err(format!("{trouble} problem(s), listed under the last table").into());
    }
    Ok(())
}
