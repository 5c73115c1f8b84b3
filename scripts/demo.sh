#!/usr/bin/env bash
# The main job on real images: two related Debian root filesystems (the bookworm
# minbase tree scripts/install-deps.sh caches, and a variant of it made here: perl-base
# removed, dpkg-dev, libdpkg-perl, make, xz-utils, zstd and debootstrap added as this
# host has them installed), built into two images with `ishare mkfs`; `ishare report`
# predicts their page cache with and without sharing; then both images are mounted
# with `ishare mount -o inode_share` (node daemon on a private socket), every file is
# read through both, and the page cache they took is measured; then the same with
# kernel EROFS mounts (loop devices, no sharing). Needs root; no network.
#
# Page cache is measured in a memory cgroup holding this script and everything it
# starts (as crates/testkit/src/pagecache.rs does), so other processes on the machine
# do not count; without a usable memory cgroup, `Cached:` of /proc/meminfo.
# Everything (mounts, loop devices, the daemon, the cgroup, files) is undone on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null
cargo build --release --locked -q -p ishare
ISHARE=$PWD/target/release/ishare
MINBASE=${ISHARE_CACHE:-/var/cache/ishare}/bench/rootfs-bookworm-minbase
SVG=${ISHARE_DEMO_SVG:-/var/tmp/ishare-demo-report.svg}
# The packages the variant gains (install-deps.sh installs them on this host).
ADD_PACKAGES="dpkg-dev libdpkg-perl make xz-utils zstd debootstrap"
start=$(date +%s)

# On the same filesystem as the store: not tmpfs, whose pages would count as shmem.
work=$(mktemp -d /var/tmp/ishare-demo.XXXXXX)
export ISHARE_SOCKET=$work/daemon.sock
loops=()
cg=
cg_parent=
cleanup() {
  set +e
  cd /
  for m in "$work/share1" "$work/share2"; do mountpoint -q "$m" && "$ISHARE" umount "$m"; done
  for m in "$work/kernel1" "$work/kernel2"; do mountpoint -q "$m" && umount "$m"; done
  for l in "${loops[@]}"; do losetup -d "$l"; done
  stop_daemon
  if [ -n "$cg" ]; then
    echo $$ >"$cg_parent/cgroup.procs"
    rmdir "$cg"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The node daemon the first `ishare mount` started on our private socket: its pid is
# in the socket's lock file. SIGTERM detaches its mounts and ends it.
stop_daemon() {
  local pid
  pid=$(cat "$ISHARE_SOCKET.lock" 2>/dev/null) || return 0
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "the node daemon (pid $pid) did not exit" >&2
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

echo "== two root filesystems"
cp -a "$MINBASE" "$work/variant"
# perl-base out (its files; directories other packages use stay)...
while read -r f; do
  if [ -L "$work/variant$f" ] || [ -f "$work/variant$f" ]; then rm -f "$work/variant$f"; fi
done <"$MINBASE/var/lib/dpkg/info/perl-base.list"
rm -f "$work/variant/var/lib/dpkg/info/perl-base."*
# ...other packages in, as this host has them (same Debian release, so some of their
# libraries are the very files minbase holds).
# shellcheck disable=SC2086 # a list of package names
dpkg-query -L $ADD_PACKAGES | sort -u | while read -r f; do
  if [ -L "$f" ] || [ -f "$f" ]; then cp -a --parents "$f" "$work/variant" 2>/dev/null || true; fi
done
echo "variant of $(hostname)" >"$work/variant/etc/hostname"
echo "minbase: $(find "$MINBASE" -type f | wc -l) files, $(du -sh "$MINBASE" | cut -f1)"
echo "variant: $(find "$work/variant" -type f | wc -l) files, $(du -sh "$work/variant" | cut -f1)" \
  "(minbase - perl-base + $ADD_PACKAGES)"

echo "== ishare mkfs (fingerprints are on by default)"
"$ISHARE" mkfs --quiet "$work/minbase.erofs" "$MINBASE"
"$ISHARE" mkfs --quiet "$work/variant.erofs" "$work/variant"
rm -rf "$work/variant"
ls -l "$work/minbase.erofs" "$work/variant.erofs" | awk '{ print $5, $9 }'

echo "== ishare report"
"$ISHARE" report --top 5 --svg "$SVG" "$work/minbase.erofs" "$work/variant.erofs"
"$ISHARE" report --json "$work/minbase.erofs" "$work/variant.erofs" >"$work/report.json"
field() { sed -n "s/^    \"$1\": \([0-9]*\),\{0,1\}$/\1/p" "$work/report.json"; }
predicted_unshared=$(field page_cache_unshared)
predicted_shared=$(field page_cache_shared)
echo "(the same as a picture: $SVG)"

# Page cache measurement: a memory cgroup of our own (v2 "file", v1 "cache").
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  cg_parent=/sys/fs/cgroup$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
  key=file
else
  cg_parent=/sys/fs/cgroup/memory$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
  key=cache
fi
cg_parent=${cg_parent%/}
if mkdir "$cg_parent/ishare-demo-$$" 2>/dev/null; then
  cg=$cg_parent/ishare-demo-$$
  if ! echo $$ >"$cg/cgroup.procs" 2>/dev/null || [ ! -e "$cg/memory.stat" ]; then
    rmdir "$cg" 2>/dev/null
    cg=
  fi
fi
cached() { # bytes
  if [ -n "$cg" ]; then
    awk -v k="$key" '$1 == k { print $2 }' "$cg/memory.stat"
  else
    awk '$1 == "Cached:" { print $2 * 1024 }' /proc/meminfo
  fi
}
if [ -n "$cg" ]; then echo "(page cache charged to the memory cgroup $cg)"; else echo "(page cache: Cached: of /proc/meminfo, the whole machine)"; fi
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
read_all() { find "$1" -type f -print0 | xargs -0 -r cat >/dev/null; }

# measure DIR1 DIR2: reads every file under DIR1, then DIR2; prints the growth of each.
measure() {
  find "$1" "$2" >/dev/null # metadata and our own tools in memory first
  local a b c
  a=$(cached)
  read_all "$1"
  b=$(cached)
  read_all "$2"
  c=$(cached)
  echo "$((b - a)) $((c - b))"
}

echo "== ishare mount -o inode_share (node daemon on $ISHARE_SOCKET)"
mkdir -p "$work/share1" "$work/share2" "$work/kernel1" "$work/kernel2"
(umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/domain")
opts="inode_share,domain_id_file=$work/domain,store=$work/store"
drop_caches
"$ISHARE" mount -o "$opts" "$work/minbase.erofs" "$work/share1"
"$ISHARE" mount -o "$opts" "$work/variant.erofs" "$work/share2"
read -r s1 s2 < <(measure "$work/share1" "$work/share2")
"$ISHARE" mounts
"$ISHARE" umount "$work/share1"
"$ISHARE" umount "$work/share2"
stop_daemon

echo "== kernel EROFS mounts (loop devices with direct I/O, so only EROFS's own page cache counts)"
drop_caches
for i in 1 2; do
  img=$work/minbase.erofs
  [ "$i" = 2 ] && img=$work/variant.erofs
  dev=$(losetup --find --show --read-only --direct-io=on "$img")
  loops+=("$dev")
  mount -t erofs -o ro "$dev" "$work/kernel$i"
done
read -r k1 k2 < <(measure "$work/kernel1" "$work/kernel2")
umount "$work/kernel1" "$work/kernel2"

pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%+.1f%%", (a - b) * 100 / b }'; }
echo
echo "== page cache after reading every file of both images"
printf '%-44s %12s %12s %12s\n' "" "minbase" "variant" "total"
printf '%-44s %12s %12s %12s   (%s of the prediction)\n' "kernel mounts, no sharing (measured)" \
  "$(mib "$k1")" "$(mib "$k2")" "$(mib $((k1 + k2)))" "$(pct $((k1 + k2)) "$predicted_unshared")"
printf '%-44s %12s %12s %12s\n' "  ishare report predicted" "" "" "$(mib "$predicted_unshared")"
printf '%-44s %12s %12s %12s   (%s of the prediction)\n' "ishare mount -o inode_share (measured)" \
  "$(mib "$s1")" "$(mib "$s2")" "$(mib $((s1 + s2)))" "$(pct $((s1 + s2)) "$predicted_shared")"
printf '%-44s %12s %12s %12s\n' "  ishare report predicted" "" "" "$(mib "$predicted_shared")"
echo "saving measured: $(mib $((k1 + k2 - s1 - s2))) of $(mib $((k1 + k2)))" \
  "($(awk -v a=$((k1 + k2 - s1 - s2)) -v b=$((k1 + k2)) 'BEGIN { printf "%.1f%%", a * 100 / b }'))"
echo "demo took $(($(date +%s) - start)) s"
