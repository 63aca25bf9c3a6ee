#!/usr/bin/env bash
# Side-by-side comparison of dumpvault with restic, borg, rustic and bupstash on the same
# multi-day dump corpus, in one run of this script.
#
# Usage: benches/compare.sh CORPUS_DIR [RUNS]
#   CORPUS_DIR  holds day files, e.g. ../shared/bench/make-pg-corpus.sh /tmp/pgcorpus 16 4 (README)
#   RUNS        runs per tool (default 3); every figure is the median over runs
# Environment:
#   PATTERN=pg-day*.sql   day files, taken in natural sort order (day0 first)
#   DUMPVAULT_BIN         dumpvault binary (default target/release/dumpvault, built if missing)
#   TOOLS="dumpvault dumpvault-mk restic borg borg-zstd rustic bupstash"   restrict/reorder
#   BORG_ZSTD=0           drop the extra "borg --compression zstd,3" column
#   DV_MK=0               drop the "dumpvault-mk" column: dumpvault opened with a machine key
#                         (`key add-machine`, no Argon2id run per command, like bupstash's key file)
#   DV_RESTORE=stdout     dumpvault restores to stdout redirected to a file, like `restic dump`
#                         and `borg extract --stdout`; DV_RESTORE=file uses `-o FILE`, which also
#                         fsyncs the file before renaming it (slower, not like-for-like).
#   INSTALL_PEERS=1       also install missing bupstash and rustic with `cargo install --locked`
#                         (slow: ~10-30 min each on 2 cores; INSTALL_JOBS=1 is the -j passed)
#
# Per tool and run: a fresh repository (and fresh cache) in a temp dir, `init`, a backup of day 0
# read from stdin, incremental backups of days 1..N-1 from stdin, then a restore of the last day,
# checked byte for byte with cmp, and the same restore again into /dev/null. Runs are interleaved (run 1 of every tool, then run 2, ...) and
# the tool order rotates per run, so machine noise hits every tool alike. Each tool uses its
# default compression: dumpvault zstd-3, restic and rustic "auto" (zstd, repository v2), bupstash
# zstd:3, borg lz4; the borg-zstd column adds `--compression zstd,3`. `zstd -T2 -3` of day 0 is
# timed in every run as the compression floor. Wall time is measured around each command (bash
# EPOCHREALTIME), peak RSS with /usr/bin/time; the repository size is `du -sb` after each day.
# Password/key derivation at the start of each command is part of every tool's time, as it is in
# a real nightly job; bupstash reads a key file instead, so it pays no KDF. The dumpvault-mk
# column is the like-for-like one: its init step (timed) runs `init` with the password and then
# `key add-machine --secret-file`; its backups and restore run with DUMPVAULT_PASSWORD unset and
# DUMPVAULT_PASSWORD_FILE pointing at that secret, so they open the repository without Argon2id
# (the setup for cron jobs and archive_command). It is not a peer.
# The table has a `dv / X` column per peer and a `dv / best peer` column that compares dumpvault
# (password) with the best peer on each row. Below the table, the issue's targets are checked
# against the fastest peer and against restic, for dumpvault and again for dumpvault-mk, and the
# KDF cost per command is printed (day-0 backup wall time, dumpvault minus dumpvault-mk).
# Needs: bash 5, GNU time (/usr/bin/time), zstd, cmp, du, awk. restic and borg are installed with
# apt-get when missing and this runs as root; bupstash and rustic only with INSTALL_PEERS=1 (else
# they are skipped when missing). A tool that is missing or fails is reported, not fatal.
set -euo pipefail
export LC_ALL=C # '.' as the decimal point, in EPOCHREALTIME and awk alike

usage() { sed -n '5,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
CORPUS=$1
RUNS=${2:-${RUNS:-3}}
PATTERN=${PATTERN:-pg-day*.sql}
DV_RESTORE=${DV_RESTORE:-stdout}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: RUNS must be a positive integer, got '$RUNS'" >&2; exit 2; }
[ -d "$CORPUS" ] || { echo "compare.sh: no such corpus directory: $CORPUS" >&2; exit 2; }

say() { printf '%s\n' "$*" >&2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
if [ ! -x "$BIN" ]; then
  say "== building dumpvault (cargo build --release)"
  (cd "$ROOT" && cargo build --release -q)
fi
for need in /usr/bin/time zstd cmp du awk; do
  command -v "$need" >/dev/null || { say "compare.sh: '$need' is required"; exit 2; }
done

mapfile -t DAYS < <(cd "$CORPUS" && ls -1 -- $PATTERN 2>/dev/null | sort -V)
[ "${#DAYS[@]}" -ge 1 ] || { say "compare.sh: no '$PATTERN' files in $CORPUS"; exit 2; }
for i in "${!DAYS[@]}"; do DAYS[$i]=$(cd "$CORPUS" && pwd)/${DAYS[$i]}; done
NDAYS=${#DAYS[@]}
LAST=$((NDAYS - 1))
BYTES=()
for f in "${DAYS[@]}"; do BYTES+=("$(stat -c %s "$f")"); done

# ---------------------------------------------------------------- peers: install or skip
if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "== installing restic and borgbackup with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q restic borgbackup >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q restic borgbackup >/dev/null 2>&1; } ||
      say "   apt-get could not install restic/borgbackup; the missing ones are skipped"
  else
    say "== restic or borg missing and cannot apt-get install (not root or no apt); skipped"
  fi
fi
# bupstash and rustic come from crates.io (`cargo install` puts them in ~/.cargo/bin).
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
[ -d "$CARGO_BIN" ] && case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) PATH=$PATH:$CARGO_BIN ;; esac
if [ "${INSTALL_PEERS:-0}" = 1 ]; then
  for crate in bupstash:bupstash rustic-rs:rustic; do
    bin=${crate#*:}
    command -v "$bin" >/dev/null && continue
    command -v cargo >/dev/null || { say "== INSTALL_PEERS=1 but no cargo: $bin skipped"; continue; }
    if [ "$bin" = bupstash ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q libsodium-dev pkg-config >/dev/null 2>&1 ||
        say "   apt-get could not install libsodium-dev/pkg-config (bupstash needs them)"
    fi
    say "== installing $bin: cargo install --locked ${crate%%:*} (this takes a while)"
    nice -n 19 cargo install -q --locked -j "${INSTALL_JOBS:-1}" "${crate%%:*}" >&2 ||
      say "   cargo install ${crate%%:*} failed; $bin is skipped"
  done
fi
WANT=${TOOLS:-dumpvault dumpvault-mk restic borg borg-zstd rustic bupstash}
ACTIVE=()
for t in $WANT; do
  case $t in
    dumpvault) ACTIVE+=("$t") ;;
    dumpvault-mk) [ "${DV_MK:-1}" = 0 ] || ACTIVE+=("$t") ;;
    restic | rustic | bupstash)
      if command -v "$t" >/dev/null; then ACTIVE+=("$t"); else
        case $t in
          restic) say "== restic not installed: skipped" ;;
          *) say "== $t not installed (INSTALL_PEERS=1 installs it with cargo): skipped" ;;
        esac
      fi ;;
    borg | borg-zstd)
      [ "$t" = borg-zstd ] && [ "${BORG_ZSTD:-1}" = 0 ] && continue
      if command -v borg >/dev/null; then ACTIVE+=("$t"); else say "== $t not installed: skipped"; fi ;;
    *) say "compare.sh: unknown tool '$t' in TOOLS"; exit 2 ;;
  esac
done
# dumpvault-mk is dumpvault itself (with a machine key), not a peer: no ratio column, not a best peer.
PEERS=()
for t in "${ACTIVE[@]}"; do [[ $t == dumpvault* ]] || PEERS+=("$t"); done
has() { [[ " ${ACTIVE[*]} " == *" $1 "* ]]; } # has TOOL: TOOL is one of the columns

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dumpvault-compare.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
RES=$WORK/results.tsv # lines: tool run key value
: >"$RES"

# ---------------------------------------------------------------- measurement
# timed IN OUT CMD... : run CMD with stdin IN and stdout OUT (stderr to $LOG); sets T_S (wall
# seconds) and T_KB (peak RSS in KiB). Dirty pages of the previous step are flushed first, untimed.
timed() {
  local in=$1 out=$2 t0 t1 rc=0
  shift 2
  sync
  t0=$EPOCHREALTIME
  /usr/bin/time -f "%M" -o "$WORK/time.out" "$@" <"$in" >"$out" 2>>"$LOG" || rc=$?
  t1=$EPOCHREALTIME
  if [ "$rc" != 0 ]; then
    say "   FAILED (exit $rc): $*"
    tail -n 5 "$LOG" | sed 's/^/   | /' >&2
    return 1
  fi
  T_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
  T_KB=$(tail -n 1 "$WORK/time.out")
}
rec() { printf '%s %s %s %s\n' "$TOOL" "$RUN" "$1" "$2" >>"$RES"; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / (s > 0 ? s : 1e-3) }'; }

# Per-tool adapters. env_T exports the tool's settings (inside the subshell of one tool-run, with
# a fresh $REPO and $TMPD for caches, keys and config homes); init_T, backup_T DAY and
# restore_T DAY set CMD to the command to time (backup reads the day from stdin, restore writes
# the day to stdout).
env_dumpvault() {
  export DUMPVAULT_REPO=$REPO DUMPVAULT_PASSWORD=bench DUMPVAULT_CACHE_DIR=$TMPD/cache
}
init_dumpvault() { CMD=("$BIN" init -q); }
backup_dumpvault() { CMD=("$BIN" backup --name bench -q); }
restore_dumpvault() {
  if [ "$DV_RESTORE" = file ]; then CMD=("$BIN" restore latest -q -o "$TMPD/restored"); else CMD=("$BIN" restore latest -q); fi
}

# dumpvault-mk: the same binary and cache handling, but backups and restore open the repository
# with a machine key, like an unattended job: DUMPVAULT_PASSWORD (which takes precedence) unset,
# DUMPVAULT_PASSWORD_FILE = the generated secret, so no Argon2id run. The timed init step runs
# `init` with the password, then `key add-machine` (which writes the secret).
env_dumpvault-mk() {
  env_dumpvault
  unset DUMPVAULT_PASSWORD DUMPVAULT_PASSWORD_COMMAND
  export DUMPVAULT_PASSWORD_FILE=$TMPD/mk.secret
}
init_dumpvault-mk() {
  # shellcheck disable=SC2016 # $0 and $1 are sh -c's arguments
  CMD=(env -u DUMPVAULT_PASSWORD_FILE DUMPVAULT_PASSWORD=bench
    sh -c '"$0" init -q && "$0" key add-machine -q --secret-file "$1"' "$BIN" "$DUMPVAULT_PASSWORD_FILE")
}
# Untimed, after init: the key in use (`*` in `key list`) must be the machine key.
check_dumpvault-mk() {
  local keys
  keys=$("$BIN" key list 2>>"$LOG") || true
  grep -q '^\*.*machine key' <<<"$keys" ||
    { say "   FAILED: dumpvault-mk is not opened by its machine key"; return 1; }
}
backup_dumpvault-mk() { backup_dumpvault; }
restore_dumpvault-mk() { restore_dumpvault; }

env_restic() {
  export RESTIC_REPOSITORY=$REPO RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$TMPD/cache
}
init_restic() { CMD=(restic init -q); } # repository v2 ("stable" since 0.14): compression auto = zstd
backup_restic() { CMD=(restic backup -q --stdin --stdin-filename dump.sql); }
restore_restic() { CMD=(restic dump -q latest dump.sql); }

env_borg() {
  export BORG_REPO=$REPO BORG_PASSPHRASE=bench BORG_BASE_DIR=$TMPD/borg
}
init_borg() { CMD=(borg init -e repokey-blake2); }
backup_borg() { CMD=(borg create --stdin-name dump.sql "::day$1" -); } # default compression: lz4
restore_borg() { CMD=(borg extract --stdout "::day$1"); }
env_borg-zstd() { env_borg; }
init_borg-zstd() { init_borg; }
# shellcheck disable=SC2054 # zstd,3 is one argument
backup_borg-zstd() { CMD=(borg create --compression zstd,3 --stdin-name dump.sql "::day$1" -); }
restore_borg-zstd() { restore_borg "$1"; }

# rustic: restic's repository format (v2, zstd "auto"), so the same commands. The config/profile
# directory and the cache are per run; progress bars are off. `--force` (no parent snapshot) is
# required: rustic 0.11 gives the stdin entry empty metadata, so with a parent (the previous day)
# it counts it "unchanged", never reads stdin and saves the parent's content again.
env_rustic() {
  export RUSTIC_REPOSITORY=$REPO RUSTIC_PASSWORD=bench RUSTIC_CACHE_DIR=$TMPD/cache RUSTIC_NO_PROGRESS=true \
    XDG_CACHE_HOME=$TMPD/cache XDG_CONFIG_HOME=$TMPD/config
}
init_rustic() { CMD=(rustic init); }
backup_rustic() { CMD=(rustic backup --force --stdin-filename dump.sql -); }
restore_rustic() { CMD=(rustic dump latest:dump.sql); }

# bupstash: `put -` reads stdin. (`put --exec CMD` runs CMD with stdin on /dev/null, so the
# former `--exec ... cat` stored an empty item.) Default compression zstd:3; the send log and
# query cache live in the run's temp dir.
env_bupstash() {
  export BUPSTASH_REPOSITORY=$REPO BUPSTASH_KEY=$TMPD/bupstash.key BUPSTASH_QUERY_CACHE=$TMPD/bupstash.qcache \
    BUPSTASH_SEND_LOG=$TMPD/bupstash.sendlog
  bupstash new-key -o "$BUPSTASH_KEY" # untimed: the key lives outside the repository
}
init_bupstash() { CMD=(bupstash init); }
backup_bupstash() { CMD=(bupstash put -q name=dump.sql "day=$1" -); }
restore_bupstash() { CMD=(bupstash get "day=$1"); }

# One tool-run: every step timed, results appended to $RES; any failure aborts this run only.
tool_run() {
  local i size out
  LOG=$WORK/$TOOL.$RUN.log
  REPO=$WORK/repo-$TOOL-$RUN
  TMPD=$WORK/tmp-$TOOL-$RUN
  mkdir -p "$TMPD"
  "env_$TOOL" >>"$LOG" 2>&1
  "init_$TOOL"
  timed /dev/null /dev/null "${CMD[@]}"
  rec s.init "$T_S"; rec kb.init "$T_KB"
  say "   $TOOL init:  $(printf '%6.2f' "$T_S") s  RSS $((T_KB / 1024)) MiB"
  if declare -F "check_$TOOL" >/dev/null; then "check_$TOOL"; fi
  for i in "${!DAYS[@]}"; do
    "backup_$TOOL" "$i"
    timed "${DAYS[$i]}" /dev/null "${CMD[@]}"
    size=$(du -sb "$REPO" | cut -f1)
    rec "s.b$i" "$T_S"; rec "kb.b$i" "$T_KB"; rec "size.$i" "$size"
    say "   $TOOL day $i: $(printf '%6.2f' "$T_S") s  $(printf '%5s' "$(mbps "${BYTES[$i]}" "$T_S")") MB/s  repo $(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }') MB  RSS $((T_KB / 1024)) MiB"
  done
  out=$TMPD/restored
  [[ $TOOL == dumpvault* ]] && [ "$DV_RESTORE" = file ] && out=/dev/null
  "restore_$TOOL" "$LAST"
  timed /dev/null "$out" "${CMD[@]}"
  rec s.restore "$T_S"; rec kb.restore "$T_KB"
  if ! cmp -s "$TMPD/restored" "${DAYS[$LAST]}"; then
    say "   FAILED: $TOOL restore of day $LAST is not byte-exact"
    return 1
  fi
  say "   $TOOL restore day $LAST: $(printf '%6.2f' "$T_S") s  $(printf '%5s' "$(mbps "${BYTES[$LAST]}" "$T_S")") MB/s  RSS $((T_KB / 1024)) MiB  (cmp ok)"
  # The same restore into /dev/null: the tool's own work, without the kernel's cost of filling
  # the page cache with a new 300 MB file, which is the same for every tool yet dominates the
  # row above (and varies 2x from run to run on a VM). Its bytes were checked just above.
  DV_RESTORE=stdout "restore_$TOOL" "$LAST"
  timed /dev/null /dev/null "${CMD[@]}"
  rec s.restore_null "$T_S"; rec kb.restore_null "$T_KB"
  say "   $TOOL restore day $LAST to /dev/null: $(printf '%6.2f' "$T_S") s  $(printf '%5s' "$(mbps "${BYTES[$LAST]}" "$T_S")") MB/s"
  rec ok 1
}

# ---------------------------------------------------------------- header
say "== corpus: $CORPUS  ($NDAYS days: $(for i in "${!DAYS[@]}"; do printf '%s=%s MB ' "$(basename "${DAYS[$i]}")" "$((BYTES[$i] / 1000000))"; done))"
say "== tools: ${ACTIVE[*]}   runs: $RUNS   work dir: $WORK"
version() { "$@" 2>/dev/null | grep -o -E -m 1 '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1 || true; }
VERSIONS="dumpvault $(version "$BIN" --version)"
command -v restic >/dev/null && VERSIONS+=", restic $(version restic version)"
command -v borg >/dev/null && VERSIONS+=", borg $(version borg --version)"
command -v rustic >/dev/null && VERSIONS+=", rustic $(version rustic --version)"
command -v bupstash >/dev/null && VERSIONS+=", bupstash $(version bupstash version)"
VERSIONS+=", zstd $(version zstd --version)"
say "== warming the page cache with the corpus"
cat "${DAYS[@]}" >/dev/null

# ---------------------------------------------------------------- the runs, interleaved
FAILED=0
for RUN in $(seq "$RUNS"); do
  # zstd floor of day 0, once per run.
  TOOL=zstd LOG=$WORK/zstd.log
  timed /dev/null /dev/null zstd -T2 -3 -q -c "${DAYS[0]}"
  rec s.zstd "$T_S"
  say "== run $RUN/$RUNS: zstd -T2 -3 day 0: $(printf '%.2f' "$T_S") s ($(mbps "${BYTES[0]}" "$T_S") MB/s)"
  # rotate the tool order each run
  n=${#ACTIVE[@]}
  for k in $(seq 0 $((n - 1))); do
    TOOL=${ACTIVE[$(((k + RUN - 1) % n))]}
    say "-- run $RUN/$RUNS: $TOOL"
    set +e
    (set -e; tool_run)
    rc=$?
    set -e
    [ "$rc" = 0 ] || { FAILED=1; say "   $TOOL run $RUN failed (log lines above); excluded from the medians"; }
    rm -rf "$WORK/repo-$TOOL-$RUN" "$WORK/tmp-$TOOL-$RUN"
  done
done

# ---------------------------------------------------------------- per-run metrics, medians
# metric lines: tool metric median nruns
METRICS=$WORK/metrics.tsv
awk -v tools="${ACTIVE[*]}" -v runs="$RUNS" -v bytes="${BYTES[*]}" '
  { v[$1 " " $2 " " $3] = $4 }
  function med(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    nd = split(bytes, B, " "); nt = split(tools, T, " ")
    for (ti = 1; ti <= nt; ti++) {
      t = T[ti]; delete L; ok = 0
      for (r = 1; r <= runs; r++) {
        k = t " " r " "
        if (!((k "ok") in v)) continue
        ok++; z = v["zstd " r " s.zstd"]
        L["init_mbps"] = L["init_mbps"] " " B[1] / 1e6 / v[k "s.b0"]
        L["init_s"] = L["init_s"] " " v[k "s.b0"]
        L["init_vs_zstd"] = L["init_vs_zstd"] " " v[k "s.b0"] / z
        L["restore_mbps"] = L["restore_mbps"] " " B[nd] / 1e6 / v[k "s.restore"]
        L["restore_null_mbps"] = L["restore_null_mbps"] " " B[nd] / 1e6 / v[k "s.restore_null"]
        kb = v[k "kb.init"]; if (v[k "kb.restore"] > kb) kb = v[k "kb.restore"]
        if (v[k "kb.restore_null"] > kb) kb = v[k "kb.restore_null"]
        ib = 0; is = 0
        for (d = 0; d < nd; d++) {
          if (v[k "kb.b" d] > kb) kb = v[k "kb.b" d]
          if (d > 0) { ib += B[d + 1]; is += v[k "s.b" d] }
        }
        L["rss_mib"] = L["rss_mib"] " " kb / 1024
        L["repo0_mb"] = L["repo0_mb"] " " v[k "size.0"] / 1e6
        if (nd > 1) {
          L["incr_mbps"] = L["incr_mbps"] " " ib / 1e6 / is
          L["growth_mb"] = L["growth_mb"] " " (v[k "size." (nd - 1)] - v[k "size.0"]) / (nd - 1) / 1e6
          L["growth_last_mb"] = L["growth_last_mb"] " " (v[k "size." (nd - 1)] - v[k "size." (nd - 2)]) / 1e6
        }
      }
      for (m in L) printf "%s %s %.6f %d\n", t, m, med(L[m]), ok
      printf "%s ok - %d\n", t, ok
    }
    zl = ""; for (r = 1; r <= runs; r++) if (("zstd " r " s.zstd") in v) zl = zl " " v["zstd " r " s.zstd"]
    printf "zstd s %.6f %d\n", med(zl), runs
  }' "$RES" >"$METRICS"

declare -A MED
while read -r t m val n; do MED[$t.$m]=$val; MED[$t.n]=$n; done <"$METRICS"

# ---------------------------------------------------------------- the table
# Ratio columns read "> 1 means dumpvault is better" on every row: dumpvault/peer for throughput,
# peer/dumpvault for RSS, sizes and wall-time ratios.
ROWS=(
  "init_mbps|initial backup MB/s (day 0)|up|%.0f"
  "incr_mbps|incremental MB/s (days 1..$LAST)|up|%.0f"
  "restore_mbps|restore MB/s (day $LAST)|up|%.0f"
  "restore_null_mbps|restore to /dev/null MB/s (day $LAST)|up|%.0f"
  "rss_mib|peak RSS MiB (max of all steps)|down|%.0f"
  "repo0_mb|repo after day 0 MB|down|%.1f"
  "growth_mb|growth/day MB (mean, days 1..$LAST)|down|%.2f"
  "growth_last_mb|growth day $((LAST - 1))->$LAST MB|down|%.2f"
  "init_vs_zstd|initial wall / zstd -T2 -3 wall|down|%.2f"
)
label() { case $1 in borg) echo "borg(lz4)" ;; borg-zstd) echo "borg(zstd3)" ;; *) echo "$1" ;; esac; }
fmt() { if [ -n "${2:-}" ]; then printf "$1" "$2"; else printf -- '-'; fi; }
# ratio KEY DIR PEER [DV]: "1.23x" (> 1: DV better), or "-" when either median is missing. DV is
# the dumpvault column compared (default dumpvault, i.e. with the password; or dumpvault-mk).
ratio() {
  local dv=${MED[${4:-dumpvault}.$1]:-} pv=${MED[$3.$1]:-}
  if [ -z "$dv" ] || [ -z "$pv" ]; then echo -; return; fi
  awk -v d="$dv" -v p="$pv" -v up="$2" 'BEGIN {
    num = (up == "up") ? d : p; den = (up == "up") ? p : d
    if (den <= 0) print "-"; else printf "%.2fx", num / den }'
}
# best_peer KEY DIR: the peer with the best median on this row (highest for up, lowest for down).
best_peer() {
  local p best='' bv='' v
  for p in "${PEERS[@]}"; do
    v=${MED[$p.$1]:-}
    [ -n "$v" ] || continue
    if [ -z "$best" ] || awk -v v="$v" -v b="$bv" -v up="$2" 'BEGIN { exit !((up == "up") ? v > b : v < b) }'; then
      best=$p bv=$v
    fi
  done
  echo "$best"
}
W=36
{
  echo
  echo "dumpvault vs peers on $(basename "$CORPUS")/$PATTERN: $NDAYS days, day 0 = $(awk -v b="${BYTES[0]}" 'BEGIN { printf "%.0f", b / 1e6 }') MB, median of $RUNS interleaved run(s)"
  echo "($VERSIONS; $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
  echo "compression: dumpvault zstd-3, restic and rustic auto (zstd), borg lz4 (default) and zstd,3, bupstash zstd:3; MB = 10^6 bytes"
  has dumpvault-mk && echo "dumpvault-mk: dumpvault opened with a machine key (no Argon2id per command, like bupstash's key file); not a peer, no ratio column"
  echo "ratio columns 'dv / X': > 1 means dumpvault is better (throughput: dv / X; RSS, sizes, wall ratio: X / dv)"
  echo
  printf "%-${W}s" metric
  for t in "${ACTIVE[@]}"; do printf ' %12s' "$(label "$t")"; done
  for p in "${PEERS[@]}"; do printf ' %14s' "dv / $(label "$p")"; done
  [ "${#PEERS[@]}" -gt 0 ] && printf '   %-s' "dv / best peer"
  echo
  for row in "${ROWS[@]}"; do
    IFS='|' read -r key name dir f <<<"$row"
    if [ "$NDAYS" -lt 2 ] && [[ $key == incr_mbps || $key == growth* ]]; then continue; fi
    [ "$key" = growth_last_mb ] && [ "$NDAYS" -lt 3 ] && continue
    printf "%-${W}s" "$name $([ "$dir" = up ] && echo '(^)' || echo '(v)')"
    for t in "${ACTIVE[@]}"; do printf ' %12s' "$(fmt "$f" "${MED[$t.$key]:-}")"; done
    for p in "${PEERS[@]}"; do printf ' %14s' "$(ratio "$key" "$dir" "$p")"; done
    if [ "${#PEERS[@]}" -gt 0 ]; then
      best=$(best_peer "$key" "$dir")
      if [ -n "$best" ]; then printf '   %s (%s)' "$(ratio "$key" "$dir" "$best")" "$(label "$best")"; else printf '   -'; fi
    fi
    echo
  done
  echo
  echo "(^) higher is better, (v) lower is better. zstd -T2 -3 -c day0 >/dev/null (compression floor): $(fmt %.2f "${MED[zstd.s]}") s = $(mbps "${BYTES[0]}" "${MED[zstd.s]}") MB/s."
  echo "incremental MB/s = bytes of days 1..$LAST / their total wall time; dumpvault restore: $([ "$DV_RESTORE" = file ] && echo '-o FILE (fsynced)' || echo 'stdout > file, like restic dump / borg extract --stdout')."
  echo "dv / best peer: against the peer with the best median on that row (fastest, smallest, leanest)."
  # The scale issue's targets: initial backup and restore >= 1.3x the fastest peer, incremental
  # >= 3.5x restic. Restore is judged into /dev/null, as the issue measured it: into a file the
  # kernel's page-cache cost, the same for every tool, dominates.
  # The verdict compares the unrounded medians (1.298 is not met, though printed 1.30x).
  target() { # KEY WHAT PEER MIN [DV]
    local r dv
    [ -n "$3" ] || { printf '%s: no peer' "$2"; return; }
    dv=${5:-dumpvault}
    r=$(ratio "$1" up "$3" "$dv")
    printf '%s %s %s (>= %sx: %s)' "$2" "$r" "$(label "$3")" "$4" \
      "$(awk -v r="$r" -v d="${MED[$dv.$1]:-0}" -v p="${MED[$3.$1]:-0}" -v m="$4" \
        'BEGIN { if (r == "-") print "n/a"; else print (d >= m * p) ? "met" : "NOT met" }')"
  }
  # targets_line DV PREFIX: the targets for one dumpvault column.
  targets_line() {
    printf '%s%s; %s' "$2" "$(target init_mbps 'initial backup' "$(best_peer init_mbps up)" 1.3 "$1")" \
      "$(target restore_null_mbps 'restore (to /dev/null)' "$(best_peer restore_null_mbps up)" 1.3 "$1")"
    if [ "$NDAYS" -ge 2 ] && has restic; then
      printf '; %s' "$(target incr_mbps incremental restic 3.5 "$1")"
    fi
    echo
  }
  if [ "${#PEERS[@]}" -gt 0 ]; then
    has dumpvault && targets_line dumpvault 'targets: '
    has dumpvault-mk && targets_line dumpvault-mk "with a machine key (no KDF, like bupstash's key file): "
  fi
  # The KDF cost per command: day 0's backup opens the repository once in both columns.
  if [ -n "${MED[dumpvault.init_s]:-}" ] && [ -n "${MED[dumpvault-mk.init_s]:-}" ]; then
    awk -v a="${MED[dumpvault.init_s]}" -v b="${MED[dumpvault-mk.init_s]}" 'BEGIN {
      printf "KDF cost per command (Argon2id, 64 MiB, t=3): %.2f s = day-0 backup wall %.2f s (password) - %.2f s (machine key), medians\n", a - b, a, b }'
  fi
  if has bupstash; then
    if has dumpvault-mk; then
      echo "bupstash reads a key file (no password KDF), as dumpvault-mk reads its machine key; every other tool derives its key from a password in each command."
    else
      echo "bupstash reads a key file (no password KDF); every other tool derives its key from a password in each command."
    fi
  fi
  for t in "${ACTIVE[@]}"; do
    [ "${MED[$t.n]:-0}" = "$RUNS" ] || echo "NOTE: $t succeeded in ${MED[$t.n]:-0} of $RUNS runs (failed runs are excluded)."
  done
}
exit "$FAILED"
