#!/usr/bin/env bash
# Benchmark: `ishare extract` against `fsck.erofs --extract` (erofs-utils 1.9.4)
# on an uncompressed EROFS image of a Debian bookworm minbase root filesystem.
# Extraction goes to a tmpfs; cold runs drop the page cache first, warm runs
# have the image cached. See bench/README.md. Run as root.
#
# Environment:
#   ISHARE_CACHE  cache directory (default /var/cache/ishare)
#   RUNS          runs per tool and mode (default 5)
#   TARGET_FS     tmpfs (default): extract into a fresh tmpfs; disk: extract into
#                 a directory on the image's own filesystem ($ISHARE_CACHE/bench)
#   SKIP_BUILD=1  do not run `cargo build --release -p ishare`
#   ISHARE_BIN    ishare binary to time (default target/release/ishare)
set -euo pipefail

BENCH_NAME=extract.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-5}
SUITE=bookworm
ROOTFS=$BENCH/rootfs-$SUITE-minbase
IMAGE=$BENCH/$SUITE-minbase.erofs
UUID=0f3b1a2c-5d4e-4f60-8a7b-9c0d1e2f3a4b
ISHARE=${ISHARE_BIN:-$ROOT/target/release/ishare}
TARGET_FS=${TARGET_FS:-tmpfs}
if [ "$TARGET_FS" = tmpfs ]; then
  RESULTS=$ROOT/bench/results/extract.md
else
  RESULTS=$ROOT/bench/results/extract-disk.md
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (drop_caches, tmpfs, chown)"
case $TARGET_FS in tmpfs | disk) ;; *) die "TARGET_FS must be tmpfs or disk" ;; esac

# --- tools -------------------------------------------------------------------
bench_tools time debootstrap attr
bench_build "$ISHARE"

# --- root filesystem (cached) ------------------------------------------------
bootstrap_rootfs "$ROOTFS"

# --- image (rebuilt every run: a few seconds) ---------------------------------
# Uncompressed, default layout; fixed UUID and build time so the same tree
# gives the same image. --mkfs-time keeps each file's own mtime.
log "mkfs.erofs $IMAGE"
"$MKFS" --quiet -T0 --mkfs-time -U "$UUID" "$IMAGE" "$ROOTFS"

# --- scratch space -------------------------------------------------------------
if [ "$TARGET_FS" = tmpfs ]; then
  WORK=$(mktemp -d /tmp/ishare-bench.XXXXXX)
else
  WORK=$(mktemp -d "$BENCH/scratch.XXXXXX")
fi
trap scratch_cleanup EXIT
mkdir "$WORK/mnt" "$WORK/log"
if [ "$TARGET_FS" = tmpfs ]; then
  mount -t tmpfs -o mode=0755 ishare-bench "$WORK/mnt"
fi

# cmd TOOL DIR: the extraction command line, in array CMD. Both tools restore
# data, type, owner, mode, mtime, hard links and xattrs (fsck.erofs only
# restores xattrs with --xattrs; --preserve is its default as root anyway).
cmd() {
  case $1 in
    ishare) CMD=("$ISHARE" extract "$IMAGE" "$2") ;;
    fsck) mkdir "$2"; CMD=("$FSCK" --extract="$2" --preserve --xattrs "$IMAGE") ;;
  esac
}

# run TOOL MODE N: one timed extraction into a new directory. Outputs are
# only removed after all runs of a mode, followed by a cache drop: on ext4,
# creating files right after deleting many makes inode allocation crawl
# (recently_deleted() in __ext4_new_inode), which would be measured instead.
# Appends "wall user sys maxrss_kib" to $WORK/log/TOOL.MODE.
run() {
  local tool=$1 mode=$2 n=$3
  cmd "$tool" "$WORK/mnt/out.$tool.$mode.$n"
  sync
  if [ "$mode" = cold ]; then
    echo 3 >/proc/sys/vm/drop_caches
  else
    cat "$IMAGE" >/dev/null
  fi
  timed "$tool ($mode run $n)" "$WORK/log/$tool.$mode" "$WORK/log/out.$tool" "${CMD[@]}"
}

load_before=$(loadavg)
warn_if_busy
declare -A failed=()
for mode in cold warm; do
  for ((i = 1; i <= RUNS; i++)); do
    for tool in ishare fsck; do
      [ -z "${failed[$tool]:-}" ] || continue
      log "$tool $mode $i/$RUNS"
      run "$tool" "$mode" "$i" || failed[$tool]=$(grep -v '^\s*$' "$WORK/log/out.$tool" | tail -n 1)
    done
  done
  rm -rf "$WORK"/mnt/out.*
  sync
  echo 3 >/proc/sys/vm/drop_caches
done

load_after=$(loadavg)

# --- correctness: both tools' trees must be identical ---------------------------
A=$WORK/mnt/cmp/ishare B=$WORK/mnt/cmp/fsck
mkdir -p "$WORK/mnt/cmp"
verdict="not checked"
if [ ${#failed[@]} = 0 ]; then
  log "comparing trees"
  for t in ishare fsck; do
    cmd "$t" "$WORK/mnt/cmp/$t"
    "${CMD[@]}" >/dev/null
  done
  meta "$ROOTFS" | grep -v '^\. ' >"$WORK/log/meta.source"
  if ! compare_extracted "$A" "$B" "$WORK/log/meta.source" "$WORK/log/diff"; then
    head -n 60 "$WORK/log/diff" >&2
    die "MISMATCH between the extracted trees or with the source rootfs (diff above)"
  fi
  verdict="identical trees (content, type, mode, owner, size, link count, mtime, device numbers, xattrs); same metadata as the source rootfs"
  log "$verdict"
else
  # Describe the source tree instead.
  A=$ROOTFS
fi

# --- report --------------------------------------------------------------------
files=$(find "$A" | wc -l)
regular=$(find "$A" -type f | wc -l)
tree_mib=$(find "$A" -type f -printf '%i %s\n' | sort -u | awk '{ s += $2 } END { printf "%.1f", s / 1048576 }')
image_mib=$(stat -c %s "$IMAGE" | awk '{ printf "%.1f", $1 / 1048576 }')
row() {
  local tool=$1 label=$2 cold warm cpu rss
  if [ -n "${failed[$tool]:-}" ]; then
    printf '| %s | FAILED | FAILED | - | - |\n' "$label"
    return
  fi
  cold=$(awk '{ print $1 }' "$WORK/log/$tool.cold" | median)
  warm=$(awk '{ print $1 }' "$WORK/log/$tool.warm" | median)
  cpu=$(awk '{ print $2 + $3 }' "$WORK/log/$tool.warm" | median)
  rss=$(cat "$WORK/log/$tool.cold" "$WORK/log/$tool.warm" | awk '$4 > m { m = $4 } END { printf "%.1f", m / 1024 }')
  printf '| %s | %.3f | %.3f | %.3f | %s |\n' "$label" "$cold" "$warm" "$cpu" "$rss"
}
mkdir -p "$(dirname "$RESULTS")"
{
  echo "# extract benchmark"
  echo
  echo "- image: Debian $SUITE minbase (debootstrap), uncompressed EROFS by mkfs.erofs 1.9.4, $image_mib MiB, sha256 $(sha256sum "$IMAGE" | cut -d" " -f1)"
  echo "- tree: $files entries, $regular regular files, $tree_mib MiB of file data (hard links counted once)"
  echo "- target: $TARGET_FS; median of $RUNS runs per tool and mode; peak RSS is the maximum over all runs"
  echo "- machine: Linux $(uname -r), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, image on $(findmnt -no FSTYPE -T "$IMAGE")"
  echo "- ishare: $ISHARE; work tree $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'); $(date -u +%Y-%m-%d)"
  echo "- load average before / after the timed runs: $load_before / $load_after"
  echo "- check: $verdict"
  echo
  echo "| tool | cold median (s) | warm median (s) | warm CPU user+sys median (s) | peak RSS (MiB) |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  # shellcheck disable=SC2016 # Markdown code spans, not command substitutions
  row ishare '`ishare extract`'
  # shellcheck disable=SC2016
  row fsck '`fsck.erofs --extract --preserve --xattrs`'
  report_failures_and_runs
} >"$RESULTS"
cat "$RESULTS"
[ ${#failed[@]} = 0 ] || die "${!failed[*]} failed"
