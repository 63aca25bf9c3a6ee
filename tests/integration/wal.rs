//! `wal push`, `wal fetch`, `wal status` and WAL retention without a database server: WAL
//! segments are synthesised with a valid long page header and 1 MiB segments (a size initdb
//! allows), base backups are small tars with a `backup_label` and a `backup_manifest`.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::*;

const SS: u32 = 1 << 20;

fn seg_name(n: u64) -> String {
    dumpvault::pg::segment_name(1, n, SS)
}

/// A 1 MiB segment: long page header (system identifier 4242), then bytes that depend on `n`.
fn segment(n: u64) -> Vec<u8> {
    let mut d = sql_like(9_000, n);
    d.resize(SS as usize, 0);
    d[..40].fill(0);
    d[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    d[2..4].copy_from_slice(&2u16.to_le_bytes());
    d[24..32].copy_from_slice(&4242u64.to_le_bytes());
    d[32..36].copy_from_slice(&SS.to_le_bytes());
    d
}

struct Wal {
    env: Env,
    pg_wal: PathBuf,
}

impl Wal {
    fn new(env: Env) -> Wal {
        let pg_wal = env.dir.path().join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
        Wal { env, pg_wal }
    }

    fn write(&self, n: u64) -> PathBuf {
        let p = self.pg_wal.join(seg_name(n));
        std::fs::write(&p, segment(n)).unwrap();
        p
    }

    fn push(&self, n: u64) -> Output {
        let p = self.write(n);
        self.env.run(&["wal", "push", p.to_str().unwrap()], b"")
    }

    fn push_ok(&self, n: u64) {
        let o = self.push(n);
        assert!(o.status.success(), "push {n}: {}", stderr(&o));
    }

    fn fetch(&self, name: &str, extra: &[&str]) -> (Output, PathBuf) {
        let dest = self.env.dir.path().join("RECOVERYXLOG");
        let _ = std::fs::remove_file(&dest);
        let mut a = vec!["wal", "fetch", name, dest.to_str().unwrap()];
        a.extend_from_slice(extra);
        (self.env.run(&a, b""), dest)
    }

    fn status(&self) -> (Option<i32>, serde_json::Value) {
        let o = self.env.run(&["wal", "status", "--json"], b"");
        (
            o.status.code(),
            serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o))),
        )
    }

    fn object(&self, n: u64) -> PathBuf {
        self.env.repo.join("wal/main").join(seg_name(n))
    }
}

/// A base backup tar starting in segment `start` and consistent in segment `start + 1`.
fn base_tar(start: u64) -> Vec<u8> {
    base_tar_of(start, Some(4242))
}

/// [`base_tar`] of the cluster with system identifier `sysid`; `None`: no `global/pg_control`
/// in the tar, so the snapshot records no system identifier.
fn base_tar_of(start: u64, sysid: Option<u64>) -> Vec<u8> {
    let lsn = |seg: u64, off: u64| dumpvault::pg::Lsn(seg * u64::from(SS) + off).to_string();
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(
        "backup_label",
        format!(
            "START WAL LOCATION: {} (file {})\nCHECKPOINT LOCATION: {}\nSTART TIME: 2026-12-01 10:00:00 UTC\nLABEL: test\nSTART TIMELINE: 1\n",
            lsn(start, 40),
            seg_name(start),
            lsn(start, 96)
        )
        .as_bytes(),
    );
    if let Some(sysid) = sysid {
        let mut control = sysid.to_le_bytes().to_vec();
        control.resize(8192, 0);
        add("global/pg_control", &control);
    }
    add("base/1/1259", &noise(50_000, start));
    add(
        "backup_manifest",
        format!(
            "{{\"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [],\n\"WAL-Ranges\": [\n{{ \"Timeline\": 1, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}\n],\n\"Manifest-Checksum\": \"0\"}}\n",
            lsn(start, 40),
            lsn(start + 1, 256)
        )
        .as_bytes(),
    );
    b.into_inner().unwrap()
}

fn base_backup(env: &Env, start: u64) -> String {
    env.backup(&base_tar(start), &["--name", "pg-base"])
}

#[test]
fn push_fetch_round_trip_idempotence_and_conflict() {
    let w = Wal::new(Env::new());
    w.push_ok(2);
    // Again, same content: success, nothing new.
    let before = std::fs::read(w.object(2)).unwrap();
    w.push_ok(2);
    assert_eq!(std::fs::read(w.object(2)).unwrap(), before);
    let (o, dest) = w.fetch(&seg_name(2), &["--prefetch", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dest).unwrap(), segment(2));
    // Compressed and sealed: smaller than the segment, and no plaintext in it.
    assert!(
        before.len() < segment(2).len() / 2,
        "stored {} bytes",
        before.len()
    );
    let probe = &segment(2)[4096..4112];
    assert!(!before.windows(16).any(|x| x == probe));

    // Other content under an archived name: refused, and both copies kept.
    std::fs::write(w.pg_wal.join(seg_name(2)), segment(99)).unwrap();
    let o = w.env.run(
        &["wal", "push", w.pg_wal.join(seg_name(2)).to_str().unwrap()],
        b"",
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already archived with different content"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(w.object(2)).unwrap(),
        before,
        "the archived copy is untouched"
    );
    let copies: Vec<_> = std::fs::read_dir(w.env.repo.join("wal/main"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".conflict-"))
        .collect();
    assert_eq!(copies.len(), 1);
    let (o, dest) = w.fetch(&copies[0], &["--prefetch", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        segment(99),
        "the conflict copy holds the new content"
    );
    let (code, st) = w.status();
    assert_eq!(code, Some(7), "a conflict is a problem: {st}");
    assert!(st["problems"].to_string().contains(".conflict-"));
}

#[test]
fn fetch_exit_codes_absent_damaged_and_unreachable() {
    let w = Wal::new(Env::new());
    w.push_ok(2);
    // Absent: exit 1, what recovery reads as the end of the archive; nothing written.
    let (o, dest) = w.fetch(&seg_name(3), &["--prefetch", "0"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!dest.exists());
    let (o, _) = w.fetch("00000002.history", &["--prefetch", "0"]);
    assert_eq!(o.status.code(), Some(1));
    // Damaged: never handed over; exit 126 so that recovery stops instead of ending early.
    let obj = w.object(2);
    let mut b = std::fs::read(&obj).unwrap();
    let i = b.len() / 2;
    b[i] ^= 1;
    std::fs::write(&obj, &b).unwrap();
    let (o, dest) = w.fetch(&seg_name(2), &["--prefetch", "0", "--retries", "2"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(!dest.exists(), "a damaged segment is never written");
    assert!(stderr(&o).contains("recovery must stop"), "{}", stderr(&o));
    // Wrong password: 126 too (an exit 1 would end recovery as if the archive were empty).
    let (o, _) = {
        let dest = w.env.dir.path().join("x");
        let mut c = w.env.cmd();
        c.env("DUMPVAULT_PASSWORD", "wrong");
        (
            run_with(
                c,
                &["wal", "fetch", &seg_name(2), dest.to_str().unwrap()],
                b"",
            ),
            dest,
        )
    };
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    // Storage unreachable: retried, then 126.
    let dead = Env::uninit();
    let mut c = dead.cmd();
    c.env("DUMPVAULT_REPO", "s3://nobucket/x")
        .env(
            "DUMPVAULT_S3_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("DUMPVAULT_S3_MAX_ATTEMPTS", "1")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("DUMPVAULT_S3_REGION", "garage");
    let t = Instant::now();
    let o = run_with(
        c,
        &[
            "wal",
            "fetch",
            &seg_name(2),
            "/tmp/never-written",
            "--retries",
            "2",
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("after 2 attempts"), "{}", stderr(&o));
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn push_killed_at_every_step_leaves_nothing_or_a_whole_segment() {
    for point in ["wal-push-read", "wal-push-before-put", "wal-push-after-put"] {
        let w = Wal::new(Env::new());
        let p = w.write(5);
        let o = run_with(
            {
                let mut c = w.env.cmd();
                c.env("DUMPVAULT_FAILPOINT", point);
                c
            },
            &["wal", "push", p.to_str().unwrap()],
            b"",
        );
        assert!(
            !o.status.success(),
            "{point}: the killed push must not report success"
        );
        // Whatever is there is whole (fetch verifies every byte), or nothing is.
        let (o, dest) = w.fetch(&seg_name(5), &["--prefetch", "0"]);
        match o.status.code() {
            Some(0) => {
                assert_eq!(point, "wal-push-after-put");
                assert_eq!(std::fs::read(&dest).unwrap(), segment(5));
            }
            Some(1) => assert_ne!(point, "wal-push-after-put"),
            c => panic!("{point}: fetch exit {c:?}: {}", stderr(&o)),
        }
        // No temp file is left under a final name; PostgreSQL's retry succeeds.
        w.push_ok(5);
        let (o, dest) = w.fetch(&seg_name(5), &["--prefetch", "0"]);
        assert!(o.status.success());
        assert_eq!(std::fs::read(&dest).unwrap(), segment(5));
        let names: Vec<String> = std::fs::read_dir(w.env.repo.join("wal/main"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        assert_eq!(names, vec![seg_name(5)], "{point}");
    }
}

#[test]
fn push_during_s3_errors_fails_then_succeeds() {
    use crate::s3proxy::{Fault, Proxy, Rule};
    let g = crate::s3::Garage::start();
    let proxy = Proxy::start(&g.endpoint);
    let env = crate::s3proxy::proxied_env(&g, &proxy, "2");
    let w = Wal::new(env);
    proxy.set(Some(Rule {
        method: "PUT",
        path_contains: "/wal/",
        times: usize::MAX,
        fault: Fault::Status(503),
    }));
    let o = w.push(7);
    assert!(!o.status.success(), "a push during 5xx fails");
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) > 0);
    proxy.set(None);
    w.push_ok(7);
    let (o, dest) = w.fetch(&seg_name(7), &["--prefetch", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(dest).unwrap(), segment(7));
}

#[test]
fn gaps_name_the_base_backups_they_cut_and_retention_follows_base_backups() {
    let w = Wal::new(Env::new());
    let a = base_backup(&w.env, 2);
    for n in 2..=9 {
        w.push_ok(n);
    }
    let (code, st) = w.status();
    assert_eq!(code, Some(0), "{st}");
    let b = &st["status"]["base_backups"][0];
    assert_eq!(b["snapshot"].as_str().unwrap(), a);
    assert_eq!(b["reach"]["consistent"], true);
    assert_eq!(b["reach"]["last_segment"].as_str().unwrap(), seg_name(9));

    // A hole at segment 6: damage naming the base backup whose range it ends.
    std::fs::remove_file(w.object(6)).unwrap();
    let (code, st) = w.status();
    assert_eq!(code, Some(7));
    let p = st["problems"].to_string();
    assert!(p.contains(&seg_name(6)) && p.contains(&a[..8]), "{p}");
    assert_eq!(
        st["status"]["base_backups"][0]["reach"]["last_segment"]
            .as_str()
            .unwrap(),
        seg_name(5)
    );
    let o = w.env.run(&["fsck"], b"");
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &stderr(&o);
    assert!(text.contains(&seg_name(6)), "{text}");
    // Without a key fsck proves every WAL object intact (the gap needs the key to judge).
    let o = w.env.run(&["fsck", "--no-key"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    w.push_ok(6);

    // Retention: forget the first base backup, keep one from segment 7: segments 2..6 go.
    let b2 = base_backup(&w.env, 7);
    let o = w
        .env
        .run(&["forget", "--keep-last", "1", "--name", "pg-base"], b"");
    assert!(o.status.success(), "forget: {}", stderr(&o));
    let o = w.env.run(&["prune"], b"");
    assert!(o.status.success(), "prune: {}", stderr(&o));
    for n in 2..=6 {
        assert!(
            !w.object(n).exists(),
            "segment {n} is older than every base backup kept"
        );
    }
    for n in 7..=9 {
        assert!(w.object(n).exists(), "segment {n} is needed by {b2}");
    }
    let (code, st) = w.status();
    assert_eq!(code, Some(0), "{st}");

    // With no base backup at all, prune deletes no WAL.
    let w = Wal::new(Env::new());
    w.push_ok(2);
    w.env.backup(b"not a base backup", &[]);
    assert!(w.env.run(&["prune"], b"").status.success());
    assert!(w.object(2).exists());
}

#[test]
fn prefetch_serves_the_next_segments_from_the_spool() {
    let w = Wal::new(Env::new());
    for n in 2..=5 {
        w.push_ok(n);
    }
    let spool = w.env.dir.path().join("spool");
    let sp = spool.to_str().unwrap().to_string();
    let (o, dest) = w.fetch(&seg_name(2), &["--prefetch", "2", "--spool", &sp]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dest).unwrap(), segment(2));
    let t = Instant::now();
    while !(spool.join(seg_name(3)).exists() && spool.join(seg_name(4)).exists()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "prefetch did not happen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (o, dest) = w.fetch(&seg_name(3), &["--prefetch", "2", "--spool", &sp]);
    assert!(stderr(&o).contains("prefetched"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&dest).unwrap(), segment(3));
    // A damaged archive copy is never prefetched either: the spool only holds verified files.
    let (o, dest) = w.fetch(&seg_name(6), &["--prefetch", "2", "--spool", &sp]);
    assert_eq!(o.status.code(), Some(1), "past the end: {}", stderr(&o));
    assert!(!dest.exists());
}

#[test]
fn async_push_acknowledges_only_what_is_stored() {
    let w = Wal::new(Env::new());
    for n in 2..=6 {
        w.write(n);
        std::fs::write(
            w.pg_wal
                .join("archive_status")
                .join(format!("{}.ready", seg_name(n))),
            b"",
        )
        .unwrap();
    }
    for n in 2..=6 {
        let p = w.pg_wal.join(seg_name(n));
        let o = w
            .env
            .run(&["wal", "push", "--async", p.to_str().unwrap()], b"");
        assert!(o.status.success(), "async push {n}: {}", stderr(&o));
        // What PostgreSQL does after exit 0.
        let st = w.pg_wal.join("archive_status");
        std::fs::rename(
            st.join(format!("{}.ready", seg_name(n))),
            st.join(format!("{}.done", seg_name(n))),
        )
        .unwrap();
        let (o, dest) = w.fetch(&seg_name(n), &["--prefetch", "0"]);
        assert!(
            o.status.success(),
            "acknowledged {n} is archived: {}",
            stderr(&o)
        );
        assert_eq!(std::fs::read(dest).unwrap(), segment(n));
    }
    // A push that cannot store fails, asynchronously too (a fresh pg_wal: no worker serves it).
    let w = Wal::new(Env::new());
    w.write(7);
    std::fs::write(
        w.pg_wal
            .join("archive_status")
            .join(format!("{}.ready", seg_name(7))),
        b"",
    )
    .unwrap();
    let mut c = w.env.cmd();
    c.env("DUMPVAULT_PASSWORD", "wrong");
    let o = run_with(
        c,
        &[
            "wal",
            "push",
            "--async",
            "--timeout",
            "20s",
            w.pg_wal.join(seg_name(7)).to_str().unwrap(),
        ],
        b"",
    );
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(!w.object(7).exists());
}

#[test]
fn push_metrics_record_the_last_archived_file_and_failures() {
    let w = Wal::new(Env::new());
    let m = w.env.dir.path().join("wal.prom");
    let p = w.write(2);
    let push = |pw: &str| {
        let mut c = w.env.cmd();
        c.env("DUMPVAULT_WAL_METRICS_FILE", &m)
            .env("DUMPVAULT_PASSWORD", pw);
        run_with(c, &["wal", "push", p.to_str().unwrap()], b"")
    };
    let value = |name: &str| -> f64 {
        let text = std::fs::read_to_string(&m).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{cluster=\"main\"}} ")))
            .unwrap_or_else(|| panic!("{name} in {text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(push(PASSWORD).status.success());
    assert_eq!(value("dumpvault_wal_last_push_success"), 1.0);
    assert_eq!(value("dumpvault_wal_push_failures_total"), 0.0);
    let archived = value("dumpvault_wal_last_archived_timestamp_seconds");
    assert!(archived > 1.7e9);
    assert!(value("dumpvault_wal_last_archived_file_mtime_seconds") > 1.7e9);
    assert!(!push("wrong").status.success());
    assert!(!push("wrong").status.success());
    assert_eq!(value("dumpvault_wal_last_push_success"), 0.0);
    assert_eq!(value("dumpvault_wal_push_failures_total"), 2.0);
    assert_eq!(
        value("dumpvault_wal_last_archived_timestamp_seconds"),
        archived,
        "kept from the last success"
    );
}

#[test]
fn copy_carries_wal_and_stats_snapshots_and_metrics_show_its_ranges() {
    let w = Wal::new(Env::new());
    let base = base_backup(&w.env, 2);
    for n in 2..=5 {
        w.push_ok(n);
    }
    // `snapshots` shows which WAL a base backup needs, without listing the archive.
    let o = w.env.run(&["snapshots"], b"");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let start = dumpvault::pg::Lsn(2 * u64::from(SS) + 40).to_string();
    let end = dumpvault::pg::Lsn(3 * u64::from(SS) + 256).to_string();
    assert!(
        text.contains(&format!("base backup: timeline 1, WAL {start} .. {end}")),
        "{text}"
    );
    // `stats` shows the archived ranges per cluster and timeline.
    let o = w.env.run(&["--json", "stats"], b"");
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let wal = &st["wal"][0];
    assert_eq!(wal["cluster"], "main");
    assert_eq!(wal["files"], 4);
    let r = &wal["timelines"][0]["ranges"][0];
    assert_eq!(
        (r["first"].as_str().unwrap(), r["last"].as_str().unwrap()),
        (seg_name(2).as_str(), seg_name(5).as_str())
    );
    // `wal status --metrics-file` exports the PITR window of the base backup.
    let m = w.env.dir.path().join("dv.prom");
    let o = w.env.run(
        &["--metrics-file", m.to_str().unwrap(), "wal", "status"],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let prom = std::fs::read_to_string(&m).unwrap();
    let sel = format!(
        "cluster=\"main\",name=\"pg-base\",snapshot=\"{}\"",
        &base[..8]
    );
    assert!(prom.contains("dumpvault_pitr_restorable{repo="), "{prom}");
    let line = |name: &str| {
        prom.lines()
            .find(|l| l.starts_with(name) && l.contains(&sel))
            .unwrap_or_else(|| panic!("{name} for {sel}: {prom}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(line("dumpvault_pitr_restorable"), 1.0);
    let mtime = std::fs::metadata(w.pg_wal.join(seg_name(5)))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    assert_eq!(
        line("dumpvault_pitr_window_end_timestamp_seconds"),
        mtime,
        "the window ends at the newest segment's source mtime"
    );
    assert!(prom.contains("dumpvault_wal_gaps{repo="), "{prom}");

    // `copy` carries the WAL: byte-exact in the target, then a re-run copies nothing.
    let dst = Wal::new(Env::new());
    let copy = |extra: &[&str]| -> serde_json::Value {
        let mut c = w.env.cmd();
        c.env("DUMPVAULT_TO_PASSWORD", PASSWORD);
        let mut a = vec!["--json", "copy", "--to", &dst.env.location];
        a.extend_from_slice(extra);
        let o = run_with(c, &a, b"");
        assert!(o.status.success(), "copy: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let r = copy(&["--no-wal"]);
    assert_eq!(r["wal"].as_array().unwrap().len(), 0, "{r}");
    assert!(!dst.object(2).exists());
    let r = copy(&[]);
    assert_eq!(r["wal"][0]["copied"], 4, "{r}");
    assert_eq!(r["wal"][0]["present"], 0, "{r}");
    for n in 2..=5 {
        let (o, dest) = dst.fetch(&seg_name(n), &["--prefetch", "0"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read(&dest).unwrap(), segment(n), "segment {n}");
    }
    let (code, st) = dst.status();
    assert_eq!(code, Some(0), "the target's chain is whole: {st}");
    assert_eq!(
        st["status"]["base_backups"][0]["reach"]["last_segment"]
            .as_str()
            .unwrap(),
        seg_name(5)
    );
    assert_eq!(
        st["status"]["last_segment_time"],
        w.status().1["status"]["last_segment_time"],
        "the source mtime travels with the file"
    );
    w.push_ok(6);
    let r = copy(&[]);
    assert_eq!(
        (&r["wal"][0]["copied"], &r["wal"][0]["present"]),
        (&serde_json::json!(1), &serde_json::json!(4)),
        "{r}"
    );
}

/// `fsck ARGS --json`: exit code and report.
fn fsck_json(env: &Env, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut a = vec!["--json", "fsck"];
    a.extend_from_slice(args);
    let o = env.run(&a, b"");
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("fsck {args:?}: no report: {}", stderr(&o)));
    (o.status.code(), v)
}

/// The problems of a fsck report as `severity object id problem: detail` lines.
fn problem_lines(report: &serde_json::Value) -> Vec<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {}: {}",
                p["severity"].as_str().unwrap(),
                p["object"].as_str().unwrap(),
                p["id"].as_str().unwrap(),
                p["problem"].as_str().unwrap(),
                p["detail"].as_str().unwrap()
            )
        })
        .collect()
}

/// Push segment `n` of a cluster whose system identifier is `sysid` under `--cluster`.
fn push_cluster(env: &Env, cluster: &str, n: u64, sysid: u64) {
    let dir = env.dir.path().join(format!("pg_wal-{cluster}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(seg_name(n));
    let mut d = segment(n);
    d[24..32].copy_from_slice(&sysid.to_le_bytes());
    std::fs::write(&p, d).unwrap();
    let o = env.run(
        &["wal", "push", "--cluster", cluster, p.to_str().unwrap()],
        b"",
    );
    assert!(o.status.success(), "push {cluster} {n}: {}", stderr(&o));
}

fn cluster_object(env: &Env, cluster: &str, n: u64) -> PathBuf {
    env.repo.join("wal").join(cluster).join(seg_name(n))
}

/// Regression for issue X22: a stored WAL object of version 0 is damage, as every other
/// versioned object of version 0 is (X7), not "too new": a repeat push keeps a conflict copy
/// beside it (exit 1) instead of failing with exit 8, and fsck reports it instead of stopping.
#[test]
fn x22_version_zero_wal_object_is_damage_not_too_new() {
    let w = Wal::new(Env::new());
    w.push_ok(2);
    w.push_ok(3);
    let obj = w.object(3);
    let mut b = std::fs::read(&obj).unwrap();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&obj, &b).unwrap();

    let o = w.push(3);
    assert_eq!(o.status.code(), Some(EXIT_ERROR), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("damaged copy") && stderr(&o).contains("version 0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&obj).unwrap(), b, "the stored object is left");
    let copies = std::fs::read_dir(w.env.repo.join("wal/main"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name().into_string().unwrap();
            n.starts_with(&format!("{}.conflict-", seg_name(3)))
        })
        .count();
    assert_eq!(copies, 1, "the pushed content is kept beside it");

    let damaged = format!("main/{}", seg_name(3));
    for args in [&["--read-data"][..], &[], &["--no-key"]] {
        let (code, r) = fsck_json(&w.env, args);
        assert_eq!(code, Some(EXIT_CORRUPT), "fsck {args:?}: {r}");
        let lines = problem_lines(&r);
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&damaged) && l.contains("version 0")),
            "fsck {args:?}: {lines:?}"
        );
    }
}

/// Regression for issue X24: names under `wal/` that are not WAL never stop a check. A stray
/// file of the wrong shape and a directory that is no cluster name are not listed at all (as
/// on S3); a name of the right shape that is no WAL file name is listed, reported as foreign
/// (a warning) and never read or deleted.
#[test]
fn x24_stray_file_in_wal_dir_does_not_stop_fsck() {
    let w = Wal::new(Env::new());
    base_backup(&w.env, 4);
    for n in 2..=5 {
        w.push_ok(n);
    }
    let main = w.env.repo.join("wal/main");
    let obj = std::fs::read(w.object(3)).unwrap();
    std::fs::write(main.join(format!("{}~", seg_name(3))), &obj).unwrap();
    std::fs::create_dir_all(w.env.repo.join("wal/Main")).unwrap();
    std::fs::write(w.env.repo.join("wal/Main").join(seg_name(2)), &obj).unwrap();
    std::fs::write(main.join("README"), b"notes about this archive\n").unwrap();

    for args in [&["--no-key"][..], &[], &["--read-data"]] {
        let (code, r) = fsck_json(&w.env, args);
        assert_eq!(code, Some(EXIT_OK), "fsck {args:?}: {r}");
        assert_eq!(
            problem_lines(&r),
            vec!["warning wal main/README foreign: not a WAL file name or conflict copy: not read, never deleted"],
            "fsck {args:?}"
        );
    }
    let (code, st) = w.status();
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["status"]["strays"], serde_json::json!(["README"]));
    let o = w.env.run(&["prune"], b"");
    assert!(o.status.success(), "prune: {}", stderr(&o));
    assert!(!w.object(2).exists(), "retention still works");
    assert!(main.join("README").exists() && w.env.repo.join("wal/Main").exists());
}

/// Regression for issue X25: a base backup belongs to a cluster only when both system
/// identifiers are known and equal. One of unknown identifier is judged in no cluster and
/// makes no WAL deletable (a cluster with no base backup of its own keeps all its WAL), and
/// a base backup of one cluster is never reported or used in another.
#[test]
fn x25_clusters_never_judge_or_cut_each_other_by_unknown_system_identifier() {
    let env = Env::new();
    for n in 2..=9 {
        push_cluster(&env, "a", n, 4242);
    }
    for n in 2..=4 {
        push_cluster(&env, "b", n, 5353);
    }
    // A base backup of unknown system identifier, starting in segment 7.
    let unknown = env.backup(&base_tar_of(7, None), &["--name", "pg-base"]);
    let status = |cluster: &str| {
        let o = env.run(&["wal", "status", "--json", "--cluster", cluster], b"");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|_| panic!("status {cluster}: {}", stderr(&o)));
        (o.status.code(), v)
    };
    let (code, st) = status("b");
    assert_eq!(code, Some(0), "not b's to judge: {st}");
    assert_eq!(st["status"]["base_backups"], serde_json::json!([]));
    assert_eq!(st["status"]["unmatched"][0]["snapshot"], unknown.as_str());
    let o = env.run(&["prune"], b"");
    assert!(o.status.success(), "prune: {}", stderr(&o));
    for n in 2..=4 {
        assert!(cluster_object(&env, "b", n).exists(), "b keeps segment {n}");
    }
    for n in 2..=9 {
        assert!(cluster_object(&env, "a", n).exists(), "a keeps segment {n}");
    }

    // A base backup of cluster a (4242) from segment 5: a's WAL below it goes, b's stays,
    // and b's status does not judge it.
    let mine = env.backup(&base_tar_of(5, Some(4242)), &["--name", "pg-base"]);
    let o = env.run(&["prune"], b"");
    assert!(o.status.success(), "prune: {}", stderr(&o));
    for n in 2..=4 {
        assert!(
            !cluster_object(&env, "a", n).exists(),
            "a drops segment {n}"
        );
        assert!(cluster_object(&env, "b", n).exists(), "b keeps segment {n}");
    }
    for n in 5..=9 {
        assert!(cluster_object(&env, "a", n).exists(), "a keeps segment {n}");
    }
    let (code, st) = status("a");
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["status"]["base_backups"][0]["snapshot"], mine.as_str());
    assert_eq!(st["status"]["base_backups"].as_array().unwrap().len(), 1);
    let (code, st) = status("b");
    assert_eq!(code, Some(0), "{st}");
    assert_eq!(st["status"]["base_backups"], serde_json::json!([]));
    assert_eq!(st["status"]["unmatched"].as_array().unwrap().len(), 1);
    let (code, r) = fsck_json(&env, &[]);
    assert_eq!(code, Some(EXIT_OK), "{r}");
}

/// Regression for issue X26: `--wal-keep-base-backups N` keeps the WAL of the N newest
/// complete base backups by time. Here the newest starts at the lowest LSN (as after a
/// point-in-time recovery that branched below older base backups), and a base backup stored
/// incomplete, which cannot be restored, is newer still: neither may take its place.
#[test]
fn x26_wal_keep_base_backups_keeps_the_newest_complete_by_time() {
    let w = Wal::new(Env::new());
    for n in 2..=9 {
        w.push_ok(n);
    }
    base_backup(&w.env, 8);
    let newest = base_backup(&w.env, 3);
    let tar = base_tar(6);
    let cut = &tar[..tar.len() - 1024];
    let o = w
        .env
        .run(&["backup", "--name", "pg-base", "--allow-truncated"], cut);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w.env.run(&["prune", "--wal-keep-base-backups", "1"], b"");
    assert!(o.status.success(), "prune: {}", stderr(&o));
    assert!(!w.object(2).exists(), "below the newest base backup");
    for n in 3..=9 {
        assert!(w.object(n).exists(), "segment {n} is needed by {newest}");
    }
    let (code, st) = w.status();
    assert_eq!(code, Some(0), "{st}");
}

/// The nightly one-liner takes WAL retention too: `forget --prune --wal-keep-base-backups N`
/// applies it like `prune` does (before, only `prune` had the flag); without `--prune` the
/// flag is refused.
#[test]
fn forget_prune_takes_wal_keep_base_backups() {
    let w = Wal::new(Env::new());
    for n in 2..=9 {
        w.push_ok(n);
    }
    base_backup(&w.env, 8);
    base_backup(&w.env, 3);
    let o = w.env.run(
        &["forget", "--keep-last", "5", "--wal-keep-base-backups", "1"],
        b"",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = w.env.run(
        &[
            "forget",
            "--keep-last",
            "5",
            "--prune",
            "--wal-keep-base-backups",
            "1",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!w.object(2).exists(), "below the newest base backup");
    for n in 3..=9 {
        assert!(w.object(n).exists(), "segment {n}");
    }
}

/// Regression for issue X28: a WAL object deleted between fsck's listing and its read (by a
/// concurrent prune's WAL retention; fsck takes no lock) is skipped, not damage, with the key
/// and without it.
#[test]
fn x28_wal_object_deleted_between_listing_and_read_is_not_damage() {
    use dumpvault::backend::fault::{Fault, FaultBackend, Op, Rule};
    use dumpvault::backend::local::LocalBackend;
    use dumpvault::backend::Backend;
    use dumpvault::error::ObjectKind;
    use dumpvault::ops::fsck::{fsck, fsck_no_key, FsckOptions, Subset};
    use dumpvault::repo::{OpenOptions, Repo};
    use std::sync::Arc;

    let w = Wal::new(Env::new());
    for n in 2..=5 {
        w.push_ok(n);
    }
    let vanishing = || {
        let local: Arc<dyn Backend> = Arc::new(LocalBackend::new(&w.env.repo));
        Arc::new(FaultBackend::new(local, 1))
    };
    let fb = vanishing();
    let mut repo = Repo::open(fb.clone(), PASSWORD.as_bytes(), &OpenOptions::default()).unwrap();
    fb.add(Rule::nth(Op::Get, 1, Fault::Vanish).of(ObjectKind::Wal));
    let r = fsck(
        &mut repo,
        &FsckOptions {
            read_data: Some(Subset::All),
        },
        &|_, _, _| {},
    )
    .expect("a vanished object does not stop fsck");
    assert_eq!(fb.injected().len(), 1);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.counts.wal_files_read, 3);

    let fb = vanishing();
    fb.add(Rule::nth(Op::Get, 1, Fault::Vanish).of(ObjectKind::Wal));
    let r = fsck_no_key(fb.as_ref(), &|_, _, _| {}).unwrap();
    assert_eq!(fb.injected().len(), 1);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.counts.wal_files_read, 2);
}

/// Regression for issue X29: a damaged snapshot and a damaged header of the newest segment
/// are reported among the other findings; neither ends fsck (or `wal status`) with a single
/// error. The chain is still judged, from the next segment that opens.
#[test]
fn x29_damaged_snapshot_or_newest_segment_header_does_not_stop_fsck() {
    let w = Wal::new(Env::new());
    let base = base_backup(&w.env, 2);
    let other = w.env.backup(b"not a base backup", &["--name", "other"]);
    for n in 2..=5 {
        w.push_ok(n);
    }
    // The sealed header of the newest segment, and the sealed part of a snapshot.
    let seg = w.object(5);
    let mut b = std::fs::read(&seg).unwrap();
    b[40] ^= 1;
    std::fs::write(&seg, &b).unwrap();
    let snap = w.env.repo.join("snapshots").join(&other);
    let mut s = std::fs::read(&snap).unwrap();
    let last = s.len() - 1;
    s[last] ^= 1;
    std::fs::write(&snap, &s).unwrap();

    let (code, r) = fsck_json(&w.env, &[]);
    assert_eq!(code, Some(EXIT_CORRUPT), "{r}");
    let lines = problem_lines(&r);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("damage wal main/{} corrupt", seg_name(5)))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("damage snapshot {other}"))),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("wal main chain")),
        "the chain is whole: {lines:?}"
    );
    let (code, st) = w.status();
    assert_eq!(code, Some(EXIT_CORRUPT), "{st}");
    assert_eq!(st["status"]["base_backups"][0]["snapshot"], base.as_str());
    assert_eq!(st["status"]["base_backups"][0]["reach"]["consistent"], true);
    let p = st["problems"].to_string();
    assert!(p.contains(&seg_name(5)) && p.contains(&other), "{p}");
}
