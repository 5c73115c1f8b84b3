#!/usr/bin/env bash
# The main job on a built-in example: build an image with page-cache-share
# fingerprints with `ishare mkfs`, show that its fingerprint equals the one
# mkfs.erofs 1.9.4 writes (so the two share page cache under Linux 7.x
# inode_share), inspect, check and extract it; then build a second image holding
# the same library at another path, mount both with `ishare mount -o
# inode_share,domain_id=...`, read the library through each, and print how much
# page cache each read added.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null
cargo build --release --locked -q -p ishare
ISHARE=$PWD/target/release/ishare
MKFS=${ISHARE_CACHE:-/var/cache/ishare}/erofs-utils-1.9.4/bin/mkfs.erofs

work=$(mktemp -d)
cleanup() {
  for m in "$work/m1" "$work/m2"; do mountpoint -q "$m" && "$ISHARE" umount "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
src=$work/rootfs
mkdir -p "$src/usr/lib" "$src/etc" "$src/usr/bin"
head -c 64000000 /dev/urandom >"$src/usr/lib/libexample.so.1"
ln -s libexample.so.1 "$src/usr/lib/libexample.so"
echo "demo" >"$src/etc/hostname"
cp /bin/true "$src/usr/bin/true"
ln "$src/usr/bin/true" "$src/usr/bin/also-true"
setfattr -n user.origin -v demo "$src/etc/hostname"

echo "== ishare mkfs $work/demo.erofs (fingerprints are on by default)"
"$ISHARE" mkfs "$work/demo.erofs" "$src"
"$MKFS" --quiet --xattr-inode-digest "$work/erofs-utils.erofs" "$src" >/dev/null
echo "== ishare dump -s"
"$ISHARE" dump -s "$work/demo.erofs"
echo "== ishare dump --path /usr/lib/libexample.so.1"
"$ISHARE" dump --path /usr/lib/libexample.so.1 "$work/demo.erofs"
echo "   sha256sum of the source:  $(sha256sum "$src/usr/lib/libexample.so.1" | cut -d' ' -f1)"
fp() { "$ISHARE" dump --json --path /usr/lib/libexample.so.1 "$1" | grep -o 'sha256:[0-9a-f]*'; }
echo "   fingerprint in ishare's image:        $(fp "$work/demo.erofs")"
echo "   fingerprint in mkfs.erofs 1.9.4's:    $(fp "$work/erofs-utils.erofs")"
echo "== ishare fsck --xattr-inode-digest"
"$ISHARE" fsck --xattr-inode-digest "$work/demo.erofs"
echo "== ishare extract, then diff against the source"
"$ISHARE" extract "$work/demo.erofs" "$work/out"
diff -r --no-dereference "$src" "$work/out" && echo "extracted tree equals the source"

echo "== page cache sharing through ishare mount"
mkdir -p "$work/src2/opt/app/lib" "$work/m1" "$work/m2"
cp "$src/usr/lib/libexample.so.1" "$work/src2/opt/app/lib/libcopy.so"
echo "another image" >"$work/src2/README"
"$ISHARE" mkfs --quiet "$work/second.erofs" "$work/src2"
opts="inode_share,domain_id=demo-$$,store=$work/store"
"$ISHARE" mount -o "$opts" "$work/demo.erofs" "$work/m1"
"$ISHARE" mount -o "$opts" "$work/second.erofs" "$work/m2"
cached_kib() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
sync
echo 3 >/proc/sys/vm/drop_caches
a=$(cached_kib)
cat "$work/m1/usr/lib/libexample.so.1" >/dev/null
b=$(cached_kib)
cat "$work/m2/opt/app/lib/libcopy.so" >/dev/null
c=$(cached_kib)
echo "read the 61 MiB library through image 1:                 page cache +$(((b - a) / 1024)) MiB"
echo "read the same library, other path, through image 2:       page cache +$(((c - b) / 1024)) MiB"
