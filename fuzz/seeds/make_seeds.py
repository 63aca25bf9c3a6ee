#!/usr/bin/env python3
"""Write a small seed corpus for each fuzz target into fuzz/seeds/<target>/.

Standard library only. Every seed is a valid (or, where a key would be needed, structurally
valid) encoding in the layout each target expects, written from format-spec/, so libFuzzer
starts past the magic numbers and length fields instead of having to discover them.
Re-run after a format change:  python3 fuzz/seeds/make_seeds.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def i32(v): return struct.pack("<i", v)
def i64(v): return struct.pack("<q", v)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def entry(kind, comp, raw_len, offset, stored_len, cid):
    return bytes([kind, comp, 0, 0]) + u32(raw_len) + u32(offset) + u32(stored_len) + cid


def config():
    b = b"DVCONFIG" + u32(1) + u64(0) + u64(0) + u64(0) + bytes(range(32))
    b += u32(8 * 1024) + u32(32 * 1024) + u32(128 * 1024) + u32(16 << 20) + i32(3)
    b += i64(1_700_000_000)
    return b + b"\x00" * 32  # MAC: decode does not check it


def keyfile(label=b"root@db1"):
    b = b"DVKEYFIL" + u32(1) + bytes(range(32)) + u32(19 * 1024) + u32(2) + u32(1)
    b += b"\x11" * 32 + i64(1_700_000_000) + u16(len(label)) + label
    return b + b"\x22" * (24 + 72 + 16)


def index_plain():
    e1 = entry(0, 1, 32768, 0, 9000, b"\xaa" * 32)
    e2 = entry(0, 0, 100, 9000, 140, b"\xbb" * 32)
    e3 = entry(1, 1, 120, 9140, 90, b"\xcc" * 32)
    pack = b"\x01" * 32 + u64(20000) + u32(3) + e1 + e2 + e3
    return u32(1) + b"\x02" * 32 + u32(1) + pack


def tree_node(level, entries):
    b = bytes([level, 0, 0, 0]) + u32(len(entries))
    for cid, ln in entries:
        b += cid + u64(ln)
    return b


SNAPSHOT = {
    "format": 1,
    "time": "2026-11-21T03:00:00Z",
    "host": "db1",
    "name": "shop",
    "tags": {"env": "prod"},
    "tool_version": "0.1.0",
    "duration_ms": 1234,
    "streams": [{
        "name": "dump",
        "source": {"kind": "command", "argv": ["pg_dump", "shop"], "exit_status": 0},
        "size": 16,
        "blake3": "7e9d8bcc8feb56b53547d55cc95812a475314ed2ea3d04c71effd3edae65fed0",
        "root": "fe254d1db48950e0d0dbd43764d67982a7403cb6ee9ca0f609176af5245ca4dc",
        "chunks": 1,
        "new_chunks": 1,
        "new_bytes": 144,
    }],
}

LOCK = {
    "host": "db1",
    "pid": 4242,
    "exclusive": False,
    "created": "2026-11-21T03:00:00Z",
    "refreshed": "2026-11-21T03:05:00.123456789Z",
    "operation": "backup",
}


def compact(o):
    return json.dumps(o, separators=(",", ":")).encode()


def envelope_header(kind):
    return b"DVOB" + bytes([kind, 1, 0, 0])


def main():
    write("config", "valid", config())
    write("keyfile", "valid", keyfile())
    write("keyfile", "empty-label", keyfile(b""))
    write("index", "one-pack", index_plain())
    write("index", "empty", u32(0) + u32(0))

    leaf = tree_node(0, [(b"\x05" * 32, 32768), (b"\x06" * 32, 100)])
    root = tree_node(1, [(b"\x01" + b"\x00" * 31, 32868), (b"\x02" + b"\x00" * 31, 5)])
    leaf2 = tree_node(0, [(b"\x07" * 32, 5)])
    write("tree", "leaf-node", leaf)
    write("tree", "forest", b"".join(u16(len(n)) + n for n in (root, leaf, leaf2)))

    snap = dict(SNAPSHOT)
    write("snapshot", "command", compact(snap))
    snap2 = json.loads(json.dumps(SNAPSHOT))
    snap2["streams"][0]["source"] = {"kind": "file", "path": "/var/backups/shop.sql"}
    snap2["time"] = "2026-11-21T04:00:00.5+01:00"
    write("snapshot", "file-offset-time", compact(snap2))
    snap3 = json.loads(json.dumps(SNAPSHOT))
    snap3["streams"][0]["source"] = {"kind": "stdin"}
    del snap3["tags"]
    snap3["unknown_future_field"] = [1, 2, 3]
    write("snapshot", "stdin-no-tags", compact(snap3))

    write("lock", "shared", compact(LOCK))

    write("envelope", "index", b"\x00" + envelope_header(1) + index_plain())
    write("envelope", "snapshot", b"\x01" + envelope_header(2) + compact(SNAPSHOT))
    write("envelope", "lock", b"\x02" + envelope_header(3) + compact(LOCK))

    header = u32(2) + entry(0, 1, 32768, 0, 9000, b"\xaa" * 32) + entry(1, 0, 60, 9000, 100, b"\xbb" * 32)
    write("pack_header", "two-entries", u64(9100) + header)
    write("pack_header", "trailer-only", u64(200) + u32(100) + b"DVP\x01")

    text = b"INSERT INTO orders VALUES (1, 'sku-000001', 3, 19.99);\n" * 4
    write("restore_blob", "raw-content", b"\x01" + entry(0, 0, len(text), 0, len(text) + 40, b"\x00" * 32) + text)
    write("restore_blob", "round-trip", b"\x02" + entry(0, 0, 0, 0, 40, b"\x00" * 32) + text)
    write("restore_blob", "sealed-junk", b"\x00" + entry(0, 0, 16, 0, 56, b"\x00" * 32) + b"\x42" * 56)

    # model: 4 bytes per step, `op ‖ arg ‖ fault ‖ nth` (fuzz/targets/model.rs, `decode`).
    # op % 4: 0, 1 backup of variant `arg`; 2 forget keep-last 1 + arg % 3; 3 prune (arg & 1:
    # repack everything). fault & 1: inject; op (fault >> 1) % 6 of put, get, get_range, list,
    # size, delete; kind (fault >> 4) % 3 of fail, flip bit, short read; on call 1 + nth % 16.
    def step(op, arg, fault=None):
        if fault is None:
            return bytes([op, arg, 0, 0])
        call, kind, nth = fault
        return bytes([op, arg, 1 | (call << 1) | (kind << 4), nth])
    PUT, GET, RANGE, LIST, SIZE, DELETE = range(6)
    FAIL, FLIP, SHORT = range(3)
    plain = [step(0, 0), step(0, 1), step(0, 4), step(2, 0), step(3, 1), step(0, 2)]
    write("model", "backup-forget-prune", b"".join(plain))
    write("model", "put-fails-mid-backup", b"".join([step(0, 0), step(0, 5, (PUT, FAIL, 2)), step(3, 0)]))
    write("model", "prune-faults", b"".join([
        step(0, 0), step(0, 4), step(0, 8), step(2, 0),
        step(3, 1, (DELETE, FAIL, 1)), step(0, 1), step(3, 1, (GET, FLIP, 0)), step(3, 1),
    ]))
    write("model", "forget-delete-fails", b"".join([
        step(0, 0), step(0, 2), step(0, 6), step(2, 0, (DELETE, FAIL, 1)), step(3, 0),
    ]))
    write("model", "restore-reads", b"".join([
        step(0, 3), step(3, 1, (RANGE, SHORT, 0)), step(0, 7, (LIST, FAIL, 1)), step(3, 1, (SIZE, FAIL, 0)),
    ]))


if __name__ == "__main__":
    main()
