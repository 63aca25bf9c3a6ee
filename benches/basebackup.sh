#!/usr/bin/env bash
# How well consecutive PostgreSQL base backups deduplicate, and what an ideal 8 KiB
# page-aligned deduplication of the same tars would store instead (benches/README.md).
#
# A private cluster (unix socket only) gets `pgbench -i -s SCALE`; day 0 is backed up in command
# mode (`dumpvault backup --name pg-base -- pg_basebackup -D - -Ft -X fetch -c fast`) into a
# repository with the first chunk size of CHUNK_AVGS, the tar is restored from it, and the same
# tar goes into one more repository per other chunk size. Each later day runs pgbench
# transactions (TOUCH_PCT % of the accounts rows' count), VACUUM, CHECKPOINT, then the same
# backups. benches/pagededup.py then compares, per day, what each repository stored (du of
# data/; new raw and stored bytes from the index file the backup wrote) with an ideal
# page-aligned store computed from the tars.
#
# Usage: benches/basebackup.sh          (run as root or as the postgres user)
# Environment (defaults): SCALE=30 DAYS=3 TOUCH_PCT=2 DIST=uniform|zipf ZIPF_S=1.1
#   FILLER=text|blank (accounts.filler: 84 hex digits, or pgbench's blanks)
#   CHUNK_AVGS="16384 8192 65536" CHECKSUMS=0 (1: initdb -k) PGPORT=54339 DUMPVAULT_BIN
#   PGBIN (newest /usr/lib/postgresql/*/bin) WORK (a new /tmp/basebackup-bench.*) KEEP=0
#   PY (a python3 with blake3, pynacl, argon2-cffi, zstandard; else a venv in VENV is made)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
SCALE=${SCALE:-30}; DAYS=${DAYS:-3}; TOUCH_PCT=${TOUCH_PCT:-2}; DIST=${DIST:-uniform}
ZIPF_S=${ZIPF_S:-1.1}; FILLER=${FILLER:-text}; CHUNK_AVGS=${CHUNK_AVGS:-"16384 8192 65536"}; CHECKSUMS=${CHECKSUMS:-0}
PGPORT=${PGPORT:-54339}; KEEP=${KEEP:-0}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
VENV=${VENV:-/tmp/dumpvault-bench-venv}
[ -x "$BIN" ] || { echo "no dumpvault binary at $BIN (set DUMPVAULT_BIN)" >&2; exit 2; }
[ -x "$PGBIN/pg_basebackup" ] || { echo "no PostgreSQL in $PGBIN (set PGBIN)" >&2; exit 2; }

MODS='import blake3, nacl, argon2, zstandard'
if [ -z "${PY:-}" ]; then
  if python3 -c "$MODS" 2>/dev/null; then PY=python3
  else
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -c "$MODS" 2>/dev/null ||
      "$VENV/bin/pip" install -q blake3 pynacl argon2-cffi zstandard
    PY=$VENV/bin/python
  fi
fi

WORK=${WORK:-$(mktemp -d /tmp/basebackup-bench.XXXXXX)}
mkdir -p "$WORK"; chmod 755 "$WORK"
PGDATA=$WORK/pgdata; SOCK=$WORK/sock
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
  if [ "$KEEP" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log() { echo "[$(date +%T)] $*" >&2; }

# ---- the cluster: unix socket only, no fsync (durability is not what is measured); commits stay
# synchronous: with synchronous_commit = off, hint bits wait for the WAL flush and VACUUM leaves
# pages not all-visible, which shows up as extra page changes the next day
mkdir -p "$PGDATA" "$SOCK"
[ "$(id -u)" = 0 ] && chown postgres "$PGDATA" "$SOCK"
initargs=(-D "$PGDATA" -U postgres --auth=trust); [ "$CHECKSUMS" = 1 ] && initargs+=(-k)
as_pg "$PGBIN/initdb" "${initargs[@]}" >/dev/null
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
fsync = off
shared_buffers = 256MB
max_wal_size = 4GB
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w start >/dev/null
export PGHOST=$SOCK PGPORT PGUSER=postgres PGDATABASE=postgres
export PATH=$PGBIN:$PATH
sql() { psql -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

# ---- repositories: the first chunk size gets the command-mode backups
export DUMPVAULT_PASSWORD=bench
read -r -a AVGS <<<"$CHUNK_AVGS"
for avg in "${AVGS[@]}"; do
  mkdir -p "$WORK/r$avg"
  DUMPVAULT_REPO=$WORK/r$avg/repo DUMPVAULT_CACHE_DIR=$WORK/r$avg/cache "$BIN" init -q \
    --chunk-min $((avg / 4)) --chunk-avg "$avg" --chunk-max $((avg * 4)) \
    --kdf-memory 19456 --kdf-iterations 2
done
jget() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

log "pgbench -i -s $SCALE (FILLER=$FILLER)"
if [ "$FILLER" = blank ]; then
  pgbench -i -q -s "$SCALE" 2>"$WORK/pgbench-init.log"
else
  # pgbench's server-side generation ('G'), but the accounts' filler is 84 distinct hex digits
  # instead of blanks: blank-padded rows compress ~15x, far better than real tables do.
  pgbench -i -I dt 2>"$WORK/pgbench-init.log"
  sql "INSERT INTO pgbench_branches (bid, bbalance) SELECT bid, 0 FROM generate_series(1, $SCALE) bid"
  sql "INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT tid, (tid - 1) / 10 + 1, 0
       FROM generate_series(1, $((SCALE * 10))) tid"
  sql "INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
       SELECT aid, (aid - 1) / 100000 + 1, 0,
              md5(aid::text) || md5((aid * 7)::text) || left(md5((aid * 13)::text), 20)
       FROM generate_series(1, $((SCALE * 100000))) aid"
  # steady state, as `pgbench -i`'s COPY FREEZE gives: old rows frozen, hint bits set
  sql CHECKPOINT; sql "VACUUM (FREEZE, ANALYZE)"; sql "VACUUM (FREEZE)"
  pgbench -i -I p 2>>"$WORK/pgbench-init.log"
fi
sql CHECKPOINT
ACCOUNTS=$((SCALE * 100000))
TXNS=$(awk -v a="$ACCOUNTS" -v p="$TOUCH_PCT" 'BEGIN { printf "%d", a * p / 100 / 2 * 2 }')
case $DIST in
  uniform) AID="random(1, $ACCOUNTS)" ;;
  # skewed, and the hot rows scattered over the table (permute), as hot customers would be
  zipf) AID="1 + permute(random_zipfian(1, $ACCOUNTS, $ZIPF_S) - 1, $ACCOUNTS)" ;;
  *) echo "DIST must be uniform or zipf" >&2; exit 2 ;;
esac
cat >"$WORK/tpcb.sql" <<EOF
\set aid $AID
\set bid random(1, $SCALE)
\set tid random(1, $((SCALE * 10)))
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
EOF

DAYINFO=()
FIRST=${AVGS[0]}
for d in $(seq 0 "$DAYS"); do
  info="day $d:"
  if [ "$d" -gt 0 ]; then
    x0=$(sql "SELECT txid_current()")
    log "day $d: $TXNS transactions ($DIST)"
    t0=$(date +%s.%N)
    pgbench -n -c 2 -j 2 -t $((TXNS / 2)) -f "$WORK/tpcb.sql" >"$WORK/pgbench-$d.log" 2>&1
    t1=$(date +%s.%N)
    touched=$(sql "SELECT count(*) FROM pgbench_accounts WHERE xmin::text::bigint >= $x0")
    sql VACUUM; sql CHECKPOINT
    info+=$(printf ' %d txns in %.0f s, %d accounts rows touched (%.2f %%), VACUUM, CHECKPOINT;' \
      "$TXNS" "$(echo "$t1 - $t0" | bc -l)" "$touched" "$(echo "100 * $touched / $ACCOUNTS" | bc -l)")
  fi
  db=$(sql "SELECT pg_database_size('postgres')")
  log "day $d: base backup"
  export DUMPVAULT_REPO=$WORK/r$FIRST/repo DUMPVAULT_CACHE_DIR=$WORK/r$FIRST/cache
  t0=$(date +%s.%N)
  "$BIN" backup --json --name pg-base -- pg_basebackup -D - -Ft -X fetch -c fast \
    >"$WORK/r$FIRST/day$d.json"
  t1=$(date +%s.%N)
  du -sb "$DUMPVAULT_REPO/data" | cut -f1 >"$WORK/r$FIRST/day$d.du"
  snap=$(jget "$WORK/r$FIRST/day$d.json" 'd["snapshot_id"]')
  "$BIN" restore -q "$snap" -o "$WORK/day$d.tar"
  info+=$(printf ' db %.0f MB, tar %.0f MB, command-mode backup %.1f s' "$(echo "$db / 1000000" | bc -l)" \
    "$(echo "$(stat -c %s "$WORK/day$d.tar") / 1000000" | bc -l)" "$(echo "$t1 - $t0" | bc -l)")
  [ "$d" = 0 ] && info+="; dump info: $(jget "$WORK/r$FIRST/day$d.json" \
    'json.dumps(d["snapshot"]["streams"][0].get("dump"), separators=(",",":"))')"
  for avg in "${AVGS[@]:1}"; do
    export DUMPVAULT_REPO=$WORK/r$avg/repo DUMPVAULT_CACHE_DIR=$WORK/r$avg/cache
    "$BIN" backup --json --name pg-base "$WORK/day$d.tar" >"$WORK/r$avg/day$d.json"
    du -sb "$DUMPVAULT_REPO/data" | cut -f1 >"$WORK/r$avg/day$d.du"
  done
  DAYINFO+=("$info")
done

sql "SELECT pg_relation_filepath(oid), relname FROM pg_class
     WHERE pg_relation_filepath(oid) IS NOT NULL" | tr '|' '\t' >"$WORK/relmap.tsv"
log "analysis"
echo "# benches/basebackup.sh: PostgreSQL $(pg_config --version | awk '{print $2}'), SCALE=$SCALE" \
  "DAYS=$DAYS TOUCH_PCT=$TOUCH_PCT FILLER=$FILLER DIST=$DIST$([ "$DIST" = zipf ] && echo " ZIPF_S=$ZIPF_S")" \
  "CHECKSUMS=$CHECKSUMS CHUNK_AVGS=\"$CHUNK_AVGS\" ($(date -u +%F), $("$BIN" --version))"
printf '%s\n' "${DAYINFO[@]}"
tars=(); for d in $(seq 0 "$DAYS"); do tars+=("$WORK/day$d.tar"); done
reps=(); for avg in "${AVGS[@]}"; do reps+=(--repo "$((avg / 1024))K=$WORK/r$avg"); done
"$PY" "$ROOT/benches/pagededup.py" "${tars[@]}" "${reps[@]}" --relmap "$WORK/relmap.tsv" --json "$WORK/result.json"
[ "$KEEP" = 1 ] && echo "JSON: $WORK/result.json" >&2
exit 0
