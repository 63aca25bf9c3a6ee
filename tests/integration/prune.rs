//! forget + prune end to end: the acceptance scenario (60 daily snapshots over five months),
//! crashes at every step of prune, prune beside concurrent backups, and refusal on damage.

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, NaiveDate, TimeZone, Utc};

use crate::common::*;

/// Day `i`'s dump: a table that grows a little and changes a few rows each day.
fn day_dump(i: usize) -> Vec<u8> {
    let mut d = sql_like(20_000 + i * 300, 77);
    // A few scattered "updates" so each day differs in the middle, not only at the end.
    for k in 0..3 {
        let at = (i * 7919 + k * 104_729) % (d.len() - 40);
        d[at..at + 8].copy_from_slice(format!("{:08}", i * 10 + k).as_bytes());
    }
    d
}

fn repo_bytes(env: &Env) -> u64 {
    env.files_under("data")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn sixty_daily_snapshots_forget_gfs_prune_keeps_exactly_the_predicted_set() {
    let env = Env::new();
    // Sixty snapshots, one every 2.5 days (alternating 2 and 3 days) over five months.
    let start = NaiveDate::from_ymd_opt(2024, 1, 3).unwrap();
    let mut dates = Vec::new();
    let mut day = 0i64;
    for i in 0..60 {
        let d = start + Duration::days(day);
        dates.push(d);
        env.backup(
            &day_dump(i),
            &["--name", "shop", "--time", &format!("{d} 02:00:00")],
        );
        day += if i % 2 == 0 { 2 } else { 3 };
    }
    assert!(
        dates[59] > NaiveDate::from_ymd_opt(2024, 5, 20).unwrap(),
        "spans five months"
    );
    let before = repo_bytes(&env);

    // The documented semantics, computed independently: newest per bucket, N newest buckets.
    let newest_first: Vec<NaiveDate> = dates.iter().rev().copied().collect();
    let pick = |key: &dyn Fn(NaiveDate) -> String, n: usize| -> BTreeSet<NaiveDate> {
        let mut seen = Vec::new();
        let mut out = BTreeSet::new();
        for d in &newest_first {
            let k = key(*d);
            if !seen.contains(&k) {
                if seen.len() == n {
                    break;
                }
                seen.push(k);
                out.insert(*d);
            }
        }
        out
    };
    let mut expected = pick(&|d| d.to_string(), 7);
    expected.extend(pick(&|d| format!("{:?}", d.iso_week()), 4));
    expected.extend(pick(&|d| format!("{}-{}", d.year(), d.month()), 6));

    let out = env.run(
        &[
            "forget",
            "--keep-daily",
            "7",
            "--keep-weekly",
            "4",
            "--keep-monthly",
            "6",
            "--prune",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let kept: BTreeSet<NaiveDate> = env
        .snapshots_json(&[])
        .iter()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s["time"].as_str().unwrap())
                .unwrap()
                .date_naive()
        })
        .collect();
    assert_eq!(kept, expected);
    // 7 daily + older weekly/monthly representatives; a fixed, checkable number.
    assert_eq!(kept.len(), expected.len());
    let after = repo_bytes(&env);
    assert!(
        after < before,
        "the repository must shrink: {before} -> {after}"
    );

    // Every kept snapshot restores byte-exact.
    for s in env.snapshots_json(&[]) {
        let t = chrono::DateTime::parse_from_rfc3339(s["time"].as_str().unwrap()).unwrap();
        let i = dates.iter().position(|d| *d == t.date_naive()).unwrap();
        assert_eq!(
            env.restore(&[s["id"].as_str().unwrap()]),
            day_dump(i),
            "day {i}"
        );
    }
    let out = env.run(&["fsck", "--read-data", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn forget_dry_run_and_empty_policy_change_nothing() {
    let env = Env::new();
    for i in 0..4 {
        env.backup(
            &day_dump(i),
            &[
                "--name",
                "s",
                "--time",
                &format!("2024-02-0{} 01:00:00", i + 1),
            ],
        );
    }
    let before = env.fingerprint();
    let out = env.run(&["forget", "--keep-last", "1", "--dry-run", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["keep"], 1);
    assert_eq!(plan["remove"], 3);
    assert_eq!(plan["removed"], false);
    let snaps = &plan["groups"][0]["snapshots"];
    assert_eq!(snaps[0]["keep"], true);
    assert!(snaps[0]["reasons"][0].as_str().unwrap().contains("newest"));
    let out = env.run(&["forget"], b"");
    assert_eq!(out.status.code(), Some(2), "empty policy: {}", stderr(&out));
    let out = env.run(&["prune", "--dry-run"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.fingerprint(), before);
}

#[test]
fn prune_killed_at_every_step_leaves_a_consistent_repository() {
    for point in [
        "prune:after-unindexed-delete",
        "prune:after-free-index",
        "prune:after-free-index-delete",
        "prune:after-repack",
        "prune:after-index",
        "prune:after-index-delete",
        "prune:mid-pack-delete",
        "prune:mid-pack-delete@2",
    ] {
        let env = Env::new();
        // A series no snapshot will need (its pack is wholly unused: deleted first)...
        let gone = env.backup(&noise(200_000, 3), &["--name", "gone"]);
        for i in 0..6 {
            env.backup(
                &day_dump(i * 5),
                &[
                    "--name",
                    "s",
                    "--time",
                    &format!("2024-03-0{} 01:00:00", i + 1),
                ],
            );
        }
        std::fs::remove_file(env.repo.join("snapshots").join(&gone)).unwrap();
        // ... and old snapshots of `s`, whose packs are partly used (repacked).
        let out = env.run(&["forget", "--keep-last", "2"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let kept: Vec<String> = env
            .snapshots_json(&[])
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        let expect: Vec<Vec<u8>> = kept.iter().map(|id| env.restore(&[id])).collect();
        // max-unused 0% forces repacking too, so every step has work.
        let out = env
            .cmd()
            .env("DUMPVAULT_FAILPOINT", point)
            .args(["prune", "--max-unused", "0%"])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the failpoint must kill prune"
        );
        // Consistent: no damage (leftovers are warnings), every snapshot restores.
        let out = env.run(&["--no-cache", "fsck", "--read-data"], b"");
        assert!(
            out.status.success(),
            "{point}: fsck after crash: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        for (id, want) in kept.iter().zip(&expect) {
            assert_eq!(&env.restore(&["--no-cache", id][..]), want, "{point}");
        }
        // A second prune completes the job (the dead process's lock is recognized as stale),
        // once the leftovers are past the margin for unindexed packs (issue X15).
        second_prune_leaves_no_problem(&env, point);
        for (id, want) in kept.iter().zip(&expect) {
            assert_eq!(&env.restore(&[id]), want, "{point}");
        }
    }
}

#[test]
fn prune_refuses_when_a_referenced_pack_is_missing() {
    let env = Env::new();
    env.backup(&day_dump(1), &["--name", "a"]);
    env.backup(&noise(300_000, 9), &["--name", "b"]);
    env.run(&["forget", "--keep-last", "1", "--name", "a"], b"");
    let packs = env.files_under("data");
    std::fs::remove_file(&packs[0]).unwrap();
    let before = env.fingerprint();
    let out = env.run(&["prune"], b"");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was deleted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.fingerprint(), before, "prune must delete nothing");
}

#[test]
fn backups_running_beside_prune_lose_nothing() {
    let env = Env::new();
    for i in 0..3 {
        env.backup(
            &day_dump(i),
            &[
                "--name",
                "s",
                "--time",
                &format!("2024-04-0{} 01:00:00", i + 1),
            ],
        );
    }
    let repo = env.repo.clone();
    let cache = env.cache.clone();
    let writer = std::thread::spawn(move || {
        let mut ids = Vec::new();
        for i in 3..11 {
            let mut c = std::process::Command::new(bin());
            c.env("DUMPVAULT_REPO", &repo)
                .env("DUMPVAULT_PASSWORD", PASSWORD)
                .env("DUMPVAULT_CACHE_DIR", &cache);
            let out = run_with(
                c,
                &[
                    "--lock-wait",
                    "120s",
                    "backup",
                    "--name",
                    "s",
                    "--time",
                    &format!("2024-04-{:02} 01:00:00", i + 1),
                ],
                &day_dump(i),
            );
            assert!(out.status.success(), "backup {i}: {}", stderr(&out));
            ids.push((i, String::from_utf8(out.stdout).unwrap().trim().to_string()));
        }
        ids
    });
    for _ in 0..6 {
        let out = env.run(
            &[
                "--lock-wait",
                "120s",
                "forget",
                "--keep-last",
                "3",
                "--prune",
                "--max-unused",
                "0%",
            ],
            b"",
        );
        assert!(out.status.success(), "forget --prune: {}", stderr(&out));
    }
    let written = writer.join().unwrap();
    // Every snapshot that exists restores byte-exact, and the newest ones are all there.
    let snaps = env.snapshots_json(&[]);
    assert!(!snaps.is_empty());
    for s in &snaps {
        let id = s["id"].as_str().unwrap();
        let t = s["time"].as_str().unwrap();
        let day: usize = t[8..10].parse::<usize>().unwrap() - 1;
        assert_eq!(env.restore(&[id]), day_dump(day), "snapshot of day {day}");
    }
    let (last_i, last_id) = written.last().unwrap();
    assert_eq!(env.restore(&[last_id]), day_dump(*last_i));
    let out = env.run(&["fsck", "--read-data"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = Utc.timestamp_opt(0, 0);
}

/// A repository where prune has packs to delete and to repack (six days, the last two kept,
/// `--max-unused 0%` on the command line): the kept snapshots' ids and their bytes.
fn env_with_work_for_prune() -> (Env, Vec<(String, Vec<u8>)>) {
    let env = Env::new();
    for i in 0..6 {
        env.backup(
            &day_dump(i * 5),
            &[
                "--name",
                "s",
                "--time",
                &format!("2024-03-0{} 01:00:00", i + 1),
            ],
        );
    }
    let kept = forget_all_but_last_two(&env);
    (env, kept)
}

fn send(pid: u32, sig: i32) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Poll (no fixed sleep) until `cond` holds; panics after 30 s.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed().as_secs() < 30, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Regression for "prune ignores SIGINT and SIGTERM" (issue 17): it finished and exited 0.
/// Now the first signal stops it at the next safe point with exit 130, the lock released, a
/// repository fsck calls intact, every kept snapshot restorable, and a second prune finishes.
/// SIGINT lands after the first repacked pack is stored (prune waits there, via its test
/// hook, until the signal comes, so the test does not race it); SIGTERM right after planning,
/// before anything changed.
#[test]
fn prune_ignores_sigint_and_sigterm() {
    for (sig, pause) in [
        (libc::SIGINT, "prune:new-pack"),
        (libc::SIGTERM, "prune:planned"),
    ] {
        let ctx = format!("signal {sig} at {pause}");
        let (env, kept) = env_with_work_for_prune();
        let packs_before: BTreeSet<_> = env.files_under("data").into_iter().collect();
        let before = env.fingerprint();
        let child = env
            .cmd()
            .env("DUMPVAULT_PRUNE_PAUSE", pause)
            .args(["prune", "--max-unused", "0%"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if pause == "prune:new-pack" {
            // Under way: a pack that was not there before is stored.
            wait_until("the first repacked pack", || {
                env.files_under("data")
                    .iter()
                    .any(|p| !packs_before.contains(p))
            });
        } else {
            wait_until("prune's lock", || !env.files_under("locks").is_empty());
        }
        send(child.id(), sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(EXIT_INTERRUPTED),
            "{ctx}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("interrupted"),
            "{ctx}: {}",
            stderr(&out)
        );
        assert!(env.files_under("locks").is_empty(), "{ctx}: lock released");
        if pause == "prune:planned" {
            assert_eq!(env.fingerprint(), before, "{ctx}: nothing changed");
        } else {
            // The free phase ran first: some packs are gone, one new (unindexed) pack is there.
            assert_ne!(env.fingerprint(), before, "{ctx}: prune was under way");
        }
        let out = env.run(&["--no-cache", "fsck", "--read-data"], b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_OK),
            "{ctx}: fsck: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        for (id, want) in &kept {
            assert!(
                &env.restore(&["--no-cache", id]) == want,
                "{ctx}: {id} byte-exact"
            );
        }
        // The new pack left unindexed is deleted once past the margin (issue X15).
        second_prune_leaves_no_problem(&env, &ctx);
        for (id, want) in &kept {
            assert!(&env.restore(&[id]) == want, "{ctx}: {id} after prune");
        }
    }
}

mod full_disk {
    //! prune on a store that refuses every new pack (a full disk, as the fault backend plays
    //! it): the library, so the refusals are exact.

    use std::collections::BTreeSet;
    use std::sync::Arc;

    use dumpvault::backend::fault::{Fault, FaultBackend, Op, Rule};
    use dumpvault::backend::Backend;
    use dumpvault::error::{Error, ObjectKind};
    use dumpvault::id::PackId;
    use dumpvault::ops::backup::{backup, BackupOptions};
    use dumpvault::ops::fsck::{fsck, FsckOptions, Severity, Subset};
    use dumpvault::ops::prune::{self, PruneOptions};
    use dumpvault::ops::restore::restore;
    use dumpvault::repo::{OpenOptions, Repo};
    use dumpvault::snapshot::{Filter, Source};

    use crate::common::*;

    const PW: &[u8] = b"pw";

    fn open(backend: Arc<dyn Backend>) -> Repo {
        Repo::open(backend, PW, &OpenOptions::default()).unwrap()
    }

    fn opts(name: &str) -> BackupOptions {
        BackupOptions {
            name: name.into(),
            host: "test".into(),
            stream_name: "stdin".into(),
            ..Default::default()
        }
    }

    fn packs(backend: &dyn Backend) -> BTreeSet<PackId> {
        backend
            .list(ObjectKind::Pack)
            .unwrap()
            .iter()
            .map(|(n, _)| n.parse().unwrap())
            .collect()
    }

    fn restores(backend: Arc<dyn Backend>, id: &str, want: &[u8], ctx: &str) {
        let mut repo = open(backend);
        let snap = repo.find_snapshot(id, &Filter::default()).unwrap();
        let mut out = Vec::new();
        restore(&mut repo, &snap, None, &mut out, |_| {}).unwrap();
        assert!(out == want, "{ctx}: snapshot {id} byte-exact");
    }

    fn no_damage(backend: Arc<dyn Backend>, ctx: &str) -> usize {
        let mut repo = open(backend);
        let r = fsck(
            &mut repo,
            &FsckOptions {
                read_data: Some(Subset::All),
            },
            &|_, _, _| {},
        )
        .unwrap();
        let damage: Vec<_> = r
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Damage)
            .collect();
        assert!(damage.is_empty(), "{ctx}: {damage:?}");
        r.problems.len()
    }

    /// Regression for "on a full disk, prune cannot free space" (issue 17): it repacked first,
    /// so the first pack it could not store stopped it before it had deleted anything. Now
    /// the unindexed and wholly unused packs go first; only the repack fails, nothing is lost,
    /// `--max-unused 100%` then succeeds on the same full store, and once there is room a
    /// plain prune finishes the repack.
    #[test]
    fn prune_on_a_full_disk_cannot_free_space() {
        let inner = memory_repo(PW);
        let fb = Arc::new(FaultBackend::new(Arc::clone(&inner), 7));
        let backend: Arc<dyn Backend> = fb.clone();
        let mut repo = open(Arc::clone(&backend));
        // A: ~3.5 MB over several packs. B: A's first half plus new data, so A's first packs
        // stay in use, the pack where B diverges is partly used (repack) and A's later packs
        // are wholly unused once A is gone (delete).
        let (a, b) = dump_and_half(31, 2_500_000, 600_000);
        let ra = backup(&mut repo, &a[..], &opts("a"), || Ok(Source::Stdin), |_| {}).unwrap();
        let rb = backup(&mut repo, &b[..], &opts("b"), || Ok(Source::Stdin), |_| {}).unwrap();
        // C fails at its index write: its packs stay, unindexed.
        let before_c = packs(inner.as_ref());
        fb.add(Rule::nth(Op::Put, 1, Fault::Fail).of(ObjectKind::Index));
        let c = noise(1_500_000, 34);
        backup(&mut repo, &c[..], &opts("c"), || Ok(Source::Stdin), |_| {})
            .expect_err("the index write fails");
        fb.clear();
        let unindexed: BTreeSet<PackId> = packs(inner.as_ref())
            .difference(&before_c)
            .copied()
            .collect();
        assert!(!unindexed.is_empty());
        inner
            .delete(ObjectKind::Snapshot, &ra.snapshot_id.to_hex())
            .unwrap();
        let b_id = rb.snapshot_id.to_hex();

        // C's packs are known to be abandoned: no margin for them.
        let strict = PruneOptions {
            max_unused: 0.0,
            unindexed_margin: std::time::Duration::ZERO,
            ..Default::default()
        };
        let plan = prune::plan(&mut open(Arc::clone(&inner)), &strict).unwrap();
        let delete: BTreeSet<PackId> = plan.delete_packs.iter().copied().collect();
        let repack: BTreeSet<PackId> = plan.repack_packs.iter().copied().collect();
        assert_eq!(
            plan.unindexed_packs
                .iter()
                .copied()
                .collect::<BTreeSet<_>>(),
            unindexed
        );
        assert!(!delete.is_empty() && !repack.is_empty(), "{plan:?}");

        // The store is full: no new pack fits.
        fb.add(
            Rule::nth(Op::Put, 1, Fault::Fail)
                .of(ObjectKind::Pack)
                .times(u64::MAX),
        );
        let e = prune::prune(&mut open(Arc::clone(&backend)), &strict, false)
            .expect_err("the repack cannot store its pack");
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        let left = packs(inner.as_ref());
        assert!(left.is_disjoint(&unindexed), "unindexed packs freed");
        assert!(left.is_disjoint(&delete), "wholly unused packs freed");
        assert!(repack.is_subset(&left), "the packs to repack stay");
        assert_eq!(no_damage(Arc::clone(&inner), "after the failed repack"), 0);
        restores(Arc::clone(&inner), &b_id, &b, "after the failed repack");

        // `--max-unused 100%` only deletes wholly unused packs: on the full store it succeeds
        // (here with nothing left to do) instead of failing.
        let r = prune::prune(
            &mut open(Arc::clone(&backend)),
            &PruneOptions {
                max_unused: 1.0,
                unindexed_margin: std::time::Duration::ZERO,
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert!(r.plan.is_noop(), "{:?}", r.plan);

        // Room again: the repack completes.
        fb.clear();
        let r = prune::prune(&mut open(Arc::clone(&backend)), &strict, false).unwrap();
        assert_eq!(
            r.plan.repack_packs.iter().copied().collect::<BTreeSet<_>>(),
            repack
        );
        assert!(packs(inner.as_ref()).is_disjoint(&repack));
        assert_eq!(no_damage(Arc::clone(&inner), "after the second prune"), 0);
        restores(inner, &b_id, &b, "after the second prune");
    }

    /// Issue 14: prune writes the index of what stays as many files of bounded size (so no
    /// process holds a whole large index), reading the old ones one at a time. Here at most
    /// 20 entries a file (fewer than a pack holds, so each pack gets a file): the kept and repacked packs are spread over several files, the old
    /// files are gone, nothing is damaged, the kept snapshot restores, and a second prune
    /// finds nothing to do.
    #[test]
    fn prune_writes_the_index_as_bounded_files() {
        let inner = memory_repo(PW);
        let mut repo = open(Arc::clone(&inner));
        // A's noise spans four 1 MiB packs, so one of them is wholly A's whatever the random
        // key's cut points: with 1.5 MB it spanned two, and when B's chunk list shared its first
        // tree node with A (the node sits in A's last pack), no pack was wholly unused.
        let (a, b) = dump_and_half(51, 3_000_000, 400_000);
        let ra = backup(&mut repo, &a[..], &opts("a"), || Ok(Source::Stdin), |_| {}).unwrap();
        let rb = backup(&mut repo, &b[..], &opts("b"), || Ok(Source::Stdin), |_| {}).unwrap();
        drop(repo);
        inner
            .delete(ObjectKind::Snapshot, &ra.snapshot_id.to_hex())
            .unwrap();
        let old: BTreeSet<String> = inner
            .list(ObjectKind::Index)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let limit = 20;
        let strict = PruneOptions {
            max_unused: 0.0,
            index_file_entries: limit,
            ..Default::default()
        };
        let r = prune::prune(&mut open(Arc::clone(&inner)), &strict, false).unwrap();
        assert!(
            !r.plan.delete_packs.is_empty() && !r.plan.repack_packs.is_empty(),
            "{:?}",
            r.plan
        );
        assert!(r.new_index_files.len() >= 2, "{:?}", r.new_index_files);
        assert_eq!(r.new_index, r.new_index_files.first().copied());
        let now: BTreeSet<String> = inner
            .list(ObjectKind::Index)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(now.is_disjoint(&old), "old index files deleted");
        let want: BTreeSet<String> = r.new_index_files.iter().map(|i| i.to_hex()).collect();
        assert_eq!(now, want);
        let repo = open(Arc::clone(&inner));
        let mut seen = BTreeSet::new();
        for id in &r.new_index_files {
            let f = repo.read_index_file(id).unwrap();
            let n: usize = f.packs.iter().map(|p| p.entries.len()).sum();
            let biggest = f.packs.iter().map(|p| p.entries.len()).max().unwrap();
            assert!(n <= limit.max(biggest), "{n} entries in {id}");
            for p in &f.packs {
                assert!(seen.insert(p.id), "pack {} listed twice", p.id);
            }
        }
        assert_eq!(no_damage(Arc::clone(&inner), "after prune"), 0);
        restores(
            Arc::clone(&inner),
            &rb.snapshot_id.to_hex(),
            &b,
            "after prune",
        );
        let again = prune::prune(&mut open(Arc::clone(&inner)), &strict, false).unwrap();
        assert!(again.plan.is_noop(), "{:?}", again.plan);
    }
}

/// After a killed or interrupted prune: once the leftovers are past the margin for unindexed
/// packs (issue X15), a second prune succeeds and fsck finds nothing left to report.
fn second_prune_leaves_no_problem(env: &Env, ctx: &str) {
    age_packs(env, PAST_THE_MARGIN);
    let out = env.run(&["prune", "--max-unused", "0%"], b"");
    assert!(
        out.status.success(),
        "{ctx}: second prune: {}",
        stderr(&out)
    );
    let out = env.run(&["fsck", "--json"], b"");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{ctx}");
    assert!(
        report["problems"].as_array().unwrap().is_empty(),
        "{ctx}: leftovers after the second prune: {}",
        report["problems"]
    );
}

/// Set every pack's modification time `by` into the past, as if stored that long ago (past
/// prune's margin for unindexed packs, so a prune deletes the leftovers it is shown).
fn age_packs(env: &Env, by: std::time::Duration) {
    let t = std::time::SystemTime::now() - by;
    for p in env.files_under("data") {
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(t).unwrap();
    }
}

const PAST_THE_MARGIN: std::time::Duration = std::time::Duration::from_secs(3 * 3600);

/// Kill a backup right before its index write: the packs it stored, which no index lists.
fn killed_backup_packs(env: &Env, seed: u64) -> BTreeSet<std::path::PathBuf> {
    let before: BTreeSet<_> = env.files_under("data").into_iter().collect();
    let mut c = env.cmd();
    c.env("DUMPVAULT_FAILPOINT", "backup:before-index");
    let out = run_with(c, &["backup", "--name", "s"], &noise(300_000, seed));
    assert!(!out.status.success(), "the failpoint must kill the backup");
    let new: BTreeSet<_> = env
        .files_under("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new.is_empty(), "the killed backup stored packs");
    new
}

fn pack_name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Regression for issue X15 (prune deleted every unindexed pack at once): the packs of a
/// backup that has not written its index yet (killed here; a backup whose lock went stale
/// looks the same to prune) were deleted by the next prune. Now an unindexed pack younger
/// than the margin (2 × the lock staleness timeout) stays, the plan says why and the CLI
/// counts it; once older than the margin it is deleted, while a younger one beside it stays.
#[test]
fn x15_prune_deletes_unindexed_packs_only_past_the_margin() {
    let env = Env::new();
    let kept = env.backup(&day_dump(1), &["--name", "s"]);
    let first = killed_backup_packs(&env, 5);

    let out = env.run(&["prune", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &r["plan"];
    assert_eq!(plan["unindexed_packs"], serde_json::json!([]), "{plan}");
    let young = plan["kept_unindexed"].as_array().unwrap();
    let names: BTreeSet<String> = young
        .iter()
        .map(|k| k["pack"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, first.iter().map(|p| pack_name(p)).collect());
    for k in young {
        assert!(k["age_secs"].as_u64().unwrap() < 3600, "{k}");
        assert!(
            k["reason"].as_str().unwrap().contains("margin"),
            "{k}: the plan says why"
        );
    }
    assert_eq!(plan["unindexed_margin_secs"], 3600);
    assert!(
        first.iter().all(|p| p.exists()),
        "young unindexed packs stay"
    );

    let out = env.run(&["prune"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "kept {} unindexed packs younger than the 60 min margin",
            first.len()
        )),
        "{text}"
    );
    assert!(first.iter().all(|p| p.exists()));

    // The first leftovers grow old; a second killed backup leaves young ones beside them.
    age_packs(&env, PAST_THE_MARGIN);
    let second = killed_backup_packs(&env, 6);
    let out = env.run(&["prune", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let deleted: BTreeSet<String> = r["plan"]["unindexed_packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(deleted, first.iter().map(|p| pack_name(p)).collect());
    assert!(first.iter().all(|p| !p.exists()), "old unindexed packs go");
    assert!(second.iter().all(|p| p.exists()), "young ones stay");
    assert_eq!(
        r["plan"]["kept_unindexed"].as_array().unwrap().len(),
        second.len()
    );
    let out = env.run(&["fsck"], b"");
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    assert_eq!(env.restore(&[&kept]), day_dump(1));
}

/// Issue X8, fsck half: fsck (which takes no lock) beside a prune paused at each of its
/// steps finds no damage, with and without `--read-data`; the prune then finishes and fsck
/// finds nothing at all. (The race inside a step is tested on the library, in fsck.rs.)
#[test]
fn x8_fsck_beside_a_prune_at_each_step_finds_no_damage() {
    for point in [
        "prune:planned",
        "prune:after-unindexed-delete",
        "prune:after-free-index",
        "prune:after-free-index-delete",
        "prune:new-pack",
        "prune:after-repack",
        "prune:after-index",
        "prune:after-index-delete",
    ] {
        let (env, kept) = env_with_work_for_prune();
        // A series no snapshot needs (a wholly unused pack: the free-index steps have work),
        // and old leftovers (the unindexed step has work too).
        let gone = env.backup(&noise(200_000, 3), &["--name", "gone"]);
        std::fs::remove_file(env.repo.join("snapshots").join(&gone)).unwrap();
        killed_backup_packs(&env, 8);
        age_packs(&env, PAST_THE_MARGIN);
        let resume = env.dir.path().join("resume");
        let paused = env.dir.path().join("resume.paused");
        let child = env
            .cmd()
            .env("DUMPVAULT_PRUNE_PAUSE", point)
            .env("DUMPVAULT_PRUNE_RESUME", &resume)
            .args(["prune", "--max-unused", "0%"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until(point, || paused.exists());
        for args in [
            &["--no-cache", "fsck"][..],
            &["--no-cache", "fsck", "--read-data"],
        ] {
            let out = env.run(args, b"");
            assert_eq!(
                out.status.code(),
                Some(EXIT_OK),
                "{point}: {args:?} beside prune: {}{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            );
        }
        for (id, want) in &kept {
            assert!(&env.restore(&["--no-cache", id]) == want, "{point}: {id}");
        }
        std::fs::write(&resume, b"").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{point}: prune: {}", stderr(&out));
        let out = env.run(&["fsck", "--read-data", "--json"], b"");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true, "{point}");
        assert_eq!(report["problems"], serde_json::json!([]), "{point}");
    }
}

/// Regression for issue X18 (forget planned from a listing taken without a lock): its shared
/// lock is now held from before the listing it plans from until its last deletion, so an
/// exclusive operation (here prune) cannot run between the judgement and the deletions,
/// while a backup (shared) still can; the snapshot it commits then is not in the plan and
/// stays.
#[test]
fn x18_forget_plans_and_deletes_under_one_lock() {
    let env = Env::new();
    for i in 0..3 {
        env.backup(
            &day_dump(i),
            &[
                "--name",
                "s",
                "--time",
                &format!("2024-05-0{} 01:00:00", i + 1),
            ],
        );
    }
    let newest = env.snapshots_json(&[]).last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resume = env.dir.path().join("resume");
    let paused = env.dir.path().join("resume.paused");
    let child = env
        .cmd()
        .env("DUMPVAULT_FORGET_PAUSE", "forget:planned")
        .env("DUMPVAULT_FORGET_RESUME", &resume)
        .args(["forget", "--keep-last", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("forget's plan", || paused.exists());
    assert_eq!(
        env.files_under("locks").len(),
        1,
        "forget holds its lock while it plans"
    );
    let out = env.run(&["prune"], b"");
    assert_eq!(
        out.status.code(),
        Some(EXIT_LOCK_HELD),
        "prune between forget's plan and its deletions: {}",
        stderr(&out)
    );
    // A backup commits meanwhile (at an older time, so a fresh listing would judge it).
    let late = env.backup(
        &day_dump(9),
        &["--name", "s", "--time", "2024-04-01 01:00:00"],
    );
    std::fs::write(&resume, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "forget: {}", stderr(&out));
    let left: BTreeSet<String> = env
        .snapshots_json(&[])
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, BTreeSet::from([newest, late]));
    assert!(env.files_under("locks").is_empty());
}

/// Regression: a pack of many small blobs, all of them used, was repacked by every prune,
/// because its own overhead (about 48 bytes of header entry per blob) counted as unused and
/// passed the 5 % `--max-unused` (seen on base backups cut at 8 KiB pages, whose blobs
/// compress to ~0.9 KiB). Nothing unused: nothing to repack, and a second prune agrees.
#[test]
fn prune_does_not_repack_a_fully_used_pack_of_small_blobs() {
    let env = Env::uninit();
    env.init(&[
        "--chunk-min",
        "256",
        "--chunk-avg",
        "1024",
        "--chunk-max",
        "4096",
    ]);
    env.backup(&sql_like(20_000, 41), &["--name", "s"]);
    let before = env.files_under("data");
    for _ in 0..2 {
        let out = env.run(&["prune", "--json"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            r["plan"]["repack_packs"].as_array().map(Vec::len),
            Some(0),
            "{r}"
        );
        assert_eq!(env.files_under("data"), before);
    }
}
