//! The library API from outside: cache behaviour (counted backend requests), memory backend,
//! and decoders fed every truncation and bit flip of real objects (no panic, always an error).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dumpvault::backend::memory::MemoryBackend;
use dumpvault::backend::{Backend, Name};
use dumpvault::crypto::KdfParams;
use dumpvault::error::{ObjectKind, Result};
use dumpvault::ops::backup::{backup, BackupOptions};
use dumpvault::ops::restore::restore;
use dumpvault::repo::{InitOptions, OpenOptions, Repo};
use dumpvault::snapshot::{Filter, Source};

use crate::common::*;

/// Counts GETs per kind, to prove what the cache saves.
struct Counting {
    inner: MemoryBackend,
    index_gets: AtomicUsize,
    snapshot_gets: AtomicUsize,
}

impl Backend for Counting {
    fn location(&self) -> String {
        "counting".into()
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
        self.inner.list(kind)
    }
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        match kind {
            ObjectKind::Index => self.index_gets.fetch_add(1, Ordering::SeqCst),
            ObjectKind::Snapshot => self.snapshot_gets.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        self.inner.get(kind, name)
    }
    fn get_range(&self, kind: ObjectKind, name: &str, o: u64, l: u64) -> Result<Vec<u8>> {
        self.inner.get_range(kind, name, o, l)
    }
    fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.inner.put(kind, name, data)
    }
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.inner.delete(kind, name)
    }
}

fn opts(name: &str) -> BackupOptions {
    BackupOptions {
        name: name.into(),
        tags: vec![],
        host: "test".into(),
        time: None,
        stream_name: "stdin".into(),
        allow_empty: false,
        ..Default::default()
    }
}

fn init_opts() -> InitOptions {
    InitOptions {
        kdf: KdfParams::FLOOR,
        ..Default::default()
    }
}

#[test]
fn second_backup_of_unchanged_dump_downloads_no_index() {
    let b = Arc::new(Counting {
        inner: MemoryBackend::default(),
        index_gets: AtomicUsize::new(0),
        snapshot_gets: AtomicUsize::new(0),
    });
    let backend: Arc<dyn Backend> = b.clone();
    let cache = tempfile::tempdir().unwrap();
    let oo = OpenOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    Repo::init(Arc::clone(&backend), b"pw", &init_opts()).unwrap();
    let data = sql_like(50_000, 21);
    for _ in 0..3 {
        let mut repo = Repo::open(Arc::clone(&backend), b"pw", &oo).unwrap();
        backup(
            &mut repo,
            &data[..],
            &opts("s"),
            || Ok(Source::Stdin),
            |_| {},
        )
        .unwrap();
    }
    // Each backup wrote at most one index file and recorded it in the cache as it did:
    // no run ever had to download an index file.
    assert_eq!(b.index_gets.load(Ordering::SeqCst), 0);
    // Without a cache, every index file is read.
    let mut repo = Repo::open(Arc::clone(&backend), b"pw", &OpenOptions::default()).unwrap();
    repo.index().unwrap();
    let n_index = backend.list(ObjectKind::Index).unwrap().len();
    assert_eq!(b.index_gets.load(Ordering::SeqCst), n_index);
    // Snapshots are fetched once, then served by the cache.
    let mut repo = Repo::open(Arc::clone(&backend), b"pw", &oo).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 3);
    let after_first = b.snapshot_gets.load(Ordering::SeqCst);
    let mut repo = Repo::open(Arc::clone(&backend), b"pw", &oo).unwrap();
    assert_eq!(repo.snapshots().unwrap().len(), 3);
    assert_eq!(b.snapshot_gets.load(Ordering::SeqCst), after_first);
}

/// Issue 14: a long backup writes index files on the way (format-spec/09 W3a), so its own
/// new entries do not pile up in memory. The snapshot restores byte-exact, the next backup of
/// the same data deduplicates every chunk against those index files (through the cache's
/// table, and without a cache), and a second flushed backup leaves fsck nothing to report.
#[test]
fn backup_flushes_index_files_on_the_way_and_dedups_against_them() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let cache = tempfile::tempdir().unwrap();
    let oo = OpenOptions {
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    Repo::init(
        Arc::clone(&backend),
        b"pw",
        &InitOptions {
            chunk_min: 1024,
            chunk_avg: 4096,
            chunk_max: 16384,
            pack_target: 1024 * 1024,
            ..init_opts()
        },
    )
    .unwrap();
    let data = noise(6_000_000, 31);
    let flushing = BackupOptions {
        flush_entries: 200,
        ..opts("f")
    };
    let mut repo = Repo::open(Arc::clone(&backend), b"pw", &oo).unwrap();
    let r = backup(
        &mut repo,
        &data[..],
        &flushing,
        || Ok(Source::Stdin),
        |_| {},
    )
    .unwrap();
    let index_files = backend.list(ObjectKind::Index).unwrap().len();
    assert!(
        index_files >= 3,
        "{index_files} index files for {} packs",
        r.stats.packs_written
    );
    assert!(r.stats.new_chunks > 1000);
    for cache_dir in [Some(cache.path().to_path_buf()), None] {
        let oo = OpenOptions {
            cache_dir,
            ..Default::default()
        };
        let mut repo = Repo::open(Arc::clone(&backend), b"pw", &oo).unwrap();
        let again = backup(
            &mut repo,
            &data[..],
            &flushing,
            || Ok(Source::Stdin),
            |_| {},
        )
        .unwrap();
        assert_eq!(again.stats.new_chunks, 0, "everything was known");
        assert_eq!(again.stats.packs_written, 0);
        let snap = repo
            .find_snapshot(&r.snapshot_id.to_hex(), &Filter::default())
            .unwrap();
        let mut out = Vec::new();
        restore(&mut repo, &snap, None, &mut out, |_| {}).unwrap();
        assert!(out == data, "restore differs");
    }
    let mut repo = Repo::open(Arc::clone(&backend), b"pw", &oo).unwrap();
    let report = dumpvault::ops::fsck::fsck(
        &mut repo,
        &dumpvault::ops::fsck::FsckOptions { read_data: None },
        &|_, _, _| {},
    )
    .unwrap();
    assert!(!report.damaged(), "{:?}", report.problems);
}

#[test]
fn memory_backend_round_trip_through_the_library() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    let mut repo = Repo::init(Arc::clone(&backend), b"pw", &init_opts()).unwrap();
    let data = sql_like(40_000, 22);
    let r = backup(
        &mut repo,
        &data[..],
        &opts("m"),
        || Ok(Source::Stdin),
        |_| {},
    )
    .unwrap();
    assert_eq!(r.snapshot.streams[0].size, data.len() as u64);
    let mut repo = Repo::open(backend, b"pw", &OpenOptions::default()).unwrap();
    let snap = repo.find_snapshot("latest", &Filter::default()).unwrap();
    assert_eq!(snap.id, r.snapshot_id);
    let mut out = Vec::new();
    restore(&mut repo, &snap, None, &mut out, |_| {}).unwrap();
    assert_eq!(out, data);
}

#[test]
fn every_object_name_is_the_blake3_of_its_bytes() {
    let env = Env::new();
    env.backup(&sql_like(20_000, 23), &["--name", "n"]);
    for sub in ["keys", "data", "index", "snapshots"] {
        let files = env.files_under(sub);
        assert!(!files.is_empty(), "{sub}");
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let b = std::fs::read(&f).unwrap();
            assert_eq!(blake3::hash(&b).to_hex().as_str(), name, "{}", f.display());
        }
    }
}

/// Stable-toolchain counterpart of the fuzz targets: every prefix and every single-bit flip of
/// real encoded objects must decode to an error or a value, never a panic.
#[test]
fn decoders_survive_truncation_and_bit_flips() {
    use dumpvault::format::{config::Config, index::IndexFile, keyfile::KeyFile, tree::TreeNode};
    use dumpvault::id::ObjectId;
    let env = Env::new();
    env.backup(&sql_like(5_000, 24), &["--name", "n"]);
    let id = ObjectId([0; 32]);
    let cfg = std::fs::read(env.repo.join("config")).unwrap();
    let key = std::fs::read(&env.files_under("keys")[0]).unwrap();
    let mutations = |b: &[u8]| {
        let mut v: Vec<Vec<u8>> = (0..b.len()).map(|n| b[..n].to_vec()).collect();
        for i in 0..b.len() {
            for bit in [0x01u8, 0x80] {
                let mut m = b.to_vec();
                m[i] ^= bit;
                v.push(m);
            }
        }
        v
    };
    for m in mutations(&cfg) {
        let _ = Config::decode(&m);
    }
    for m in mutations(&key) {
        let _ = KeyFile::decode(&id, &m);
    }
    // Plaintext decoders get structurally valid inputs mutated.
    let node = TreeNode {
        level: 1,
        entries: vec![
            dumpvault::format::tree::TreeEntry {
                id: dumpvault::id::ChunkId([1; 32]),
                len: 5
            };
            3
        ],
    }
    .encode();
    for m in mutations(&node) {
        let _ = TreeNode::decode(&m);
    }
    let f = IndexFile {
        superseded: vec![ObjectId([2; 32])],
        packs: vec![],
    }
    .encode();
    for m in mutations(&f) {
        let _ = IndexFile::decode(&id, &m);
    }
    for m in mutations(br#"{"format":1,"time":"2024-01-01T00:00:00Z","host":"h","name":"n","tool_version":"x","duration_ms":1,"streams":[]}"#) {
        let _ = dumpvault::format::snapshot::decode(&id, &m);
    }
}

/// Format-spec X8: restore takes no lock, so a prune may repack the blobs it needs and delete
/// the packs its already loaded index names. The restore reloads the index once, resumes where
/// its output stopped, and still restores byte for byte.
#[test]
fn restore_survives_a_prune_that_repacks_its_packs_after_the_index_was_loaded() {
    use dumpvault::ops::prune::{prune, PruneOptions};
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    Repo::init(Arc::clone(&backend), b"pw", &init_opts()).unwrap();
    let day1 = sql_like(60_000, 31);
    // Day 2 keeps the first half of day 1 (in day 1's pack) and adds new rows.
    let mut day2 = day1[..day1.len() / 2].to_vec();
    day2.extend_from_slice(&sql_like(30_000, 32));
    let first = {
        let mut repo = Repo::open(Arc::clone(&backend), b"pw", &OpenOptions::default()).unwrap();
        let a = backup(
            &mut repo,
            &day1[..],
            &opts("a"),
            || Ok(Source::Stdin),
            |_| {},
        )
        .unwrap();
        backup(
            &mut repo,
            &day2[..],
            &opts("b"),
            || Ok(Source::Stdin),
            |_| {},
        )
        .unwrap();
        a.snapshot_id
    };
    // The restoring process has its index before the prune runs.
    let mut reader = Repo::open(Arc::clone(&backend), b"pw", &OpenOptions::default()).unwrap();
    let filter = Filter {
        name: Some("b".into()),
        ..Default::default()
    };
    let snap = reader.find_snapshot("latest", &filter).unwrap();
    reader.index().unwrap();
    let packs_before = backend.list(ObjectKind::Pack).unwrap();
    {
        // What `forget` of day 1 then `prune` do: day 1's pack is half unused, so it is
        // repacked (its live half moves to a new pack) and deleted.
        backend
            .delete(ObjectKind::Snapshot, &first.to_hex())
            .unwrap();
        let mut pruner = Repo::open(Arc::clone(&backend), b"pw", &OpenOptions::default()).unwrap();
        prune(&mut pruner, &PruneOptions::default(), false).unwrap();
    }
    let packs_after = backend.list(ObjectKind::Pack).unwrap();
    assert!(
        packs_before.iter().any(|p| !packs_after.contains(p)),
        "the prune must delete a pack the reader's index still names"
    );
    let mut out = Vec::new();
    let stats = restore(&mut reader, &snap, None, &mut out, |_| {}).unwrap();
    assert!(out == day2, "restored bytes differ from day 2");
    assert_eq!(stats.index_reloads, 1);
    // A pack that is really gone is still damage after the one reload.
    let victim = backend.list(ObjectKind::Pack).unwrap()[0].0.clone();
    backend.delete(ObjectKind::Pack, &victim).unwrap();
    let mut reader = Repo::open(Arc::clone(&backend), b"pw", &OpenOptions::default()).unwrap();
    let err = restore(&mut reader, &snap, None, &mut Vec::new(), |_| {}).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains(&victim), "{err}");
}
