#!/usr/bin/env bash
# WAL archiving benchmark: dumpvault `wal push` / `wal fetch` next to a cp+fsync floor and
# pgBackRest `archive-push` / `archive-get`, on real PostgreSQL WAL, in one run.
#
# Usage: benches/wal.sh        (as root; PostgreSQL runs as the postgres user via runuser)
# Environment (default):
#   DUMPVAULT_BIN (target/release/dumpvault)   the binary under test; never built by this script
#   NSEG (16)           16 MiB pgbench segments pushed per tool and run
#   RUNS (3)            runs; tools interleaved per segment, order rotating; figures are medians
#   PGBENCH_SCALE (10)  pgbench -i scale of the 16 MiB cluster
#   SCALE_N (10000)     archived 1 MiB segments for the open-cost step (0 skips the step)
#   SCALE_P (2)         parallel pushes (xargs -P) filling it
#   DV_PARALLEL (4)     dumpvault wal push --async --parallel
#   PGBR_PROCESS_MAX (2) pgBackRest process-max in asynchronous mode
#   FETCH_GAP (0.1)     seconds between fetches in the "-gap" fetch variants (replay time)
#   GARAGE (auto)       auto: the Garage S3 step runs when `garage` is installed; 0 skips it
#   PGBIN (/usr/lib/postgresql/15/bin)
#
# Steps. (1) A private PostgreSQL cluster (16 MiB segments) runs pgbench -i, then pgbench
# transactions until NSEG more segments are archived (archive_command = cp); those NSEG
# transaction segments are the input, and the cluster is stopped. (2) Push latency: per run,
# fresh repositories; every segment is pushed by a fresh process of each tool, as
# archive_command would: `dd conv=fsync` (floor), `dumpvault --quiet wal push` with a machine
# key, `pgbackrest archive-push` (zst level 3, aes-256-cbc, archive-async=n); then `du -sb` of
# each repository. (3) Sustained rate, back to back, fresh repositories: dumpvault sync and
# --async, pgBackRest sync and async (a fake pg_wal with archive_status/*.ready, each .ready
# renamed .done after its push returned 0, as PostgreSQL does). (4) Serial fetches into
# pg_wal/RECOVERYXLOG (what restore_command gets), each checked with cmp: dumpvault
# --prefetch 0 and the default --prefetch 8, pgBackRest archive-get sync and async; the
# prefetching ones also with FETCH_GAP seconds between fetches (untimed: the replay time
# PostgreSQL would spend, in which a prefetcher works). MB/s counts the fetch calls only.
# (5) Open cost at scale: a cluster with --wal-segsize=1 and a base backup snapshot; its real
# 1 MiB segments, then copies of one of them under the following names up to SCALE_N; at ~10
# and at SCALE_N archived files: `snapshots`, `wal status` and `wal push` latency.
# (6) If garage is installed: a local Garage S3 store, dumpvault push latency, sustained rates
# and fetch (pgBackRest's S3 driver needs TLS, so it is not run there).
# Wall times are taken around each command (bash EPOCHREALTIME); CPU is user+sys of the reaped
# process (bash `times`). Progress goes to stderr; one table to stdout. Exit 1 if a step failed.
set -eEuo pipefail
export LC_ALL=C

say() { printf '%s\n' "$*" >&2; }
die() { say "wal.sh: $*"; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
NSEG=${NSEG:-16}
RUNS=${RUNS:-3}
PGBENCH_SCALE=${PGBENCH_SCALE:-10}
SCALE_N=${SCALE_N:-10000}
SCALE_P=${SCALE_P:-2}
DV_PARALLEL=${DV_PARALLEL:-4}
PGBR_PROCESS_MAX=${PGBR_PROCESS_MAX:-2}
GARAGE=${GARAGE:-auto}
FETCH_GAP=${FETCH_GAP:-0.1}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
for v in NSEG RUNS PGBENCH_SCALE SCALE_P DV_PARALLEL PGBR_PROCESS_MAX; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[[ $SCALE_N =~ ^[0-9]+$ ]] || die "SCALE_N must be an integer, got '$SCALE_N'"
[ "$(id -u)" = 0 ] || die "run as root (PostgreSQL is started as the postgres user with runuser)"
[ -x "$BIN" ] || die "no dumpvault binary at $BIN (set DUMPVAULT_BIN)"
[ -x "$PGBIN/initdb" ] || die "no PostgreSQL server binaries in $PGBIN (set PGBIN)"
id postgres >/dev/null 2>&1 || die "no postgres user"
if ! command -v pgbackrest >/dev/null; then
  say "== installing pgbackrest with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q pgbackrest >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q pgbackrest >/dev/null 2>&1; } ||
    die "cannot install pgbackrest"
fi
for need in dd cmp du awk flock xargs zstd runuser; do
  command -v "$need" >/dev/null || die "'$need' is required"
done
GARAGE_BIN=
if [ "$GARAGE" != 0 ]; then
  GARAGE_BIN=$(command -v garage || true)
  [ -n "$GARAGE_BIN" ] || { [ -x "$HOME/.cargo/bin/garage" ] && GARAGE_BIN=$HOME/.cargo/bin/garage; } || true
fi
# Nothing from the caller's dumpvault settings may leak in (DUMPVAULT_PASSWORD would win over
# the machine key's password file).
for v in $(compgen -e | grep '^DUMPVAULT_' || true); do [ "$v" = DUMPVAULT_BIN ] || unset "$v"; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dumpvault-walbench.XXXXXX")
chmod 755 "$WORK"
export DUMPVAULT_CACHE_DIR=$WORK/cache
RES=$WORK/results # lines: key value
LOG=$WORK/log
: >"$RES"; : >"$LOG"
FAILS=0
CLUSTERS=()
GARAGE_PID=
SPOOLS=() # lock files of background workers to wait for before deleting their directories

cleanup() {
  local c s
  set +e
  for s in "${SPOOLS[@]}"; do [ -e "$s" ] && flock -w 20 "$s" true; done
  for c in "${CLUSTERS[@]}"; do
    [ -f "$c/postmaster.pid" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$c" -m immediate stop >/dev/null 2>&1
  done
  [ -n "$GARAGE_PID" ] && kill "$GARAGE_PID" 2>/dev/null && wait "$GARAGE_PID" 2>/dev/null
  if [ "${KEEP_WORK:-0}" = 1 ]; then say "== work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'say "wal.sh: line $LINENO failed: $BASH_COMMAND (log: $LOG)"' ERR
trap 'say "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- helpers
rec() { printf '%s %s\n' "$1" "$2" >>"$RES"; }
fail() {
  FAILS=$((FAILS + 1))
  say "   FAILED: $*"
  tail -n 4 "$LOG" | sed 's/^/   | /' >&2
  rec FAIL 1
}
# children_cpu: CPU_US = user + sys time of every child this shell has reaped (bash `times`,
# run in this shell, so no fork). Threads count; detached background workers do not.
tm_us() { local m=${1%%m*} s=${1#*m}; s=${s%s}; TM=$((m * 60000000 + 10#${s%.*} * 1000000 + 10#${s#*.} * 1000)); }
children_cpu() {
  local l u sy
  times >"$WORK/times"
  { read -r l; read -r u sy; } <"$WORK/times"
  tm_us "$u"; CPU_US=$TM; tm_us "$sy"; CPU_US=$((CPU_US + TM))
}
# t_run CMD...: run CMD (output to $LOG); T_US / T_MS: its wall time, C_MS: its CPU time.
t_run() {
  local t0 t1 rc=0 c0
  children_cpu; c0=$CPU_US
  t0=$EPOCHREALTIME
  "$@" >>"$LOG" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  children_cpu
  T_US=$((${t1/./} - ${t0/./}))
  printf -v T_MS '%d.%03d' $((T_US / 1000)) $((T_US % 1000))
  printf -v C_MS '%d.%03d' $(((CPU_US - c0) / 1000)) $(((CPU_US - c0) % 1000))
  [ "$rc" = 0 ] || { fail "$* (exit $rc)"; return 1; }
}
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
vals() { awk -v k="$1" '$1 == k { print $2 }' "$RES"; }
# pstats: "p50 p90 min max n" of the numbers on stdin (p90 nearest-rank); stats KEY: of KEY.
pstats() {
  sort -g | awk '
    { v[NR] = $1 }
    END {
      n = NR; if (n == 0) { print "- - - - 0"; exit }
      m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      i = int(0.9 * n); if (i < 0.9 * n) i++; if (i < 1) i = 1
      printf "%.1f %.1f %.1f %.1f %d\n", m, v[i], v[1], v[n], n }'
}
stats() { vals "$1" | pstats; }
med() { # median of KEY, plain number or "-"
  vals "$1" | sort -g | awk '
    { v[NR] = $1 } END { n = NR; if (n == 0) { print "-"; exit }
      m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      if (m == int(m)) printf "%.0f\n", m; else printf "%.1f\n", m }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
mb() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.2f", b / 1e6 }'; }
mbps() { awk -v b="$1" -v us="$2" 'BEGIN { printf "%.1f", b / (us > 0 ? us : 1) }'; } # bytes/us = MB/s
sizeb() { du -sb "$1" | cut -f1; }
fileb() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; } # regular files only
# wait_lock FILE: wait (at most 30 s) until no background worker holds FILE (flock).
wait_lock() { if [ -e "$1" ]; then flock -w 30 "$1" true || say "   a worker still holds $1"; fi; }

as_pg() { runuser -u postgres -- "$@"; }
SOCK=$WORK/sock
mkdir -p "$SOCK"; chown postgres "$SOCK"
psqlc() { "$PGBIN/psql" -h "$SOCK" -p "$1" -U postgres -Atq -c "$2"; }
# start_cluster DIR PORT SEGSIZE_MB ARCHIVE_DIR
start_cluster() {
  local d=$1 port=$2 seg=$3 arch=$4
  mkdir -p "$d" "$arch"; chown postgres "$d" "$arch"
  as_pg "$PGBIN/initdb" -D "$d" -U postgres --auth=trust --wal-segsize="$seg" >>"$LOG" 2>&1
  cat >>"$d/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $port
wal_level = replica
archive_mode = on
archive_command = 'test ! -f $arch/%f && cp %p $arch/%f'
EOF
  CLUSTERS+=("$d")
  as_pg "$PGBIN/pg_ctl" -D "$d" -l "$d/server.log" -w start >>"$LOG" 2>&1
}
stop_cluster() { as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w stop >>"$LOG" 2>&1; }
# archiver_idle PORT: wait until no .ready file is left.
archiver_idle() {
  local i
  for i in $(seq 600); do
    [ "$(psqlc "$1" "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'")" = 0 ] && return 0
    sleep 0.1
  done
  die "the archiver of the cluster on port $1 is stuck (see $LOG)"
}
segs_in() { find "$1" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' | sort; }

# dumpvault: DVREPO and DVSECRET select the repository and its machine key.
dv() { DUMPVAULT_REPO=$DVREPO DUMPVAULT_PASSWORD_FILE=$DVSECRET "$BIN" --quiet "$@"; }
dv_new() { # dv_new REPO SECRET: init (Argon2id at its floor, untimed) and add a machine key
  DVREPO=$1 DVSECRET=$2
  DUMPVAULT_PASSWORD=bench-init "$BIN" --quiet --repo "$1" init --kdf-memory 19456 --kdf-iterations 2 >>"$LOG" 2>&1
  DUMPVAULT_PASSWORD=bench-init "$BIN" --quiet --repo "$1" key add-machine --secret-file "$2" >>"$LOG" 2>&1
}
# pgBackRest: PGBRCONF selects the configuration (repository, async, pg1-path).
pgbr() { pgbackrest --config="$PGBRCONF" --stanza=bench "$@"; }
pgbr_new() { # pgbr_new NAME REPO PG1_PATH ASYNC(y|n) [create]: write NAME.conf; stanza-create
  local c=$WORK/pgbr/$1.conf
  mkdir -p "$WORK/pgbr"
  cat >"$c" <<EOF
[global]
repo1-path=$2
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=walbench-cipher-passphrase-0123456789
compress-type=zst
compress-level=3
archive-async=$4
process-max=$PGBR_PROCESS_MAX
spool-path=$WORK/pgbr/$1.spool
lock-path=$WORK/pgbr/$1.lock
log-path=$WORK/pgbr/$1.log
log-level-file=off
log-level-console=warn
[bench]
pg1-path=$3
EOF
  PGBRCONF=$c
  if [ "${5:-create}" = create ]; then
    pgbr --no-online stanza-create >>"$LOG" 2>&1 || die "pgbackrest stanza-create failed (see $LOG)"
  fi
}
# fake_pgdata DIR [SEGS...]: global/pg_control and PG_VERSION of the 16 MiB cluster, and
# pg_wal with hard links to the segments, each with archive_status/NAME.ready.
fake_pgdata() {
  local d=$1 s
  shift
  mkdir -p "$d/global" "$d/pg_wal/archive_status"
  cp "$WORK/pgctl/pg_control" "$d/global/"; cp "$WORK/pgctl/PG_VERSION" "$d/"
  for s in "$@"; do ln "$SEGDIR/$s" "$d/pg_wal/$s"; : >"$d/pg_wal/archive_status/$s.ready"; done
}

VERSION_DV=$("$BIN" --version 2>/dev/null | head -n 1)
VERSION_BR=$(pgbackrest version | head -n 1)
VERSION_PG=$("$PGBIN/postgres" --version)
say "== $VERSION_DV ($BIN); $VERSION_BR; $VERSION_PG"
say "== NSEG=$NSEG RUNS=$RUNS PGBENCH_SCALE=$PGBENCH_SCALE SCALE_N=$SCALE_N; work dir $WORK"
T_START=$EPOCHREALTIME LOAD_START=$(loadavg)
say "== load average at start: $LOAD_START (other processes compete for the $(nproc) cores)"

# ---------------------------------------------------------------- 1. real WAL from pgbench
PORT16=$((20000 + RANDOM % 20000))
PG16=$WORK/pg16 ARCH16=$WORK/arch16 SEGDIR=$WORK/segs
say "== 1. PostgreSQL cluster (16 MiB segments) on socket port $PORT16: pgbench -i -s $PGBENCH_SCALE"
start_cluster "$PG16" "$PORT16" 16 "$ARCH16"
"$PGBIN/pgbench" -h "$SOCK" -p "$PORT16" -U postgres -i -q -s "$PGBENCH_SCALE" postgres >>"$LOG" 2>&1
psqlc "$PORT16" "checkpoint" >/dev/null
psqlc "$PORT16" "select pg_switch_wal()" >/dev/null
archiver_idle "$PORT16"
N0=$(segs_in "$ARCH16" | wc -l)
say "   $N0 segments archived by pgbench -i; pgbench transactions until $NSEG more are archived"
for i in $(seq 120); do
  "$PGBIN/pgbench" -h "$SOCK" -p "$PORT16" -U postgres -n -c 4 -j 2 -T 5 postgres >>"$LOG" 2>&1
  [ "$(segs_in "$ARCH16" | wc -l)" -ge $((N0 + NSEG)) ] && break
  [ "$i" = 120 ] && die "pgbench produced too few segments in 10 minutes"
done
mkdir -p "$SEGDIR" "$WORK/pgctl"
mapfile -t SEGS < <(segs_in "$ARCH16" | tail -n +$((N0 + 1)) | head -n "$NSEG")
for s in "${SEGS[@]}"; do cp "$ARCH16/$s" "$SEGDIR/$s"; done
cp "$PG16/global/pg_control" "$PG16/PG_VERSION" "$WORK/pgctl/"
stop_cluster "$PG16"
RAW=$(cat "${SEGS[@]/#/$SEGDIR/}" | wc -c)
ZSTD3=0
for s in "${SEGS[@]}"; do ZSTD3=$((ZSTD3 + $(zstd -q -3 -c "$SEGDIR/$s" | wc -c))); done
NEXTSEG=$(segs_in "$ARCH16" | tail -n +$((N0 + NSEG + 1)) | head -n 1)
[ -n "$NEXTSEG" ] || NEXTSEG=000000010000000000000FFF # fetched to check "not archived" (exit 1)
say "   input: ${SEGS[0]} .. ${SEGS[$((NSEG - 1))]}, $(mb "$RAW") MB, zstd -3 per file $(mb "$ZSTD3") MB"

# ---------------------------------------------------------------- 2-4. per run
push_one() { # push_one TOOL SEG
  case $1 in
    cp) t_run dd if="$SEGDIR/$2" of="$CPDIR/$2" bs=1M conv=fsync status=none ;;
    dumpvault) DVREPO=$DVLAT DVSECRET=$DVLATS t_run dv wal push "$SEGDIR/$2" ;;
    pgbackrest) PGBRCONF=$WORK/pgbr/lat$R.conf t_run pgbr archive-push "$SEGDIR/$2" ;;
  esac
}

# KP prefixes the result keys ("" local, "s3." on Garage); REPOROOT is where fresh dumpvault
# repositories go (a directory, or s3://bucket).
KP= REPOROOT=$WORK
dv_files() { # number of archived files, as wal status lists them
  local out rc=0
  out=$(dv wal status 2>>"$LOG") || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 7 ] || { echo "?"; return 0; }
  printf '%s\n' "$out" | awk '/^cluster / { print $3; exit }'
}

sustained() { # sustained TOOL: push every segment back to back into a fresh repository
  local t=$1 d=$WORK/${KP}sus-$1-$R total=0 s ok=1 n
  case $t in
    dv-sync) dv_new "$REPOROOT/sus-$t-$R" "$d.secret" ;;
    dv-async) dv_new "$REPOROOT/sus-$t-$R" "$d.secret"; fake_pgdata "$d" "${SEGS[@]}"
      SPOOLS+=("$d/pg_wal/dumpvault-push/.lock") ;;
    br-sync) pgbr_new "sus-$t-$R" "$d.repo" "$WORK/pgctl-data" n ;;
    br-async) fake_pgdata "$d" "${SEGS[@]}"; pgbr_new "sus-$t-$R" "$d.repo" "$d" y ;;
  esac
  sync
  for s in "${SEGS[@]}"; do
    case $t in
      dv-sync) t_run dv wal push "$SEGDIR/$s" || { ok=0; break; } ;;
      dv-async) t_run dv wal push --async --parallel "$DV_PARALLEL" "$d/pg_wal/$s" || { ok=0; break; } ;;
      br-sync) t_run pgbr archive-push "$SEGDIR/$s" || { ok=0; break; } ;;
      br-async) t_run pgbr archive-push "$d/pg_wal/$s" || { ok=0; break; } ;;
    esac
    # PostgreSQL renames .ready to .done once the archive command returned 0.
    if [ -e "$d/pg_wal/archive_status/$s.ready" ]; then
      mv "$d/pg_wal/archive_status/$s.ready" "$d/pg_wal/archive_status/$s.done"
    fi
    total=$((total + T_US))
    rec "${KP}sus.lat.$t" "$T_MS"; rec "${KP}sus.cpu.$t" "$C_MS"
  done
  # Let background workers finish (untimed), then check that every segment is stored.
  case $t in
    dv-async) wait_lock "$d/pg_wal/dumpvault-push/.lock" ;;
    br-async) wait_lock "$WORK/pgbr/sus-$t-$R.lock/bench-archive.lock" ;;
  esac
  [ "$ok" = 1 ] || return 0
  case $t in
    dv-*) n=$(dv_files) ;;
    br-*) n=$(find "$d.repo/archive" -type f -name '0*.zst' | wc -l) ;;
  esac
  if [ "$n" != "$NSEG" ]; then fail "$t run $R: $n of $NSEG segments in the repository"; return 0; fi
  rec "${KP}sus.us.$t" "$total"
  rec "${KP}sus.mbps.$t" "$(mbps "$RAW" "$total")"
  rec "${KP}sus.sps.$t" "$(awk -v n="$NSEG" -v us="$total" 'BEGIN { printf "%.1f", n * 1e6 / us }')"
  say "   $(printf '%-9s' "$t") back to back: $(printf '%6d' "$((total / 1000))") ms for $NSEG, $(mbps "$RAW" "$total") MB/s"
  rm -rf "$d" "$d.repo" "$d.secret"
}

# fetch_run TOOL: serial fetches of every segment into pg_wal/RECOVERYXLOG, each checked with
# cmp; TOOL-gap sleeps FETCH_GAP s after each (untimed), as replaying the segment would.
fetch_run() {
  local name=$1 t=${1%-gap} d=$WORK/${KP}rec-$1-$R total=0 s ok=1 rc=0 gap=0
  [ "$t" = "$name" ] || gap=$FETCH_GAP
  mkdir -p "$d/pg_wal"
  case $t in
    br-get) pgbr_new "get-$R" "$WORK/br-lat$R.repo" "$WORK/pgctl-data" n nocreate ;;
    br-get-async) mkdir -p "$d/global"; cp "$WORK/pgctl/pg_control" "$d/global/"; cp "$WORK/pgctl/PG_VERSION" "$d/"
      pgbr_new "geta-$name-$R" "$WORK/br-lat$R.repo" "$d" y nocreate ;;
    dv-prefetch8) SPOOLS+=("$d/pg_wal/dumpvault-prefetch/.lock") ;;
  esac
  DVREPO=$DVLAT DVSECRET=$DVLATS
  sync
  for s in "${SEGS[@]}"; do
    case $t in
      dv-prefetch0) t_run dv wal fetch --prefetch 0 "$s" "$d/pg_wal/RECOVERYXLOG" || { ok=0; break; } ;;
      dv-prefetch8) t_run dv wal fetch "$s" "$d/pg_wal/RECOVERYXLOG" || { ok=0; break; } ;;
      br-get | br-get-async) t_run pgbr archive-get "$s" "$d/pg_wal/RECOVERYXLOG" || { ok=0; break; } ;;
    esac
    total=$((total + T_US))
    rec "${KP}fetch.lat.$name" "$T_MS"; rec "${KP}fetch.cpu.$name" "$C_MS"
    cmp -s "$d/pg_wal/RECOVERYXLOG" "$SEGDIR/$s" || { fail "$name run $R: $s fetched with other bytes"; ok=0; break; }
    rm -f "$d/pg_wal/RECOVERYXLOG"
    [ "$gap" = 0 ] || sleep "$gap"
  done
  if [ "$ok" = 1 ]; then
    # The segment after the last is not archived: both tools must answer exit 1 ("not found").
    case $t in
      dv-*) dv wal fetch --prefetch 0 "$NEXTSEG" "$d/pg_wal/RECOVERYXLOG" >>"$LOG" 2>&1 || rc=$? ;;
      br-*) pgbr archive-get "$NEXTSEG" "$d/pg_wal/RECOVERYXLOG" >>"$LOG" 2>&1 || rc=$? ;;
    esac
    [ "$rc" = 1 ] || fail "$name run $R: fetch of the unarchived $NEXTSEG exited $rc, not 1"
    rec "${KP}fetch.us.$name" "$total"
    rec "${KP}fetch.mbps.$name" "$(mbps "$RAW" "$total")"
    say "   $(printf '%-16s' "$name") fetch: $(printf '%6d' "$((total / 1000))") ms for $NSEG, $(mbps "$RAW" "$total") MB/s (cmp ok)"
  fi
  case $t in
    dv-prefetch8) wait_lock "$d/pg_wal/dumpvault-prefetch/.lock" ;;
    br-get-async) wait_lock "$WORK/pgbr/geta-$name-$R.lock/bench-archive.lock" ;;
  esac
  rm -rf "$d"
}

# pg1-path for pgBackRest's synchronous commands: pg_control only (the cluster is stopped).
mkdir -p "$WORK/pgctl-data/global"
cp "$WORK/pgctl/pg_control" "$WORK/pgctl-data/global/"; cp "$WORK/pgctl/PG_VERSION" "$WORK/pgctl-data/"

PUSHERS=(cp dumpvault pgbackrest)
SUST=(dv-sync dv-async br-sync br-async)
FETCHERS=(dv-prefetch0 dv-prefetch8 dv-prefetch8-gap br-get br-get-async br-get-async-gap)
for R in $(seq "$RUNS"); do
  say "== run $R/$RUNS: push latency, $NSEG segments, tools interleaved"
  CPDIR=$WORK/cp$R DVLAT=$WORK/dv-lat$R.repo DVLATS=$WORK/dv-lat$R.secret
  mkdir -p "$CPDIR"
  dv_new "$DVLAT" "$DVLATS"
  pgbr_new "lat$R" "$WORK/br-lat$R.repo" "$WORK/pgctl-data" n
  EMPTY_DV=$(sizeb "$DVLAT") EMPTY_BR=$(sizeb "$WORK/br-lat$R.repo")
  sync
  for i in "${!SEGS[@]}"; do
    for k in 0 1 2; do
      tool=${PUSHERS[$(((i + R + k) % 3))]}
      if push_one "$tool" "${SEGS[$i]}"; then rec "lat.$tool" "$T_MS"; rec "cpu.$tool" "$C_MS"; fi
    done
  done
  for tool in "${PUSHERS[@]}"; do
    read -r p50 p90 mn mx n < <(vals "lat.$tool" | tail -n "$NSEG" | pstats)
    say "   $(printf '%-10s' "$tool") p50 $p50 ms  p90 $p90 ms  max $mx ms  CPU p50 $(vals "cpu.$tool" | tail -n "$NSEG" | pstats | cut -d' ' -f1) ms"
  done
  rec files.dumpvault "$(fileb "$DVLAT")"
  rec files.pgbackrest "$(fileb "$WORK/br-lat$R.repo")"
  rec size.dumpvault "$(sizeb "$DVLAT")"
  rec size.pgbackrest "$(sizeb "$WORK/br-lat$R.repo")"
  rec sizewal.dumpvault "$(fileb "$DVLAT/wal")"
  rec sizewal.pgbackrest "$(fileb "$WORK/br-lat$R.repo/archive/bench/15-1")"
  rec sizeempty.dumpvault "$EMPTY_DV"
  rec sizeempty.pgbackrest "$EMPTY_BR"
  say "   stored: dumpvault $(mb "$(sizeb "$DVLAT")") MB, pgbackrest $(mb "$(sizeb "$WORK/br-lat$R.repo")") MB (du -sb of the repositories)"
  rm -rf "$CPDIR"

  say "== run $R/$RUNS: fetch (recovery-like, serial)"
  for k in "${!FETCHERS[@]}"; do fetch_run "${FETCHERS[$(((R + k) % ${#FETCHERS[@]}))]}"; done

  say "== run $R/$RUNS: sustained pushes"
  for k in 0 1 2 3; do sustained "${SUST[$(((R + k) % 4))]}"; done
  rm -rf "$DVLAT" "$DVLATS" "$WORK/br-lat$R.repo"
done

# ---------------------------------------------------------------- 5. open cost at scale
SCALE_DONE=0
if [ "$SCALE_N" -gt 0 ]; then
  PORT1=$((PORT16 + 1)) PG1=$WORK/pg1 ARCH1=$WORK/arch1 SDIR=$WORK/scale-segs
  say "== 5. open cost at scale: cluster with 1 MiB segments, base backup, then $SCALE_N archived files"
  start_cluster "$PG1" "$PORT1" 1 "$ARCH1"
  dv_new "$WORK/scale.repo" "$WORK/scale.secret"
  psqlc "$PORT1" "create table t as select g, md5(g::text) as h from generate_series(1, 20000) g" >/dev/null
  PGHOST=$SOCK PGPORT=$PORT1 PGUSER=postgres t_run dv backup --name pg-base -- \
    "$PGBIN/pg_basebackup" -D - -Ft -X fetch -c fast
  say "   base backup snapshot: $T_MS ms"
  psqlc "$PORT1" "select pg_switch_wal()" >/dev/null
  archiver_idle "$PORT1"
  stop_cluster "$PG1"
  mkdir -p "$SDIR"
  # The real files (segments and the .backup file), in archive order.
  mapfile -t REAL < <(find "$ARCH1" -maxdepth 1 -type f -printf '%f\n' | sort)
  for f in "${REAL[@]}"; do cp "$ARCH1/$f" "$SDIR/$f"; done
  mapfile -t REALSEGS < <(segs_in "$SDIR")
  # Template for the copies: the real segment whose zstd -3 size is the median (typical content).
  TEMPLATE=$(for s in "${REALSEGS[@]}"; do echo "$(zstd -q -3 -c "$SDIR/$s" | wc -c) $s"; done | sort -n |
    awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }')
  LASTNO=$((16#${REALSEGS[-1]:8:8} * 4096 + 16#${REALSEGS[-1]:16:8}))
  # synth FROM COUNT: hard links to the template under the next COUNT names; prints the paths
  synth() {
    local i n no
    for ((i = 0; i < $2; i++)); do
      no=$(($1 + i))
      printf -v n '00000001%08X%08X' $((no / 4096)) $((no % 4096))
      ln -f "$SDIR/$TEMPLATE" "$SDIR/syn/$n"
      echo "$SDIR/syn/$n"
    done
  }
  mkdir -p "$SDIR/syn"
  DVREPO=$WORK/scale.repo DVSECRET=$WORK/scale.secret
  NEXT=$((LASTNO + 1))
  # The real files first (all of them, so the chain has no gap), then copies up to 10 files.
  PUSHED=0
  for f in "${REAL[@]}"; do t_run dv wal push "$SDIR/$f" || die "wal push of $f failed"; PUSHED=$((PUSHED + 1)); done
  say "   ${#REAL[@]} real files archived (${#REALSEGS[@]} segments), copies of $TEMPLATE follow"
  if [ "$PUSHED" -lt 10 ]; then
    for p in $(synth "$NEXT" $((10 - PUSHED))); do t_run dv wal push "$p"; done
    NEXT=$((NEXT + 10 - PUSHED)); PUSHED=10
  fi
  # measure_at LABEL: snapshots (5x), wal status (3x), wal push of 5 new files (timed each)
  measure_at() {
    local i rc p
    for i in 1 2 3 4 5; do t_run dv snapshots && rec "scale.snap.$1" "$T_MS"; done
    for i in 1 2 3; do
      rc=0; t0=$EPOCHREALTIME; dv wal status >"$WORK/status.$1" 2>>"$LOG" || rc=$?; t1=$EPOCHREALTIME
      if [ "$rc" = 0 ] || [ "$rc" = 7 ]; then rec "scale.status.$1" "$(((${t1/./} - ${t0/./}) / 1000))"; else fail "wal status exited $rc"; fi
      [ "$rc" = 0 ] || say "   wal status exit $rc: $(grep -m1 PROBLEM "$WORK/status.$1" || true)"
    done
    rec "scale.files.$1" "$(find "$DVREPO/wal/main" -maxdepth 1 -type f ! -name '.*' | wc -l)"
    for p in $(synth "$NEXT" 5); do sync; t_run dv wal push "$p" && rec "scale.push.$1" "$T_MS"; done
    NEXT=$((NEXT + 5)); PUSHED=$((PUSHED + 5))
    say "   at $1 files: snapshots $(med "scale.snap.$1") ms, wal status $(med "scale.status.$1") ms, wal push $(med "scale.push.$1") ms (medians)"
  }
  measure_at 10
  FILL=$((SCALE_N - PUSHED))
  if [ "$FILL" -gt 0 ]; then
    say "   filling: $FILL pushes with xargs -P$SCALE_P (one process per file)"
    synth "$NEXT" "$FILL" >"$WORK/fill.list"
    NEXT=$((NEXT + FILL))
    t0=$EPOCHREALTIME
    if (export DUMPVAULT_REPO=$DVREPO DUMPVAULT_PASSWORD_FILE=$DVSECRET
        xargs -P "$SCALE_P" -n 1 "$BIN" --quiet wal push <"$WORK/fill.list" >>"$LOG" 2>&1); then
      t1=$EPOCHREALTIME
      us=$((${t1/./} - ${t0/./}))
      rec scale.fill.sps "$(awk -v n="$FILL" -v us="$us" 'BEGIN { printf "%.1f", n * 1e6 / us }')"
      rec scale.fill.mbps "$(mbps $((FILL * 1048576)) "$us")"
      say "   filled in $((us / 1000000)) s: $(med scale.fill.sps) pushes/s, $(med scale.fill.mbps) MB/s"
      PUSHED=$((PUSHED + FILL))
      rm -rf "$SDIR/syn"; mkdir -p "$SDIR/syn"
      measure_at "$SCALE_N"
      rec scale.size "$(sizeb "$DVREPO")"
      SCALE_DONE=1
    else
      fail "filling the scale repository (xargs wal push)"
    fi
  fi
fi

# ---------------------------------------------------------------- 6. Garage (S3)
GARAGE_DONE=0
if [ -n "$GARAGE_BIN" ] && [ -x "$GARAGE_BIN" ]; then
  GP=$((PORT16 + 10)) GD=$WORK/garage
  say "== 6. Garage S3 ($GARAGE_BIN) on 127.0.0.1:$GP"
  mkdir -p "$GD"
  cat >"$GD/garage.toml" <<EOF
metadata_dir = "$GD/meta"
data_dir = "$GD/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$((GP + 1))"
rpc_public_addr = "127.0.0.1:$((GP + 1))"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GP"
root_domain = ".s3.garage.localhost"
EOF
  GC=("$GARAGE_BIN" -c "$GD/garage.toml")
  "${GC[@]}" server >"$GD/server.log" 2>&1 </dev/null &
  GARAGE_PID=$!
  for _ in $(seq 100); do "${GC[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done
  NODE=$("${GC[@]}" node id -q | cut -d@ -f1)
  "${GC[@]}" layout assign -z dc1 -c 10G "$NODE" >>"$LOG" 2>&1
  "${GC[@]}" layout apply --version 1 >>"$LOG" 2>&1
  "${GC[@]}" key create walbench >"$GD/key.txt"
  "${GC[@]}" bucket create walbench >>"$LOG" 2>&1
  "${GC[@]}" bucket allow --read --write --owner walbench --key walbench >>"$LOG" 2>&1
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION=garage DUMPVAULT_S3_ENDPOINT=http://127.0.0.1:$GP
  AWS_ACCESS_KEY_ID=$(awk '/Key ID/ { print $3 }' "$GD/key.txt")
  AWS_SECRET_ACCESS_KEY=$(awk '/Secret key/ { print $3 }' "$GD/key.txt")
  KP=s3. REPOROOT=s3://walbench
  for R in $(seq "$RUNS"); do
    say "== Garage run $R/$RUNS: push latency (with dd conv=fsync interleaved), fetch, sustained"
    DVLAT=s3://walbench/lat$R DVLATS=$WORK/s3-lat$R.secret CPDIR=$WORK/s3cp$R
    dv_new "$DVLAT" "$DVLATS"
    mkdir -p "$CPDIR"
    for i in "${!SEGS[@]}"; do
      for k in 0 1; do
        if (((i + R + k) % 2)); then push_one dumpvault "${SEGS[$i]}" && rec s3.lat.dumpvault "$T_MS"
        else push_one cp "${SEGS[$i]}" && rec s3.lat.cp "$T_MS"; fi
      done
    done
    rm -rf "$CPDIR"
    say "   push p50 $(vals s3.lat.dumpvault | tail -n "$NSEG" | pstats | cut -d' ' -f1) ms"
    for k in 0 1 2; do fetch_run "${FETCHERS[$(((R + k) % 3))]}"; done
    for k in 0 1; do sustained "${SUST[$(((R + k) % 2))]}"; done
  done
  KP= REPOROOT=$WORK
  GARAGE_DONE=1
else
  say "== 6. Garage: not installed (GARAGE=$GARAGE): skipped"
fi

# ---------------------------------------------------------------- table
T_END=$EPOCHREALTIME LOAD_END=$(loadavg)
{
  echo "WAL archiving benchmark: $NSEG pgbench segments of 16 MiB ($(mb "$RAW") MB), $RUNS runs, tools interleaved"
  echo "$VERSION_DV | $VERSION_BR (zst level 3, aes-256-cbc) | $VERSION_PG | $(nproc) cores"
  echo
  printf '%-46s %8s %8s %8s %8s %6s %8s\n' "push latency, fresh process per segment (ms)" p50 p90 min max n "CPU p50"
  for t in cp dumpvault pgbackrest; do
    case $t in cp) l="dd conv=fsync (floor)" ;; dumpvault) l="dumpvault --quiet wal push (machine key)" ;; pgbackrest) l="pgbackrest archive-push (archive-async=n)" ;; esac
    read -r p50 p90 mn mx n < <(stats "lat.$t")
    printf '  %-44s %8s %8s %8s %8s %6s %8s\n' "$l" "$p50" "$p90" "$mn" "$mx" "$n" "$(stats "cpu.$t" | cut -d' ' -f1)"
  done
  DVP50=$(stats lat.dumpvault | cut -d' ' -f1) BRP50=$(stats lat.pgbackrest | cut -d' ' -f1)
  printf '  %-44s %8s   (target p50 <= 70 ms: %s)\n' "p50 dumpvault / pgbackrest" "$(ratio "$DVP50" "$BRP50")" \
    "$(awk -v a="$DVP50" 'BEGIN { print (a != "-" && a <= 70) ? "met" : "NOT met" }')"
  echo
  printf '%-46s %12s %12s %12s\n' "stored for the $NSEG segments (bytes, median)" "du -sb repo" "repo files" "WAL objects"
  printf '  %-44s %12s %12s %12s\n' "raw segments" "$RAW" "$RAW" "$RAW"
  printf '  %-44s %12s %12s %12s\n' "zstd -3 per file (reference)" "-" "-" "$ZSTD3"
  SDV=$(med size.dumpvault) SBR=$(med size.pgbackrest) WDV=$(med sizewal.dumpvault) WBR=$(med sizewal.pgbackrest)
  FDV=$(med files.dumpvault) FBR=$(med files.pgbackrest)
  printf '  %-44s %12s %12s %12s\n' "dumpvault (WAL objects: wal/)" "$SDV" "$FDV" "$WDV"
  printf '  %-44s %12s %12s %12s\n' "pgbackrest (WAL objects: archive/bench/15-1)" "$SBR" "$FBR" "$WBR"
  printf '  %-44s %12s %12s %12s   (target <= 1: %s)\n' "dumpvault / pgbackrest" "$(ratio "$SDV" "$SBR")" "$(ratio "$FDV" "$FBR")" "$(ratio "$WDV" "$WBR")" \
    "$(awk -v a="$FDV" -v b="$FBR" 'BEGIN { print (a + 0 <= b + 0) ? "met" : "NOT met" }')"
  printf '  %-44s %12s %12s\n' "empty repository, du -sb (dumpvault; pgbackrest)" "$(med sizeempty.dumpvault)" "$(med sizeempty.pgbackrest)"
  echo
  printf '%-46s %10s %8s %10s %8s\n' "sustained, back to back (median of runs)" "seg/s" "MB/s" "p50 ms" "CPU p50"
  for t in dv-sync dv-async br-sync br-async; do
    case $t in
      dv-sync) l="dumpvault wal push" ;; dv-async) l="dumpvault wal push --async --parallel $DV_PARALLEL" ;;
      br-sync) l="pgbackrest archive-push" ;; br-async) l="pgbackrest archive-async=y process-max=$PGBR_PROCESS_MAX" ;;
    esac
    printf '  %-44s %10s %8s %10s %8s\n' "$l" "$(med "sus.sps.$t")" "$(med "sus.mbps.$t")" "$(stats "sus.lat.$t" | cut -d' ' -f1)" "$(stats "sus.cpu.$t" | cut -d' ' -f1)"
  done
  printf '  %-44s %10s %8s\n' "dumpvault / pgbackrest, sync" "" "$(ratio "$(med sus.mbps.dv-sync)" "$(med sus.mbps.br-sync)")"
  printf '  %-44s %10s %8s\n' "dumpvault / pgbackrest, async" "" "$(ratio "$(med sus.mbps.dv-async)" "$(med sus.mbps.br-async)")"
  echo
  printf '%-46s %8s %10s %8s\n' "fetch, serial into pg_wal/RECOVERYXLOG (cmp ok)" "MB/s" "p50 ms" "CPU p50"
  for t in "${FETCHERS[@]}"; do
    case $t in
      dv-prefetch0) l="dumpvault wal fetch --prefetch 0" ;; dv-prefetch8) l="dumpvault wal fetch (--prefetch 8)" ;;
      dv-prefetch8-gap) l="  same, ${FETCH_GAP} s replay gap between fetches" ;;
      br-get) l="pgbackrest archive-get" ;; br-get-async) l="pgbackrest archive-get, archive-async=y" ;;
      br-get-async-gap) l="  same, ${FETCH_GAP} s replay gap between fetches" ;;
    esac
    printf '  %-44s %8s %10s %8s\n' "$l" "$(med "fetch.mbps.$t")" "$(stats "fetch.lat.$t" | cut -d' ' -f1)" "$(stats "fetch.cpu.$t" | cut -d' ' -f1)"
  done
  printf '  %-44s %8s\n' "dumpvault / pgbackrest, sync" "$(ratio "$(med fetch.mbps.dv-prefetch0)" "$(med fetch.mbps.br-get)")"
  printf '  %-44s %8s\n' "dumpvault / pgbackrest, prefetch / async" "$(ratio "$(med fetch.mbps.dv-prefetch8)" "$(med fetch.mbps.br-get-async)")"
  printf '  %-44s %8s\n' "  same, with the replay gap" "$(ratio "$(med fetch.mbps.dv-prefetch8-gap)" "$(med fetch.mbps.br-get-async-gap)")"
  if [ "$SCALE_N" -gt 0 ]; then
    echo
    printf '%-46s %10s %10s\n' "open cost at scale, 1 MiB segments (median ms)" "10 files" "$SCALE_N files"
    printf '  %-44s %10s %10s\n' "archived files when measured" "$(med scale.files.10)" "$(med "scale.files.$SCALE_N")"
    printf '  %-44s %10s %10s\n' "dumpvault snapshots" "$(med scale.snap.10)" "$(med "scale.snap.$SCALE_N")"
    printf '  %-44s %10s %10s\n' "dumpvault wal status" "$(med scale.status.10)" "$(med "scale.status.$SCALE_N")"
    printf '  %-44s %10s %10s\n' "dumpvault wal push (1 MiB segment)" "$(med scale.push.10)" "$(med "scale.push.$SCALE_N")"
    printf '  %-44s %10s\n' "fill rate, xargs -P$SCALE_P (pushes/s; MB/s)" "$(med scale.fill.sps); $(med scale.fill.mbps)"
    printf '  %-44s %10s\n' "repository size at $SCALE_N (bytes)" "$(med scale.size)"
  fi
  if [ "$GARAGE_DONE" = 1 ]; then
    echo
    printf '%-46s %8s %8s %8s %8s %6s\n' "Garage S3 on loopback, dumpvault only (ms)" p50 p90 min max n
    read -r p50 p90 mn mx n < <(stats s3.lat.dumpvault)
    printf '  %-44s %8s %8s %8s %8s %6s\n' "wal push latency" "$p50" "$p90" "$mn" "$mx" "$n"
    read -r p50 p90 mn mx n < <(stats s3.lat.cp)
    printf '  %-44s %8s %8s %8s %8s %6s\n' "dd conv=fsync, interleaved (floor)" "$p50" "$p90" "$mn" "$mx" "$n"
    printf '%-46s %10s %8s\n' "" "seg/s" "MB/s"
    printf '  %-44s %10s %8s\n' "sustained wal push" "$(med s3.sus.sps.dv-sync)" "$(med s3.sus.mbps.dv-sync)"
    printf '  %-44s %10s %8s\n' "sustained wal push --async --parallel $DV_PARALLEL" "$(med s3.sus.sps.dv-async)" "$(med s3.sus.mbps.dv-async)"
    printf '  %-44s %10s %8s\n' "wal fetch --prefetch 0" "" "$(med s3.fetch.mbps.dv-prefetch0)"
    printf '  %-44s %10s %8s\n' "wal fetch (--prefetch 8)" "" "$(med s3.fetch.mbps.dv-prefetch8)"
    printf '  %-44s %10s %8s\n' "  same, ${FETCH_GAP} s replay gap between fetches" "" "$(med s3.fetch.mbps.dv-prefetch8-gap)"
  else
    echo; echo "Garage S3: skipped (garage not installed)"
  fi
  echo
  echo "ratios are dumpvault / peer: below 1 is better for latency and bytes, above 1 for MB/s"
  echo "CPU = user+sys of the foreground process and the children it waited for (async workers are detached: not counted)"
  echo "wall time $(((${T_END/./} - ${T_START/./}) / 1000000)) s; load average at start $LOAD_START, at end $LOAD_END; failures: $FAILS"
}
[ "$FAILS" = 0 ] || exit 1
