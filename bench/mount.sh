#!/usr/bin/env bash
# Benchmark: `ishare mount` (FUSE; with -o inode_share the data of identical files
# comes from one store object per fingerprint, through kernel FUSE passthrough)
# against kernel EROFS loop mounts (Linux 6.18: no inode_share) and squashfuse.
# Four parts (see bench/README.md):
#   memory  ten images of a family of Debian root filesystems, every file read
#           through every mount: page cache growth / unique content size
#   warm    sequential read of a 1 GiB file, page cache warm
#   cold    first read of a 256 MiB file, caches dropped, fresh store
#   meta    stat of every entry of the minbase image, cold and warm
# Every read is checked against checksums of the source. Run as root.
#
# Environment:
#   ISHARE_CACHE  cache directory (default /var/cache/ishare)
#   RUNS          timed runs per tool or mode of the cold and meta parts (default 5)
#   MEM_RUNS      runs per tool of the memory part (default 3)
#   MEM_TOOLS     tools of the memory part (default "ishare ishare-noverify kernel")
#   WARM_RUNS     timed runs per tool of the warm part (default 9: it is fast and noisy)
#   IMAGES        a subset of the family for the memory part (default: all ten)
#   PARTS         which parts, in order (default "memory warm cold meta")
#   SKIP_BUILD=1  do not run `cargo build --release -p ishare`
#   ISHARE_BIN    ishare binary (default $CARGO_TARGET_DIR/release/ishare, or
#                 target/release/ishare)
set -euo pipefail

BENCH_NAME=mount.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS=${RUNS:-5}
MEM_RUNS=${MEM_RUNS:-3}
MEM_TOOLS=${MEM_TOOLS:-ishare ishare-noverify kernel}
WARM_RUNS=${WARM_RUNS:-9}
PARTS=${PARTS:-memory warm cold meta}
SUITE=bookworm
DATA=$BENCH/mount
ISHARE_SRC=${ISHARE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ishare}
RESULTS=$ROOT/bench/results/mount.md
UUID=0f3b1a2c-5d4e-4f60-8a7b-9c0d1e2f3a4b
MKFS_OPTS=(--quiet -T0 --mkfs-time -U "$UUID")
DEV_PACKAGES=python3,python3-pip,perl,openssl,curl,ca-certificates,git,build-essential,linux-headers-amd64
export LC_ALL=C

[ "$(id -u)" -eq 0 ] || die "must run as root (mount, drop_caches, FUSE passthrough)"
for p in $PARTS; do
  case $p in memory | warm | cold | meta) ;; *) die "unknown part $p (PARTS: memory warm cold meta)" ;; esac
done

# --- tools -------------------------------------------------------------------
bench_tools time debootstrap squashfs-tools squashfuse openssl gcc libc6-dev jq
bench_build "$ISHARE_SRC"

WORK=$(mktemp -d /tmp/ishare-mount-bench.XXXXXX)
declare -A DAEMON=() # mount point -> pid of its `ishare mount -f`
cleanup() {
  set +e
  local m pid i
  for m in $(findmnt -rno TARGET | grep -F "$WORK/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  for pid in "${DAEMON[@]}"; do
    for ((i = 0; i < 600; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill "$pid"
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/mnt" "$WORK/log" "$DATA"

# A private copy of the binary: a rebuild during the runs changes nothing.
ISHARE=$WORK/ishare
cp "$ISHARE_SRC" "$ISHARE"
ISHARE_SHA=$(sha256sum "$ISHARE" | cut -c1-64)
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

# ishare_mount IMAGE MOUNTPOINT STORE [OPTION,...]: `ishare mount -f` in the
# background (its pid kept, so unmounting can wait for it), until the mount is there.
ishare_mount() {
  local img=$1 mnt=$2 store=$3 extra=${4:-} pid i log
  log=$WORK/log/daemon.$(basename "$mnt")
  mkdir -p "$mnt"
  "$ISHARE" mount -f -o "inode_share,store=$store${extra:+,$extra}" "$img" "$mnt" 2>>"$log" &
  pid=$!
  for ((i = 0; i < 600; i++)); do
    if [ "$(findmnt -rno FSTYPE -M "$mnt" 2>/dev/null)" = fuse.ishare ]; then
      DAEMON[$mnt]=$pid
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "ishare mount $img failed"; }
    sleep 0.05
  done
  die "ishare mount $img: no mount after 30 s"
}

# ishare_umount MOUNTPOINT: unmounts and waits for the daemon to exit (it finishes
# publishing its objects first).
ishare_umount() {
  local mnt=$1 pid=${DAEMON[$1]}
  "$ISHARE" umount "$mnt"
  wait "$pid" || warn "ishare mount daemon of $mnt exited with $?"
  unset "DAEMON[$mnt]"
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
# the mount daemons whose path starts with one of the PREFIXes (unlinked files
# too: objects being published are open unnamed files in the store).
daemon_files() {
  local pid
  for pid in "${DAEMON[@]}"; do
    find "/proc/$pid/fd" -mindepth 1 -printf "%l\t/proc/$pid/fd/%f\n"
  done | awk -F'\t' -v p="$*" 'BEGIN { n = split(p, pre, " ") }
    { for (i = 1; i <= n; i++) if (index($1, pre[i]) == 1) { printf "%s%c", $2, 0; break } }'
}

kernel_mount() { mkdir -p "$2" && mount -t erofs -o loop,ro "$1" "$2"; }

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
  stamp="ishare=$ISHARE_SHA tree=$(tree_stamp "$tree") opts=${MKFS_OPTS[*]}"
  if [ -e "$img" ] && [ "$(cat "$img.stamp" 2>/dev/null)" = "$stamp" ]; then return 0; fi
  log "ishare mkfs $img"
  rm -f "$img.stamp"
  "$ISHARE" mkfs "${MKFS_OPTS[@]}" "$img" "$tree"
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
  want memory || { want meta && [ "$name" = minbase ]; } || continue
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
      -K 000102030405060708090a0b0c0d0e0f -iv 0 >"$BIG_TREE/big.bin"
    head -c $((256 << 20)) /dev/zero | openssl enc -aes-128-ctr -nosalt \
      -K 0f0e0d0c0b0a09080706050403020100 -iv 0 >"$BIG_TREE/cold.bin"
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
# Appends "load accounted meminfo_delta read_s part1 part2 part3 rss_kib" to
# $WORK/log/mem.TOOL, unless the sentinel was dropped meanwhile (then MEM_OK=0).
mem_run() {
  local tool=$1 n=$2 i name mnt store c0 c1 t0 t1 l0 acc p1 p2 p3 rss=0 pid got kept=1
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
    for mnt in "${!DAEMON[@]}"; do
      pid=${DAEMON[$mnt]}
      rss=$((rss + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
    done
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
      sed -n "s|^ishare: warning: $DATA/${NAMES[$i]}\.erofs: \(.*\): cannot [a-z]* its shared object in .*Too many open files.*; served unshared\$|\1|p" \
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
    # out of file descriptors: then some content may have no object).
    read -r objects obytes < <("$ISHARE" store stat --store "$store" --json | jq -r '"\(.objects) \(.bytes)"')
    if [ "$emfile" = 0 ] && [ "$unpub" = 0 ] && [ "$objects" != "$UNIQUE_N" ]; then
      die "the store has $objects objects, the images $UNIQUE_N distinct fingerprints"
    fi
    rm -rf "$store" "$WORK"/log/daemon."$tool".*
    [ "$kept" = 0 ] || echo "$tool $n $emfile $unpub $objects $obytes $named" >>"$WORK/log/mem.emfile"
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
  echo "$l0 $acc $((c1 - c0)) $(elapsed "$t0" "$t1") $p1 $p2 ${p3:-0} $rss" >>"$WORK/log/mem.$tool"
}

if want memory; then
  log "memory: ${#NAMES[@]} images, $MEM_RUNS runs per tool"
  # Several runs share the log of the EMFILE counts.
  : >"$WORK/log/mem.emfile"
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
  out "| tool | page cache growth (MiB) | ÷ unique content | ÷ unique content in pages | ÷ (unique content in pages + metadata) | meminfo Cached growth (MiB) | ÷ unique content | read time (s) | mount daemons' RSS (MiB) | 1-min load |"
  out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for tool in $MEM_TOOLS; do
    f=$WORK/log/mem.$tool
    acc=$(awk '{ print $2 }' "$f" | median)
    mi=$(awk '{ print $3 }' "$f" | median)
    rt=$(awk '{ print $4 }' "$f" | median)
    rss=-
    [ "$tool" = kernel ] || rss=$(awk '{ print $8 }' "$f" | median | awk '{ printf "%.0f", $1 / 1024 }')
    floor=-
    [ -z "$META_B" ] || floor=$(ratio "$acc" "$(awk -v a="$UNIQUE_P" -v b="$META_B" 'BEGIN { printf "%.0f", a + b }')")
    out "| $tool | $(mib "$acc") | $(ratio "$acc" "$UNIQUE_B") | $(ratio "$acc" "$UNIQUE_P") | $floor | $(mib "$mi") | $(ratio "$mi" "$UNIQUE_B") | $(printf %.1f "$rt") | $rss | $(awk '{ print $1 }' "$f" | range) |"
  done
  out
  [ -z "$META_B" ] || out "Metadata: $(mib "$META_B") MiB, the pages of the kernel's loop devices (the metadata blocks of all ${#NAMES[@]} images: inodes, xattrs, directories, inline file tails). Unique content in pages plus that ($(mib "$(awk -v a="$UNIQUE_P" -v b="$META_B" 'BEGIN { printf "%.0f", a + b }')") MiB) is what a page cache holds that keeps one copy of each distinct file and every image's metadata."
  out
  out "Every run (medians above): accounted MiB = parts; meminfo MiB; read time; load:"
  out
  for tool in $MEM_TOOLS; do
    while read -r l a m t p1 p2 p3 rss; do
      if [ "$tool" != kernel ]; then
        parts="images $(mib "$p1") + objects $(mib "$p2") + files served unshared $(mib "$p3"); daemons' RSS $(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }') MiB"
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

# --- report --------------------------------------------------------------------------
{
  echo "# mount benchmark"
  echo
  echo "- machine: Linux $(uname -r), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; images and store on $(findmnt -no FSTYPE -T "$DATA") (\`$DATA\`, \`$WORK\`)"
  echo "- ishare: $ISHARE_SRC (sha256 ${ISHARE_SHA:0:16}…); work tree $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'); $(date -u +%Y-%m-%d)"
  echo "- images: \`ishare mkfs ${MKFS_OPTS[*]}\` (4 KiB blocks, uncompressed, sha256 fingerprints on every regular file)"
  echo "- load average at the start / end: $started_load / $(loadavg)"
  echo "- runs repeated because something else on the machine dropped the page cache meanwhile: $DISTURBED"
  echo "- open files limit (RLIMIT_NOFILE) of the mount daemons: $(ulimit -Sn) (was $NOFILE_BEFORE; fs.nr_open $(cat /proc/sys/fs/nr_open)): each daemon keeps one open file per shared object it has served"
  echo
  cat "$REPORT"
} >"$WORK/results.md"
mkdir -p "$(dirname "$RESULTS")"
if [ "$PARTS" = "memory warm cold meta" ] && [ -z "$IMAGES" ]; then
  cp "$WORK/results.md" "$RESULTS"
else
  cp "$WORK/results.md" "${RESULTS%.md}-$(echo "$PARTS${IMAGES:+ ${#NAMES[@]} images}" | tr ' ' '-').md"
fi
cat "$WORK/results.md"
