//! The fuzz targets on stable, in every `cargo test`: every file under `fuzz/seeds/<target>/`
//! (and `fuzz/corpus/<target>/` when a local fuzzing run left one) goes through the very body
//! the cargo-fuzz target runs (`fuzz/targets/<target>.rs`, included here), so each target's
//! oracles hold on its corpus; and the model target's script runs under proptest with a fixed
//! seed and a bounded number of cases.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

#[path = "../../fuzz/targets/mod.rs"]
#[allow(dead_code)]
mod targets;

use targets::model::{self, Action, Step, StepFault, FAULTS, OPS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files of one corpus directory, sorted; none if the directory does not exist.
fn inputs(dir: &Path, max_bytes: u64) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.metadata().unwrap().len() <= max_bytes)
        .collect();
    v.sort();
    v
}

#[test]
fn every_seed_replays_through_its_fuzz_target() {
    let mut replayed = 0;
    for (name, run) in targets::ALL {
        let seeds = inputs(&fuzz_dir().join("seeds").join(name), u64::MAX);
        assert!(!seeds.is_empty(), "fuzz/seeds/{name}/ has no seeds");
        // A local corpus can be large; the model target is slow per input. Cap both.
        let cap = if *name == "model" { 10 } else { 2_000 };
        let corpus = inputs(&fuzz_dir().join("corpus").join(name), 64 * 1024);
        for path in seeds.iter().chain(corpus.iter().take(cap)) {
            let data = std::fs::read(path).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "fuzz target {name} failed on {}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 20, "only {replayed} inputs");
}

/// Every Cargo `[[bin]]` of the fuzz crate has a body here, and the other way round, so a
/// new target cannot be left out of the stable replay.
#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "dumpvault-fuzz")
        .collect();
    bins.sort();
    let names: Vec<&str> = targets::ALL.iter().map(|(n, _)| *n).collect();
    assert_eq!(bins, names);
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let action = prop_oneof![
        3 => any::<u8>().prop_map(|variant| Action::Backup { variant }),
        1 => any::<u8>().prop_map(|keep| Action::Forget { keep }),
        1 => any::<bool>().prop_map(|repack_all| Action::Prune { repack_all }),
    ];
    let fault = prop_oneof![
        1 => Just(None),
        1 => (0..OPS.len(), 1u64..12, 0..FAULTS.len()).prop_map(|(o, nth, f)| Some(StepFault {
            op: OPS[o],
            nth,
            fault: FAULTS[f],
        })),
    ];
    (action, fault).prop_map(|(action, fault)| Step { action, fault })
}

/// The model test on stable: backup, forget and prune scripts with one fault per step at
/// most, checked against the model after every step (see `fuzz/targets/model.rs`).
/// Deterministic: a fixed RNG seed; bounded: 24 scripts of up to 8 steps.
#[test]
fn backup_forget_prune_hold_the_model_under_faults() {
    let config = Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (
        proptest::collection::vec(step_strategy(), 1..8),
        any::<u64>(),
    );
    runner
        .run(&strategy, |(steps, seed)| {
            model::check(&steps, seed);
            Ok(())
        })
        .unwrap();
}
