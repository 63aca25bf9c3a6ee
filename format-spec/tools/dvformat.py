#!/usr/bin/env python3
"""An independent reader (and minimal writer) of the dumpvault repository format, version 1.

Written from the text of `format-spec/` and sharing no code with dumpvault, so that it checks the
spec is complete: if this program and dumpvault disagree about a byte, one of them (or the spec)
is wrong.
It is deliberately plain: one function per structure, each applying the validation rules of the
section it cites, and no performance work at all.

    python3 dvformat.py kat                  print every known-answer vector (10-known-answer-vectors.md)
    python3 dvformat.py negative             check every negative vector is refused as the spec says
    python3 dvformat.py hashcheck REPO       check every object's name is the BLAKE3 of its bytes, and
                                             every WAL object's BLAKE3 trailer (no key)
    python3 dvformat.py snapshots REPO       list snapshots (password or machine secret from
                                             $DUMPVAULT_PASSWORD, else $DUMPVAULT_PASSWORD_FILE)
    python3 dvformat.py cat REPO SNAP [STREAM] > out   restore a stream byte-exact to stdout
    python3 dvformat.py check REPO           decode every object and every pack header; read all blobs and WAL
    python3 dvformat.py wal REPO             list WAL objects (clear prefixes; with a password, headers too)
    python3 dvformat.py wal REPO [CLUSTER/]NAME [OUT]   read a WAL object, verified (AW2-AW12), to OUT or stdout
    python3 dvformat.py mkexample DIR        write the worked example repository (password "correct horse",
                                             or the machine secret of 10 §14)

Dependencies (PyPI): blake3, pynacl (libsodium's XChaCha20-Poly1305), argon2-cffi (the reference
Argon2 C code), zstandard (to read zstd-compressed blobs and WAL frames; `kat` needs it for the
WAL object of 10 §15). See tools/README.md.
"""

import hashlib
import json
import math
import os
import re
import sys

import blake3
import nacl.bindings as sodium
import argon2.low_level as argon2_ll


class Corrupt(Exception):
    """The object is damaged or is not what its name and place say it is (spec: 'reject')."""


class Unsupported(Exception):
    """The object needs a newer reader (newer version or unknown incompat feature)."""


class WeakKey(Exception):
    """A key file's Argon2id parameters are outside [floor, ceiling] (02-crypto-and-keys.md)."""


# ---------------------------------------------------------------- 00: conventions
class Reader:
    """Bounds-checked little-endian reader: every read of missing bytes raises Corrupt."""

    def __init__(self, buf, what):
        self.buf, self.pos, self.what = buf, 0, what

    def remaining(self):
        return len(self.buf) - self.pos

    def take(self, n):
        if n < 0 or self.pos + n > len(self.buf):
            raise Corrupt(f"{self.what}: truncated")
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s

    def uint(self, n):
        return int.from_bytes(self.take(n), "little")

    def sint(self, n):
        return int.from_bytes(self.take(n), "little", signed=True)


def u16(v): return v.to_bytes(2, "little")
def u32(v): return v.to_bytes(4, "little")
def u64(v): return v.to_bytes(8, "little")
def i32(v): return v.to_bytes(4, "little", signed=True)
def i64(v): return v.to_bytes(8, "little", signed=True)


# ---------------------------------------------------------------- 01: naming
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def object_id(b):
    """Name of a stored object: unkeyed BLAKE3-256 of exactly its bytes."""
    return blake3.blake3(b).digest()


def chunk_id(id_key, plaintext):
    """Name of a blob: BLAKE3-256 keyed with the master key's id_key, over the plaintext."""
    return blake3.blake3(plaintext, key=id_key).digest()


# ---------------------------------------------------------------- 02: crypto and keys
NONCE_LEN, TAG_LEN = 24, 16
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN
MASTER_KEY_LEN = 72


def seal(key, aad, plaintext, nonce=None):
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    assert len(nonce) == NONCE_LEN
    return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def open_sealed(key, aad, sealed):
    """Returns the plaintext, or None when the item is not authentic under key and aad."""
    if len(sealed) < SEAL_OVERHEAD:
        return None
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[NONCE_LEN:], aad, sealed[:NONCE_LEN], key)
    except Exception:
        return None


KDF_FLOOR = (19456, 2, 1)
KDF_DEFAULT = (65536, 3, 1)
KDF_CEILING = (4 * 1024 * 1024, 100, 64)


def kdf_check(m, t, p):
    if m < KDF_FLOOR[0] or t < KDF_FLOOR[1] or p < KDF_FLOOR[2]:
        raise WeakKey(f"Argon2id m={m} t={t} p={p} below the floor")
    if m > KDF_CEILING[0] or t > KDF_CEILING[1] or p > KDF_CEILING[2]:
        raise WeakKey(f"Argon2id m={m} t={t} p={p} above the ceiling")


def argon2id(password, salt, m, t, p):
    kdf_check(m, t, p)
    return argon2_ll.hash_secret_raw(password, salt, time_cost=t, memory_cost=m, parallelism=p,
                                     hash_len=32, type=argon2_ll.Type.ID, version=0x13)


def master_from_bytes(b):
    if len(b) != MASTER_KEY_LEN:
        return None
    return {"data_key": b[:32], "id_key": b[32:64], "chunker_seed": int.from_bytes(b[64:72], "little")}


def master_to_bytes(mk):
    return mk["data_key"] + mk["id_key"] + u64(mk["chunker_seed"])


def config_mac_key(data_key):
    return blake3.blake3(data_key, derive_key_context="dumpvault v1 config mac").digest()


KEYFILE_MAGIC = b"DVKEYFIL"


# 02 "Machine keys": a key file whose three Argon2id parameters are all 0 is opened by a
# generated 256-bit secret (text form "dvmk1-" + 64 lower-case hex digits), without Argon2id.
MACHINE_KDF = (0, 0, 0)
MACHINE_SECRET_PREFIX = "dvmk1-"
MACHINE_KEY_CONTEXT = "dumpvault machine key v1"
# K12 trims "white space" at both ends: Unicode's White_Space property (what Rust's str::trim
# removes). Python's own str.strip() would also remove U+001C..U+001F, which are not White_Space.
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
               "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def parse_machine_secret(password):
    """K12: the 32 bytes of a machine secret, or None when `password` is an ordinary password."""
    try:
        s = password.decode("utf-8").strip(WHITE_SPACE)
    except UnicodeDecodeError:
        return None
    h = s[len(MACHINE_SECRET_PREFIX):]
    if not s.startswith(MACHINE_SECRET_PREFIX) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        return None
    return bytes.fromhex(h)


def machine_wrap_key(secret, salt):
    """02: wrap_key = BLAKE3.derive_key("dumpvault machine key v1", secret (32) ‖ salt (32))."""
    assert len(secret) == 32 and len(salt) == 32
    return blake3.blake3(secret + salt, derive_key_context=MACHINE_KEY_CONTEXT).digest()


def is_machine_keyfile(kf):
    """K11: all three parameters 0. (One or two zeros: an Argon2id key file below the floor, K2.)"""
    return (kf["m"], kf["t"], kf["p"]) == MACHINE_KDF


def encode_keyfile(mk, repo_id, password, kdf, salt, created, label, nonce=None):
    """`password` is a machine secret's text form when kdf is MACHINE_KDF (K14: a writer only
    ever writes a machine key file for a secret it generated)."""
    lab = label.encode("utf-8")
    assert len(lab) <= 256
    hdr = (KEYFILE_MAGIC + u32(1) + repo_id + u32(kdf[0]) + u32(kdf[1]) + u32(kdf[2]) + salt
           + i64(created) + u16(len(lab)) + lab)
    if tuple(kdf) == MACHINE_KDF:
        secret = parse_machine_secret(password)
        assert secret is not None, "a machine key file needs a machine secret"
        wrap = machine_wrap_key(secret, salt)
    else:
        wrap = argon2id(password, salt, *kdf)
    return hdr + seal(wrap, hdr, master_to_bytes(mk), nonce)


def decode_keyfile(b):
    r = Reader(b, "key file")
    if len(b) < 8 or b[:8] != KEYFILE_MAGIC:
        raise Corrupt("key file: bad magic")
    r.take(8)
    version = r.uint(4)
    if version == 0:
        raise Corrupt("key file: version 0 is never valid")
    if version != 1:
        raise Unsupported(f"key file version {version}")
    kf = {"repo_id": r.take(32), "m": r.uint(4), "t": r.uint(4), "p": r.uint(4),
          "salt": r.take(32), "created": r.sint(8)}
    n = r.uint(2)
    if n > 256:
        raise Corrupt("key file: label longer than 256 bytes")
    try:
        kf["label"] = r.take(n).decode("utf-8")
    except UnicodeDecodeError:
        raise Corrupt("key file: label is not UTF-8")
    kf["aad"] = b[:r.pos]
    kf["sealed"] = r.take(MASTER_KEY_LEN + SEAL_OVERHEAD)
    if r.remaining():
        raise Corrupt("key file: trailing bytes")
    return kf


def unwrap_keyfile(kf, password):
    """The master key, or None when `password` does not open `kf` (K9). Raises WeakKey for an
    Argon2id key file outside [floor, ceiling] (K2, K8), before any Argon2 work. A machine key
    file (K11) is opened only by a machine secret (K12); anything else does not open it."""
    if is_machine_keyfile(kf):
        secret = parse_machine_secret(password)
        if secret is None:
            return None
        wrap = machine_wrap_key(secret, kf["salt"])
    else:
        wrap = argon2id(password, kf["salt"], kf["m"], kf["t"], kf["p"])
    pt = open_sealed(wrap, kf["aad"], kf["sealed"])
    return None if pt is None else master_from_bytes(pt)


# ---------------------------------------------------------------- 03: config
CONFIG_MAGIC = b"DVCONFIG"
FORMAT_VERSION = 1
KNOWN_INCOMPAT = KNOWN_RO_COMPAT = 0


def encode_config(c, data_key):
    b = (CONFIG_MAGIC + u32(c["version"]) + u64(c["incompat"]) + u64(c["ro_compat"]) + u64(c["compat"])
         + c["repo_id"] + u32(c["chunk_min"]) + u32(c["chunk_avg"]) + u32(c["chunk_max"])
         + u32(c["pack_target"]) + i32(c["zstd_level"]) + i64(c["created"]))
    assert len(b) == 96
    return b + blake3.blake3(b, key=config_mac_key(data_key)).digest()


def validate_config(c):
    a, v, x = c["chunk_min"], c["chunk_avg"], c["chunk_max"]
    if not (256 <= a <= v <= x <= 16 * 1024 * 1024):
        raise Corrupt("config: chunker sizes out of range")
    if v & (v - 1) or v < 1024:
        raise Corrupt("config: chunker average not a power of two >= 1024")
    if a > 1 << 20 or v > 4 << 20:  # C7: the limits of the pinned FastCDC implementation
        raise Corrupt("config: chunker sizes beyond the FastCDC limits (min <= 1 MiB, avg <= 4 MiB)")
    if not (1 << 20 <= c["pack_target"] <= 1 << 30):
        raise Corrupt("config: pack target out of range")
    if not (1 <= c["zstd_level"] <= 22):
        raise Corrupt("config: zstd level out of range")


def decode_config(b):
    if len(b) < 8 or b[:8] != CONFIG_MAGIC:
        raise Corrupt("config: bad magic")
    r = Reader(b, "config")
    r.take(8)
    version = r.uint(4)
    if version > FORMAT_VERSION:
        raise Unsupported(f"repository format version {version}")
    if version == 0:
        raise Corrupt("config: format version 0")
    if len(b) != 128:
        raise Corrupt(f"config: length {len(b)} != 128")
    c = {"version": version, "incompat": r.uint(8), "ro_compat": r.uint(8), "compat": r.uint(8),
         "repo_id": r.take(32), "chunk_min": r.uint(4), "chunk_avg": r.uint(4), "chunk_max": r.uint(4),
         "pack_target": r.uint(4), "zstd_level": r.sint(4), "created": r.sint(8)}
    if c["incompat"] & ~KNOWN_INCOMPAT:
        raise Unsupported(f"unknown incompat features {c['incompat']:#x}")
    validate_config(c)
    return c


def verify_config_mac(b, data_key):
    if len(b) != 128 or blake3.blake3(b[:96], key=config_mac_key(data_key)).digest() != b[96:]:
        raise Corrupt("config: MAC mismatch")


# ---------------------------------------------------------------- envelope (05, 07, 08)
ENVELOPE_KIND = {"index": 1, "snapshot": 2, "lock": 3}


def envelope_header(kind):
    return b"DVOB" + bytes([ENVELOPE_KIND[kind], 1, 0, 0])


def envelope_seal(data_key, kind, plaintext, nonce=None, bound=b""):
    """`bound`: clear-text bytes stored before the envelope and appended to its AAD (index objects)."""
    h = envelope_header(kind)
    return h + seal(data_key, h + bound, plaintext, nonce)


def envelope_open(data_key, kind, b, bound=b""):
    if len(b) < 8 + SEAL_OVERHEAD:
        raise Corrupt(f"{kind}: truncated envelope")
    h = b[:8]
    if h[:4] != b"DVOB":
        raise Corrupt(f"{kind}: bad magic")
    if h[5] == 0:
        raise Corrupt(f"{kind}: envelope version 0 is never valid")
    if h[5] > 1:
        raise Unsupported(f"{kind}: envelope version {h[5]}")
    if h != envelope_header(kind):
        raise Corrupt(f"{kind}: envelope header names another kind or reserved bytes are not zero")
    pt = open_sealed(data_key, h + bound, b[8:])
    if pt is None:
        raise Corrupt(f"{kind}: authentication failed")
    return pt


# ---------------------------------------------------------------- 04: packs
ENTRY_LEN = 48
MAX_BLOB_RAW = 16 * 1024 * 1024 + 4096


def blob_aad(kind, cid):
    return b"DVB1" + bytes([kind]) + cid


def encode_entry(e):
    return (bytes([e["kind"], e["comp"]]) + u16(0) + u32(e["raw_len"]) + u32(e["offset"])
            + u32(e["stored_len"]) + e["id"])


def decode_entry(r):
    kind, comp, reserved = r.uint(1), r.uint(1), r.uint(2)
    e = {"kind": kind, "comp": comp, "raw_len": r.uint(4), "offset": r.uint(4),
         "stored_len": r.uint(4), "id": r.take(32)}
    if kind not in (0, 1):
        raise Corrupt(f"unknown blob kind {kind}")
    if comp not in (0, 1):
        raise Corrupt(f"unknown compression {comp}")
    if reserved:
        raise Corrupt("entry reserved field is not zero")
    if e["raw_len"] > MAX_BLOB_RAW:
        raise Corrupt("blob length exceeds the maximum")
    if e["stored_len"] < SEAL_OVERHEAD:
        raise Corrupt("stored length shorter than the seal overhead")
    if comp == 0 and e["stored_len"] != e["raw_len"] + SEAL_OVERHEAD:
        raise Corrupt("uncompressed blob with inconsistent lengths")
    return e


def encode_pack(data_key, blobs, header_nonce=None):
    """blobs: list of (entry-without-offset/stored_len, sealed bytes). Returns the pack bytes."""
    body, entries = b"", []
    for e, sealed in blobs:
        e = dict(e, offset=len(body), stored_len=len(sealed))
        body += sealed
        entries.append(e)
    plain = u32(len(entries)) + b"".join(encode_entry(e) for e in entries)
    sh = seal(data_key, b"DVH1", plain, header_nonce)
    return body + sh + u32(len(sh)) + b"DVP" + bytes([1]), entries


def parse_trailer(pack_len, trailer):
    if pack_len < 8 or len(trailer) != 8:
        raise Corrupt("pack: too short for a trailer")
    if trailer[4:7] != b"DVP":
        raise Corrupt("pack: bad trailer magic")
    if trailer[7] == 0:
        raise Corrupt("pack: trailer version 0 is never valid")
    if trailer[7] != 1:
        raise Unsupported(f"pack version {trailer[7]}")
    hlen = int.from_bytes(trailer[:4], "little")
    start = pack_len - 8 - hlen
    if start < 0:
        raise Corrupt("pack: header length exceeds pack")
    if hlen < SEAL_OVERHEAD + 4:
        raise Corrupt("pack: header too short")
    return start, hlen


def decode_pack_header(data_key, header_start, sealed):
    plain = open_sealed(data_key, b"DVH1", sealed)
    if plain is None:
        raise Corrupt("pack: header failed authentication")
    r = Reader(plain, "pack header")
    count = r.uint(4)
    if r.remaining() != count * ENTRY_LEN:
        raise Corrupt("pack: header entry count disagrees with its length")
    entries, nxt = [], 0
    for _ in range(count):
        e = decode_entry(r)
        end = e["offset"] + e["stored_len"]
        if e["offset"] < nxt or end > header_start:
            raise Corrupt("pack: blob entry outside the blob area or overlapping")
        nxt = end
        entries.append(e)
    return entries


def read_pack_header(data_key, pack):
    start, hlen = parse_trailer(len(pack), pack[-8:])
    return decode_pack_header(data_key, start, pack[start:start + hlen])


def decompress(comp, body, raw_len, what):
    """A blob's or WAL frame's body as stored: zstd (comp 1, never inflated past `raw_len`, the
    length the authenticated header promises) or raw; the caller checks the length."""
    if comp != 1:
        return body
    import zstandard
    try:
        return zstandard.ZstdDecompressor().decompress(body, max_output_size=raw_len)
    except zstandard.ZstdError as x:
        raise Corrupt(f"{what}: zstd: {x}")


def open_blob(mk, e, sealed):
    if len(sealed) != e["stored_len"]:
        raise Corrupt("blob: short read")
    body = open_sealed(mk["data_key"], blob_aad(e["kind"], e["id"]), sealed)
    if body is None:
        raise Corrupt("blob: authentication failed")
    plain = decompress(e["comp"], body, e["raw_len"], "blob")
    if len(plain) != e["raw_len"]:
        raise Corrupt("blob: decompressed length differs from raw_len")
    if chunk_id(mk["id_key"], plain) != e["id"]:
        raise Corrupt("blob: content does not hash to its chunk id")
    return plain


# ---------------------------------------------------------------- 05: index files
def encode_index(superseded, packs):
    b = u32(len(superseded)) + b"".join(superseded) + u32(len(packs))
    for p in packs:
        b += p["id"] + u64(p["len"]) + u32(len(p["entries"])) + b"".join(encode_entry(e) for e in p["entries"])
    return b


def index_prefix(pack_ids):
    return b"DVIX" + bytes([1, 0, 0, 0]) + u32(len(pack_ids)) + b"".join(pack_ids)


def seal_index_object(data_key, superseded, packs, nonce=None):
    """The stored index object: clear-text pack list, then the envelope (AAD covers the list)."""
    pre = index_prefix([p["id"] for p in packs])
    return pre + envelope_seal(data_key, "index", encode_index(superseded, packs), nonce, bound=pre)


def split_index_object(b):
    """IX1-IX3: the clear-text pack list (usable without a key, authenticated only by IX4)."""
    if len(b) < 4 or b[:4] != b"DVIX":
        raise Corrupt("index: bad magic")
    r = Reader(b, "index object")
    r.take(4)
    hdr = r.take(4)
    if hdr[0] > 1:
        raise Unsupported(f"index object version {hdr[0]}")
    if hdr != bytes([1, 0, 0, 0]):
        raise Corrupt("index: bad version or reserved bytes")
    n = r.uint(4)
    if 32 * n > r.remaining():
        raise Corrupt("index: pack count exceeds the object")
    ids = [r.take(32) for _ in range(n)]
    return ids, b[:r.pos], b[r.pos:]


def open_index_object(data_key, b):
    ids, pre, env = split_index_object(b)
    superseded, packs = decode_index(envelope_open(data_key, "index", env, bound=pre))
    if [p["id"] for p in packs] != ids:
        raise Corrupt("index: clear-text pack list disagrees with the sealed body")
    return superseded, packs


def decode_index(plain):
    r = Reader(plain, "index")
    ns = r.uint(4)
    if ns * 32 > r.remaining():
        raise Corrupt("index: truncated")
    superseded = [r.take(32) for _ in range(ns)]
    np_ = r.uint(4)
    if np_ * 44 > r.remaining():
        raise Corrupt("index: truncated")
    packs = []
    for _ in range(np_):
        pid, plen, ne = r.take(32), r.uint(8), r.uint(4)
        if ne * ENTRY_LEN > r.remaining():
            raise Corrupt("index: truncated")
        entries = []
        for _ in range(ne):
            e = decode_entry(r)
            if e["offset"] + e["stored_len"] > plen:
                raise Corrupt("index: entry beyond the pack's length")
            entries.append(e)
        packs.append({"id": pid, "len": plen, "entries": entries})
    if r.remaining():
        raise Corrupt("index: trailing bytes")
    return superseded, packs


# ---------------------------------------------------------------- 06: chunking and trees
M64 = (1 << 64) - 1
GEAR = [int.from_bytes(hashlib.md5(bytes([i]) * 64).digest()[:8], "big") for i in range(256)]
MASKS = [0, 0, 0, 0, 0, 0x0000000001804110, 0x0000000001803110, 0x0000000018035100, 0x0000001800035300,
         0x0000019000353000, 0x0000590003530000, 0x0000d90003530000, 0x0000d90103530000,
         0x0000d90303530000, 0x0000d90313530000, 0x0000d90f03530000, 0x0000d90303537000,
         0x0000d90703537000, 0x0000d90707537000, 0x0000d91707537000, 0x0000d91747537000,
         0x0000d91767537000, 0x0000d93767537000, 0x0000d93777537000, 0x0000d93777577000,
         0x0000db3777577000]


def cut_points(data, mn, avg, mx, seed):
    """FastCDC v2020, normalization level 1, seeded gear table: end offsets of every chunk."""
    bits = round(math.log2(avg))
    mask_s, mask_l = MASKS[bits + 1], MASKS[bits - 1]
    mask_s_ls, mask_l_ls = (mask_s << 1) & M64, (mask_l << 1) & M64
    gear = [g ^ seed for g in GEAR]
    gear_ls = [((g << 1) & M64) ^ ((seed << 1) & M64) for g in GEAR]
    out, pos = [], 0
    while pos < len(data):
        n = len(data) - pos
        if n <= mn:
            cut = n
        else:
            center = avg
            if n > mx:
                n = mx
            elif n < center:
                center = n
            i, h, cut = mn // 2, 0, None
            for lim, ms, ms_ls in ((center // 2, mask_s, mask_s_ls), (n // 2, mask_l, mask_l_ls)):
                while cut is None and i < lim:
                    a = 2 * i
                    h = ((h << 2) + gear_ls[data[pos + a]]) & M64
                    if h & ms_ls == 0:
                        cut = a
                        break
                    h = (h + gear[data[pos + a + 1]]) & M64
                    if h & ms == 0:
                        cut = a + 1
                        break
                    i += 1
            if cut is None:
                cut = n
        pos += cut
        out.append(pos)
    return out


MAX_TREE_ENTRIES, MAX_TREE_LEVEL = 4096, 8


def encode_tree(level, entries):
    return bytes([level, 0, 0, 0]) + u32(len(entries)) + b"".join(cid + u64(n) for cid, n in entries)


def decode_tree(plain):
    r = Reader(plain, "tree blob")
    hdr = r.take(4)
    count = r.uint(4)
    if hdr[1:] != b"\0\0\0":
        raise Corrupt("tree: reserved bytes are not zero")
    if hdr[0] > MAX_TREE_LEVEL:
        raise Corrupt("tree: level too deep")
    if count > MAX_TREE_ENTRIES or r.remaining() != count * 40:
        raise Corrupt("tree: entry count disagrees with the blob's length")
    entries = [(r.take(32), r.uint(8)) for _ in range(count)]
    if any(n == 0 for _, n in entries):
        raise Corrupt("tree: zero-length entry")
    return hdr[0], entries


def is_boundary(cid):
    return int.from_bytes(cid[:2], "little") & 0x3FF == 0


def build_tree(leaves, store):
    """Writer side of 06: `leaves` are (chunk id, length); `store(plaintext) -> chunk id`."""
    levels = []  # per level: [open entries, nodes emitted]

    def push(level, entry):
        if len(levels) <= level:
            levels.append([[], 0])
        levels[level][0].append(entry)
        if is_boundary(entry[0]) or len(levels[level][0]) >= MAX_TREE_ENTRIES:
            flush(level)

    def flush(level):
        entries, levels[level][0] = levels[level][0], []
        levels[level][1] += 1
        push(level + 1, (store(encode_tree(level, entries)), sum(n for _, n in entries)))

    for leaf in leaves:
        push(0, leaf)
    if not levels:
        levels.append([[], 0])
    level = 0
    while True:
        if level + 1 == len(levels) and levels[level][1] == 0:
            entries = levels[level][0]
            if level > 0 and len(entries) == 1:
                return entries[0][0]
            return store(encode_tree(level, entries))
        if levels[level][0]:
            flush(level)
        level += 1


# ---------------------------------------------------------------- 07: snapshots
RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
                     re.ASCII)


def time_key(t):
    """07 "Times": an RFC 3339 date-time (at most 9 fractional digits) as the integer pair
    (Unix seconds, nanoseconds) that orders snapshots; a leap second (ss = 60) is second 59 with
    10^9 added to the nanoseconds. Raises Corrupt if `t` is not of that shape or not a real time."""
    m = RFC3339.fullmatch(t) if isinstance(t, str) else None
    if not m:
        raise Corrupt(f"snapshot: time {t!r} is not an RFC 3339 date-time")
    y, mo, d, hh, mi, ss = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    leap = ss == 60
    try:
        import calendar
        import datetime as dt
        dt.date(y, mo, d)
        if hh > 23 or mi > 59 or ss > 60:
            raise ValueError("time of day out of range")
        off = 0
        if m.group(8):
            oh, om = int(m.group(9)), int(m.group(10))
            if oh > 23 or om > 59:
                raise ValueError("offset out of range")
            off = (oh * 3600 + om * 60) * (1 if m.group(8) == "+" else -1)
        secs = calendar.timegm((y, mo, d, hh, mi, 59 if leap else ss)) - off
    except ValueError as x:
        raise Corrupt(f"snapshot: time {t!r}: {x}")
    nanos = int((m.group(7) or "").ljust(9, "0")) + (10**9 if leap else 0)
    return secs, nanos


class _Obj(dict):
    """A JSON object that remembers which keys it saw more than once."""
    dups = ()


def _pairs(pairs):
    o = _Obj()
    seen = set()
    for k, v in pairs:
        if k in seen:
            o.dups = o.dups + (k,)
        seen.add(k)
        o[k] = v
    return o


def _no_dups(obj, where, known=None):
    bad = [k for k in getattr(obj, "dups", ()) if known is None or k in known]
    if bad:
        raise Corrupt(f"snapshot: key {bad[0]!r} appears twice in {where}")


SNAPSHOT_KEYS = {"format", "time", "host", "name", "tags", "tool_version", "duration_ms", "streams", "requests"}
STREAM_KEYS = {"name", "source", "size", "blake3", "root", "chunks", "new_chunks", "new_bytes", "dump"}
SOURCE_KEYS = {"kind", "path", "argv", "exit_status"}
REQUEST_KEYS = {"put", "get", "head", "list", "delete", "bytes_sent", "bytes_received"}
DUMP_KEYS = {"kind", "version", "compression", "complete", "problem"}


def decode_snapshot(plain):
    if len(plain) > 4 * 1024 * 1024:
        raise Corrupt("snapshot: manifest too large")
    try:
        s = json.loads(plain.decode("utf-8"), object_pairs_hook=_pairs)
    except (UnicodeDecodeError, ValueError) as x:
        raise Corrupt(f"snapshot: bad JSON: {x}")
    if not isinstance(s, dict):
        raise Corrupt("snapshot: not an object")
    _no_dups(s, "the snapshot", SNAPSHOT_KEYS)
    fmt = s.get("format")
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > 1:
        raise Unsupported(f"snapshot format {fmt}")
    if fmt == 0 and isinstance(fmt, int):
        raise Corrupt("snapshot: format 0 is never valid")
    need = {"format": int, "time": str, "host": str, "name": str, "tool_version": str,
            "duration_ms": int, "streams": list}
    for k, t in need.items():
        if not isinstance(s.get(k), t) or isinstance(s.get(k), bool):
            raise Corrupt(f"snapshot: field {k!r} missing or of the wrong type")
    time_key(s["time"])
    tags = s.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise Corrupt("snapshot: tags must map strings to strings")
    _no_dups(tags, "tags")
    for st in s["streams"]:
        if isinstance(st, dict):
            _no_dups(st, "a stream", STREAM_KEYS)
            _no_dups(st.get("source"), "a source", SOURCE_KEYS)
            if st.get("dump") is not None:
                _no_dups(st["dump"], "dump", DUMP_KEYS)
        for k, t in {"name": str, "source": dict, "size": int, "blake3": str, "root": str,
                     "chunks": int, "new_chunks": int, "new_bytes": int}.items():
            if not isinstance(st.get(k), t) or isinstance(st.get(k), bool):
                raise Corrupt(f"snapshot: stream field {k!r} missing or of the wrong type")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", st["root"]):
            raise Corrupt("snapshot: root is not a 64-digit hex id")
        kind = st["source"].get("kind")
        if kind not in ("stdin", "file", "command"):
            raise Corrupt(f"snapshot: unknown source kind {kind!r}")
    req = s.get("requests")
    if req is not None:  # optional statistics; if present, all seven counters (07)
        if not isinstance(req, dict):
            raise Corrupt("snapshot: requests is not an object")
        _no_dups(req, "requests", REQUEST_KEYS)
        for k in ("put", "get", "head", "list", "delete", "bytes_sent", "bytes_received"):
            n = req.get(k)
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 1 << 64:
                raise Corrupt(f"snapshot: requests.{k} missing or not a u64")
    return s


# ---------------------------------------------------------------- 08: locks
def decode_lock(plain):
    try:
        l = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as x:
        raise Corrupt(f"lock: bad JSON: {x}")
    for k, t in {"host": str, "pid": int, "exclusive": bool, "created": str, "refreshed": str,
                 "operation": str}.items():
        if not isinstance(l.get(k), t):
            raise Corrupt(f"lock: field {k!r} missing or of the wrong type")
    return l


# ---------------------------------------------------------------- 13: archived WAL
WAL_MAGIC = b"DVWALOBJ"
WAL_VERSION = 1
WAL_PREFIX_LEN, WAL_TRAILER_LEN = 28, 32
WAL_FRAME_LEN = 2 * 1024 * 1024
WAL_MAX_FRAMES = 1024
WAL_MAX_HEADER = 65536
WAL_CONFLICT_MARK = ".conflict-"
WAL_CLUSTER = re.compile(r"[a-z0-9_-]{1,32}", re.ASCII)
WAL_FILE_PART = re.compile(r"[A-Za-z0-9._-]{1,80}", re.ASCII)
WAL_FILE_NAME = re.compile(r"[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history", re.ASCII)


def wal_listable(cluster, file):
    """AW1, the backend-level shape check: a name a reader lists at all (everything else under
    wal/ — temp files, dot files, deeper paths — is ignored)."""
    return bool(WAL_CLUSTER.fullmatch(cluster) and WAL_FILE_PART.fullmatch(file) and not file.startswith("."))


def wal_classify(file):
    """AW1 / 13 "Names": (the WAL file name the object is sealed as, is a conflict copy).
    (None, False) is a stray: listed, but not WAL, never read."""
    if WAL_CONFLICT_MARK in file:
        base, tag = file.split(WAL_CONFLICT_MARK, 1)
        if WAL_FILE_NAME.fullmatch(base) and re.fullmatch(r"[0-9a-f]{16}", tag, re.ASCII):
            return base, True
        return None, False
    return (file if WAL_FILE_NAME.fullmatch(file) else None), False


def wal_long_header(data):
    """13 "Prefix": (seg_size, sysid) from a segment's long page header, or (0, 0)."""
    if len(data) < 40 or not int.from_bytes(data[2:4], "little") & 0x0002:
        return 0, 0
    seg_size = int.from_bytes(data[32:36], "little")
    if seg_size & (seg_size - 1) or not (1 << 20) <= seg_size <= (1 << 30):
        return 0, 0
    return seg_size, int.from_bytes(data[24:32], "little")


def wal_prefix(seg_size, mtime_ms, header_len):
    return WAL_MAGIC + u32(WAL_VERSION) + u32(seg_size) + i64(mtime_ms) + u32(header_len)


def wal_header_aad(prefix, cluster, file):
    """13 "Associated data": the 28 prefix bytes ‖ "/" ‖ cluster ‖ "/" ‖ file (the archived
    file's name, never a conflict copy's)."""
    return prefix + b"/" + cluster.encode("ascii") + b"/" + file.encode("ascii")


def wal_frame_aad(prefix, keyed_id, i):
    return prefix + keyed_id + u32(i)


def wal_header_plain(plain_len, sysid, keyed_id, archived_ms, frames):
    """frames: (sealed_len, raw_len, compression) per frame."""
    return (u64(plain_len) + u64(sysid) + keyed_id + i64(archived_ms) + u32(len(frames))
            + b"".join(u32(s) + u32(r) + bytes([c]) for s, r, c in frames))


def encode_wal(mk, cluster, file, data, mtime_ms, archived_ms, bodies=None, nonces=None, zstd_level=3,
               keyed_id=None):
    """AW13: the WAL object for `data` archived as `file` of `cluster`. `bodies`, if given, are
    (compression, body) per 2 MiB frame (the known-answer vector pins its zstd frame, since
    compressors differ in their output); otherwise each frame is compressed with zstd and kept
    compressed only if smaller. `nonces`: header nonce, then one per frame (random if None)."""
    pieces = [data[i:i + WAL_FRAME_LEN] for i in range(0, len(data), WAL_FRAME_LEN)]
    assert len(pieces) <= WAL_MAX_FRAMES
    if bodies is None:
        import zstandard
        bodies = []
        for p in pieces:
            z = zstandard.ZstdCompressor(level=zstd_level).compress(p)
            bodies.append((1, z) if len(z) < len(p) else (0, p))
    assert len(bodies) == len(pieces)
    nonces = nonces or [None] * (1 + len(pieces))
    name = WAL_FILE_NAME.fullmatch(file)
    assert name, f"{file!r} is not a WAL file name"
    seg_size, sysid = wal_long_header(data) if not file.endswith((".backup", ".history")) else (0, 0)
    header_len = SEAL_OVERHEAD + 60 + 9 * len(pieces)
    prefix = wal_prefix(seg_size, mtime_ms, header_len)
    keyed_id = chunk_id(mk["id_key"], data) if keyed_id is None else keyed_id  # (another: negative vectors)
    sealed = [seal(mk["data_key"], wal_frame_aad(prefix, keyed_id, i), body, nonces[1 + i])
              for i, (_, body) in enumerate(bodies)]
    hp = wal_header_plain(len(data), sysid, keyed_id, archived_ms,
                          [(len(s), len(p), c) for s, p, (c, _) in zip(sealed, pieces, bodies)])
    sh = seal(mk["data_key"], wal_header_aad(prefix, cluster, file), hp, nonces[0])
    assert len(sh) == header_len
    body = prefix + sh + b"".join(sealed)
    return body + blake3.blake3(body).digest()


def wal_parse_prefix(b):
    """AW2-AW4 on the first 28 bytes (no key)."""
    if len(b) < WAL_PREFIX_LEN or b[:8] != WAL_MAGIC:
        raise Corrupt("wal: not a dumpvault WAL object (bad magic or too short)")
    version = int.from_bytes(b[8:12], "little")
    if version == 0:
        raise Corrupt("wal: WAL object version 0 is never valid")
    if version != WAL_VERSION:
        raise Unsupported(f"WAL object version {version}")
    p = {"seg_size": int.from_bytes(b[12:16], "little"),
         "mtime_ms": int.from_bytes(b[16:24], "little", signed=True),
         "header_len": int.from_bytes(b[24:28], "little")}
    if not SEAL_OVERHEAD + 60 <= p["header_len"] <= WAL_MAX_HEADER:
        raise Corrupt("wal: header length out of range")
    return p


def wal_check_trailer(b):
    """AW2-AW6: everything that can be checked without a key."""
    p = wal_parse_prefix(b)
    if len(b) < WAL_PREFIX_LEN + p["header_len"] + WAL_TRAILER_LEN:
        raise Corrupt("wal: truncated")
    if blake3.blake3(b[:-WAL_TRAILER_LEN]).digest() != b[-WAL_TRAILER_LEN:]:
        raise Corrupt("wal: content does not match its BLAKE3 trailer")
    return p


def wal_open_header(mk, cluster, file, b):
    """AW2-AW4, AW7, AW8 on the first 28 + H bytes (a ranged read is enough)."""
    p = wal_parse_prefix(b)
    end = WAL_PREFIX_LEN + p["header_len"]
    if len(b) < end:
        raise Corrupt("wal: truncated header")
    plain = open_sealed(mk["data_key"], wal_header_aad(b[:WAL_PREFIX_LEN], cluster, file), b[WAL_PREFIX_LEN:end])
    if plain is None:
        raise Corrupt("wal: header fails authentication (damaged, or moved from another name)")
    r = Reader(plain, "wal header")
    h = {"plain_len": r.uint(8), "sysid": r.uint(8), "keyed_id": r.take(32), "archived_ms": r.sint(8)}
    n = r.uint(4)
    if n > WAL_MAX_FRAMES or r.remaining() < 9 * n:
        raise Corrupt("wal: bad frame count")
    h["frames"] = []
    for _ in range(n):
        f = {"sealed_len": r.uint(4), "raw_len": r.uint(4), "comp": r.uint(1)}
        if f["comp"] not in (0, 1):
            raise Corrupt("wal: unknown compression")
        if f["raw_len"] > WAL_FRAME_LEN or f["sealed_len"] < SEAL_OVERHEAD:
            raise Corrupt("wal: frame length out of range")
        h["frames"].append(f)
    if sum(f["raw_len"] for f in h["frames"]) != h["plain_len"] or r.remaining():
        raise Corrupt("wal: frame lengths disagree with the plaintext length")
    return p, h


def wal_decode(mk, cluster, name, b):
    """13 "Reading an archived file, step by step" (AW2-AW12) on the object stored as
    wal/<cluster>/<name>: returns (prefix, header, plaintext); no byte is returned unless every
    check passed."""
    file, _ = wal_classify(name)
    if file is None:
        raise Corrupt(f"wal: {name!r} is not a WAL file name or a conflict copy (a stray)")
    wal_check_trailer(b)
    p, h = wal_open_header(mk, cluster, file, b)
    off, end_of_frames = WAL_PREFIX_LEN + p["header_len"], len(b) - WAL_TRAILER_LEN
    out = []
    for i, f in enumerate(h["frames"]):
        if off + f["sealed_len"] > end_of_frames:
            raise Corrupt("wal: frames run past the end")
        body = open_sealed(mk["data_key"], wal_frame_aad(b[:WAL_PREFIX_LEN], h["keyed_id"], i),
                           b[off:off + f["sealed_len"]])
        if body is None:
            raise Corrupt(f"wal: frame {i} fails authentication")
        out.append((f, body))
        off += f["sealed_len"]
    if off != end_of_frames:
        raise Corrupt("wal: bytes after the last frame")
    plain = bytearray()
    for f, body in out:
        piece = decompress(f["comp"], body, f["raw_len"], "wal")
        if len(piece) != f["raw_len"]:
            raise Corrupt("wal: a frame's plaintext length differs from its raw_len")
        plain += piece
    if chunk_id(mk["id_key"], bytes(plain)) != h["keyed_id"]:
        raise Corrupt("wal: plaintext does not match its keyed hash")
    return p, h, bytes(plain)


# ---------------------------------------------------------------- a local repository
KIND_DIRS = {"key": "keys", "index": "index", "snapshot": "snapshots", "lock": "locks"}


class LocalRepo:
    def __init__(self, root):
        self.root = root

    def names(self, kind):
        if kind == "pack":
            base = os.path.join(self.root, "data")
            dirs = [os.path.join(base, d) for d in sorted(os.listdir(base))
                    if not d.startswith(".") and os.path.isdir(os.path.join(base, d))]
        else:
            dirs = [os.path.join(self.root, KIND_DIRS[kind])]
        out = []
        for d in dirs:
            for n in sorted(os.listdir(d)):
                if not n.startswith(".") and HEX64.match(n) and os.path.isfile(os.path.join(d, n)):
                    out.append(n)
        return out

    def path(self, kind, name):
        if kind == "pack":
            return os.path.join(self.root, "data", name[:2], name)
        return os.path.join(self.root, KIND_DIRS[kind], name)

    def get(self, kind, name):
        with open(self.path(kind, name), "rb") as f:
            b = f.read()
        if object_id(b).hex() != name:
            raise Corrupt(f"{kind} {name}: content does not hash to its name")
        return b

    def get_range(self, kind, name, off, n):
        with open(self.path(kind, name), "rb") as f:
            f.seek(off)
            b = f.read(n)
        if len(b) != n:
            raise Corrupt(f"{kind} {name}: range beyond the end")
        return b

    def wal_names(self):
        """13 "Local and S3 layout": (cluster, file) of every WAL object listed under wal/, in
        byte order; a missing wal/ or wal/<cluster>/ is empty, and names failing AW1's shape
        check (temp files, dot files, other directories) are not listed."""
        base = os.path.join(self.root, "wal")
        if not os.path.isdir(base):
            return []
        out = []
        for c in sorted(os.listdir(base)):
            d = os.path.join(base, c)
            if not os.path.isdir(d):
                continue
            for f in sorted(os.listdir(d)):
                if wal_listable(c, f) and os.path.isfile(os.path.join(d, f)):
                    out.append((c, f))
        return out

    def wal_get(self, cluster, name):
        with open(os.path.join(self.root, "wal", cluster, name), "rb") as f:
            return f.read()

    def open(self, password):
        with open(os.path.join(self.root, "config"), "rb") as f:
            self.config_bytes = f.read()
        self.config = decode_config(self.config_bytes)
        # 02 "Opening a repository: the order key files are tried".
        names = self.names("key")
        if not names:
            raise Corrupt("the repository has no key files")
        machine = parse_machine_secret(password) is not None  # K12, decided once
        weak, first_err, parsed, same_repo = None, None, 0, 0
        for name in names:
            try:
                kf = decode_keyfile(self.get("key", name))
            except (Corrupt, Unsupported, OSError) as x:
                first_err = first_err or x
                continue
            parsed += 1
            if kf["repo_id"] != self.config["repo_id"]:
                continue
            same_repo += 1
            if is_machine_keyfile(kf) != machine:  # K13: a secret tries machine key files only
                continue
            try:
                mk = unwrap_keyfile(kf, password)
            except WeakKey as x:
                weak = weak or x
                continue
            if mk is not None:
                self.mk, self.key_name = mk, name
                verify_config_mac(self.config_bytes, mk["data_key"])
                return
        if weak:
            raise weak
        if not parsed:
            raise first_err
        if not same_repo:  # the config's repo_id was altered or swapped
            raise Corrupt("config: its repository id matches no key file")
        raise SystemExit("no key file opens with this password" + (" (machine secret)" if machine else ""))

    def index(self):
        files = {n: open_index_object(self.mk["data_key"], self.get("index", n))
                 for n in self.names("index")}
        superseded = {s.hex() for sup, _ in files.values() for s in sup}
        idx = {}
        for n, (_, packs) in sorted(files.items()):
            if n in superseded:
                continue
            for p in packs:
                for e in p["entries"]:
                    idx.setdefault(e["id"], (p["id"].hex(), e))
        return idx

    def snapshots(self):
        out = []
        for n in self.names("snapshot"):
            s = decode_snapshot(envelope_open(self.mk["data_key"], "snapshot", self.get("snapshot", n)))
            out.append((n, s))
        return out

    def read_blob(self, idx, cid, kind):
        if cid not in idx:
            raise Corrupt(f"chunk {cid.hex()}: not in the index")
        pack, e = idx[cid]
        if e["kind"] != kind:
            raise Corrupt(f"chunk {cid.hex()}: blob kind {e['kind']} where {kind} was expected")
        return open_blob(self.mk, e, self.get_range("pack", pack, e["offset"], e["stored_len"]))

    def cat(self, stream, out):
        """Depth-first walk of the stream's tree, verifying every rule of 06 and 07."""
        idx = self.index()
        h, total = blake3.blake3(), 0

        def walk(cid, want_level, want_len):
            nonlocal total
            level, entries = decode_tree(self.read_blob(idx, cid, 1))
            if want_level is not None and level != want_level:
                raise Corrupt(f"tree {cid.hex()}: level {level}, parent says {want_level}")
            if want_len is not None and sum(n for _, n in entries) != want_len:
                raise Corrupt(f"tree {cid.hex()}: lengths disagree with the parent entry")
            for child, n in entries:
                if level == 0:
                    data = self.read_blob(idx, child, 0)
                    if len(data) != n:
                        raise Corrupt(f"chunk {child.hex()}: length {len(data)}, tree says {n}")
                    h.update(data)
                    total += n
                    out.write(data)
                else:
                    walk(child, level - 1, n)

        walk(bytes.fromhex(stream["root"]), None, stream["size"])
        if total != stream["size"] or h.hexdigest() != stream["blake3"].lower():
            raise Corrupt("restored stream does not match the snapshot's size or BLAKE3")


# ---------------------------------------------------------------- known-answer vectors
def kat():
    """Every value printed in 10-known-answer-vectors.md, computed from the spec's definitions."""
    key = bytes(range(32))
    nonce = bytes(range(0x40, 0x58))
    v = {}
    v["xchacha"] = seal(key, b"dumpvault", b"hello, dumpvault", nonce).hex()
    v["argon2"] = argon2id(b"correct horse", bytes([7]) * 32, *KDF_FLOOR).hex()
    v["b3_empty"] = object_id(b"").hex()
    v["b3_abc"] = object_id(b"abc").hex()
    id_key = bytes(range(0x20, 0x40))
    v["chunk_id_hello"] = chunk_id(id_key, b"hello, dumpvault").hex()
    v["chunk_id_empty"] = chunk_id(id_key, b"").hex()
    long = bytes(i % 251 for i in range(4096))
    v["chunk_id_4096"] = chunk_id(id_key, long).hex()
    v["config_mac_key"] = config_mac_key(key).hex()
    mk = {"data_key": key, "id_key": id_key, "chunker_seed": 0x0123456789ABCDEF}
    v["master_bytes"] = master_to_bytes(mk).hex()

    cfg = {"version": 1, "incompat": 0, "ro_compat": 0, "compat": 0, "repo_id": bytes([9]) * 32,
           "chunk_min": 8192, "chunk_avg": 32768, "chunk_max": 131072, "pack_target": 16 << 20,
           "zstd_level": 3, "created": 1700000000}
    cb = encode_config(cfg, key)
    assert decode_config(cb) == cfg
    verify_config_mac(cb, key)
    v["config"] = cb.hex()

    kb = encode_keyfile(mk, bytes([9]) * 32, b"correct horse", KDF_FLOOR, bytes([7]) * 32, 1700000000,
                        "kat@example", nonce)
    kf = decode_keyfile(kb)
    assert unwrap_keyfile(kf, b"correct horse") == mk and unwrap_keyfile(kf, b"wrong") is None
    v["keyfile"], v["keyfile_id"] = kb.hex(), object_id(kb).hex()

    # One pack holding one data blob and one tree blob (both stored uncompressed).
    data = b"hello, dumpvault"
    cid = chunk_id(id_key, data)
    tree_plain = encode_tree(0, [(cid, len(data))])
    tid = chunk_id(id_key, tree_plain)
    s0 = seal(key, blob_aad(0, cid), data, bytes(range(0x60, 0x78)))
    s1 = seal(key, blob_aad(1, tid), tree_plain, bytes(range(0x80, 0x98)))
    pack, entries = encode_pack(key, [({"kind": 0, "comp": 0, "raw_len": len(data), "id": cid}, s0),
                                      ({"kind": 1, "comp": 0, "raw_len": len(tree_plain), "id": tid}, s1)],
                                bytes(range(0xA0, 0xB8)))
    assert read_pack_header(key, pack) == entries
    assert open_blob(mk, entries[0], pack[:len(s0)]) == data
    pid = object_id(pack)
    v["tree_plain"], v["tree_id"] = tree_plain.hex(), tid.hex()
    v["pack"], v["pack_id"], v["pack_len"] = pack.hex(), pid.hex(), len(pack)

    idx_plain = encode_index([], [{"id": pid, "len": len(pack), "entries": entries}])
    assert decode_index(idx_plain) == ([], [{"id": pid, "len": len(pack), "entries": entries}])
    ib = seal_index_object(key, [], [{"id": pid, "len": len(pack), "entries": entries}], bytes(range(0xC0, 0xD8)))
    assert open_index_object(key, ib) == ([], [{"id": pid, "len": len(pack), "entries": entries}])
    v["index_plain"], v["index"], v["index_id"] = idx_plain.hex(), ib.hex(), object_id(ib).hex()

    snap = {"format": 1, "time": "2026-11-21T03:00:00Z", "host": "db1", "name": "shop",
            "tags": {"env": "prod"}, "tool_version": "0.1.0", "duration_ms": 1234,
            "streams": [{"name": "dump", "source": {"kind": "command", "argv": ["pg_dump", "shop"],
                                                    "exit_status": 0},
                         "size": len(data), "blake3": object_id(data).hex(), "root": tid.hex(),
                         "chunks": 1, "new_chunks": 1, "new_bytes": len(s0) + len(s1)}]}
    sj = json.dumps(snap, separators=(",", ":")).encode()
    decode_snapshot(sj)
    sb = envelope_seal(key, "snapshot", sj, bytes(range(0xE0, 0xF8)))
    v["snapshot_json"], v["snapshot"], v["snapshot_id"] = sj.decode(), sb.hex(), object_id(sb).hex()

    def xorshift(n, s):
        out = bytearray(n)
        for i in range(n):
            s ^= (s << 13) & M64
            s ^= s >> 7
            s ^= (s << 17) & M64
            out[i] = (s >> 24) & 0xFF
        return bytes(out)

    v["cuts_default"] = cut_points(xorshift(1 << 20, 0xDEADBEEF), 8192, 32768, 131072, 0x0123456789ABCDEF)
    v["cuts_seed0"] = cut_points(xorshift(1 << 20, 0xDEADBEEF), 8192, 32768, 131072, 0)
    v["is_boundary"] = [is_boundary(bytes([0x00, 0xFC]) + bytes(30)), is_boundary(bytes([0x00, 0x03]) + bytes(30)),
                        is_boundary(bytes([0x01, 0x00]) + bytes(30))]
    v.update(tree_vector())
    v.update(machine_key_vector(mk))
    v.update(wal_vector(mk))
    return v


# 10 §14: a machine secret, its wrapping key, and a machine key file wrapping §4's master key.
MACHINE_KAT_SECRET = MACHINE_SECRET_PREFIX + bytes(range(0xE0, 0x100)).hex()


def machine_key_vector(mk):
    v = {}
    secret = parse_machine_secret(MACHINE_KAT_SECRET.encode())
    assert secret == bytes(range(0xE0, 0x100))
    assert parse_machine_secret(b" \t" + MACHINE_KAT_SECRET.encode() + b"\r\n") == secret
    assert parse_machine_secret(MACHINE_KAT_SECRET.upper().encode()) is None
    assert parse_machine_secret(("\u3000" + MACHINE_KAT_SECRET + "\x85").encode()) == secret
    assert parse_machine_secret((MACHINE_KAT_SECRET + "\x1f").encode()) is None  # not White_Space
    v["machine_secret"] = MACHINE_KAT_SECRET
    v["machine_wrap_key"] = machine_wrap_key(secret, bytes([7]) * 32).hex()
    kb = encode_keyfile(mk, bytes([9]) * 32, MACHINE_KAT_SECRET.encode(), MACHINE_KDF, bytes([7]) * 32,
                        1700000000, "wal@db1", bytes(range(0x40, 0x58)))
    kf = decode_keyfile(kb)
    assert is_machine_keyfile(kf) and unwrap_keyfile(kf, MACHINE_KAT_SECRET.encode()) == mk
    assert unwrap_keyfile(kf, b"correct horse") is None
    assert unwrap_keyfile(kf, (MACHINE_SECRET_PREFIX + "00" * 32).encode()) is None
    v["machine_keyfile"], v["machine_keyfile_id"] = kb.hex(), object_id(kb).hex()
    return v


# 10 §15: a WAL object. The file is 2 MiB + 16 bytes named as segment 3 of timeline 1: a long
# page header (16 MiB segments, system identifier WAL_KAT_SYSID), zeros up to 2 MiB, then
# "hello, dumpvault"; so frame 0 is stored zstd-compressed (the zstd frame is pinned below) and
# frame 1 raw.
WAL_KAT_CLUSTER, WAL_KAT_FILE = "main", "000000010000000000000003"
WAL_KAT_SYSID = 7301234567890123456
WAL_KAT_MTIME_MS, WAL_KAT_ARCHIVED_MS = 1700000000000, 1700000001234
WAL_KAT_ZSTD = bytes.fromhex(
    "28b52ffda000002000140100b813d1020001000300c0bae4e82732536500000001002000031000d6ffb9c626c0010200"
    "10000200100002001000020010000200100002001000020010000200100002001000020010000200100002001000020010"
    "000200100003001000")


def wal_kat_plaintext():
    page = (u16(0xD113) + u16(0x0002) + u32(1) + u64(3 * (16 << 20)) + u32(0) + bytes(4)
            + u64(WAL_KAT_SYSID) + u32(16 << 20) + u32(8192))
    assert len(page) == 40
    return page + bytes(WAL_FRAME_LEN - 40) + b"hello, dumpvault"


def wal_vector(mk):
    v = {}
    data = wal_kat_plaintext()
    import zstandard
    assert zstandard.ZstdDecompressor().decompress(WAL_KAT_ZSTD, max_output_size=WAL_FRAME_LEN) == data[:WAL_FRAME_LEN]
    nonces = [bytes(range(0xA0, 0xB8)), bytes(range(0xC0, 0xD8)), bytes(range(0xE0, 0xF8))]
    ob = encode_wal(mk, WAL_KAT_CLUSTER, WAL_KAT_FILE, data, WAL_KAT_MTIME_MS, WAL_KAT_ARCHIVED_MS,
                    bodies=[(1, WAL_KAT_ZSTD), (0, data[WAL_FRAME_LEN:])], nonces=nonces)
    p, h, plain = wal_decode(mk, WAL_KAT_CLUSTER, WAL_KAT_FILE, ob)
    assert plain == data and p["seg_size"] == 16 << 20 and h["sysid"] == WAL_KAT_SYSID
    assert [(f["raw_len"], f["comp"]) for f in h["frames"]] == [(WAL_FRAME_LEN, 1), (16, 0)]
    keyed = chunk_id(mk["id_key"], data)
    prefix = ob[:WAL_PREFIX_LEN]
    v["wal_plain_len"], v["wal_plain_blake3"] = len(data), object_id(data).hex()
    v["wal_keyed_id"] = keyed.hex()
    v["wal_zstd_frame0"] = WAL_KAT_ZSTD.hex()
    v["wal_header_aad"] = wal_header_aad(prefix, WAL_KAT_CLUSTER, WAL_KAT_FILE).hex()
    v["wal_frame_aads"] = [wal_frame_aad(prefix, keyed, i).hex() for i in range(2)]
    v["wal_header_plain"] = wal_header_plain(len(data), WAL_KAT_SYSID, keyed, WAL_KAT_ARCHIVED_MS,
                                             [(f["sealed_len"], f["raw_len"], f["comp"]) for f in h["frames"]]).hex()
    v["wal_object"], v["wal_object_len"] = ob.hex(), len(ob)
    v["wal_trailer"] = ob[-WAL_TRAILER_LEN:].hex()
    v["wal_conflict_copy"] = f"{WAL_KAT_FILE}{WAL_CONFLICT_MARK}{keyed.hex()[:16]}"
    return v


# The multi-level tree of 10 §13: six 4096-byte pieces whose chunk IDs were chosen (by the
# nonce in each piece's first four bytes, which the chunker never hashes) so that the tree has
# three levels, a level-1 node closed by a boundary, and, for the three-piece prefix, a skipped
# one-child root.
TREE_CHUNKER = (256, 1024, 4096)
TREE_TAIL_SEED = 329
TREE_NONCES = (709, 4187, 1394, 0, 4394, 1)


def xorshift_bytes(n, s):
    out = bytearray(n)
    for i in range(n):
        s ^= (s << 13) & M64
        s ^= s >> 7
        s ^= (s << 17) & M64
        out[i] = (s >> 24) & 0xFF
    return bytes(out)


def tree_vector_pieces():
    tail = xorshift_bytes(4096 - 256, TREE_TAIL_SEED)
    return [u32(n) + bytes(252) + tail for n in TREE_NONCES]


def tree_vector():
    """10 §13: chunk the two streams with the config's sizes and seed S, build their trees
    (06), and check the shape the vector promises."""
    id_key = bytes(range(0x20, 0x40))
    seed = 0x0123456789ABCDEF
    pieces = tree_vector_pieces()
    a, b = b"".join(pieces), b"".join(pieces[:3])
    v = {}
    for name, stream, n in (("a", a, 6), ("b", b, 3)):
        cuts = cut_points(stream, *TREE_CHUNKER, seed)
        assert cuts == [4096 * (i + 1) for i in range(n)], cuts
        nodes = []

        def store(plain):
            nodes.append(plain)
            return chunk_id(id_key, plain)
        leaves = [(chunk_id(id_key, stream[c - 4096:c]), 4096) for c in cuts]
        root = build_tree(leaves, store)
        v[f"tree_{name}_size"] = len(stream)
        v[f"tree_{name}_blake3"] = object_id(stream).hex()
        v[f"tree_{name}_root"] = root.hex()
        v[f"tree_{name}_nodes"] = [(chunk_id(id_key, p).hex(), p[0], [(e[0][:4].hex(), e[1]) for e in decode_tree(p)[1]])
                                   for p in nodes]
        if name == "a":
            v["tree_chunks"] = [(l[0].hex(), is_boundary(l[0])) for l in leaves]
    # The shape: a level-2 root over two level-1 nodes over four level-0 nodes; the prefix's
    # root is the first level-1 node (its one-child level-2 root skipped).
    levels = [lvl for _, lvl, _ in v["tree_a_nodes"]]
    assert levels == [0, 0, 1, 0, 0, 1, 2], levels
    assert v["tree_a_root"] == v["tree_a_nodes"][-1][0]
    assert v["tree_b_root"] == v["tree_a_nodes"][2][0]
    assert [bd for _, bd in v["tree_chunks"]] == [True, False, True, False, True, False]
    assert v["tree_a_root"] == TREE_ROOT_A and v["tree_b_root"] == TREE_ROOT_B, (v["tree_a_root"], v["tree_b_root"])
    return v


TREE_ROOT_A = "942c430842b364c0a6a3facab7a593b4b9dc0be6f1983570f5a25d0ef46e1087"
TREE_ROOT_B = "529adc84387f2764c10fb4b2449a6f20c60f0726729689a4ca7090495a96e91c"


def mutate(hexbytes, edits=(), truncate=None, append=b""):
    b = bytearray(bytes.fromhex(hexbytes))
    for off, val in edits:
        b[off] = val
    if truncate is not None:
        b = b[:truncate]
    return bytes(b) + append


def negative_vectors():
    """Mutations of the §5–§10 vectors that a reader MUST refuse, with the rule and the outcome
    ('damaged' or 'too new'). Each is checked against this implementation by `negative`."""
    v = kat()
    K = bytes(range(32))
    mk = master_from_bytes(bytes.fromhex(v["master_bytes"]))
    cfg, kf, pack = v["config"], v["keyfile"], v["pack"]
    idx, snap = v["index"], v["snapshot"]
    hdr_start = len(bytes.fromhex(pack)) - 8 - 140
    cases = [
        ("config", "byte 0 = 00", "C1", "damaged", lambda: decode_config(mutate(cfg, [(0, 0)]))),
        ("config", "first 11 bytes only", "C2", "damaged", lambda: decode_config(mutate(cfg, truncate=11))),
        ("config", "byte 8 = 02 (version 2)", "C2", "too new", lambda: decode_config(mutate(cfg, [(8, 2)]))),
        ("config", "byte 8 = 02 and only 12 bytes", "C2", "too new", lambda: decode_config(mutate(cfg, [(8, 2)], truncate=12))),
        ("config", "byte 8 = 00 (version 0)", "C3", "damaged", lambda: decode_config(mutate(cfg, [(8, 0)]))),
        ("config", "one byte appended", "C4", "damaged", lambda: decode_config(mutate(cfg, append=b"\0"))),
        ("config", "byte 12 = 01 (unknown incompat bit)", "C5", "too new", lambda: decode_config(mutate(cfg, [(12, 1)]))),
        ("config", "byte 73 = 0x90 (chunk_avg 36864, not a power of two)", "C6", "damaged", lambda: decode_config(mutate(cfg, [(73, 0x90)]))),
        ("config", "bytes 68-79 = 00002000 00004000 00008000 (chunk_min 2 MiB, avg 4 MiB, max 8 MiB)", "C7", "damaged",
         lambda: decode_config(mutate(cfg, list(enumerate(bytes.fromhex("000020000000400000008000"), 68))))),
        ("config", "bytes 68-79 = 00001000 00008000 00000001 (chunk_min 1 MiB, avg 8 MiB, max 16 MiB)", "C7", "damaged",
         lambda: decode_config(mutate(cfg, list(enumerate(bytes.fromhex("000010000000800000000001"), 68))))),
        ("config", "byte 84 = 00 (zstd level 0)", "C9", "damaged", lambda: decode_config(mutate(cfg, [(84, 0)]))),
        ("config", "byte 90 ^= 1 (created changed; C1-C9 pass, the MAC no longer matches)", "C10", "damaged",
         lambda: (decode_config(mutate(cfg, [(90, bytes.fromhex(cfg)[90] ^ 1)])),
                  verify_config_mac(mutate(cfg, [(90, bytes.fromhex(cfg)[90] ^ 1)]), K))),
        ("key file", "byte 0 = 00", "K3", "damaged", lambda: decode_keyfile(mutate(kf, [(0, 0)]))),
        ("key file", "byte 8 = 02 (version 2)", "K4", "too new", lambda: decode_keyfile(mutate(kf, [(8, 2)]))),
        ("key file", "byte 8 = 00 (version 0)", "K4", "damaged", lambda: decode_keyfile(mutate(kf, [(8, 0)]))),
        ("key file", "first 10 bytes only", "K4", "damaged", lambda: decode_keyfile(mutate(kf, truncate=10))),
        ("key file", "byte 48 = 03 (t_cost 3; K2 holds)", "K9", "not opened",
         lambda: unwrap_keyfile(decode_keyfile(mutate(kf, [(48, 3)])), b"correct horse")),
        ("key file", "bytes 96-97 = 01 01 (label length 257)", "K6", "damaged", lambda: decode_keyfile(mutate(kf, [(96, 1), (97, 1)]))),
        ("key file", "byte 98 = ff (label not UTF-8)", "K6", "damaged", lambda: decode_keyfile(mutate(kf, [(98, 0xFF)]))),
        ("key file", "last byte removed", "K7", "damaged", lambda: decode_keyfile(mutate(kf, truncate=220))),
        ("key file", "one byte appended", "K7", "damaged", lambda: decode_keyfile(mutate(kf, append=b"\0"))),
        ("key file", "bytes 44-47 = 00 04 00 00 (m_cost 1024)", "K2", "weak",
         lambda: unwrap_keyfile(decode_keyfile(mutate(kf, [(44, 0), (45, 4), (46, 0), (47, 0)])), b"correct horse")),
        ("pack", "last byte = 02 (pack version 2)", "P2", "too new", lambda: read_pack_header(K, mutate(pack, [(291, 2)]))),
        ("pack", "last byte = 00 (pack version 0)", "P2", "damaged", lambda: read_pack_header(K, mutate(pack, [(291, 0)]))),
        ("pack", "byte 288 = 00 (trailer magic)", "P1", "damaged", lambda: read_pack_header(K, mutate(pack, [(288, 0)]))),
        ("pack", "last 3 bytes removed", "P1", "damaged", lambda: read_pack_header(K, mutate(pack, truncate=289))),
        ("pack", "byte 284 = 8d (header_len 141)", "P5", "damaged", lambda: read_pack_header(K, mutate(pack, [(284, 0x8D)]))),
        ("pack", "bytes 284-287 = ff ff ff ff", "P3", "damaged", lambda: read_pack_header(K, mutate(pack, [(284, 0xFF), (285, 0xFF), (286, 0xFF), (287, 0xFF)]))),
        ("pack", "byte 200 ^= 1 (header ciphertext)", "P5", "damaged",
         lambda: read_pack_header(K, mutate(pack, [(200, bytes.fromhex(pack)[200] ^ 1)]))),
        ("pack", "byte 30 ^= 1 (blob 0 ciphertext), open blob 0", "B2", "damaged",
         lambda: open_blob(mk, read_pack_header(K, bytes.fromhex(pack))[0], mutate(pack, [(30, bytes.fromhex(pack)[30] ^ 1)])[:56])),
        ("pack", "bytes 0-55 (blob 0) opened with entry 1 as it is (stored_len 88)", "B1", "damaged",
         lambda: open_blob(mk, read_pack_header(K, bytes.fromhex(pack))[1], bytes.fromhex(pack)[:56])),
        ("pack", "bytes 0-55 opened with entry 0 but entry 1's kind and chunk ID (AAD)", "B2", "damaged",
         lambda: open_blob(mk, dict(read_pack_header(K, bytes.fromhex(pack))[0], kind=1,
                                    id=read_pack_header(K, bytes.fromhex(pack))[1]["id"]), bytes.fromhex(pack)[:56])),
        ("index", "byte 0 = 00", "IX1", "damaged", lambda: open_index_object(K, mutate(idx, [(0, 0)]))),
        ("index", "byte 4 = 02 (index object version 2)", "IX2", "too new", lambda: open_index_object(K, mutate(idx, [(4, 2)]))),
        ("index", "byte 4 = 00 (index object version 0)", "IX2", "damaged", lambda: open_index_object(K, mutate(idx, [(4, 0)]))),
        ("index", "byte 5 = 01 (reserved)", "IX2", "damaged", lambda: open_index_object(K, mutate(idx, [(5, 1)]))),
        ("index", "bytes 8-11 = ff ff ff ff (clear-text pack count)", "IX3", "damaged",
         lambda: open_index_object(K, mutate(idx, [(8, 0xFF), (9, 0xFF), (10, 0xFF), (11, 0xFF)]))),
        ("index", "byte 12 ^= 1 (clear-text pack ID, bound into the AAD)", "E5", "damaged",
         lambda: open_index_object(K, mutate(idx, [(12, bytes.fromhex(idx)[12] ^ 1)]))),
        ("index", "byte 48 = 02 (envelope kind snapshot)", "E4", "damaged", lambda: open_index_object(K, mutate(idx, [(48, 2)]))),
        ("index", "byte 49 = 02 (envelope version 2)", "E3", "too new", lambda: open_index_object(K, mutate(idx, [(49, 2)]))),
        ("index", "byte 49 = 00 (envelope version 0)", "E4", "damaged", lambda: open_index_object(K, mutate(idx, [(49, 0)]))),
        ("index", "byte 50 = 01 (envelope reserved)", "E4", "damaged", lambda: open_index_object(K, mutate(idx, [(50, 1)]))),
        ("index", "first 91 bytes only (a 47-byte envelope)", "E1", "damaged", lambda: open_index_object(K, mutate(idx, truncate=91))),
        ("index", "last byte removed", "E5", "damaged", lambda: open_index_object(K, mutate(idx, truncate=239))),
        ("index plaintext", "bytes 0-3 = ff ff ff ff (superseded count)", "I2", "damaged",
         lambda: decode_index(mutate(v["index_plain"], [(0, 0xFF), (1, 0xFF), (2, 0xFF), (3, 0xFF)]))),
        ("index plaintext", "bytes 40-41 = 10 00 (pack_len 16; entry 0 ends at 56)", "I4", "damaged",
         lambda: decode_index(mutate(v["index_plain"], [(40, 0x10), (41, 0)]))),
        ("index plaintext", "one byte appended", "I5", "damaged", lambda: decode_index(mutate(v["index_plain"], append=b"\0"))),
        ("index plaintext", "byte 54 = 01 (entry 0 reserved)", "P8", "damaged", lambda: decode_index(mutate(v["index_plain"], [(54, 1)]))),
        ("index plaintext", "byte 52 = 02 (entry 0 kind 2)", "P7", "damaged", lambda: decode_index(mutate(v["index_plain"], [(52, 2)]))),
        ("index plaintext", "byte 56 = 11 (entry 0 raw_len 17, uncompressed)", "P10", "damaged", lambda: decode_index(mutate(v["index_plain"], [(56, 0x11)]))),
        ("tree", "byte 1 = 01 (reserved)", "T1", "damaged", lambda: decode_tree(mutate(v["tree_plain"], [(1, 1)]))),
        ("tree", "byte 0 = 09 (level 9)", "T3", "damaged", lambda: decode_tree(mutate(v["tree_plain"], [(0, 9)]))),
        ("tree", "byte 4 = 02 (count 2, one entry present)", "T2", "damaged", lambda: decode_tree(mutate(v["tree_plain"], [(4, 2)]))),
        ("tree", "byte 40 = 00 (entry length 0)", "T2a", "damaged", lambda: decode_tree(mutate(v["tree_plain"], [(40, 0)]))),
        ("snapshot", "byte 4 = 01 (kind index), opened as snapshot", "E4", "damaged", lambda: envelope_open(K, "snapshot", mutate(snap, [(4, 1)]))),
        ("snapshot", "byte 5 = 00 (envelope version 0)", "E4", "damaged", lambda: envelope_open(K, "snapshot", mutate(snap, [(5, 0)]))),
        ("snapshot plaintext", "\"format\":2", "S4", "too new",
         lambda: decode_snapshot(v["snapshot_json"].replace('"format":1', '"format":2').encode())),
        ("snapshot plaintext", "\"format\":0", "S4", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"format":1', '"format":0').encode())),
        ("snapshot plaintext", "\"format\":1.0", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"format":1', '"format":1.0').encode())),
        ("snapshot plaintext", "\"tags\":null", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"tags":{"env":"prod"}', '"tags":null').encode())),
        ("snapshot plaintext", "a tag key twice", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"env":"prod"', '"env":"prod","env":"test"').encode())),
        ("snapshot plaintext", "\"host\" twice", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"host":"db1",', '"host":"db1","host":"db1",').encode())),
        ("snapshot plaintext", "time with a space for T", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace("2026-11-21T03", "2026-11-21 03").encode())),
        ("snapshot plaintext", "time with ten fractional digits", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace("03:00:00Z", "03:00:00.1234567891Z").encode())),
        ("snapshot plaintext", "\"kind\":\"pipe\" in source", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"kind":"command"', '"kind":"pipe"').encode())),
        ("snapshot plaintext", "field \"host\" removed", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"host":"db1",', "").encode())),
        ("snapshot plaintext", "\"requests\":{\"put\":1} added (six counters missing)", "S3", "damaged",
         lambda: decode_snapshot(v["snapshot_json"].replace('"streams":', '"requests":{"put":1},"streams":').encode())),
    ]
    # The overlapping-entries case needs a freshly sealed header (P11).
    e0, e1 = read_pack_header(K, bytes.fromhex(pack))
    bad = dict(e1, offset=50)
    plain = u32(2) + encode_entry(e0) + encode_entry(bad)
    sh = seal(K, b"DVH1", plain, bytes(range(0xA0, 0xB8)))
    overlapping = bytes.fromhex(pack)[:hdr_start] + sh + u32(len(sh)) + b"DVP\x01"
    cases.append(("pack", "header re-sealed with entry 1 at offset 50 (overlaps blob 0)", "P11", "damaged",
                  lambda: read_pack_header(K, overlapping)))
    # A clear-text list that names another pack, sealed consistently (IX4).
    pre = index_prefix([bytes(32)])
    liar = pre + envelope_seal(K, "index", bytes.fromhex(v["index_plain"]), bytes(range(0xC0, 0xD8)), bound=pre)
    cases.append(("index", "re-sealed with a clear-text list naming pack 00…00 instead of the body's pack", "IX4", "damaged",
                  lambda: open_index_object(K, liar)))
    # §14, the machine key file (opened with the §14 secret unless said otherwise).
    mkf, secret = v["machine_keyfile"], v["machine_secret"].encode()
    cases += [
        ("machine key file", "bytes 44-47 = 01 00 00 00 (m_cost 1, t_cost and p_cost 0)", "K2", "weak",
         lambda: unwrap_keyfile(decode_keyfile(mutate(mkf, [(44, 1)])), secret)),
        ("machine key file", "byte 56 ^= 1 (salt)", "K9", "not opened",
         lambda: unwrap_keyfile(decode_keyfile(mutate(mkf, [(56, bytes.fromhex(mkf)[56] ^ 1)])), secret)),
        ("machine key file", "opened with the secret in upper case (not a machine secret, K12)", "K12", "not opened",
         lambda: unwrap_keyfile(decode_keyfile(bytes.fromhex(mkf)), secret.upper())),
        ("machine key file", "opened with the password correct horse", "K13", "not opened",
         lambda: unwrap_keyfile(decode_keyfile(bytes.fromhex(mkf)), b"correct horse")),
    ]
    # §15, the WAL object, read as main/000000010000000000000003 unless said otherwise. "trailer
    # recomputed": the edit is made, then the last 32 bytes are set to the BLAKE3 of the rest,
    # so that only the key can tell.
    wal = v["wal_object"]

    def retrail(b):
        return b[:-WAL_TRAILER_LEN] + blake3.blake3(b[:-WAL_TRAILER_LEN]).digest()

    def wal_read(b, cluster=WAL_KAT_CLUSTER, name=WAL_KAT_FILE):
        return wal_decode(mk, cluster, name, b)
    cases += [
        ("wal", "byte 0 = 00", "AW2", "damaged", lambda: wal_read(mutate(wal, [(0, 0)]))),
        ("wal", "first 27 bytes only", "AW2", "damaged", lambda: wal_read(mutate(wal, truncate=27))),
        ("wal", "byte 8 = 00 (version 0)", "AW3", "damaged", lambda: wal_read(mutate(wal, [(8, 0)]))),
        ("wal", "byte 8 = 02 (version 2)", "AW3", "too new", lambda: wal_read(mutate(wal, [(8, 2)]))),
        ("wal", "bytes 24-27 = 63 00 00 00 (H = 99)", "AW4", "damaged", lambda: wal_read(mutate(wal, [(24, 0x63)]))),
        ("wal", "bytes 24-27 = 01 00 01 00 (H = 65 537)", "AW4", "damaged",
         lambda: wal_read(mutate(wal, [(24, 1), (25, 0), (26, 1)]))),
        ("wal", "first 177 bytes only (28 + H + 32 = 178)", "AW5", "damaged", lambda: wal_read(mutate(wal, truncate=177))),
        ("wal", "byte 200 ^= 1 (frame 0 ciphertext)", "AW6", "damaged",
         lambda: wal_check_trailer(mutate(wal, [(200, bytes.fromhex(wal)[200] ^ 1)]))),
        ("wal", "last byte removed", "AW6", "damaged", lambda: wal_check_trailer(mutate(wal, truncate=379))),
        ("wal", "byte 15 = 02 (seg_size 32 MiB), trailer recomputed", "AW7", "damaged",
         lambda: wal_read(retrail(mutate(wal, [(15, 2)])))),
        ("wal", "byte 16 ^= 1 (mtime_ms), trailer recomputed", "AW7", "damaged",
         lambda: wal_read(retrail(mutate(wal, [(16, bytes.fromhex(wal)[16] ^ 1)])))),
        ("wal", "read as main/000000010000000000000004", "AW7", "damaged",
         lambda: wal_read(bytes.fromhex(wal), name="000000010000000000000004")),
        ("wal", "read as other/000000010000000000000003", "AW7", "damaged",
         lambda: wal_read(bytes.fromhex(wal), cluster="other")),
        ("wal", "byte 200 ^= 1 (frame 0 ciphertext), trailer recomputed", "AW10", "damaged",
         lambda: wal_read(retrail(mutate(wal, [(200, bytes.fromhex(wal)[200] ^ 1)])))),
        ("wal", "bytes 146-291 and 292-347 (frames 0 and 1) exchanged, trailer recomputed", "AW10", "damaged",
         lambda: wal_read(retrail(bytes.fromhex(wal)[:146] + bytes.fromhex(wal)[292:348]
                                  + bytes.fromhex(wal)[146:292] + bytes.fromhex(wal)[348:]))),
        ("wal", "one byte inserted before the trailer, trailer recomputed", "AW9", "damaged",
         lambda: wal_read(retrail(bytes.fromhex(wal)[:348] + b"\0" + bytes.fromhex(wal)[348:]))),
    ]
    # Re-encoded with the key (as the P11 and IX4 rows): consistent seals around a lie.
    data = wal_kat_plaintext()
    as_raw = encode_wal(mk, WAL_KAT_CLUSTER, WAL_KAT_FILE, data, WAL_KAT_MTIME_MS, WAL_KAT_ARCHIVED_MS,
                        bodies=[(0, WAL_KAT_ZSTD), (0, data[WAL_FRAME_LEN:])])
    other_id = bytearray(chunk_id(mk["id_key"], data))
    other_id[0] ^= 1
    lying_id = encode_wal(mk, WAL_KAT_CLUSTER, WAL_KAT_FILE, data, WAL_KAT_MTIME_MS, WAL_KAT_ARCHIVED_MS,
                          bodies=[(1, WAL_KAT_ZSTD), (0, data[WAL_FRAME_LEN:])], keyed_id=bytes(other_id))
    cases += [
        ("wal", "re-encoded with frame 0 marked compression 0 (its zstd body kept)", "AW11", "damaged",
         lambda: wal_read(as_raw)),
        ("wal", "re-encoded with keyed_id byte 0 ^= 1 (header and frame AADs agree with it)", "AW12", "damaged",
         lambda: wal_read(lying_id)),
    ]
    return cases


def check_negative():
    bad = 0
    for obj, what, rule, expect, fn in negative_vectors():
        try:
            r = fn()
            got = "accepted" if r is not None else "not opened"
        except Corrupt:
            got = "damaged"
        except Unsupported:
            got = "too new"
        except WeakKey:
            got = "weak"
        ok = got == expect
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {rule:5} {obj}: {what} -> {got}")
    return bad


def make_example(root):
    """Write the worked example of 10-known-answer-vectors.md as a local repository at `root`.
    Password: "correct horse", or the §14 machine secret. It holds one snapshot whose one stream
    is b"hello, dumpvault", and the §15 WAL object main/000000010000000000000003."""
    v = kat()
    for d in ("keys", "index", "snapshots", "locks"):
        os.makedirs(os.path.join(root, d))
    for i in range(256):
        os.makedirs(os.path.join(root, "data", f"{i:02x}"))
    os.makedirs(os.path.join(root, "wal", WAL_KAT_CLUSTER))
    files = {"config": v["config"],
             f"keys/{v['keyfile_id']}": v["keyfile"],
             f"keys/{v['machine_keyfile_id']}": v["machine_keyfile"],
             f"wal/{WAL_KAT_CLUSTER}/{WAL_KAT_FILE}": v["wal_object"],
             f"data/{v['pack_id'][:2]}/{v['pack_id']}": v["pack"],
             f"index/{v['index_id']}": v["index"],
             f"snapshots/{v['snapshot_id']}": v["snapshot"]}
    for path, hexbytes in files.items():
        with open(os.path.join(root, path), "wb") as f:
            f.write(bytes.fromhex(hexbytes))


def password_from_env():
    """$DUMPVAULT_PASSWORD verbatim, else the first line of $DUMPVAULT_PASSWORD_FILE without its
    line ending (02 "Argon2id"): a password or a machine secret (`key add-machine`'s file)."""
    if "DUMPVAULT_PASSWORD" in os.environ:
        return os.environ["DUMPVAULT_PASSWORD"].encode()
    if "DUMPVAULT_PASSWORD_FILE" in os.environ:
        with open(os.environ["DUMPVAULT_PASSWORD_FILE"], "rb") as f:
            line = f.read().split(b"\n", 1)[0]
        return line[:-1] if line.endswith(b"\r") else line
    return b""


def split_wal_arg(arg):
    """`CLUSTER/NAME`, or `NAME` of cluster main (13 "Names")."""
    cluster, _, name = arg.rpartition("/")
    cluster = cluster or "main"
    if not wal_listable(cluster, name):
        raise SystemExit(f"{arg!r} is not a WAL object name (AW1)")
    return cluster, name


def print_wal_listing(repo, mk):
    """One line per WAL object: its clear prefix (AW2-AW4, no key), and with the key its header
    (AW7, AW8: plaintext length, system identifier, frames, keyed_id)."""
    for cluster, name in repo.wal_names():
        file, conflict = wal_classify(name)
        if file is None:
            print(f"{cluster}/{name}: stray (not a WAL file name), not read")
            continue
        b = repo.wal_get(cluster, name)
        try:
            p = wal_parse_prefix(b)
            line = (f"{cluster}/{name}: {len(b)} bytes, seg_size {p['seg_size']}, "
                    f"mtime_ms {p['mtime_ms']}, H {p['header_len']}")
            if mk is not None:
                _, h = wal_open_header(mk, cluster, file, b)
                line += (f", plain_len {h['plain_len']}, sysid {h['sysid']}, {len(h['frames'])} frames "
                         f"({''.join('z' if f['comp'] else '-' for f in h['frames'])}), "
                         f"keyed_id {h['keyed_id'].hex()[:16]}")
            if conflict:
                line += f" (conflict copy of {file})"
            print(line)
        except (Corrupt, Unsupported) as x:
            print(f"{cluster}/{name}: {x}")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "kat":
        for k, val in kat().items():
            print(f"{k} = {val}")
        return 0
    if cmd == "negative":
        return 1 if check_negative() else 0
    if cmd == "mkexample":
        make_example(argv[2])
        return 0
    repo = LocalRepo(argv[2])
    if cmd == "hashcheck":
        bad = 0
        for kind in ("key", "pack", "index", "snapshot", "lock"):
            for n in repo.names(kind):
                try:
                    repo.get(kind, n)
                except (Corrupt, FileNotFoundError) as x:
                    print(f"BAD {kind} {n}: {x}")
                    bad += 1
        # WAL objects are named by PostgreSQL, not by their hash: their BLAKE3 trailer does the
        # same job (AW2-AW6, 13 "Checking without a key"). Strays are reported, never read.
        for cluster, name in repo.wal_names():
            if wal_classify(name)[0] is None:
                print(f"note: wal {cluster}/{name} is not a WAL file name or a conflict copy (stray, not read)")
                continue
            try:
                wal_check_trailer(repo.wal_get(cluster, name))
            except FileNotFoundError:
                continue  # deleted by a prune since the listing (N3)
            except (Corrupt, Unsupported) as x:
                print(f"BAD wal {cluster}/{name}: {x}")
                bad += 1
        print("ok" if not bad else f"{bad} damaged objects")
        return 1 if bad else 0
    if cmd == "wal" and len(argv) == 3 and "DUMPVAULT_PASSWORD" not in os.environ \
            and "DUMPVAULT_PASSWORD_FILE" not in os.environ:
        print_wal_listing(repo, None)  # the clear prefixes only: no key needed
        return 0
    repo.open(password_from_env())
    if cmd == "wal":
        if len(argv) == 3:
            print_wal_listing(repo, repo.mk)
            return 0
        cluster, name = split_wal_arg(argv[3])
        p, h, data = wal_decode(repo.mk, cluster, name, repo.wal_get(cluster, name))
        if len(argv) > 4:
            with open(argv[4], "wb") as f:
                f.write(data)
        else:
            sys.stdout.buffer.write(data)
        print(f"{cluster}/{name}: {len(data)} bytes, {len(h['frames'])} frames, verified (AW2-AW12)", file=sys.stderr)
        return 0
    if cmd == "snapshots":
        for n, s in sorted(repo.snapshots(), key=lambda x: (time_key(x[1]["time"]), x[0])):
            print(n[:8], s["time"], s["host"], s["name"], sum(st["size"] for st in s["streams"]))
        return 0
    if cmd == "cat":
        snaps = [(n, s) for n, s in repo.snapshots() if n.startswith(argv[3].lower())]
        if len(snaps) != 1:
            raise SystemExit(f"{len(snaps)} snapshots match {argv[3]!r}")
        streams = snaps[0][1]["streams"]
        if len(argv) > 4:
            streams = [st for st in streams if st["name"] == argv[4]]
        if len(streams) != 1:
            raise SystemExit("give the stream name")
        repo.cat(streams[0], sys.stdout.buffer)
        return 0
    if cmd == "check":
        idx = repo.index()
        records = {}
        for n in repo.names("index"):
            _, packs = open_index_object(repo.mk["data_key"], repo.get("index", n))
            for p in packs:
                records.setdefault(p["id"].hex(), []).append(p)
        for n in repo.names("pack"):
            b = repo.get("pack", n)
            entries = read_pack_header(repo.mk["data_key"], b)
            for rec in records.get(n, []):
                if rec["len"] != len(b) or rec["entries"] != entries:
                    raise Corrupt(f"pack {n}: index record disagrees with the pack header")
            if n not in records:
                print(f"note: pack {n} is not listed by any index file (unreferenced)")
            for e in entries:
                open_blob(repo.mk, e, b[e["offset"]:e["offset"] + e["stored_len"]])
        for n in records:
            if n not in repo.names("pack"):
                raise Corrupt(f"pack {n} is listed by an index file but missing")
        for n, s in repo.snapshots():
            for st in s["streams"]:
                repo.cat(st, open(os.devnull, "wb"))
        wal_files = 0
        for cluster, name in repo.wal_names():
            if wal_classify(name)[0] is not None:
                wal_decode(repo.mk, cluster, name, repo.wal_get(cluster, name))
                wal_files += 1
        print(f"ok: {len(idx)} blobs indexed, {wal_files} WAL objects read")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
