//! Operations: restore drills (`verify`) and their records, the Prometheus metrics file, and
//! dump awareness (truncated pg_dump / RDB refused, kinds recorded), against real PostgreSQL
//! and Redis servers started here.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Store `n` keys with distinct pseudo-random values (seeded), in batches.
fn fill_redis(r: &RedisServer, n: usize, seed: u64) {
    let data = noise(n * 48, seed);
    for batch in 0..n.div_ceil(500) {
        let mut args = vec!["MSET".to_string()];
        for i in batch * 500..((batch + 1) * 500).min(n) {
            args.push(format!("key:{seed}:{i}"));
            args.push(hex::encode(&data[i * 48..i * 48 + 48]));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(r.cli(&a), "OK");
    }
}

/// The RDB `redis-cli --rdb` fetches, as bytes.
fn fetch_rdb(r: &RedisServer, dir: &Path) -> Vec<u8> {
    let path = dir.join(format!("dump-{}.rdb", r.port));
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &r.port.to_string(), "--rdb"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli --rdb: {}", stderr(&out));
    std::fs::read(&path).unwrap()
}

fn packs(env: &Env) -> Vec<PathBuf> {
    env.files_under("data")
}

fn verifications(env: &Env) -> Vec<PathBuf> {
    env.files_under("verifications")
}

fn snapshot<'a>(list: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} not listed"))
}

/// The acceptance scenario: a drill with redis-check-rdb records success; a drill on a
/// corrupted snapshot records failure and exits 7; a verifier that rejects the stream exits
/// 11; `snapshots --json` and `snapshots` show each verdict.
#[test]
fn drill_with_redis_check_rdb_records_success_and_failure() {
    let redis = RedisServer::start();
    let env = Env::new();
    fill_redis(&redis, 2000, 1);
    let good = fetch_rdb(&redis, env.dir.path());
    let good_id = env.backup(&good, &["--name", "cache"]);

    let out = env.run(
        &[
            "verify",
            "latest",
            "--name",
            "cache",
            "--",
            "redis-check-rdb",
            "/dev/stdin",
        ],
        b"",
    );
    assert!(out.status.success(), "drill failed: {}", stderr(&out));
    assert!(stderr(&out).contains("RDB looks OK"), "{}", stderr(&out));
    assert_eq!(verifications(&env).len(), 1);

    // A second series whose packs are its own (fresh random values), then damaged.
    let before = packs(&env);
    let other = RedisServer::start();
    fill_redis(&other, 3000, 2);
    let bad_id = env.backup(&fetch_rdb(&other, env.dir.path()), &["--name", "sessions"]);
    let new_packs: Vec<_> = packs(&env)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(!new_packs.is_empty());
    for p in &new_packs {
        let mut b = std::fs::read(p).unwrap();
        b[100] ^= 0x55; // inside the first sealed blob
        std::fs::write(p, b).unwrap();
    }
    let out = env.run(
        &[
            "verify",
            &bad_id[..12],
            "--",
            "redis-check-rdb",
            "/dev/stdin",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(verifications(&env).len(), 2, "the failure is recorded too");

    // A verifier that rejects an intact stream: exit 11, restore_verified true. (The stream
    // fits in the pipe buffer, so it is written whole before redis-check-rdb reads and
    // rejects it; a larger one would end in EPIPE, "stopped reading", also exit 11.)
    let text_id = env.backup(&sql_like(100, 3), &["--name", "notrdb"]);
    let out = env.run(
        &[
            "--json",
            "verify",
            "latest",
            "--name",
            "notrdb",
            "--",
            "redis-check-rdb",
            "/dev/stdin",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["record"]["ok"], false);
    assert_eq!(j["record"]["restore_verified"], true);
    assert_eq!(j["record"]["exit_status"], 1);

    let list = env.snapshots_json(&[]);
    let g = &snapshot(&list, &good_id)["last_verification"];
    assert_eq!(g["ok"], true, "{g}");
    assert_eq!(g["restore_verified"], true);
    assert_eq!(g["exit_status"], 0);
    assert_eq!(g["stream"], "stdin");
    let b = &snapshot(&list, &bad_id)["last_verification"];
    assert_eq!(b["ok"], false, "{b}");
    assert_eq!(b["restore_verified"], false);
    assert!(
        b["detail"].as_str().unwrap().contains("damaged"),
        "{}",
        b["detail"]
    );
    let t = &snapshot(&list, &text_id)["last_verification"];
    assert_eq!(
        (t["ok"].clone(), t["restore_verified"].clone()),
        (false.into(), true.into())
    );

    // The text listing shows the verdicts in the "verified" column.
    let out = env.run(&["snapshots"], b"");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |id: &str| {
        text.lines()
            .find(|l| l.starts_with(&id[..8]))
            .unwrap_or_else(|| panic!("{id} not in {text}"))
            .to_string()
    };
    assert!(line(&good_id).contains("  ok 20"), "{text}");
    assert!(line(&bad_id).contains("  FAILED 20"), "{text}");
    // The good snapshot is still restorable byte-exact after all this.
    assert_eq!(env.restore(&[&good_id]), good);
}

/// A verifier that stops reading early (EPIPE on our side) failed, even if it exits 0.
#[test]
fn drill_verifier_that_stops_reading_fails() {
    let env = Env::new();
    let data = noise(2 << 20, 4);
    env.backup(&data, &["--name", "n"]);
    let out = env.run(
        &["--json", "verify", "latest", "--", "head", "-c", "10"],
        b"",
    );
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["record"]["exit_status"], 0);
    assert_eq!(j["record"]["ok"], false);
    assert!(
        j["record"]["detail"]
            .as_str()
            .unwrap()
            .contains("stopped reading"),
        "{j}"
    );
    // A verifier that cannot start is a failed drill, recorded.
    let out = env.run(&["verify", "latest", "--", "/nonexistent/verifier"], b"");
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert_eq!(verifications(&env).len(), 2);
    // The whole stream reached a verifier that reads it all: byte count and BLAKE3 checked.
    let out = env.run(
        &[
            "--json",
            "verify",
            "latest",
            "--",
            "sh",
            "-c",
            "cat > /dev/null",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["record"]["bytes"], data.len());
}

/// forget leaves drill records; fsck calls them orphaned (a warning) and prune deletes them.
#[test]
fn prune_removes_records_of_removed_snapshots() {
    let env = Env::new();
    let a = env.backup(
        &sql_like(3000, 5),
        &["--name", "db", "--time", "2026-01-01"],
    );
    env.backup(
        &sql_like(3000, 6),
        &["--name", "db", "--time", "2026-01-02"],
    );
    for id in [&a[..], "latest"] {
        let out = env.run(&["verify", id, "--", "sh", "-c", "cat > /dev/null"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(verifications(&env).len(), 2);
    let out = env.run(&["forget", "--keep-last", "1"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        verifications(&env).len(),
        2,
        "forget leaves records to prune"
    );
    let out = env.run(&["--json", "fsck"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let orphans: Vec<_> = j["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["object"] == "verification" && p["problem"] == "orphaned")
        .collect();
    assert_eq!(orphans.len(), 1, "{j}");
    assert_eq!(j["counts"]["verifications"], 2);
    let out = env.run(&["--json", "prune"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verifications_removed"], 1, "{j}");
    assert_eq!(verifications(&env).len(), 1);
    let list = env.snapshots_json(&[]);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["last_verification"]["ok"], true);
    // Without a key, fsck checks the records' names too.
    let out = env.run(&["--json", "fsck", "--no-key"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["counts"]["verifications"], 1);
    // A flipped bit in a record: fsck --no-key names it.
    let rec = &verifications(&env)[0];
    let mut b = std::fs::read(rec).unwrap();
    b[20] ^= 1;
    std::fs::write(rec, b).unwrap();
    let out = env.run(&["--json", "fsck", "--no-key"], b"");
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["problems"][0]["object"], "verification", "{j}");
    assert_eq!(j["problems"][0]["problem"], "name_mismatch", "{j}");
}

/// Parse the metrics file with the Prometheus client library's own parser; returns
/// (metric name, labels, value) for every sample.
fn parse_metrics(path: &Path) -> Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value if s.value != float("inf") else "+Inf"])
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3");
    // No skipping: the parser is a test dependency (scripts/install-test-deps.sh).
    assert!(
        out.status.success(),
        "prometheus_client failed (install it: python3 -m pip install prometheus_client): {}",
        stderr(&out)
    );
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter()
        .map(|s| {
            let val = match &s[2] {
                serde_json::Value::String(x) if x == "+Inf" => f64::INFINITY,
                x => x.as_f64().unwrap(),
            };
            (
                s[0].as_str().unwrap().to_string(),
                s[1].as_object().unwrap().clone(),
                val,
            )
        })
        .collect()
}

fn sample(
    samples: &[(String, serde_json::Map<String, serde_json::Value>, f64)],
    name: &str,
    series: &str,
) -> f64 {
    let found: Vec<f64> = samples
        .iter()
        .filter(|(n, l, _)| n == name && l.get("name").and_then(|v| v.as_str()) == Some(series))
        .map(|(_, _, v)| *v)
        .collect();
    assert_eq!(found.len(), 1, "{name}{{name={series}}}: {samples:?}");
    found[0]
}

#[test]
fn metrics_file_parses_and_carries_the_values() {
    let env = Env::new();
    let prom = env.dir.path().join("dumpvault.prom");
    let m = prom.to_str().unwrap();
    let shop1 = sql_like(4000, 10);
    let shop2 = sql_like(4000, 11);
    let crm = noise(100_000, 12);
    env.backup(
        &shop1,
        &[
            "--metrics-file",
            m,
            "--name",
            "shop",
            "--tag",
            "env=prod",
            "--tag",
            "db-role=primary",
            "--time",
            "2026-11-20 03:00:00",
        ],
    );
    env.backup(
        &shop2,
        &[
            "--metrics-file",
            m,
            "--name",
            "shop",
            "--tag",
            "env=prod",
            "--tag",
            "db-role=primary",
            "--time",
            "2026-11-21 03:00:00",
        ],
    );
    // The env var works as well as the flag.
    let out = env
        .cmd()
        .env("DUMPVAULT_METRICS_FILE", &prom)
        .args([
            "backup",
            "--name",
            "crm",
            "--time",
            "2026-11-21 04:00:00",
            "--",
            "sh",
            "-c",
        ])
        .arg(format!("head -c 100000 {}", {
            let f = env.dir.path().join("crm.bin");
            std::fs::write(&f, &crm).unwrap();
            f.display().to_string()
        }))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(
        &[
            "--metrics-file",
            m,
            "verify",
            "latest",
            "--name",
            "shop",
            "--",
            "sh",
            "-c",
            "cat >/dev/null",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.run(&["--metrics-file", m, "fsck"], b"");
    assert!(out.status.success(), "{}", stderr(&out));

    let s = parse_metrics(&prom);
    let ts = |d: &str| {
        chrono::NaiveDateTime::parse_from_str(d, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp() as f64
    };
    assert_eq!(
        sample(
            &s,
            "dumpvault_backup_last_success_timestamp_seconds",
            "shop"
        ),
        ts("2026-11-21 03:00:00")
    );
    assert_eq!(
        sample(&s, "dumpvault_backup_last_success_timestamp_seconds", "crm"),
        ts("2026-11-21 04:00:00")
    );
    assert_eq!(sample(&s, "dumpvault_backup_snapshots", "shop"), 2.0);
    assert_eq!(sample(&s, "dumpvault_backup_snapshots", "crm"), 1.0);
    assert_eq!(
        sample(&s, "dumpvault_backup_last_read_bytes", "shop"),
        shop2.len() as f64
    );
    assert_eq!(
        sample(&s, "dumpvault_backup_last_read_bytes", "crm"),
        crm.len() as f64
    );
    let list = env.snapshots_json(&[]);
    let newest_shop = list
        .iter()
        .filter(|x| x["name"] == "shop")
        .max_by_key(|x| x["time"].as_str().unwrap().to_string())
        .unwrap();
    let new_bytes = newest_shop["streams"][0]["new_bytes"].as_u64().unwrap();
    assert_eq!(
        sample(&s, "dumpvault_backup_last_new_bytes", "shop"),
        new_bytes as f64
    );
    let ratio = sample(&s, "dumpvault_backup_last_dedup_ratio", "shop");
    assert!(
        (ratio - shop2.len() as f64 / new_bytes as f64).abs() < 1e-6,
        "{ratio}"
    );
    assert_eq!(
        sample(&s, "dumpvault_backup_last_producer_exit_status", "crm"),
        0.0
    );
    assert_eq!(sample(&s, "dumpvault_verify_last_success", "shop"), 1.0);
    assert!(
        sample(&s, "dumpvault_verify_last_timestamp_seconds", "shop") > ts("2026-11-21 03:00:00")
    );
    assert!(
        !s.iter()
            .any(|(n, l, _)| n == "dumpvault_verify_last_success" && l["name"] == "crm"),
        "crm was never drilled"
    );
    // Tags are labels with sanitised names; repo and host are labels too.
    let (_, labels, _) = s
        .iter()
        .find(|(n, l, _)| n == "dumpvault_backup_snapshots" && l["name"] == "shop")
        .unwrap();
    assert_eq!(labels["tag_env"], "prod");
    assert_eq!(labels["tag_db_role"], "primary");
    assert_eq!(labels["repo"].as_str().unwrap().len(), 16);
    assert!(labels.contains_key("host"));
    // fsck's verdict is local knowledge (the cache) and shows up after it ran.
    let fsck: Vec<_> = s
        .iter()
        .filter(|(n, _, _)| n.starts_with("dumpvault_fsck_last"))
        .map(|(n, _, v)| (n.clone(), *v))
        .collect();
    assert!(
        fsck.contains(&("dumpvault_fsck_last_success".into(), 1.0)),
        "{fsck:?}"
    );
    assert!(
        fsck.contains(&("dumpvault_fsck_last_exit_code".into(), 0.0)),
        "{fsck:?}"
    );
    assert_eq!(
        s.iter()
            .find(|(n, _, _)| n == "dumpvault_repository_snapshots")
            .unwrap()
            .2,
        3.0
    );
    // Nothing but the file itself is left in its directory's namespace (no temp files).
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A metrics file that cannot be written is a warning, never a failed backup.
    let out = env.run(
        &[
            "--metrics-file",
            "/nonexistent/dir/x.prom",
            "backup",
            "--name",
            "shop",
        ],
        &sql_like(100, 13),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("metrics file not written"),
        "{}",
        stderr(&out)
    );
}

/// Truncated dumps are refused with exit 6 and leave no snapshot; complete ones record their
/// kind. Real pg_dump (plain, custom, pg_dumpall) and a real RDB.
#[test]
fn truncated_dumps_are_refused_and_kinds_recorded() {
    let pg = crate::e2e_pg::Pg::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t(id int primary key, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
    );
    let dump = |args: &[&str]| {
        let out = pg
            .cmd("pg_dump")
            .args(args)
            .arg("postgres")
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_dump: {}", stderr(&out));
        out.stdout
    };
    let plain = dump(&[]);
    let env = Env::new();
    let kind_of = |id: &str| {
        let list = env.snapshots_json(&[]);
        snapshot(&list, id)["streams"][0]["dump"].clone()
    };

    let id = env.backup(&plain, &["--name", "pg"]);
    let d = kind_of(&id);
    assert_eq!(d["kind"], "pg_dump_plain", "{d}");
    assert_eq!(d["complete"], true, "{d}");

    // Cut the plain dump anywhere before its trailer: refused, exit 6, no snapshot.
    for cut in [plain.len() / 2, plain.len() - 200] {
        let out = env.run(&["backup", "--name", "pg-cut"], &plain[..cut]);
        assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("truncated pg_dump_plain"),
            "{}",
            stderr(&out)
        );
    }
    // The same, from a producer command that gets cut (as if the server died mid-dump).
    let f = env.dir.path().join("plain.sql");
    std::fs::write(&f, &plain).unwrap();
    let out = env.run(
        &[
            "backup",
            "--name",
            "pg-cut",
            "--",
            "head",
            "-c",
            "50000",
            f.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(env.snapshots_json(&["--name", "pg-cut"]).is_empty());
    // --allow-truncated stores it and records the verdict.
    let id = env.backup(
        &plain[..plain.len() / 2],
        &["--name", "pg-cut", "--allow-truncated"],
    );
    let d = kind_of(&id);
    assert_eq!(
        (d["kind"].clone(), d["complete"].clone()),
        ("pg_dump_plain".into(), false.into())
    );

    // pg_dumpall --globals-only.
    let out = pg.cmd("pg_dumpall").arg("--globals-only").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = env.backup(&out.stdout, &["--name", "globals"]);
    assert_eq!(kind_of(&id)["kind"], "pg_dumpall");
    let out = env.run(
        &["backup", "--name", "globals"],
        &out.stdout[..out.stdout.len() - 30],
    );
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));

    // Custom format: pg_dump's own compression is reported with a -Z0 hint; -Z0 is clean.
    let out = env.run(&["backup", "--name", "pgc"], &dump(&["-Fc"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("-Z0"), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let d = kind_of(&id);
    assert_eq!(d["kind"], "pg_dump_custom", "{d}");
    assert_ne!(d["compression"], "none", "{d}");
    assert_eq!(d["complete"], true, "{d}");
    let out = env.run(&["backup", "--name", "pgc"], &dump(&["-Fc", "-Z0"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("-Z0"), "{}", stderr(&out));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(kind_of(&id)["compression"], "none");

    // Redis: a real RDB records its kind; cut or with a flipped byte it is refused.
    let redis = RedisServer::start();
    fill_redis(&redis, 3000, 20);
    let rdb = fetch_rdb(&redis, env.dir.path());
    let id = env.backup(&rdb, &["--name", "redis"]);
    let d = kind_of(&id);
    assert_eq!(
        (d["kind"].clone(), d["complete"].clone()),
        ("redis_rdb".into(), true.into()),
        "{d}"
    );
    let before = env.snapshots_json(&[]).len();
    let out = env.run(&["backup", "--name", "redis"], &rdb[..rdb.len() - 4]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let mut flipped = rdb.clone();
    flipped[rdb.len() / 2] ^= 0x20;
    let out = env.run(&["backup", "--name", "redis"], &flipped);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("CRC-64"), "{}", stderr(&out));
    assert_eq!(
        env.snapshots_json(&[]).len(),
        before,
        "no snapshot for refused dumps"
    );
    // Anything else is not a dump kind: no `dump` field at all.
    let id = env.backup(&noise(10_000, 21), &["--name", "other"]);
    assert!(kind_of(&id).is_null());
}
