#!/usr/bin/env bash
# Benchmark: `ishare mount` (FUSE; with -o inode_share the data of identical files
# comes from one store object per fingerprint, through kernel FUSE passthrough)
# against kernel EROFS loop mounts (Linux 6.18: no inode_share) and squashfuse.
# Parts (see bench/README.md):
#   memory  ten images of a family of Debian root filesystems, every file read
#           through every mount: page cache growth / unique content size
#   warm    sequential read of a 1 GiB file, page cache warm
#   cold    first read of a 256 MiB file, caches dropped, fresh store
#   meta    stat of every entry of the minbase image, cold and warm
#   total   (issue 11) the ten images: page cache growth + PSS of every ishare
#           process, over the unique content
#   many    (issue 11) PSS of every ishare process with 10 and with 100 mounts of
#           small distinct images
#   speed   (issue 11) the ten images: every file read cold (ishare: with a fresh
#           store, then again with the store that run prepared) and warm, a warm
#           stat walk, execs of `chroot M apt-config dump`, against kernel loop mounts
# Every read is checked against checksums of the source. Run as root.
# ishare processes are found by their executable (a private copy of the binary),
# whether `ishare mount` runs one daemon per mount or one node daemon for all.
#
# Environment:
#   ISHARE_CACHE  cache directory (default /var/cache/ishare)
#   RUNS          timed runs per tool or mode of the cold and meta parts (default 5)
#   MEM_RUNS      runs per tool of the memory part (default 3)
#   MEM_TOOLS     tools of the memory part (default "ishare ishare-noverify kernel")
#   WARM_RUNS     timed runs per tool of the warm part (default 9: it is fast and noisy)
#   IMAGES        a subset of the family for the memory, total and speed parts
#                 (default: all ten)
#   PARTS         which parts, in order (default "memory warm cold meta"; also
#                 total many speed)
#   TOTAL_RUNS    runs per tool of the total part (default 2)
#   TOTAL_TOOLS   tools of the total part (default "ishare kernel")
#   MANY_RUNS     runs per tool of the many part (default 1)
#   MANY_N        images of the many part (default 100; PSS at 10 and at MANY_N mounts)
#   SPEED_RUNS    timed runs per tool of the warm measurements of the speed part (default 3)
#   SPEED_COLD_RUNS  cold runs per tool of the speed part (default 2)
#   EXECS         execs of `chroot M apt-config dump` per timed run (default 200)
#   RESULTS       where the report goes (default bench/results/mount[-PARTS].md)
#   SKIP_BUILD=1  do not run `cargo build --release -p ishare`
#   FUSE_WAKE_HERE  Y (default: what ishare.service sets where the kernel has the fuse
#                 module parameter wake_here), N, or keep (the host's setting); restored
#                 at the end
#   ISHARE_BIN    ishare binary (default $CARGO_TARGET_DIR/release/ishare, or
#                 target/release/ishare)
#   MKFS_ISHARE   the ishare binary that makes the images (default: ISHARE_BIN's
#                 copy); images it made before are reused
set -euo pipefail

BENCH_NAME=mount.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-5}
MEM_RUNS=${MEM_RUNS:-3}
MEM_TOOLS=${MEM_TOOLS:-ishare ishare-noverify kernel}
WARM_RUNS=${WARM_RUNS:-9}
PARTS=${PARTS:-memory warm cold meta}
TOTAL_RUNS=${TOTAL_RUNS:-2}
TOTAL_TOOLS=${TOTAL_TOOLS:-ishare kernel}
MANY_RUNS=${MANY_RUNS:-1}
MANY_N=${MANY_N:-100}
SPEED_RUNS=${SPEED_RUNS:-3}
SPEED_COLD_RUNS=${SPEED_COLD_RUNS:-2}
EXECS=${EXECS:-200}
SUITE=bookworm
DATA=$BENCH/mount
ISHARE_SRC=${ISHARE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ishare}
RESULTS_SET=${RESULTS:-}
RESULTS=$ROOT/bench/results/mount.md
UUID=0f3b1a2c-5d4e-4f60-8a7b-9c0d1e2f3a4b
MKFS_OPTS=(--quiet -T0 --mkfs-time -U "$UUID")
DEV_PACKAGES=python3,python3-pip,perl,openssl,curl,ca-certificates,git,build-essential,linux-headers-amd64
export LC_ALL=C

[ "$(id -u)" -eq 0 ] || die "must run as root (mount, drop_caches, FUSE passthrough)"
for p in $PARTS; do
  case $p in memory | warm | cold | meta | total | many | speed) ;; *) die "unknown part $p (PARTS: memory warm cold meta total many speed)" ;; esac
done

# --- tools -------------------------------------------------------------------
bench_tools time debootstrap squashfs-tools squashfuse openssl gcc libc6-dev jq
bench_build "$ISHARE_SRC"

WORK=$(mktemp -d /tmp/ishare-mount-bench.XXXXXX)
ISHARE=$WORK/ishare
# Unmounts everything under WORK (the FUSE mounts first, with `ishare umount`, then
# anything left, lazily if busy), waits for the ishare processes (one per mount, or
# a node daemon) to exit, and sends those still running after 60 s SIGTERM.
cleanup() {
  set +e
  local m left
  for m in $(findmnt -rno TARGET,FSTYPE | awk '$2 == "fuse.ishare" { print $1 }' | grep -F "$WORK/" | sort -r); do
    "$ISHARE" umount "$m" >/dev/null 2>&1
  done
  for m in $(findmnt -rno TARGET | grep -F "$WORK/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  if [ -x "$ISHARE" ]; then
    left=$(ishare_stop "$ISHARE" 60)
    [ -z "$left" ] || warn "ishare processes still running after their mounts were gone, sent SIGTERM: $left"
  fi
  fuse_wakeup_restore
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/mnt" "$WORK/log" "$DATA"
fuse_wakeup_as_deployed

# A private copy of the binary: a rebuild during the runs changes nothing (and
# its processes are ours: ishare_pids finds them by this path).
cp "$ISHARE_SRC" "$ISHARE"
ISHARE_SHA=$(sha256sum "$ISHARE" | cut -c1-64)
# The images are made by MKFS_ISHARE (default: the binary timed), and made again
# when it changes: timing a new daemon against images made before saves rebuilding
# (and storing) 2.7 GiB of images.
MKFS_ISHARE=${MKFS_ISHARE:-$ISHARE}
MKFS_SHA=$(sha256sum "$MKFS_ISHARE" | cut -c1-64)
cc -O2 -Wall -o "$WORK/pagecache" "$ROOT/bench/pagecache.c"
PAGECACHE=$WORK/pagecache
# The domain id: a secret of this run (in the environment, never on a command line).
ISHARE_DOMAIN_ID=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ISHARE_DOMAIN_ID

# A mount daemon keeps one open file per shared object it has served (Debian's
# dev tree alone has ~25k distinct files), more than common RLIMIT_NOFILE limits
# (1024 soft under systemd); beyond it, files are served unshared with a warning.
# The daemons inherit the highest limit we can set: fs.nr_open, or the hard limit
# without CAP_SYS_RESOURCE (see bench/README.md).
NOFILE_BEFORE="$(ulimit -Sn) soft, $(ulimit -Hn) hard"
ulimit -n "$(cat /proc/sys/fs/nr_open)" 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"

# --- helpers -----------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# (mawk prints large numbers as 4.6e+09 unless told otherwise: printf %.0f.)
# cached_bytes: Cached minus Shmem (tmpfs, which this benchmark does not use but
# other work on the machine may fill) from /proc/meminfo.
cached_bytes() { awk '/^Cached:/ { c = $2 } /^Shmem:/ { s = $2 } END { printf "%.0f\n", (c - s) * 1024 }' /proc/meminfo; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# range: "min–max" of the numbers on stdin.
range() { sort -n | awk 'NR == 1 { a = $1 } { b = $1 } END { if (a == b) print a; else print a "–" b }'; }

# Other work on the machine may drop the page cache too (tests and benchmarks that
# measure it do). A sentinel file, read just before a measurement that needs warm
# or counted caches, must still be cached after it; else the run is repeated.
SENTINEL=$WORK/sentinel
head -c $((16 << 20)) /dev/zero >"$SENTINEL"
DISTURBED=0 # runs repeated because the sentinel was dropped
sentinel_arm() { cat "$SENTINEL" >/dev/null; }
# (This machine also runs DAMON, which pages out page cache unused for a minute,
# a few MiB at a time: only losing most of the sentinel counts as a drop.)
sentinel_kept() {
  local res
  read -r res _ _ < <(printf '%s\0' "$SENTINEL" | "$PAGECACHE")
  [ "$res" -ge $((8 << 20)) ] && return 0
  DISTURBED=$((DISTURBED + 1))
  warn "someone else dropped the page cache during a run: repeating it"
  return 1
}

# ishare_mount IMAGE MOUNTPOINT STORE [OPTION,...]: `ishare mount -o
# inode_share,store=STORE,log=LOG` (the daemon detaches: one per mount, or a node
# daemon serving every mount; both log this mount's lines to LOG), checked to be
# mounted when it returns.
ishare_mount() {
  local img=$1 mnt=$2 store=$3 extra=${4:-} log i
  log=$WORK/log/daemon.$(basename "$mnt")
  mkdir -p "$mnt"
  "$ISHARE" mount -o "inode_share,store=$store,log=$log${extra:+,$extra}" "$img" "$mnt" 2>>"$log" ||
    { cat "$log" >&2; die "ishare mount $img failed"; }
  # (It returns once the mount is ready; allow a little slack all the same.)
  for ((i = 0; i < 100; i++)); do
    [ "$(findmnt -rno FSTYPE -M "$mnt" 2>/dev/null)" != fuse.ishare ] || return 0
    sleep 0.1
  done
  die "ishare mount $img: returned, but no fuse.ishare mount on $mnt after 10 s"
}

# ishare_umount MOUNTPOINT: `ishare umount` (with one daemon per mount it returns
# once that daemon has exited, having published its objects), then checks the
# mount is gone and the log has no warnings.
ishare_umount() {
  local mnt=$1 i
  "$ISHARE" umount "$mnt" || warn "ishare umount $mnt exited with $?"
  for ((i = 0; i < 600; i++)); do
    findmnt -M "$mnt" >/dev/null 2>&1 || break
    sleep 0.1
  done
  findmnt -M "$mnt" >/dev/null 2>&1 && die "$mnt still mounted 60 s after ishare umount"
  # Files served unshared, mismatching fingerprints, failed publications: all
  # logged as warnings, and none may happen here, except that the memory part
  # counts (and reports) daemons running out of file descriptors (EMFILE_OK=1).
  local pat='warning\|error'
  if [ "${EMFILE_OK:-0}" = 1 ]; then
    if grep -i "$pat" "$WORK/log/daemon.$(basename "$mnt")" | grep -v 'Too many open files' >&2; then
      die "the ishare mount of $mnt logged warnings (above)"
    fi
  elif grep -i "$pat" "$WORK/log/daemon.$(basename "$mnt")" >&2; then
    die "the ishare mount of $mnt logged warnings (above)"
  fi
}

# daemon_files PREFIX...: the /proc/PID/fd/N (NUL-separated) of every open file of
# the ishare processes whose path starts with one of the PREFIXes (unlinked files
# too: objects being published are open unnamed files in the store).
daemon_files() {
  local pid
  for pid in $(ishare_pids "$ISHARE"); do
    find "/proc/$pid/fd" -mindepth 1 -printf "%l\t/proc/$pid/fd/%f\n" 2>/dev/null
  done | awk -F'\t' -v p="$*" 'BEGIN { n = split(p, pre, " ") }
    { for (i = 1; i <= n; i++) if (index($1, pre[i]) == 1) { printf "%s%c", $2, 0; break } }'
}

kernel_mount() { mkdir -p "$2" && mount -t erofs -o loop,ro "$1" "$2"; }

# store_objects STORE: how many objects the store holds.
store_objects() { "$ISHARE" store stat --store "$1" --json | jq -r .objects; }
# store_settle STORE N: waits (up to 60 s) until STORE holds N objects (a node
# daemon may publish after the unmounts; one daemon per mount has published before
# it exited), prints the count.
store_settle() {
  local i c
  for ((i = 0; i < 120; i++)); do
    c=$(store_objects "$1")
    [ "$c" != "$2" ] || break
    sleep 0.5
  done
  echo "$c"
}
# stop_leftover: after the last unmount of a measurement, the ishare processes
# should be gone (one daemon per mount exits with its mount); a node daemon may
# stay up: it gets SIGTERM after 10 s, so that every measurement starts from new
# processes. Counted in LEFTOVER for the report.
LEFTOVER=0
stop_leftover() {
  local left
  left=$(ishare_stop "$ISHARE" 10)
  [ -z "$left" ] || { LEFTOVER=$((LEFTOVER + 1)); log "ishare processes left after the unmounts, sent SIGTERM: $left"; }
}

# tree_stamp TREE: changes when the cached tree is made again.
tree_stamp() {
  if [ -e "$1.options" ]; then
    echo "$(cat "$1.options") $(stat -c %Y "$1.options")"
  else
    echo "legacy $(stat -c %Y "$1")"
  fi
}

# build_image IMAGE TREE: `ishare mkfs` (fingerprints on, its default), unless the
# cached image was made by the same binary from the same tree.
build_image() {
  local img=$1 tree=$2 stamp
  stamp="ishare=$MKFS_SHA tree=$(tree_stamp "$tree") opts=${MKFS_OPTS[*]}"
  if [ -e "$img" ] && [ "$(cat "$img.stamp" 2>/dev/null)" = "$stamp" ]; then return 0; fi
  log "ishare mkfs $img"
  rm -f "$img.stamp"
  "$MKFS_ISHARE" mkfs "${MKFS_OPTS[@]}" "$img" "$tree"
  echo "$stamp" >"$img.stamp"
}

# listing_digest DIR: SHA-256 of the SHA-256 of every regular file of DIR (sorted
# paths): reads every file and checks content and names at once, writing nothing.
# File contents are hashed by OpenSSL (SHA-NI, ~1 GB/s here; coreutils' sha256sum
# manages ~200 MB/s and would dominate the read times).
listing_digest() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r openssl dgst -sha256 -r | sha256sum | cut -c1-64)
}

# manifest TREE OUT: first line "# STAMP", second "# digest LISTING_DIGEST", then
# one line per regular file: "SHA256 SIZE INODE". Cached.
manifest() {
  local tree=$1 out=$2 stamp list
  stamp="$(tree_stamp "$tree") openssl-sha256"
  if [ -e "$out" ] && [ "$(head -n 1 "$out")" = "# $stamp" ]; then return 0; fi
  log "checksums of $tree"
  list=$WORK/list
  (cd "$tree" && find . -type f -print0 | sort -z) >"$list"
  (cd "$tree" && xargs -0 -r openssl dgst -sha256 -r <"$list") >"$list.sum"
  (cd "$tree" && xargs -0 -r stat -c '%s %i' <"$list") >"$list.stat"
  [ "$(wc -l <"$list.sum")" = "$(wc -l <"$list.stat")" ] || die "$tree: file names with newlines"
  {
    echo "# $stamp"
    echo "# digest $(sha256sum <"$list.sum" | cut -c1-64)"
    paste -d' ' <(cut -d' ' -f1 "$list.sum") "$list.stat"
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}
manifest_digest() { sed -n '2s/^# digest //p' "$1"; }

# derive_rootfs DIR PARENT PACKAGES REVISION: a copy of the root filesystem PARENT
# with PACKAGES (comma-separated, - for none) installed by apt in a chroot
# (--no-install-recommends; apt's lists and archives removed afterwards, as image
# builds do) and, unless REVISION is -, a few files changed as in a new release of
# the same image (/etc/image-release added, /etc/motd and /etc/hostname changed).
# Cached like bootstrap_rootfs: the recipe is in DIR.options.
derive_rootfs() {
  local dir=$1 parent=$2 pkgs=$3 rev=$4 recipe
  recipe="from=$(basename "$parent") packages=$pkgs revision=$rev"
  if [ -d "$dir" ] && [ "$(cat "$dir.options" 2>/dev/null)" = "$recipe" ]; then return 0; fi
  log "making $dir: $recipe"
  rm -rf "$dir" "$dir.tmp"
  cp -a "$parent" "$dir.tmp"
  if [ "$pkgs" != - ]; then
    # shellcheck disable=SC2086 # the package names are words
    # A private mount namespace: /proc in the chroot goes away with it.
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --mount --propagation private -- sh -ec '
      d=$1; shift
      mount -t proc proc "$d/proc"
      printf "#!/bin/sh\nexit 101\n" >"$d/usr/sbin/policy-rc.d"
      chmod 755 "$d/usr/sbin/policy-rc.d"
      export DEBIAN_FRONTEND=noninteractive
      chroot "$d" apt-get -q update
      chroot "$d" apt-get -q install -y --no-install-recommends "$@"
      chroot "$d" apt-get clean
      rm -f "$d/usr/sbin/policy-rc.d"
      rm -rf "$d"/var/lib/apt/lists/*
      umount "$d/proc"
    ' sh "$dir.tmp" ${pkgs//,/ } >"$dir.log" 2>&1 || die "apt-get in $dir.tmp failed, see $dir.log"
  fi
  if [ "$rev" != - ]; then
    echo "image release $rev" >"$dir.tmp/etc/image-release"
    echo "Welcome to image release $rev." >>"$dir.tmp/etc/motd"
    echo "image-$rev" >"$dir.tmp/etc/hostname"
  fi
  echo "$recipe" >"$dir.options"
  mv "$dir.tmp" "$dir"
}

# --- the image family (memory part; minbase is also the metadata part's) --------
# name | parent (- : bootstrapped) | packages added | revision
FAMILY=(
  "minbase - - -"
  "minbase-r2 minbase - r2"
  "curl minbase curl,ca-certificates -"
  "python minbase python3 -"
  "python-r2 python python3-yaml r2"
  "perl minbase perl,openssl -"
  "git minbase git -"
  "web minbase python3,curl,ca-certificates,git -"
  "dev - - -"
  "dev-r2 dev - r2"
)
want() { [[ " $PARTS " == *" $1 "* ]]; }
IMAGES=${IMAGES:-}
for name in $IMAGES; do
  printf '%s\n' "${FAMILY[@]}" | grep -q "^$name " || die "IMAGES: no image $name in the family"
done
NAMES=()
declare -A RECIPE=()
for f in "${FAMILY[@]}"; do
  read -r name parent pkgs rev <<<"$f"
  # The metadata part only needs minbase.
  want memory || want total || want speed || { want meta && [ "$name" = minbase ]; } || continue
  [ -z "$IMAGES" ] || [[ " $IMAGES " == *" $name "* ]] || [ "$name" = minbase ] || continue
  NAMES+=("$name")
  tree=$BENCH/rootfs-$SUITE-$name
  case $name in
    minbase) bootstrap_rootfs "$tree"; RECIPE[$name]="debootstrap --variant=minbase" ;;
    dev)
      bootstrap_rootfs "$tree" --include=$DEV_PACKAGES
      RECIPE[$name]="debootstrap --variant=minbase --include=$DEV_PACKAGES"
      ;;
    *)
      derive_rootfs "$tree" "$BENCH/rootfs-$SUITE-$parent" "$pkgs" "$rev"
      RECIPE[$name]="$parent"
      [ "$pkgs" = - ] || RECIPE[$name]+=" + apt-get install ${pkgs//,/ }"
      [ "$rev" = - ] || RECIPE[$name]+=" + 3 files changed"
      ;;
  esac
done

for name in "${NAMES[@]}"; do
  tree=$BENCH/rootfs-$SUITE-$name
  build_image "$DATA/$name.erofs" "$tree"
  manifest "$tree" "$DATA/$name.manifest"
done

# --- the big files (warm and cold parts) ---------------------------------------
# Incompressible and reproducible: AES-CTR keystreams.
BIG_TREE=$DATA/big-tree
BIG_IMG=$DATA/big.erofs
if want warm || want cold; then
  if [ ! -e "$BIG_TREE/.done" ]; then
    log "making $BIG_TREE (1 GiB and 256 MiB of AES-CTR keystream)"
    rm -rf "$BIG_TREE"
    mkdir -p "$BIG_TREE"
    head -c $((1 << 30)) /dev/zero | openssl enc -aes-128-ctr -nosalt \
      -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 >"$BIG_TREE/big.bin"
    head -c $((256 << 20)) /dev/zero | openssl enc -aes-128-ctr -nosalt \
      -K 0f0e0d0c0b0a09080706050403020100 -iv 00000000000000000000000000000000 >"$BIG_TREE/cold.bin"
    (cd "$BIG_TREE" && sha256sum big.bin cold.bin) >"$DATA/big.sha256"
    touch "$BIG_TREE/.done"
  fi
  build_image "$BIG_IMG" "$BIG_TREE"
  BIG_SHA=$(awk '$2 == "big.bin" { print $1 }' "$DATA/big.sha256")
  COLD_SHA=$(awk '$2 == "cold.bin" { print $1 }' "$DATA/big.sha256")
fi

# check_file FILE SHA256 WHAT: dies unless FILE's content has that digest.
check_file() {
  local got
  got=$(openssl dgst -sha256 -r <"$1" | cut -c1-64)
  [ "$got" = "$2" ] || die "WRONG CONTENT: $3: $1 has sha256 $got, the source $2"
}

REPORT=$WORK/report.md
: >"$REPORT"
out() { echo "$@" >>"$REPORT"; }
started_load=$(loadavg)

# --- 1. memory ----------------------------------------------------------------
# mem_run TOOL N: mounts the ten images, drops caches, reads (and checks) every
# regular file through every mount, and counts the page cache that it added:
#   ishare: the pages of every regular file the mount daemons hold open (the
#     images and the store objects, including objects still being published),
#     each inode once;
#   kernel: the image files' pages (the loop devices read them buffered), the loop
#     devices' own pages (EROFS metadata), and the pages of every regular file of
#     every mount.
# Both also report the growth of Cached in /proc/meminfo, which sees everything
# (directories too) but also whatever else the machine is doing.
# Appends "load accounted meminfo_delta read_s part1 part2 part3 rss_kib pss_kib
# processes" (RSS and PSS: sums over every ishare process, after the reads) to
# $WORK/log/$MEM_LOG.TOOL (MEM_LOG: mem, or total for the total part), unless the
# sentinel was dropped meanwhile (then MEM_OK=0).
MEM_LOG=mem
mem_run() {
  local tool=$1 n=$2 i name mnt store c0 c1 t0 t1 l0 acc p1 p2 p3 rss=0 pss=0 nproc=0 got kept=1
  store=$WORK/store.mem.$n
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    mnt=$WORK/mnt/$tool.$i
    if [ "$tool" = ishare ]; then
      ishare_mount "$DATA/$name.erofs" "$mnt" "$store"
    elif [ "$tool" = ishare-noverify ]; then
      ishare_mount "$DATA/$name.erofs" "$mnt" "$store" verify=off
    else
      kernel_mount "$DATA/$name.erofs" "$mnt"
    fi
  done
  l0=$(load1)
  drop_caches
  sentinel_arm
  c0=$(cached_bytes)
  t0=$(now)
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]}
    got=$(listing_digest "$WORK/mnt/$tool.$i")
    [ "$got" = "$(manifest_digest "$DATA/$name.manifest")" ] ||
      die "WRONG CONTENT through the $tool mount of $name (listing digest differs from the source's)"
  done
  t1=$(now)
  c1=$(cached_bytes)
  if [ "$tool" != kernel ]; then
    p1=0 p2=0 p3=0
    # Every ishare process: one daemon per mount, or one node daemon.
    read -r pss rss nproc < <(ishare_mem "$ISHARE")
    # Every file the daemons hold in the images' directory and the store, once each.
    read -r p1 _ _ < <(daemon_files "$DATA/" | "$PAGECACHE")
    # Objects: those the daemons hold (unpublished ones too) and every published one
    # (a daemon keeps only so many open once their files are closed), each once.
    read -r p2 _ _ < <({
      daemon_files "$store/"
      find "$store" -type f -print0
    } | "$PAGECACHE")
    # Files a daemon served unshared because it ran out of file descriptors: their
    # pages are in the FUSE mount's own page cache (no passthrough for them).
    local list=$WORK/log/unshared emfile unpub objects obytes
    : >"$list"
    for i in "${!NAMES[@]}"; do
      # (stderr: "ishare: warning: ..."; a log= file: "SECS.MS ishare[PID]: warning: ...")
      sed -n "s|^\([0-9.]* \)\{0,1\}ishare\(\[[0-9]*\]\)\{0,1\}: warning: $DATA/${NAMES[$i]}\.erofs: \(.*\): cannot [a-z]* its shared object in .*Too many open files.*; served unshared\$|\3|p" \
        "$WORK/log/daemon.$tool.$i" | sed "s|^|$WORK/mnt/$tool.$i|" | tr '\n' '\0' >>"$list"
    done
    emfile=$(tr -cd '\0' <"$list" | wc -c)
    unpub=$(cat "$WORK"/log/daemon."$tool".* | grep -c 'cannot publish its shared object.*Too many open files' || true)
    read -r p3 _ _ < <("$PAGECACHE" <"$list")
    acc=$((p1 + p2 + p3))
    # Cross-check: the store's files (objects published so far), by name.
    local named
    read -r named _ _ < <(find "$store" -type f -print0 | "$PAGECACHE")
    sentinel_kept || kept=0
    for i in "${!NAMES[@]}"; do EMFILE_OK=1 ishare_umount "$WORK/mnt/$tool.$i"; done
    # Every distinct fingerprint must have become one object (unless daemons ran
    # out of file descriptors: then some content may have no object). A node
    # daemon may still be publishing after the unmounts: wait for the count.
    if [ "$emfile" = 0 ] && [ "$unpub" = 0 ]; then
      objects=$(store_settle "$store" "$UNIQUE_N")
      [ "$objects" = "$UNIQUE_N" ] || die "the store has $objects objects, the images $UNIQUE_N distinct fingerprints"
    fi
    read -r objects obytes < <("$ISHARE" store stat --store "$store" --json | jq -r '"\(.objects) \(.bytes)"')
    stop_leftover
    rm -rf "$store" "$WORK"/log/daemon."$tool".*
    [ "$kept" = 0 ] || echo "$tool $n $emfile $unpub $objects $obytes $named" >>"$WORK/log/$MEM_LOG.emfile"
  else
    local devs=()
    for i in "${!NAMES[@]}"; do devs+=("$(findmnt -rno SOURCE -M "$WORK/mnt/$tool.$i")"); done
    read -r p1 _ _ < <(printf '%s\0' "${NAMES[@]/#/$DATA/}" | sed -z 's/$/.erofs/' | "$PAGECACHE")
    read -r p2 _ _ < <(printf '%s\0' "${devs[@]}" | "$PAGECACHE")
    read -r p3 _ _ < <(for i in "${!NAMES[@]}"; do
      find "$WORK/mnt/$tool.$i" -type f -print0
    done | "$PAGECACHE")
    acc=$((p1 + p2 + p3))
    sentinel_kept || kept=0
    for i in "${!NAMES[@]}"; do umount "$WORK/mnt/$tool.$i"; done
  fi
  MEM_OK=$kept
  [ "$kept" = 1 ] || return 0
  echo "$l0 $acc $((c1 - c0)) $(elapsed "$t0" "$t1") $p1 $p2 ${p3:-0} $rss $pss $nproc" >>"$WORK/log/$MEM_LOG.$tool"
}

# The family's unique content (memory and total parts).
family_unique() {
  # Unique content: distinct SHA-256 of non-empty files over all images (what
  # ishare's objects hold; the fingerprints are these digests).
  manifests=()
  for name in "${NAMES[@]}"; do manifests+=("$DATA/$name.manifest"); done
  read -r UNIQUE_N UNIQUE_B UNIQUE_P < <(grep -hv '^#' "${manifests[@]}" |
    awk '$2 > 0 && !seen[$1]++ { n++; b += $2; p += int(($2 + 4095) / 4096) * 4096 }
         END { printf "%d %.0f %.0f\n", n, b, p }')
  # Content of every image without sharing (hard links once): the kernel's floor.
  read -r ALL_B ALL_P < <(for m in "${manifests[@]}"; do
    grep -v '^#' "$m" | awk '!seen[$3]++ { b += $2; p += int(($2 + 4095) / 4096) * 4096 }
      END { printf "%.0f %.0f\n", b, p }'
  done | awk '{ b += $1; p += $2 } END { printf "%.0f %.0f\n", b, p }')
}
if want memory || want total; then family_unique; fi

if want memory; then
  log "memory: ${#NAMES[@]} images, $MEM_RUNS runs per tool"
  # Several runs share the log of the EMFILE counts.
  : >"$WORK/log/mem.emfile"
  mem_load_before=$(loadavg)
  for ((r = 1; r <= MEM_RUNS; r++)); do
    for tool in $MEM_TOOLS; do
      for _ in 1 2 3; do
        log "memory $tool $r/$MEM_RUNS (load $(load1))"
        mem_run "$tool" "$r"
        [ "$MEM_OK" = 0 ] || break
      done
      [ "$MEM_OK" = 1 ] || die "the page cache was dropped by someone else in 3 attempts: the machine is too busy"
    done
  done
  mem_load_after=$(loadavg)

  out "## 1. Memory: ${#NAMES[@]} images of a family, every file read through every mount"
  out
  out "| image | made as | entries | regular files | file data (MiB) | image (MiB) |"
  out "| --- | --- | ---: | ---: | ---: | ---: |"
  for name in "${NAMES[@]}"; do
    tree=$BENCH/rootfs-$SUITE-$name
    m=$DATA/$name.manifest
    out "| $name | ${RECIPE[$name]} | $(find "$tree" | wc -l) | $(grep -cv '^#' "$m") | $(grep -v '^#' "$m" | awk '!s[$3]++ { b += $2 } END { printf "%.1f", b / 1048576 }') | $(mib "$(stat -c %s "$DATA/$name.erofs")") |"
  done
  out
  out "- unique content: $UNIQUE_N distinct fingerprints (non-empty files), $(mib "$UNIQUE_B") MiB ($(mib "$UNIQUE_P") MiB in whole 4 KiB pages); all ${#NAMES[@]} images hold $(mib "$ALL_B") MiB ($(mib "$ALL_P") MiB in pages), $(ratio "$ALL_B" "$UNIQUE_B")× the unique content"
  out "- ishare: \`ishare mount -o inode_share,domain_id=…\` (verify=on, passthrough), a fresh store per run; ishare-noverify: the same with verify=off (objects copied without hashing, existing objects used without hashing the image's copy); kernel: \`mount -t erofs -o loop,ro\`; caches dropped after mounting, then SHA-256 (\`openssl dgst -sha256\`) of every regular file through each mount in turn, checked against the source trees"
  out "- accounted page cache: ishare: pages of the images the mount daemons hold open and of the store objects (held open or published), each once; kernel: pages of the image files (the loop devices read them through the page cache), of the loop devices (metadata) and of every file of every mount. meminfo: growth of \`Cached:\` − \`Shmem:\` (tmpfs left out), which includes directories and whatever else runs on the machine"
  out "- load average before / after: $mem_load_before / $mem_load_after"
  out
  # Metadata blocks (inodes, xattrs, directories, inline tails) as the kernel read
  # them through its loop devices: every image's own, whatever shares file data.
  META_B=
  [ ! -s "$WORK/log/mem.kernel" ] || META_B=$(awk '{ print $6 }' "$WORK/log/mem.kernel" | median)
  out "| tool | page cache growth (MiB) | ÷ unique content | ÷ unique content in pages | ÷ (unique content in pages + metadata) | meminfo Cached growth (MiB) | ÷ unique content | read time (s) | ishare processes' RSS (MiB) | their PSS (MiB) | 1-min load |"
  out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for tool in $MEM_TOOLS; do
    f=$WORK/log/mem.$tool
    acc=$(awk '{ print $2 }' "$f" | median)
    mi=$(awk '{ print $3 }' "$f" | median)
    rt=$(awk '{ print $4 }' "$f" | median)
    rss=- pss=-
    [ "$tool" = kernel ] || rss=$(awk '{ print $8 }' "$f" | median | awk '{ printf "%.0f", $1 / 1024 }')
    [ "$tool" = kernel ] || pss=$(awk '{ print $9 }' "$f" | median | awk '{ printf "%.0f", $1 / 1024 }')
    floor=-
    [ -z "$META_B" ] || floor=$(ratio "$acc" "$(awk -v a="$UNIQUE_P" -v b="$META_B" 'BEGIN { printf "%.0f", a + b }')")
    out "| $tool | $(mib "$acc") | $(ratio "$acc" "$UNIQUE_B") | $(ratio "$acc" "$UNIQUE_P") | $floor | $(mib "$mi") | $(ratio "$mi" "$UNIQUE_B") | $(printf %.1f "$rt") | $rss | $pss | $(awk '{ print $1 }' "$f" | range) |"
  done
  out
  [ -z "$META_B" ] || out "Metadata: $(mib "$META_B") MiB, the pages of the kernel's loop devices (the metadata blocks of all ${#NAMES[@]} images: inodes, xattrs, directories, inline file tails). Unique content in pages plus that ($(mib "$(awk -v a="$UNIQUE_P" -v b="$META_B" 'BEGIN { printf "%.0f", a + b }')") MiB) is what a page cache holds that keeps one copy of each distinct file and every image's metadata."
  out
  out "Every run (medians above): accounted MiB = parts; meminfo MiB; read time; load:"
  out
  for tool in $MEM_TOOLS; do
    while read -r l a m t p1 p2 p3 rss pss np; do
      if [ "$tool" != kernel ]; then
        parts="images $(mib "$p1") + objects $(mib "$p2") + files served unshared $(mib "$p3"); $np ishare processes: RSS $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB, PSS $(awk -v k="$pss" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
      else
        parts="image files $(mib "$p1") + loop devices $(mib "$p2") + mounted files $(mib "$p3")"
      fi
      out "- $tool: $(mib "$a") = $parts; meminfo $(mib "$m"); ${t}s; load $l"
    done <"$WORK/log/mem.$tool"
  done
  out
  while read -r tool r emfile unpub objects obytes named; do
    if [ "$emfile" != 0 ] || [ "$unpub" != 0 ]; then
      out "- $tool run $r: the daemons ran out of file descriptors (EMFILE, limit $(ulimit -Sn)): $emfile files served unshared (from the FUSE mount's own page cache), $unpub objects prepared but not published (private to their mount); the store ended with $objects objects for $UNIQUE_N distinct fingerprints"
    else
      out "- $tool run $r: every file shared; the store ended with $objects objects, one per distinct fingerprint"
    fi
    out "  (store: $(mib "$obytes") MiB in objects; pages of the store's files found by name after the reads: $(mib "$named") MiB)"
  done <"$WORK/log/mem.emfile"
  out
fi

# --- 2. warm sequential read ------------------------------------------------------
# dd_time FILE: reads FILE with dd bs=1M, prints the seconds it took.
dd_time() {
  local t0 t1
  t0=$(now)
  dd if="$1" of=/dev/null bs=1M status=none
  t1=$(now)
  elapsed "$t0" "$t1"
}

if want warm; then
  log "warm: 1 GiB sequential read, $WARM_RUNS runs per tool"
  I=$WORK/mnt/warm.ishare K=$WORK/mnt/warm.kernel
  ishare_mount "$BIG_IMG" "$I" "$WORK/store.warm"
  kernel_mount "$BIG_IMG" "$K"
  # First reads (ishare: prepares the object), checked.
  check_file "$I/big.bin" "$BIG_SHA" "ishare mount"
  check_file "$K/big.bin" "$BIG_SHA" "kernel mount"
  warm_load_before=$(loadavg)
  for ((r = 1; r <= WARM_RUNS; r++)); do
    # Alternate which tool goes first.
    if ((r % 2)); then order="ishare kernel"; else order="kernel ishare"; fi
    for tool in $order; do
      if [ "$tool" = ishare ]; then f=$I/big.bin; else f=$K/big.bin; fi
      for _ in 1 2 3; do
        # Cached for sure: read just before (others may drop caches between runs).
        cat "$f" >/dev/null
        sentinel_arm
        l=$(load1)
        t=$(dd_time "$f")
        sentinel_kept || continue
        awk -v t="$t" -v l="$l" 'BEGIN { printf "%.0f %s\n", 1024 / t, l }' >>"$WORK/log/warm.$tool"
        break
      done
    done
  done
  warm_load_after=$(loadavg)
  # The same content after the timed runs, and still cached (else the runs were not warm).
  check_file "$I/big.bin" "$BIG_SHA" "ishare mount"
  check_file "$K/big.bin" "$BIG_SHA" "kernel mount"
  read -r k_res _ _ < <(printf '%s\0' "$K/big.bin" | "$PAGECACHE")
  [ "$k_res" -ge $((1000 << 20)) ] || warn "kernel: only $(mib "$k_res") MiB of big.bin cached after the runs"
  read -r i_res _ _ < <(daemon_files "$WORK/store.warm/" | "$PAGECACHE")
  [ "$i_res" -ge $((1000 << 20)) ] || warn "ishare: only $(mib "$i_res") MiB of objects cached after the runs"
  ishare_umount "$I"
  umount "$K"
  out "## 2. Warm sequential read of a 1 GiB file (incompressible), \`dd bs=1M\`"
  out
  out "- the same image (\`ishare mkfs\`, 1 GiB + 256 MiB of AES-CTR keystream) through \`ishare mount -o inode_share\` (passthrough to the store object) and a kernel loop mount; the first read (ishare: preparing the object) is not timed; before each timed run the file is read once more (\`cat\`), so it is cached; $WARM_RUNS runs each, alternating; content checked before and after"
  out "- load average before / after: $warm_load_before / $warm_load_after"
  out
  out "| tool | median (MiB/s) | runs (MiB/s) | 1-min load |"
  out "| --- | ---: | --- | ---: |"
  for tool in ishare kernel; do
    f=$WORK/log/warm.$tool
    out "| $tool | $(awk '{ print $1 }' "$f" | median) | $(awk '{ printf "%s ", $1 }' "$f") | $(awk '{ print $2 }' "$f" | range) |"
  done
  wi=$(awk '{ print $1 }' "$WORK/log/warm.ishare" | median)
  wk=$(awk '{ print $1 }' "$WORK/log/warm.kernel" | median)
  WARM_RATIO=$(ratio "$wi" "$wk")
  out
  out "ishare / kernel: **${WARM_RATIO}×** (target ≥ 0.9×)"
  out
fi

# --- 3. cold first read -------------------------------------------------------------
# cold_run MODE N: one cold read of cold.bin (256 MiB), timed with dd, then checked.
#   kernel          loop mount (kept mounted), caches dropped
#   ishare-fresh    new daemon, empty store, caches dropped: the open copies the
#                   file from the image into a new object while hashing it
#   ishare-stored   new daemon, the object already in the store (left by the
#                   previous ishare-fresh run), caches dropped: the open hashes the
#                   file in its own image before it uses the object (verify=on)
#   ishare-noverify new daemon, empty store, verify=off: copy without hashing
cold_run() {
  local mode=$1 n=$2 mnt store t l
  case $mode in
    kernel) mnt=$WORK/mnt/cold.kernel ;;
    *)
      mnt=$WORK/mnt/cold.ishare
      store=$WORK/store.cold
      [ "$mode" = ishare-stored ] || rm -rf "$store"
      if [ "$mode" = ishare-noverify ]; then
        ishare_mount "$BIG_IMG" "$mnt" "$store" verify=off
      else
        ishare_mount "$BIG_IMG" "$mnt" "$store"
      fi
      ;;
  esac
  drop_caches
  l=$(load1)
  t=$(dd_time "$mnt/cold.bin")
  check_file "$mnt/cold.bin" "$COLD_SHA" "$mode"
  [ "$mode" = kernel ] || ishare_umount "$mnt"
  awk -v t="$t" -v l="$l" 'BEGIN { printf "%.3f %.0f %s\n", t, 256 / t, l }' >>"$WORK/log/cold.$mode"
}

if want cold; then
  log "cold: first read of 256 MiB, $RUNS runs per mode"
  kernel_mount "$BIG_IMG" "$WORK/mnt/cold.kernel"
  cold_load_before=$(loadavg)
  for ((r = 1; r <= RUNS; r++)); do
    if ((r % 2)); then order="kernel ishare-fresh ishare-stored ishare-noverify"; else order="ishare-fresh ishare-stored ishare-noverify kernel"; fi
    for mode in $order; do cold_run "$mode" "$r"; done
  done
  cold_load_after=$(loadavg)
  umount "$WORK/mnt/cold.kernel"
  rm -rf "$WORK/store.cold"
  out "## 3. Cold first read of a 256 MiB file (incompressible), \`dd bs=1M\`"
  out
  out "- caches dropped before each run (\`sync; echo 3 > /proc/sys/vm/drop_caches\`), image on $(findmnt -no FSTYPE -T "$BIG_IMG"); each ishare run is a new mount daemon; the time includes the open, that is preparing and verifying the object; content checked after each run"
  out "- load average before / after: $cold_load_before / $cold_load_after"
  out
  out "| mode | median (s) | ÷ kernel | runs (s) | 1-min load |"
  out "| --- | ---: | ---: | --- | ---: |"
  ck=$(awk '{ print $1 }' "$WORK/log/cold.kernel" | median)
  for mode in kernel ishare-fresh ishare-stored ishare-noverify; do
    case $mode in
      kernel) label="kernel loop mount" ;;
      ishare-fresh) label="ishare, empty store (copy + SHA-256 + publish)" ;;
      ishare-stored) label="ishare, object already in the store (SHA-256 of the image's copy, then the object)" ;;
      ishare-noverify) label="ishare, empty store, verify=off (copy only)" ;;
    esac
    f=$WORK/log/cold.$mode
    c=$(awk '{ print $1 }' "$f" | median)
    out "| $label | $(printf %.3f "$c") | $(ratio "$c" "$ck") | $(awk '{ printf "%s ", $1 }' "$f") | $(awk '{ print $3 }' "$f" | range) |"
  done
  COLD_RATIO=$(ratio "$(awk '{ print $1 }' "$WORK/log/cold.ishare-fresh" | median)" "$ck")
  out
  out "ishare (empty store) / kernel: **${COLD_RATIO}×** (target ≤ 1.5×)"
  out
fi

# --- 4. metadata -----------------------------------------------------------------------
# walk DIR: type, mode, owner, size (not of directories: each file system has its
# own), mtime and path of every entry (one lstat each), in readdir order.
walk() {
  (cd "$1" && find . -mindepth 1 \( -type d -printf '%y %m %U %G - %Ts %p\n' \) \
    -o -printf '%y %m %U %G %s %Ts %p\n')
}
# walk_digest: the SHA-256 of walk's output (on stdin) in sorted order.
walk_digest() { sort | sha256sum | cut -c1-64; }
META_TOOLS="ishare kernel squashfuse squashfuse_ll"
meta_mount() {
  local tool=$1 mnt=$WORK/mnt/meta.$1
  mkdir -p "$mnt"
  case $tool in
    ishare) ishare_mount "$DATA/minbase.erofs" "$mnt" "$WORK/store.meta" ;;
    kernel) kernel_mount "$DATA/minbase.erofs" "$mnt" ;;
    squashfuse | squashfuse_ll) "$tool" "$SQFS" "$mnt" ;;
  esac
}
meta_umount() {
  if [ "$1" = ishare ]; then ishare_umount "$WORK/mnt/meta.$1"; else umount "$WORK/mnt/meta.$1"; fi
}
# meta_run TOOL MODE: one timed walk, checked against the source's.
meta_run() {
  local tool=$1 mode=$2 t0 t1 got l
  l=$(load1)
  t0=$(now)
  got=$(walk "$WORK/mnt/meta.$tool")
  t1=$(now)
  got=$(walk_digest <<<"$got")
  [ "$got" = "$META_DIGEST" ] || die "WRONG METADATA through $tool (walk digest differs from the source's)"
  echo "$(elapsed "$t0" "$t1") $l" >>"$WORK/log/meta.$tool.$mode"
}

if want meta; then
  MINBASE=$BENCH/rootfs-$SUITE-minbase
  SQFS=$DATA/minbase.squashfs
  stamp="$(tree_stamp "$MINBASE") $(mksquashfs -version | head -n 1)"
  if [ ! -e "$SQFS" ] || [ "$(cat "$SQFS.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "mksquashfs $SQFS"
    rm -f "$SQFS" "$SQFS.stamp"
    mksquashfs "$MINBASE" "$SQFS" -noappend -quiet -no-progress >/dev/null
    echo "$stamp" >"$SQFS.stamp"
  fi
  META_DIGEST=$(walk "$MINBASE" | walk_digest)
  META_ENTRIES=$(find "$MINBASE" -mindepth 1 | wc -l)
  log "meta: walk of $META_ENTRIES entries, $RUNS cold and $RUNS warm runs per tool"
  meta_load_before=$(loadavg)
  # Cold: a new mount each run, caches dropped (dentries and inodes too).
  for ((r = 1; r <= RUNS; r++)); do
    for tool in $META_TOOLS; do
      meta_mount "$tool"
      drop_caches
      meta_run "$tool" cold
      meta_umount "$tool"
    done
  done
  # Warm: one mount each, walked once before the timed runs.
  for tool in $META_TOOLS; do
    meta_mount "$tool"
    walk "$WORK/mnt/meta.$tool" >/dev/null
  done
  for ((r = 1; r <= RUNS; r++)); do
    for tool in $META_TOOLS; do
      for _ in 1 2 3; do
        walk "$WORK/mnt/meta.$tool" >/dev/null
        sentinel_arm
        meta_run "$tool" warm
        sentinel_kept && break
        sed -i '$d' "$WORK/log/meta.$tool.warm"
      done
    done
  done
  for tool in $META_TOOLS; do meta_umount "$tool"; done
  rm -rf "$WORK/store.meta"
  meta_load_after=$(loadavg)
  out "## 4. Metadata: lstat of every entry of the minbase image"
  out
  out "- \`find MNT -printf '%y %m %U %G %s %Ts %p'\` over $META_ENTRIES entries (timed: its output goes to a shell variable), output sorted, hashed and checked against the source tree's; the same tree as an \`ishare mkfs\` image through \`ishare mount -o inode_share\` and a kernel loop mount, and as a squashfs (mksquashfs $(mksquashfs -version | head -n 1 | awk '{ print $3 }'), default gzip, $(mib "$(stat -c %s "$SQFS")") MiB) through squashfuse and squashfuse_ll $(dpkg-query -W -f '${Version}' squashfuse)"
  out "- cold: a new mount and caches dropped before each run; warm: one mount per tool, walked once just before each timed run; tools alternate"
  out "- load average before / after: $meta_load_before / $meta_load_after"
  out
  out "| tool | cold median (s) | warm median (s) | cold runs (s) | warm runs (s) | 1-min load |"
  out "| --- | ---: | ---: | --- | --- | ---: |"
  for tool in $META_TOOLS; do
    c=$WORK/log/meta.$tool.cold w=$WORK/log/meta.$tool.warm
    out "| $tool | $(awk '{ print $1 }' "$c" | median | xargs printf %.3f) | $(awk '{ print $1 }' "$w" | median | xargs printf %.3f) | $(awk '{ printf "%s ", $1 }' "$c") | $(awk '{ printf "%s ", $1 }' "$w") | $(cat "$c" "$w" | awk '{ print $2 }' | range) |"
  done
  out
fi

# --- 5. total memory (issue 11) ------------------------------------------------------
# The memory part's runs (mem_run), ishare with verify=on against kernel loop mounts,
# reported as the issue asks: page cache growth plus the PSS of every ishare process
# (one daemon per mount, or one node daemon), over the unique content.
declare -A TOTAL_RATIO=()
if want total; then
  log "total: ${#NAMES[@]} images, $TOTAL_RUNS runs per tool"
  MEM_LOG=total
  : >"$WORK/log/total.emfile"
  total_load_before=$(loadavg)
  for ((r = 1; r <= TOTAL_RUNS; r++)); do
    for tool in $TOTAL_TOOLS; do
      for _ in 1 2 3; do
        log "total $tool $r/$TOTAL_RUNS (load $(load1))"
        mem_run "$tool" "$r"
        [ "$MEM_OK" = 0 ] || break
      done
      [ "$MEM_OK" = 1 ] || die "the page cache was dropped by someone else in 3 attempts: the machine is too busy"
    done
  done
  MEM_LOG=mem
  total_load_after=$(loadavg)
  out "## 5. Total memory: page cache growth + PSS of every ishare process, ${#NAMES[@]} images"
  out
  out "- the images of part 1 (${#NAMES[@]} of the family; unique content $UNIQUE_N distinct fingerprints, $(mib "$UNIQUE_B") MiB; all images hold $(mib "$ALL_B") MiB); each run mounts all of them (ishare: \`ishare mount -o inode_share\`, verify=on, a fresh store; kernel: \`mount -t erofs -o loop,ro\`), drops caches, then reads every regular file through every mount (SHA-256, checked against the source trees), then counts"
  out "- page cache growth: as in part 1 (ishare: pages of the images and store objects the ishare processes hold or the store has; kernel: image files, loop devices and every mounted file; each inode once); meminfo: growth of \`Cached:\` − \`Shmem:\`"
  out "- PSS / RSS: sums of \`Pss:\` / \`Rss:\` in /proc/PID/smaps_rollup over every process whose executable is the ishare binary of this run (after the reads, all mounts still up); the kernel mounts have no process (their kernel memory — inodes, dentries, loop devices — is in neither figure)"
  out "- total ÷ unique = (page cache growth + PSS) ÷ unique content; target ≤ 1.45×"
  out "- $TOTAL_RUNS run(s) per tool, medians; load average before / after: $total_load_before / $total_load_after"
  out
  out "| tool | page cache growth (MiB) | ÷ unique | PSS total (MiB) | RSS total (MiB) | ishare processes | **(growth + PSS) ÷ unique** | meminfo growth (MiB) | (meminfo + PSS) ÷ unique | read time (s) | 1-min load |"
  out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for tool in $TOTAL_TOOLS; do
    f=$WORK/log/total.$tool
    acc=$(awk '{ print $2 }' "$f" | median)
    mi=$(awk '{ print $3 }' "$f" | median)
    rt=$(awk '{ print $4 }' "$f" | median)
    if [ "$tool" = kernel ]; then
      pss=0 rss=0 np=0
    else
      rss=$(awk '{ print $8 * 1024 }' "$f" | median)
      pss=$(awk '{ print $9 * 1024 }' "$f" | median)
      np=$(awk '{ print $10 }' "$f" | median)
    fi
    TOTAL_RATIO[$tool]=$(ratio "$(awk -v a="$acc" -v b="$pss" 'BEGIN { printf "%.0f", a + b }')" "$UNIQUE_B")
    out "| $tool | $(mib "$acc") | $(ratio "$acc" "$UNIQUE_B") | $(mib "$pss") | $(mib "$rss") | $np | **${TOTAL_RATIO[$tool]}×** | $(mib "$mi") | $(ratio "$(awk -v a="$mi" -v b="$pss" 'BEGIN { printf "%.0f", a + b }')" "$UNIQUE_B") | $(printf %.1f "$rt") | $(awk '{ print $1 }' "$f" | range) |"
  done
  out
  out "Every run: accounted MiB = parts; ishare processes; meminfo MiB; read time; load:"
  out
  for tool in $TOTAL_TOOLS; do
    while read -r l a m t p1 p2 p3 rss pss np; do
      if [ "$tool" != kernel ]; then
        parts="images $(mib "$p1") + objects $(mib "$p2") + files served unshared $(mib "$p3"); $np ishare processes: PSS $(mib $((pss * 1024))) MiB, RSS $(mib $((rss * 1024))) MiB"
      else
        parts="image files $(mib "$p1") + loop devices $(mib "$p2") + mounted files $(mib "$p3")"
      fi
      out "- $tool: $(mib "$a") = $parts; meminfo $(mib "$m"); ${t}s; load $l"
    done <"$WORK/log/total.$tool"
  done
  while read -r tool r emfile unpub objects obytes named; do
    [ "$emfile" = 0 ] && [ "$unpub" = 0 ] && continue
    out "- $tool run $r: EMFILE: $emfile files served unshared, $unpub objects not published; the store ended with $objects objects for $UNIQUE_N distinct fingerprints"
  done <"$WORK/log/total.emfile"
  out
fi

# --- 6. many mounts (issue 11) ----------------------------------------------------------
# MANY_N small distinct images (a few hundred KiB each): every tree holds the same
# common files, the files of its group (tree number mod 10) and its own files, all
# AES-CTR keystream slices (incompressible, reproducible), plus a few small text
# files, a symlink and an empty file. Made once, cached in $DATA/many.
MANY=$DATA/many
MANY_RECIPE="small-tree v1: 12 common + 8 group + 10 own keystream files"
# keystream_files DIR KEY COUNT SEED: COUNT files DIR/fNN.bin of 300 B to 24 KiB
# (sizes from SEED), consecutive slices of the AES-128-CTR keystream of KEY.
keystream_files() {
  local dir=$1 key=$2 count=$3 seed=$4 k off=0 total=0 sizes=()
  mkdir -p "$dir"
  for ((k = 0; k < count; k++)); do
    sizes+=($((300 + (k * 7919 + seed * 104729) % 24000)))
    total=$((total + sizes[k]))
  done
  head -c "$total" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000 >"$dir.stream"
  for ((k = 0; k < count; k++)); do
    dd if="$dir.stream" of="$dir/$(printf 'f%02d.bin' "$k")" bs=64K iflag=skip_bytes,count_bytes \
      skip="$off" count="${sizes[k]}" status=none
    off=$((off + sizes[k]))
  done
  rm -f "$dir.stream"
}
# small_tree N: $MANY/tree.NNN (cached: the recipe in tree.NNN.options).
small_tree() {
  local n=$1 nnn tree
  nnn=$(printf %03d "$n")
  tree=$MANY/tree.$nnn
  if [ -d "$tree" ] && [ "$(cat "$tree.options" 2>/dev/null)" = "$MANY_RECIPE" ]; then return 0; fi
  rm -rf "$tree" "$tree.tmp"
  mkdir -p "$tree.tmp"/{etc,usr/bin,usr/lib,usr/share,var/lib}
  cp -a "$MANY/common" "$tree.tmp/usr/lib/common"
  cp -a "$MANY/group.$((n % 10))" "$tree.tmp/usr/share/group"
  keystream_files "$tree.tmp/var/lib/own" "$(printf 'aa%030x' "$n")" 10 "$((n + 100))"
  echo "small-$nnn" >"$tree.tmp/etc/hostname"
  printf 'image %s\ngroup %s\n' "$nnn" "$((n % 10))" >"$tree.tmp/etc/image-release"
  printf 'PRETTY_NAME="small image"\nID=small\n' >"$tree.tmp/etc/os-release"
  : >"$tree.tmp/etc/empty"
  ln -s ../lib/common/f00.bin "$tree.tmp/usr/bin/app"
  chmod 0755 "$tree.tmp/usr/lib/common/f00.bin"
  find "$tree.tmp" -exec touch -h -d @1700000000 {} +
  echo "$MANY_RECIPE" >"$tree.options"
  mv "$tree.tmp" "$tree"
}
# many_run TOOL N: mounts images 1..10 (ishare: -o inode_share, a fresh store),
# reads every file through them (checked), measures; mounts 11..MANY_N, reads every
# file through all of them (checked), measures; unmounts. Appends "load
# pss10 rss10 np10 pc10 slab10 pss rss np pc slab mount_s read_s" to
# $WORK/log/many.TOOL (PSS, RSS: KiB over every ishare process; pc: page cache
# accounted as in the memory part, bytes; slab: growth of Slab in /proc/meminfo
# since before the first mount, bytes; mount_s, read_s: mounting images
# 11..MANY_N, reading all).
many_read() {
  local tool=$1 from=$2 to=$3 i got
  for ((i = from; i < to; i++)); do
    got=$(listing_digest "$WORK/mnt/many.$tool.$i")
    [ "$got" = "$(manifest_digest "$MANY/$(printf %03d "$i").manifest")" ] ||
      die "WRONG CONTENT through the $tool mount of small image $i (listing digest differs from the source's)"
  done
}
many_mount() {
  local tool=$1 i=$2 img
  img=$MANY/$(printf %03d "$i").erofs
  if [ "$tool" = ishare ]; then
    ishare_mount "$img" "$WORK/mnt/many.$tool.$i" "$WORK/store.many"
  else
    kernel_mount "$img" "$WORK/mnt/many.$tool.$i"
  fi
}
meminfo_kib() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }
# many_measure TOOL MOUNTED: the figures with images 0..MOUNTED-1 mounted.
many_measure() {
  local tool=$1 n=$2 pss=0 rss=0 np=0 pc i
  if [ "$tool" = ishare ]; then
    read -r pss rss np < <(ishare_mem "$ISHARE")
    # The images and objects the ishare processes hold, and every published object.
    read -r pc _ _ < <({
      daemon_files "$MANY/" "$WORK/store.many/"
      find "$WORK/store.many" -type f -print0
    } | "$PAGECACHE")
  else
    # The image files, the loop devices, every mounted file.
    read -r pc _ _ < <(for ((i = 0; i < n; i++)); do
      printf '%s\0' "$MANY/$(printf %03d "$i").erofs" "$(findmnt -rno SOURCE -M "$WORK/mnt/many.$tool.$i")"
      find "$WORK/mnt/many.$tool.$i" -type f -print0
    done | "$PAGECACHE")
  fi
  echo "$pss $rss $np $pc $((($(meminfo_kib Slab) - MANY_S0) * 1024))"
}
many_run() {
  local tool=$1 i l at10 atn t0 t1 t2 objects
  rm -rf "$WORK/store.many"
  l=$(load1)
  drop_caches
  MANY_S0=$(meminfo_kib Slab)
  for ((i = 0; i < 10; i++)); do many_mount "$tool" "$i"; done
  many_read "$tool" 0 10
  at10=$(many_measure "$tool" 10)
  t0=$(now)
  for ((i = 10; i < MANY_N; i++)); do many_mount "$tool" "$i"; done
  t1=$(now)
  many_read "$tool" 0 "$MANY_N"
  t2=$(now)
  atn=$(many_measure "$tool" "$MANY_N")
  for ((i = 0; i < MANY_N; i++)); do
    if [ "$tool" = ishare ]; then ishare_umount "$WORK/mnt/many.$tool.$i"; else umount "$WORK/mnt/many.$tool.$i"; fi
  done
  if [ "$tool" = ishare ]; then
    objects=$(store_settle "$WORK/store.many" "$MANY_UNIQUE_N")
    [ "$objects" = "$MANY_UNIQUE_N" ] || die "many: the store has $objects objects, the images $MANY_UNIQUE_N distinct fingerprints"
    stop_leftover
    rm -rf "$WORK/store.many" "$WORK"/log/daemon.many.*
  fi
  echo "$l $at10 $atn $(elapsed "$t0" "$t1") $(elapsed "$t1" "$t2")" >>"$WORK/log/many.$tool"
}

if want many; then
  [ "$MANY_N" -gt 10 ] || die "MANY_N must be above 10"
  mkdir -p "$MANY"
  if [ "$(cat "$MANY/templates.options" 2>/dev/null)" != "$MANY_RECIPE" ]; then
    log "making the templates of the small trees in $MANY"
    rm -rf "$MANY/common" "$MANY"/group.*
    keystream_files "$MANY/common" "$(printf 'cc%030x' 0)" 12 1
    for g in 0 1 2 3 4 5 6 7 8 9; do keystream_files "$MANY/group.$g" "$(printf 'bb%030x' "$g")" 8 "$((g + 10))"; done
    echo "$MANY_RECIPE" >"$MANY/templates.options"
  fi
  log "many: $MANY_N small images (trees, images, checksums; cached)"
  for ((i = 0; i < MANY_N; i++)); do
    small_tree "$i"
    nnn=$(printf %03d "$i")
    build_image "$MANY/$nnn.erofs" "$MANY/tree.$nnn"
    manifest "$MANY/tree.$nnn" "$MANY/$nnn.manifest"
  done
  read -r MANY_UNIQUE_N MANY_UNIQUE_B < <(for ((i = 0; i < MANY_N; i++)); do grep -v '^#' "$MANY/$(printf %03d "$i").manifest"; done |
    awk '$2 > 0 && !seen[$1]++ { n++; b += $2 } END { printf "%d %.0f\n", n, b }')
  MANY_ALL_B=$(for ((i = 0; i < MANY_N; i++)); do grep -v '^#' "$MANY/$(printf %03d "$i").manifest"; done | awk '{ b += $2 } END { printf "%.0f\n", b }')
  many_load_before=$(loadavg)
  for ((r = 1; r <= MANY_RUNS; r++)); do
    if ((r % 2)); then order="ishare kernel"; else order="kernel ishare"; fi
    for tool in $order; do
      log "many $tool $r/$MANY_RUNS (load $(load1))"
      many_run "$tool" "$r"
    done
  done
  many_load_after=$(loadavg)
  n1=$((MANY_N - 10))
  out "## 6. Many mounts: PSS of the ishare processes with 10 and with $MANY_N mounts of small images"
  out
  out "- $MANY_N distinct small images (\`ishare mkfs\`, same options as above): each tree $(find "$MANY/tree.000" | wc -l) entries, $(mib "$(grep -v '^#' "$MANY/000.manifest" | awk '{ b += $2 } END { print b }')") MiB of file data (12 files common to all, 8 shared by a group of a tenth of the images, 10 of its own, AES-CTR keystream slices of 300 B–24 KiB; small text files, an empty file, a symlink); image $(mib "$(stat -c %s "$MANY/000.erofs")") MiB; $MANY_UNIQUE_N distinct fingerprints, $(mib "$MANY_UNIQUE_B") MiB unique of $(mib "$MANY_ALL_B") MiB in all"
  out "- each run: caches dropped; images 1–10 mounted (ishare: \`ishare mount -o inode_share\`, verify=on, a fresh store; kernel: \`mount -t erofs -o loop,ro\`), every file read through them (SHA-256, checked); measured; images 11–$MANY_N mounted, every file of all $MANY_N mounts read (checked); measured; then all unmounted and (ishare) the store checked to hold one object per distinct fingerprint"
  out "- PSS / RSS: sums of \`Pss:\` / \`Rss:\` of /proc/PID/smaps_rollup over every process whose executable is this run's ishare binary; per further mount: (PSS@$MANY_N − PSS@10) ÷ $n1. Targets: PSS ≤ 40 MiB with 10 mounts, ≤ 1 MiB per further mount"
  out "- for comparison (both tools): the page cache, counted as in part 1 (\`mincore\`; ishare: the images and objects its processes hold and the published objects; kernel: the image files, the loop devices, every mounted file), and the growth of \`Slab:\` in /proc/meminfo since before the first mount (machine-wide: other work shows too); kernel mounts have no process, their cost is in the kernel"
  out "- $MANY_RUNS run(s) per tool, medians; load average before / after: $many_load_before / $many_load_after"
  out
  out "| tool | PSS @10 (MiB) | PSS @$MANY_N (MiB) | **PSS per further mount (MiB)** | RSS @10 / @$MANY_N (MiB) | processes @10 / @$MANY_N | page cache @10 / @$MANY_N (MiB) | Slab growth @10 / @$MANY_N (MiB) | page cache + slab per further mount (MiB) | mounting $n1 (s) | reading all $MANY_N (s) |"
  out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for tool in ishare kernel; do
    f=$WORK/log/many.$tool
    [ -s "$f" ] || continue
    med() { awk -v c="$1" '{ print $c }' "$f" | median; }
    p10=$(med 2) r10=$(med 3) n10=$(med 4) c10=$(med 5) s10=$(med 6)
    pn=$(med 7) rn=$(med 8) nn=$(med 9) cn=$(med 10) sn=$(med 11) mt=$(med 12) rt=$(med 13)
    per=$(awk -v a="$pn" -v b="$p10" -v n="$n1" 'BEGIN { printf "%.2f", (a - b) / n / 1024 }')
    kper=$(awk -v a="$cn" -v b="$c10" -v c="$sn" -v d="$s10" -v n="$n1" 'BEGIN { printf "%.2f", ((a - b) + (c - d)) / n / 1048576 }')
    if [ "$tool" = kernel ]; then
      out "| kernel | - | - | - | - | - | $(mib "$c10") / $(mib "$cn") | $(mib "$s10") / $(mib "$sn") | $kper | $(printf %.2f "$mt") | $(printf %.2f "$rt") |"
    else
      out "| ishare | **$(mib $((${p10%.*} * 1024)))** | $(mib $((${pn%.*} * 1024))) | **$per** | $(mib $((${r10%.*} * 1024))) / $(mib $((${rn%.*} * 1024))) | $n10 / $nn | $(mib "$c10") / $(mib "$cn") | $(mib "$s10") / $(mib "$sn") | $kper | $(printf %.2f "$mt") | $(printf %.2f "$rt") |"
    fi
  done
  out
  out "Every run (load; @10: PSS KiB, RSS KiB, processes, page cache bytes, Slab growth bytes; @$MANY_N: the same; mount s; read s):"
  out
  for tool in ishare kernel; do
    [ -s "$WORK/log/many.$tool" ] || continue
    while read -r line; do out "- $tool: $line"; done <"$WORK/log/many.$tool"
  done
  out
fi

# --- 7. speed (issue 11) -------------------------------------------------------------------
# The family's images through `ishare mount -o inode_share` (verify=on) and kernel
# loop mounts: every file read cold (caches dropped after mounting; ishare: a fresh
# store) and warm; a warm stat walk; EXECS execs of `chroot M apt-config dump`
# spread over the mounts. Every output checked against the source trees.
speed_mnt() { echo "$WORK/mnt/speed.$1.$2"; }
speed_mount() {
  local tool=$1 i
  for i in "${!NAMES[@]}"; do
    if [ "$tool" = ishare ]; then
      ishare_mount "$DATA/${NAMES[$i]}.erofs" "$(speed_mnt "$tool" "$i")" "$WORK/store.speed"
    else
      kernel_mount "$DATA/${NAMES[$i]}.erofs" "$(speed_mnt "$tool" "$i")"
    fi
  done
}
# speed_umount TOOL [keep]: unmounts; ishare: its processes end, and the store goes
# unless kept.
speed_umount() {
  local tool=$1 keep=${2:-} i
  for i in "${!NAMES[@]}"; do
    if [ "$tool" = ishare ]; then ishare_umount "$(speed_mnt "$tool" "$i")"; else umount "$(speed_mnt "$tool" "$i")"; fi
  done
  if [ "$tool" = ishare ]; then
    stop_leftover
    rm -rf "$WORK"/log/daemon.speed.*
    [ -n "$keep" ] || rm -rf "$WORK/store.speed"
  fi
}
# speed_read TOOL: SHA-256 of every regular file of every mount, checked.
speed_read() {
  local tool=$1 i got
  for i in "${!NAMES[@]}"; do
    got=$(listing_digest "$(speed_mnt "$tool" "$i")")
    [ "$got" = "$(manifest_digest "$DATA/${NAMES[$i]}.manifest")" ] ||
      die "WRONG CONTENT through the $tool mount of ${NAMES[$i]} (speed part)"
  done
}
# stat_walk DIR...: `find DIR -printf '%s %m\n'` (directories' sizes as -: each file
# system has its own).
stat_walk() {
  local d
  for d in "$@"; do find "$d" \( -type d -printf '- %m\n' \) -o -printf '%s %m\n'; done
}
# speed_time KIND TOOL CMD...: runs CMD, appends "seconds load" to
# $WORK/log/speed.KIND.TOOL.
speed_time() {
  local kind=$1 tool=$2 t0 t1 l
  shift 2
  l=$(load1)
  t0=$(now)
  "$@"
  t1=$(now)
  echo "$(elapsed "$t0" "$t1") $l" >>"$WORK/log/speed.$kind.$tool"
}
speed_walk() {
  local tool=$1 i mnts=() got
  for i in "${!NAMES[@]}"; do mnts+=("$(speed_mnt "$tool" "$i")"); done
  got=$(stat_walk "${mnts[@]}")
  SPEED_GOT=$got
}
speed_exec() {
  local tool=$1 k n=${#NAMES[@]}
  for ((k = 0; k < EXECS; k++)); do
    chroot "$(speed_mnt "$tool" $((k % n)))" apt-config dump >"$WORK/out/$k" 2>&1 ||
      die "chroot $(speed_mnt "$tool" $((k % n))) apt-config dump failed: $(head -n 3 "$WORK/out/$k")"
  done
}
speed_exec_check() {
  local tool=$1 k n=${#NAMES[@]} got
  for ((k = 0; k < EXECS; k++)); do
    got=$(sha256sum <"$WORK/out/$k" | cut -c1-64)
    [ "$got" = "${APTCONF[$((k % n))]}" ] ||
      die "WRONG OUTPUT of apt-config dump through the $tool mount of ${NAMES[$((k % n))]}"
  done
  rm -f "$WORK"/out/*
}

if want speed; then
  log "speed: ${#NAMES[@]} images; $SPEED_COLD_RUNS cold and $SPEED_RUNS warm runs per tool; $EXECS execs per run"
  mkdir -p "$WORK/out"
  mount -t tmpfs -o size=256m ishare-bench-out "$WORK/out"
  # Expected outputs, from the source trees.
  SPEED_WALK_DIGEST=$(for name in "${NAMES[@]}"; do stat_walk "$BENCH/rootfs-$SUITE-$name"; done | walk_digest)
  SPEED_ENTRIES=$(for name in "${NAMES[@]}"; do find "$BENCH/rootfs-$SUITE-$name"; done | wc -l)
  APTCONF=()
  for name in "${NAMES[@]}"; do
    APTCONF+=("$(chroot "$BENCH/rootfs-$SUITE-$name" apt-config dump 2>&1 | sha256sum | cut -c1-64)")
  done
  SPEED_FILES=0 SPEED_BYTES=0
  for name in "${NAMES[@]}"; do
    read -r a b < <(grep -v '^#' "$DATA/$name.manifest" | awk '{ n++; b += $2 } END { printf "%d %.0f\n", n, b }')
    SPEED_FILES=$((SPEED_FILES + a)) SPEED_BYTES=$((SPEED_BYTES + b))
  done
  speed_load_before=$(loadavg)
  # Cold: mount, drop caches, read everything; a new store (and new ishare
  # processes) each run. ishare then again with the store that run prepared, as after
  # a reboot: new processes, the records and objects on disk, nothing cached.
  for ((r = 1; r <= SPEED_COLD_RUNS; r++)); do
    if ((r % 2)); then order="ishare kernel"; else order="kernel ishare"; fi
    for tool in $order; do
      log "speed: cold read, $tool $r/$SPEED_COLD_RUNS (load $(load1))"
      rm -rf "$WORK/store.speed"
      speed_mount "$tool"
      drop_caches
      speed_time cold "$tool" speed_read "$tool"
      [ "$tool" = ishare ] || { speed_umount "$tool"; continue; }
      speed_umount "$tool" keep
      log "speed: cold read, store prepared before, $tool $r/$SPEED_COLD_RUNS (load $(load1))"
      speed_mount "$tool"
      drop_caches
      speed_time coldkept "$tool" speed_read "$tool"
      speed_umount "$tool"
    done
  done
  # Warm: both tools mounted (ishare: a fresh store), everything read once and one
  # exec per mount before the timed runs.
  rm -rf "$WORK/store.speed"
  for tool in ishare kernel; do
    speed_mount "$tool"
    speed_read "$tool"
    EXECS_SAVED=$EXECS EXECS=${#NAMES[@]}
    speed_exec "$tool"
    speed_exec_check "$tool"
    EXECS=$EXECS_SAVED
    speed_walk "$tool"
  done
  for ((r = 1; r <= SPEED_RUNS; r++)); do
    if ((r % 2)); then order="ishare kernel"; else order="kernel ishare"; fi
    log "speed: warm run $r/$SPEED_RUNS (load $(load1))"
    for tool in $order; do
      for _ in 1 2 3; do
        sentinel_arm
        speed_time warm "$tool" speed_read "$tool"
        sentinel_kept && break
        sed -i '$d' "$WORK/log/speed.warm.$tool"
      done
      speed_time walk "$tool" speed_walk "$tool"
      [ "$(walk_digest <<<"$SPEED_GOT")" = "$SPEED_WALK_DIGEST" ] ||
        die "WRONG METADATA through the $tool mounts (stat walk digest differs from the sources')"
      speed_time exec "$tool" speed_exec "$tool"
      speed_exec_check "$tool"
    done
  done
  for tool in ishare kernel; do speed_umount "$tool"; done
  speed_load_after=$(loadavg)
  out "## 7. Speed: ${#NAMES[@]} images through \`ishare mount -o inode_share\` and kernel loop mounts"
  out
  out "- the images of part 1: $SPEED_FILES regular files, $(mib "$SPEED_BYTES") MiB of file data, $SPEED_ENTRIES entries; ishare: verify=on, passthrough; kernel: \`mount -t erofs -o loop,ro\`"
  out "- cold read: all ${#NAMES[@]} mounted (ishare: a fresh store, so every shared file is verified and copied into a new object first), caches dropped, then SHA-256 (\`openssl dgst\`) of every regular file, mount after mount, checked against the source trees; $SPEED_COLD_RUNS run(s) per tool, alternating"
  out "- cold read, store prepared before: ishare again right after each of its cold runs, with the store that run left (new ishare processes; records and objects on disk; caches dropped after mounting), as after a reboot; against the same kernel cold runs"
  out "- warm: both tools mounted at once, everything read once before; each run (tools alternating): the same read (repeated if something else dropped the page cache: the sentinel); the stat walk \`find M -printf '%s %m\\n'\` over all ${#NAMES[@]} mounts (directories printed as \`- %m\`; output into a shell variable, then checked against the sources', sorted); $EXECS execs of \`chroot M apt-config dump\`, exec k on mount k mod ${#NAMES[@]}, outputs (to tmpfs) checked against the same command on the source trees; $SPEED_RUNS runs per tool"
  out "- targets (issue 11, as read here): reads ≤ 1.5× the kernel, stat walk ≤ 1.5×, execs ≤ 1.1×"
  out "- load average before / after: $speed_load_before / $speed_load_after"
  out
  out "| measurement | ishare median (s) | kernel median (s) | **ishare ÷ kernel** | target | ishare runs (s) | kernel runs (s) | 1-min load |"
  out "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"
  for kind in cold coldkept warm walk exec; do
    case $kind in
      cold) label="read every file, cold (fresh store)"; target="≤ 1.5×" ;;
      coldkept) label="read every file, cold, store prepared before"; target="≤ 1.5×" ;;
      warm) label="read every file, warm"; target="≤ 1.5×" ;;
      walk) label="stat walk, warm ($SPEED_ENTRIES entries)"; target="≤ 1.5×" ;;
      exec) label="$EXECS × \`chroot M apt-config dump\`, warm"; target="≤ 1.1×" ;;
    esac
    fi_=$WORK/log/speed.$kind.ishare fk=$WORK/log/speed.${kind/coldkept/cold}.kernel
    si=$(awk '{ print $1 }' "$fi_" | median)
    sk=$(awk '{ print $1 }' "$fk" | median)
    out "| $label | $(printf %.3f "$si") | $(printf %.3f "$sk") | **$(ratio "$si" "$sk")×** | $target | $(awk '{ printf "%s ", $1 }' "$fi_") | $(awk '{ printf "%s ", $1 }' "$fk") | $(cat "$fi_" "$fk" | awk '{ print $2 }' | range) |"
  done
  out
fi

# --- report --------------------------------------------------------------------------
{
  echo "# mount benchmark"
  echo
  echo "- machine: Linux $(uname -r), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; images and store on $(findmnt -no FSTYPE -T "$DATA") (\`$DATA\`, \`$WORK\`)"
  echo "- ishare: $ISHARE_SRC (sha256 ${ISHARE_SHA:0:16}…); work tree $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'); $(date -u +%Y-%m-%d)"
  [ "$MKFS_SHA" = "$ISHARE_SHA" ] || echo "- images made by another ishare binary (MKFS_ISHARE, sha256 ${MKFS_SHA:0:16}…)"
  echo "- images: \`ishare mkfs ${MKFS_OPTS[*]}\` (4 KiB blocks, uncompressed, sha256 fingerprints on every regular file)"
  echo "- load average at the start / end: $started_load / $(loadavg)"
  echo "- runs repeated because something else on the machine dropped the page cache meanwhile: $DISTURBED"
  echo "- ishare processes: found by their executable (this run's private copy of the binary); measurements that found some still running 10 s after their last unmount (then sent SIGTERM): $LEFTOVER"
  echo "- FUSE wake-ups: $WAKE_HERE_NOTE"
  echo "- open files limit (RLIMIT_NOFILE) of the mount daemons: $(ulimit -Sn) (was $NOFILE_BEFORE; fs.nr_open $(cat /proc/sys/fs/nr_open)): each daemon keeps one open file per shared object it has served"
  echo
  cat "$REPORT"
} >"$WORK/results.md"
mkdir -p "$(dirname "$RESULTS")"
if [ -n "$RESULTS_SET" ]; then
  mkdir -p "$(dirname "$RESULTS_SET")"
  cp "$WORK/results.md" "$RESULTS_SET"
elif [ "$PARTS" = "memory warm cold meta" ] && [ -z "$IMAGES" ]; then
  cp "$WORK/results.md" "$RESULTS"
else
  cp "$WORK/results.md" "${RESULTS%.md}-$(echo "$PARTS${IMAGES:+ ${#NAMES[@]} images}" | tr ' ' '-').md"
fi
cat "$WORK/results.md"
