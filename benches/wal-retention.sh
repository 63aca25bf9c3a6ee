#!/usr/bin/env bash
# Repository size under retention: N simulated days of pgbench WAL archived by
# `dumpvault wal push %p`, one base backup a day, then `forget --keep-last K --prune`.
#
# Usage: benches/wal-retention.sh     (as root; PostgreSQL runs as the postgres user via runuser)
# Environment (default):
#   DUMPVAULT_BIN (target/release/dumpvault)  the binary under test; never built by this script
#   DAYS (6)       simulated days
#   K (2)          forget --keep-last K for the pg-base series
#   TXNS (100000)  pgbench TPC-B transactions per day (-c 2 -j 2)
#   CHECKPOINTS (3)  the day's pgbench runs in this many parts, each followed by CHECKPOINT (a day
#                  has checkpoints; full-page images after each make most of the WAL: ~25 segments)
#   SCALE (10)     pgbench -i scale
#   WAL_KEEP (unset)  if set, `forget --keep-last K` then `prune --wal-keep-base-backups WAL_KEEP`
#                  instead of `forget --keep-last K --prune`
#   PGBIN (/usr/lib/postgresql/15/bin)  KEEP_WORK (0; 1 keeps the temp dir)
#
# Setup: a private cluster (unix socket only, fsync = off, 16 MiB segments), its WAL archived by
# `dumpvault --quiet wal push %p` into a fresh repository (Argon2id at its floor; every command,
# archive_command included, opens it with a machine key and runs as postgres), `pgbench -i`.
# Each day: pgbench TPC-B for TXNS transactions (CHECKPOINT after each of CHECKPOINTS parts), pg_switch_wal, wait until the archiver is idle,
# `dumpvault backup --name pg-base -- pg_basebackup -D - -Ft -X fetch -c fast`, wait for the
# archiver again, then retention. Per day it prints the segments archived that day, the WAL
# objects left after prune (count, `du -sb REPO/wal`), `du -sb` of data/ and of the repository,
# and the `wal status --json` range and gaps. At the end: `fsck` must exit 0, `wal status` must
# exit 0 with no gap, and of every segment ever archived, exactly those below the start segment
# of the oldest kept base backup must be gone. Exit 1 if a check failed.
set -eEuo pipefail
export LC_ALL=C

say() { printf '%s\n' "$*" >&2; }
die() { say "wal-retention.sh: $*"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
DAYS=${DAYS:-6} K=${K:-2} TXNS=${TXNS:-100000} SCALE=${SCALE:-10} WAL_KEEP=${WAL_KEEP:-}
CHECKPOINTS=${CHECKPOINTS:-3}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
for v in DAYS K TXNS SCALE CHECKPOINTS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"; done
[ -z "$WAL_KEEP" ] || [[ $WAL_KEEP =~ ^[1-9][0-9]*$ ]] || die "WAL_KEEP must be a positive integer"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is started as the postgres user with runuser)"
[ -x "$BIN" ] || die "no dumpvault binary at $BIN (set DUMPVAULT_BIN)"
BIN=$(readlink -f "$BIN")
[ -x "$PGBIN/initdb" ] || die "no PostgreSQL server binaries in $PGBIN (set PGBIN)"
for need in jq du runuser; do command -v "$need" >/dev/null || die "'$need' is required"; done
for v in $(compgen -e | grep '^DUMPVAULT_' || true); do [ "$v" = DUMPVAULT_BIN ] || unset "$v"; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dumpvault-walret.XXXXXX")
chmod 755 "$WORK"
PGDATA=$WORK/pgdata SOCK=$WORK/sock REPO=$WORK/dv/repo SECRET=$WORK/dv/wal.secret LOG=$WORK/log
PGPORT=$((20000 + RANDOM % 20000))
mkdir -p "$PGDATA" "$SOCK" "$WORK/cache" "$WORK/dv"
chown postgres "$PGDATA" "$SOCK" "$WORK/cache" "$WORK/dv" # dumpvault runs as postgres
mkdir -p "$WORK/out"
: >"$LOG"
cleanup() {
  set +e
  [ -f "$PGDATA/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1
  if [ "${KEEP_WORK:-0}" = 1 ]; then say "== work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'say "wal-retention.sh: line $LINENO failed: $BASH_COMMAND (log: $LOG)"' ERR
trap 'say "interrupted"; exit 130' INT TERM

as_pg() { runuser -u postgres -- "$@"; }
DVENV=(DUMPVAULT_REPO="$REPO" DUMPVAULT_PASSWORD_FILE="$SECRET" DUMPVAULT_CACHE_DIR="$WORK/cache")
dv() { as_pg env "${DVENV[@]}" PGHOST="$SOCK" PGPORT="$PGPORT" PGUSER=postgres PATH="$PGBIN:$PATH" "$BIN" --quiet "$@"; }
sql() { "$PGBIN/psql" -h "$SOCK" -p "$PGPORT" -U postgres -XAtq -v ON_ERROR_STOP=1 -c "$1" postgres; }
archiver_idle() {
  local i
  for i in $(seq 1200); do
    [ "$(sql "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'")" = 0 ] && return 0
    sleep 0.1
  done
  die "the archiver is stuck (see $PGDATA/log and pg_stat_archiver)"
}
# segment names (24 hex digits) in the repository, sorted
repo_segs() { find "$REPO/wal/main" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' 2>/dev/null | sort; }
segno() { echo $((16#${1:8:8} * 256 + 16#${1:16:8})); } # 16 MiB segments: 256 per xlogid
sizeb() { du -sb "$1" | cut -f1; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
# oldest_start STATUS_JSON: the segment holding the start LSN of the oldest complete base
# backup listed by `wal status --json` (TTTTTTTT XXXXXXXX SSSSSSSS, 16 MiB segments)
oldest_start() {
  local tl lsn
  jq -r '.status.base_backups[] | select(.complete) | "\(.timeline) \(.start_lsn)"' "$1" |
    while read -r tl lsn; do
      printf '%08X%08X%08X\n' "$tl" $((16#${lsn%/*})) $((16#${lsn#*/} / 16777216))
    done | sort -k1.9 | head -n 1
}
FAILS=0
fail() { FAILS=$((FAILS + 1)); say "   FAILED: $*"; }

# ---------------------------------------------------------------- repository and cluster
say "== $("$BIN" --version); $("$PGBIN/postgres" --version); DAYS=$DAYS K=$K TXNS=$TXNS SCALE=$SCALE WAL_KEEP=${WAL_KEEP:--}; work dir $WORK"
as_pg env DUMPVAULT_PASSWORD=bench-init DUMPVAULT_CACHE_DIR="$WORK/cache" "$BIN" --quiet --repo "$REPO" \
  init --kdf-memory 19456 --kdf-iterations 2 >>"$LOG" 2>&1
as_pg env DUMPVAULT_PASSWORD=bench-init DUMPVAULT_CACHE_DIR="$WORK/cache" "$BIN" --quiet --repo "$REPO" \
  key add-machine --secret-file "$SECRET" >>"$LOG" 2>&1
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust >>"$LOG" 2>&1
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PGPORT
fsync = off
shared_buffers = 128MB
max_wal_size = 4GB
wal_level = replica
archive_mode = on
archive_command = 'env ${DVENV[*]} $BIN --quiet wal push %p'
EOF
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w start >>"$LOG" 2>&1
"$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -U postgres -i -q -s "$SCALE" postgres >>"$LOG" 2>&1
sql "select pg_switch_wal()" >/dev/null
archiver_idle
ALL=$WORK/all-segs # every segment ever seen in the repository
repo_segs >"$ALL"
say "   pgbench -i -s $SCALE: $(wc -l <"$ALL") segments archived before day 1"

# ---------------------------------------------------------------- days
printf '%-4s %6s %9s %8s %8s %8s %8s %9s %9s  %-24s %-24s %s\n' day tps segs_day wal_objs wal_MB data_MB repo_MB \
  base_new_MB repack_MB first_segment last_segment gaps >"$WORK/table"
T0=$EPOCHREALTIME
for d in $(seq "$DAYS"); do
  t0=$EPOCHREALTIME
  for c in $(seq "$CHECKPOINTS"); do
    "$PGBIN/pgbench" -h "$SOCK" -p "$PGPORT" -U postgres -n -c 2 -j 2 -t $((TXNS / 2 / CHECKPOINTS)) postgres >>"$LOG" 2>&1
    sql checkpoint
  done
  t1=$EPOCHREALTIME
  sql "select pg_switch_wal()" >/dev/null
  archiver_idle
  dv backup --json --name pg-base -- pg_basebackup -D - -Ft -X fetch -c fast >"$WORK/out/backup-$d.json"
  archiver_idle
  repo_segs | sort -u - "$ALL" >"$ALL.new"
  new=$(comm -13 "$ALL" "$ALL.new" | wc -l)
  mv "$ALL.new" "$ALL"
  if [ -n "$WAL_KEEP" ]; then
    dv forget --name pg-base --keep-last "$K" >"$WORK/out/forget-$d.txt" 2>&1
    dv prune --wal-keep-base-backups "$WAL_KEEP" >>"$WORK/out/forget-$d.txt" 2>&1
  else
    dv forget --name pg-base --keep-last "$K" --prune >"$WORK/out/forget-$d.txt" 2>&1
  fi
  cat "$WORK/out/forget-$d.txt" >>"$LOG"
  # what prune copied into new packs (its plan line: "repack N (X MiB to copy)")
  repacked=$(sed -n 's/.*repack [0-9]* (\([0-9.]*\) \([KMG]i*B\) to copy).*/\1 \2/p' "$WORK/out/forget-$d.txt" |
    awk '{ f = ($2 == "KiB") ? 1024 : ($2 == "MiB") ? 1048576 : ($2 == "GiB") ? 1073741824 : 1; s += $1 * f }
         END { printf "%.1f", s / 1e6 }')
  rc=0; dv wal status --json >"$WORK/out/status-$d.json" 2>>"$LOG" || rc=$?
  [ "$rc" = 0 ] || fail "day $d: wal status exited $rc"
  objs=$(find "$REPO/wal/main" -maxdepth 1 -type f ! -name '.*' | wc -l)
  read -r first last gaps < <(jq -r '.status | [.timelines[0].ranges[0].first // "-",
      .timelines[0].ranges[-1].last // "-", ([.timelines[].gaps | length] | add // 0)] | @tsv' \
    "$WORK/out/status-$d.json")
  [ "$gaps" = 0 ] || fail "day $d: $gaps gap(s)"
  oldest=$(oldest_start "$WORK/out/status-$d.json")
  [ "$first" = "$oldest" ] || fail "day $d: WAL starts at $first, the oldest kept base backup at $oldest"
  base=$(jq -r '.stats.new_bytes' "$WORK/out/backup-$d.json")
  printf '%-4s %6.0f %9s %8s %8s %8s %8s %9s %9s  %-24s %-24s %s\n' "$d" \
    "$(awk -v n="$TXNS" -v us=$((${t1/./} - ${t0/./})) 'BEGIN { print n / (us / 1e6) }')" \
    "$new" "$objs" "$(mb "$(sizeb "$REPO/wal")")" "$(mb "$(sizeb "$REPO/data")")" "$(mb "$(sizeb "$REPO")")" \
    "$(mb "$base")" "$repacked" "$first" "$last" "$gaps" >>"$WORK/table"
  say "   day $d: $new segments, $objs WAL objects after prune ($(((${EPOCHREALTIME/./} - ${t0/./}) / 1000000)) s)"
done

# ---------------------------------------------------------------- final checks
rc=0; dv fsck >>"$LOG" 2>&1 || rc=$?
[ "$rc" = 0 ] && say "   fsck: exit 0" || fail "fsck exited $rc"
rc=0; dv wal status >"$WORK/out/status.txt" 2>>"$LOG" || rc=$?
[ "$rc" = 0 ] || fail "wal status exited $rc"
dv snapshots --json >"$WORK/out/snapshots.json"
nsnap=$(jq '[.. | objects | select(.name? == "pg-base" and .time? != null)] | length' "$WORK/out/snapshots.json" 2>/dev/null || echo "?")
# the oldest kept base backup's start segment, from wal status --json
S=$WORK/out/status-$DAYS.json
startseg=$(oldest_start "$S")
[ -n "$startseg" ] || { fail "no start segment in wal status --json base_backups"; startseg=; }
if [ -n "$startseg" ]; then
  cut=$(segno "$startseg")
  repo_segs >"$WORK/now"
  gone_ok=0 gone_bad=0 kept_ok=0 kept_bad=0
  while read -r s; do
    if [ "$(segno "$s")" -lt "$cut" ]; then
      if grep -qx "$s" "$WORK/now"; then gone_bad=$((gone_bad + 1)); else gone_ok=$((gone_ok + 1)); fi
    else
      if grep -qx "$s" "$WORK/now"; then kept_ok=$((kept_ok + 1)); else kept_bad=$((kept_bad + 1)); fi
    fi
  done <"$ALL"
  extra=$(comm -23 "$WORK/now" "$ALL" | wc -l)
  last_pg=$(sql "select last_archived_wal from pg_stat_archiver")
  say "   oldest kept base backup starts in $startseg; of $(wc -l <"$ALL") segments ever archived:" \
    "$gone_ok below it deleted ($gone_bad still there), $kept_ok from it on present ($kept_bad missing);" \
    "PostgreSQL's last archived: $last_pg"
  [ "$gone_bad" = 0 ] || fail "$gone_bad segments below $startseg were not deleted"
  [ "$kept_bad" = 0 ] || fail "$kept_bad segments from $startseg on are missing"
  [ "$extra" = 0 ] || fail "$extra segments in the repository were never seen archived"
  [ "$(head -n 1 "$WORK/now")" = "$startseg" ] || fail "first archived segment $(head -n 1 "$WORK/now") is not $startseg"
fi

echo "# benches/wal-retention.sh: $("$BIN" --version), $("$PGBIN/postgres" --version | awk '{ print $3 }'), SCALE=$SCALE" \
  "TXNS=$TXNS/day CHECKPOINTS=$CHECKPOINTS DAYS=$DAYS forget --keep-last $K$([ -n "$WAL_KEEP" ] && echo " prune --wal-keep-base-backups $WAL_KEEP" || echo " --prune")" \
  "($(date -u +%F), load $(cut -d' ' -f1-3 /proc/loadavg), $(((${EPOCHREALTIME/./} - ${T0/./}) / 1000000)) s)"
cat "$WORK/table"
echo "# pg-base snapshots left: $nsnap; fsck and wal status: $([ "$FAILS" = 0 ] && echo ok || echo "$FAILS check(s) FAILED")"
[ "$FAILS" = 0 ] || exit 1
