//! The library over `backend::fault::FaultBackend`: every single fault a backup can meet, a
//! backend that silently truncates a pack, bit flips and short reads under restore. The
//! outcomes asserted are the issue's: a failed operation leaves no snapshot and nothing
//! visible changed, what the repository holds stays whole (fsck finds no damage), earlier
//! snapshots restore byte-exact, silent damage is named by fsck and restore, and no byte that
//! failed authentication ever reaches the output.

use std::sync::Arc;

use dumpvault::backend::fault::{Fault, FaultBackend, Op, Rule};
use dumpvault::backend::memory::MemoryBackend;
use dumpvault::backend::Backend;
use dumpvault::crypto::KdfParams;
use dumpvault::error::{Error, ObjectKind};
use dumpvault::id::ObjectId;
use dumpvault::ops::backup::{backup, BackupOptions};
use dumpvault::ops::fsck::{fsck, FsckOptions, Severity, Subset};
use dumpvault::ops::restore::restore;
use dumpvault::repo::{list_ids, InitOptions, OpenOptions, Repo};
use dumpvault::snapshot::{Filter, Source};

use crate::common::*;

const PW: &[u8] = b"pw";

fn init_opts() -> InitOptions {
    InitOptions {
        kdf: KdfParams::FLOOR,
        // The smallest pack target, so a few MiB of data make several packs.
        pack_target: 1024 * 1024,
        ..Default::default()
    }
}

fn opts(name: &str) -> BackupOptions {
    BackupOptions {
        name: name.into(),
        host: "test".into(),
        stream_name: "stdin".into(),
        ..Default::default()
    }
}

/// About 3 MiB that compresses little: three or four packs.
fn data(seed: u64) -> Vec<u8> {
    let mut d = sql_like(20_000, seed);
    d.extend_from_slice(&noise(2_600_000, seed + 1));
    d
}

fn open(backend: Arc<dyn Backend>) -> Repo {
    Repo::open(backend, PW, &OpenOptions::default()).unwrap()
}

fn snapshot_ids(backend: &dyn Backend) -> Vec<ObjectId> {
    let mut v = list_ids(backend, ObjectKind::Snapshot).unwrap();
    v.sort();
    v
}

fn restore_id(backend: Arc<dyn Backend>, id: &ObjectId) -> dumpvault::Result<Vec<u8>> {
    let mut repo = open(backend);
    let snap = repo.find_snapshot(&id.to_hex(), &Filter::default())?;
    let mut out = Vec::new();
    restore(&mut repo, &snap, None, &mut out, |_| {})?;
    Ok(out)
}

/// A full read-data fsck finds no damage (unreferenced packs, left by a failed backup, are
/// warnings and allowed).
fn assert_fsck_clean(backend: Arc<dyn Backend>, context: &str) {
    let mut repo = open(backend);
    let report = fsck(
        &mut repo,
        &FsckOptions {
            read_data: Some(Subset::All),
        },
        &|_, _, _| {},
    )
    .unwrap();
    assert!(
        !report.damaged(),
        "{context}: fsck found damage: {:?}",
        report.problems
    );
}

/// A repository with one snapshot of `data(100)`.
fn seeded_repo() -> (Arc<MemoryBackend>, Vec<u8>, ObjectId) {
    let mem = Arc::new(MemoryBackend::default());
    let backend: Arc<dyn Backend> = mem.clone();
    let mut repo = Repo::init(Arc::clone(&backend), PW, &init_opts()).unwrap();
    let d = data(100);
    let r = backup(&mut repo, &d[..], &opts("db"), || Ok(Source::Stdin), |_| {}).unwrap();
    (mem, d, r.snapshot_id)
}

/// For every kind of call a backup makes, fail the 1st, 2nd, … call of that kind (one run
/// each, until a run meets no fault): a backup that fails leaves the set of snapshots as it
/// was; one that succeeds restores byte-exact; the repository stays whole and the earlier
/// snapshot restores byte-exact after every run; and the next clean backup succeeds.
#[test]
fn backup_through_every_single_failing_call() {
    let (mem, first, first_id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    let mut failed_runs = 0;
    for op in [
        Op::Put,
        Op::Get,
        Op::GetRange,
        Op::List,
        Op::Size,
        Op::Delete,
    ] {
        for n in 1.. {
            let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), n));
            let backend: Arc<dyn Backend> = fb.clone();
            let mut repo = open(Arc::clone(&backend));
            fb.add(Rule::nth(op, n, Fault::Fail));
            let before = snapshot_ids(inner.as_ref());
            let d = data(200 + n);
            let r = backup(&mut repo, &d[..], &opts("db"), || Ok(Source::Stdin), |_| {});
            drop(repo);
            let injected = fb.injected();
            let ctx = format!("{op:?} #{n}: {injected:?}");
            match r {
                Err(e) => {
                    assert!(!injected.is_empty(), "{ctx}: failed with no fault: {e}");
                    assert!(
                        matches!(e, Error::Backend(_)),
                        "{ctx}: a storage failure must stay a storage error, got {e:?}"
                    );
                    assert_eq!(snapshot_ids(inner.as_ref()), before, "{ctx}: snapshot left");
                    failed_runs += 1;
                }
                Ok(r) => {
                    let after = snapshot_ids(inner.as_ref());
                    assert_eq!(after.len(), before.len() + 1, "{ctx}");
                    assert_eq!(restore_id(Arc::clone(&inner), &r.snapshot_id).unwrap(), d);
                    // Only faults on the backup's own lock may go unnoticed: reading it back
                    // in the second conflict check (it is skipped as ours), or releasing it
                    // (the lock object then stays behind, stale once its process is gone).
                    // Clear it as `unlock` would, so the next run starts from the same state.
                    let locks = inner.list(ObjectKind::Lock).unwrap();
                    assert!(
                        injected.iter().all(|f| f.kind == ObjectKind::Lock),
                        "{ctx}: a fault went unnoticed"
                    );
                    for (name, _) in locks {
                        inner.delete(ObjectKind::Lock, &name).unwrap();
                    }
                    // Keep the repository the same size for the next run.
                    inner
                        .delete(ObjectKind::Snapshot, &r.snapshot_id.to_hex())
                        .unwrap();
                }
            }
            assert!(
                inner.list(ObjectKind::Lock).unwrap().is_empty(),
                "{ctx}: a failed backup must release its lock"
            );
            assert_eq!(
                restore_id(Arc::clone(&inner), &first_id).unwrap(),
                first,
                "{ctx}"
            );
            if injected.is_empty() {
                break;
            }
        }
    }
    assert!(failed_runs >= 8, "only {failed_runs} fault points failed");
    assert_fsck_clean(Arc::clone(&inner), "after every fault point");
    // And a clean backup afterwards succeeds and restores.
    let mut repo = open(Arc::clone(&inner));
    let d = data(999);
    let r = backup(&mut repo, &d[..], &opts("db"), || Ok(Source::Stdin), |_| {}).unwrap();
    assert_eq!(restore_id(inner, &r.snapshot_id).unwrap(), d);
}

/// A storage outage from the k-th put on (every put fails): no snapshot, lock released,
/// nothing damaged.
#[test]
fn backup_during_a_put_outage_leaves_no_snapshot() {
    let (mem, first, first_id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    for k in 1..=4 {
        let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), k));
        let backend: Arc<dyn Backend> = fb.clone();
        let mut repo = open(backend);
        fb.add(Rule::nth(Op::Put, k, Fault::Fail).times(u64::MAX));
        let d = data(300 + k);
        let e = backup(&mut repo, &d[..], &opts("db"), || Ok(Source::Stdin), |_| {})
            .expect_err("every put from the k-th on fails");
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        assert_eq!(snapshot_ids(inner.as_ref()), vec![first_id]);
    }
    assert_eq!(restore_id(Arc::clone(&inner), &first_id).unwrap(), first);
    assert_fsck_clean(inner, "after put outages");
}

/// A backend that truncates a pack and reports success: the backup commits (it cannot know
/// without reading back), and then fsck names the damaged pack, and restore either returns
/// the exact bytes (the cut fell in the pack's header, which restore does not read) or fails
/// naming that pack. Never wrong bytes.
#[test]
fn truncated_pack_write_reported_success_is_named_by_fsck_and_restore() {
    let mut restore_failures = 0;
    for (seed, nth) in [(1, 1), (2, 2), (3, 3), (4, 1), (5, 2), (6, 3)] {
        let mem = Arc::new(MemoryBackend::default());
        let inner: Arc<dyn Backend> = mem.clone();
        drop(Repo::init(Arc::clone(&inner), PW, &init_opts()).unwrap());
        let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), seed));
        let backend: Arc<dyn Backend> = fb.clone();
        let mut repo = open(backend);
        fb.add(Rule::nth(Op::Put, nth, Fault::TruncateWrite).of(ObjectKind::Pack));
        let d = data(400 + seed);
        let r = backup(&mut repo, &d[..], &opts("db"), || Ok(Source::Stdin), |_| {}).unwrap();
        let injected = fb.injected();
        assert_eq!(injected.len(), 1, "seed {seed}: {injected:?}");
        let pack = &injected[0].name;

        // Structure fsck already sees it: the pack is shorter than the index says.
        for read_data in [None, Some(Subset::All)] {
            let mut repo = open(Arc::clone(&inner));
            let report = fsck(&mut repo, &FsckOptions { read_data }, &|_, _, _| {}).unwrap();
            let named: Vec<_> = report
                .problems
                .iter()
                .filter(|p| p.severity == Severity::Damage && &p.id == pack)
                .collect();
            assert!(
                !named.is_empty(),
                "seed {seed}: fsck must name pack {pack}: {:?}",
                report.problems
            );
        }
        match restore_id(Arc::clone(&inner), &r.snapshot_id) {
            Ok(out) => assert_eq!(out, d, "seed {seed}: a restore that succeeds is exact"),
            Err(e) => {
                assert!(e.is_corruption(), "seed {seed}: {e:?}");
                assert!(e.to_string().contains(pack.as_str()), "seed {seed}: {e}");
                restore_failures += 1;
            }
        }
    }
    assert!(restore_failures > 0, "no seed cut into a pack's blobs");
}

/// A bit flipped in the k-th ranged pack read of a restore, for every k: the restore fails,
/// the error names the pack the read came from, and the output holds only a prefix of the
/// stream (never a byte that failed authentication).
#[test]
fn bit_flip_on_read_fails_restore_naming_the_pack() {
    let (mem, d, id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    let mut flips = 0;
    for k in 1.. {
        let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), k));
        let backend: Arc<dyn Backend> = fb.clone();
        let mut repo = open(backend);
        let snap = repo.find_snapshot("latest", &Filter::default()).unwrap();
        repo.index().unwrap();
        fb.add(Rule::nth(Op::GetRange, k, Fault::FlipBit).of(ObjectKind::Pack));
        let mut out = Vec::new();
        let r = restore(&mut repo, &snap, None, &mut out, |_| {});
        let injected = fb.injected();
        if injected.is_empty() {
            r.unwrap();
            assert_eq!(out, d);
            break;
        }
        flips += 1;
        let e = r.expect_err("a flipped bit must fail the restore");
        assert!(matches!(e, Error::CorruptBlob { .. }), "read {k}: {e:?}");
        assert!(
            e.to_string().contains(&injected[0].name),
            "read {k}: error must name pack {}: {e}",
            injected[0].name
        );
        assert!(
            out.len() < d.len() && d.starts_with(&out),
            "read {k}: only verified bytes may be written"
        );
    }
    assert!(flips >= 2, "restore made only {flips} ranged reads");
    assert_eq!(restore_id(inner, &id).unwrap(), d, "the store is unharmed");
}

/// A bit flipped while reading an index file or a snapshot: named as that object, as damage.
#[test]
fn bit_flip_reading_index_or_snapshot_names_the_object() {
    let (mem, _d, id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), 9));
    let backend: Arc<dyn Backend> = fb.clone();
    let mut repo = open(backend);
    fb.add(Rule::nth(Op::Get, 1, Fault::FlipBit).of(ObjectKind::Index));
    let e = repo.index().err().expect("flipped index must fail");
    let index_name = &fb.injected()[0].name;
    assert!(
        matches!(&e, Error::Corrupt { kind: ObjectKind::Index, id, .. } if id == index_name),
        "{e:?}"
    );
    fb.add(Rule::nth(Op::Get, 1, Fault::FlipBit).of(ObjectKind::Snapshot));
    let e = repo
        .read_snapshot(&id)
        .expect_err("flipped snapshot must fail");
    assert!(
        matches!(&e, Error::Corrupt { kind: ObjectKind::Snapshot, id: n, .. } if *n == id.to_hex()),
        "{e:?}"
    );
}

/// Regression (short read panicked restore): a backend returning fewer bytes than a ranged
/// read asked for made `restore` slice past the end of the buffer. Now every short ranged read
/// is a storage error naming the pack; restore writes nothing it has not verified.
#[test]
fn short_read_is_a_clear_error_not_a_panic() {
    let (mem, d, _) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    for k in 1..=3 {
        let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), k));
        let backend: Arc<dyn Backend> = fb.clone();
        let mut repo = open(backend);
        let snap = repo.find_snapshot("latest", &Filter::default()).unwrap();
        repo.index().unwrap();
        fb.add(Rule::nth(Op::GetRange, k, Fault::ShortRead).of(ObjectKind::Pack));
        let mut out = Vec::new();
        let e = restore(&mut repo, &snap, None, &mut out, |_| {}).expect_err("short read");
        let pack = &fb.injected()[0].name;
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("short read") && msg.contains(pack.as_str()),
            "{msg}"
        );
        assert!(d.starts_with(&out) && out.len() < d.len());
    }
}

/// Regression (a failed prune left a stale index in the open `Repo`): `prune::execute` dropped
/// the loaded index only at its very end, so when it failed after deleting packs, a backup
/// through the same `Repo` deduplicated against chunks in deleted packs and committed a
/// snapshot that could not be restored.
#[test]
fn prune_failing_midway_leaves_no_stale_index_in_the_open_repo() {
    let mem = Arc::new(MemoryBackend::default());
    let inner: Arc<dyn Backend> = mem.clone();
    drop(Repo::init(Arc::clone(&inner), PW, &init_opts()).unwrap());
    let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), 5));
    let backend: Arc<dyn Backend> = fb.clone();
    let mut repo = open(backend);
    let (a, b) = (data(500), data(501));
    let ra = backup(&mut repo, &a[..], &opts("a"), || Ok(Source::Stdin), |_| {}).unwrap();
    backup(&mut repo, &b[..], &opts("b"), || Ok(Source::Stdin), |_| {}).unwrap();
    inner
        .delete(ObjectKind::Snapshot, &ra.snapshot_id.to_hex())
        .unwrap();
    // A's packs are all unreachable now; the second pack deletion fails.
    fb.add(Rule::nth(Op::Delete, 2, Fault::Fail).of(ObjectKind::Pack));
    let e = dumpvault::ops::prune::prune(
        &mut repo,
        &dumpvault::ops::prune::PruneOptions::default(),
        false,
    )
    .expect_err("the injected delete failure stops prune");
    assert!(matches!(e, Error::Backend(_)), "{e:?}");
    fb.clear();
    // Back up A's bytes again through the same Repo: they must be stored anew.
    let ra2 = backup(&mut repo, &a[..], &opts("a"), || Ok(Source::Stdin), |_| {}).unwrap();
    assert_eq!(restore_id(Arc::clone(&inner), &ra2.snapshot_id).unwrap(), a);
    assert_fsck_clean(inner, "after a failed prune and a backup");
}

/// Regression for issue X19 (`repair index` dropped packs it merely could not read): with a
/// storage error on the k-th pack read, the rebuild stops with a storage error and leaves the
/// old index files in place; nothing is written or deleted.
#[test]
fn x19_repair_index_stops_on_a_storage_error_and_drops_nothing() {
    let (mem, d, id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    let old_index = list_ids(inner.as_ref(), ObjectKind::Index).unwrap();
    let packs = inner.list(ObjectKind::Pack).unwrap().len();
    for (op, verify) in [(Op::GetRange, false), (Op::Get, true)] {
        for k in 1..=packs as u64 {
            let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), k));
            let backend: Arc<dyn Backend> = fb.clone();
            let mut repo = open(backend);
            fb.add(Rule::nth(op, k, Fault::Fail).of(ObjectKind::Pack));
            let e = dumpvault::ops::repair::repair_index(&mut repo, verify, &|_, _, _| {})
                .expect_err("a pack that cannot be read stops the rebuild");
            assert!(matches!(e, Error::Backend(_)), "{op:?} #{k}: {e:?}");
            assert_eq!(
                list_ids(inner.as_ref(), ObjectKind::Index).unwrap(),
                old_index
            );
        }
    }
    assert_eq!(restore_id(inner, &id).unwrap(), d);
}

/// Regression for issue X20 (`fsck --read-data` reported storage errors while streaming a
/// snapshot as damage): a storage error on any ranged read, the stream check's included, ends
/// the check as incomplete (an error), never as a report of damage.
#[test]
fn x20_fsck_storage_errors_are_incomplete_never_damage() {
    let (mem, _d, _id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    let mut failed = 0;
    for k in 1.. {
        let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), k));
        let backend: Arc<dyn Backend> = fb.clone();
        let mut repo = open(backend);
        fb.add(Rule::nth(Op::GetRange, k, Fault::Fail));
        let r = fsck(
            &mut repo,
            &FsckOptions {
                read_data: Some(Subset::All),
            },
            &|_, _, _| {},
        );
        if fb.injected().is_empty() {
            assert!(!r.unwrap().damaged());
            break;
        }
        failed += 1;
        match r {
            Err(e) => assert!(!e.is_corruption(), "read {k}: {e:?}"),
            Ok(report) => panic!("read {k}: a storage error became a report: {report:?}"),
        }
    }
    assert!(failed >= 2, "fsck made only {failed} ranged reads");
}

/// Regression for issue X4 (pack listings accepted upper-case names): a copy of a pack under
/// its upper-case name is not a pack. `repair index` indexes each pack once, under its real
/// name; fsck calls the stray foreign (a warning), and prune leaves it alone.
#[test]
fn x4_upper_case_pack_name_is_not_a_pack() {
    let (mem, d, id) = seeded_repo();
    let inner: Arc<dyn Backend> = mem.clone();
    let packs = inner.list(ObjectKind::Pack).unwrap();
    let (name, _) = &packs[0];
    let upper = name.to_ascii_uppercase();
    let bytes = inner.get(ObjectKind::Pack, name).unwrap();
    inner.put(ObjectKind::Pack, &upper, &bytes).unwrap();

    let mut repo = open(Arc::clone(&inner));
    let report = dumpvault::ops::repair::repair_index(&mut repo, true, &|_, _, _| {}).unwrap();
    assert_eq!(report.packs_indexed, packs.len());
    let mut repo = open(Arc::clone(&inner));
    let report = fsck(&mut repo, &FsckOptions::default(), &|_, _, _| {}).unwrap();
    assert!(!report.damaged(), "{:?}", report.problems);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.problem == "foreign" && p.id.contains(&upper)),
        "{:?}",
        report.problems
    );
    let r = dumpvault::ops::prune::prune(&mut repo, &Default::default(), false).unwrap();
    assert!(r.plan.unindexed_packs.is_empty(), "{:?}", r.plan);
    assert_eq!(inner.list(ObjectKind::Pack).unwrap().len(), packs.len() + 1);
    assert_eq!(restore_id(inner, &id).unwrap(), d);
}

/// Regression for issue X5 (plain `unlock` deleted unreadable locks): a lock object that does
/// not open (damaged, or written by a newer dumpvault) blocks a backup like a live lock; plain
/// `unlock` leaves it; only `unlock --all` removes it.
#[test]
fn x5_plain_unlock_leaves_an_unreadable_lock() {
    let env = Env::new();
    let junk = noise(300, 5);
    let name = blake3::hash(&junk).to_hex().to_string();
    let locks = env.repo.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::write(locks.join(&name), &junk).unwrap();
    let out = env.run(&["backup", "--name", "x"], &sql_like(100, 5));
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let out = env.run(&["unlock"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(locks.join(&name).exists(), "plain unlock removed it");
    let out = env.run(&["unlock", "--all"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!locks.join(&name).exists());
    env.backup(&sql_like(100, 5), &["--name", "x"]);
}
