//! Damaged repositories: every kind of damage is detected, named, exits 7, and never lets an
//! unverified byte reach the output.

use crate::common::*;

fn env_with_data() -> (Env, Vec<u8>) {
    let env = Env::new();
    let mut data = sql_like(100_000, 11);
    data.extend_from_slice(&noise(500_000, 12));
    env.backup(&data, &["--name", "d"]);
    (env, data)
}

fn only_file(env: &Env, sub: &str) -> std::path::PathBuf {
    let f = env.files_under(sub);
    assert_eq!(f.len(), 1, "{sub}: {f:?}");
    f.into_iter().next().unwrap()
}

fn flip(path: &std::path::Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

fn assert_corrupt_restore(env: &Env, data: &[u8], must_name: &str) {
    let out = env.run(&["--no-cache", "restore", "latest"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(must_name),
        "error must name {must_name}: {err}"
    );
    assert!(
        data.starts_with(&out.stdout) && out.stdout.len() < data.len(),
        "only verified bytes may reach stdout"
    );
    // With -o, nothing at all appears under the output name.
    let o = env.dir.path().join("restored.sql");
    let out = env.run(
        &["--no-cache", "restore", "latest", "-o", o.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(
        !o.exists(),
        "a failed restore must not leave a file under the final name"
    );
    assert_eq!(restore_temp_files(env.dir.path()), 0, "temp file removed");
}

#[test]
fn bit_flip_in_pack_is_named() {
    let (env, data) = env_with_data();
    let pack = only_file(&env, "data");
    flip(&pack, 100_000);
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert_corrupt_restore(&env, &data, &name);
}

#[test]
fn truncated_pack_is_named() {
    let (env, data) = env_with_data();
    let pack = only_file(&env, "data");
    let b = std::fs::read(&pack).unwrap();
    std::fs::write(&pack, &b[..b.len() / 2]).unwrap();
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert_corrupt_restore(&env, &data, &name);
}

#[test]
fn missing_pack_is_reported() {
    let (env, _) = env_with_data();
    let pack = only_file(&env, "data");
    std::fs::remove_file(&pack).unwrap();
    let out = env.run(&["--no-cache", "restore", "latest"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
}

#[test]
fn bit_flip_in_index_is_named() {
    let (env, data) = env_with_data();
    let idx = only_file(&env, "index");
    flip(&idx, 60);
    let name = idx.file_name().unwrap().to_string_lossy().into_owned();
    assert_corrupt_restore(&env, &data, &name);
}

#[test]
fn bit_flip_in_snapshot_is_named() {
    let (env, _) = env_with_data();
    let snap = only_file(&env, "snapshots");
    flip(&snap, 40);
    let out = env.run(&["--no-cache", "snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let name = snap.file_name().unwrap().to_string_lossy().into_owned();
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
}

#[test]
fn tampered_object_renamed_to_its_new_hash_still_fails_authentication() {
    // An attacker who rewrites a snapshot and renames it to the BLAKE3 of the new bytes passes
    // the name check; the AEAD must still catch it.
    let (env, _) = env_with_data();
    let snap = only_file(&env, "snapshots");
    let mut b = std::fs::read(&snap).unwrap();
    let n = b.len();
    b[n - 20] ^= 1;
    std::fs::remove_file(&snap).unwrap();
    let new = snap.with_file_name(blake3::hash(&b).to_hex().as_str());
    std::fs::write(&new, &b).unwrap();
    let out = env.run(&["--no-cache", "snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(stderr(&out).contains("authentication"), "{}", stderr(&out));
}

#[test]
fn damaged_only_key_file_is_reported_as_corrupt_not_wrong_password() {
    let (env, _) = env_with_data();
    let key = only_file(&env, "keys");
    flip(&key, 20);
    let out = env.run(&["snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(stderr(&out).contains("key"), "{}", stderr(&out));
}

#[test]
fn swapped_blob_between_packs_fails() {
    // Replace the pack with another repository's pack of the same name layout: the header
    // does not open under this repository's key.
    let (env, data) = env_with_data();
    let other = Env::new();
    other.backup(&data, &["--name", "d"]);
    let mine = only_file(&env, "data");
    let theirs = only_file(&other, "data");
    std::fs::copy(&theirs, &mine).unwrap();
    let name = mine.file_name().unwrap().to_string_lossy().into_owned();
    assert_corrupt_restore(&env, &data, &name);
}

/// Two snapshots of series `s`: an old one (a.sql, 2024) and the newest (b.sql), whose
/// snapshot object is then damaged as in the repro (one byte at offset 100).
fn newest_snapshot_damaged() -> (Env, Vec<u8>, String, String) {
    let env = Env::new();
    let a = sql_like(2_000, 21);
    let b = sql_like(2_000, 22);
    let old = env.backup(&a, &["--name", "s", "--time", "2024-01-01"]);
    let new = env.backup(&b, &["--name", "s"]);
    flip(&env.repo.join("snapshots").join(&new), 100);
    (env, a, old, new)
}

#[test]
fn restore_latest_fails_when_the_newest_snapshot_is_damaged_instead_of_restoring_an_older_one() {
    let (env, a, _old, new) = newest_snapshot_damaged();
    for cache in [&[][..], &["--no-cache"][..]] {
        let mut args = cache.to_vec();
        args.extend(["restore", "latest", "--name", "s"]);
        let out = env.run(&args, b"");
        assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "no byte of an older snapshot");
        assert!(stderr(&out).contains(&new), "names it: {}", stderr(&out));
    }
    // `verify latest` and `copy latest` resolve the same way.
    let out = env.run(&["verify", "latest", "--name", "s", "--", "cat"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(stderr(&out).contains(&new), "{}", stderr(&out));
    let target = Env::new();
    let out = env
        .cmd()
        .env("DUMPVAULT_TO_PASSWORD", PASSWORD)
        .args(["copy", "latest", "--to", &target.location])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(target.files_under("snapshots").is_empty(), "nothing copied");
    // The old behaviour only when asked for, and loudly.
    let out = env.run(&["restore", "latest", "--name", "s", "--skip-damaged"], b"");
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    assert_eq!(out.stdout, a);
    assert!(stderr(&out).contains(&new), "warns: {}", stderr(&out));
}

#[test]
fn damaged_snapshot_named_by_id_is_damage_not_no_snapshot_matches() {
    let (env, _a, _old, new) = newest_snapshot_damaged();
    for args in [
        vec!["restore", &new[..12]],
        vec!["restore", &new[..], "--skip-damaged"],
        vec!["verify", &new[..12], "--", "cat"],
    ] {
        let out = env.run(&args, b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_CORRUPT),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(&new), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn one_damaged_snapshot_no_longer_hides_the_healthy_ones_from_snapshots_and_stats() {
    let (env, a, old, new) = newest_snapshot_damaged();
    let out = env.run(&["snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(table.contains(&old[..8]), "healthy one listed: {table}");
    assert!(!table.contains(&new[..8]), "{table}");
    assert!(stderr(&out).contains(&new), "{}", stderr(&out));

    let out = env.run(&["snapshots", "--json"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["id"], old.as_str());
    assert_eq!(v[0]["name"], "s");
    assert_eq!(v[1]["id"], new.as_str());
    assert_eq!(v[1]["damaged"], true);
    assert!(v[1]["error"].as_str().unwrap().contains(&new));

    let out = env.run(&["stats"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.contains("snapshots      1\n"), "{text}");
    assert!(stderr(&out).contains(&new), "{}", stderr(&out));
    let out = env.run(&["stats", "--json"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["snapshots"], 1);
    assert_eq!(s["logical_bytes"], a.len() as u64);
    assert_eq!(s["damaged_snapshots"][0]["id"], new.as_str());
}
