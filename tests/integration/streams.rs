//! Multi-stream snapshots (`backup --stream/--stream-cmd`), `copy` between repositories, and
//! the promise that non-terminal stderr carries no progress bar.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

const TARGET_PASSWORD: &str = "a different target password";

fn write(env: &Env, name: &str, data: &[u8]) -> PathBuf {
    let p = env.dir.path().join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Snapshot and index objects: what a commit adds (packs may be left by failed backups).
fn committed(env: &Env) -> (Vec<PathBuf>, Vec<PathBuf>) {
    (env.files_under("snapshots"), env.files_under("index"))
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn two_stream_snapshot_restores_each_stream_byte_exact_by_name() {
    let env = Env::new();
    let globals = b"CREATE ROLE app;\nCREATE ROLE ro;\n".repeat(50);
    let shop = sql_like(60_000, 11);
    let g = write(&env, "globals.sql", &globals);
    let shop_file = write(&env, "shop.sql", &shop);
    let before = committed(&env);
    let cmd = format!("cat '{}'", s(&shop_file));
    let out = env.run(
        &[
            "backup",
            "--name",
            "pg",
            "--tag",
            "env=prod",
            "--stream",
            &format!("globals={}", s(&g)),
            "--stream-cmd",
            &format!("shop={cmd}"),
        ],
        b"",
    );
    let id = ok(&out).trim().to_string();
    assert_eq!(id.len(), 64, "the snapshot id is printed: {id:?}");
    // ONE snapshot and ONE index file for both streams.
    let after = committed(&env);
    assert_eq!(after.0.len(), before.0.len() + 1);
    assert_eq!(after.1.len(), before.1.len() + 1);

    assert_eq!(env.restore(&[&id, "--stream", "globals"]), globals);
    assert_eq!(env.restore(&[&id, "--stream", "shop"]), shop);
    // Without --stream: the first stream, in command-line order.
    assert_eq!(env.restore(&["latest", "--name", "pg"]), globals);
    let out = env.run(&["restore", &id, "--stream", "nope"], b"");
    assert_eq!(out.status.code(), Some(EXIT_USAGE), "{}", stderr(&out));

    let snaps = env.snapshots_json(&["--name", "pg"]);
    assert_eq!(snaps.len(), 1);
    let streams = snaps[0]["streams"].as_array().unwrap();
    let names: Vec<&str> = streams
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["globals", "shop"]);
    assert_eq!(streams[0]["source"]["kind"], "file");
    assert_eq!(streams[0]["size"].as_u64(), Some(globals.len() as u64));
    assert_eq!(streams[1]["source"]["kind"], "command");
    assert_eq!(
        streams[1]["source"]["argv"],
        serde_json::json!(["sh", "-c", cmd])
    );
    assert_eq!(
        streams[1]["blake3"].as_str().unwrap(),
        blake3::hash(&shop).to_hex().as_str()
    );
    // The text listing names the streams of a multi-stream snapshot.
    let text = ok(&env.run(&["snapshots"], b""));
    assert!(
        text.contains("streams: globals (") && text.contains(", shop ("),
        "{text}"
    );
    // restore -o --json says which stream it wrote.
    let o = env.dir.path().join("out.sql");
    let j = ok(&env.run(
        &["--json", "restore", &id, "--stream", "shop", "-o", s(&o)],
        b"",
    ));
    let j: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(j["stream"], "shop");
    assert_eq!(std::fs::read(&o).unwrap(), shop);
}

#[test]
fn stdin_and_command_line_order_of_mixed_stream_flags() {
    let env = Env::new();
    let a = sql_like(3_000, 21);
    let b = sql_like(3_000, 22);
    let c = noise(50_000, 23);
    let fb = write(&env, "b", &b);
    let fc = write(&env, "c", &c);
    let id = ok(&env.run(
        &[
            "backup",
            "--name",
            "mix",
            "--stream-cmd",
            &format!("c=cat '{}'", s(&fc)),
            "--stream",
            "a=-",
            "--stream",
            &format!("b={}", s(&fb)),
        ],
        &a,
    ))
    .trim()
    .to_string();
    let snaps = env.snapshots_json(&["--name", "mix"]);
    let names: Vec<&str> = snaps[0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["c", "a", "b"],
        "streams keep the command-line order"
    );
    assert_eq!(snaps[0]["streams"][1]["source"]["kind"], "stdin");
    for (name, data) in [("a", &a), ("b", &b), ("c", &c)] {
        assert_eq!(
            &env.restore(&[&id, "--stream", name]),
            data,
            "stream {name}"
        );
    }
}

#[test]
fn a_failing_stream_commits_nothing() {
    let env = Env::new();
    env.backup(&sql_like(5_000, 31), &["--name", "pg"]);
    let good = write(&env, "good.sql", &sql_like(40_000, 32));
    let before = committed(&env);
    let marker = env.dir.path().join("third-started");
    let third = format!("third=touch '{}'; echo x", s(&marker));
    let cases: [(&str, String); 4] = [
        ("non-zero exit", format!("bad=cat '{}'; exit 3", s(&good))),
        ("signal", format!("bad=cat '{}'; kill -9 $$", s(&good))),
        ("empty output", "bad=true".into()),
        ("cannot start", "bad=exec /nonexistent/pg_dump".into()),
    ];
    for (what, bad) in cases {
        let out = env.run(
            &[
                "backup",
                "--name",
                "pg",
                "--stream",
                &format!("good={}", s(&good)),
                "--stream-cmd",
                &bad,
                "--stream-cmd",
                &third,
            ],
            b"",
        );
        assert_eq!(
            out.status.code(),
            Some(EXIT_PRODUCER),
            "{what}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("stream \"bad\""),
            "{what}: the error names the stream: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{what}: no snapshot id");
        assert_eq!(
            committed(&env),
            before,
            "{what}: no snapshot, no index file"
        );
        assert!(
            !marker.exists(),
            "{what}: a later producer was never started"
        );
    }
    // A missing file as the second stream: exit 1, still nothing committed.
    let out = env.run(
        &[
            "backup",
            "--name",
            "pg",
            "--stream",
            &format!("good={}", s(&good)),
            "--stream",
            "gone=/nonexistent/dump.sql",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(committed(&env), before);
    // Only unreferenced packs were left: fsck calls the repository intact, and the snapshots
    // that exist still restore.
    let out = env.run(&["fsck"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.snapshots_json(&[]).len(), 1);
}

#[test]
fn stream_flags_are_validated_before_anything_runs() {
    let env = Env::new();
    let f = write(&env, "x", b"data\n");
    let before = env.fingerprint();
    let marker = env.dir.path().join("ran");
    let touch = format!("b=touch '{}'", s(&marker));
    let fx = format!("a={}", s(&f));
    let cases: Vec<Vec<&str>> = vec![
        // duplicate names
        vec!["--name", "n", "--stream", &fx, "--stream-cmd", "a=echo x"],
        // no series name
        vec!["--stream", &fx, "--stream-cmd", &touch],
        // not NAME=VALUE
        vec!["--name", "n", "--stream", "novalue", "--stream-cmd", &touch],
        vec!["--name", "n", "--stream", "=path", "--stream-cmd", &touch],
        // a control character in a name
        vec![
            "--name",
            "n",
            "--stream",
            "a\tb=/dev/null",
            "--stream-cmd",
            &touch,
        ],
        // stdin twice
        vec![
            "--name",
            "n",
            "--stream",
            "a=-",
            "--stream",
            "c=-",
            "--stream-cmd",
            &touch,
        ],
        // mixed with the single-stream forms
        vec!["--name", "n", "--stream-cmd", &touch, s(&f)],
        vec!["--name", "n", "--stream-cmd", &touch, "--", "echo", "x"],
    ];
    for args in cases {
        let mut a = vec!["backup"];
        a.extend_from_slice(&args);
        let out = env.run(&a, b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!marker.exists(), "{args:?}: nothing may run");
    }
    assert_eq!(env.fingerprint(), before);
}

// ---------------------------------------------------------------- copy

/// A second, empty repository with its own password.
fn target_env() -> Env {
    let t = Env::uninit();
    let out = t
        .cmd()
        .env("DUMPVAULT_PASSWORD", TARGET_PASSWORD)
        .args(["init", "--kdf-memory", "19456", "--kdf-iterations", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    t
}

fn target_cmd(t: &Env) -> std::process::Command {
    let mut c = t.cmd();
    c.env("DUMPVAULT_PASSWORD", TARGET_PASSWORD);
    c
}

/// `copy --json` from `src` into `to`; returns the report.
fn copy(src: &Env, to: &Env, args: &[&str]) -> serde_json::Value {
    let mut c = src.cmd();
    c.envs(to.extra_env.iter().map(|(k, v)| (k, v)))
        .env("DUMPVAULT_TO_PASSWORD", TARGET_PASSWORD);
    let mut a = vec!["--json", "copy", "--to", &to.location];
    a.extend_from_slice(args);
    let out = run_with(c, &a, b"");
    serde_json::from_str(&ok(&out)).expect("copy --json is JSON")
}

fn target_snapshots(t: &Env) -> Vec<serde_json::Value> {
    let out = run_with(target_cmd(t), &["snapshots", "--json"], b"");
    serde_json::from_str(&ok(&out)).unwrap()
}

fn target_restore(t: &Env, args: &[&str]) -> Vec<u8> {
    let mut a = vec!["restore"];
    a.extend_from_slice(args);
    let out = run_with(target_cmd(t), &a, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    out.stdout
}

/// Everything copy must preserve, and what it must keep per stream.
fn same_snapshot(a: &serde_json::Value, b: &serde_json::Value) {
    for f in ["time", "name", "host", "tags"] {
        assert_eq!(a[f], b[f], "{f}");
    }
    let strip = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| serde_json::json!([x["name"], x["source"], x["size"], x["blake3"]]))
            .collect()
    };
    assert_eq!(strip(a), strip(b));
}

/// Source repository with three snapshots: two days of "shop" and a two-stream "pg".
fn source_with_history(env: &Env) -> Vec<(String, Vec<u8>)> {
    let day1 = sql_like(80_000, 41);
    let other = noise(200_000, 42);
    let globals = b"CREATE ROLE app;\n".repeat(100);
    let id1 = env.backup(
        &day1,
        &[
            "--name",
            "shop",
            "--tag",
            "env=prod",
            "--time",
            "2026-11-01",
        ],
    );
    let id2 = env.backup(
        &other,
        &[
            "--name",
            "cache",
            "--host",
            "redis1",
            "--time",
            "2026-11-01 03:00",
        ],
    );
    let g = write(env, "globals.sql", &globals);
    let d = write(env, "day1.sql", &day1);
    let id3 = ok(&env.run(
        &[
            "backup",
            "--name",
            "pg",
            "--time",
            "2026-11-01 04:00",
            "--stream",
            &format!("globals={}", s(&g)),
            "--stream",
            &format!("shop={}", s(&d)),
        ],
        b"",
    ))
    .trim()
    .to_string();
    vec![(id1, day1), (id2, other), (id3, globals)]
}

#[test]
fn copy_local_to_local_is_exact_idempotent_and_incremental() {
    let src = Env::new();
    let history = source_with_history(&src);
    let dst = target_env();

    let r = copy(&src, &dst, &[]);
    assert_eq!(r["copied"], 3, "{r}");
    assert_eq!(r["present"], 0);
    let src_snaps = src.snapshots_json(&[]);
    let dst_snaps = target_snapshots(&dst);
    assert_eq!(dst_snaps.len(), 3);
    for (id, data) in &history {
        let entry = r["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} in the report: {r}"));
        assert_eq!(entry["status"], "copied");
        let tid = entry["target_id"].as_str().unwrap();
        let a = src_snaps.iter().find(|x| x["id"] == id.as_str()).unwrap();
        let b = dst_snaps.iter().find(|x| x["id"] == tid).unwrap();
        same_snapshot(a, b);
        // The first stream, byte-exact from the target.
        assert_eq!(&target_restore(&dst, &[tid]), data);
    }
    // Both streams of the two-stream snapshot.
    let pg = r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "pg")
        .unwrap();
    let tid = pg["target_id"].as_str().unwrap();
    assert_eq!(
        target_restore(&dst, &[tid, "--stream", "shop"]),
        history[0].1
    );

    // Again: nothing to copy, and the target does not change at all.
    let before = dst.fingerprint();
    let r2 = copy(&src, &dst, &[]);
    assert_eq!(r2["copied"], 0, "{r2}");
    assert_eq!(r2["present"], 3);
    assert_eq!(r2["new_bytes"], 0);
    assert_eq!(dst.fingerprint(), before);

    // Day 2: a few rows change; copying it sends only the new chunks.
    let mut day2 = history[0].1.clone();
    day2.splice(2_000_000..2_000_010, b"UPDATED!!!".iter().copied());
    day2.extend_from_slice(&sql_like(500, 43));
    src.backup(
        &day2,
        &[
            "--name",
            "shop",
            "--tag",
            "env=prod",
            "--time",
            "2026-11-02",
        ],
    );
    let r3 = copy(&src, &dst, &["latest", "--name", "shop"]);
    assert_eq!(r3["copied"], 1, "{r3}");
    let new = r3["new_bytes"].as_u64().unwrap();
    assert!(
        new * 20 < day2.len() as u64,
        "only new chunks cross: {new} bytes new for a {} byte stream",
        day2.len()
    );
    assert_eq!(r3["bytes_read"].as_u64(), Some(day2.len() as u64));
    assert_eq!(
        target_restore(&dst, &["latest", "--name", "shop", "--tag", "env=prod"]),
        day2
    );
    // The target is sound.
    let out = run_with(target_cmd(&dst), &["fsck", "--read-data"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn copy_filters_password_file_and_text_report() {
    let src = Env::new();
    source_with_history(&src);
    let dst = target_env();
    let pwfile = write(&src, "target-pw", format!("{TARGET_PASSWORD}\n").as_bytes());
    let out = src
        .cmd()
        .env_remove("DUMPVAULT_TO_PASSWORD")
        .args([
            "copy",
            "--to",
            &dst.location,
            "--to-password-file",
            s(&pwfile),
            "--host",
            "redis1",
        ])
        .output()
        .unwrap();
    let text = ok(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("copied ") && text.contains("cache"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("copied 1 snapshot(s)"),
        "{}",
        stderr(&out)
    );
    let snaps = target_snapshots(&dst);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["host"], "redis1");
    // The target's password is not the source's: the wrong one is refused (exit 4).
    let out = src
        .cmd()
        .env("DUMPVAULT_TO_PASSWORD", PASSWORD)
        .args(["copy", "--to", &dst.location])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn copy_of_a_damaged_snapshot_commits_nothing_in_the_target() {
    let src = Env::new();
    let data = noise(300_000, 51);
    src.backup(&data, &["--name", "blob"]);
    let dst = target_env();
    // Flip one byte in the middle of the source's only pack.
    let pack = src.files_under("data").pop().unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&pack, b).unwrap();
    let before = dst.files_under("snapshots");
    let mut c = src.cmd();
    c.env("DUMPVAULT_TO_PASSWORD", TARGET_PASSWORD);
    let out = run_with(c, &["copy", "--to", &dst.location], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert_eq!(dst.files_under("snapshots"), before);
    assert!(target_snapshots(&dst).is_empty());
}

#[test]
fn copy_local_to_s3() {
    let garage = crate::s3::Garage::start();
    let src = Env::new();
    let history = source_with_history(&src);
    let mut dst = Env::uninit();
    dst.location = garage.location();
    dst.extra_env = garage.env();
    let out = target_cmd(&dst)
        .args(["init", "--kdf-memory", "19456", "--kdf-iterations", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r = copy(&src, &dst, &[]);
    assert_eq!(r["copied"], 3, "{r}");
    for e in r["snapshots"].as_array().unwrap() {
        let want = &history
            .iter()
            .find(|(id, _)| e["source_id"] == id.as_str())
            .unwrap()
            .1;
        assert_eq!(
            &target_restore(&dst, &[e["target_id"].as_str().unwrap()]),
            want
        );
    }
    let r2 = copy(&src, &dst, &[]);
    assert_eq!(
        (r2["copied"].as_u64(), r2["present"].as_u64()),
        (Some(0), Some(3))
    );
}

// ---------------------------------------------------------------- progress

fn assert_clean(what: &str, out: &Output) {
    let e = &out.stderr;
    assert!(
        !e.contains(&0x1b) && !e.contains(&b'\r'),
        "{what}: escape codes or carriage returns on a non-terminal stderr: {:?}",
        stderr(out)
    );
}

#[test]
fn non_tty_stderr_has_no_progress_bar_only_a_summary_line() {
    let env = Env::new();
    let f = write(&env, "dump.sql", &sql_like(100_000, 61));
    // Command output is captured through pipes: stderr is not a terminal.
    let out = env.run(&["backup", s(&f), "--name", "shop"], b"");
    ok(&out);
    assert_clean("backup", &out);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "exactly one summary line: {err:?}");
    assert!(
        err.starts_with("snapshot ") && err.contains(" saved: "),
        "{err}"
    );

    let o = env.dir.path().join("r.sql");
    let out = env.run(&["restore", "latest", "-o", s(&o)], b"");
    ok(&out);
    assert_clean("restore", &out);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    let dst = target_env();
    let mut c = env.cmd();
    c.env("DUMPVAULT_TO_PASSWORD", TARGET_PASSWORD);
    let out = run_with(c, &["copy", "--to", &dst.location], b"");
    ok(&out);
    assert_clean("copy", &out);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    for args in [&["fsck", "--read-data"][..], &["prune"][..]] {
        let out = env.run(args, b"");
        ok(&out);
        assert_clean(args[0], &out);
    }
    // --quiet: nothing at all on stderr.
    let out = env.run(&["--quiet", "backup", s(&f), "--name", "shop"], b"");
    ok(&out);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}
