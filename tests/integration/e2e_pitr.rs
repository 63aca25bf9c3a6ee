//! PostgreSQL continuous archiving and point-in-time recovery, end to end, against real
//! servers: one primary per test file (shared by the tests here, one at a time, each pointing
//! its `archive_command` at its own repository), plus the short-lived servers that each
//! restore starts. A restore must reproduce the row state at the target time exactly.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::e2e_pg::Pg;

const FINGERPRINT: &str =
    "SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM t";

fn primary() -> MutexGuard<'static, Pg> {
    static P: OnceLock<Mutex<Pg>> = OnceLock::new();
    P.get_or_init(|| {
        let pg = Pg::start_with(&[
            "wal_level=replica",
            "archive_mode=on",
            "max_wal_senders=4",
            "wal_keep_size=0",
        ]);
        // Not on the command line: that would override ALTER SYSTEM, which the tests use to
        // point the archive at their own repositories.
        set_archive_command(&pg, "/bin/true");
        Mutex::new(pg)
    })
    .lock()
    .unwrap_or_else(|p| p.into_inner())
}

/// A repository the postgres user can push into, with a machine key for `wal push`.
struct Archive {
    env: Env,
    secret: PathBuf,
}

fn archive(env: Env) -> Archive {
    let secret = env.dir.path().join("machine.secret");
    let out = env.run(
        &[
            "key",
            "add-machine",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "key add-machine: {}", stderr(&out));
    if is_root() {
        Command::new("chmod")
            .arg("755")
            .arg(env.dir.path())
            .status()
            .unwrap();
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&secret)
            .status()
            .unwrap();
        if !env.location.contains("://") {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&env.repo)
                .status()
                .unwrap();
        }
    }
    Archive { env, secret }
}

impl Archive {
    /// `archive_command` (or, with `fetch`, `restore_command`) for this repository.
    fn command(&self, sub: &str) -> String {
        let mut vars: String = self
            .env
            .extra_env
            .iter()
            .map(|(k, v)| format!("{k}='{v}' "))
            .collect();
        vars.push_str(&format!(
            "DUMPVAULT_REPO='{}' DUMPVAULT_PASSWORD_FILE='{}' ",
            self.env.location,
            self.secret.display()
        ));
        format!("{vars}{} --quiet {sub}", bin())
    }

    fn push_command(&self) -> String {
        self.command("wal push %p")
    }

    fn fetch_command(&self) -> String {
        self.command("wal fetch %f \"%p\"")
    }

    fn base_backup(&self, pg: &Pg) -> String {
        let out = self.env.run(
            &[
                "backup",
                "--name",
                "pg-base",
                "--",
                pg.bin.join("pg_basebackup").to_str().unwrap(),
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-D",
                "-",
                "-Ft",
                "-X",
                "fetch",
                // An immediate checkpoint: a spread one waits most of checkpoint_timeout.
                "-c",
                "fast",
            ],
            b"",
        );
        assert!(out.status.success(), "base backup: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn status(&self) -> (bool, serde_json::Value) {
        let out = self.env.run(&["wal", "status", "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("wal status --json: {}", stderr(&out)));
        (out.status.success(), v)
    }
}

fn set_archive_command(pg: &Pg, cmd: &str) {
    pg.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            cmd.replace('\'', "''")
        ),
    );
    pg.psql("postgres", "SELECT pg_reload_conf()");
}

/// Switch to a new segment and wait until the archiver has archived the old one.
fn switch_and_wait(pg: &Pg) {
    let seg = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let t = Instant::now();
    loop {
        let last = pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last >= seg && !last.is_empty() {
            return;
        }
        let failed = pg.psql(
            "postgres",
            "SELECT coalesce(last_failed_wal, '') || ' ' || failed_count FROM pg_stat_archiver",
        );
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "segment {seg} not archived (last {last}, failed {failed})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn work(pg: &Pg, from: i32, to: i32) {
    pg.psql(
        "shop",
        &format!("INSERT INTO t SELECT g, md5(g::text) FROM generate_series({from}, {to}) g"),
    );
    pg.psql(
        "shop",
        &format!("UPDATE t SET v = v || 'u' WHERE id % 7 = {} ", from % 7),
    );
}

/// Restore to `target` into a new directory, start it, wait for recovery to end, and return
/// the running server.
fn pitr(a: &Archive, extra: &[&str]) -> (tempfile::TempDir, Pg) {
    let dir = tempfile::tempdir().unwrap();
    if is_root() {
        Command::new("chmod")
            .arg("755")
            .arg(dir.path())
            .status()
            .unwrap();
    }
    let data = dir.path().join("data");
    let mut args = vec!["pg", "restore", "--pgdata", data.to_str().unwrap()];
    let rc = a.fetch_command();
    args.extend_from_slice(&["--restore-command", &rc]);
    args.extend_from_slice(extra);
    let out = a.env.run(&args, b"");
    assert!(
        out.status.success(),
        "pg restore: {}\nwal status: {}",
        stderr(&out),
        a.status().1
    );
    assert!(data.join("recovery.signal").exists());
    // archive_command comes with the base backup (postgresql.auto.conf): this archive.
    let pg = Pg::run_on(None, data.clone(), &["archive_mode=on"]);
    let t = Instant::now();
    while pg.psql("postgres", "SELECT pg_is_in_recovery()") != "f" {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "recovery did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (dir, pg)
}

fn target_now(pg: &Pg) -> String {
    pg.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )
}

fn scenario(a: &Archive, pg: &Pg) -> (String, String) {
    set_archive_command(pg, &a.push_command());
    pg.psql("postgres", "DROP DATABASE IF EXISTS shop");
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", "CREATE TABLE t (id int PRIMARY KEY, v text)");
    work(pg, 1, 200);
    switch_and_wait(pg);
    a.base_backup(pg);
    for i in 0..3 {
        work(pg, 1000 + i * 100, 1050 + i * 100);
        switch_and_wait(pg);
    }
    let t = target_now(pg);
    let at_t = pg.psql("shop", FINGERPRINT);
    // Changes after the target: they must not be in the restored state.
    pg.psql("shop", "UPDATE t SET v = 'changed' WHERE id < 50");
    pg.psql("shop", "DELETE FROM t WHERE id > 1100");
    switch_and_wait(pg);
    assert_ne!(pg.psql("shop", FINGERPRINT), at_t);
    (t, at_t)
}

#[test]
fn pitr_to_a_chosen_time_then_on_a_new_timeline() {
    let pg = primary();
    let a = archive(Env::new());
    let (t, at_t) = scenario(&a, &pg);
    let (ok, st) = a.status();
    assert!(ok, "wal status: {st}");
    // Nothing more goes to this repository from the old primary.
    set_archive_command(&pg, "/bin/true");

    let (_d2, pg2) = pitr(&a, &["--target-time", &t]);
    assert_eq!(
        pg2.psql("shop", FINGERPRINT),
        at_t,
        "state at the target time"
    );

    // The promoted copy is on timeline 2 and archives there, with its history file first.
    set_archive_command(&pg2, &a.push_command());
    assert_eq!(
        pg2.psql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2"
    );
    work(&pg2, 5000, 5100);
    switch_and_wait(&pg2);
    let t2 = target_now(&pg2);
    let at_t2 = pg2.psql("shop", FINGERPRINT);
    pg2.psql("shop", "DELETE FROM t WHERE id > 5050");
    switch_and_wait(&pg2);
    let (_, st) = a.status();
    let tls: Vec<u64> = st["status"]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert!(tls.contains(&2), "timeline 2 archived: {st}");
    // From the same base backup (timeline 1), following 00000002.history.
    let (_d3, pg3) = pitr(&a, &["--target-time", &t2]);
    assert_eq!(
        pg3.psql("shop", FINGERPRINT),
        at_t2,
        "state at the target on timeline 2"
    );
    drop(pg3);
    drop(pg2);

    // A target past the archive is refused before the directory is touched.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let out = a.env.run(
        &[
            "pg",
            "restore",
            "--pgdata",
            data.to_str().unwrap(),
            "--target-time",
            "2999-01-01 00:00:00",
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("reaches only to"), "{}", stderr(&out));
    assert!(!data.exists());
}

#[test]
fn pitr_from_s3() {
    let g = crate::s3::Garage::start();
    let pg = primary();
    let a = archive(Env::at(g.location(), g.env()));
    let (t, at_t) = scenario(&a, &pg);
    set_archive_command(&pg, "/bin/true");
    let (_d2, pg2) = pitr(&a, &["--target-time", &t]);
    assert_eq!(pg2.psql("shop", FINGERPRINT), at_t);
}

/// Deleting a segment in the middle is a gap that names the base backup whose PITR range it
/// cuts, in `wal status` and in `fsck`; prune while the server writes WAL loses nothing.
#[test]
fn gap_is_damage_and_prune_beside_archiving_loses_nothing() {
    let pg = primary();
    let a = archive(Env::new());
    let (_t, _) = scenario(&a, &pg);
    // Prune (and forget) while the primary keeps generating and archiving WAL.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let stop = stop.clone();
        let loc = a.env.location.clone();
        let cache = a.env.cache.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = Command::new(bin())
                    .env("DUMPVAULT_REPO", &loc)
                    .env("DUMPVAULT_PASSWORD", PASSWORD)
                    .env("DUMPVAULT_CACHE_DIR", &cache)
                    .args(["prune", "--lock-wait", "30s"])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "prune: {}", stderr(&out));
                n += 1;
            }
            n
        })
    };
    for i in 0..4 {
        work(&pg, 3000 + i * 10, 3005 + i * 10);
        switch_and_wait(&pg);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(pruner.join().unwrap() > 0);
    let (ok, st) = a.status();
    assert!(ok, "no gap after pruning beside archiving: {st}");
    let t = target_now(&pg);
    let at_t = pg.psql("shop", FINGERPRINT);
    pg.psql("shop", "DELETE FROM t");
    switch_and_wait(&pg);
    set_archive_command(&pg, "/bin/true");
    let (_d, pg2) = pitr(&a, &["--target-time", &t]);
    assert_eq!(pg2.psql("shop", FINGERPRINT), at_t, "PITR after the prunes");
    drop(pg2);

    // Now delete one archived segment in the middle.
    let ranges = &st["status"]["timelines"][0]["ranges"];
    let first = ranges[0]["first"].as_str().unwrap().to_string();
    let victim = next_segment(&first, 2);
    let path = a.env.repo.join("wal").join("main").join(&victim);
    assert!(path.exists(), "{victim} archived");
    std::fs::remove_file(&path).unwrap();
    let (ok, st) = a.status();
    assert!(!ok, "a gap fails wal status");
    let problems = st["problems"].to_string();
    assert!(problems.contains(&victim), "{problems}");
    assert!(
        problems.contains("ends the PITR range of base backup"),
        "{problems}"
    );
    let out = a.env.run(&["fsck"], b"");
    assert_eq!(out.status.code(), Some(7), "fsck: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    assert!(text.contains(&victim), "fsck names the gap: {text}");
}

/// The segment `n` after `name` on its timeline (16 MiB segments).
pub fn next_segment(name: &str, n: u64) -> String {
    let w = dumpvault::pg::WalName::parse(name).unwrap();
    let ss = dumpvault::pg::DEFAULT_SEGMENT_SIZE;
    dumpvault::pg::segment_name(w.timeline, w.segno(ss).unwrap() + n, ss)
}
