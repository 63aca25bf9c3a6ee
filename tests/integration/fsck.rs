//! `fsck` and `repair` on damaged-repository fixtures: one bit flipped in every kind of object,
//! a truncated pack, a deleted pack, all index files deleted, duplicate packs, unreadable
//! objects. Each test asserts exactly what `fsck --json` reports (object, id, code and the
//! affected snapshots) and what `repair` recovers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// One `fsck --json` run: exit code, the parsed report, stderr.
struct Report {
    code: i32,
    json: Value,
    stderr: String,
}

impl Report {
    fn problems(&self, severity: &str) -> Vec<&Value> {
        self.json["problems"]
            .as_array()
            .expect("problems is an array")
            .iter()
            .filter(|p| p["severity"] == severity)
            .collect()
    }

    fn damage(&self) -> Vec<&Value> {
        self.problems("damage")
    }

    fn warnings(&self) -> Vec<&Value> {
        self.problems("warning")
    }

    fn count(&self, what: &str) -> u64 {
        self.json["counts"][what]
            .as_u64()
            .unwrap_or_else(|| panic!("counts.{what} in {}", self.json))
    }

    /// (object, id, code) of every problem of a severity, sorted.
    fn keys(&self, severity: &str) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .problems(severity)
            .into_iter()
            .map(|p| (s(&p["object"]), s(&p["id"]), s(&p["problem"])))
            .collect();
        v.sort();
        v
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a string"))
        .to_string()
}

fn key(object: &str, id: &str, code: &str) -> (String, String, String) {
    (object.into(), id.into(), code.into())
}

fn parse_report(out: &Output) -> Report {
    let code = out.status.code().expect("exited normally");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck --json must print a report (exit {code}): {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(out)
        )
    });
    let r = Report {
        code,
        json,
        stderr: stderr(out),
    };
    // The summary fields agree with the problem list and the exit code.
    let damaged = !r.damage().is_empty();
    assert_eq!(r.json["damaged"], damaged, "{}", r.json);
    assert_eq!(r.json["ok"], !damaged, "{}", r.json);
    assert_eq!(
        r.code,
        if damaged { EXIT_DAMAGED } else { EXIT_OK },
        "exit code vs report: {}\n{}",
        r.json,
        r.stderr
    );
    for p in r.json["problems"].as_array().unwrap() {
        for f in ["severity", "object", "id", "problem", "detail"] {
            assert!(p[f].is_string(), "problem field {f}: {p}");
        }
        assert!(p["affected_snapshots"].is_array(), "{p}");
        if p["severity"] == "warning" {
            assert_eq!(p["affected_snapshots"], serde_json::json!([]), "{p}");
        }
    }
    r
}

/// `fsck --json ARGS` with the password.
fn fsck(env: &Env, args: &[&str]) -> Report {
    let mut a = vec!["fsck", "--json"];
    a.extend_from_slice(args);
    parse_report(&env.run(&a, b""))
}

/// `fsck --no-key --json` with no password variable (nor file, nor command) at all.
fn fsck_no_key(env: &Env) -> Report {
    let mut c = env.cmd();
    c.env_remove("DUMPVAULT_PASSWORD");
    let r = parse_report(&run_with(c, &["fsck", "--no-key", "--json"], b""));
    assert_eq!(r.json["mode"], "no-key");
    r
}

/// Back up `data` as series `name` at `time`; returns the snapshot id and the packs it wrote.
fn backup_at(env: &Env, data: &[u8], name: &str, time: &str) -> (String, Vec<PathBuf>) {
    let before: BTreeSet<PathBuf> = env.files_under("data").into_iter().collect();
    let id = env.backup(data, &["--name", name, "--time", time]);
    let new = env
        .files_under("data")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    (id, new)
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x10;
    std::fs::write(path, b).unwrap();
}

/// What fsck should list as affected: `{id, name, time}` of these snapshots, oldest first.
fn affected(env: &Env, ids: &[&String]) -> Value {
    let mut v: Vec<Value> = env
        .snapshots_json(&[])
        .into_iter()
        .filter(|sn| ids.iter().any(|id| sn["id"] == id.as_str()))
        .map(|sn| serde_json::json!({"id": sn["id"], "name": sn["name"], "time": sn["time"]}))
        .collect();
    v.sort_by_key(|a| (s(&a["time"]), s(&a["id"])));
    assert_eq!(v.len(), ids.len(), "every expected snapshot exists");
    Value::Array(v)
}

/// Union of the snapshot ids named by the damage problems.
fn damaged_ids(r: &Report) -> BTreeSet<String> {
    r.damage()
        .iter()
        .flat_map(|p| p["affected_snapshots"].as_array().unwrap().iter())
        .map(|a| s(&a["id"]))
        .collect()
}

fn ids(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn assert_restores(env: &Env, id: &str, data: &[u8]) {
    let got = env.restore(&[id]);
    assert!(
        got == data,
        "snapshot {id} must restore byte-exact ({} bytes, expected {})",
        got.len(),
        data.len()
    );
}

fn assert_restore_fails(env: &Env, id: &str) {
    let out = env.run(&["restore", id], b"");
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
}

fn repair_json(env: &Env, args: &[&str]) -> Value {
    repair_json_exit(env, args, EXIT_OK)
}

/// `repair ARGS --json`, which must exit with `code`; its report.
fn repair_json_exit(env: &Env, args: &[&str], code: i32) -> Value {
    let mut a = vec!["repair"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = env.run(&a, b"");
    assert_eq!(
        out.status.code(),
        Some(code),
        "repair {args:?}: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("repair --json is JSON")
}

/// Two series whose data live in different packs.
///
/// - series `a`: a1 = A (pack `packs_a[0]`), a2 = A + tail (pack `packs_a[1]`: the tail and the
///   re-cut last chunk), a3 = A again (no new pack). The first chunk of A, at the start of
///   `packs_a[0]`, is shared by all three.
/// - series `b`: b1 = B (pack `packs_b[0]`), b2 = B + tail (pack `packs_b[1]`).
struct TwoSeries {
    env: Env,
    a: Vec<u8>,
    a_tail: Vec<u8>,
    b: Vec<u8>,
    b_tail: Vec<u8>,
    snaps_a: Vec<String>,
    snaps_b: Vec<String>,
    packs_a: Vec<PathBuf>,
    packs_b: Vec<PathBuf>,
    /// Index file written by each backup that wrote a pack, in the same order as the packs.
    index_a: Vec<PathBuf>,
}

fn two_series() -> TwoSeries {
    let env = Env::new();
    let a = sql_like(10_000, 1);
    let mut a_tail = a.clone();
    a_tail.extend_from_slice(&sql_like(400, 5));
    let mut b = noise(150_000, 2);
    b.extend_from_slice(&sql_like(5_000, 3));
    let mut b_tail = b.clone();
    b_tail.extend_from_slice(&sql_like(300, 4));

    let new_index = |before: &BTreeSet<PathBuf>| -> PathBuf {
        let v: Vec<_> = env
            .files_under("index")
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        assert_eq!(v.len(), 1, "one index file per backup that wrote a pack");
        v.into_iter().next().unwrap()
    };
    let mut index_a = Vec::new();
    let ix0: BTreeSet<PathBuf> = env.files_under("index").into_iter().collect();
    let (a1, pa1) = backup_at(&env, &a, "a", "2024-01-01 00:00:00");
    index_a.push(new_index(&ix0));
    let ix1: BTreeSet<PathBuf> = env.files_under("index").into_iter().collect();
    let (a2, pa2) = backup_at(&env, &a_tail, "a", "2024-01-02 00:00:00");
    index_a.push(new_index(&ix1));
    let (a3, pa3) = backup_at(&env, &a, "a", "2024-01-03 00:00:00");
    let (b1, pb1) = backup_at(&env, &b, "b", "2024-01-01 12:00:00");
    let (b2, pb2) = backup_at(&env, &b_tail, "b", "2024-01-02 12:00:00");
    assert_eq!(pa1.len(), 1, "a1 writes one pack");
    assert_eq!(pa2.len(), 1, "a2 writes one pack");
    assert!(pa3.is_empty(), "a3 stores nothing new");
    assert_eq!(pb1.len(), 1, "b1 writes one pack");
    assert_eq!(pb2.len(), 1, "b2 writes one pack");
    TwoSeries {
        env,
        a,
        a_tail,
        b,
        b_tail,
        snaps_a: vec![a1, a2, a3],
        snaps_b: vec![b1, b2],
        packs_a: vec![pa1[0].clone(), pa2[0].clone()],
        packs_b: vec![pb1[0].clone(), pb2[0].clone()],
        index_a,
    }
}

impl TwoSeries {
    fn a_snaps(&self) -> Vec<&String> {
        self.snaps_a.iter().collect()
    }

    fn all_snaps(&self) -> Vec<&String> {
        self.snaps_a.iter().chain(&self.snaps_b).collect()
    }

    fn assert_a_restores(&self) {
        assert_restores(&self.env, &self.snaps_a[0], &self.a);
        assert_restores(&self.env, &self.snaps_a[1], &self.a_tail);
        assert_restores(&self.env, &self.snaps_a[2], &self.a);
    }

    fn assert_b_restores(&self) {
        assert_restores(&self.env, &self.snaps_b[0], &self.b);
        assert_restores(&self.env, &self.snaps_b[1], &self.b_tail);
    }

    /// Damage from losing `packs_a[0]` (deleted or truncated), as the structure check sees it:
    /// the pack problem naming every `a` snapshot, plus one `missing` problem per chunk that
    /// some `a` snapshot needs from it, each naming only `a` snapshots.
    fn assert_lost_first_a_pack(&self, r: &Report, pack_code: &str) {
        let pack = name_of(&self.packs_a[0]);
        let damage = r.damage();
        let packs: Vec<_> = damage.iter().filter(|p| p["object"] == "pack").collect();
        assert_eq!(packs.len(), 1, "{}", r.json);
        assert_eq!(packs[0]["id"], pack.as_str());
        assert_eq!(packs[0]["problem"], pack_code);
        assert_eq!(
            packs[0]["affected_snapshots"],
            affected(&self.env, &self.a_snaps()),
            "the pack problem names every snapshot of series a, and only those"
        );
        let chunks: Vec<_> = damage.iter().filter(|p| p["object"] == "chunk").collect();
        assert_eq!(chunks.len() + 1, damage.len(), "only pack and chunk damage");
        assert!(!chunks.is_empty());
        for c in &chunks {
            assert_eq!(c["problem"], "missing", "{c}");
            assert!(s(&c["detail"]).contains(&pack), "names the pack: {c}");
            assert!(
                !c["affected_snapshots"].as_array().unwrap().is_empty(),
                "{c}"
            );
        }
        assert_eq!(damaged_ids(r), ids(&self.a_snaps()), "{}", r.json);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A clean repository

#[test]
fn clean_repository_passes_every_level() {
    let t = two_series();
    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(r.json["mode"], "structure");
    assert_eq!(r.json["problems"], serde_json::json!([]));
    assert_eq!(r.count("key_files"), 1);
    assert_eq!(r.count("index_files"), 4);
    assert_eq!(r.count("packs"), 4);
    assert_eq!(r.count("snapshots"), 5);
    assert_eq!(r.count("packs_read"), 0, "structure reads no pack whole");

    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(r.json["mode"], "read-data");
    assert_eq!(r.json["problems"], serde_json::json!([]));
    assert_eq!(r.count("packs_read"), 4);
    assert!(r.count("blobs_verified") > 0);
    let bytes: u64 = t
        .packs_a
        .iter()
        .chain(&t.packs_b)
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(r.count("bytes_read"), bytes, "every pack byte was read");
    assert_eq!(r.count("streams_verified"), 2, "one stream per series");

    let r = fsck_no_key(&t.env);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(r.json["problems"], serde_json::json!([]));

    // The human-readable report says so too.
    let out = t.env.run(&["fsck", "--read-data"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("result: ok"), "{text}");
}

#[test]
fn fsck_changes_nothing_in_a_damaged_repository() {
    // fsck on a damaged repository is read-only: no object is written, moved or deleted.
    let t = two_series();
    flip(&t.packs_a[0], 100);
    let before = t.env.fingerprint();
    assert_eq!(fsck(&t.env, &["--read-data"]).code, EXIT_DAMAGED);
    assert_eq!(fsck(&t.env, &[]).code, EXIT_OK);
    assert_eq!(fsck_no_key(&t.env).code, EXIT_DAMAGED);
    assert!(t.env.fingerprint() == before, "fsck changed the repository");
}

// ---------------------------------------------------------------------------------------------
// 2. One bit flipped in one pack

#[test]
fn bit_flip_in_pack_names_the_pack_and_exactly_the_affected_series() {
    let t = two_series();
    let pack = name_of(&t.packs_a[0]);
    // Offset 100 lies inside the first sealed blob: A's first chunk, which every `a` snapshot
    // needs. Tree blobs and the header are untouched, so the structure check cannot see it.
    flip(&t.packs_a[0], 100);

    let r = fsck(&t.env, &[]);
    assert_eq!(
        r.code, EXIT_OK,
        "structure does not read data blobs: {}",
        r.json
    );
    assert_eq!(r.json["problems"], serde_json::json!([]));

    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    assert_eq!(
        r.keys("damage"),
        vec![
            key("pack", &pack, "corrupt"),
            // The newest snapshot of series a, streamed end to end, fails too.
            key("snapshot", &t.snaps_a[2], "stream_mismatch"),
        ],
        "{}",
        r.json
    );
    assert!(r.warnings().is_empty(), "{}", r.json);
    let p = r
        .damage()
        .into_iter()
        .find(|p| p["object"] == "pack")
        .unwrap();
    assert_eq!(
        p["affected_snapshots"],
        affected(&t.env, &t.a_snaps()),
        "every snapshot of series a, and no snapshot of series b"
    );
    let detail = s(&p["detail"]);
    assert!(detail.contains("does not hash to its name"), "{detail}");
    assert!(detail.contains("1 of"), "exactly one blob fails: {detail}");
    let sn = r
        .damage()
        .into_iter()
        .find(|p| p["object"] == "snapshot")
        .unwrap();
    assert_eq!(sn["affected_snapshots"], affected(&t.env, &[&t.snaps_a[2]]));
    assert_eq!(r.count("packs_read"), 4);
    assert_eq!(r.count("streams_verified"), 1, "series b still streams");

    // The human-readable report names the pack and the affected snapshots.
    let out = t.env.run(&["fsck", "--read-data"], b"");
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("pack {pack} corrupt")), "{text}");
    for id in &t.snaps_a {
        assert!(
            text.contains(&format!("affects snapshot {}", &id[..16])),
            "{text}"
        );
    }
    for id in &t.snaps_b {
        assert!(!text.contains(&id[..16]), "{text}");
    }
    assert!(text.contains("result: DAMAGED"), "{text}");

    // Snapshots not touching the pack still restore byte-exact; the others refuse.
    t.assert_b_restores();
    for id in &t.snaps_a {
        assert_restore_fails(&t.env, id);
    }

    // Recovery: drop the pack fsck named, rebuild the index, back up the same data again.
    std::fs::remove_file(&t.packs_a[0]).unwrap();
    repair_json(&t.env, &["index"]);
    backup_at(&t.env, &t.a, "a", "2024-01-04 00:00:00");
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    t.assert_a_restores();
    t.assert_b_restores();
}

/// GAP (reported, not fixed here; a design question more than a slip): after a bit flip in a
/// data blob, the documented repairs do not help. `repair index` keeps the pack (its header
/// still opens), so the next backup of the same data deduplicates against the corrupt blob and
/// writes a NEW snapshot that cannot be restored either; `repair snapshots` (a structure check)
/// prints "every snapshot is restorable". Only deleting the pack by hand heals it.
#[test]
fn backup_after_repair_index_does_not_reuse_a_corrupt_blob() {
    let t = two_series();
    flip(&t.packs_a[0], 100);
    assert_eq!(fsck(&t.env, &["--read-data"]).code, EXIT_DAMAGED);
    repair_json(&t.env, &["index"]);
    let (a4, _) = backup_at(&t.env, &t.a, "a", "2024-01-04 00:00:00");
    let out = t.env.run(&["restore", &a4], b"");
    assert!(
        out.status.success() && out.stdout == t.a,
        "the new snapshot of the same data must restore: {}",
        stderr(&out)
    );
}

#[test]
fn bit_flip_in_pack_header_affects_every_snapshot_using_the_pack() {
    let t = two_series();
    let pack = name_of(&t.packs_b[0]);
    // The sealed header sits just before the 8-byte trailer.
    let len = std::fs::metadata(&t.packs_b[0]).unwrap().len() as usize;
    flip(&t.packs_b[0], len - 8 - 30);
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    let damage = r.keys("damage");
    assert!(
        damage.contains(&key("pack", &pack, "corrupt")),
        "{}",
        r.json
    );
    let p = r
        .damage()
        .into_iter()
        .find(|p| p["object"] == "pack")
        .unwrap();
    assert!(s(&p["detail"]).contains("header"), "{p}");
    assert_eq!(
        p["affected_snapshots"],
        affected(&t.env, &t.snaps_b.iter().collect::<Vec<_>>())
    );
    assert_eq!(
        damaged_ids(&r),
        ids(&t.snaps_b.iter().collect::<Vec<_>>()),
        "{}",
        r.json
    );
    t.assert_a_restores();
}

// ---------------------------------------------------------------------------------------------
// 3. A truncated pack

#[test]
fn truncated_pack_is_a_size_mismatch_naming_the_affected_snapshots() {
    let t = two_series();
    let b = std::fs::read(&t.packs_a[0]).unwrap();
    std::fs::write(&t.packs_a[0], &b[..b.len() / 2]).unwrap();

    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    t.assert_lost_first_a_pack(&r, "size_mismatch");
    assert!(r.warnings().is_empty(), "{}", r.json);
    let p = r
        .damage()
        .into_iter()
        .find(|p| p["object"] == "pack")
        .unwrap();
    assert!(
        s(&p["detail"]).contains(&format!("{} bytes stored", b.len() / 2)),
        "{p}"
    );
    // --no-key sees the truncation as a name mismatch.
    let r = fsck_no_key(&t.env);
    assert_eq!(
        r.keys("damage"),
        vec![key("pack", &name_of(&t.packs_a[0]), "name_mismatch")],
        "{}",
        r.json
    );
    t.assert_b_restores();

    // repair index drops the pack (its trailer is gone); the next backup re-uploads A; the
    // truncated file stays as an unindexed leftover for prune.
    let rep = repair_json(&t.env, &["index"]);
    assert_eq!(rep["packs_indexed"], 3, "{rep}");
    let skipped = rep["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{rep}");
    assert_eq!(skipped[0]["id"], name_of(&t.packs_a[0]).as_str());
    backup_at(&t.env, &t.a, "a", "2024-01-04 00:00:00");
    t.assert_a_restores();
    t.assert_b_restores();
    let leftover = key("pack", &name_of(&t.packs_a[0]), "unindexed");
    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    assert_eq!(r.keys("warning"), vec![leftover.clone()]);
    // --read-data also reads the unindexed leftover and calls it damage, though no snapshot
    // needs it (see the report: arguably a warning).
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(
        r.keys("damage"),
        vec![key("pack", &name_of(&t.packs_a[0]), "corrupt")],
        "{}",
        r.json
    );
    assert_eq!(r.damage()[0]["affected_snapshots"], serde_json::json!([]));
    assert_eq!(r.keys("warning"), vec![leftover]);
    assert_eq!(r.count("streams_verified"), 2);
    // Once the leftover is gone (prune's job), the repository is clean.
    std::fs::remove_file(&t.packs_a[0]).unwrap();
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    assert_eq!(r.json["problems"], serde_json::json!([]));
}

// ---------------------------------------------------------------------------------------------
// 4. A deleted pack

#[test]
fn deleted_pack_is_missing_with_and_without_key_and_heals_after_repair_and_backup() {
    let t = two_series();
    let pack = name_of(&t.packs_a[0]);
    std::fs::remove_file(&t.packs_a[0]).unwrap();

    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    t.assert_lost_first_a_pack(&r, "missing");
    assert!(r.warnings().is_empty(), "{}", r.json);

    let r = fsck_no_key(&t.env);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    assert_eq!(r.keys("damage"), vec![key("pack", &pack, "missing")]);
    assert!(r.warnings().is_empty(), "{}", r.json);

    // repair snapshots lists the unrestorable snapshots and deletes nothing.
    let before = t.env.fingerprint();
    let rep = repair_json_exit(&t.env, &["snapshots"], EXIT_DAMAGED);
    assert_eq!(rep["removed"], false);
    assert_eq!(rep["unrestorable"], affected(&t.env, &t.a_snaps()));
    assert!(
        t.env.fingerprint() == before,
        "repair snapshots without --remove changed nothing"
    );
    let out = t.env.run(&["repair", "snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for id in &t.snaps_a {
        assert!(
            text.contains(&format!("unrestorable snapshot {id}")),
            "{text}"
        );
    }
    assert!(text.contains("--remove"), "{text}");

    // repair index forgets the lost pack: its chunks are now simply unknown.
    let rep = repair_json(&t.env, &["index"]);
    assert_eq!(rep["packs_indexed"], 3, "{rep}");
    assert_eq!(rep["skipped"], serde_json::json!([]));
    assert_eq!(rep["removed_index_files"].as_array().unwrap().len(), 4);
    assert_eq!(t.env.files_under("index").len(), 1);
    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_DAMAGED);
    assert!(
        r.damage()
            .iter()
            .all(|p| p["object"] == "chunk" && p["problem"] == "missing"),
        "{}",
        r.json
    );
    assert_eq!(damaged_ids(&r), ids(&t.a_snaps()));

    // Self-healing: the next backup of the same data uploads the lost chunks again.
    let (a4, new_packs) = backup_at(&t.env, &t.a, "a", "2024-01-04 00:00:00");
    assert_eq!(new_packs.len(), 1, "the missing chunks were uploaded again");
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    assert_eq!(r.json["problems"], serde_json::json!([]));
    assert_eq!(r.count("streams_verified"), 2);
    assert_restores(&t.env, &a4, &t.a);
    // The old snapshots name the same chunks, so they restore again too.
    t.assert_a_restores();
    t.assert_b_restores();
    let rep = repair_json(&t.env, &["snapshots"]);
    assert_eq!(rep["unrestorable"], serde_json::json!([]));
}

#[test]
fn repair_snapshots_remove_deletes_exactly_the_unrestorable_snapshots() {
    let t = two_series();
    let pack = name_of(&t.packs_a[0]);
    std::fs::remove_file(&t.packs_a[0]).unwrap();

    let rep = repair_json(&t.env, &["snapshots", "--remove"]);
    assert_eq!(rep["removed"], true);
    let expected: Vec<String> = t.snaps_a.clone();
    let got: Vec<String> = rep["unrestorable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| s(&a["id"]))
        .collect();
    assert_eq!(got, expected);
    let left: BTreeSet<String> = t
        .env
        .files_under("snapshots")
        .iter()
        .map(|p| name_of(p))
        .collect();
    assert_eq!(left, ids(&t.snaps_b.iter().collect::<Vec<_>>()));

    // No snapshot is damaged any more; the index still lists the lost pack, which fsck keeps
    // reporting (affecting no snapshot) until repair index drops it.
    let r = fsck(&t.env, &[]);
    assert_eq!(
        r.keys("damage"),
        vec![key("pack", &pack, "missing")],
        "{}",
        r.json
    );
    assert_eq!(r.damage()[0]["affected_snapshots"], serde_json::json!([]));
    repair_json(&t.env, &["index"]);
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    // a2's pack is no longer used by any snapshot.
    assert_eq!(
        r.keys("warning"),
        vec![key("pack", &name_of(&t.packs_a[1]), "unreferenced")],
        "{}",
        r.json
    );
    t.assert_b_restores();
}

// ---------------------------------------------------------------------------------------------
// 5. All index files deleted

#[test]
fn all_index_files_deleted_then_repair_index_restores_every_snapshot() {
    let t = two_series();
    for f in t.env.files_under("index") {
        std::fs::remove_file(f).unwrap();
    }
    // The cache still holds the old index: fsck must not trust it.
    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    assert_eq!(r.count("index_files"), 0);
    for p in r.damage() {
        assert_eq!(p["object"], "chunk", "{p}");
        assert_eq!(p["problem"], "missing", "{p}");
        assert_eq!(p["detail"], "not in any index", "{p}");
    }
    assert_eq!(damaged_ids(&r), ids(&t.all_snaps()), "{}", r.json);
    let mut packs: Vec<_> = t
        .packs_a
        .iter()
        .chain(&t.packs_b)
        .map(|p| key("pack", &name_of(p), "unindexed"))
        .collect();
    packs.sort();
    assert_eq!(r.keys("warning"), packs, "{}", r.json);
    // a1 and a3 share one chunk list: four distinct roots for five snapshots.
    assert_eq!(r.damage().len(), 4, "{}", r.json);

    // Without a key, the packs are extra objects and nothing is missing.
    let r = fsck_no_key(&t.env);
    assert_eq!(r.code, EXIT_OK);
    assert_eq!(r.keys("warning"), packs);

    let rep = repair_json(&t.env, &["index"]);
    assert_eq!(rep["packs_indexed"], 4, "{rep}");
    assert_eq!(rep["skipped"], serde_json::json!([]));
    assert_eq!(rep["removed_index_files"], serde_json::json!([]));
    assert_eq!(t.env.files_under("index").len(), 1);
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    assert_eq!(r.json["problems"], serde_json::json!([]));
    assert_eq!(r.count("streams_verified"), 2);
    t.assert_a_restores();
    t.assert_b_restores();
    // Also without the cache.
    let out = t.env.run(&["--no-cache", "restore", &t.snaps_a[1]], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == t.a_tail);
}

// ---------------------------------------------------------------------------------------------
// 6. Duplicate packs

/// Regression for "fsck prints one warning line per duplicated chunk" (issue 17: 2,858 lines
/// after two concurrent backups): duplicates are one warning, which lists every chunk with
/// its packs in `duplicates`, and the human report gives them one line.
#[test]
fn fsck_prints_one_warning_line_per_duplicated_chunk() {
    let env = Env::new();
    let x = sql_like(8_000, 21);
    let (s1, p1) = backup_at(&env, &x, "x", "2024-02-01 00:00:00");
    // Lose the index (and the cache with it), so the next backup of the same data stores
    // every chunk again, in a second pack.
    for f in env.files_under("index") {
        std::fs::remove_file(f).unwrap();
    }
    std::fs::remove_dir_all(&env.cache).unwrap();
    let (s2, p2) = backup_at(&env, &x, "x", "2024-02-02 00:00:00");
    assert_eq!((p1.len(), p2.len()), (1, 1));
    assert_ne!(p1, p2, "random nonces: same chunks, different pack bytes");

    let rep = repair_json(&env, &["index"]);
    assert_eq!(rep["packs_indexed"], 2, "{rep}");
    let mut both = vec![name_of(&p1[0]), name_of(&p2[0])];
    both.sort();
    for args in [&["--read-data"][..], &[]] {
        let r = fsck(&env, args);
        assert_eq!(r.code, EXIT_OK, "duplicates are not damage: {}", r.json);
        let w = r.warnings();
        assert_eq!(w.len(), 1, "one warning for all duplicates: {}", r.json);
        let p = w[0];
        assert_eq!(
            (s(&p["object"]), s(&p["id"]), s(&p["problem"])),
            key("chunk", "-", "duplicate")
        );
        let dups = p["duplicates"].as_array().expect("duplicates listed");
        // Every chunk is in both packs (one pack per backup of the same data).
        assert!(dups.len() > 1, "{p}");
        let mut chunks = BTreeSet::new();
        let mut extra = 0;
        for d in dups {
            assert_eq!(d["packs"], serde_json::json!(both), "{d}");
            assert!(chunks.insert(s(&d["chunk"])), "each chunk once: {d}");
            extra += d["extra_bytes"].as_u64().unwrap();
        }
        let detail = s(&p["detail"]);
        assert!(
            detail.starts_with(&format!(
                "{} chunks are stored in more than one pack",
                dups.len()
            )) && detail.contains(&format!("{extra} bytes of extra copies")),
            "{detail}"
        );
        if args.is_empty() {
            continue;
        }
        // With --read-data every blob of both packs is verified: each chunk is in both.
        assert_eq!(
            r.count("blobs_verified"),
            2 * dups.len() as u64,
            "{}",
            r.json
        );
    }
    // The human report: one line.
    let out = env.run(&["fsck"], b"");
    assert_eq!(out.status.code(), Some(EXIT_OK));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("duplicate")).collect();
    assert_eq!(lines.len(), 1, "one line for the duplicates:\n{text}");
    assert!(text.contains("result: ok (1 warnings)"), "{text}");
    assert_restores(&env, &s1, &x);
    assert_restores(&env, &s2, &x);
}

/// Regression for "fsck labels packs a damaged snapshot still uses as `unreferenced: prune
/// removes it`" (issue 17): with a snapshot unreadable, or a pack holding a snapshot's tree
/// missing, fsck cannot know which packs that snapshot needs, and prune refuses to run. fsck
/// now says reachability is unknown, naming the damaged snapshot, and never "prune removes
/// it"; and prune indeed refuses and deletes nothing.
#[test]
fn fsck_labels_packs_of_a_damaged_snapshot_unreferenced() {
    // (1) An unreadable snapshot: its pack is used by no snapshot that could be read.
    let env = Env::new();
    backup_at(&env, &sql_like(3_000, 61), "x", "2024-05-01 00:00:00");
    let (y, y_packs) = backup_at(&env, &noise(200_000, 62), "y", "2024-05-02 00:00:00");
    assert_eq!(y_packs.len(), 1);
    flip(&env.repo.join("snapshots").join(&y), 40);
    // (2) A missing pack that holds a stream's root tree: the walk stops there, so the packs
    //     holding the rest of that stream look unused. Small packs make the stream span
    //     several; the root tree is written last, into the last pack.
    let env2 = Env::uninit();
    env2.init(&["--pack-size", "1"]);
    let (z, z_packs) = backup_at(&env2, &noise(3_500_000, 63), "z", "2024-05-03 00:00:00");
    assert!(z_packs.len() >= 3, "{z_packs:?}");
    let last = z_packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap()
        .clone();
    std::fs::remove_file(&last).unwrap();

    for (env, damaged, others) in [
        (&env, &y, y_packs.clone()),
        (
            &env2,
            &z,
            z_packs.iter().filter(|p| **p != last).cloned().collect(),
        ),
    ] {
        let r = fsck(env, &[]);
        assert_eq!(r.code, EXIT_DAMAGED, "{}", r.json);
        let mut expect: Vec<_> = others
            .iter()
            .map(|p| key("pack", &name_of(p), "reachability_unknown"))
            .collect();
        expect.sort();
        assert_eq!(r.keys("warning"), expect, "{}", r.json);
        for w in r.warnings() {
            let d = s(&w["detail"]);
            assert!(
                d.contains(&format!("snapshot {damaged} is damaged"))
                    && d.contains("prune refuses")
                    && !d.contains("prune removes it"),
                "{d}"
            );
        }
        // The advice matches prune: it refuses and deletes nothing.
        let before = env.fingerprint();
        let out = env.run(&["prune"], b"");
        assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
        assert!(env.fingerprint() == before, "prune deleted nothing");
    }
}

// ---------------------------------------------------------------------------------------------
// 7. One bit flipped in each other kind of object

#[test]
fn bit_flip_in_index_file_is_named_and_repair_index_recovers() {
    let t = two_series();
    let idx = &t.index_a[0];
    let idx_name = name_of(idx);
    flip(idx, 200);

    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    let damage = r.keys("damage");
    assert!(
        damage.contains(&key("index", &idx_name, "corrupt")),
        "{}",
        r.json
    );
    // Everything else is the consequence: a's chunks in the pack that index described are
    // unknown, and that pack is unindexed.
    assert!(
        damage
            .iter()
            .all(|k| k.0 == "chunk" && k.2 == "missing" || k.0 == "index"),
        "{}",
        r.json
    );
    assert_eq!(damaged_ids(&r), ids(&t.a_snaps()), "{}", r.json);
    assert_eq!(
        r.keys("warning"),
        vec![key("pack", &name_of(&t.packs_a[0]), "unindexed")]
    );

    let r = fsck_no_key(&t.env);
    assert_eq!(
        r.keys("damage"),
        vec![key("index", &idx_name, "name_mismatch")],
        "{}",
        r.json
    );

    t.assert_b_restores();
    let rep = repair_json(&t.env, &["index"]);
    assert_eq!(rep["packs_indexed"], 4, "{rep}");
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
    assert_eq!(r.json["problems"], serde_json::json!([]));
    t.assert_a_restores();
    t.assert_b_restores();
}

/// BUG (reported, not fixed here): a corrupt index file is reported with no affected
/// snapshots, although with the key fsck can tell which snapshots it breaks (the issue: "every
/// problem names the object and every snapshot it affects"). The snapshots are named only by
/// the separate per-chunk `missing` problems.
#[test]
fn bit_flip_in_index_file_names_the_snapshots_it_affects() {
    let t = two_series();
    flip(&t.index_a[0], 200);
    let r = fsck(&t.env, &[]);
    let p = r
        .damage()
        .into_iter()
        .find(|p| p["object"] == "index")
        .expect("index problem");
    assert_eq!(
        p["affected_snapshots"],
        affected(&t.env, &t.a_snaps()),
        "{}",
        r.json
    );
}

#[test]
fn bit_flip_in_snapshot_is_named() {
    let t = two_series();
    let snap = t.env.repo.join("snapshots").join(&t.snaps_b[0]);
    flip(&snap, 40);

    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    assert_eq!(
        r.keys("damage"),
        vec![key("snapshot", &t.snaps_b[0], "corrupt")],
        "{}",
        r.json
    );
    assert!(r.warnings().is_empty(), "{}", r.json);
    let r = fsck_no_key(&t.env);
    assert_eq!(
        r.keys("damage"),
        vec![key("snapshot", &t.snaps_b[0], "name_mismatch")]
    );
    let r = fsck(&t.env, &["--read-data"]);
    assert_eq!(
        r.keys("damage"),
        vec![key("snapshot", &t.snaps_b[0], "corrupt")],
        "{}",
        r.json
    );
    // Its data is intact: the packs are all read and every other series still streams.
    assert_eq!(r.count("streams_verified"), 2);
}

/// One corrupt snapshot manifest must not make the other snapshots unrestorable by id. It
/// does stop `latest` (issue 17): a manifest that cannot be read cannot say which series it
/// belongs to, so it may be the newest match; `--skip-damaged` chooses among the readable ones.
#[test]
fn one_corrupt_snapshot_does_not_block_restoring_the_others() {
    let t = two_series();
    let snap = t.env.repo.join("snapshots").join(&t.snaps_b[0]);
    flip(&snap, 40);
    // b2 shares most chunks with b1; both series' data is intact.
    assert_restores(&t.env, &t.snaps_b[1], &t.b_tail);
    t.assert_a_restores();
    let out = t.env.run(&["restore", "latest", "--name", "a"], b"");
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{}", stderr(&out));
    assert!(stderr(&out).contains(&t.snaps_b[0]), "{}", stderr(&out));
    let out = t
        .env
        .run(&["restore", "latest", "--name", "a", "--skip-damaged"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == t.a);
}

/// BUG (reported, not fixed here): `repair snapshots --remove` does not remove a snapshot
/// whose manifest is corrupt (it can only list snapshots whose name and time it could read),
/// so fsck stays at exit 7 and there is no repair for this damage short of deleting the file
/// by hand. The issue: "`repair snapshots` marks or removes snapshots that cannot be restored".
#[test]
fn repair_snapshots_remove_deletes_a_corrupt_snapshot() {
    let t = two_series();
    let snap = t.env.repo.join("snapshots").join(&t.snaps_b[0]);
    flip(&snap, 40);
    let rep = repair_json_exit(&t.env, &["snapshots"], EXIT_DAMAGED);
    let listed: Vec<String> = rep["unrestorable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| s(&a["id"]))
        .collect();
    assert_eq!(listed, vec![t.snaps_b[0].clone()], "{rep}");
    repair_json(&t.env, &["snapshots", "--remove"]);
    assert!(!snap.exists());
    let r = fsck(&t.env, &[]);
    assert_eq!(r.code, EXIT_OK, "{}", r.json);
}

#[test]
fn bit_flip_in_the_only_key_fails_every_command_as_damage() {
    let t = two_series();
    let keys = t.env.files_under("keys");
    assert_eq!(keys.len(), 1);
    flip(&keys[0], 20);
    let kname = name_of(&keys[0]);
    for args in [
        &["fsck"][..],
        &["fsck", "--read-data"],
        &["snapshots"],
        &["restore", "latest"],
        &["repair", "index"],
    ] {
        let out = t.env.run(args, b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_DAMAGED),
            "{args:?}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("key") && err.contains(&kname),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // Without a key, fsck can still say which object is damaged.
    let r = fsck_no_key(&t.env);
    assert_eq!(r.code, EXIT_DAMAGED);
    assert_eq!(
        r.keys("damage"),
        vec![key("key", &kname, "corrupt")],
        "{}",
        r.json
    );
}

#[test]
fn bit_flip_in_one_of_two_keys_is_reported_while_the_other_password_works() {
    let t = two_series();
    let first = t.env.files_under("keys");
    t.env.add_key("second");
    assert_eq!(t.env.files_under("keys").len(), 2);
    flip(&first[0], 20);
    let kname = name_of(&first[0]);

    let mut c = t.env.cmd();
    c.env("DUMPVAULT_PASSWORD", "second");
    let r = parse_report(&run_with(c, &["fsck", "--json", "--read-data"], b""));
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    assert_eq!(
        r.keys("damage"),
        vec![key("key", &kname, "corrupt")],
        "{}",
        r.json
    );
    assert!(r.warnings().is_empty());
    assert_eq!(r.count("key_files"), 2);
    assert_eq!(r.count("streams_verified"), 2, "the data itself is intact");

    let r = fsck_no_key(&t.env);
    assert_eq!(r.keys("damage"), vec![key("key", &kname, "corrupt")]);

    let mut c = t.env.cmd();
    c.env("DUMPVAULT_PASSWORD", "second");
    let out = run_with(c, &["restore", &t.snaps_b[1]], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == t.b_tail);
    // The damaged key's own password no longer opens anything.
    let out = t.env.run(&["snapshots"], b"");
    assert!(
        matches!(out.status.code(), Some(EXIT_WRONG_PASSWORD | EXIT_DAMAGED)),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bit_flip_in_config_fails_fsck_with_a_key() {
    // Offsets: ro_compat and compat flags, chunker min, pack target, created, and the MAC
    // itself. The keyed MAC catches each of them.
    for at in [22, 30, 70, 81, 90, 100] {
        let env = Env::new();
        env.backup(&sql_like(500, 31), &["--name", "x"]);
        flip(&env.repo.join("config"), at);
        let out = env.run(&["fsck", "--json"], b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_DAMAGED),
            "config byte {at}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("config"),
            "byte {at}: {}",
            stderr(&out)
        );
    }
    // A flip in the format version or the incompat flags is indistinguishable, before any key
    // is opened, from a repository written by a newer dumpvault: exit 8, which refuses to go on
    // (a documented limitation, not silence).
    for at in [11, 15] {
        let env = Env::new();
        env.backup(&sql_like(500, 31), &["--name", "x"]);
        flip(&env.repo.join("config"), at);
        let out = env.run(&["fsck", "--json"], b"");
        assert_eq!(
            out.status.code(),
            Some(8),
            "config byte {at}: {}",
            stderr(&out)
        );
    }
}

/// BUG (reported, not fixed here): a bit flipped in the config's repository id reads as a
/// wrong password (exit 4, "no key file of this repository opens with the given password"):
/// `Repo::open` skips key files whose repository id differs from the config's, so fsck never
/// gets to say the config is damaged. The password is right; the config is not.
#[test]
fn bit_flip_in_config_repository_id_is_damage_not_wrong_password() {
    let env = Env::new();
    env.backup(&sql_like(500, 31), &["--name", "x"]);
    flip(&env.repo.join("config"), 40);
    let out = env.run(&["fsck", "--json"], b"");
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
    assert!(stderr(&out).contains("config"), "{}", stderr(&out));
}

#[test]
fn bit_flip_in_config_magic_is_seen_without_a_key() {
    let env = Env::new();
    env.backup(&sql_like(500, 31), &["--name", "x"]);
    flip(&env.repo.join("config"), 2);
    let r = fsck_no_key(&env);
    assert_eq!(r.keys("damage"), vec![key("config", "config", "corrupt")]);
}

// ---------------------------------------------------------------------------------------------
// 8. --no-key

#[test]
fn no_key_clean_repository_needs_no_password() {
    let t = two_series();
    let r = fsck_no_key(&t.env);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(r.json["problems"], serde_json::json!([]));
    assert_eq!(r.count("packs"), 4);
    assert_eq!(r.count("packs_read"), 4);
    assert_eq!(r.count("index_files"), 4);
    assert_eq!(r.count("snapshots"), 5);
    // The plain command (no --no-key) does need one, and says so instead of prompting.
    let mut c = t.env.cmd();
    c.env_remove("DUMPVAULT_PASSWORD");
    let out = run_with(c, &["fsck"], b"");
    assert!(!out.status.success());
}

#[test]
fn no_key_names_a_flipped_pack_index_or_snapshot() {
    let t = two_series();
    flip(&t.packs_b[1], 50);
    flip(&t.index_a[1], 200);
    let snap = t.env.repo.join("snapshots").join(&t.snaps_a[0]);
    flip(&snap, 60);
    let r = fsck_no_key(&t.env);
    assert_eq!(r.code, EXIT_DAMAGED);
    let mut want = vec![
        key("pack", &name_of(&t.packs_b[1]), "name_mismatch"),
        key("index", &name_of(&t.index_a[1]), "name_mismatch"),
        key("snapshot", &t.snaps_a[0], "name_mismatch"),
    ];
    want.sort();
    assert_eq!(r.keys("damage"), want, "{}", r.json);
    // The damaged index's pack is no longer listed by any index that checks out.
    assert_eq!(
        r.keys("warning"),
        vec![key("pack", &name_of(&t.packs_a[1]), "unindexed")],
        "{}",
        r.json
    );
}

// ---------------------------------------------------------------------------------------------
// 9. --read-data-subset

#[test]
fn read_data_subsets_cover_every_pack_exactly_once() {
    let t = two_series();
    for m in [1u32, 2, 3, 5] {
        let mut sum = 0;
        for n in 1..=m {
            let r = fsck(&t.env, &["--read-data-subset", &format!("{n}/{m}")]);
            assert_eq!(r.code, EXIT_OK, "{}", r.json);
            assert_eq!(r.count("streams_verified"), 0, "a subset streams nothing");
            // Deterministic: the same slice reads the same packs.
            let again = fsck(&t.env, &["--read-data-subset", &format!("{n}/{m}")]);
            assert_eq!(r.count("packs_read"), again.count("packs_read"));
            sum += r.count("packs_read");
        }
        assert_eq!(sum, 4, "slices of {m} read every pack once");
    }
    let r = fsck(&t.env, &["--read-data-subset", "100%"]);
    assert_eq!(r.count("packs_read"), 4);
}

/// Regression for "`--read-data-subset 0%` checks nothing and exits 0" (issue 17): a subset
/// that selects nothing is refused as a usage error (exit 2) with a message that says why,
/// before anything is read; so are the other subsets that select nothing or make no sense.
#[test]
fn read_data_subset_0_percent_checks_nothing_and_exits_0() {
    let env = Env::new();
    env.backup(&sql_like(500, 41), &["--name", "x"]);
    for zero in ["0%", "0.0%", "-0%", " 0 %"] {
        // `=`: clap would take "-0%" for an option.
        let out = env.run(&["fsck", &format!("--read-data-subset={zero}")], b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{zero:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("would check no data at all"),
            "{zero:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    for bad in ["0/3", "2/0", "0/0", "4/3", "100.5%", "250%", "nan%", "inf%"] {
        let out = env.run(&["fsck", "--read-data-subset", bad], b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{bad:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("subset"), "{bad:?}: {}", stderr(&out));
    }
    // The smallest meaningful subsets still run.
    for ok in ["0.5%", "1/1", "3/3"] {
        let out = env.run(&["fsck", "--read-data-subset", ok], b"");
        assert_eq!(out.status.code(), Some(EXIT_OK), "{ok:?}: {}", stderr(&out));
    }
}

#[test]
fn read_data_subset_finds_the_damage_in_its_slice() {
    let t = two_series();
    let pack = name_of(&t.packs_a[0]);
    flip(&t.packs_a[0], 100);
    let mut found = 0;
    for n in 1..=2 {
        let r = fsck(&t.env, &["--read-data-subset", &format!("{n}/2")]);
        if r.count("packs_read") > 0 && r.code == EXIT_DAMAGED {
            assert_eq!(r.keys("damage"), vec![key("pack", &pack, "corrupt")]);
            assert_eq!(
                r.damage()[0]["affected_snapshots"],
                affected(&t.env, &t.a_snaps())
            );
            found += 1;
        } else {
            assert_eq!(r.code, EXIT_OK, "{}", r.json);
        }
    }
    assert_eq!(found, 1, "exactly one slice holds the damaged pack");
    let r = fsck(&t.env, &["--read-data-subset", "100%"]);
    assert_eq!(r.code, EXIT_DAMAGED);
}

#[test]
fn bad_subsets_and_conflicting_flags_are_usage_errors() {
    let env = Env::new();
    env.backup(&sql_like(500, 41), &["--name", "x"]);
    for bad in [
        "0/2", "3/2", "1/0", "abc", "1/", "/2", "-1/2", "101%", "-5%", "x%", "", "1/2/3",
    ] {
        let out = env.run(&["fsck", "--read-data-subset", bad], b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{bad:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
    }
    for args in [
        &["fsck", "--read-data", "--read-data-subset", "1/2"][..],
        &["fsck", "--no-key", "--read-data"],
        &["fsck", "--no-key", "--read-data-subset", "1/2"],
    ] {
        let out = env.run(args, b"");
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Could not check (exit 10)

/// A command whose file reads obey permissions even as root: setpriv drops the capabilities
/// that bypass them. `None` when that is not possible here.
fn unprivileged(env: &Env) -> Option<Command> {
    if !is_root() {
        return Some(env.cmd());
    }
    if !have("setpriv") {
        return None;
    }
    let probe = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-dac_override,-dac_read_search",
            "--",
            "true",
        ])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--bounding-set",
        "-dac_override,-dac_read_search",
        "--",
        bin(),
    ])
    .env("DUMPVAULT_REPO", &env.repo)
    .env("DUMPVAULT_PASSWORD", PASSWORD)
    .env("DUMPVAULT_CACHE_DIR", &env.cache)
    .env_remove("DUMPVAULT_PASSWORD_FILE")
    .env_remove("DUMPVAULT_PASSWORD_COMMAND");
    Some(c)
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn unlistable_directory_means_check_incomplete() {
    let t = two_series();
    let Some(c) = unprivileged(&t.env) else {
        eprintln!("skipped: cannot drop the permission-bypass capabilities here");
        return;
    };
    let dir = t.env.repo.join("index");
    chmod(&dir, 0o000);
    let out = run_with(c, &["fsck", "--json"], b"");
    chmod(&dir, 0o755);
    assert_eq!(out.status.code(), Some(EXIT_INCOMPLETE), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("check incomplete"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "no verdict is printed");
}

/// BUG (reported, not fixed here): an object that exists but cannot be read (EACCES, EIO,
/// a network error on a GET) is reported as damage — exit 7, code "corrupt" for a pack or an
/// index file, "unreadable" (severity damage) with --no-key — instead of "could not check"
/// (exit 10). fsck turns every per-object read error into a problem; only listing errors
/// reach the CheckIncomplete mapping in cli::fsck_cmd.
#[test]
fn unreadable_pack_means_check_incomplete_not_damage() {
    let t = two_series();
    if unprivileged(&t.env).is_none() {
        eprintln!("skipped: cannot drop the permission-bypass capabilities here");
        return;
    }
    chmod(&t.packs_a[0], 0o000);
    let mut codes = Vec::new();
    for args in [
        &["fsck", "--json", "--read-data"][..],
        &["fsck", "--json"],
        &["fsck", "--json", "--no-key"],
    ] {
        let out = run_with(unprivileged(&t.env).unwrap(), args, b"");
        codes.push((args.join(" "), out.status.code(), stderr(&out)));
    }
    chmod(&t.packs_a[0], 0o644);
    for (args, code, err) in codes {
        assert_eq!(code, Some(EXIT_INCOMPLETE), "{args}: {err}");
    }
}

/// BUG (same as above), for an index file.
#[test]
fn unreadable_index_file_means_check_incomplete_not_damage() {
    let t = two_series();
    let Some(c) = unprivileged(&t.env) else {
        eprintln!("skipped: cannot drop the permission-bypass capabilities here");
        return;
    };
    chmod(&t.index_a[0], 0o000);
    let out = run_with(c, &["fsck", "--json"], b"");
    chmod(&t.index_a[0], 0o644);
    assert_eq!(out.status.code(), Some(EXIT_INCOMPLETE), "{}", stderr(&out));
}

/// Regression for "`repair snapshots` exits 0 even when it lists unrestorable snapshots"
/// (issue 17): listing them without `--remove` is a finding of damage, exit 7 as fsck's, in
/// both the text and the JSON form; with `--remove`, once they are deleted, the remaining
/// snapshots are all restorable, so it exits 0; and a clean repository exits 0.
#[test]
fn repair_snapshots_exits_0_when_it_lists_unrestorable_snapshots() {
    let t = two_series();
    let rep = repair_json(&t.env, &["snapshots"]);
    assert_eq!(rep["unrestorable"], serde_json::json!([]));
    std::fs::remove_file(&t.packs_a[0]).unwrap();
    let out = t.env.run(&["repair", "snapshots"], b"");
    assert_eq!(out.status.code(), Some(EXIT_DAMAGED), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unrestorable snapshot"),
        "the list is still printed"
    );
    let rep = repair_json_exit(&t.env, &["snapshots"], EXIT_DAMAGED);
    assert_eq!(rep["unrestorable"], affected(&t.env, &t.a_snaps()));
    let rep = repair_json_exit(&t.env, &["snapshots", "--remove"], EXIT_OK);
    assert_eq!(rep["removed"], true);
    t.assert_b_restores();
}

mod beside_prune {
    //! Issue X8, fsck half: a prune that runs to completion in the middle of an fsck (between
    //! two of fsck's storage calls, as a backend hook plays it) makes fsck see old listings
    //! beside new objects. fsck must check again and report no damage.

    use std::sync::{Arc, Mutex};

    use dumpvault::backend::{Backend, Name};
    use dumpvault::error::{ObjectKind, Result};
    use dumpvault::ops::backup::{backup, BackupOptions};
    use dumpvault::ops::fsck::{fsck, FsckOptions, Severity, Subset};
    use dumpvault::ops::prune::{self, PruneOptions};
    use dumpvault::repo::{OpenOptions, Repo};
    use dumpvault::snapshot::Source;

    use crate::common::*;

    const PW: &[u8] = b"pw";

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum When {
        AfterList(ObjectKind),
        BeforeGet(ObjectKind),
    }

    /// Runs `hook` once, at the `nth` call matching `when`.
    struct Hooked {
        inner: Arc<dyn Backend>,
        when: When,
        nth: usize,
        seen: Mutex<usize>,
        hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl Hooked {
        fn fire(&self, now: When) {
            if now != self.when {
                return;
            }
            let n = {
                let mut seen = self.seen.lock().unwrap();
                *seen += 1;
                *seen
            };
            if n == self.nth {
                let hook = self.hook.lock().unwrap().take();
                if let Some(h) = hook {
                    h();
                }
            }
        }
    }

    impl Backend for Hooked {
        fn location(&self) -> String {
            self.inner.location()
        }
        fn exists(&self) -> Result<bool> {
            self.inner.exists()
        }
        fn create(&self) -> Result<()> {
            self.inner.create()
        }
        fn list(&self, kind: ObjectKind) -> Result<Vec<(Name, u64)>> {
            let r = self.inner.list(kind);
            self.fire(When::AfterList(kind));
            r
        }
        fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
            self.fire(When::BeforeGet(kind));
            self.inner.get(kind, name)
        }
        fn get_range(&self, kind: ObjectKind, name: &str, off: u64, len: u64) -> Result<Vec<u8>> {
            self.inner.get_range(kind, name, off, len)
        }
        fn size(&self, kind: ObjectKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
            self.inner.put(kind, name, data)
        }
        fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
            self.inner.delete(kind, name)
        }
    }

    fn open(backend: Arc<dyn Backend>) -> Repo {
        Repo::open(backend, PW, &OpenOptions::default()).unwrap()
    }

    fn opts(name: &str) -> BackupOptions {
        BackupOptions {
            name: name.into(),
            host: "test".into(),
            stream_name: "stdin".into(),
            ..Default::default()
        }
    }

    /// A repository where prune deletes whole packs and repacks others (A gone, B shares half
    /// of A): the store and B's snapshot id.
    fn repo_with_work_for_prune() -> Arc<dyn Backend> {
        let inner = memory_repo(PW);
        let mut repo = open(Arc::clone(&inner));
        let (a, b) = dump_and_half(31, 2_500_000, 600_000);
        let ra = backup(&mut repo, &a[..], &opts("a"), || Ok(Source::Stdin), |_| {}).unwrap();
        backup(&mut repo, &b[..], &opts("b"), || Ok(Source::Stdin), |_| {}).unwrap();
        inner
            .delete(ObjectKind::Snapshot, &ra.snapshot_id.to_hex())
            .unwrap();
        inner
    }

    /// Regression for X8 (fsck reported damage that a concurrent prune's deletions made it
    /// see): a pack listing taken before the prune beside an index read after it ("an index
    /// lists this pack but it does not exist"), index files listed before and read after
    /// ("corrupt"), and packs read after the prune deleted them (`--read-data`).
    #[test]
    fn x8_fsck_reports_no_damage_when_a_prune_runs_under_it() {
        // The index listing fsck reads from is its second (the first is the one it compares
        // with at the end of the pass).
        for (when, nth, read_data) in [
            (When::AfterList(ObjectKind::Pack), 1, None),
            (When::AfterList(ObjectKind::Index), 2, None),
            (When::BeforeGet(ObjectKind::Pack), 1, Some(Subset::All)),
        ] {
            let ctx = format!("{when:?} #{nth}, {read_data:?}");
            let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let fired2 = Arc::clone(&fired);
            let inner = repo_with_work_for_prune();
            let for_prune = Arc::clone(&inner);
            let hooked: Arc<dyn Backend> = Arc::new(Hooked {
                inner: Arc::clone(&inner),
                when,
                nth,
                seen: Mutex::new(0),
                hook: Mutex::new(Some(Box::new(move || {
                    fired2.store(true, std::sync::atomic::Ordering::SeqCst);
                    let strict = PruneOptions {
                        max_unused: 0.0,
                        ..Default::default()
                    };
                    let r = prune::prune(&mut open(for_prune), &strict, false).unwrap();
                    assert!(r.executed && r.new_packs > 0, "prune repacked");
                }))),
            });
            let mut repo = open(Arc::clone(&hooked));
            let r = fsck(&mut repo, &FsckOptions { read_data }, &|_, _, _| {}).unwrap();
            assert!(
                fired.load(std::sync::atomic::Ordering::SeqCst),
                "{ctx}: prune ran"
            );
            let damage: Vec<_> = r
                .problems
                .iter()
                .filter(|p| p.severity == Severity::Damage)
                .collect();
            assert!(damage.is_empty(), "{ctx}: {damage:?}");
            assert!(
                r.counts.rechecks >= 1,
                "{ctx}: the prune was seen under the check"
            );
            // And after it, from scratch: nothing at all.
            let r = fsck(
                &mut open(Arc::clone(&inner)),
                &FsckOptions {
                    read_data: Some(Subset::All),
                },
                &|_, _, _| {},
            )
            .unwrap();
            assert!(r.problems.is_empty(), "{ctx}: {:?}", r.problems);
            assert_eq!(r.counts.rechecks, 0, "{ctx}");
        }
    }
}
