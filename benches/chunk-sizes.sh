#!/usr/bin/env bash
# Chooses the chunk-size default by measurement: for each average size, a fresh repository,
# the corpus days backed up in order, and per size: bytes stored after day 0, mean growth per
# later day, blobs in the index, index bytes, and backup throughput over all days.
# Usage: benches/chunk-sizes.sh CORPUS_DIR [PATTERN]   (PATTERN default pg-day*.sql)
set -euo pipefail
CORPUS=${1:?corpus dir}; PATTERN=${2:-pg-day*.sql}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export DUMPVAULT_PASSWORD=bench
mapfile -t DAYS < <(ls "$CORPUS"/$PATTERN | sort -V)
total=0; for f in "${DAYS[@]}"; do total=$((total + $(stat -c %s "$f"))); done
printf '%-9s %12s %14s %10s %12s %10s\n' avg "day0 MB" "growth/day MB" blobs "index KB" "MB/s"
for avg in 8192 16384 32768 65536 262144 1048576; do
  export DUMPVAULT_REPO=$WORK/r$avg DUMPVAULT_CACHE_DIR=$WORK/c$avg
  "$BIN" init -q --chunk-min $((avg / 4)) --chunk-avg $avg --chunk-max $((avg * 4)) \
    --kdf-memory 19456 --kdf-iterations 2
  sizes=(); start=$(date +%s.%N)
  for f in "${DAYS[@]}"; do
    "$BIN" backup -q --name b "$f" >/dev/null
    sizes+=("$(du -sb "$DUMPVAULT_REPO/data" | cut -f1)")
  done
  secs=$(echo "$(date +%s.%N) - $start" | bc -l)
  n=${#sizes[@]}
  growth=$(echo "(${sizes[$((n - 1))]} - ${sizes[0]}) / ($n - 1) / 1000000" | bc -l)
  blobs=$("$BIN" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["blobs"])')
  idx=$(du -sb "$DUMPVAULT_REPO/index" | cut -f1)
  printf '%-9s %12.1f %14.2f %10s %12.0f %10.0f\n' "$((avg / 1024))K" \
    "$(echo "${sizes[0]} / 1000000" | bc -l)" "$growth" "$blobs" "$(echo "$idx / 1000" | bc -l)" \
    "$(echo "$total / 1000000 / $secs" | bc -l)"
done
