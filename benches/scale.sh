#!/bin/sh
# How dumpvault behaves as the repository grows: builds the release CLI and the `scale` bench
# (benches/scale.rs), copies both out of target/ (so a concurrent rebuild cannot swap them
# mid-run), and runs the bench, which prints markdown tables on stdout.
#
#   benches/scale.sh                  # N = 1 and 10 million index entries (~10 minutes + build)
#   SCALE_BIG=1 benches/scale.sh      # also 60 million (~8 GB under SCALE_DIR)
#   SCALE_N=0.2 SCALE_SNAPSHOTS=100 SCALE_INCR_MB=16 benches/scale.sh   # a quick check
#   SCALE_ONLY=prune SCALE_N=1,10 SCALE_SNAPSHOTS=100 benches/scale.sh  # only fsck and prune
#   SCALE_ONLY=coldincr SCALE_N=10 SCALE_INCR_MB=1024 benches/scale.sh  # incremental, cold runs
#   DUMPVAULT_BIN=/path/to/dumpvault benches/scale.sh   # measure that CLI (not built here)
#
# Other variables (SCALE_DIR, SCALE_LOOKUPS, SCALE_COLD_MAX, SCALE_ONLY, KEEP, DUMPVAULT_BIN)
# are listed in benches/scale.rs. Cargo runs under `flock /tmp/cargo.lock` and `nice`, so builds
# sharing the machine take turns.
set -eu
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/time ]; then
    echo "scale.sh: installing GNU time" >&2
    apt-get install -y time >&2 || { apt-get update >&2 && apt-get install -y time >&2; }
fi

dir=${SCALE_DIR:-/tmp/dvscale}
mkdir -p "$dir/bin"

# What the binaries are built from, recorded before the build (commits may land during a run).
SCALE_GIT=$(git describe --always --dirty 2>/dev/null || echo "(not a git checkout)")
export SCALE_GIT
# The CLI is built only when DUMPVAULT_BIN does not name one (e.g. a build of another commit).
if [ -z "${DUMPVAULT_BIN:-}" ]; then
    flock /tmp/cargo.lock nice -n 10 cargo build --release --bins >&2
fi
bench=$(flock /tmp/cargo.lock nice -n 10 cargo bench --bench scale --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/scale-[^"]*"' | tail -n 1 | cut -d'"' -f4)
[ -n "$bench" ] || { echo "scale.sh: could not find the scale bench binary" >&2; exit 1; }

if [ -z "${DUMPVAULT_BIN:-}" ]; then
    cp target/release/dumpvault "$dir/bin/dumpvault"
    DUMPVAULT_BIN=$dir/bin/dumpvault
fi
cp "$bench" "$dir/bin/scale"
export DUMPVAULT_BIN SCALE_DIR="$dir"

status=0
"$dir/bin/scale" || status=$?
# The bench removes its repositories itself unless KEEP=1; these copies go in any case.
rm -rf "$dir/bin"
rmdir "$dir" 2>/dev/null || true
exit "$status"
