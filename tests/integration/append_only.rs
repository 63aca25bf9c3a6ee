//! Append-only operation (issue 15 item 4): with `--append-only` a local repository behaves as
//! one reached with S3 credentials that may PUT but not DELETE outside `locks/`: backup,
//! restore, verify and fsck work; forget, prune and key remove fail with a clear error and
//! change nothing. (The S3 side, through the refusing proxy, is in `s3proxy.rs`.)
//! Also: `copy` carries the drill records (`verifications/`) to the target (item 5b).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::common::*;

fn map(fp: Vec<(PathBuf, Vec<u8>)>) -> BTreeMap<PathBuf, Vec<u8>> {
    fp.into_iter().collect()
}

/// Assert a refused command: exit 1 and a message that names the append-only refusal.
fn refused(out: &std::process::Output, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(out));
    assert!(
        stderr(out).contains("append-only: refused to delete"),
        "{what}: {}",
        stderr(out)
    );
}

#[test]
fn append_only_flag_allows_backup_restore_verify_fsck_and_refuses_deletes() {
    let env = Env::new();
    let old = noise(400_000, 1);
    let old_id = env.backup(&old, &["--name", "s"]);
    let mut ao = env.cmd();
    ao.env("DUMPVAULT_APPEND_ONLY", "true");

    // Everything a database server's nightly job does works.
    let new = sql_like(5_000, 2);
    let out = run_with(env.cmd(), &["--append-only", "backup", "--name", "s"], &new);
    assert!(out.status.success(), "backup: {}", stderr(&out));
    let new_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = run_with(env.cmd(), &["--append-only", "restore", &new_id], b"");
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert!(out.stdout == new);
    let out = run_with(
        env.cmd(),
        &["--append-only", "verify", &new_id, "--", "cat"],
        b"",
    );
    assert!(out.status.success(), "verify: {}", stderr(&out));
    // Through the environment variable as well.
    let out = run_with(ao, &["fsck", "--read-data"], b"");
    assert!(out.status.success(), "fsck: {}", stderr(&out));

    // forget: its first snapshot deletion is refused; nothing changes.
    let before = map(env.fingerprint());
    let out = env.run(&["--append-only", "forget", "--keep-last", "1"], b"");
    refused(&out, "forget");
    assert!(stderr(&out).contains("snapshot"), "{}", stderr(&out));
    assert_eq!(
        map(env.fingerprint()),
        before,
        "forget changed the repository"
    );

    // key remove: refused, the key file stays.
    env.add_key("second password");
    let keys_before: Vec<_> = env.files_under("keys");
    let before = map(env.fingerprint());
    let second = keys_before
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .find(|n| {
            // The key in use is the one the default password opens; the other is removable.
            let out = env.run(&["--append-only", "key", "remove", &n[..12]], b"");
            out.status.code() == Some(1) && stderr(&out).contains("append-only")
        });
    assert!(second.is_some(), "key remove was not refused");
    assert_eq!(
        map(env.fingerprint()),
        before,
        "key remove changed the repository"
    );

    // prune after a forget done with the full rights: refused; nothing is deleted or
    // rewritten. (Prune writes its superseding index file before it deletes the old ones, so
    // that one new object may appear: the state a crash at that point leaves, which the next
    // prune with full rights finishes.)
    let out = env.run(&["forget", "--keep-last", "1"], b"");
    assert!(out.status.success(), "forget: {}", stderr(&out));
    let before = map(env.fingerprint());
    let out = env.run(&["--append-only", "prune"], b"");
    refused(&out, "prune");
    let after = map(env.fingerprint());
    for (p, b) in &before {
        assert!(
            after.get(p) == Some(b),
            "prune deleted or changed {}",
            p.display()
        );
    }
    let added: Vec<_> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(
        added.iter().all(|p| p.parent().unwrap().ends_with("index")),
        "prune added more than an index file: {added:?}"
    );
    assert!(env.files_under("locks").is_empty(), "locks released");

    // The repository is intact, and the full rights finish the job.
    let out = env.run(&["fsck", "--read-data"], b"");
    assert!(out.status.success(), "fsck: {}", stderr(&out));
    assert!(env.restore(&[&new_id]) == new);
    let out = env.run(&["prune"], b"");
    assert!(out.status.success(), "prune: {}", stderr(&out));
    let out = env.run(&["restore", &old_id], b"");
    assert_eq!(out.status.code(), Some(9), "old snapshot forgotten");
    let out = env.run(&["fsck", "--read-data"], b"");
    assert!(out.status.success(), "fsck after prune: {}", stderr(&out));
}

#[test]
fn copy_carries_verification_records() {
    let src = Env::new();
    let dst = Env::new();
    let a = src.backup(&sql_like(3_000, 7), &["--name", "db"]);
    let b = src.backup(&sql_like(3_000, 8), &["--name", "db"]);
    // One passing drill of `a`, a failing one of `b`.
    let out = src.run(&["verify", &a, "--", "cat"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = src.run(&["verify", &b, "--", "false"], b"");
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));

    let copy = |what: &str| {
        let mut c = src.cmd();
        c.env("DUMPVAULT_TO_PASSWORD", PASSWORD);
        let out = run_with(c, &["--json", "copy", "--to", &dst.location], b"");
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let r = copy("first copy");
    assert_eq!(r["verifications_copied"], 2, "{r}");

    // The target's listing shows the same verdicts for the copied snapshots, under the
    // target's ids (a copied snapshot has a new id there).
    let last = |env: &Env| -> BTreeMap<String, serde_json::Value> {
        env.snapshots_json(&[])
            .into_iter()
            .map(|s| {
                // Keyed by the snapshot's time: ids differ per repository.
                let v = s["last_verification"].clone();
                (s["time"].as_str().unwrap().to_string(), v)
            })
            .collect()
    };
    let (s, d) = (last(&src), last(&dst));
    assert_eq!(s.len(), 2);
    assert_eq!(s, d, "target shows the source's drill verdicts");
    assert!(d.values().any(|v| v["ok"] == true) && d.values().any(|v| v["ok"] == false));
    let tgt: Vec<String> = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["target_id"].as_str().unwrap().to_string())
        .collect();
    assert!(!tgt.contains(&a) && !tgt.contains(&b), "ids differ: {r}");
    assert_eq!(dst.files_under("verifications").len(), 2);

    // Re-running copies nothing twice; a drill run on the source since does reach the target.
    let r = copy("second copy");
    assert_eq!(r["verifications_copied"], 0, "{r}");
    assert_eq!(dst.files_under("verifications").len(), 2);
    let out = src.run(&["verify", &b, "--", "cat"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let r = copy("third copy");
    assert_eq!(r["verifications_copied"], 1, "{r}");
    assert_eq!(last(&src), last(&dst));
    // The records are sealed under the target's key: the target's fsck accepts them.
    let out = dst.run(&["fsck"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
}
