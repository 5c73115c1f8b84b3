#!/usr/bin/env bash
# Memory of the node daemon under a stat storm: the ten family images of
# bench/mount.sh (made by it first: `PARTS=total bench/mount.sh`, or any part that
# uses the family) mounted through one `ishare daemon` on a private socket, a fresh
# store; its RSS and PSS after mounting, after reading every file, after each of
# STORMS stat storms (dentries and inodes dropped, `echo 2 > drop_caches`, then
# `find -printf '%s %m'` over all ten mounts, so every entry is looked up again),
# and after reading every file again. With its metadata in one budget, the figures
# stay flat after the first read. Run as root.
#
# Environment: ISHARE_BIN (default target/release/ishare), BENCH (default
# /var/cache/ishare/bench), STORMS (default 3), STORM_OPTS (more mount options, such
# as prepare=open).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${ISHARE_BIN:-$ROOT/target/release/ishare}
DATA=${BENCH:-/var/cache/ishare/bench}/mount
STORMS=${STORMS:-3}
IMGS="minbase minbase-r2 curl python python-r2 perl git web dev dev-r2"
[ "$(id -u)" -eq 0 ] || { echo "daemon-storm.sh: must run as root" >&2; exit 1; }
for n in $IMGS; do [ -e "$DATA/$n.erofs" ] || { echo "daemon-storm.sh: $DATA/$n.erofs missing (run bench/mount.sh first)" >&2; exit 1; }; done
W=$(mktemp -d /tmp/ishare-storm.XXXXXX)
export ISHARE_SOCKET=$W/daemon.sock
ISHARE_DOMAIN_ID=storm-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
export ISHARE_DOMAIN_ID
cp "$BIN" "$W/ishare"
B=$W/ishare
PID=
cleanup() {
  set +e
  for m in "$W"/m/*; do "$B" umount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null; done
  [ -z "$PID" ] || kill "$PID" 2>/dev/null
  sleep 1
  rm -rf "$W"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
for n in $IMGS; do
  mkdir -p "$W/m/$n"
  "$B" mount -o "inode_share,store=$W/store,log=$W/log.$n${STORM_OPTS:+,$STORM_OPTS}" "$DATA/$n.erofs" "$W/m/$n"
done
PID=$(cat "$W/daemon.sock.lock")
mem() { awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { printf "RSS %.1f MiB, PSS %.1f MiB", r / 1024, p / 1024 }' "/proc/$PID/smaps_rollup"; }
readall() { for n in $IMGS; do (cd "$W/m/$n" && find . -type f -print0 | xargs -0 -r cat >/dev/null); done; }
echo "- $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); ishare $(sha256sum "$B" | cut -c1-16)…"
echo "- mounted: $(mem)"
readall
echo "- every file read: $(mem)"
for ((i = 1; i <= STORMS; i++)); do
  echo 2 >/proc/sys/vm/drop_caches
  a=$EPOCHREALTIME
  n=$(find "$W"/m/* -printf '%s %m\n' | wc -l)
  b=$EPOCHREALTIME
  echo "- stat storm $i ($n entries, $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f", b - a }') s): $(mem)"
done
echo 2 >/proc/sys/vm/drop_caches
readall
echo "- every file read again after dropping dentries and inodes: $(mem)"
if grep -il "warning\|error" "$W"/log.* >/dev/null 2>&1; then
  grep -ih "warning\|error" "$W"/log.* | head -5 >&2
  exit 1
fi
