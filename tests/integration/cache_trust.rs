//! Issue 15 / format-spec X10: whoever can write the local cache must not be able to make a
//! backup skip uploading a chunk. Each test tampers with the cache from outside (its SQLite
//! bookkeeping with rusqlite, its index run files with the library's run reader and writer),
//! runs the next backup, and checks that the repository really holds every chunk: a
//! byte-exact restore without the cache and a passing `fsck --read-data`.

use std::path::{Path, PathBuf};

use dumpvault::index::run::{self, Run, RunEntry};
use rusqlite::{params, Connection};

use crate::common::*;

/// The only cache database in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

/// The run files the cache database lists.
fn run_files(db: &Path) -> Vec<PathBuf> {
    let c = Connection::open(db).unwrap();
    let mut st = c.prepare("SELECT name FROM truns").unwrap();
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|n| db.with_extension("runs").join(n))
        .collect()
}

/// Every entry of every run of the cache, with the run it is in.
fn entries(db: &Path) -> Vec<(PathBuf, RunEntry)> {
    let mut out = Vec::new();
    for p in run_files(db) {
        let r = Run::open(&p).unwrap();
        out.extend(r.iter().unwrap().map(|e| (p.clone(), e.unwrap())));
    }
    out
}

/// Replace run `path` by one holding `v` (sorted here).
fn rewrite_run(path: &Path, mut v: Vec<RunEntry>) {
    v.sort_by_key(|e| e.id);
    std::fs::remove_file(path).unwrap();
    run::write(path, v.len() as u64, v.into_iter().map(Ok)).unwrap();
}

/// Make every run entry of the cache whose index-file number `from` accepts name pack number
/// `pack` instead (what a writer of the cache would do); returns how many were changed.
fn move_entries(db: &Path, from: impl Fn(u32) -> bool, pack: u32) -> usize {
    let mut moved = 0;
    for run_path in run_files(db) {
        let v: Vec<RunEntry> = Run::open(&run_path)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                if from(e.file) {
                    e.pack = pack;
                    moved += 1;
                }
                e
            })
            .collect();
        rewrite_run(&run_path, v);
    }
    moved
}

/// The pack ID behind the cache's pack number `num`.
fn pack_id(db: &Path, num: u32) -> Vec<u8> {
    let c = Connection::open(db).unwrap();
    c.query_row("SELECT id FROM tpacks WHERE num = ?1", [num], |r| r.get(0))
        .unwrap()
}

/// The index-file number the cache gives `file` (hex id).
fn file_num(db: &Path, file: &str) -> u32 {
    let c = Connection::open(db).unwrap();
    c.query_row("SELECT num FROM tfiles WHERE id = ?1", [file], |r| r.get(0))
        .unwrap()
}

fn names(env: &Env, sub: &str) -> Vec<String> {
    env.files_under(sub)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A repository with small chunks, so a few hundred KiB make many rows.
fn small_chunk_env() -> Env {
    let env = Env::uninit();
    env.init(&[
        "--chunk-min",
        "1024",
        "--chunk-avg",
        "4096",
        "--chunk-max",
        "16384",
    ]);
    env
}

/// A copy of `env`'s repository (same id, same keys) with a cache of its own: chunk IDs
/// computed there are the ones `env` computes for the same data.
fn clone_of(env: &Env) -> Env {
    let c = Env::uninit();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&env.repo)
        .arg(&c.repo)
        .status()
        .unwrap();
    assert!(st.success());
    c
}

/// The run entries `data` produces in a repository with `env`'s keys (learned in a clone).
fn entries_of(env: &Env, data: &[u8]) -> Vec<RunEntry> {
    let clone = clone_of(env);
    let before = entries(&cache_file(&clone.cache_or_open()));
    clone.backup(data, &["--name", "probe"]);
    let after = entries(&cache_file(&clone.cache));
    let known: std::collections::HashSet<_> = before.into_iter().map(|(_, e)| e.id).collect();
    after
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| !known.contains(&e.id))
        .collect()
}

trait CacheDir {
    fn cache_or_open(&self) -> PathBuf;
}

impl CacheDir for Env {
    /// The cache directory, after a command that creates and syncs the cache.
    fn cache_or_open(&self) -> PathBuf {
        let out = self.run(&["snapshots"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let out = self.run(&["stats"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        self.cache.clone()
    }
}

/// What every case must show after the tampered-with cache met a backup of `data`
/// (snapshot `snap`): every chunk is in the repository, restore (also with the cache as the
/// backup left it, then without any) is byte-exact, and `fsck --read-data` passes.
fn assert_repository_holds(env: &Env, snap: &str, data: &[u8]) {
    assert!(
        env.restore(&[snap]) == data,
        "restore with the cache differs"
    );
    std::fs::remove_dir_all(&env.cache).unwrap();
    let out = env.run(&["restore", snap], b"");
    assert!(
        out.status.success() && out.stdout == data,
        "restore without the cache: exit {:?}: {}",
        out.status.code(),
        stderr(&out)
    );
    let out = env.run(&["fsck", "--read-data"], b"");
    assert_eq!(out.status.code(), Some(EXIT_OK), "fsck: {}", stderr(&out));
}

/// (a) An entry added to the cache claims that a chunk the next backup produces is stored
/// in an existing index file and pack. Before the fix the backup skipped uploading it.
#[test]
fn cache_trust_forged_row_does_not_make_backup_skip_a_chunk() {
    let env = small_chunk_env();
    env.backup(&noise(200_000, 1), &["--name", "a"]);
    let b = noise(200_000, 2);
    let forged_source = entries_of(&env, &b);
    let db = cache_file(&env.cache);
    let (run_path, existing) = entries(&db)[0].clone();
    let existing_pack = pack_id(&db, existing.pack);
    let packs_before = names(&env, "data");
    let victim = *forged_source.iter().find(|e| e.kind == 0).unwrap();
    // One data chunk of `b`, said to be in the first existing entry's file and pack, with
    // the MAC it had in the clone.
    let mut v: Vec<RunEntry> = Run::open(&run_path)
        .unwrap()
        .iter()
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    v.push(RunEntry {
        pack: existing.pack,
        file: existing.file,
        ..victim
    });
    rewrite_run(&run_path, v);
    let out = env.run(&["backup", "--name", "b"], &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rebuilding"),
        "no warning: {}",
        stderr(&out)
    );
    let snap = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        names(&env, "data").len() > packs_before.len(),
        "no new pack"
    );
    // The forged chunk went into another pack (the cache was rebuilt, with numbers of its
    // own: compare pack IDs).
    let db = cache_file(&env.cache_or_open());
    assert!(
        entries(&db)
            .iter()
            .any(|(_, e)| e.id == victim.id && pack_id(&db, e.pack) != existing_pack),
        "the forged chunk was not uploaded"
    );
    assert_repository_holds(&env, &snap, &b);
}

/// (b) The entries of one index file are moved to another pack. Before the fix the next
/// backup trusted the wrong location, and restore through the cache failed.
#[test]
fn cache_trust_changed_pack_id_is_detected() {
    let env = small_chunk_env();
    let a = noise(200_000, 3);
    let first_file = {
        env.backup(&a, &["--name", "a"]);
        let db = cache_file(&env.cache);
        let c = Connection::open(&db).unwrap();
        c.query_row("SELECT id FROM tfiles", [], |r| r.get::<_, String>(0))
            .unwrap()
    };
    env.backup(&noise(200_000, 4), &["--name", "c"]);
    let db = cache_file(&env.cache);
    let first = file_num(&db, &first_file);
    let all = entries(&db);
    let other = all.iter().find(|(_, e)| e.file != first).unwrap().1.pack;
    assert!(move_entries(&db, |f| f == first, other) > 0);
    // The same data again, plus new data: dedups every chunk of `a`.
    let mut b = a.clone();
    b.extend_from_slice(&noise(50_000, 5));
    let out = env.run(&["backup", "--name", "b"], &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rebuilding"),
        "no warning: {}",
        stderr(&out)
    );
    let snap = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_repository_holds(&env, &snap, &b);
}

/// (c) The cache of another repository is copied into place under this repository's id, its
/// entries labelled with this repository's index file (what the listing alone would accept).
/// The other repository shares this one's keys (a copy), so its chunk IDs are the ones the
/// next backup produces: before the fix that backup uploaded nothing.
#[test]
fn cache_trust_copied_cache_of_another_repository_is_not_trusted() {
    let env = small_chunk_env();
    env.backup(&noise(200_000, 6), &["--name", "a"]);
    let db = cache_file(&env.cache);
    let ours: String = Connection::open(&db)
        .unwrap()
        .query_row("SELECT id FROM tfiles", [], |r| r.get(0))
        .unwrap();
    let other = clone_of(&env);
    let b = noise(200_000, 7);
    other.backup(&b, &["--name", "b"]);
    let other_db = cache_file(&other.cache);
    {
        let c = Connection::open(&other_db).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        // Every entry now claims to come from our index file.
        c.execute("DELETE FROM tfiles", []).unwrap();
        c.execute(
            "INSERT INTO tfiles(num, id, entries) VALUES (0, ?1, 1)",
            params![ours],
        )
        .unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    }
    for p in run_files(&other_db) {
        let v: Vec<RunEntry> = Run::open(&p)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| RunEntry {
                file: 0,
                ..e.unwrap()
            })
            .collect();
        rewrite_run(&p, v);
    }
    // Into place: the other cache's files, under this cache's names.
    for ext in ["sqlite-wal", "sqlite-shm"] {
        let _ = std::fs::remove_file(db.with_extension(ext));
    }
    std::fs::remove_dir_all(db.with_extension("runs")).unwrap();
    std::fs::copy(&other_db, &db).unwrap();
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(other_db.with_extension("runs"))
        .arg(db.with_extension("runs"))
        .status()
        .unwrap();
    assert!(st.success());
    let packs_before = names(&env, "data");
    let out = env.run(&["backup", "--name", "b"], &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        names(&env, "data").len() > packs_before.len(),
        "no new pack"
    );
    assert_repository_holds(&env, &snap, &b);
}

/// (issue 14) prune marks reachability over the cache's run files, so a tampered cache must
/// not make it delete a pack in use. Here every entry of backup C's index file is made to
/// name backup A's pack instead (what an attacker would do to get C's pack deleted once A is
/// forgotten). The MAC check fails, prune rebuilds the cache and plans again: A's packs go,
/// C's stay, and C restores byte-exact without the cache.
#[test]
fn cache_trust_tampered_cache_does_not_mislead_prune() {
    let env = small_chunk_env();
    let a = noise(200_000, 11);
    let c = noise(200_000, 12);
    let snap_a = env.backup(&a, &["--name", "a"]);
    let packs_a = names(&env, "data");
    let snap_c = env.backup(&c, &["--name", "c"]);
    let packs_c: Vec<String> = names(&env, "data")
        .into_iter()
        .filter(|p| !packs_a.contains(p))
        .collect();
    assert!(!packs_c.is_empty());
    // Forget A (by hand: `forget` takes a policy, and A and C are different series).
    let a_file = env
        .files_under("snapshots")
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == snap_a))
        .unwrap();
    std::fs::remove_file(a_file).unwrap();
    let db = cache_file(&env.cache_or_open());
    let all = entries(&db);
    let first = all.iter().map(|(_, e)| e.file).min().unwrap();
    let a_pack = all.iter().find(|(_, e)| e.file == first).unwrap().1.pack;
    assert!(move_entries(&db, |f| f != first, a_pack) > 0);
    let out = env.run(&["prune", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rebuilding"),
        "no warning: {}",
        stderr(&out)
    );
    let left = names(&env, "data");
    for p in &packs_c {
        assert!(left.contains(p), "C's pack {p} was deleted");
    }
    assert!(
        packs_a.iter().all(|p| !left.contains(p)),
        "A's packs stay: {left:?}"
    );
    assert_repository_holds(&env, &snap_c, &c);
}
