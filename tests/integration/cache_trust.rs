//! Issue 15 / format-spec X10: whoever can write the local cache must not be able to make a
//! backup skip uploading a chunk. Each test tampers with the SQLite cache from outside (with
//! rusqlite), runs the next backup, and checks that the repository really holds every chunk:
//! a byte-exact restore without the cache and a passing `fsck --read-data`.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::common::*;

/// One row of the cache's `blobs` table.
#[derive(Clone)]
struct Row {
    index_file: String,
    pack: Vec<u8>,
    chunk: Vec<u8>,
    kind: i64,
    comp: i64,
    raw_len: i64,
    offset: i64,
    stored_len: i64,
}

/// The only cache file in `dir`.
fn cache_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sqlite"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

fn rows(db: &Path) -> Vec<Row> {
    let c = Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT index_file, pack, chunk, kind, comp, raw_len, offset, stored_len
             FROM blobs ORDER BY rowid",
        )
        .unwrap();
    let v = st
        .query_map([], |r| {
            Ok(Row {
                index_file: r.get(0)?,
                pack: r.get(1)?,
                chunk: r.get(2)?,
                kind: r.get(3)?,
                comp: r.get(4)?,
                raw_len: r.get(5)?,
                offset: r.get(6)?,
                stored_len: r.get(7)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    v
}

fn insert(c: &Connection, r: &Row) {
    c.execute(
        "INSERT INTO blobs(index_file, pack, chunk, kind, comp, raw_len, offset, stored_len)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            r.index_file,
            r.pack,
            r.chunk,
            r.kind,
            r.comp,
            r.raw_len,
            r.offset,
            r.stored_len
        ],
    )
    .unwrap();
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

/// The chunk rows `data` produces in a repository with `env`'s keys (learned in a clone).
fn rows_of(env: &Env, data: &[u8]) -> Vec<Row> {
    let clone = clone_of(env);
    let before = rows(&cache_file(&clone.cache_or_open()));
    clone.backup(data, &["--name", "probe"]);
    let after = rows(&cache_file(&clone.cache));
    let known: std::collections::HashSet<Vec<u8>> = before.into_iter().map(|r| r.chunk).collect();
    after
        .into_iter()
        .filter(|r| !known.contains(&r.chunk))
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

/// (a) A row inserted into the cache claims that a chunk the next backup produces is stored
/// in an existing index file and pack. Before the fix the backup skipped uploading it.
#[test]
fn cache_trust_forged_row_does_not_make_backup_skip_a_chunk() {
    let env = small_chunk_env();
    env.backup(&noise(200_000, 1), &["--name", "a"]);
    let b = noise(200_000, 2);
    let forged_source = rows_of(&env, &b);
    let db = cache_file(&env.cache);
    let existing = rows(&db)[0].clone();
    let packs_before = names(&env, "data");
    let victim = forged_source.iter().find(|r| r.kind == 0).unwrap().clone();
    {
        let c = Connection::open(&db).unwrap();
        // One data chunk of `b`, said to be in the first existing file's first pack.
        insert(
            &c,
            &Row {
                index_file: existing.index_file.clone(),
                pack: existing.pack.clone(),
                ..victim.clone()
            },
        );
    }
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
    // The forged chunk went into a pack of the new index file.
    assert!(
        rows(&db)
            .iter()
            .any(|r| r.chunk == victim.chunk && r.index_file != existing.index_file),
        "the forged chunk was not uploaded"
    );
    assert_repository_holds(&env, &snap, &b);
}

/// (b) A row's pack id is changed to another pack. Before the fix the next backup trusted
/// the wrong location, and restore through the cache failed.
#[test]
fn cache_trust_changed_pack_id_is_detected() {
    let env = small_chunk_env();
    let a = noise(200_000, 3);
    env.backup(&a, &["--name", "a"]);
    env.backup(&noise(200_000, 4), &["--name", "c"]);
    let db = cache_file(&env.cache);
    let all = rows(&db);
    let first_file = all[0].index_file.clone();
    let other = all
        .iter()
        .find(|r| r.index_file != first_file)
        .unwrap()
        .pack
        .clone();
    {
        let c = Connection::open(&db).unwrap();
        let n = c
            .execute(
                "UPDATE blobs SET pack = ?1 WHERE index_file = ?2",
                params![other, first_file],
            )
            .unwrap();
        assert!(n > 0);
    }
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
/// rows labelled with this repository's index file (what the listing alone would accept).
/// The other repository shares this one's keys (a copy), so its chunk IDs are the ones the
/// next backup produces: before the fix that backup uploaded nothing.
#[test]
fn cache_trust_copied_cache_of_another_repository_is_not_trusted() {
    let env = small_chunk_env();
    env.backup(&noise(200_000, 6), &["--name", "a"]);
    let db = cache_file(&env.cache);
    let ours = rows(&db)[0].index_file.clone();
    let other = clone_of(&env);
    let b = noise(200_000, 7);
    other.backup(&b, &["--name", "b"]);
    let other_db = cache_file(&other.cache);
    // Into place: the other cache's file, under this cache's file name.
    for ext in ["sqlite-wal", "sqlite-shm"] {
        let _ = std::fs::remove_file(db.with_extension(ext));
    }
    {
        let c = Connection::open(&other_db).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        c.execute("UPDATE blobs SET index_file = ?1", [&ours])
            .unwrap();
        c.execute("DELETE FROM index_files WHERE id != ?1", [&ours])
            .unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    }
    std::fs::copy(&other_db, &db).unwrap();
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
