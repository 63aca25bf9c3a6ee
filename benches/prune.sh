#!/usr/bin/env bash
# Prune time and peak memory for N snapshots (default 100): each snapshot is one of the corpus
# dumps with a per-snapshot header line, dated one day apart; then
# `forget --keep-daily 7 --keep-weekly 4 --keep-monthly 3 --prune` is timed.
# Usage: benches/prune.sh CORPUS_DIR [N]   (CORPUS_DIR: make-pg-corpus.sh output)
set -euo pipefail
CORPUS=${1:?corpus dir}; N=${2:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export DUMPVAULT_REPO=$WORK/repo DUMPVAULT_PASSWORD=bench DUMPVAULT_CACHE_DIR=$WORK/cache
mapfile -t DAYS < <(ls "$CORPUS"/pg-day*.sql | sort -V)
"$BIN" init -q
for i in $(seq 0 $((N - 1))); do
  f=${DAYS[$((i % ${#DAYS[@]}))]}
  { echo "-- snapshot $i"; cat "$f"; } | "$BIN" backup -q --name shop \
    --time "$(date -u -d "2024-01-01 + $i days" +%F) 02:00:00" >/dev/null
done
before=$(du -sb "$DUMPVAULT_REPO" | cut -f1)
/usr/bin/time -f "forget+prune of $N snapshots: %e s, peak RSS %M KB" \
  "$BIN" forget -q --keep-daily 7 --keep-weekly 4 --keep-monthly 3 --prune >/dev/null
after=$(du -sb "$DUMPVAULT_REPO" | cut -f1)
echo "repository: $before -> $after bytes; snapshots left: $("$BIN" snapshots --json | grep -c '"id"')"
