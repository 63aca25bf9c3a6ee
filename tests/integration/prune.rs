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
        "prune:after-repack",
        "prune:after-index",
        "prune:after-index-delete",
        "prune:mid-pack-delete",
    ] {
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
        // A second prune completes the job (the dead process's lock is recognized as stale).
        let out = env.run(&["prune", "--max-unused", "0%"], b"");
        assert!(
            out.status.success(),
            "{point}: second prune: {}",
            stderr(&out)
        );
        let out = env.run(&["fsck", "--json"], b"");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true, "{point}");
        assert!(
            report["problems"].as_array().unwrap().is_empty(),
            "{point}: leftovers after the second prune: {}",
            report["problems"]
        );
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
