//! Crashes: the process is killed (a deterministic failpoint that aborts, or a real SIGKILL
//! after the test fed it N bytes) at many points of a backup in stdin and command mode, and of
//! prune. After every kill the repository must be sound:
//! - no half-written object under a final name: every file in data/, index/, snapshots/ and
//!   keys/ is named by the BLAKE3 of its bytes, and the only other files are hidden `.tmp-*`
//!   files, which no reader lists;
//! - `fsck --read-data` exits 0 (unreferenced packs are only warnings);
//! - every snapshot that exists restores byte-exact (those from before the crash, and the
//!   crashed backup's own if it got as far as committing);
//! - the next backup succeeds and restores.
//!
//! Kill points: 9 failpoints × 2 modes, 4 SIGKILL offsets in stdin mode, 3 in command mode,
//! 3 prune failpoints not covered by prune.rs, and 1 SIGKILL during prune: 29 in all.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::common::*;

/// Backup failpoints (src/ops/backup.rs), each with the hit that fires. The stream below is
/// long enough for 3+ packs and 3+ tree nodes whatever the (random, keyed) chunk IDs.
const BACKUP_POINTS: [&str; 9] = [
    "backup:after-pack-upload@1",
    "backup:after-pack-upload@2",
    "backup:after-pack-upload@3",
    "backup:tree-node@1",
    "backup:tree-node@2",
    "backup:tree-node@3",
    "backup:before-index",
    "backup:after-index",
    "backup:after-snapshot",
];

/// A repository with 1 MiB packs and 1 KiB average chunks, so a few MB make several packs and
/// several tree nodes.
fn small_env() -> Env {
    let env = Env::uninit();
    env.init(&[
        "--pack-size",
        "1",
        "--chunk-min",
        "256",
        "--chunk-avg",
        "1024",
        "--chunk-max",
        "4096",
    ]);
    env
}

/// Day `i`'s stream: a shared compressible part (dedups across days) and a fresh noise part
/// (new packs every day). ~9.4 MB: over 4096 chunks (so 3+ tree nodes) and 3+ packs.
fn stream(i: u64) -> Vec<u8> {
    let mut d = sql_like(60_000, 500);
    d.extend_from_slice(&noise(4_500_000, 600 + i));
    d
}

/// The repository holds nothing half-written under a final name.
pub fn assert_objects_whole(env: &Env, ctx: &str) {
    for sub in ["data", "index", "snapshots", "keys"] {
        for p in env.files_under(sub) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // An interrupted write: hidden, never listed, never read as an object.
                continue;
            }
            assert!(
                name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                "{ctx}: stray file {}",
                p.display()
            );
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                name,
                "{ctx}: {} does not hash to its name (half-written?)",
                p.display()
            );
            if sub == "data" {
                let dir = p.parent().unwrap().file_name().unwrap().to_string_lossy();
                assert_eq!(*dir, name[..2], "{ctx}: pack in the wrong directory");
            }
        }
    }
}

/// Every snapshot in the repository, with its id and the data it must restore to: the ones in
/// `known`, plus (at most one) committed by the crashed backup, which must be `crashed_data`.
fn check_snapshots(env: &Env, known: &[(String, Vec<u8>)], crashed_data: &[u8], ctx: &str) {
    let snaps = env.snapshots_json(&["--no-cache"]);
    let mut extra = 0;
    for s in &snaps {
        let id = s["id"].as_str().unwrap();
        let want = match known.iter().find(|(k, _)| k == id) {
            Some((_, d)) => d.as_slice(),
            None => {
                extra += 1;
                crashed_data
            }
        };
        let out = env.run(&["--no-cache", "restore", id], b"");
        assert!(
            out.status.success(),
            "{ctx}: restore {id}: {}",
            stderr(&out)
        );
        assert!(out.stdout == want, "{ctx}: snapshot {id} not byte-exact");
    }
    assert!(extra <= 1, "{ctx}: {extra} unexpected snapshots");
    for (id, _) in known {
        assert!(
            snaps.iter().any(|s| s["id"] == id.as_str()),
            "{ctx}: snapshot {id} lost"
        );
    }
}

fn assert_fsck_clean(env: &Env, ctx: &str) {
    let out = env.run(&["--no-cache", "fsck", "--read-data"], b"");
    assert!(
        out.status.success(),
        "{ctx}: fsck after the crash: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

/// All the after-crash checks, then one more backup that must succeed and restore.
fn assert_recovers(env: &Env, known: &mut Vec<(String, Vec<u8>)>, crashed: &[u8], ctx: &str) {
    assert_objects_whole(env, ctx);
    assert_fsck_clean(env, ctx);
    check_snapshots(env, known, crashed, ctx);
    let next = stream(900);
    let id = env.backup(&next, &["--name", "s"]);
    assert_eq!(env.restore(&[&id]), next, "{ctx}: next backup");
    known.push((id, next));
    check_snapshots(env, known, crashed, ctx);
    assert_objects_whole(env, ctx);
}

/// A fresh repository with one committed snapshot; returns it with its data.
fn env_with_one_snapshot() -> (Env, Vec<(String, Vec<u8>)>) {
    let env = small_env();
    let d0 = stream(0);
    let id0 = env.backup(&d0, &["--name", "s"]);
    (env, vec![(id0, d0)])
}

fn assert_aborted_at(out: &std::process::Output, point: &str) {
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{point}: the failpoint must abort the process: {:?} {}",
        out.status,
        stderr(out)
    );
    let name = point.split('@').next().unwrap();
    assert!(
        stderr(out).contains(&format!("failpoint {name}")),
        "{point}: {}",
        stderr(out)
    );
}

#[test]
fn backup_from_stdin_killed_at_every_failpoint() {
    for point in BACKUP_POINTS {
        let (env, mut known) = env_with_one_snapshot();
        let data = stream(1);
        let mut c = env.cmd();
        c.env("DUMPVAULT_FAILPOINT", point);
        let out = run_with(c, &["backup", "--name", "s"], &data);
        assert_aborted_at(&out, point);
        assert!(out.stdout.is_empty(), "{point}: no snapshot id printed");
        assert_recovers(&env, &mut known, &data, point);
    }
}

#[test]
fn backup_in_command_mode_killed_at_every_failpoint() {
    for point in BACKUP_POINTS {
        let (env, mut known) = env_with_one_snapshot();
        let data = stream(2);
        let f = env.dir.path().join("dump.sql");
        std::fs::write(&f, &data).unwrap();
        let mut c = env.cmd();
        c.env("DUMPVAULT_FAILPOINT", point);
        let out = run_with(
            c,
            &["backup", "--name", "s", "--", "cat", f.to_str().unwrap()],
            b"",
        );
        assert_aborted_at(&out, point);
        assert_recovers(&env, &mut known, &data, point);
    }
}

/// Spawn a backup reading stdin; the caller feeds it.
fn spawn_backup(env: &Env, extra: &[&str]) -> Child {
    env.cmd()
        .arg("backup")
        .args(["--name", "s"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // It may have finished on its own only if it was fed the whole stream; callers never do.
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
}

#[test]
fn backup_from_stdin_sigkilled_after_n_bytes() {
    let data = stream(3);
    // After writing N bytes into the pipe, the process has consumed at least N minus the pipe
    // buffer (64 KiB): from mid-first-pack to past the last pack.
    for n in [200_000, 1_500_000, 4_000_000, data.len() - 100] {
        let (env, mut known) = env_with_one_snapshot();
        let mut child = spawn_backup(&env, &[]);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&data[..n]).unwrap();
        sigkill(&mut child);
        drop(stdin);
        let ctx = format!("SIGKILL after {n} bytes");
        // The stream never ended, so nothing may have been committed from it.
        assert_recovers(&env, &mut known, b"<no snapshot expected>", &ctx);
        assert_eq!(env.snapshots_json(&[]).len(), 2, "{ctx}");
    }
}

/// Make a FIFO; the producer `cat`s it, the test writes into it, so the test knows how much the
/// producer has handed on.
fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn backup_in_command_mode_sigkilled_after_n_bytes() {
    let data = stream(4);
    for n in [300_000, 2_500_000, data.len() - 100] {
        let (env, mut known) = env_with_one_snapshot();
        let fifo = env.dir.path().join("fifo");
        mkfifo(&fifo);
        let mut child = env
            .cmd()
            .args(["backup", "--name", "s", "--", "cat", fifo.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(&data[..n]).unwrap();
        sigkill(&mut child);
        drop(w);
        let ctx = format!("command mode, SIGKILL after {n} bytes");
        assert_recovers(&env, &mut known, b"<no snapshot expected>", &ctx);
        assert_eq!(env.snapshots_json(&[]).len(), 2, "{ctx}");
    }
}

/// Five snapshots, forget keeps the last two, so prune has packs to delete and to repack.
fn env_for_prune() -> (Env, Vec<(String, Vec<u8>)>) {
    let env = small_env();
    for i in 0..5 {
        env.backup(
            &stream(10 + i),
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

#[test]
fn prune_killed_between_pack_deletions_and_by_sigkill() {
    // prune.rs kills at the first hit of each prune failpoint; here the later pack deletions.
    for point in [
        "prune:mid-pack-delete@2",
        "prune:mid-pack-delete@4",
        "prune:mid-pack-delete@7",
    ] {
        let (env, mut known) = env_for_prune();
        let out = env
            .cmd()
            .env("DUMPVAULT_FAILPOINT", point)
            .args(["prune", "--max-unused", "0%"])
            .output()
            .unwrap();
        assert_aborted_at(&out, point);
        assert_recovers(&env, &mut known, b"<no snapshot expected>", point);
        let out = env.run(&["prune", "--max-unused", "0%"], b"");
        assert!(
            out.status.success(),
            "{point}: second prune: {}",
            stderr(&out)
        );
        assert_recovers(&env, &mut known, b"<no snapshot expected>", point);
    }
    // A real SIGKILL while prune runs (wherever it lands, the same must hold).
    let (env, mut known) = env_for_prune();
    let mut child = env
        .cmd()
        .args(["prune", "--max-unused", "0%"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while env.files_under("locks").is_empty() && t0.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_recovers(&env, &mut known, b"<no snapshot expected>", "prune SIGKILL");
}

// ---------------------------------------------------------------- concurrency

/// Several processes back up to one repository at once; returns the (id, data) pairs.
pub fn concurrent_backups(env: &Env, n: u64) -> Vec<(String, Vec<u8>)> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            // Shared content (every writer stores the same chunks at the same moment) and
            // content of its own.
            let mut data = sql_like(30_000, 1);
            data.extend_from_slice(&noise(2_000_000, 100 + i));
            data.extend_from_slice(&sql_like(5_000, 200 + i));
            let mut c = env.cmd();
            c.arg("backup").args(["--name", &format!("w{i}")]);
            c.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            let d = data.clone();
            let w = std::thread::spawn(move || {
                let _ = stdin.write_all(&d);
            });
            (child, w, data)
        })
        .collect();
    handles
        .into_iter()
        .map(|(child, w, data)| {
            let out = child.wait_with_output().unwrap();
            w.join().unwrap();
            assert!(out.status.success(), "concurrent backup: {}", stderr(&out));
            let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
            (id, data)
        })
        .collect()
}

pub fn assert_all_restore(env: &Env, snaps: &[(String, Vec<u8>)]) {
    assert_eq!(env.snapshots_json(&["--no-cache"]).len(), snaps.len());
    for (id, data) in snaps {
        let out = env.run(&["--no-cache", "restore", id], b"");
        assert!(out.status.success(), "restore {id}: {}", stderr(&out));
        assert!(&out.stdout == data, "snapshot {id} not byte-exact");
    }
    assert_fsck_clean(env, "after concurrent backups");
}

#[test]
fn concurrent_backups_to_one_local_repository() {
    let env = Env::new();
    let snaps = concurrent_backups(&env, 4);
    assert_all_restore(&env, &snaps);
    assert_objects_whole(&env, "concurrent");
    assert!(env.files_under("locks").is_empty(), "every lock released");
}
