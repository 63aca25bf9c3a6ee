//! The known-answer and negative vectors of `format-spec/10-known-answer-vectors.md`, as
//! dumpvault reads them: the rows the spec marks as needing a dumpvault test (the version-0
//! rows, the exact B1/B2 and t_cost procedures, key-file opening precedence), the
//! multi-level tree of §13, written by dumpvault's own backup and restored, the machine key of
//! §14 (secret, wrapping key, key file, opening a repository) and the WAL object of §15
//! (rebuilt from 13's layout, read by dumpvault's decoder, compared with its writers' output,
//! and its negative rows).

use std::sync::Arc;

use dumpvault::backend::memory::MemoryBackend;
use dumpvault::backend::Backend;
use dumpvault::crypto::{
    machine_wrap_key, parse_machine_secret, seal_with_nonce, KdfParams, MasterKey,
};
use dumpvault::error::{Error, ObjectKind};
use dumpvault::format::config::Config;
use dumpvault::format::envelope;
use dumpvault::format::index::IndexFile;
use dumpvault::format::keyfile::KeyFile;
use dumpvault::format::pack::{self as fpack, BlobKind, Compression};
use dumpvault::format::tree::TreeNode;
use dumpvault::format::wal as fwal;
use dumpvault::id::{ChunkId, ObjectId};
use dumpvault::ops::backup::{backup, BackupOptions};
use dumpvault::ops::restore::restore;
use dumpvault::ops::wal::{self, Archive};
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

// ---------------------------------------------------------------- 10 §14: machine keys

/// 10 §14: the machine secret `e0 e1 … ff`, in its text form (K12).
const MACHINE_SECRET: &str =
    "dvmk1-e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
/// 10 §14: `BLAKE3.derive_key("dumpvault machine key v1", secret ‖ salt)`, salt 32 × `07`.
const MACHINE_WRAP_KEY: &str = "ad3303f9148ed705cd5229ed120c2e643ce848ce4614af64166c61c5ccf1a14c";
/// 10 §14: the machine key file wrapping §4's master key (label `wal@db1`, nonce `N`).
const MACHINE_KEY_FILE: &str = concat!(
    "44564b455946494c010000000909090909090909090909090909090909090909",
    "0909090909090909090909090000000000000000000000000707070707070707",
    "07070707070707070707070707070707070707070707070700f1536500000000",
    "070077616c40646231404142434445464748494a4b4c4d4e4f50515253545556",
    "57f79725ec07860c7a84b21c64bb96896001746cb1af3db8302b890b8d7baed3",
    "7caeda6e67fb2a776e799814707edf726be567c10fbe9071413e984f7e8fbfa5",
    "e1dd0921e026b4c61cb46cdb7312bbdf21da797af93a6cb7aa",
);
const MACHINE_KEY_FILE_ID: &str =
    "ccb4d5ac524f28989034651020e4f50a999bd2e2224626b27c23e0f2772eb1f3";

/// `start, start + 1, …`: the nonces of 10.
fn nonce(start: u8) -> [u8; 24] {
    core::array::from_fn(|i| start + i as u8)
}

/// 10 §14, recomputed with the library: the secret's parsing (K12), the wrapping key, the key
/// file (sealed with the library's AEAD under that key, over the library's encoding of the
/// fields), and its opening; then the §14 negative rows.
#[test]
fn machine_key_vector() {
    let secret = parse_machine_secret(MACHINE_SECRET.as_bytes()).expect("a machine secret");
    let want: [u8; 32] = core::array::from_fn(|i| 0xe0 + i as u8);
    assert_eq!(*secret, want);
    // K12: white space at both ends is removed; upper case, another length or prefix is not
    // a machine secret but an ordinary password.
    let spaced = format!(" \t{MACHINE_SECRET}\r\n");
    assert_eq!(*parse_machine_secret(spaced.as_bytes()).unwrap(), want);
    // "White space" is Unicode's White_Space (02, K12): U+3000 is, U+001F is not.
    let wide = format!("\u{3000}{MACHINE_SECRET}\u{85}");
    assert_eq!(*parse_machine_secret(wide.as_bytes()).unwrap(), want);
    let unit_sep = format!("{MACHINE_SECRET}\u{1f}");
    assert!(parse_machine_secret(unit_sep.as_bytes()).is_none());
    for not in [
        MACHINE_SECRET.to_uppercase(),
        MACHINE_SECRET[..69].to_string(),
        format!("{MACHINE_SECRET}0"),
        MACHINE_SECRET.replace("dvmk1-", "dvmk2-"),
    ] {
        assert!(parse_machine_secret(not.as_bytes()).is_none(), "{not}");
    }
    let wrap = machine_wrap_key(&secret, &[7; 32]);
    assert_eq!(hex::encode(*wrap), MACHINE_WRAP_KEY);

    let mut kf = KeyFile {
        repo_id: [9; 32],
        kdf: KdfParams::MACHINE,
        salt: [7; 32],
        created: 1_700_000_000,
        label: "wal@db1".into(),
        sealed: Vec::new(),
    };
    let aad = kf.encode(); // bytes 0 .. 98+L: everything before the nonce
    assert_eq!(aad.len(), 98 + 7);
    kf.sealed = seal_with_nonce(&wrap, &nonce(0x40), &aad, &master().to_bytes());
    let b = kf.encode();
    assert_eq!(hex::encode(&b), MACHINE_KEY_FILE);
    assert_eq!(b.len(), 217);
    assert_eq!(ObjectId::of(&b).to_hex(), MACHINE_KEY_FILE_ID);

    let decode = |b: &[u8]| KeyFile::decode(&ObjectId::of(b), b).unwrap();
    let d = decode(&b);
    assert_eq!(d, kf);
    assert!(d.is_machine(), "K11: all three parameters 0");
    let m = d
        .unwrap(MACHINE_SECRET.as_bytes())
        .unwrap()
        .expect("the secret opens it");
    assert_eq!(&m.to_bytes()[..], &master().to_bytes()[..]);
    let m = d.unwrap(spaced.as_bytes()).unwrap().expect("K12 trims");
    assert_eq!(m.data_key, master().data_key);
    // Negative rows of §14.
    assert!(d.unwrap(b"correct horse").unwrap().is_none(), "K13");
    let upper = MACHINE_SECRET.to_uppercase();
    assert!(d.unwrap(upper.as_bytes()).unwrap().is_none(), "K12");
    let other = format!("dvmk1-{}", "00".repeat(32));
    assert!(d.unwrap(other.as_bytes()).unwrap().is_none(), "K9");
    let salt = decode(&with(MACHINE_KEY_FILE, 56, 0x06));
    assert!(
        salt.unwrap(MACHINE_SECRET.as_bytes()).unwrap().is_none(),
        "K9"
    );
    let m1 = decode(&with(MACHINE_KEY_FILE, 44, 1));
    assert!(!m1.is_machine());
    assert!(
        matches!(
            m1.unwrap(MACHINE_SECRET.as_bytes()),
            Err(Error::WeakKeyParameters(_))
        ),
        "K2: one parameter non-zero is an Argon2id key file below the floor"
    );
}

/// 02 "Opening a repository", K13, with the §6 and §14 key files: a machine secret opens the
/// machine key file and is never tried on the Argon2id one, a password the reverse.
#[test]
fn machine_key_opens_the_repository() {
    let backend = kat_repository((8192, 32768, 131072));
    let mkf = bytes(MACHINE_KEY_FILE);
    backend
        .put(ObjectKind::Key, MACHINE_KEY_FILE_ID, &mkf)
        .unwrap();
    let oo = OpenOptions::default();
    let open = |pw: &[u8]| Repo::open(Arc::clone(&backend), pw, &oo);
    let r = open(MACHINE_SECRET.as_bytes()).unwrap();
    assert_eq!(r.key_id.to_hex(), MACHINE_KEY_FILE_ID);
    assert_eq!(&r.key.to_bytes()[..], &master().to_bytes()[..]);
    let r = open(b"correct horse").unwrap();
    assert_eq!(r.key_id, ObjectId::of(&bytes(KEY_FILE)));
    let other = format!("dvmk1-{}", "00".repeat(32));
    assert!(matches!(open(other.as_bytes()), Err(Error::WrongPassword)));
    // Without the §6 key file a password meets no key file it may try: "wrong password",
    // although the machine key file is of this repository (step 4.4).
    backend
        .delete(ObjectKind::Key, &ObjectId::of(&bytes(KEY_FILE)).to_hex())
        .unwrap();
    assert!(matches!(open(b"correct horse"), Err(Error::WrongPassword)));
    open(MACHINE_SECRET.as_bytes()).unwrap();
    // §14 with m_cost 1: an Argon2id key file below the floor. A secret skips it (K13: "wrong
    // password"); a password is refused by it (K2).
    backend
        .delete(ObjectKind::Key, MACHINE_KEY_FILE_ID)
        .unwrap();
    let weak = with(MACHINE_KEY_FILE, 44, 1);
    backend
        .put(ObjectKind::Key, &ObjectId::of(&weak).to_hex(), &weak)
        .unwrap();
    assert!(matches!(
        open(MACHINE_SECRET.as_bytes()),
        Err(Error::WrongPassword)
    ));
    assert!(matches!(
        open(b"correct horse"),
        Err(Error::WeakKeyParameters(_))
    ));
}

// ---------------------------------------------------------------- 10 §15: a WAL object

const WAL_CLUSTER: &str = "main";
const WAL_FILE: &str = "000000010000000000000003";
const WAL_SEG_SIZE: u32 = 16 << 20;
const WAL_SYSID: u64 = 7_301_234_567_890_123_456;
const WAL_MTIME_MS: i64 = 1_700_000_000_000;
const WAL_ARCHIVED_MS: i64 = 1_700_000_001_234;
/// The unkeyed BLAKE3 of §15's file (2 097 168 bytes).
const WAL_PLAIN_BLAKE3: &str = "b779b4d432c669debd93c2e54609c8bc999a05894290932e43e0815df696b39d";
/// `keyed_id`: BLAKE3 keyed with `I` of the file.
const WAL_KEYED_ID: &str = "2f94270d69c346b47fb25ee86fefae5ed2ecac3b2cdaa2b3cc3eb148a27b0c57";
/// Frame 0's body: a zstd frame of the file's first 2 MiB (pinned: compressors differ).
const WAL_ZSTD_FRAME0: &str = concat!(
    "28b52ffda000002000140100b813d1020001000300c0bae4e827325365000000",
    "01002000031000d6ffb9c626c001020010000200100002001000020010000200",
    "1000020010000200100002001000020010000200100002001000020010000200",
    "10000200100003001000",
);
/// The header AAD: prefix ‖ "/main/" ‖ file.
const WAL_HEADER_AAD: &str = concat!(
    "445657414c4f424a01000000000000010068e5cf8b010000760000002f6d6169",
    "6e2f303030303030303130303030303030303030303030303033",
);
/// Frame 0's AAD (frame 1's ends in `01000000`): prefix ‖ keyed_id ‖ u32 0.
const WAL_FRAME0_AAD: &str = concat!(
    "445657414c4f424a01000000000000010068e5cf8b010000760000002f94270d",
    "69c346b47fb25ee86fefae5ed2ecac3b2cdaa2b3cc3eb148a27b0c5700000000",
);
/// The header plaintext (78 bytes).
const WAL_HEADER_PLAIN: &str = concat!(
    "1000200000000000c0bae4e8273253652f94270d69c346b47fb25ee86fefae5e",
    "d2ecac3b2cdaa2b3cc3eb148a27b0c57d26ce5cf8b0100000200000092000000",
    "0000200001380000001000000000",
);
/// The stored object (380 bytes).
const WAL_OBJECT: &str = concat!(
    "445657414c4f424a01000000000000010068e5cf8b01000076000000a0a1a2a3",
    "a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b755ec2a1db75da4aca1d5c961",
    "5602f0a5143eb821c3c58c6d62f2d50f884c5068036b06146a9cde7f69d5df1e",
    "394fa379774ac3365169d0a7f8b701eabb2172836672c67cadd3683d997c4a6c",
    "785dd759c3ac85ed5c8a447e36447de896a7c0c1c2c3c4c5c6c7c8c9cacbcccd",
    "cecfd0d1d2d3d4d5d6d7d82ba52e3c1695b3e5d7dbf7ec7bfcb2a20c4b508c78",
    "0087b037abff0b67fdbbcc76b61dc1101f4f431d4206dc421efc654616ce3255",
    "ced40e9f4da18cd6f675481439b32db92d510d4f0d90f703b279256dead819a1",
    "a262a029b7732a904ec85f00451a7c2b36e7f83a56f96caa9fe2f1c5003e9ea3",
    "2a8a420be0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f72c9e910e",
    "fbca3e6b9ca0410c48aff7badaee246a0b49874edbd468106cab6b76675cc499",
    "306640e2ece74a39b38da3ea84f2ad3e00e5b15c3bb49da691fcb96a",
);
/// The conflict copy's name: the file's name ‖ `.conflict-` ‖ the first 16 hex of keyed_id.
const WAL_CONFLICT_COPY: &str = "000000010000000000000003.conflict-2f94270d69c346b4";

/// §15's file: a long page header (16 MiB segments, system identifier [`WAL_SYSID`]), zeros up
/// to 2 MiB, then `hello, dumpvault`.
fn wal_plaintext() -> Vec<u8> {
    let mut d = vec![0u8; fwal::FRAME_LEN + 16];
    d[0..2].copy_from_slice(&0xD113u16.to_le_bytes()); // xlp_magic (not checked)
    d[2..4].copy_from_slice(&2u16.to_le_bytes()); // xlp_info: XLP_LONG_HEADER
    d[4..8].copy_from_slice(&1u32.to_le_bytes()); // xlp_tli
    d[8..16].copy_from_slice(&(3 * u64::from(WAL_SEG_SIZE)).to_le_bytes()); // xlp_pageaddr
    d[24..32].copy_from_slice(&WAL_SYSID.to_le_bytes()); // xlp_sysid
    d[32..36].copy_from_slice(&WAL_SEG_SIZE.to_le_bytes()); // xlp_seg_size
    d[36..40].copy_from_slice(&8192u32.to_le_bytes()); // xlp_xlog_blcksz
    d[fwal::FRAME_LEN..].copy_from_slice(b"hello, dumpvault");
    d
}

/// §15's prefix, byte by byte as 13 lays it out.
fn wal_prefix() -> Vec<u8> {
    let mut p = b"DVWALOBJ".to_vec();
    p.extend_from_slice(&1u32.to_le_bytes());
    p.extend_from_slice(&WAL_SEG_SIZE.to_le_bytes());
    p.extend_from_slice(&WAL_MTIME_MS.to_le_bytes());
    p.extend_from_slice(&(100u32 + 9 * 2).to_le_bytes());
    p
}

/// 13 "Associated data, byte for byte".
fn wal_header_aad(prefix: &[u8], cluster: &str, file: &str) -> Vec<u8> {
    [prefix, b"/", cluster.as_bytes(), b"/", file.as_bytes()].concat()
}

fn wal_frame_aad(prefix: &[u8], keyed_id: &[u8], i: u32) -> Vec<u8> {
    [prefix, keyed_id, &i.to_le_bytes()].concat()
}

/// 10 §15 rebuilt from 13's layout with the library's primitives (keyed BLAKE3, the AEAD with
/// the vector's nonces), then read by dumpvault's decoder and by `wal fetch`'s reader.
#[test]
fn wal_object_vector() {
    let k = master();
    let data = wal_plaintext();
    assert_eq!(ObjectId::of(&data).to_hex(), WAL_PLAIN_BLAKE3);
    assert_eq!(
        dumpvault::pg::segment_header(&data),
        Some((WAL_SYSID, WAL_SEG_SIZE)),
        "seg_size and sysid from the long page header"
    );
    let keyed = ChunkId::compute(&k.id_key, &data).0;
    assert_eq!(hex::encode(keyed), WAL_KEYED_ID);
    let z = bytes(WAL_ZSTD_FRAME0);
    let mut frame0 = vec![0u8; fwal::FRAME_LEN];
    dumpvault::compress::decompress_into(Compression::Zstd, &z, &mut frame0).unwrap();
    assert_eq!(frame0, data[..fwal::FRAME_LEN], "the pinned zstd frame");

    let prefix = wal_prefix();
    assert_eq!(prefix.len(), fwal::PREFIX_LEN);
    let haad = wal_header_aad(&prefix, WAL_CLUSTER, WAL_FILE);
    assert_eq!(hex::encode(&haad), WAL_HEADER_AAD);
    assert_eq!(haad.len(), 58);
    assert_eq!(
        hex::encode(wal_frame_aad(&prefix, &keyed, 0)),
        WAL_FRAME0_AAD
    );
    let f0 = seal_with_nonce(
        &k.data_key,
        &nonce(0xc0),
        &wal_frame_aad(&prefix, &keyed, 0),
        &z,
    );
    let f1 = seal_with_nonce(
        &k.data_key,
        &nonce(0xe0),
        &wal_frame_aad(&prefix, &keyed, 1),
        &data[fwal::FRAME_LEN..],
    );
    let mut hp = Vec::new();
    hp.extend_from_slice(&(data.len() as u64).to_le_bytes());
    hp.extend_from_slice(&WAL_SYSID.to_le_bytes());
    hp.extend_from_slice(&keyed);
    hp.extend_from_slice(&WAL_ARCHIVED_MS.to_le_bytes());
    hp.extend_from_slice(&2u32.to_le_bytes());
    for (sealed, raw, comp) in [(&f0, fwal::FRAME_LEN, 1u8), (&f1, 16, 0)] {
        hp.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        hp.extend_from_slice(&(raw as u32).to_le_bytes());
        hp.push(comp);
    }
    assert_eq!(hex::encode(&hp), WAL_HEADER_PLAIN);
    let hs = seal_with_nonce(&k.data_key, &nonce(0xa0), &haad, &hp);
    let mut obj = [&prefix[..], &hs, &f0, &f1].concat();
    let trailer = ObjectId::of(&obj);
    obj.extend_from_slice(&trailer.0);
    assert_eq!(hex::encode(&obj), WAL_OBJECT);
    assert_eq!(obj.len(), 160 + 49 * 2 + z.len() + 16, "13 \"Sizes\"");

    // dumpvault's decoder: every field of the prefix and the header, and the frames' bodies.
    let name = format!("{WAL_CLUSTER}/{WAL_FILE}");
    let want_prefix = fwal::Prefix {
        seg_size: WAL_SEG_SIZE,
        mtime_ms: WAL_MTIME_MS,
        header_len: 118,
    };
    assert_eq!(fwal::parse_prefix(&name, &obj).unwrap(), want_prefix);
    assert_eq!(fwal::check_trailer(&name, &obj).unwrap(), want_prefix);
    let (p, h, frames) = fwal::decode(&k, WAL_CLUSTER, WAL_FILE, &name, &obj).unwrap();
    assert_eq!(p, want_prefix);
    assert_eq!(
        (h.plain_len, h.sysid, h.keyed_id, h.archived_ms),
        (data.len() as u64, WAL_SYSID, keyed, WAL_ARCHIVED_MS)
    );
    let infos = vec![
        fwal::FrameInfo {
            sealed_len: 146,
            raw_len: fwal::FRAME_LEN as u32,
            compression: Compression::Zstd,
        },
        fwal::FrameInfo {
            sealed_len: 56,
            raw_len: 16,
            compression: Compression::None,
        },
    ];
    assert_eq!(h.frames, infos);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].1, z);
    assert_eq!(frames[1].1, b"hello, dumpvault");
    // The header alone, from the first 28 + H bytes (one ranged read).
    let (_, h2) = fwal::open_header(&k, WAL_CLUSTER, WAL_FILE, &name, &obj[..146]).unwrap();
    assert_eq!(h2, h);

    // `wal fetch`'s reader (AW11, AW12 too): under its name, and stored as a conflict copy
    // (sealed as the file it copies, AW7); pushing the same file again writes nothing (AW14).
    let backend = MemoryBackend::default();
    backend.create().unwrap();
    backend.put(ObjectKind::Wal, &name, &obj).unwrap();
    let copy = format!("{WAL_CLUSTER}/{WAL_CONFLICT_COPY}");
    backend.put(ObjectKind::Wal, &copy, &obj).unwrap();
    let ar = Archive {
        backend: &backend,
        key: &k,
        zstd_level: 3,
    };
    for object in [WAL_FILE, WAL_CONFLICT_COPY] {
        let o = wal::read_object(ar, WAL_CLUSTER, object).unwrap();
        assert_eq!((o.prefix, &o.header), (want_prefix, &h), "{object}");
        assert!(o.data == data, "{object}: the file back");
    }
    let pushed = wal::store(ar, WAL_CLUSTER, WAL_FILE, &data, 5).unwrap();
    assert!(!pushed.stored, "same content: success with nothing written");
    assert_eq!(backend.get(ObjectKind::Wal, &name).unwrap(), obj);
}

/// dumpvault's writers lay §15 out exactly as the vector, but for the random nonces (so the
/// ciphertexts and the trailer differ): same length and prefix, and every sealed item opens
/// under 13's AAD to the vector's plaintext.
#[test]
fn wal_object_writers_match_the_vector() {
    let k = master();
    let data = wal_plaintext();
    let keyed = ChunkId::compute(&k.id_key, &data).0;
    let want = bytes(WAL_OBJECT);
    let prefix = wal_prefix();
    let open = |b: &[u8], aad: &[u8]| dumpvault::crypto::open(&k.data_key, aad, b);
    let check_trailer = |b: &[u8]| {
        let (body, t) = b.split_at(b.len() - 32);
        assert_eq!(ObjectId::of(body).0, t, "trailer");
    };

    // format::wal::encode, given the vector's frames.
    let ours = encode_vector_wal(&k, &data, Compression::Zstd, keyed);
    assert_eq!(ours.len(), want.len());
    assert_eq!(ours[..28], want[..28], "prefix");
    assert_ne!(ours[28..52], want[28..52], "a fresh random nonce");
    let haad = wal_header_aad(&prefix, WAL_CLUSTER, WAL_FILE);
    assert_eq!(
        open(&ours[28..146], &haad).expect("header AAD"),
        bytes(WAL_HEADER_PLAIN)
    );
    assert_eq!(
        open(&ours[146..292], &wal_frame_aad(&prefix, &keyed, 0)).expect("frame 0 AAD"),
        bytes(WAL_ZSTD_FRAME0)
    );
    assert_eq!(
        open(&ours[292..348], &wal_frame_aad(&prefix, &keyed, 1)).expect("frame 1 AAD"),
        b"hello, dumpvault"
    );
    check_trailer(&ours);

    // ops::wal::store (what `wal push` runs) from the file alone: seg_size and sysid from the
    // long page header, frames of 2 MiB, frame 0 compressed and frame 1 raw (zstd would not
    // be smaller), keyed_id; archived_ms is its clock, and its zstd output may differ from the
    // pinned frame in length.
    let backend = MemoryBackend::default();
    backend.create().unwrap();
    let ar = Archive {
        backend: &backend,
        key: &k,
        zstd_level: 3,
    };
    let r = wal::store(ar, WAL_CLUSTER, WAL_FILE, &data, WAL_MTIME_MS).unwrap();
    assert!(r.stored);
    let b = backend
        .get(ObjectKind::Wal, &format!("{WAL_CLUSTER}/{WAL_FILE}"))
        .unwrap();
    assert_eq!(b[..28], want[..28], "prefix");
    let hp = open(&b[28..146], &haad).expect("header AAD");
    let want_hp = bytes(WAL_HEADER_PLAIN);
    assert_eq!(hp.len(), want_hp.len());
    assert_eq!(hp[..48], want_hp[..48], "plain_len, sysid, keyed_id");
    assert_eq!(hp[56..60], want_hp[56..60], "F");
    assert_eq!(
        hp[64..],
        want_hp[64..],
        "frame entries but frame 0's sealed_len"
    );
    let f0_len = u32::from_le_bytes(hp[60..64].try_into().unwrap()) as usize;
    let f0 = open(&b[146..146 + f0_len], &wal_frame_aad(&prefix, &keyed, 0)).expect("frame 0");
    let mut raw = vec![0u8; fwal::FRAME_LEN];
    dumpvault::compress::decompress_into(Compression::Zstd, &f0, &mut raw).unwrap();
    assert!(raw == data[..fwal::FRAME_LEN]);
    let f1 = &b[146 + f0_len..b.len() - 32];
    assert_eq!(
        open(f1, &wal_frame_aad(&prefix, &keyed, 1)).expect("frame 1"),
        b"hello, dumpvault"
    );
    check_trailer(&b);
}

/// The §15 rows of 10's negative vectors, through dumpvault's decoder (`wal fetch`'s reader
/// for AW11 and AW12): what each must be refused as.
/// The §15 object through `format::wal::encode`: the vector's two frames (the first under
/// `compression0`), sealed with `keyed_id` as the keyed hash.
fn encode_vector_wal(
    k: &MasterKey,
    data: &[u8],
    compression0: Compression,
    keyed_id: [u8; 32],
) -> Vec<u8> {
    let frames = vec![
        fwal::Frame {
            raw_len: fwal::FRAME_LEN as u32,
            compression: compression0,
            bytes: bytes(WAL_ZSTD_FRAME0),
        },
        fwal::Frame {
            raw_len: 16,
            compression: Compression::None,
            bytes: data[fwal::FRAME_LEN..].to_vec(),
        },
    ];
    fwal::encode(
        k,
        WAL_CLUSTER,
        WAL_FILE,
        WAL_SEG_SIZE,
        WAL_MTIME_MS,
        data.len() as u64,
        WAL_SYSID,
        keyed_id,
        WAL_ARCHIVED_MS,
        frames,
    )
}

#[test]
fn wal_object_negative_vectors() {
    let k = master();
    let obj = bytes(WAL_OBJECT);
    let data = wal_plaintext();
    let keyed = ChunkId::compute(&k.id_key, &data).0;
    let name = format!("{WAL_CLUSTER}/{WAL_FILE}");
    let edit = |edits: &[(usize, u8)]| {
        let mut b = obj.clone();
        for &(off, v) in edits {
            b[off] = v;
        }
        b
    };
    let flip = |off: usize| edit(&[(off, obj[off] ^ 1)]);
    let retrail = |mut b: Vec<u8>| {
        let n = b.len() - 32;
        let t = ObjectId::of(&b[..n]);
        b[n..].copy_from_slice(&t.0);
        b
    };
    let decode = |b: &[u8], cluster: &str, file: &str| {
        fwal::decode(&k, cluster, file, &format!("{cluster}/{file}"), b).map(|_| ())
    };
    let read = |b: &[u8]| decode(b, WAL_CLUSTER, WAL_FILE);
    let keyless = |b: &[u8]| fwal::check_trailer(&name, b).map(|_| ());
    let swapped = [&obj[..146], &obj[292..348], &obj[146..292], &obj[348..]].concat();
    let inserted = [&obj[..348], &[0][..], &obj[348..]].concat();
    let rows: Vec<(&str, dumpvault::Result<()>, &str)> = vec![
        ("AW2 byte 0 = 00", read(&edit(&[(0, 0)])), "bad magic"),
        ("AW2 first 27 bytes", read(&obj[..27]), "bad magic"),
        ("AW3 version 0", read(&edit(&[(8, 0)])), "version 0"),
        ("AW4 H = 99", read(&edit(&[(24, 0x63)])), "header length"),
        (
            "AW4 H = 65 537",
            read(&edit(&[(24, 1), (25, 0), (26, 1)])),
            "header length",
        ),
        ("AW5 first 177 bytes", read(&obj[..177]), "truncated"),
        ("AW6 byte 200 ^= 1", keyless(&flip(200)), "trailer"),
        ("AW6 last byte removed", keyless(&obj[..379]), "trailer"),
        (
            "AW7 seg_size 32 MiB, trailer recomputed",
            read(&retrail(edit(&[(15, 2)]))),
            "header fails authentication",
        ),
        (
            "AW7 mtime_ms, trailer recomputed",
            read(&retrail(flip(16))),
            "header fails authentication",
        ),
        (
            "AW7 read as main/…04",
            decode(&obj, WAL_CLUSTER, "000000010000000000000004"),
            "header fails authentication",
        ),
        (
            "AW7 read as other/…03",
            decode(&obj, "other", WAL_FILE),
            "header fails authentication",
        ),
        (
            "AW10 byte 200 ^= 1, trailer recomputed",
            read(&retrail(flip(200))),
            "frame 0 fails authentication",
        ),
        (
            "AW10 frames exchanged, trailer recomputed",
            read(&retrail(swapped)),
            "frame 0 fails authentication",
        ),
        (
            "AW9 one byte inserted before the trailer, trailer recomputed",
            read(&retrail(inserted)),
            "bytes after the last frame",
        ),
    ];
    for (what, got, detail) in rows {
        let e = got.expect_err(what);
        assert!(is_damage(&e, detail), "{what}: {e}");
        assert_eq!(e.exit_code(), 7, "{what}");
    }
    let e = read(&edit(&[(8, 2)])).unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedVersion { found: 2, .. }),
        "AW3 version 2: {e}"
    );
    assert_eq!(e.exit_code(), 8);

    // Re-encoded with the key: consistent seals around a lie.
    let reencode = |compression0: Compression, keyed_id: [u8; 32]| {
        let b = encode_vector_wal(&k, &data, compression0, keyed_id);
        let backend = MemoryBackend::default();
        backend.create().unwrap();
        backend.put(ObjectKind::Wal, &name, &b).unwrap();
        let ar = Archive {
            backend: &backend,
            key: &k,
            zstd_level: 3,
        };
        wal::read_object(ar, WAL_CLUSTER, WAL_FILE).map(|_| ())
    };
    let mut lying = keyed;
    lying[0] ^= 1;
    for (what, got, detail) in [
        (
            "AW11 frame 0 marked compression 0",
            reencode(Compression::None, keyed),
            "decompressed to",
        ),
        (
            "AW12 keyed_id byte 0 ^= 1",
            reencode(Compression::Zstd, lying),
            "keyed hash",
        ),
    ] {
        let e = got.expect_err(what);
        assert!(is_damage(&e, detail), "{what}: {e}");
    }
}
