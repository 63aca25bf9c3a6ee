//! Tampering, systematically: for each object kind (pack blob area, pack header, index file,
//! chunk list, snapshot, config, key file), flip a bit, truncate, and swap (the bytes of
//! another object of the same kind, under the old name, and under the BLAKE3 of the new bytes
//! so the name check passes and only the cryptography can object). Every case must be:
//! - detected: `fsck --read-data` exits 7 and names the object (kind and id);
//! - named by restore when restore needs the object: exit 7, the object's id in the message;
//! - harmless: restore to stdout emits only a prefix of the true stream (no unauthenticated
//!   byte), and `restore -o FILE` leaves no FILE and no temporary file. Where restore does not
//!   need the damaged bytes (a pack header: restore reads blobs through the index), it must
//!   restore byte-exact.
//!
//! `CASES` counts them (27: config has no hash name, so no "swap under the new name").

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use dumpvault::backend::local::LocalBackend;
use dumpvault::id::ChunkId;
use dumpvault::repo::{OpenOptions, Repo};

use crate::common::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Pack,
    Header,
    Index,
    Tree,
    Snapshot,
    Config,
    Key,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Flip,
    Truncate,
    SwapOld,
    SwapNew,
}

const KINDS: [Kind; 7] = [
    Kind::Pack,
    Kind::Header,
    Kind::Index,
    Kind::Tree,
    Kind::Snapshot,
    Kind::Config,
    Kind::Key,
];
const OPS: [Op; 4] = [Op::Flip, Op::Truncate, Op::SwapOld, Op::SwapNew];

/// Number of tamper cases run (reported in the issue note).
pub const CASES: usize = 7 * 4 - 1;

/// A repository with two series (A and B, disjoint data, so separate packs, index files and
/// tree blobs), and a donor repository with the same password but its own master key.
struct Setup {
    env: Env,
    donor: Env,
    a_id: String,
    a_data: Vec<u8>,
    b_id: String,
    b_data: Vec<u8>,
    a_pack: PathBuf,
    b_pack: PathBuf,
    a_index: PathBuf,
    b_index: PathBuf,
    /// A's root chunk list: its id, and where its sealed blob sits in `a_pack`.
    a_tree: (String, usize, usize),
    b_tree: (usize, usize),
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn new_file(env: &Env, sub: &str, before: &[PathBuf]) -> PathBuf {
    let mut v: Vec<_> = env
        .files_under(sub)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(v.len(), 1, "{sub}: {v:?}");
    v.pop().unwrap()
}

/// Where the root chunk list of snapshot `snap` lives: (root id, offset, stored length).
fn tree_location(env: &Env, snap: &str) -> (String, usize, usize) {
    let s = env
        .snapshots_json(&[])
        .into_iter()
        .find(|s| s["id"] == snap)
        .unwrap();
    let root = s["streams"][0]["root"].as_str().unwrap().to_string();
    let mut repo = Repo::open(
        Arc::new(LocalBackend::new(&env.repo)),
        PASSWORD.as_bytes(),
        &OpenOptions::default(),
    )
    .unwrap();
    let (_, e) = repo
        .index()
        .unwrap()
        .get(&ChunkId::from_str(&root).unwrap())
        .expect("root in the index");
    (root, e.offset as usize, e.stored_len as usize)
}

fn setup() -> Setup {
    let env = Env::new();
    let mut a_data = sql_like(40_000, 71);
    a_data.extend_from_slice(&noise(400_000, 72));
    let b_data = noise(300_000, 73);
    let a_id = env.backup(&a_data, &["--name", "a"]);
    let a_pack = new_file(&env, "data", &[]);
    let a_index = new_file(&env, "index", &[]);
    let b_id = env.backup(&b_data, &["--name", "b"]);
    let b_pack = new_file(&env, "data", std::slice::from_ref(&a_pack));
    let b_index = new_file(&env, "index", std::slice::from_ref(&a_index));
    let a_tree = tree_location(&env, &a_id);
    let (_, bo, bl) = tree_location(&env, &b_id);
    let donor = Env::new();
    donor.backup(&noise(200_000, 74), &["--name", "a"]);
    Setup {
        env,
        donor,
        a_id,
        a_data,
        b_id,
        b_data,
        a_pack,
        b_pack,
        a_index,
        b_index,
        a_tree,
        b_tree: (bo, bl),
    }
}

fn only(env: &Env, sub: &str) -> PathBuf {
    let v = env.files_under(sub);
    assert_eq!(v.len(), 1, "{sub}: {v:?}");
    v.into_iter().next().unwrap()
}

fn snapshot_file(env: &Env, id: &str) -> PathBuf {
    env.repo.join("snapshots").join(id)
}

/// Replace `path` by `bytes` stored under the BLAKE3 of `bytes` in the same directory layout
/// (for packs: data/<xx>/), as an attacker with write access would to pass the name check.
/// Returns the new name.
fn put_under_hash_name(path: &Path, bytes: &[u8], is_pack: bool) -> String {
    std::fs::remove_file(path).unwrap();
    let h = blake3::hash(bytes).to_hex().to_string();
    let dir = if is_pack {
        path.parent().unwrap().parent().unwrap().join(&h[..2])
    } else {
        path.parent().unwrap().to_path_buf()
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&h), bytes).unwrap();
    h
}

/// What a case must produce.
struct Expect {
    /// Strings `fsck --read-data` must print (kind word and object id).
    fsck_names: Vec<String>,
    /// Which snapshot to restore and the data it holds.
    restore: (String, Vec<u8>),
    /// `None`: restore may succeed (it must then be byte-exact). `Some(names)`: it must fail,
    /// naming these.
    restore_fails_naming: Option<Vec<String>>,
}

/// Apply one tampering to a fresh setup; returns what must be seen.
fn tamper(s: &Setup, kind: Kind, op: Op) -> Expect {
    let a = (s.a_id.clone(), s.a_data.clone());
    let a_pack = name(&s.a_pack);
    let pk = |p: &str| vec!["pack".to_string(), p.to_string()];
    match kind {
        Kind::Pack | Kind::Header | Kind::Tree => {
            let mut b = std::fs::read(&s.a_pack).unwrap();
            let len = b.len();
            let hlen = u32::from_le_bytes(b[len - 8..len - 4].try_into().unwrap()) as usize;
            let header = len - 8 - hlen;
            let (t_off, t_len) = (s.a_tree.1, s.a_tree.2);
            match (kind, op) {
                (Kind::Pack, Op::Flip) => b[100_000] ^= 0x10,
                (Kind::Pack, Op::Truncate) => b.truncate(len / 2),
                (Kind::Header, Op::Flip) => b[header + 30] ^= 0x10,
                (Kind::Header, Op::Truncate) => b.truncate(len - 4),
                (Kind::Tree, Op::Flip) => b[t_off + t_len / 2] ^= 0x10,
                (Kind::Tree, Op::Truncate) => {
                    b.drain(t_off + t_len / 2..t_off + t_len);
                }
                (Kind::Pack, _) => b = std::fs::read(&s.b_pack).unwrap(),
                (Kind::Header, _) => {
                    // B's header and trailer (authentic under this key) on A's blob area.
                    let bb = std::fs::read(&s.b_pack).unwrap();
                    let bl = bb.len();
                    let bh = u32::from_le_bytes(bb[bl - 8..bl - 4].try_into().unwrap()) as usize;
                    b.truncate(header);
                    b.extend_from_slice(&bb[bl - 8 - bh..]);
                }
                (Kind::Tree, _) => {
                    // B's sealed chunk list (as much of it as fits) over A's.
                    let bb = std::fs::read(&s.b_pack).unwrap();
                    let (bo, _) = s.b_tree;
                    let n = t_len.min(bb.len() - bo);
                    b[t_off..t_off + n].copy_from_slice(&bb[bo..bo + n]);
                }
                _ => unreachable!(),
            }
            let restore_needs = kind != Kind::Header;
            let mut fsck_names = pk(&a_pack);
            let mut restore_names = pk(&a_pack);
            if kind == Kind::Tree && op != Op::SwapNew {
                restore_names.push(s.a_tree.0.clone());
            }
            if op == Op::SwapNew {
                put_under_hash_name(&s.a_pack, &b, true);
                // A's pack is gone (whatever was planted instead): every reader of A must say so.
                fsck_names.push("missing".into());
                restore_names.push("missing".into());
                return Expect {
                    fsck_names,
                    restore: a,
                    restore_fails_naming: Some(restore_names),
                };
            }
            std::fs::write(&s.a_pack, &b).unwrap();
            Expect {
                fsck_names,
                restore: a,
                restore_fails_naming: restore_needs.then_some(restore_names),
            }
        }
        Kind::Index => {
            let mut b = std::fs::read(&s.a_index).unwrap();
            let idx = name(&s.a_index);
            let named = |id: &str| vec!["index".to_string(), id.to_string()];
            match op {
                Op::Flip => b[60] ^= 0x10,
                Op::Truncate => b.truncate(b.len() / 2),
                Op::SwapOld => b = std::fs::read(&s.b_index).unwrap(),
                Op::SwapNew => {
                    // The donor's index (another key) planted under its own name.
                    let donor = std::fs::read(only(&s.donor, "index")).unwrap();
                    let h = put_under_hash_name(&s.a_index, &donor, false);
                    return Expect {
                        fsck_names: named(&h),
                        restore: a,
                        restore_fails_naming: Some(named(&h)),
                    };
                }
            }
            std::fs::write(&s.a_index, &b).unwrap();
            Expect {
                fsck_names: named(&idx),
                restore: a,
                restore_fails_naming: Some(named(&idx)),
            }
        }
        Kind::Snapshot => {
            let path = snapshot_file(&s.env, &s.a_id);
            let mut b = std::fs::read(&path).unwrap();
            let named = |id: &str| vec!["snapshot".to_string(), id.to_string()];
            match op {
                Op::Flip => b[40] ^= 0x10,
                Op::Truncate => b.truncate(b.len() / 2),
                Op::SwapOld => b = std::fs::read(snapshot_file(&s.env, &s.b_id)).unwrap(),
                Op::SwapNew => {
                    let donor = std::fs::read(only(&s.donor, "snapshots")).unwrap();
                    let h = put_under_hash_name(&path, &donor, false);
                    // Snapshot A is gone; the planted one fails authentication. Restoring A
                    // can only say "not found" or name the planted object.
                    return Expect {
                        fsck_names: named(&h),
                        restore: a,
                        restore_fails_naming: Some(vec![]),
                    };
                }
            }
            std::fs::write(&path, &b).unwrap();
            Expect {
                fsck_names: named(&s.a_id),
                restore: a,
                restore_fails_naming: Some(named(&s.a_id)),
            }
        }
        Kind::Config => {
            let path = s.env.repo.join("config");
            let mut b = std::fs::read(&path).unwrap();
            match op {
                Op::Flip => b[80] ^= 0x10,
                Op::Truncate => b.truncate(b.len() / 2),
                Op::SwapOld => b = std::fs::read(s.donor.repo.join("config")).unwrap(),
                Op::SwapNew => unreachable!("config has a fixed name"),
            }
            std::fs::write(&path, &b).unwrap();
            let names = vec!["config".to_string()];
            Expect {
                fsck_names: names.clone(),
                restore: a,
                restore_fails_naming: Some(names),
            }
        }
        Kind::Key => {
            let path = only(&s.env, "keys");
            let mut b = std::fs::read(&path).unwrap();
            let key_id = name(&path);
            match op {
                Op::Flip => b[20] ^= 0x10,
                Op::Truncate => b.truncate(b.len() / 2),
                Op::SwapOld => b = std::fs::read(only(&s.donor, "keys")).unwrap(),
                Op::SwapNew => {
                    // The donor's key file (same password, other master key) under its own
                    // name: it belongs to another repository id, so no key file matches the
                    // config, and the config is what gets named (either may have been swapped).
                    let donor = std::fs::read(only(&s.donor, "keys")).unwrap();
                    put_under_hash_name(&path, &donor, false);
                    let names = vec!["config".to_string(), "key file".to_string()];
                    return Expect {
                        fsck_names: names.clone(),
                        restore: a,
                        restore_fails_naming: Some(names),
                    };
                }
            }
            std::fs::write(&path, &b).unwrap();
            let names = vec!["key".to_string(), key_id];
            Expect {
                fsck_names: names.clone(),
                restore: a,
                restore_fails_naming: Some(names),
            }
        }
    }
}

fn check_case(kind: Kind, op: Op) {
    let s = setup();
    let ctx = format!("{kind:?}/{op:?}");
    let x = tamper(&s, kind, op);

    // Detected and named by fsck.
    let out = s.env.run(&["--no-cache", "fsck", "--read-data"], b"");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(EXIT_CORRUPT), "{ctx}: fsck: {text}");
    for n in &x.fsck_names {
        assert!(
            text.contains(n.as_str()),
            "{ctx}: fsck must name {n}: {text}"
        );
    }

    let (snap, data) = &x.restore;
    for cache in [false, true] {
        let mut args = vec!["restore", snap.as_str()];
        if !cache {
            args.insert(0, "--no-cache");
        }
        let out = s.env.run(&args, b"");
        let err = stderr(&out);
        // Never an unauthenticated byte: whatever reached stdout is the true stream's prefix.
        assert!(
            data.starts_with(&out.stdout),
            "{ctx}: restore emitted bytes that are not the stream's ({} bytes): {err}",
            out.stdout.len()
        );
        let must_fail = x.restore_fails_naming.is_some() && !cache;
        if out.status.success() {
            assert!(!must_fail, "{ctx}: restore must fail");
            assert_eq!(&out.stdout, data, "{ctx}: success means byte-exact");
        } else {
            let code = out.status.code();
            assert!(
                code == Some(EXIT_CORRUPT) || code == Some(EXIT_NOT_FOUND),
                "{ctx}: restore exit {code:?}: {err}"
            );
            assert!(out.stdout.len() < data.len(), "{ctx}");
            if !cache {
                for n in x.restore_fails_naming.as_deref().unwrap_or(&[]) {
                    assert!(
                        err.contains(n.as_str()),
                        "{ctx}: restore must name {n}: {err}"
                    );
                }
            }
        }
        // -o FILE: the file appears only when fully verified.
        let o = s.env.dir.path().join("restored.out");
        let os = o.to_str().unwrap().to_string();
        let mut args = args.clone();
        args.extend_from_slice(&["-o", &os]);
        let out = s.env.run(&args, b"");
        if out.status.success() {
            assert!(!must_fail, "{ctx}: restore -o must fail");
            assert_eq!(&std::fs::read(&o).unwrap(), data, "{ctx}");
            std::fs::remove_file(&o).unwrap();
        } else {
            assert!(!o.exists(), "{ctx}: a failed restore left {}", o.display());
        }
        let leftovers: Vec<_> = std::fs::read_dir(s.env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("dumpvault-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{ctx}: temp files left: {leftovers:?}"
        );
    }
    // B shares nothing with A: unless the damage is repository-wide (config, key, a foreign
    // index that fails the whole index load), B still restores byte-exact.
    if matches!(kind, Kind::Pack | Kind::Header | Kind::Tree) {
        assert_eq!(
            s.env.restore(&["--no-cache", &s.b_id]),
            s.b_data,
            "{ctx}: B unaffected"
        );
    }
}

macro_rules! tamper_tests {
    ($($name:ident: $kind:ident,)*) => {$(
        #[test]
        fn $name() {
            for op in OPS {
                if Kind::$kind == Kind::Config && op == Op::SwapNew {
                    continue;
                }
                check_case(Kind::$kind, op);
            }
        }
    )*};
}

tamper_tests! {
    pack_blob_area_flip_truncate_swap: Pack,
    pack_header_flip_truncate_swap: Header,
    index_file_flip_truncate_swap: Index,
    chunk_list_flip_truncate_swap: Tree,
    snapshot_flip_truncate_swap: Snapshot,
    config_flip_truncate_swap: Config,
    key_file_flip_truncate_swap: Key,
}

#[test]
fn case_count_is_what_the_note_reports() {
    let n = KINDS
        .iter()
        .flat_map(|k| OPS.iter().map(move |o| (*k, *o)))
        .filter(|(k, o)| !(*k == Kind::Config && *o == Op::SwapNew))
        .count();
    assert_eq!(n, CASES);
}
