#!/usr/bin/env bash
# Install what dumpvault's tests need on a Debian 12 (bookworm) machine, from Debian packages:
#
#   postgresql   initdb, pg_ctl (server) and pg_dump, pg_restore, psql (client)
#   redis-server redis-server, plus redis-cli and redis-check-rdb (from redis-tools)
#   zstd         the zstd command-line tool
#   prometheus_client (Python, via `python3 -m pip`): the metrics test parses --metrics-file
#                with the Prometheus client library's own text parser
#   build-essential, only if no C compiler is present (zstd-sys and the bundled SQLite build C)
#
# Idempotent: when every tool is already there, apt is not touched at all. Non-interactive.
# It starts no service: the tests start private PostgreSQL and Redis servers themselves, in temp
# directories on random ports (PostgreSQL as the `postgres` user via runuser when run as root).
# Package post-install scripts are kept from starting the distribution's own servers with a
# temporary /usr/sbin/policy-rc.d (only if none exists; removed again afterwards).
#
# Usage: sudo scripts/install-test-deps.sh      (or as root; uses sudo itself when it can)
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: error: %s\n' "$*" >&2; exit 1; }

# --- privileges ---------------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)   # -n: never prompt (no stdin in CI); fails clearly if a password is needed
else
    SUDO=()
fi
as_root() {
    if [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ]; then
        "${SUDO[@]}" "$@"
    else
        die "need root to run: $* (run this script as root, or install sudo)"
    fi
}

# --- what is missing ----------------------------------------------------------------------
missing_tools=()
packages=()
need_pkg() { # need_pkg PACKAGE: add once
    local p
    for p in "${packages[@]}"; do [ "$p" = "$1" ] && return 0; done
    packages+=("$1")
}

for t in psql pg_dump pg_restore; do
    command -v "$t" >/dev/null 2>&1 || { missing_tools+=("$t"); need_pkg postgresql; }
done
# Server binaries live outside PATH on Debian: /usr/lib/postgresql/<major>/bin.
# shellcheck disable=SC2012
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing_tools+=(initdb); need_pkg postgresql
fi
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    missing_tools+=(pg_ctl); need_pkg postgresql
fi
command -v redis-server >/dev/null 2>&1 || { missing_tools+=(redis-server); need_pkg redis-server; }
for t in redis-cli redis-check-rdb; do
    command -v "$t" >/dev/null 2>&1 || { missing_tools+=("$t"); need_pkg redis-server; need_pkg redis-tools; }
done
command -v zstd >/dev/null 2>&1 || { missing_tools+=(zstd); need_pkg zstd; }
command -v cc >/dev/null 2>&1 || { missing_tools+=(cc); need_pkg build-essential; }

# --- install ------------------------------------------------------------------------------
if [ "${#packages[@]}" -eq 0 ]; then
    log "all test tools already present; apt not used"
else
    log "missing: ${missing_tools[*]}"
    log "installing Debian packages: ${packages[*]}"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian 12"
    export DEBIAN_FRONTEND=noninteractive

    created_policy=0
    cleanup() {
        if [ "$created_policy" = 1 ]; then
            as_root rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup EXIT
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        # Exit status 101 tells invoke-rc.d "action not allowed": packages install, nothing starts.
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi

    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    log "apt-get install ${packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${packages[@]}"
fi

# --- the postgres user (initdb refuses to run as root; the tests use runuser -u postgres) ---
if [ "$(id -u)" -eq 0 ] || [ "${#SUDO[@]}" -gt 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        log "creating system user postgres"
        as_root useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
fi
command -v runuser >/dev/null 2>&1 || log "warning: runuser not found (util-linux); the PostgreSQL tests need it when run as root"

# --- Garage, the S3 server the S3 tests start (a crates.io package, built once) --------------
# `cargo install` reuses an installed binary; the first build takes 15-25 minutes on 2 cores.
GARAGE_VERSION=${GARAGE_VERSION:-2.5.0}
if command -v garage >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/garage" ]; then
    log "garage already installed: $( (command -v garage || echo "$HOME/.cargo/bin/garage") | head -1)"
else
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install garage"
    log "installing garage $GARAGE_VERSION with cargo install --locked (one-time, slow)"
    cargo install garage --version "$GARAGE_VERSION" --locked
fi

# --- prometheus_client, the parser the metrics test uses (for the python3 on PATH) -----------
if python3 -c 'import prometheus_client' >/dev/null 2>&1; then
    log "prometheus_client already importable by $(command -v python3)"
else
    command -v python3 >/dev/null 2>&1 || die "python3 is needed (the metrics test runs it)"
    log "installing prometheus_client with python3 -m pip"
    # Debian's system Python is "externally managed" (PEP 668): pip refuses without the flag;
    # older pips do not know the flag, so try without it first.
    python3 -m pip install --quiet prometheus_client 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages prometheus_client \
        || die "could not install prometheus_client (try: apt-get install python3-prometheus-client)"
fi

# --- verify and report ----------------------------------------------------------------------
fail=0
check() { # check NAME PATH-OR-EMPTY
    if [ -n "$2" ]; then
        log "  ok  $1 -> $2"
    else
        log "  MISSING  $1"
        fail=1
    fi
}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
log "test tools:"
check initdb "$( [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] && echo "$pgbin/initdb" || true)"
check pg_ctl "$( [ -n "$pgbin" ] && [ -x "$pgbin/pg_ctl" ] && echo "$pgbin/pg_ctl" || true)"
for t in pg_dump pg_restore psql redis-server redis-cli redis-check-rdb zstd cc; do
    check "$t" "$(command -v "$t" || true)"
done
check prometheus_client "$(python3 -c 'import prometheus_client, os; print(os.path.dirname(prometheus_client.__file__))' 2>/dev/null || true)"
check garage "$(command -v garage || { [ -x "$HOME/.cargo/bin/garage" ] && echo "$HOME/.cargo/bin/garage"; } || true)"
[ "$fail" = 0 ] || die "some tools are still missing"
if [ -n "$pgbin" ]; then log "PostgreSQL: $("$pgbin/postgres" --version 2>/dev/null || echo '?')"; fi
log "Redis: $(redis-server --version 2>/dev/null | head -1)"
log "done (no service was started)"
