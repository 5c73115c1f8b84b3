#!/usr/bin/env bash
# Benchmark: decompression throughput of `ishare extract` against
# `fsck.erofs --extract` (erofs-utils 1.9.4) on compressed EROFS images of a
# Debian bookworm minbase root filesystem, made by mkfs.erofs 1.9.4 with each
# algorithm (lz4hc, lzma, deflate, zstd), with the default pcluster size (one
# block) and with -C65536. Extraction goes to a tmpfs; runs are warm (image in
# the page cache) unless MODES says otherwise. Every image's two extracted trees
# are checked identical. See bench/README.md. Run as root.
#
# Environment:
#   ISHARE_CACHE  cache directory (default /var/cache/ishare)
#   RUNS          runs per tool, image and mode (default 5)
#   ALGS          algorithms (default "lz4hc lzma deflate zstd")
#   PCLUSTERS     pcluster sizes: "default" and/or bytes (default "default 65536")
#   MODES         warm and/or cold (default "warm")
#   SKIP_BUILD=1  do not run `cargo build --release -p ishare`
#   ISHARE_BIN    ishare binary to time (default target/release/ishare)
#   RESULTS       where to write the table (default bench/results/extract-compressed.md)
#   ISHARE_REV    the source revision of ISHARE_BIN, for the report (default: the
#                 work tree's, from git describe)
set -euo pipefail

BENCH_NAME=extract-compressed.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-5}
ALGS=${ALGS:-lz4hc lzma deflate zstd}
PCLUSTERS=${PCLUSTERS:-default 65536}
MODES=${MODES:-warm}
SUITE=bookworm
ROOTFS=$BENCH/rootfs-$SUITE-minbase
IMAGES=$BENCH/compressed
UUID=0f3b1a2c-5d4e-4f60-8a7b-9c0d1e2f3a4b
ISHARE_SRC=${ISHARE_BIN:-$ROOT/target/release/ishare}
RESULTS=${RESULTS:-$ROOT/bench/results/extract-compressed.md}
# Variants: ishare with its default workers (one per core), ishare with one
# worker (like fsck.erofs, single-threaded), fsck.erofs.
VARIANTS=(ishare ishare1 fsck)

[ "$(id -u)" -eq 0 ] || die "must run as root (drop_caches, tmpfs, chown)"
for a in $ALGS; do
  case $a in lz4 | lz4hc | lzma | deflate | zstd) ;; *) die "unknown algorithm $a" ;; esac
done
for c in $PCLUSTERS; do
  case $c in default | [0-9]*) ;; *) die "PCLUSTERS: default or a size in bytes, not $c" ;; esac
done
for m in $MODES; do
  case $m in warm | cold) ;; *) die "MODES: warm and/or cold, not $m" ;; esac
done

# --- tools -------------------------------------------------------------------
bench_tools time debootstrap attr
bench_build "$ISHARE_SRC"

# --- root filesystem (cached) ------------------------------------------------
bootstrap_rootfs "$ROOTFS"

# --- scratch space -------------------------------------------------------------
scratch_tmpfs ishare-bench-z

# --- images (rebuilt every run) ------------------------------------------------
# Fixed UUID and build time, so the same tree gives the same images;
# --mkfs-time keeps each file's own mtime. mkfs.erofs compresses on both cores.
mkdir -p "$IMAGES"
KEYS=()
for a in $ALGS; do
  for c in $PCLUSTERS; do
    key=$a-$c
    copt=()
    [ "$c" = default ] || copt=(-C"$c")
    log "mkfs.erofs -z$a ${copt[*]}"
    "$MKFS" --quiet -T0 --mkfs-time -U "$UUID" -z"$a" "${copt[@]}" "$IMAGES/$SUITE-minbase-$key.erofs" "$ROOTFS"
    KEYS+=("$key")
  done
done
image_of() { echo "$IMAGES/$SUITE-minbase-$1.erofs"; }

# cmd VARIANT IMAGE DIR: the extraction command line, in array CMD. Both tools
# restore data, type, owner, mode, mtime, hard links and xattrs (fsck.erofs
# only restores xattrs with --xattrs; --preserve is its default as root anyway).
cmd() {
  case $1 in
    ishare) CMD=("$ISHARE" extract "$2" "$3") ;;
    ishare1) CMD=("$ISHARE" extract --workers=1 "$2" "$3") ;;
    fsck) mkdir "$3"; CMD=("$FSCK" --extract="$3" --preserve --xattrs "$2") ;;
  esac
}

# run KEY VARIANT MODE N: one timed extraction into a new directory, removed
# afterwards (tmpfs: no allocator slowdown after deletions, unlike ext4).
# Appends "wall user sys maxrss_kib" to $WORK/log/KEY.VARIANT.MODE.
run() {
  local key=$1 v=$2 mode=$3 n=$4 rc=0 img out=$WORK/mnt/out
  img=$(image_of "$key")
  rm -rf "$out"
  cmd "$v" "$img" "$out"
  sync
  if [ "$mode" = cold ]; then
    echo 3 >/proc/sys/vm/drop_caches
  else
    cat "$img" >/dev/null
  fi
  timed "$v ($key, $mode run $n)" "$WORK/log/$key.$v.$mode" "$WORK/log/out" "${CMD[@]}" || rc=$?
  rm -rf "$out"
  return "$rc"
}

load_before=$(loadavg)
warn_if_busy
declare -A failed=()
for key in "${KEYS[@]}"; do
  for mode in $MODES; do
    for ((i = 1; i <= RUNS; i++)); do
      for v in "${VARIANTS[@]}"; do
        [ -z "${failed[$key.$v]:-}" ] || continue
        log "$key $v $mode $i/$RUNS"
        run "$key" "$v" "$mode" "$i" || failed[$key.$v]=$(grep -v '^\s*$' "$WORK/log/out" | tail -n 1)
      done
    done
  done
done
load_after=$(loadavg)

# --- correctness: both tools' trees must be identical, and like the source -------
meta "$ROOTFS" | grep -v '^\. ' >"$WORK/log/meta.source"
declare -A verdict=()
mismatch=0
for key in "${KEYS[@]}"; do
  if [ -n "${failed[$key.ishare]:-}${failed[$key.fsck]:-}" ]; then
    verdict[$key]="not checked"
    continue
  fi
  log "comparing trees ($key)"
  A=$WORK/mnt/cmp/ishare B=$WORK/mnt/cmp/fsck
  rm -rf "$WORK/mnt/cmp"
  mkdir -p "$WORK/mnt/cmp"
  for t in ishare fsck; do
    cmd "$t" "$(image_of "$key")" "$WORK/mnt/cmp/$t"
    "${CMD[@]}" >/dev/null
  done
  d=$WORK/log/diff.$key
  fail=0
  compare_extracted "$A" "$B" "$WORK/log/meta.source" "$d" || fail=1
  if [ "$fail" != 0 ]; then
    echo "$BENCH_NAME: $key: MISMATCH between the extracted trees or with the source rootfs:" >&2
    head -n 40 "$d" >&2
    verdict[$key]="MISMATCH"
    mismatch=1
  else
    verdict[$key]="identical"
  fi
done
rm -rf "$WORK/mnt/cmp"

# --- report --------------------------------------------------------------------
files=$(find "$ROOTFS" | wc -l)
regular=$(find "$ROOTFS" -type f | wc -l)
tree_bytes=$(find "$ROOTFS" -type f -printf '%i %s\n' | sort -u | awk '{ s += $2 } END { print s }')
tree_mib=$(awk -v b="$tree_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
# med KEY VARIANT MODE COLUMN: the median of a column (1 wall, 2 user+sys), or -.
med() {
  local f=$WORK/log/$1.$2.$3
  [ -s "$f" ] || { echo -; return; }
  case $4 in
    1) awk '{ print $1 }' "$f" | median ;;
    2) awk '{ print $2 + $3 }' "$f" | median ;;
  esac
}
# rss KEY MODE VARIANT...: the peak RSS (MiB) over all runs of these variants.
rss() {
  local key=$1 mode=$2 v
  shift 2
  for v in "$@"; do cat "$WORK/log/$key.$v.$mode" 2>/dev/null || true; done |
    awk '$4 > m { m = $4 } END { if (m) printf "%.1f", m / 1024; else print "-" }'
}
fmt() { if [ "$1" = - ]; then echo FAILED; else printf '%.3f' "$1"; fi; }
mkdir -p "$(dirname "$RESULTS")"
{
  echo "# extract benchmark: compressed images"
  echo
  echo "- tree: Debian $SUITE minbase (debootstrap), $files entries, $regular regular files, $tree_mib MiB of file data (hard links counted once)"
  echo "- images: mkfs.erofs 1.9.4 \`-z ALG [-C SIZE] -T0 --mkfs-time -U $UUID\` (4 KiB blocks); sizes and sha256 below"
  echo "- ishare: $ISHARE_SRC built $ishare_built, sha256 $ishare_sha; source ${ISHARE_REV:-$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')}; $(date -u +%Y-%m-%d)"
  echo "- target: tmpfs; modes: $MODES; median of $RUNS runs per tool, image and mode; the tools alternate"
  echo "- machine: Linux $(uname -r), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, images on $(findmnt -no FSTYPE -T "$IMAGES")"
  echo "- load average before / after the timed runs: $load_before / $load_after"
  echo "- throughput: MiB of file data per second of wall time; CPU: user+sys"
  echo "- check: ishare's and fsck.erofs's trees identical (content, type, mode, owner, size, link count, mtime, device numbers, xattrs), and ishare's with the source rootfs's metadata"
  for mode in $MODES; do
    echo
    echo "### $mode (image $([ "$mode" = warm ] && echo 'in the page cache' || echo 'read from disk'))"
    echo
    echo "| image | size (MiB) | ishare wall (s) | ishare 1 worker wall (s) | fsck.erofs wall (s) | ishare / fsck.erofs wall | throughput ishare / 1 worker / fsck.erofs (MiB/s) | CPU ishare / 1 worker / fsck.erofs (s) | peak RSS ishare / fsck.erofs (MiB) | trees |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for key in "${KEYS[@]}"; do
      img=$(image_of "$key")
      size=$(stat -c %s "$img" | awk '{ printf "%.1f", $1 / 1048576 }')
      wi=$(med "$key" ishare "$mode" 1) w1=$(med "$key" ishare1 "$mode" 1) wf=$(med "$key" fsck "$mode" 1)
      ci=$(med "$key" ishare "$mode" 2) c1=$(med "$key" ishare1 "$mode" 2) cf=$(med "$key" fsck "$mode" 2)
      ratio=- tp=
      if [ "$wi" != - ] && [ "$wf" != - ]; then ratio=$(awk -v a="$wi" -v b="$wf" 'BEGIN { printf "%.2f", a / b }'); fi
      for w in "$wi" "$w1" "$wf"; do
        if [ "$w" = - ]; then tp+="- / "; else tp+="$(awk -v m="$tree_mib" -v w="$w" 'BEGIN { printf "%.0f", m / w }') / "; fi
      done
      printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s / %s | %s |\n' \
        "-z${key%-*} $([ "${key#*-}" = default ] && echo '(default -C)' || echo "-C${key#*-}")" "$size" \
        "$(fmt "$wi")" "$(fmt "$w1")" "$(fmt "$wf")" "$ratio" "${tp% / }" \
        "$(fmt "$ci")" "$(fmt "$c1")" "$(fmt "$cf")" \
        "$(rss "$key" "$mode" ishare ishare1)" "$(rss "$key" "$mode" fsck)" \
        "${verdict[$key]}"
    done
  done
  echo
  echo "Images:"
  echo
  for key in "${KEYS[@]}"; do
    echo "- $key: $(stat -c %s "$(image_of "$key")") bytes, sha256 $(sha256sum "$(image_of "$key")" | cut -d' ' -f1)"
  done
  report_failures_and_runs
} >"$RESULTS"
cat "$RESULTS"
[ ${#failed[@]} = 0 ] || die "${!failed[*]} failed"
[ "$mismatch" = 0 ] || die "extracted trees differ (see above)"
