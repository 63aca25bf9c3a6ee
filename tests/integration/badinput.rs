//! Bad input, each with a clear message, its documented exit code (README, "Exit codes"), and
//! the repository unchanged: wrong password on every command, key files with Argon2 parameters
//! outside the floor and ceiling, a repository written by a newer dumpvault (version, incompat
//! and ro_compat feature bits under a valid MAC), producers that fail after a gigabyte or die
//! by a signal, SIGINT and SIGTERM in both modes, and a full disk. (S3 faults: s3proxy.rs.)
//! Cases already covered in cli.rs (wrong password on backup/snapshots/restore, a producer
//! that writes nothing or cannot start, SIGTERM in command mode) are not repeated.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dumpvault::backend::local::LocalBackend;
use dumpvault::repo::{OpenOptions, Repo};

use crate::common::*;

/// Every file but packs, with its bytes: what a failed backup must leave exactly as it was.
/// Packs may only have been added (unreferenced), never changed or removed.
struct Before {
    others: Vec<(PathBuf, Vec<u8>)>,
    packs: Vec<(PathBuf, Vec<u8>)>,
}

fn before(env: &Env) -> Before {
    let (packs, others) = env
        .fingerprint()
        .into_iter()
        .partition(|(p, _)| p.starts_with(env.repo.join("data")));
    Before { others, packs }
}

/// The repository is unchanged, except (when `new_packs_ok`) for added unreferenced packs.
fn assert_unchanged(env: &Env, b: &Before, new_packs_ok: bool, ctx: &str) {
    let now = before(env);
    assert_eq!(now.others, b.others, "{ctx}: non-pack objects changed");
    for p in &b.packs {
        assert!(
            now.packs.contains(p),
            "{ctx}: pack {} changed",
            p.0.display()
        );
    }
    if !new_packs_ok {
        assert_eq!(now.packs.len(), b.packs.len(), "{ctx}: packs added");
    }
    crate::crash::assert_objects_whole(env, ctx);
}

fn fsck_ok(env: &Env, ctx: &str) {
    let out = env.run(&["--no-cache", "fsck", "--read-data"], b"");
    assert!(
        out.status.success(),
        "{ctx}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn wrong_password_on_every_other_command_changes_nothing() {
    let env = Env::new();
    env.backup(&sql_like(2_000, 1), &["--name", "x"]);
    let b = before(&env);
    for args in [
        vec!["fsck"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["stats"],
        vec!["key", "list"],
        vec!["key", "add"],
        vec!["backup", "--name", "x", "--", "echo", "hi"],
    ] {
        assert_wrong_password_refused(&env, &args);
    }
    assert_unchanged(&env, &b, false, "wrong password");
}

/// Rewrite the only key file's Argon2 parameters (m_cost at 44, t_cost at 48) and store it
/// under the BLAKE3 of its new bytes, as a hostile or buggy writer would.
fn set_key_params(env: &Env, m_cost: u32, t_cost: u32) {
    let keys = env.files_under("keys");
    assert_eq!(keys.len(), 1);
    let mut b = std::fs::read(&keys[0]).unwrap();
    b[44..48].copy_from_slice(&m_cost.to_le_bytes());
    b[48..52].copy_from_slice(&t_cost.to_le_bytes());
    std::fs::remove_file(&keys[0]).unwrap();
    let h = blake3::hash(&b).to_hex().to_string();
    std::fs::write(env.repo.join("keys").join(h), b).unwrap();
}

#[test]
fn key_file_with_argon2_parameters_outside_the_limits_is_refused() {
    // Below the floor (an attacker who weakens a key file hopes the next `key passwd` or a
    // brute force gets cheap), and far above the ceiling (8 GiB, 1000 passes: a key file that
    // would make every open hang or run out of memory). Both refused before any derivation.
    for (m, t, what) in [
        (1024, 2, "memory below the floor"),
        (19456, 1, "passes below the floor"),
        (8 * 1024 * 1024, 3, "memory above the ceiling"),
        (19456, 1000, "passes above the ceiling"),
    ] {
        let env = Env::new();
        env.backup(b"data\n", &["--name", "x"]);
        set_key_params(&env, m, t);
        let b = before(&env);
        let t0 = Instant::now();
        for args in [vec!["snapshots"], vec!["backup", "--name", "x"]] {
            let out = env.run(&args, b"more\n");
            assert_eq!(
                out.status.code(),
                Some(EXIT_WRONG_PASSWORD),
                "{what}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("key parameters refused"),
                "{what}: {}",
                stderr(&out)
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: refused without deriving"
        );
        assert_unchanged(&env, &b, false, what);
    }
}

/// Rewrite the config's feature flags (incompat at 12, ro_compat at 20) with a valid MAC, as
/// a newer dumpvault would write them.
fn set_config_flags(env: &Env, incompat: u64, ro_compat: u64) {
    let repo = Repo::open(
        Arc::new(LocalBackend::new(&env.repo)),
        PASSWORD.as_bytes(),
        &OpenOptions::default(),
    )
    .unwrap();
    let p = env.repo.join("config");
    let mut b = std::fs::read(&p).unwrap();
    b[12..20].copy_from_slice(&incompat.to_le_bytes());
    b[20..28].copy_from_slice(&ro_compat.to_le_bytes());
    let mac = blake3::keyed_hash(&repo.key.config_mac_key(), &b[..96]);
    b[96..128].copy_from_slice(mac.as_bytes());
    std::fs::write(&p, b).unwrap();
}

#[test]
fn newer_repository_feature_flags_are_refused_with_exit_8() {
    let data = sql_like(5_000, 3);
    // An unknown incompat bit: nothing may be read or written.
    let env = Env::new();
    let id = env.backup(&data, &["--name", "x"]);
    set_config_flags(&env, 1 << 40, 0);
    let b = before(&env);
    for args in [
        vec!["snapshots"],
        vec!["restore", "latest"],
        vec!["backup", "--name", "x"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
        vec!["fsck"],
    ] {
        let out = env.run(&args, b"more\n");
        assert_eq!(
            out.status.code(),
            Some(EXIT_UNSUPPORTED),
            "incompat {args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("upgrade"), "{}", stderr(&out));
        assert!(
            out.stdout.is_empty(),
            "{args:?}: no data from a repository it cannot read"
        );
    }
    assert_unchanged(&env, &b, false, "incompat");

    // An unknown ro_compat bit: reading works, every writer refuses.
    let env = Env::new();
    let id2 = env.backup(&data, &["--name", "x"]);
    set_config_flags(&env, 0, 1 << 33);
    let b = before(&env);
    assert_eq!(env.restore(&[&id2]), data);
    assert_eq!(env.snapshots_json(&[]).len(), 1);
    for args in [
        vec!["backup", "--name", "x"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune"],
    ] {
        let out = env.run(&args, b"more\n");
        assert_eq!(
            out.status.code(),
            Some(EXIT_UNSUPPORTED),
            "ro_compat {args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("upgrade"), "{}", stderr(&out));
    }
    assert_unchanged(&env, &b, false, "ro_compat");
    let _ = id;
}

/// A producer case: run `backup -- argv`, expect exit 6 with `msg` in stderr, no snapshot, the
/// lock released, nothing but unreferenced packs added, fsck clean, the earlier snapshot
/// intact and the next backup fine.
fn producer_fails(env: &Env, argv: &[&str], msg: &str) {
    let b = before(env);
    let snaps = env.snapshots_json(&[]);
    let mut args = vec!["backup", "--name", "db", "--"];
    args.extend_from_slice(argv);
    let out = env.run(&args, b"");
    assert_eq!(
        out.status.code(),
        Some(EXIT_PRODUCER),
        "{argv:?}: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains(msg), "{argv:?}: {}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert_unchanged(env, &b, true, &format!("{argv:?}"));
    assert!(env.files_under("locks").is_empty(), "lock released");
    assert_eq!(env.snapshots_json(&[]), snaps);
    fsck_ok(env, &format!("{argv:?}"));
}

#[test]
fn producer_that_fails_after_a_gigabyte_commits_nothing() {
    let env = Env::new();
    let good = sql_like(10_000, 4);
    let id = env.backup(&good, &["--name", "db"]);
    // 1 GB of zeros (dedups to one chunk, so the test stays fast), then exit 3.
    producer_fails(
        &env,
        &["sh", "-c", "head -c 1000000000 /dev/zero; exit 3"],
        "exited with status 3",
    );
    // 20 MB of fresh data (several chunks uploaded), then killed by SIGSEGV.
    producer_fails(
        &env,
        &["sh", "-c", "head -c 20000000 /dev/urandom; kill -SEGV $$"],
        "killed by signal 11",
    );
    // Killed by SIGKILL before writing anything.
    producer_fails(&env, &["sh", "-c", "kill -9 $$"], "killed by signal 9");
    // Exit 0 with no output at all (and with its stdout closed early).
    producer_fails(&env, &["sh", "-c", "exec >&-; exit 0"], "no output");
    assert_eq!(env.restore(&[&id]), good);
    let next = sql_like(10_000, 5);
    let id2 = env.backup(&next, &["--name", "db"]);
    assert_eq!(env.restore(&[&id2]), next);
}

fn send(pid: u32, sig: i32) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, sig) };
}

fn wait_for_lock(env: &Env) {
    let t0 = Instant::now();
    while env.files_under("locks").is_empty() {
        assert!(t0.elapsed().as_secs() < 30, "backup never took its lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An interrupted backup: exit 130, the message, no snapshot, lock released, only
/// unreferenced packs added, and the repository still works.
fn assert_interrupted(env: &Env, out: std::process::Output, b: &Before, ctx: &str) {
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
    assert!(out.stdout.is_empty(), "{ctx}: no snapshot id");
    assert!(env.files_under("locks").is_empty(), "{ctx}: lock released");
    assert_unchanged(env, b, true, ctx);
    fsck_ok(env, ctx);
    let d = sql_like(3_000, 9);
    let id = env.backup(&d, &["--name", "after"]);
    assert_eq!(env.restore(&[&id]), d, "{ctx}");
}

#[test]
fn sigint_and_sigterm_during_a_stdin_backup() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let env = Env::new();
        env.backup(b"first\n", &["--name", "s"]);
        let b = before(&env);
        let mut child = env
            .cmd()
            .args(["backup", "--name", "s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // 3 MB consumed, then the stream stalls with the pipe open (a producer that hangs):
        // the signal must still end the backup (the watchdog, after its grace period).
        stdin.write_all(&noise(3_000_000, 5)).unwrap();
        wait_for_lock(&env);
        send(child.id(), sig);
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_interrupted(&env, out, &b, &format!("stdin, signal {sig}"));
    }
}

#[test]
fn sigint_during_a_command_mode_backup_stops_the_producer() {
    let env = Env::new();
    env.backup(b"first\n", &["--name", "s"]);
    let b = before(&env);
    let pidfile = env.dir.path().join("producer.pid");
    let script = format!(
        "echo $$ > {}; head -c 3000000 /dev/urandom; exec sleep 60",
        pidfile.display()
    );
    let child = env
        .cmd()
        .args(["backup", "--name", "s", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(&env);
    while !pidfile.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    send(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_interrupted(&env, out, &b, "command mode, SIGINT");
    // The producer was stopped, not left running.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Gone, or a zombie waiting for its reaper (state Z), but not running.
    let t0 = Instant::now();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
            .is_some_and(|r| !r.starts_with('Z'))
    };
    while alive() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(), "producer {pid} still running");
}

/// A small tmpfs, unmounted on drop. The test fails if it cannot be mounted (CI runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the disk-full test needs root): {}",
            stderr(&out)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn disk_full_fails_cleanly_and_the_repository_stays_usable() {
    let mut env = Env::uninit();
    let mnt = env.dir.path().join("small");
    let _fs = Tmpfs::mount(&mnt, "8m");
    env.repo = mnt.join("repo");
    env.location = env.repo.display().to_string();
    env.init(&["--pack-size", "1"]);
    let first = noise(1_000_000, 1);
    let id = env.backup(&first, &["--name", "d"]);
    let b = before(&env);
    // 20 MB of incompressible data cannot fit in what is left of 8 MB.
    let out = env.run(&["backup", "--name", "d"], &noise(20_000_000, 2));
    assert_eq!(out.status.code(), Some(EXIT_ERROR), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert!(env.files_under("locks").is_empty(), "lock released");
    assert_eq!(env.snapshots_json(&[]).len(), 1);
    // Packs that fit stay (unreferenced); nothing else changed, no temp file is left over.
    assert_unchanged(&env, &b, true, "disk full");
    let tmp: Vec<_> = env
        .fingerprint()
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert!(tmp.is_empty(), "temp files left behind");
    fsck_ok(&env, "disk full");
    assert_eq!(env.restore(&[&id]), first);
    // Once prune frees the unreferenced packs, a backup that fits succeeds. They are no index's
    // packs, so prune deletes them only past its margin (an hour: the failed backup could have
    // been one still writing, issue X15): make them that old.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
    for p in env.files_under("data") {
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(old).unwrap();
    }
    let out = env.run(&["prune"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let small = sql_like(5_000, 3);
    let id2 = env.backup(&small, &["--name", "d"]);
    assert_eq!(env.restore(&[&id2]), small);
}

/// Back up `data` as series `name`; its snapshot id and the packs it added.
fn backup_new_packs(env: &Env, data: &[u8], name: &str) -> (String, Vec<PathBuf>) {
    let before = env.files_under("data");
    let id = env.backup(data, &["--name", name]);
    let new = env
        .files_under("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    (id, new)
}

/// Regression for "on a full disk, prune cannot free space" (issue 17), on a real full file
/// system: prune repacked first, so the new pack hit ENOSPC before anything was deleted. Now
/// the wholly unused pack is deleted first; only the repack fails (exit 1), nothing is lost,
/// `--max-unused 100%` succeeds on the full disk, and with room again a plain prune finishes.
#[test]
fn prune_on_a_full_tmpfs_frees_the_unused_packs_before_repacking() {
    let mut env = Env::uninit();
    let mnt = env.dir.path().join("small");
    let _fs = Tmpfs::mount(&mnt, "8m");
    env.repo = mnt.join("repo");
    env.location = env.repo.display().to_string();
    env.init(&["--pack-size", "1"]);
    // A: one pack of ~1 MB. K: most of A, so A's pack is mostly used (repacked with 0%, which
    // needs ~900 kB of room). B: its own ~300 kB pack, wholly unused once B is gone.
    let a = noise(1_000_000, 11);
    let (a_id, a_packs) = backup_new_packs(&env, &a, "a");
    let k = a[..900_000].to_vec();
    let (k_id, _) = backup_new_packs(&env, &k, "k");
    let (b_id, b_packs) = backup_new_packs(&env, &noise(300_000, 12), "b");
    assert_eq!((a_packs.len(), b_packs.len()), (1, 1));
    for id in [&a_id, &b_id] {
        std::fs::remove_file(env.repo.join("snapshots").join(id)).unwrap();
    }
    // Fill the disk, then leave 100 kB: room for a lock and an index file, not for the repack.
    let filler = mnt.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(100 * 1024)).unwrap();
    }
    let out = env.run(&["prune", "--max-unused", "0%"], b"");
    assert_eq!(out.status.code(), Some(EXIT_ERROR), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert!(!b_packs[0].exists(), "the unused pack was freed first");
    assert!(a_packs[0].exists(), "the pack to repack stays");
    assert!(env.files_under("locks").is_empty(), "lock released");
    fsck_ok(&env, "after the failed repack");
    assert!(env.restore(&[&k_id]) == k);
    // Only wholly unused packs: nothing is left to do, and nothing needs room.
    let out = env.run(&["prune", "--max-unused", "100%"], b"");
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    std::fs::remove_file(&filler).unwrap();
    let out = env.run(&["prune", "--max-unused", "0%"], b"");
    assert_eq!(out.status.code(), Some(EXIT_OK), "{}", stderr(&out));
    assert!(!a_packs[0].exists(), "repacked");
    fsck_ok(&env, "after the second prune");
    assert!(env.restore(&[&k_id]) == k);
}

/// Regression for issue X30: `wal push` takes no lock, so it checks the config's ro_compat
/// bits itself (C11): with an unknown one it refuses (exit 8) and stores nothing.
#[test]
fn x30_wal_push_refuses_an_unknown_ro_compat_bit() {
    let env = Env::new();
    set_config_flags(&env, 0, 1 << 33);
    let seg = env.dir.path().join("000000010000000000000002");
    std::fs::write(&seg, sql_like(2_000, 1)).unwrap();
    let out = env.run(&["wal", "push", seg.to_str().unwrap()], b"");
    assert_eq!(
        out.status.code(),
        Some(EXIT_UNSUPPORTED),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("upgrade"), "{}", stderr(&out));
    assert!(!env.repo.join("wal").exists(), "nothing is stored");
}
