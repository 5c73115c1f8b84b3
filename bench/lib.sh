# Shell helpers shared by the benchmarks (extract.sh, mkfs.sh). Source it after
# setting BENCH_NAME (used in messages), ROOT (the repository) and CACHE
# (${ISHARE_CACHE:-/var/cache/ishare}).
# shellcheck shell=bash

BENCH=${BENCH:-$CACHE/bench}
EU_BIN=${EU_BIN:-$CACHE/erofs-utils-1.9.4/bin}
MKFS=$EU_BIN/mkfs.erofs
FSCK=$EU_BIN/fsck.erofs

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
warn() { echo "$BENCH_NAME: warning: $*" >&2; }

# bench_tools PACKAGE...: erofs-utils 1.9.4 (built by scripts/install-deps.sh
# when missing) and these Debian packages.
bench_tools() {
  if [ ! -x "$MKFS" ] || [ ! -x "$FSCK" ]; then "$ROOT/scripts/install-deps.sh"; fi
  local need=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# bench_build: `cargo build --release -p ishare` unless SKIP_BUILD=1. Retried
# twice after a pause: the work tree may be in the middle of an edit.
bench_build() {
  [ "${SKIP_BUILD:-0}" != 1 ] || return 0
  local try
  for try in 1 2 3; do
    log "cargo build --release -p ishare"
    if (cd "$ROOT" && cargo build --release -q -p ishare); then return 0; fi
    [ "$try" = 3 ] || { warn "build failed, retrying in 30 s"; sleep 30; }
  done
  die "cargo build failed (set SKIP_BUILD=1 or ISHARE_BIN to time an existing binary)"
}

# bootstrap_rootfs DIR [DEBOOTSTRAP_OPTION...] (shared with scripts/install-deps.sh).
# shellcheck source=scripts/rootfs.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/rootfs.sh"

# median: the median of the numbers on stdin, one a line.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# warn_if_busy: warns when the 1-minute load average is above 0.5.
warn_if_busy() {
  awk '$1 > 0.5 { exit 1 }' /proc/loadavg ||
    warn "load average $(loadavg): other work will skew the timings"
}
