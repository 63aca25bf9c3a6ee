//! The CLI as a user drives it: backups from stdin, files and commands; restores; failures with
//! their documented exit codes; keys; snapshots filters.

use crate::common::*;

#[test]
fn stdin_round_trip_is_byte_exact_and_second_day_dedups() {
    let env = Env::new();
    let day1 = sql_like(200_000, 1);
    let mut day2 = day1.clone();
    // A realistic day: a few rows changed in the middle, new rows appended.
    day2.splice(5_000_000..5_000_010, b"UPDATED!!!".iter().copied());
    day2.extend_from_slice(&sql_like(2_000, 99));
    let id1 = env.backup(&day1, &["--name", "shop", "--tag", "env=prod"]);
    let id2 = env.backup(&day2, &["--name", "shop", "--tag", "env=prod"]);
    assert_ne!(id1, id2);
    assert_eq!(env.restore(&["latest", "--tag", "env=prod"]), day2);
    assert_eq!(env.restore(&[&id1[..12]]), day1);
    let snaps = env.snapshots_json(&["--name", "shop"]);
    assert_eq!(snaps.len(), 2);
    let new1 = snaps[0]["streams"][0]["new_bytes"].as_u64().unwrap();
    let new2 = snaps[1]["streams"][0]["new_bytes"].as_u64().unwrap();
    assert!(new1 > 1_000_000, "first day stores the data: {new1}");
    assert!(
        new2 * 20 < new1,
        "second day must store far less: {new2} vs {new1}"
    );
    assert_eq!(
        snaps[1]["streams"][0]["size"].as_u64().unwrap(),
        day2.len() as u64
    );
    assert_eq!(
        snaps[1]["streams"][0]["blake3"].as_str().unwrap(),
        blake3::hash(&day2).to_hex().as_str()
    );
    assert_eq!(snaps[1]["streams"][0]["source"]["kind"], "stdin");
}

#[test]
fn file_and_command_sources_are_recorded() {
    let env = Env::new();
    let data = sql_like(20_000, 2);
    let f = env.dir.path().join("dump.sql");
    std::fs::write(&f, &data).unwrap();
    let out = env.run(&["backup", f.to_str().unwrap(), "--name", "fromfile"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(
        &[
            "backup",
            "--name",
            "fromcmd",
            "--",
            "cat",
            f.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s = env.snapshots_json(&[]);
    assert_eq!(s[0]["streams"][0]["source"]["kind"], "file");
    assert_eq!(s[1]["streams"][0]["source"]["kind"], "command");
    assert_eq!(s[1]["streams"][0]["source"]["argv"][0], "cat");
    assert_eq!(s[1]["streams"][0]["source"]["exit_status"], 0);
    let o = env.dir.path().join("out.sql");
    let out = env.run(
        &[
            "restore",
            "latest",
            "--name",
            "fromcmd",
            "-o",
            o.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&o).unwrap(), data);
    // The second backup of the same bytes stored nothing new but its chunk list.
    assert_eq!(s[1]["streams"][0]["new_chunks"], 0);
}

#[test]
fn backup_json_counts_new_bytes_before_and_after_compression() {
    let env = Env::new();
    let data = sql_like(20_000, 3);
    let stats = |name: &str| -> serde_json::Value {
        let out = env.run(&["--json", "backup", "--name", name], &data);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["stats"].clone()
    };
    let first = stats("a");
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert_eq!(n(&first, "bytes_read"), data.len() as u64);
    // Every data chunk is new, plus the chunk-list tree: raw bytes are the stream and a tree.
    let tree_raw = n(&first, "new_raw_bytes") - data.len() as u64;
    assert!(
        n(&first, "tree_blobs") >= 1 && tree_raw > 0 && tree_raw < 64 * 1024,
        "{first}"
    );
    // SQL text compresses: sealed bytes are well below the raw ones.
    assert!(
        n(&first, "new_bytes") * 2 < n(&first, "new_raw_bytes"),
        "{first}"
    );
    // The same bytes again: nothing new, before or after compression.
    let again = stats("b");
    assert_eq!(
        (
            n(&again, "new_chunks"),
            n(&again, "new_bytes"),
            n(&again, "new_raw_bytes")
        ),
        (0, 0, 0),
        "{again}"
    );
}

#[test]
fn wrong_password_exits_4_and_writes_nothing() {
    let env = Env::new();
    env.backup(b"some data\n", &["--name", "x"]);
    let before = env.fingerprint();
    for args in [
        vec!["backup", "--name", "x"],
        vec!["snapshots"],
        vec!["restore", "latest"],
    ] {
        assert_wrong_password_refused(&env, &args);
    }
    assert_eq!(
        env.fingerprint(),
        before,
        "a wrong password must change nothing"
    );
}

#[test]
fn failing_producer_leaves_no_snapshot() {
    let env = Env::new();
    env.backup(b"good\n", &["--name", "db"]);
    let before_snaps = env.files_under("snapshots");
    let before_index = env.files_under("index");
    let cases: [&[&str]; 4] = [
        // Writes a lot, then fails: the classic half-finished pg_dump.
        &["sh", "-c", "head -c 3000000 /dev/urandom; exit 1"],
        // Killed by a signal.
        &["sh", "-c", "head -c 100000 /dev/urandom; kill -9 $$"],
        // Succeeds but writes nothing.
        &["true"],
        // Does not exist.
        &["/nonexistent/pg_dump"],
    ];
    for argv in cases {
        let mut args = vec!["backup", "--name", "db", "--"];
        args.extend_from_slice(argv);
        let out = env.run(&args, b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_PRODUCER),
            "{argv:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("producer failed"), "{}", stderr(&out));
    }
    assert_eq!(env.files_under("snapshots"), before_snaps);
    assert_eq!(env.files_under("index"), before_index);
    assert!(env.files_under("locks").is_empty(), "locks released");
    assert_eq!(env.snapshots_json(&[]).len(), 1);
}

#[test]
fn empty_stdin_is_refused_unless_allowed() {
    let env = Env::new();
    let out = env.run(&["backup", "--name", "e"], b"");
    assert_eq!(out.status.code(), Some(EXIT_PRODUCER), "{}", stderr(&out));
    assert!(env.files_under("snapshots").is_empty());
    let id = env.backup(b"", &["--name", "e", "--allow-empty"]);
    assert_eq!(id.len(), 64);
    assert_eq!(env.restore(&["latest"]), b"");
}

#[test]
fn missing_repository_exits_3() {
    let env = Env::uninit();
    let out = env.run(&["snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_NO_REPO), "{}", stderr(&out));
    assert!(!env.repo.exists(), "nothing created");
}

#[test]
fn newer_repository_version_is_refused() {
    let env = Env::new();
    env.backup(b"data\n", &["--name", "x"]);
    let cfg = env.repo.join("config");
    let mut b = std::fs::read(&cfg).unwrap();
    b[8] = 2; // format version 2
    std::fs::write(&cfg, &b).unwrap();
    let before = env.fingerprint();
    for args in [vec!["backup", "--name", "x"], vec!["snapshots"]] {
        let out = env.run(&args, b"more\n");
        assert_eq!(
            out.status.code(),
            Some(EXIT_UNSUPPORTED),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
    }
    assert_eq!(env.fingerprint(), before);
}

#[test]
fn tampered_config_is_detected() {
    let env = Env::new();
    let cfg = env.repo.join("config");
    let mut b = std::fs::read(&cfg).unwrap();
    b[80] ^= 0x01; // pack target: still valid, but the MAC no longer matches
    std::fs::write(&cfg, &b).unwrap();
    let out = env.run(&["snapshots"], b"");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("config"), "{}", stderr(&out));
}

#[test]
fn unknown_snapshot_exits_9() {
    let env = Env::new();
    let out = env.run(&["restore", "latest"], b"");
    assert_eq!(out.status.code(), Some(EXIT_NOT_FOUND), "{}", stderr(&out));
    env.backup(b"x\n", &["--name", "a"]);
    let out = env.run(&["restore", "latest", "--name", "b"], b"");
    assert_eq!(out.status.code(), Some(EXIT_NOT_FOUND), "{}", stderr(&out));
}

#[test]
fn lock_held_exits_5() {
    use dumpvault::backend::local::LocalBackend;
    use dumpvault::repo::{OpenOptions, Repo};
    use std::sync::Arc;
    let env = Env::new();
    let repo = Repo::open(
        Arc::new(LocalBackend::new(&env.repo)),
        PASSWORD.as_bytes(),
        &OpenOptions::default(),
    )
    .unwrap();
    let guard = repo.lock(true, "prune").unwrap();
    let out = env.run(&["backup", "--name", "x"], b"data\n");
    assert_eq!(out.status.code(), Some(EXIT_LOCK_HELD), "{}", stderr(&out));
    assert!(stderr(&out).contains("prune"), "{}", stderr(&out));
    assert!(env.files_under("snapshots").is_empty());
    drop(guard);
    env.backup(b"data\n", &["--name", "x"]);
}

#[test]
fn keys_add_list_remove_passwd() {
    let env = Env::new();
    env.backup(b"secret dump\n", &["--name", "k"]);
    let list = |pw: &str| {
        env.cmd()
            .env("DUMPVAULT_PASSWORD", pw)
            .args(["key", "list", "--json"])
            .output()
            .unwrap()
    };
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&list(PASSWORD).stdout).unwrap();
    assert_eq!(keys.len(), 1);
    let first = keys[0]["id"].as_str().unwrap().to_string();
    // Removing the last key is refused.
    let out = env.run(&["key", "remove", &first[..12]], b"");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("last key"), "{}", stderr(&out));
    // Add a second password, then open with it.
    env.add_key("second");
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&list("second").stdout).unwrap();
    assert_eq!(keys.len(), 2);
    // Remove the first key while opened with the second one.
    let out = env
        .cmd()
        .env("DUMPVAULT_PASSWORD", "second")
        .args(["key", "remove", &first[..12]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list(PASSWORD).status.code(), Some(EXIT_WRONG_PASSWORD));
    // Change the password of the remaining key.
    let out = env
        .cmd()
        .env("DUMPVAULT_PASSWORD", "second")
        .env("DUMPVAULT_NEW_PASSWORD", "third")
        .args([
            "key",
            "passwd",
            "--kdf-memory",
            "19456",
            "--kdf-iterations",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(list("second").status.code(), Some(EXIT_WRONG_PASSWORD));
    let out = env
        .cmd()
        .env("DUMPVAULT_PASSWORD", "third")
        .args(["restore", "latest"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"secret dump\n");
}

#[test]
fn weak_kdf_parameters_are_refused() {
    let env = Env::uninit();
    let out = env.run(
        &["init", "--kdf-memory", "1024", "--kdf-iterations", "1"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!env.repo.join("config").exists());
    assert!(stderr(&out).contains("floor"), "{}", stderr(&out));
}

#[test]
fn password_file_and_command_sources() {
    let env = Env::new();
    let pf = env.dir.path().join("pw");
    std::fs::write(&pf, format!("{PASSWORD}\n")).unwrap();
    let out = env
        .cmd()
        .env_remove("DUMPVAULT_PASSWORD")
        .args(["--password-file", pf.to_str().unwrap(), "snapshots"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env
        .cmd()
        .env_remove("DUMPVAULT_PASSWORD")
        .args([
            "--password-command",
            &format!("echo '{PASSWORD}'"),
            "snapshots",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // No password source and no terminal: a clear usage error, not a hang.
    let out = env
        .cmd()
        .env_remove("DUMPVAULT_PASSWORD")
        .arg("snapshots")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn filters_and_time_override() {
    let env = Env::new();
    env.backup(
        b"a1\n",
        &["--name", "a", "--tag", "env=prod", "--time", "2024-01-05"],
    );
    env.backup(
        b"a2\n",
        &[
            "--name",
            "a",
            "--tag",
            "env=dev",
            "--time",
            "2024-01-06 10:00:00",
        ],
    );
    env.backup(
        b"b1\n",
        &[
            "--name",
            "b",
            "--host",
            "db2",
            "--time",
            "2024-01-07T00:00:00Z",
        ],
    );
    assert_eq!(env.snapshots_json(&[]).len(), 3);
    assert_eq!(env.snapshots_json(&["--name", "a"]).len(), 2);
    assert_eq!(env.snapshots_json(&["--tag", "env=prod"]).len(), 1);
    assert_eq!(env.snapshots_json(&["--host", "db2"]).len(), 1);
    let s = env.snapshots_json(&["--name", "a"]);
    assert_eq!(s[0]["time"], "2024-01-05T00:00:00Z");
    assert_eq!(s[1]["time"], "2024-01-06T10:00:00Z");
    // `latest` is by snapshot time, not by write order.
    assert_eq!(env.restore(&["latest", "--name", "a"]), b"a2\n");
    assert_eq!(env.restore(&["latest", "--tag", "env=prod"]), b"a1\n");
    assert_eq!(env.restore(&["latest"]), b"b1\n");
}

#[test]
fn cache_is_optional_and_stale_cache_is_refreshed() {
    let env = Env::new();
    let d1 = sql_like(30_000, 5);
    env.backup(&d1, &["--name", "c"]);
    // A second writer with its own cache adds a snapshot the first cache has not seen.
    let other_cache = env.dir.path().join("cache2");
    let d2 = sql_like(30_000, 6);
    let out = run_with(
        {
            let mut c = env.cmd();
            c.env("DUMPVAULT_CACHE_DIR", &other_cache);
            c
        },
        &["backup", "--name", "c"],
        &d2,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The first cache is stale; restore through it must still find the new data.
    assert_eq!(env.restore(&["latest"]), d2);
    // Deleting the cache loses nothing.
    std::fs::remove_dir_all(&env.cache).unwrap();
    assert_eq!(env.restore(&["latest"]), d2);
    // And --no-cache works without one.
    let out = env.run(&["--no-cache", "restore", "latest"], b"");
    assert_eq!(out.stdout, d2);
    // A corrupt cache file is replaced, not fatal.
    for f in std::fs::read_dir(&env.cache).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "sqlite") {
            std::fs::write(&p, b"this is not sqlite").unwrap();
        }
    }
    assert_eq!(env.restore(&["latest"]), d2);
}

#[test]
fn sigterm_during_backup_leaves_no_snapshot_and_releases_the_lock() {
    let env = Env::new();
    let mut child = env
        .cmd()
        .args([
            "backup",
            "--name",
            "slow",
            "--",
            "sh",
            "-c",
            "head -c 2000000 /dev/urandom; sleep 30",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the backup holds its lock, then interrupt it.
    let t0 = std::time::Instant::now();
    while env.files_under("locks").is_empty() {
        assert!(t0.elapsed().as_secs() < 20, "backup never took its lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: sending a signal to our own child.
    unsafe { kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert!(
        t0.elapsed().as_secs() < 15,
        "interrupt must not wait for the producer"
    );
    assert_eq!(status.code(), Some(EXIT_INTERRUPTED));
    assert!(env.files_under("snapshots").is_empty());
    assert!(env.files_under("locks").is_empty(), "lock released");
    // The repository is still usable.
    env.backup(b"after\n", &["--name", "slow"]);
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn restore_of_large_stream_through_many_packs() {
    // Several packs (1 MiB target), incompressible and compressible parts, multi-level tree.
    let env = Env::uninit();
    env.init(&[
        "--pack-size",
        "1",
        "--chunk-min",
        "1024",
        "--chunk-avg",
        "4096",
        "--chunk-max",
        "16384",
    ]);
    let mut data = noise(6_000_000, 3);
    data.extend_from_slice(&sql_like(60_000, 4));
    env.backup(&data, &["--name", "big"]);
    assert!(env.files_under("data").len() > 4, "expected several packs");
    assert_eq!(env.restore(&["latest"]), data);
}

/// Regression: restore issued one ranged read per switch between packs, so an incremental
/// snapshot (old chunks in old packs, changed ones in a new pack, alternating) cost a request
/// per changed region — 1,756 GETs for a 292 MB pg_dump day on S3. Reads are now planned per
/// pack in offset order within a batch.
#[test]
fn restore_of_an_incremental_snapshot_reads_each_pack_region_once() {
    let env = Env::new();
    let day0 = noise(3_000_000, 11);
    env.backup(&day0, &["--name", "inc"]);
    // Change one byte every 150 kB: ~20 changed chunks scattered through the stream.
    let mut day1 = day0.clone();
    for at in (75_000..day1.len()).step_by(150_000) {
        day1[at] ^= 0xff;
    }
    env.backup(&day1, &["--name", "inc"]);
    let packs = env.files_under("data").len();
    assert!(packs >= 2, "day 1 must have written a pack of its own");
    let target = env.dir.path().join("restored");
    let out = env.run(
        &[
            "--json",
            "restore",
            "latest",
            "-o",
            target.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&target).unwrap(), day1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reads = v["reads"].as_u64().unwrap();
    // One batch (fewer than 1,024 chunks): one read per pack region at most. The old planner
    // needed about two reads per changed chunk (~40).
    assert!(reads <= packs as u64, "{reads} reads for {packs} packs");
}
