#!/usr/bin/env bash
# Measures dumpvault on a multi-day dump corpus (e.g. the output of
# ../shared/bench/make-pg-corpus.sh): per-day backup throughput, repository growth per day,
# restore throughput and peak RSS. Prints one table; each figure is the median of RUNS runs.
# Usage: benches/corpus.sh CORPUS_DIR [PATTERN]   (PATTERN default: pg-day*.sql; RUNS default 3)
set -euo pipefail
CORPUS=${1:?corpus dir}; PATTERN=${2:-pg-day*.sql}; RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${DUMPVAULT_BIN:-$ROOT/target/release/dumpvault}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release -q)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
export DUMPVAULT_PASSWORD=bench DUMPVAULT_CACHE_DIR=$WORK/cache
mapfile -t DAYS < <(ls "$CORPUS"/$PATTERN | sort -V)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# time_rss CMD... → "seconds maxrss_kb" on fd 3
time_rss() { /usr/bin/time -f "%e %M" -o "$WORK/t" "$@"; cat "$WORK/t"; }
declare -A SEC RSS GROW
for run in $(seq "$RUNS"); do
  export DUMPVAULT_REPO=$WORK/repo-$run
  rm -rf "$DUMPVAULT_REPO" "$DUMPVAULT_CACHE_DIR"
  "$BIN" init -q
  prev=$(du -sb "$DUMPVAULT_REPO" | cut -f1)
  for f in "${DAYS[@]}"; do
    d=$(basename "$f")
    read -r s m < <(time_rss "$BIN" backup --name bench -q "$f" 2>/dev/null | tail -1 >/dev/null; cat "$WORK/t")
    now=$(du -sb "$DUMPVAULT_REPO" | cut -f1)
    SEC[$d]+="$s "; RSS[$d]+="$m "; GROW[$d]+="$((now - prev)) "; prev=$now
  done
  read -r s m < <("$BIN" restore latest -q -o "$WORK/restored" 2>/dev/null; time_rss "$BIN" restore latest -q -o "$WORK/restored" >/dev/null; cat "$WORK/t")
  cmp -s "$WORK/restored" "${DAYS[-1]}" || { echo "restore is not byte-exact!" >&2; exit 1; }
  SEC[restore]+="$s "; RSS[restore]+="$m "
  rm -f "$WORK/restored"
done
printf '%-22s %12s %10s %10s %14s\n' step "size MB" "seconds" "MB/s" "stored MB" 
for f in "${DAYS[@]}" restore; do
  if [ "$f" = restore ]; then d=restore; size=$(stat -c %s "${DAYS[-1]}"); else d=$(basename "$f"); size=$(stat -c %s "$f"); fi
  s=$(echo ${SEC[$d]} | tr ' ' '\n' | median)
  g=$( [ "$d" = restore ] && echo - || echo ${GROW[$d]} | tr ' ' '\n' | median)
  printf '%-22s %12.1f %10.2f %10.0f %14s   (peak RSS %s MB)\n' "$d" "$(echo "$size/1000000" | bc -l)" "$s" \
    "$(echo "$size/1000000/$s" | bc -l)" "$( [ "$g" = - ] && echo - || printf '%.1f' "$(echo "$g/1000000" | bc -l)")" \
    "$(( $(echo ${RSS[$d]} | tr ' ' '\n' | median) / 1024 ))"
done
echo "zstd -T2 -3 of the first day (compression floor): $( { /usr/bin/time -f %e zstd -T2 -3 -q -c "${DAYS[0]}" >/dev/null; } 2>&1 ) s"
