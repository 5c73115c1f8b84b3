# Shell helpers shared by the benchmarks. Source it after setting BENCH_NAME
# (used in messages); it sets ROOT (the repository), CACHE
# (${ISHARE_CACHE:-/var/cache/ishare}) and the erofs-utils paths.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${ISHARE_CACHE:-/var/cache/ishare}
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

# fuse_wakeup_as_deployed: the host setting dist/systemd/ishare.service makes before
# the daemon starts: where the kernel has the fuse module parameter wake_here, FUSE
# threads are woken on the CPU of the process that asked (see crates/share/src/wakeup.rs).
# FUSE_WAKE_HERE=Y (default, as the unit), N, or keep (the host's as it is). Sets
# WAKE_HERE_BEFORE (what to restore with fuse_wakeup_restore) and WAKE_HERE_NOTE (for
# the results).
WAKE_HERE_PARAM=/sys/module/fuse/parameters/wake_here
fuse_wakeup_as_deployed() {
  local want=${FUSE_WAKE_HERE:-Y}
  WAKE_HERE_BEFORE=
  if [ ! -e "$WAKE_HERE_PARAM" ]; then
    WAKE_HERE_NOTE="the kernel has no fuse.wake_here (ishare's FUSE threads spin, spin=auto)"
    return 0
  fi
  if [ "$want" != keep ] && [ "$(cat "$WAKE_HERE_PARAM")" != "$want" ]; then
    WAKE_HERE_BEFORE=$(cat "$WAKE_HERE_PARAM")
    echo "$want" >"$WAKE_HERE_PARAM" || die "cannot set $WAKE_HERE_PARAM"
  fi
  WAKE_HERE_NOTE="fuse.wake_here=$(cat "$WAKE_HERE_PARAM") during the run (FUSE_WAKE_HERE=$want; Y is what ishare.service sets; the host had ${WAKE_HERE_BEFORE:-the same})"
}
fuse_wakeup_restore() {
  [ -z "${WAKE_HERE_BEFORE:-}" ] || echo "$WAKE_HERE_BEFORE" >"$WAKE_HERE_PARAM"
}

# bench_build BINARY: `cargo build --release -p ishare` unless SKIP_BUILD=1
# (retried twice after a pause: the work tree may be in the middle of an edit),
# then checks that BINARY, the ishare to time, is there.
bench_build() {
  [ "${SKIP_BUILD:-0}" != 1 ] || { [ -x "$1" ] || die "$1 missing"; return 0; }
  local try
  for try in 1 2 3; do
    log "cargo build --release -p ishare"
    if (cd "$ROOT" && cargo build --release -q -p ishare); then
      [ -x "$1" ] || die "$1 missing"
      return 0
    fi
    [ "$try" = 3 ] || { warn "build failed, retrying in 30 s"; sleep 30; }
  done
  die "cargo build failed (set SKIP_BUILD=1 or ISHARE_BIN to time an existing binary)"
}

# bootstrap_rootfs DIR [DEBOOTSTRAP_OPTION...] (shared with scripts/install-deps.sh).
# shellcheck source=scripts/rootfs.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/rootfs.sh"

# median: the median of the numbers on stdin, one a line.
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.10g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

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

# scratch_tmpfs PREFIX: a scratch directory WORK=/tmp/PREFIX.XXXXXX with a tmpfs
# on WORK/mnt, WORK/log and WORK/bin, removed on exit (after umounting the
# mounts found under it), and a private copy ISHARE of the binary ISHARE_SRC:
# others may rebuild target/release/ishare meanwhile. Sets ishare_sha and
# ishare_built for the report.
scratch_tmpfs() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  trap scratch_cleanup EXIT
  mkdir "$WORK/mnt" "$WORK/log" "$WORK/bin"
  mount -t tmpfs -o mode=0755 ishare-bench "$WORK/mnt"
  ISHARE=$WORK/bin/ishare
  cp "$ISHARE_SRC" "$ISHARE"
  # shellcheck disable=SC2034 # read by the sourcing script
  ishare_sha=$(sha256sum "$ISHARE" | cut -d' ' -f1)
  # shellcheck disable=SC2034
  ishare_built=$(date -u -r "$ISHARE_SRC" '+%Y-%m-%d %H:%M UTC')
}

# shellcheck disable=SC2317 # called by the trap
scratch_cleanup() {
  local m
  for m in $(findmnt -rno TARGET | grep -F "$WORK/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  rm -rf "$WORK"
}

# timed WHAT LOG OUT CMD...: runs CMD under /usr/bin/time with its output in OUT
# and appends "wall user sys maxrss_kib" to LOG; on failure prints OUT with
# WHAT (the run's description) and returns 1.
timed() {
  local what=$1 log=$2 out=$3 t0 t1 rc=0
  shift 3
  t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$WORK/log/time" "$@" >"$out" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  if [ "$rc" != 0 ]; then
    echo "$BENCH_NAME: $what failed (exit $rc): $*" >&2
    sed 's/^/    /' "$out" >&2
    return 1
  fi
  awk -v t0="$t0" -v t1="$t1" -F': ' '
    /User time/ { u = $2 } /System time/ { s = $2 } /Maximum resident/ { m = $2 }
    END { printf "%.4f %s %s %s\n", t1 - t0, u, s, m }' "$WORK/log/time" >>"$log"
}

# report_failures_and_runs: the report's tail, in Markdown: each failed run's
# last output line (associative array failed, key -> line) and the wall time of
# each run, one line per log file ($WORK/log/*.cold, *.warm).
report_failures_and_runs() {
  local k f
  # shellcheck disable=SC2154 # the sourcing script's
  for k in "${!failed[@]}"; do
    echo
    echo "$k failed: \`${failed[$k]}\`"
  done
  echo
  echo "Wall times of each run (s):"
  echo
  for f in "$WORK"/log/*.cold "$WORK"/log/*.warm; do
    [ -e "$f" ] || continue
    echo "- $(basename "$f"): $(awk '{ printf "%s ", $1 }' "$f")"
  done
}

# meta DIR: one line per entry: path, type, mode, owner, size (not for
# directories: it depends on the filesystem), link count, mtime, symlink target,
# and device numbers.
meta() {
  (cd "$1" && find . -printf '%p %y %m %U %G %s %n %T@ %l\n' | awk '$2 == "d" { $6 = "-" } 1' | LC_ALL=C sort)
  (cd "$1" && find . \( -type b -o -type c \) -exec stat -c '%n rdev %t:%T' {} + | LC_ALL=C sort)
}
xattrs() { (cd "$1" || exit 1; getfattr -R -h -d -m - -e hex . 2>/dev/null || true); }

# compare_extracted A B SOURCE_META DIFF: whether the trees extracted into A
# (ishare) and B (fsck.erofs) are identical (contents, meta, xattrs) and A has
# the metadata SOURCE_META (meta of the source, root line left out: here it is
# the mount point or a scratch directory). Differences go to DIFF; returns 1
# when there are any.
compare_extracted() {
  local a=$1 b=$2 source_meta=$3 d=$4 t fail=0
  for t in "$a" "$b"; do
    meta "$t" >"$t.meta"
    xattrs "$t" >"$t.xattrs"
  done
  # diff -r cannot compare device nodes and FIFOs: meta covers those.
  diff -r --no-dereference "$a" "$b" >"$d.r" 2>&1 || true
  if grep -Ev '^File .* while file .* is a (character special file|block special file|fifo|socket)$' \
    "$d.r" >"$d"; then
    fail=1
  fi
  for t in meta xattrs; do
    diff -u "$a.$t" "$b.$t" >>"$d" || fail=1
  done
  diff -u "$source_meta" <(grep -v '^\. ' "$a.meta") >>"$d" || fail=1
  return "$fail"
}

# --- ishare processes, whatever the daemon model ---------------------------------
# `ishare mount` may run one daemon per mount or hand every mount to one node
# daemon (`ishare daemon ...`); these find them all by their executable, never by
# pid files or names.

# ishare_pids BIN: the pids of every process whose executable is BIN (a private copy
# of the binary: nobody else runs it), one a line.
ishare_pids() {
  local bin=$1 p e
  for p in /proc/[0-9]*; do
    e=$(readlink "$p/exe" 2>/dev/null) || continue
    [ "$e" = "$bin" ] || [ "$e" = "$bin (deleted)" ] || continue
    echo "${p#/proc/}"
  done
}

# ishare_mem BIN: "PSS_KIB RSS_KIB PROCESSES", the sums of Pss: and Rss: of
# /proc/PID/smaps_rollup over ishare_pids BIN (a process exiting meanwhile is left out).
ishare_mem() {
  local pid pss=0 rss=0 n=0 a b
  for pid in $(ishare_pids "$1"); do
    read -r a b < <(awk '/^Pss:/ { p = $2 } /^Rss:/ { r = $2 } END { if (p != "") print p, r }' \
      "/proc/$pid/smaps_rollup" 2>/dev/null) || continue
    [ -n "$a" ] || continue
    pss=$((pss + a)) rss=$((rss + b)) n=$((n + 1))
  done
  echo "$pss $rss $n"
}

# ishare_wait_exit BIN SECS: waits up to SECS for every process running BIN to exit;
# returns 1 if some still run.
ishare_wait_exit() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ -n "$(ishare_pids "$1")" ] || return 0
    sleep 0.1
  done
  [ -z "$(ishare_pids "$1")" ]
}

# ishare_stop BIN SECS: waits up to SECS for the processes running BIN to exit, then
# sends the rest SIGTERM (a node daemon with no mounts left may stay up by design),
# then SIGKILL after 10 s. Prints the pids it signalled, if any.
ishare_stop() {
  local bin=$1 pids
  ishare_wait_exit "$bin" "$2" && return 0
  pids=$(ishare_pids "$bin" | tr '\n' ' ')
  [ -z "$pids" ] || echo "$pids"
  # shellcheck disable=SC2086 # pids are words
  [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
  ishare_wait_exit "$bin" 10 && return 0
  pids=$(ishare_pids "$bin" | tr '\n' ' ')
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
}
