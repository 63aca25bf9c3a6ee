#!/usr/bin/env python3
"""Offline analysis for benches/basebackup.sh: FastCDC (what dumpvault stored) against an ideal
deduplication of PostgreSQL base-backup tars on 8 KiB page boundaries.

    pagededup.py TAR0 TAR1 ... --repo LABEL=DIR [--repo LABEL=DIR ...] [--json OUT]

TARn are the base-backup tars of days 0..N, byte for byte what dumpvault stored. Each DIR holds
`repo/` (a dumpvault repository that received exactly those days in order), `dayN.json` (the
output of `backup --json` for day N) and `dayN.du` (bytes under repo/data after day N).
Needs `format-spec/tools/dvformat.py` and its modules (blake3, pynacl, argon2-cffi, zstandard),
and the repository password in DUMPVAULT_PASSWORD.

Page-aligned model. Every tar member's data is cut into 8 KiB pieces at file offsets 0, 8192, ...
(relation and WAL files are whole pages; the last piece of other files may be shorter); every
512-byte tar header block (and padding, the end-of-archive blocks) is a piece of its own. A piece
of day N is *new* when its content (BLAKE2b-128) appears neither in any earlier day's tar nor
earlier in day N: exactly what a store that deduplicates on page boundaries must add. Its
stored size is estimated as zstd level 3 of the piece alone (the piece raw if zstd does not
shrink it, as dumpvault does) plus 40 bytes of seal (nonce + tag), i.e. dumpvault's blob format
with page-sized chunks; index entries and pack headers (48 bytes per blob each) are left out on
both sides.

FastCDC. The index file that day N's backup wrote (`index_id`) lists exactly the blobs that
backup added, with their raw and stored lengths; the snapshot's tree gives each chunk's place in
the stream, so new raw bytes are split over the tar's regions (pg_wal/, other files, headers)
and over the day's new pages ("on changed pages") against unchanged ones ("collateral": bytes of
unchanged pages that share a chunk with a changed page).
"""

import argparse
import bisect
import hashlib
import json
import mmap
import os
import statistics
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "format-spec", "tools"))

PAGE = 8192
HDR = 24  # PageHeaderData: pd_lsn 8, pd_checksum 2, pd_flags 2, pd_lower/upper/special 6,
#           pd_pagesize_version 2, pd_prune_xid 4
SEAL = 40


def category(path):
    p = path[2:] if path.startswith("./") else path
    return "wal" if p.startswith("pg_wal/") else "base"


class Tar:
    """A tar file cut into pieces: (tar_offset, length, category, path, file_offset)."""

    def __init__(self, path, grain=PAGE):
        self.path, self.grain = path, grain
        self.f = open(path, "rb")
        self.size = os.fstat(self.f.fileno()).st_size
        self.m = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_READ)
        self.pieces, self.files = [], {}
        regions = []  # (start, end, category) covering [0, size)
        pos = 0
        with tarfile.open(path, "r:") as t:
            for mi in t:
                for o in range(mi.offset, mi.offset_data, 512):
                    self.pieces.append((o, 512, "hdr", None, None))
                regions.append((mi.offset, mi.offset_data, "hdr"))
                if mi.isreg() and mi.size:
                    cat = category(mi.name)
                    self.files[mi.name] = (mi.offset_data, mi.size)
                    for fo in range(0, mi.size, grain):
                        self.pieces.append((mi.offset_data + fo, min(grain, mi.size - fo), cat,
                                            mi.name, fo))
                    regions.append((mi.offset_data, mi.offset_data + mi.size, cat))
                    pos = mi.offset_data + mi.size
                else:
                    pos = mi.offset_data
                pad = (-pos) % 512
                if pad:
                    self.pieces.append((pos, pad, "hdr", None, None))
                    regions.append((pos, pos + pad, "hdr"))
                    pos += pad
        for o in range(pos, self.size, 512):  # end-of-archive blocks and the record padding
            self.pieces.append((o, min(512, self.size - o), "hdr", None, None))
        if pos < self.size:
            regions.append((pos, self.size, "hdr"))
        regions.sort()
        self.reg_start = [r[0] for r in regions]
        self.regions = regions

    def piece(self, off, n):
        return self.m[off:off + n]

    def digests(self):
        return [hashlib.blake2b(self.m[o:o + n], digest_size=16).digest()
                for o, n, _, _, _ in self.pieces]

    def overlap_by_category(self, start, end, out):
        i = bisect.bisect_right(self.reg_start, start) - 1
        while start < end and i < len(self.regions):
            rs, re_, cat = self.regions[i]
            a, b = max(start, rs), min(end, re_)
            if b > a:
                out[cat] = out.get(cat, 0) + (b - a)
            i += 1
            if rs >= end:
                break


def relation(path, relmap):
    """`base/5/16397.1` -> the relation's name (with `_vm`/`_fsm` for those forks)."""
    p = path[2:] if path.startswith("./") else path
    if p.startswith("pg_wal/"):
        return "(pg_wal)"
    stem, _, seg = p.rpartition(".")
    if not (seg.isdigit() and stem):
        stem = p
    fork = ""
    for f in ("_vm", "_fsm", "_init"):
        if stem.endswith(f):
            stem, fork = stem[:-len(f)], f
    name = relmap.get(stem)
    return name + fork if name else "(other files)"


def first_day(tar, seen, zc):
    """Day 0 into an empty page-aligned store: unique pieces, raw and estimated stored bytes."""
    raw = stored = 0
    for (o, n, _, _, _), d in zip(tar.pieces, tar.digests()):
        if d not in seen:
            seen.add(d)
            raw += n
            stored += min(len(zc.compress(tar.piece(o, n))), n) + SEAL
    return {"new_raw": raw, "new_stored": stored}


def page_day(prev, cur, seen, zc, relmap):
    """Page-aligned analysis of day `cur` against everything in `seen` (earlier days)."""
    r = {k: 0 for k in ("pieces", "new_pieces", "new_raw", "new_stored", "new_raw_wal",
                        "new_raw_base", "new_raw_hdr", "base_pages", "changed_pages",
                        "added_pages", "hdr_only", "lsn_only", "small_diff")}
    diffs, new_ranges, rels = [], [], {}
    digs = cur.digests()
    for (o, n, cat, path, fo), d in zip(cur.pieces, digs):
        r["pieces"] += 1
        if cat == "base":
            r["base_pages"] += 1
        if d in seen:
            continue
        seen.add(d)
        data = cur.piece(o, n)
        c = zc.compress(data)
        r["new_pieces"] += 1
        r["new_raw"] += n
        r["new_raw_" + cat] += n
        r["new_stored"] += min(len(c), n) + SEAL
        new_ranges.append((o, o + n))
        if path is None or cur.grain != PAGE:
            continue
        rel = rels.setdefault(relation(path, relmap), [0, 0, 0])
        rel[0] += 1
        if cat != "base" or n != PAGE:
            continue
        old = prev.files.get(path)
        if old is None or old[1] < fo + PAGE:
            r["added_pages"] += 1
            continue
        r["changed_pages"] += 1
        od = prev.piece(old[0] + fo, PAGE)
        if od[HDR:] == data[HDR:]:
            r["hdr_only"] += 1
            if od[8:HDR] == data[8:HDR]:
                r["lsn_only"] += 1
        x = (int.from_bytes(od, "little") ^ int.from_bytes(data, "little")).to_bytes(PAGE, "little")
        nd = PAGE - x.count(0)
        diffs.append(nd)
        rel[1] += 1
        if nd <= 64:
            r["small_diff"] += 1
            rel[2] += 1
    r["median_diff_bytes"] = statistics.median(diffs) if diffs else 0
    r["relations"] = dict(sorted(rels.items(), key=lambda kv: -kv[1][0]))
    return r, new_ranges


def load_repo(repo_dir):
    import dvformat
    repo = dvformat.LocalRepo(repo_dir)
    repo.open(os.environ["DUMPVAULT_PASSWORD"].encode())
    return dvformat, repo, repo.index()


def leaves(dv, repo, idx, root, size):
    out = []

    def walk(cid, n):
        level, entries = dv.decode_tree(repo.read_blob(idx, cid, 1))
        for child, m in entries:
            if level == 0:
                out.append((child, m))
            else:
                walk(child, m)
    walk(root, size)
    assert sum(m for _, m in out) == size
    return out


def cdc_day(dv, repo, idx, bj, tar, new_ranges):
    r = {k: 0 for k in ("new_chunks", "new_raw", "new_stored", "tree_raw", "tree_stored",
                        "on_new_pages", "collateral")}
    if bj["index_id"] is None:
        return r
    _, packs = dv.open_index_object(repo.mk["data_key"], repo.get("index", bj["index_id"]))
    new = {}
    for p in packs:
        for e in p["entries"]:
            if e["kind"] == 0:
                new[e["id"]] = e
            else:
                r["tree_raw"] += e["raw_len"]
                r["tree_stored"] += e["stored_len"]
    st = bj["snapshot"]["streams"][0]
    starts = [a for a, _ in new_ranges]
    cats, off = {}, 0
    for cid, n in leaves(dv, repo, idx, bytes.fromhex(st["root"]), st["size"]):
        e = new.pop(cid, None)
        if e is not None:
            r["new_chunks"] += 1
            r["new_raw"] += n
            r["new_stored"] += e["stored_len"]
            tar.overlap_by_category(off, off + n, cats)
            i, a, b = max(bisect.bisect_right(starts, off) - 1, 0), off, off + n
            while i < len(new_ranges) and new_ranges[i][0] < b:
                s, t = new_ranges[i]
                r["on_new_pages"] += max(0, min(b, t) - max(a, s))
                i += 1
        off += n
    assert not new, "the index lists new blobs the stream does not use"
    r["collateral"] = r["new_raw"] - r["on_new_pages"]
    for k, v in cats.items():
        r["new_raw_" + k] = v
    return r


def mb(b):
    return b / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tars", nargs="+")
    ap.add_argument("--repo", action="append", default=[], help="LABEL=DIR")
    ap.add_argument("--json")
    ap.add_argument("--grains", default="8192,16384,32768",
                    help="aligned piece sizes to model (8192 gets the per-page detail)")
    ap.add_argument("--relmap", help="TSV: relation file path (pg_relation_filepath), name")
    a = ap.parse_args()
    import zstandard
    zc = zstandard.ZstdCompressor(level=3)
    relmap = {}
    if a.relmap:
        for line in open(a.relmap):
            f, _, name = line.rstrip("\n").partition("\t")
            relmap[f] = name
    grains = sorted({PAGE} | {int(g) for g in a.grains.split(",")})
    aligned = {}  # grain -> [day0 summary, day1 result, ...]
    for g in grains:
        gt = [Tar(p, g) for p in a.tars]
        seen = set()
        res, nrs = [first_day(gt[0], seen, zc)], []
        for d in range(1, len(gt)):
            r, nr = page_day(gt[d - 1], gt[d], seen, zc, relmap)
            res.append(r)
            nrs.append(nr)
        aligned[g] = res
        if g == PAGE:
            tars, pages, ranges = gt, res[1:], nrs
    repos = {}
    for spec in a.repo:
        label, d = spec.split("=", 1)
        dv, repo, idx = load_repo(os.path.join(d, "repo"))
        per = []
        for day in range(len(tars)):
            bj = json.load(open(os.path.join(d, f"day{day}.json")))
            du = int(open(os.path.join(d, f"day{day}.du")).read())
            st = bj["snapshot"]["streams"][0]
            assert st["size"] == tars[day].size, f"{label} day {day}: stream size differs from the tar"
            c = cdc_day(dv, repo, idx, bj, tars[day], ranges[day - 1] if day else [])
            c.update(du=du, growth=du - (per[-1]["du"] if day else 0), new_bytes=st["new_bytes"])
            per.append(c)
        repos[label] = per

    P = print
    P("\n# Base backups (tar = pg_basebackup -Ft -X fetch, one stream); MB = 10^6 bytes")
    P(f"{'':10}" + "".join(f"{'day ' + str(d):>11}" for d in range(len(tars))))
    P(f"{'tar MB':10}" + "".join(f"{mb(t.size):11.1f}" for t in tars))
    for label, per in repos.items():
        P(f"\n## FastCDC avg {label}: repository growth (du of data/) and new raw bytes")
        P(f"{'day':>4} {'data/ +MB':>10} {'% of tar':>9} {'new raw MB':>11} {'% of tar':>9}"
          f" {'stored MB':>10} {'chunks':>7} {'wal MB':>7} {'base MB':>8} {'hdr MB':>7}"
          f" {'collat. MB':>10} {'trees KB':>9}")
        for d, c in enumerate(per):
            ts = tars[d].size
            P(f"{d:>4} {mb(c['growth']):10.2f} {100 * c['growth'] / ts:9.2f} {mb(c['new_raw']):11.2f}"
              f" {100 * c['new_raw'] / ts:9.2f} {mb(c['new_stored']):10.2f} {c['new_chunks']:7}"
              f" {mb(c.get('new_raw_wal', 0)):7.2f} {mb(c.get('new_raw_base', 0)):8.2f}"
              f" {mb(c.get('new_raw_hdr', 0)):7.3f} {mb(c['collateral']) if d else 0:10.2f}"
              f" {c['tree_raw'] / 1e3:9.1f}")
    P("\n## Ideal aligned dedup (pieces at file offsets 0, G, 2G, ...; against all earlier days"
      " and itself): new raw MB / est. stored MB")
    P(f"{'day':>4}" + "".join(f"{f'G={g // 1024}K raw':>13}{'stored':>8}" for g in grains))
    for d in range(len(tars)):
        P(f"{d:>4}" + "".join(f"{mb(aligned[g][d]['new_raw']):13.2f}{mb(aligned[g][d]['new_stored']):8.2f}"
                              for g in grains))
    P("\n## Ideal 8 KiB page-aligned dedup, detail")
    P(f"{'day':>4} {'new raw MB':>11} {'% of tar':>9} {'est. stored MB':>15} {'new pieces':>11}"
      f" {'wal MB':>7} {'base MB':>8} {'hdr MB':>7} {'changed pg':>11} {'added pg':>9}"
      f" {'hdr-only':>9} {'LSN-only':>9} {'<=64B diff':>10} {'median diff B':>14}")
    for d, r in enumerate(pages, 1):
        P(f"{d:>4} {mb(r['new_raw']):11.2f} {100 * r['new_raw'] / tars[d].size:9.2f}"
          f" {mb(r['new_stored']):15.2f} {r['new_pieces']:11} {mb(r['new_raw_wal']):7.2f}"
          f" {mb(r['new_raw_base']):8.2f} {mb(r['new_raw_hdr']):7.3f} {r['changed_pages']:11}"
          f" {r['added_pages']:9} {r['hdr_only']:9} {r['lsn_only']:9} {r['small_diff']:10}"
          f" {r['median_diff_bytes']:14.0f}")
    P("\n## New 8 KiB pieces per relation (new / of them changed in place / of those ≤ 64 bytes differ)")
    for d, r in enumerate(pages, 1):
        top = list(r["relations"].items())[:8]
        P(f"day {d}: " + ", ".join(f"{k} {v[0]}/{v[1]}/{v[2]}" for k, v in top))
    P("\n## FastCDC ÷ page-aligned (> 1: page alignment would store less)")
    P(f"{'avg':>8} {'day':>4} {'raw ratio':>10} {'stored ratio':>13} {'base-only raw ratio':>20}")
    for label, per in repos.items():
        for d, r in enumerate(pages, 1):
            c = per[d]
            base_pg = r["new_raw_base"]
            P(f"{label:>8} {d:>4} {c['new_raw'] / max(r['new_raw'], 1):10.2f}"
              f" {c['new_stored'] / max(r['new_stored'], 1):13.2f}"
              f" {c.get('new_raw_base', 0) / max(base_pg, 1):20.2f}")
    if a.json:
        json.dump({"tars": [t.size for t in tars], "aligned": aligned, "repos": repos},
                  open(a.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
