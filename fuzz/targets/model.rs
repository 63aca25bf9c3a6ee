//! A model test of the repository as a whole: a script of `backup`, `forget` and `prune` steps
//! runs through the library API against a `MemoryBackend` behind a `FaultBackend`, each step
//! possibly with one injected fault (a failing call of any kind, a bit flip or a short read),
//! and after every step the repository is compared with a model: the set of snapshots and the
//! bytes of each.
//!
//! Oracles, after every step (faults cleared):
//! - a failed backup or prune leaves exactly the model's snapshots; a failed forget removes
//!   only snapshots its plan removes; a successful step changes the set exactly as the model
//!   says (backup adds one, forget removes its plan's removals, prune none);
//! - a lock is left behind only when the fault was a failed `delete` (the lock release);
//! - every snapshot the model holds restores byte-exact through the same open repository
//!   (a library user keeps one `Repo` across operations, so stale in-memory state is tested).
//!
//! At the end, through a freshly opened repository (index re-read from storage): the same
//! restores, and a full `fsck --read-data` finds no damage (unreferenced packs are allowed).
//!
//! Input layout for the fuzzer (`run`): 4 bytes per step, `op ‖ arg ‖ fault ‖ nth`; see
//! `decode`. The stable test `tests/integration/fuzz_replay.rs` drives `check` with proptest.

use std::collections::BTreeMap;
use std::sync::Arc;

use dumpvault::backend::fault::{Fault, FaultBackend, Op, Rule};
use dumpvault::backend::memory::MemoryBackend;
use dumpvault::backend::Backend;
use dumpvault::crypto::KdfParams;
use dumpvault::error::ObjectKind;
use dumpvault::id::ObjectId;
use dumpvault::ops::backup::{backup, BackupOptions};
use dumpvault::ops::forget::{self, GroupBy};
use dumpvault::ops::fsck::{fsck, FsckOptions, Subset};
use dumpvault::ops::prune::{prune, PruneOptions};
use dumpvault::ops::restore::restore;
use dumpvault::repo::{list_ids, InitOptions, OpenOptions, Repo};
use dumpvault::retention::Policy;
use dumpvault::snapshot::{Filter, SnapshotEntry, Source};

const PW: &[u8] = b"model";

/// One operation of the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Back up `content(variant)` under series `db{variant % 2}`.
    Backup { variant: u8 },
    /// `forget --keep-last keep --group-by name`.
    Forget { keep: u8 },
    /// `prune`, repacking any pack with unused bytes when `repack_all`.
    Prune { repack_all: bool },
}

/// The fault injected while a step runs: the `nth` call of `op` gets `fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFault {
    pub op: Op,
    pub nth: u64,
    pub fault: Fault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub fault: Option<StepFault>,
}

pub const OPS: [Op; 6] = [
    Op::Put,
    Op::Get,
    Op::GetRange,
    Op::List,
    Op::Size,
    Op::Delete,
];
/// The faults the model's oracle holds for. `TruncateWrite` is left out: a backend that
/// reports success for a write it did not do can lose data whatever the client does; its
/// detection is tested on its own (`tests/integration/faults.rs`).
pub const FAULTS: [Fault; 3] = [Fault::Fail, Fault::FlipBit, Fault::ShortRead];
const MAX_STEPS: usize = 12;

/// Script from fuzzer bytes: 4 per step, at most `MAX_STEPS` steps.
pub fn decode(data: &[u8]) -> Vec<Step> {
    data.chunks_exact(4)
        .take(MAX_STEPS)
        .map(|c| {
            let action = match c[0] % 4 {
                0 | 1 => Action::Backup { variant: c[1] },
                2 => Action::Forget { keep: c[1] },
                _ => Action::Prune {
                    repack_all: c[1] & 1 == 1,
                },
            };
            let fault = (c[2] & 1 == 1).then(|| StepFault {
                op: OPS[(c[2] >> 1) as usize % OPS.len()],
                nth: 1 + (c[3] % 16) as u64,
                fault: FAULTS[(c[2] >> 4) as usize % FAULTS.len()],
            });
            Step { action, fault }
        })
        .collect()
}

pub fn run(data: &[u8]) {
    let seed = data.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ b as u64);
    check(&decode(data), seed);
}

/// The stream a backup of `variant` stores: 16 variants in 4 families that share most of
/// their chunks (a common base with a variant-specific stretch), 24 to 96 KiB.
pub fn content(variant: u8) -> Vec<u8> {
    let v = variant % 16;
    let family = (v / 4) as u64;
    let len = 24 * 1024 * (1 + (v % 4) as usize);
    let mut s = 0x5eed_0000 + family;
    let mut out: Vec<u8> = (0..len).map(|_| next(&mut s) as u8).collect();
    let mut t = 0xd1ff_0000 + v as u64;
    let start = (v as usize * 5_000) % (len / 2);
    for b in &mut out[start..start + 3_000] {
        *b = next(&mut t) as u8;
    }
    out
}

fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn snapshot_set(b: &dyn Backend) -> Vec<ObjectId> {
    let mut v = list_ids(b, ObjectKind::Snapshot).expect("memory list");
    v.sort();
    v
}

fn restore_all(repo: &mut Repo, model: &BTreeMap<ObjectId, Vec<u8>>, ctx: &str) {
    for (id, want) in model {
        let snap = SnapshotEntry {
            id: *id,
            snapshot: repo
                .read_snapshot(id)
                .unwrap_or_else(|e| panic!("{ctx}: snapshot {id} unreadable: {e}")),
        };
        let mut out = Vec::new();
        if let Err(e) = restore(repo, &snap, None, &mut out, |_| {}) {
            panic!("{ctx}: snapshot {id} does not restore: {e}");
        }
        assert!(out == *want, "{ctx}: snapshot {id} restored other bytes");
    }
}

/// Run a script and check the model after every step. Panics on any disagreement.
pub fn check(steps: &[Step], seed: u64) {
    let mem = Arc::new(MemoryBackend::default());
    let inner: Arc<dyn Backend> = mem.clone();
    let init = InitOptions {
        kdf: KdfParams::FLOOR,
        pack_target: 1024 * 1024,
        ..Default::default()
    };
    drop(Repo::init(Arc::clone(&inner), PW, &init).expect("init"));
    let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), seed));
    let actor_backend: Arc<dyn Backend> = fb.clone();
    let mut repo = Repo::open(actor_backend, PW, &OpenOptions::default()).expect("open");
    let mut model: BTreeMap<ObjectId, Vec<u8>> = BTreeMap::new();
    let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("valid time");

    for (i, step) in steps.iter().enumerate() {
        let ctx = format!("step {i} {step:?} of {steps:?}");
        let before = snapshot_set(inner.as_ref());
        let injected_before = fb.injected().len();
        if let Some(f) = step.fault {
            fb.add(Rule::nth(f.op, f.nth, f.fault));
        }
        // What the step may remove (forget) and what it adds (backup).
        let mut may_remove: Vec<ObjectId> = Vec::new();
        let outcome: Result<Option<(ObjectId, Vec<u8>)>, dumpvault::Error> = match step.action {
            Action::Backup { variant } => {
                let data = content(variant);
                let opts = BackupOptions {
                    name: format!("db{}", variant % 2),
                    host: "model".into(),
                    stream_name: "stdin".into(),
                    time: Some(t0 + chrono::Duration::hours(i as i64)),
                    ..Default::default()
                };
                backup(&mut repo, &data[..], &opts, || Ok(Source::Stdin), |_| {})
                    .map(|r| Some((r.snapshot_id, data)))
            }
            Action::Forget { keep } => {
                let policy = Policy {
                    last: Some(1 + (keep % 3) as u32),
                    ..Default::default()
                };
                forget::plan(
                    &mut repo,
                    &Filter::default(),
                    &[GroupBy::Name],
                    &policy,
                    t0 + chrono::Duration::days(365),
                )
                .and_then(|mut plan| {
                    for g in &plan.groups {
                        for e in g.snapshots.iter().filter(|e| !e.keep) {
                            may_remove.push(e.id.parse().expect("plan ids are ids"));
                        }
                    }
                    forget::execute(&repo, &mut plan)
                })
                .map(|()| None)
            }
            Action::Prune { repack_all } => {
                let opts = PruneOptions {
                    max_unused: if repack_all { 0.0 } else { 0.05 },
                    ..Default::default()
                };
                prune(&mut repo, &opts, false).map(|_| None)
            }
        };
        fb.clear();
        let injected = &fb.injected()[injected_before..];
        let ctx = format!("{ctx}: {outcome:?}, injected {injected:?}");

        // Locks: only a failed release may leave one; clear it as `unlock` would.
        let locks = inner.list(ObjectKind::Lock).expect("memory list");
        if !locks.is_empty() {
            assert!(
                injected.iter().any(|f| f.op == Op::Delete),
                "{ctx}: lock left behind: {locks:?}"
            );
            for (name, _) in locks {
                inner
                    .delete(ObjectKind::Lock, &name)
                    .expect("memory delete");
            }
        }

        let after = snapshot_set(inner.as_ref());
        match (&step.action, outcome) {
            (_, Err(e)) => {
                assert!(
                    !injected.is_empty(),
                    "{ctx}: failed without an injected fault: {e}"
                );
                // A failed forget may have deleted part of its plan, nothing else.
                for id in &before {
                    assert!(
                        after.contains(id) || may_remove.contains(id),
                        "{ctx}: failed step removed snapshot {id}"
                    );
                }
                assert!(
                    after.iter().all(|id| before.contains(id)),
                    "{ctx}: failed step added a snapshot"
                );
                model.retain(|id, _| after.contains(id));
            }
            (Action::Backup { .. }, Ok(Some((id, data)))) => {
                model.insert(id, data);
            }
            (Action::Forget { .. }, Ok(_)) => {
                for id in &may_remove {
                    model.remove(id);
                }
            }
            (_, Ok(_)) => {}
        }
        let expected: Vec<ObjectId> = model.keys().copied().collect();
        assert_eq!(
            after, expected,
            "{ctx}: snapshot set differs from the model"
        );
        restore_all(&mut repo, &model, &ctx);
    }

    // A fresh view of the storage: no in-memory state carried over.
    drop(repo);
    let mut fresh = Repo::open(inner, PW, &OpenOptions::default()).expect("reopen");
    restore_all(&mut fresh, &model, &format!("fresh repo after {steps:?}"));
    let report = fsck(
        &mut fresh,
        &FsckOptions {
            read_data: Some(Subset::All),
        },
        &|_, _, _| {},
    )
    .expect("fsck runs");
    assert!(
        !report.damaged(),
        "fsck after {steps:?}: {:?}",
        report.problems
    );
}
