//! The known-answer and negative vectors of `format-spec/10-known-answer-vectors.md`, as
//! dumpvault reads them: the rows the spec marks as needing a dumpvault test (the version-0
//! rows, the exact B1/B2 and t_cost procedures, key-file opening precedence) and the
//! multi-level tree of §13, written by dumpvault's own backup and restored.

use std::sync::Arc;

use dumpvault::backend::memory::MemoryBackend;
use dumpvault::backend::Backend;
use dumpvault::crypto::MasterKey;
use dumpvault::error::{Error, ObjectKind};
use dumpvault::format::config::Config;
use dumpvault::format::envelope;
use dumpvault::format::index::IndexFile;
use dumpvault::format::keyfile::KeyFile;
use dumpvault::format::pack::{self as fpack, BlobKind};
use dumpvault::format::tree::TreeNode;
use dumpvault::id::ObjectId;
use dumpvault::ops::backup::{backup, BackupOptions};
use dumpvault::ops::restore::restore;
use dumpvault::repo::{OpenOptions, Repo};
use dumpvault::snapshot::Source;

/// 10 §5.
const CONFIG: &str = concat!(
    "4456434f4e464947010000000000000000000000000000000000000000000000",
    "0000000009090909090909090909090909090909090909090909090909090909",
    "09090909002000000080000000000200000000010300000000f1536500000000",
    "5ccb0bf010cc4d96d6dc7e4b24db047a135b3eb8a3d65754c5d7bd859312b175",
);
/// 10 §6 (password `correct horse`).
const KEY_FILE: &str = concat!(
    "44564b455946494c010000000909090909090909090909090909090909090909",
    "090909090909090909090909004c000002000000010000000707070707070707",
    "07070707070707070707070707070707070707070707070700f1536500000000",
    "0b006b6174406578616d706c65404142434445464748494a4b4c4d4e4f505152",
    "535455565787e763e88a99b219d57fa93dfd0d4681caf3d78cdf6311980edaeb",
    "4cebfdad9e8ab58f9e4335729944de4c7f038b45631b00b2ac38e2057859bf3e",
    "b8311a15a8488ea6fd5253a5795009b92279d2af95cf0d1e4a60d74c10",
);
/// 10 §8.
const PACK: &str = concat!(
    "606162636465666768696a6b6c6d6e6f7071727374757677ddbcdd4a3924744c",
    "567a8d5960056fca70ebb9596a966c5ea06fb57969d572298081828384858687",
    "88898a8b8c8d8e8f909192939495969742ee5959e694436ae1aa970419f98658",
    "da686b885c5032dbce5a263f7c12f96be2ede03ae9a76cd2a385fbba09e93632",
    "1c9d4ee85c3359a0eb158bccc35bba2aa0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
    "b0b1b2b3b4b5b6b747ec0a1db75da4ac716f2d897130a3c003aa9f2c57b47e26",
    "4b04156e445ac96f0e2c220d687630296e2b8b4c14952c05343bca81db68d0a7",
    "cab701ea112172833e72e67c52ce25202de51a8ca886e848a8b1a3cab14287b4",
    "b16f86f19e497cc52e0e0ab80ca2144e68e7adc92de6985e01f5a4178c000000",
    "44565001",
);
/// 10 §9, the stored index object.
const INDEX: &str = concat!(
    "44564958010000000100000022c18cc20b95968a5c690ef45d195a1e60b82e28",
    "c1e6f98baa51009664afc4fe44564f4201010000c0c1c2c3c4c5c6c7c8c9cacb",
    "cccdcecfd0d1d2d3d4d5d6d7f09e8ad39d169593c70256355ffdbb3afe6445a7",
    "d1a1e07d38a8b784af8104306727968ba6afdb6798a584201c431cfc774614ce",
    "2255ccd40e9f4fa19cd6f47560143bb3c00b9bae4b0b911944fa8720eac660fa",
    "2791ec877be95069b531cfe3de1dab626d2b35e7d83a66e16d45fc3a9dd87ce9",
    "c5c1c3b2fe3f43e00219bd704fb162dc2760b85d2fd0dd98ec08cf2ff95d7d66",
    "2665323a0c39b66ae0e226b1b7f149b3",
);
/// 10 §10, the sealed snapshot.
const SNAPSHOT: &str = concat!(
    "44564f4202010000e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7",
    "3fd99b0de68b7f7bcbf700560baef2a34b1232c2a959a041160dc2f6a2bce5ee",
    "6f2347a772cad9444c3e894212bd5e94c45bc67a2f8ce858999238fc695179f0",
    "85486e494605ab9edd5b92501ff7b205de321088ca1b571e623f25b5092b5a18",
    "8861a0038acb27eccfe4cd7e7fcb637d1585593f4f53ea7e64e87cf6cdc8b4c2",
    "2ac7113b1267f213b6fe6a40129a8b5b9c9df66185283eefb07e892f365238e6",
    "532216d22d4776d046997d7bd17186fccb7a607ce105b57b31fa7f8d7d419906",
    "bc28ee844905a66e8db2feb4417fe53e5f70cb6b8ee6567596765d51d222fee9",
    "bd184559b1cc6affe497cd5ae3a2191d578e14f050836f2f8fb98e7a781b7426",
    "fcf0bf824dff272330b3c71231211dcb98c3f43036a6d896d80afa24f76cf2e7",
    "883be69cf7dc4a0d8c1997ac087f4e8f57b0313b75df8ffbb463231fb1280d76",
    "9ea73a347d185776d1cd96417962ee78415fe6f50e71168818c4cca74c2537c1",
    "bdc05506d18849e1c86523da836d88f19bf7f3282dcd1f1dd973ee96cc3b1b39",
    "ed005f6f8928d9414f94dbbf5c8951cb4b8a67c8ce870a62d486cc7acbcf8d4c",
    "7a128c3581a01bd84b1495f0812b53ebe4785ccdd1c59db0942b4dbf2602840a",
    "a8",
);
const TREE_ROOT_A: &str = "942c430842b364c0a6a3facab7a593b4b9dc0be6f1983570f5a25d0ef46e1087";
const TREE_ROOT_B: &str = "529adc84387f2764c10fb4b2449a6f20c60f0726729689a4ca7090495a96e91c";
const TREE_BLAKE3_A: &str = "bd180a653456b5ca0a8593efafd788518bc45ae0a8470afa42c4ecb5f960aee4";
const TREE_BLAKE3_B: &str = "47db5145c95bb2647ba7dfdff9085f48c5bed464326dbf09a56578a25246c9c1";
/// 10 §13: every tree blob of stream a, in the order they close: (chunk ID, level).
const TREE_NODES_A: [(&str, u8); 7] = [
    (
        "af3511089a392b6524c63553908345a9e3352c165b21faedfeb1b2e0ff2be1b5",
        0,
    ),
    (
        "0048ced9a3a3d73751492b95bf19286dd72a65eadf7ea609647ab7aa6800ae42",
        0,
    ),
    (
        "529adc84387f2764c10fb4b2449a6f20c60f0726729689a4ca7090495a96e91c",
        1,
    ),
    (
        "78a38b5aa772edd7ca38084f658df2e0cdd92fef2344acef88527e4cfe6d9602",
        0,
    ),
    (
        "9447faaa46b35679c52bb1b0a6ba235c841b3e0df5ceb2bccf4ada022d37c261",
        0,
    ),
    (
        "90e58881e0b1dd0fa4cc6da8c5c5f1634c66388fa2d877c3f548438bb5aa2bcb",
        1,
    ),
    (
        "942c430842b364c0a6a3facab7a593b4b9dc0be6f1983570f5a25d0ef46e1087",
        2,
    ),
];

/// §4: `data_key = K`, `id_key = I`, `chunker_seed = S`.
fn master() -> MasterKey {
    let mut b: Vec<u8> = (0u8..0x40).collect();
    b.extend_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    MasterKey::from_bytes(&b).unwrap()
}

fn bytes(h: &str) -> Vec<u8> {
    hex::decode(h).unwrap()
}

fn with(h: &str, off: usize, val: u8) -> Vec<u8> {
    let mut b = bytes(h);
    b[off] = val;
    b
}

fn is_damage(e: &Error, detail: &str) -> bool {
    e.is_corruption() && e.to_string().contains(detail)
}

/// Negative vectors, version 0 (fixed issue X7): a key file, an envelope (index object and
/// snapshot) and a pack trailer with version 0 are damage; the same field at 2 is "too new".
#[test]
fn version_zero_is_damage_and_two_is_too_new() {
    let k = master();
    let key_file = |b: Vec<u8>| KeyFile::decode(&ObjectId::of(&b), &b).map(|_| ());
    let trailer = |b: Vec<u8>| {
        let id = ObjectId::of(&b);
        fpack::parse_trailer(&id, b.len() as u64, &b[b.len() - 8..]).map(|_| ())
    };
    let index = |b: Vec<u8>| IndexFile::open(&k, &ObjectId::of(&b), &b).map(|_| ());
    let snapshot =
        |b: Vec<u8>| envelope::open(&k, ObjectKind::Snapshot, &ObjectId::of(&b), &b).map(|_| ());
    // The unmodified vectors are accepted (so the refusals below are the edits' doing).
    key_file(bytes(KEY_FILE)).unwrap();
    trailer(bytes(PACK)).unwrap();
    index(bytes(INDEX)).unwrap();
    snapshot(bytes(SNAPSHOT)).unwrap();
    type Check<'a> = &'a dyn Fn(Vec<u8>) -> dumpvault::Result<()>;
    let rows: [(&str, Check, &str, usize); 4] = [
        ("key file §6 byte 8 (K4)", &key_file, KEY_FILE, 8),
        ("pack §8 byte 291 (P2)", &trailer, PACK, 291),
        ("index §9 byte 49 (E3)", &index, INDEX, 49),
        ("snapshot §10 byte 5 (E3)", &snapshot, SNAPSHOT, 5),
    ];
    for (what, check, vector, off) in rows {
        let e = check(with(vector, off, 0)).unwrap_err();
        assert!(
            is_damage(&e, "version 0 is never valid"),
            "{what} = 00: {e}"
        );
        assert_eq!(e.exit_code(), 7, "{what}");
        let e = check(with(vector, off, 2)).unwrap_err();
        assert!(
            matches!(e, Error::UnsupportedVersion { found: 2, .. }),
            "{what} = 02: {e}"
        );
        assert_eq!(e.exit_code(), 8, "{what}");
    }
}

/// §6: byte 48 (t_cost) = 03 keeps the parameters inside K2, so Argon2 runs and the seal does
/// not open (K9): "does not open", not damage and not a refusal. 01 is below the floor (K2).
#[test]
fn key_file_t_cost_three_does_not_open_one_is_weak() {
    let decode = |b: &[u8]| KeyFile::decode(&ObjectId::of(b), b).unwrap();
    let ok = decode(&bytes(KEY_FILE));
    let m = ok
        .unwrap(b"correct horse")
        .unwrap()
        .expect("the vector opens");
    assert_eq!(&m.to_bytes()[..], &master().to_bytes()[..]);
    assert!(ok.unwrap(b"correct horse!").unwrap().is_none());
    let t3 = decode(&with(KEY_FILE, 48, 3));
    assert_eq!(t3.kdf.t_cost, 3);
    assert!(t3.unwrap(b"correct horse").unwrap().is_none());
    let t1 = decode(&with(KEY_FILE, 48, 1));
    assert!(matches!(
        t1.unwrap(b"correct horse"),
        Err(Error::WeakKeyParameters(_))
    ));
}

/// §8, "blob 0 opened under blob 1's entry", as the two rows now spell it: the 56 bytes of
/// blob 0 with entry 1 as it is (B1: stored length 88 ≠ 56), and with entry 0 whose kind and
/// chunk ID are entry 1's (B2: the AAD differs, authentication fails).
#[test]
fn blob_zero_under_blob_ones_entry() {
    let k = master();
    let pack = bytes(PACK);
    let id = ObjectId::of(&pack);
    let (start, hlen) = fpack::parse_trailer(&id, pack.len() as u64, &pack[284..]).unwrap();
    let hdr = &pack[start as usize..start as usize + hlen as usize];
    let entries = fpack::decode_header(&k, &id, start, hdr).unwrap();
    let (e0, e1) = (entries[0], entries[1]);
    assert_eq!((e0.offset, e0.stored_len, e1.stored_len), (0, 56, 88));
    let blob0 = &pack[..56];
    let opened = dumpvault::pack::open_blob(&k, &id, &e0, blob0).unwrap();
    assert_eq!(opened, b"hello, dumpvault");
    let e = dumpvault::pack::open_blob(&k, &id, &e1, blob0).unwrap_err();
    assert!(is_damage(&e, "short read"), "B1: {e}");
    let mut moved = e0;
    moved.kind = BlobKind::Tree;
    moved.id = e1.id;
    let e = dumpvault::pack::open_blob(&k, &id, &moved, blob0).unwrap_err();
    assert!(is_damage(&e, "authentication failed"), "B2: {e}");
    // The kind alone is bound too.
    let mut kind_only = e0;
    kind_only.kind = BlobKind::Tree;
    let e = dumpvault::pack::open_blob(&k, &id, &kind_only, blob0).unwrap_err();
    assert!(is_damage(&e, "authentication failed"), "B2 (kind): {e}");
}

/// A backend holding the §5 config (with the given chunk sizes) and the §6 key file.
fn kat_repository(chunk: (u32, u32, u32)) -> Arc<dyn Backend> {
    let b: Arc<dyn Backend> = Arc::new(MemoryBackend::default());
    b.create().unwrap();
    let kf = bytes(KEY_FILE);
    b.put(ObjectKind::Key, &ObjectId::of(&kf).to_hex(), &kf)
        .unwrap();
    let mut c = Config::decode(&bytes(CONFIG)).unwrap();
    (c.chunk_min, c.chunk_avg, c.chunk_max) = chunk;
    c.pack_target = 1 << 20;
    b.put(ObjectKind::Config, "config", &c.encode(&master()))
        .unwrap();
    b
}

/// §13: six 4096-byte pieces: the u32 nonce, 252 zero bytes, then 3840 bytes of the §11
/// xorshift generator seeded with 329.
fn tree_pieces() -> Vec<Vec<u8>> {
    let mut s: u64 = 329;
    let tail: Vec<u8> = (0..3840)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect();
    [709u32, 4187, 1394, 0, 4394, 1]
        .iter()
        .map(|n| [&n.to_le_bytes()[..], &[0; 252], &tail].concat())
        .collect()
}

/// §13: dumpvault's own backup of the two streams gives the vector's roots (a three-level
/// tree; the prefix's one-child level-2 root skipped), the tree blobs have the listed levels,
/// and restore gives the streams back.
#[test]
fn multi_level_tree_vector() {
    let backend = kat_repository((256, 1024, 4096));
    let pieces = tree_pieces();
    let a = pieces.concat();
    let b = pieces[..3].concat();
    let oo = OpenOptions::default();
    let mut repo = Repo::open(Arc::clone(&backend), b"correct horse", &oo).unwrap();
    let mut roots = Vec::new();
    for (name, stream) in [("a", &a), ("b", &b)] {
        let opts = BackupOptions {
            name: name.into(),
            host: "kat".into(),
            stream_name: name.into(),
            ..Default::default()
        };
        let r = backup(&mut repo, &stream[..], &opts, || Ok(Source::Stdin), |_| {}).unwrap();
        let st = &r.snapshot.streams[0];
        assert_eq!(st.chunks, stream.len() as u64 / 4096, "{name}");
        roots.push((r.snapshot_id, st.root, st.blake3.clone()));
    }
    assert_eq!(roots[0].1.to_hex(), TREE_ROOT_A);
    assert_eq!(roots[1].1.to_hex(), TREE_ROOT_B);
    assert_eq!(roots[0].2, TREE_BLAKE3_A);
    assert_eq!(roots[1].2, TREE_BLAKE3_B);

    // Walk stream a's tree from the root: every tree blob, with its level.
    let mut reader = Repo::open(Arc::clone(&backend), b"correct horse", &oo).unwrap();
    let mut ir = Repo::open(Arc::clone(&backend), b"correct horse", &oo).unwrap();
    let index = ir.index().unwrap();
    let mut found = Vec::new();
    let mut todo = vec![roots[0].1];
    while let Some(id) = todo.pop() {
        let node = TreeNode::decode(&reader.read_blob(index, &id).unwrap()).unwrap();
        if node.level > 0 {
            todo.extend(node.entries.iter().map(|e| e.id));
        }
        found.push((id.to_hex(), node.level));
    }
    found.sort();
    let mut want: Vec<(String, u8)> = TREE_NODES_A
        .iter()
        .map(|(h, l)| (h.to_string(), *l))
        .collect();
    want.sort();
    assert_eq!(found, want, "tree blobs of stream a and their levels");
    assert_eq!(TREE_NODES_A[6], (TREE_ROOT_A, 2), "the root is level 2");
    assert_eq!(
        TREE_NODES_A[2],
        (TREE_ROOT_B, 1),
        "b's root is a's first level-1 node"
    );

    for ((snap_id, _, _), want) in roots.iter().zip([&a, &b]) {
        let snap = reader
            .snapshots()
            .unwrap()
            .into_iter()
            .find(|s| s.id == *snap_id)
            .unwrap();
        let mut out = Vec::new();
        restore(&mut reader, &snap, None, &mut out, |_| {}).unwrap();
        assert_eq!(&out, want);
    }
}

/// 02 "Opening a repository: the order key files are tried", step 4: what `Repo::open` reports
/// when no key file opens, for each mix of a damaged key file (§6 with byte 0 = 00), a weak one
/// (§6 with m_cost 1024, K2), one of another repository and the good one. Key files are tried
/// in ascending order of name, and only the FIRST error remembered decides.
#[test]
fn key_opening_precedence() {
    let damaged = with(KEY_FILE, 0, 0);
    let dname = ObjectId::of(&damaged).to_hex();
    // The weak key file, with `created` (byte 88, not checked before unwrapping) varied until
    // its name sorts before or after the damaged one's.
    let weak = |before: bool| {
        (0u8..=255)
            .map(|c| {
                let mut b = with(KEY_FILE, 88, c);
                b[44..48].copy_from_slice(&1024u32.to_le_bytes());
                b
            })
            .find(|b| (ObjectId::of(b).to_hex() < dname) == before)
            .unwrap()
    };
    let foreign = {
        let mut b = bytes(KEY_FILE);
        b[12] ^= 1; // repo_id; the seal would not open either
        b
    };
    let open = |files: &[&Vec<u8>], pw: &[u8]| {
        let backend = kat_repository((8192, 32768, 131072));
        let good = bytes(KEY_FILE);
        backend
            .delete(ObjectKind::Key, &ObjectId::of(&good).to_hex())
            .unwrap();
        for f in files {
            backend
                .put(ObjectKind::Key, &ObjectId::of(f).to_hex(), f)
                .unwrap();
        }
        Repo::open(backend, pw, &OpenOptions::default()).map(|_| ())
    };
    let pw = b"correct horse".as_slice();
    let (w_first, w_last) = (weak(true), weak(false));
    // Only damaged key files: the first error itself (damage, exit 7).
    let e = open(&[&damaged], pw).unwrap_err();
    assert!(is_damage(&e, "bad magic"), "{e}");
    // A weak key file tried first: WeakKeyParameters (exit 4), whatever follows.
    let e = open(&[&w_first, &damaged], pw).unwrap_err();
    assert!(matches!(e, Error::WeakKeyParameters(_)), "{e}");
    // The damaged one tried first, then the weak one: the refusal still wins (X21; it was
    // "wrong password", which hid the lowered cost).
    let e = open(&[&damaged, &w_last], pw).unwrap_err();
    assert!(matches!(e, Error::WeakKeyParameters(_)), "{e}");
    // Decoded key files, none of this repository: the config is damaged (exit 7).
    let e = open(&[&damaged, &foreign], pw).unwrap_err();
    assert!(
        e.is_corruption() && e.to_string().contains("matches no key file"),
        "{e}"
    );
    // The good key file opens whatever was tried before it; a wrong password is exit 4.
    let good = bytes(KEY_FILE);
    open(&[&damaged, &w_first, &w_last, &good], pw).unwrap();
    let e = open(&[&damaged, &good], b"wrong").unwrap_err();
    assert!(matches!(e, Error::WrongPassword), "{e}");
}
