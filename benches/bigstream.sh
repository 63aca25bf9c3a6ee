#!/usr/bin/env bash
# A real end-to-end stream of SIZE bytes (default 20 GiB): backup, the same backup again (every
# chunk already stored), and restore, each under /usr/bin/time -v. It checks what the synthetic
# repositories of scale.sh only simulate: peak RSS, throughput, and the cache's size per index entry.
#
# Usage: benches/bigstream.sh
# Environment:
#   SIZE=20G        stream size: bytes, or with a K/M/G/T suffix (powers of 1024); SIZE=1G is a
#                   quick check
#   TEXT_PCT=50     share of the stream that is text (compressible); the rest is AES-CTR keystream
#   TEXT_FILE=      text to cycle through (e.g. /tmp/pgcorpus/pg-day0.sql, first 64 MiB used);
#                   default: 16 MiB of synthetic SQL COPY rows made by the generator
#   BIG_DIR=/tmp/bigstream   work dir (repository, cache, logs); removed at the end unless KEEP=1
#   DUMPVAULT_BIN   dumpvault binary (default target/release/dumpvault; never built here)
#   DROP_CACHES=1   drop the page cache (system-wide!) before the restore, so it reads the disk
#   GEN_PROBE=1G    bytes generated into `cat >/dev/null` first, to time the generator and a pipe
#                   alone (0: skip)
#
# The stream is generated on the fly and never stored. A deterministic generator (python3 +
# `openssl enc -aes-128-ctr` of /dev/zero with a fixed key) emits 1 MiB blocks: keystream
# (incompressible) or text, TEXT_PCT % of them text, spread evenly. Text blocks are the text cut
# into ~2 KiB line-aligned pieces, each followed by a numbered marker line, so no chunk (>= 4 KiB)
# repeats: the whole stream is unique data, about SIZE / 16 KiB index entries.
#
# Steps: `init` (cheapest KDF: --kdf-memory 19456 --kdf-iterations 2); generator | tee (into a
# fifo read by b3sum) | `dumpvault backup`; generator | `dumpvault backup` again; `dumpvault
# restore latest | b3sum`. The b3sum of the generated stream must equal the restored one and the
# `blake3` both snapshots record. Then repository size (du -sb), cache size (du -sb of
# --cache-dir), `stats --json` blob count, and cache bytes per index entry.
# Prints a markdown table on stdout; progress on stderr. Exit 1 on any failure or hash mismatch.
# Needs: bash, python3, openssl, b3sum, GNU time, du, awk; ~0.7 x SIZE of free disk at TEXT_PCT=50.
set -euo pipefail
export LC_ALL=C

say() { printf '%s\n' "$*" >&2; }
bytes() { # 20G -> 21474836480
  local v=$1 m=1
  case $v in *[kK]) m=1024 ;; *[mM]) m=$((1024 ** 2)) ;; *[gG]) m=$((1024 ** 3)) ;; *[tT]) m=$((1024 ** 4)) ;; esac
  v=${v%[kKmMgGtT]}
  [[ $v =~ ^[0-9]+$ ]] || { say "bigstream.sh: bad size '$1'"; exit 2; }
  echo $((v * m))
}
SIZE=$(bytes "${SIZE:-20G}")
GEN_PROBE=$(bytes "${GEN_PROBE:-1G}")
[ "$GEN_PROBE" -gt "$SIZE" ] && GEN_PROBE=$SIZE
TEXT_PCT=${TEXT_PCT:-50}
[[ $TEXT_PCT =~ ^[0-9]+$ ]] && [ "$TEXT_PCT" -le 100 ] || { say "bigstream.sh: TEXT_PCT must be 0..100"; exit 2; }
TEXT_FILE=${TEXT_FILE:-}
[ -z "$TEXT_FILE" ] || [ -r "$TEXT_FILE" ] || { say "bigstream.sh: cannot read TEXT_FILE=$TEXT_FILE"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
[ -x "$BIN" ] || { say "bigstream.sh: no dumpvault binary at $BIN (cargo build --release, or set DUMPVAULT_BIN)"; exit 2; }
for need in python3 openssl b3sum /usr/bin/time du awk mkfifo; do
  command -v "$need" >/dev/null || { say "bigstream.sh: '$need' is required"; exit 2; }
done

DIR=${BIG_DIR:-/tmp/bigstream}
[ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ] && { say "bigstream.sh: $DIR exists and is not empty"; exit 2; }
mkdir -p "$DIR"
cleanup() { [ "${KEEP:-0}" = 1 ] && say "== kept $DIR" || rm -rf "$DIR"; }
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
avail=$(df -B1 --output=avail "$DIR" | tail -n 1)
need=$((SIZE * (100 - TEXT_PCT) / 100 + SIZE * TEXT_PCT / 100 / 3 + 2 * 1024 ** 3))
[ "$avail" -gt "$need" ] || { say "bigstream.sh: $DIR has $((avail / 1024 ** 3)) GiB free, needs ~$((need / 1024 ** 3))"; exit 2; }

export DUMPVAULT_REPO=$DIR/repo DUMPVAULT_PASSWORD=bench DUMPVAULT_CACHE_DIR=$DIR/cache
unset DUMPVAULT_PASSWORD_FILE DUMPVAULT_PASSWORD_COMMAND

# ---------------------------------------------------------------- the generator
cat >"$DIR/gen.py" <<'EOF'
# gen.py text OUT [TEXT_FILE]: writes the text to cycle through (once, before the timed steps).
# gen.py stream SIZE TEXT_PCT TEXT: writes the stream to stdout.
import fcntl, random, stat, os, subprocess, sys

F_SETPIPE_SZ = 1031
BLOCK = 1 << 20

if sys.argv[1] == "text":
  if len(sys.argv) > 3:
    with open(sys.argv[3], "rb") as f:
        text = f.read(64 << 20)
  else:  # 16 MiB of COPY-like rows, deterministic
    rnd = random.Random(14)
    words = [w.encode() for w in (
        "new paid shipped done pending refunded Customer Street City Avenue Road order "
        "invoice gift express standard priority warehouse north south east west").split()]
    rows, n, i = [], 0, 0
    while n < 16 << 20:
        i += 1
        r = b"%d\t%s %d\t%08x@example.com\t%d %s %s, %s %d\t2024-%02d-%02d %02d:%02d:%02d+00\t%d.%02d\t%s\t{\"sku\": \"%06x\", \"qty\": %d}\n" % (
            i, rnd.choice(words), rnd.randrange(10 ** 6), rnd.getrandbits(32), rnd.randrange(1000),
            rnd.choice(words), rnd.choice(words), rnd.choice(words), rnd.randrange(120),
            rnd.randrange(1, 13), rnd.randrange(1, 29), rnd.randrange(24), rnd.randrange(60),
            rnd.randrange(60), rnd.randrange(1000), rnd.randrange(100), rnd.choice(words),
            rnd.getrandbits(24), rnd.randrange(1, 10))
        rows.append(r)
        n += len(r)
    text = b"".join(rows)
  with open(sys.argv[2], "wb") as f:
    f.write(text)
  sys.exit(0)

size, text_pct = int(sys.argv[2]), int(sys.argv[3])
with open(sys.argv[4], "rb") as f:
    text = f.read()
# ~2 KiB line-aligned pieces; each gets a unique marker line after it, so no chunk repeats.
pieces, start = [], 0
while start < len(text):
    end = text.find(b"\n", start + 2048)
    end = len(text) if end < 0 else end + 1
    pieces.append(text[start:end])
    start = end
if not pieces or not text:
    sys.exit("gen.py: empty text")

keystream = subprocess.Popen(
    ["openssl", "enc", "-aes-128-ctr", "-nosalt", "-bufsize", str(BLOCK), "-K", "000102030405060708090a0b0c0d0e0f",
     "-iv", "00000000000000000000000000000000", "-in", "/dev/zero"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
ks = keystream.stdout
# 1 MiB pipe buffers (the default 64 KiB costs ~25 % here); best effort.
for fd in (ks.fileno(), 1):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, F_SETPIPE_SZ, BLOCK)
    except OSError:
        pass
rbuf = bytearray(BLOCK)
out = sys.stdout.buffer
left, block, piece, marker = size, 0, 0, 0
try:
    while left > 0:
        # Bresenham: block i is text when floor((i+1)*p/100) > floor(i*p/100)
        is_text = (block + 1) * text_pct // 100 > block * text_pct // 100
        block += 1
        if is_text:
            parts, n = [], 0
            while n < BLOCK:
                p = pieces[piece]
                piece = (piece + 1) % len(pieces)
                m = b"-- %012d\n" % marker
                marker += 1
                parts.append(p)
                parts.append(m)
                n += len(p) + len(m)
            data = b"".join(parts)
        else:
            view, got = memoryview(rbuf), 0
            while got < BLOCK:
                k = ks.readinto(view[got:])
                if not k:
                    sys.exit("gen.py: openssl keystream ended")
                got += k
            data = rbuf
        if len(data) > left:
            data = bytes(data[:left])
        out.write(data)
        left -= len(data)
    out.flush()
except BrokenPipeError:
    sys.exit(1)
finally:
    keystream.kill()
    keystream.wait()
EOF
python3 "$DIR/gen.py" text "$DIR/text" ${TEXT_FILE:+"$TEXT_FILE"} || { say "bigstream.sh: generator setup failed"; exit 1; }
# gen SIZE [TAG]: the stream on stdout; with TAG, the generator's own times go to $DIR/t.gen.TAG
gen() {
  if [ -n "${2:-}" ]; then
    /usr/bin/time -f '%e %U %S' -o "$DIR/t.gen.$2" python3 "$DIR/gen.py" stream "$1" "$TEXT_PCT" "$DIR/text"
  else python3 "$DIR/gen.py" stream "$1" "$TEXT_PCT" "$DIR/text"; fi
}
gencpu() { awk '{ printf "%.1f", $2 + $3 }' "$DIR/t.gen.$1"; }

# ---------------------------------------------------------------- measurement helpers
# vtime FILE KEY: a field of /usr/bin/time -v output, wall clock converted to seconds.
vtime() {
  case $2 in
    wall) awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; printf "%.2f", s }' "$1" ;;
    rss) awk -F': ' '/Maximum resident set size/ { print $2 }' "$1" ;;
    cpu) awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.1f", u + s }' "$1" ;;
  esac
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / (s > 0 ? s : 1e-3) }'; }
snap_b3() { "$BIN" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[int(sys.argv[1])]["streams"][0]["blake3"])' "$1"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
LOADS=()
fail() { say "FAILED: $*"; for f in "$DIR"/*.err; do [ -s "$f" ] && { say "-- $f"; tail -n 5 "$f" >&2; }; done; exit 1; }

say "== bigstream: $SIZE bytes ($(awk -v b="$SIZE" 'BEGIN { printf "%.2f GiB", b / 2^30 }')), text $TEXT_PCT %, ${TEXT_FILE:-synthetic SQL rows}; dir $DIR"
say "== $("$BIN" --version 2>/dev/null | head -n 1); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"

GEN_MBPS=-
if [ "$GEN_PROBE" -gt 0 ]; then
  t0=$EPOCHREALTIME
  gen "$GEN_PROBE" | cat >/dev/null
  t1=$EPOCHREALTIME
  GEN_MBPS=$(mbps "$GEN_PROBE" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  say "== generator alone (into a pipe): $GEN_MBPS MB/s over $GEN_PROBE bytes"
fi

"$BIN" init -q --kdf-memory 19456 --kdf-iterations 2 2>"$DIR/init.err" || fail "init"

# 1. initial backup; the generated stream is hashed on the side through a fifo.
say "== 1/3 backup (all new); load $(load)"
LOADS+=("$(load)")
mkfifo "$DIR/hash.fifo"
b3sum --no-names <"$DIR/hash.fifo" >"$DIR/gen.b3" &
HASH_PID=$!
sync
gen "$SIZE" 1 | tee "$DIR/hash.fifo" |
  /usr/bin/time -v -o "$DIR/t.backup1" "$BIN" backup --name bigstream -q --json >"$DIR/backup1.json" 2>"$DIR/backup1.err" ||
  fail "backup 1 (pipeline exit ${PIPESTATUS[*]})"
wait "$HASH_PID" || fail "b3sum of the generated stream"
GEN_B3=$(cat "$DIR/gen.b3")
say "   $(vtime "$DIR/t.backup1" wall) s, $(mbps "$SIZE" "$(vtime "$DIR/t.backup1" wall)") MB/s, peak RSS $(($(vtime "$DIR/t.backup1" rss) / 1024)) MiB"
REPO1=$(du -sb "$DUMPVAULT_REPO" | cut -f1)
CACHE1=$(du -sb "$DUMPVAULT_CACHE_DIR" | cut -f1)

# 2. the same stream again: every chunk is already stored.
say "== 2/3 backup (same stream: all chunks known); load $(load)"
LOADS+=("$(load)")
sync
gen "$SIZE" 2 | /usr/bin/time -v -o "$DIR/t.backup2" "$BIN" backup --name bigstream -q --json >"$DIR/backup2.json" 2>"$DIR/backup2.err" ||
  fail "backup 2 (pipeline exit ${PIPESTATUS[*]})"
say "   $(vtime "$DIR/t.backup2" wall) s, $(mbps "$SIZE" "$(vtime "$DIR/t.backup2" wall)") MB/s, peak RSS $(($(vtime "$DIR/t.backup2" rss) / 1024)) MiB"
REPO2=$(du -sb "$DUMPVAULT_REPO" | cut -f1)

# 3. restore to stdout, hashed.
say "== 3/3 restore latest | b3sum; load $(load)"
LOADS+=("$(load)")
sync
if [ "${DROP_CACHES:-0}" = 1 ]; then echo 3 >/proc/sys/vm/drop_caches || say "   could not drop the page cache"; fi
/usr/bin/time -v -o "$DIR/t.restore" "$BIN" restore latest -q 2>"$DIR/restore.err" | b3sum --no-names >"$DIR/restore.b3" ||
  fail "restore (pipeline exit ${PIPESTATUS[*]})"
say "   $(vtime "$DIR/t.restore" wall) s, $(mbps "$SIZE" "$(vtime "$DIR/t.restore" wall)") MB/s, peak RSS $(($(vtime "$DIR/t.restore" rss) / 1024)) MiB"

LOADS+=("$(load)")
REST_B3=$(cat "$DIR/restore.b3")
SNAP1_B3=$(snap_b3 0)
SNAP2_B3=$(snap_b3 1)
CACHE=$(du -sb "$DUMPVAULT_CACHE_DIR" | cut -f1)
"$BIN" stats --json >"$DIR/stats.json" 2>"$DIR/stats.err" || fail "stats"
read -r BLOBS PACKS PACK_BYTES IDXF < <(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(s["blobs"], s["packs"], s["pack_bytes"], s["index_files"])' "$DIR/stats.json")
NEW2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["new_chunks"])' "$DIR/backup2.json")
CHUNKS1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["stats"]["chunks"])' "$DIR/backup1.json")
CACHE_FILES=$(cd "$DUMPVAULT_CACHE_DIR" && find . -type f | sed 's/^\.\///' | awk -F/ '{ t = ($1 ~ /\.runs$/) ? "runs/" : $NF; sub(/^[0-9a-f]{64}/, "", t); c[t]++ } END { for (k in c) printf "%s%s x%d", (n++ ? ", " : ""), k, c[k] }')
OK=1
[ "$GEN_B3" = "$REST_B3" ] || { say "MISMATCH: generated $GEN_B3, restored $REST_B3"; OK=0; }
[ "$GEN_B3" = "$SNAP1_B3" ] || { say "MISMATCH: generated $GEN_B3, snapshot 1 records $SNAP1_B3"; OK=0; }
[ "$GEN_B3" = "$SNAP2_B3" ] || { say "MISMATCH: generated $GEN_B3, snapshot 2 records $SNAP2_B3 (generator not deterministic?)"; OK=0; }
[ "$NEW2" = 0 ] || say "NOTE: the second backup stored $NEW2 new chunks (expected 0)"

row() { # label timefile generator-cpu
  local w
  w=$(vtime "$2" wall)
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$w" "$(mbps "$SIZE" "$w")" "$(awk -v k="$(vtime "$2" rss)" 'BEGIN { printf "%.1f", k / 1024 }')" "$(vtime "$2" cpu)" "$3"
}
{
  echo
  echo "bigstream: $(awk -v b="$SIZE" 'BEGIN { printf "%.2f GiB (%.1f GB)", b / 2^30, b / 1e9 }'), $TEXT_PCT % text (${TEXT_FILE:-synthetic SQL rows}), $(( 100 - TEXT_PCT )) % AES-CTR keystream; dumpvault $("$BIN" --version 2>/dev/null | grep -o -E '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1), $(nproc) CPUs; generator alone $GEN_MBPS MB/s into a pipe"
  echo "load average (1/5/15 min) before each step and at the end: ${LOADS[0]} | ${LOADS[1]} | ${LOADS[2]} | ${LOADS[3]}"
  echo
  echo "| step | wall s | MB/s | peak RSS MiB | dumpvault CPU s (user+sys) | generator CPU s |"
  echo "|---|---|---|---|---|---|"
  row "backup, all new (generator \| tee b3sum \| backup)" "$DIR/t.backup1" "$(gencpu 1)"
  row "backup again, all chunks known ($NEW2 new)" "$DIR/t.backup2" "$(gencpu 2)"
  row "restore latest \| b3sum$([ "${DROP_CACHES:-0}" = 1 ] && echo ', page cache dropped')" "$DIR/t.restore" -
  echo
  echo "| repository | value |"
  echo "|---|---|"
  echo "| stream chunks (backup 1) / index entries (stats blobs) | $CHUNKS1 / $BLOBS |"
  echo "| mean chunk | $(awk -v s="$SIZE" -v c="$CHUNKS1" 'BEGIN { printf "%.0f", s / c }') B |"
  echo "| repository (du -sb) after backup 1 / 2 | $(awk -v a="$REPO1" -v b="$REPO2" 'BEGIN { printf "%.2f / %.2f GB", a / 1e9, b / 1e9 }') ($PACKS packs, $(awk -v p="$PACK_BYTES" -v s="$SIZE" 'BEGIN { printf "%.2f GB = %.1f %% of the stream", p / 1e9, 100 * p / s }'); $IDXF index files) |"
  echo "| cache (du -sb of --cache-dir) after backup 1 / at the end | $(awk -v a="$CACHE1" -v b="$CACHE" 'BEGIN { printf "%.1f / %.1f MB", a / 1e6, b / 1e6 }') ($CACHE_FILES) |"
  echo "| cache bytes per index entry | $(awk -v c="$CACHE" -v n="$BLOBS" 'BEGIN { printf "%.1f", c / n }') |"
  echo "| cache per TB of unique stream | $(awk -v c="$CACHE" -v s="$SIZE" 'BEGIN { printf "%.2f GB", c / s * 1e12 / 1e9 }') |"
  echo "| b3sum generated = restored = both snapshots' blake3 | $([ "$OK" = 1 ] && echo "yes ($GEN_B3)" || echo NO) |"
}
[ "$OK" = 1 ] || exit 1
