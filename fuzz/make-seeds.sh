#!/usr/bin/env bash
# Builds the seed corpus of the read_image fuzz target into fuzz/corpus/read_image/
# (gitignored): the images of crates/erofs/tests/corrupt.rs, from the same kind of
# small tree, with mkfs.erofs 1.9.4 (from scripts/install-deps.sh) and 1.5 (Debian).
# With --small, writes tiny images (< 16 KiB, 512-byte blocks) to
# fuzz/seeds/read_image/ instead, the seeds checked into git.
set -euo pipefail
cd "$(dirname "$0")"

CACHE=${ISHARE_CACHE:-/var/cache/ishare}
MKFS194=$CACHE/erofs-utils-1.9.4/bin/mkfs.erofs
MKFS15=/usr/bin/mkfs.erofs
for t in "$MKFS194" "$MKFS15" /usr/bin/setfattr; do
  [ -x "$t" ] || { echo "missing $t: run scripts/install-deps.sh (as root)" >&2; exit 1; }
done

small=0
[ "${1:-}" = --small ] && small=1

work=$(mktemp -d /tmp/ishare-seeds.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree=$work/tree
mkdir "$tree"

# Deterministic bytes: the same tree on every run.
bytes() { head -c "$1" /dev/zero | tr '\0' "${2:-x}"; }

if [ $small = 1 ]; then
  bytes 5 > "$tree/small.txt"
  bytes 700 b > "$tree/big.bin"
  : > "$tree/empty"
  mkdir -p "$tree/bigdir" "$tree/sub/subsub"
  for i in $(seq -w 0 39); do : > "$tree/bigdir/entry-$i"; done  # empty: no data blocks
  printf 'deep\n' > "$tree/sub/subsub/deep"
  ln -s small.txt "$tree/link-short"
  ln -s "$(bytes 600 l)" "$tree/link-long"
  ln "$tree/big.bin" "$tree/sub/hardlink"
  for f in small.txt big.bin sub/subsub/deep; do
    setfattr -n user.shared -v one-value "$tree/$f"
  done
  setfattr -n user.inline -v v1 "$tree/small.txt"
  setfattr -n user.pfx.alpha -v long "$tree/big.bin"
  setfattr -n trusted.dir -v d "$tree/sub"
  out=seeds/read_image
else
  bytes 5 > "$tree/small.txt"
  bytes 511 a > "$tree/b511"
  bytes 513 b > "$tree/b513"
  bytes 4095 c > "$tree/b4095"
  bytes 8192 d > "$tree/exact8k"
  bytes 5000 e > "$tree/mid.bin"
  head -c 70000 /dev/urandom > "$tree/big.bin"
  : > "$tree/empty"
  mkdir -p "$tree/bigdir" "$tree/sub/subsub"
  for i in $(seq -w 0 299); do printf '%s' "$i" > "$tree/bigdir/entry-$i"; done
  printf 'deep file\n' > "$tree/sub/subsub/deep"
  ln -s small.txt "$tree/link-short"
  ln -s "$(bytes 1500 l)" "$tree/link-long"
  ln "$tree/big.bin" "$tree/sub/hardlink"
  mkfifo "$tree/sub/fifo"
  for f in small.txt b513 mid.bin big.bin exact8k sub/subsub/deep; do
    setfattr -n user.shared -v one-value-on-several-inodes "$tree/$f"
  done
  setfattr -n user.inline-0 -v v0 "$tree/small.txt"
  setfattr -n user.inline-1 -v v1 "$tree/b4095"
  setfattr -n user.pfx.alpha -v long-prefixed "$tree/mid.bin"
  setfattr -n user.pfx.beta -v "$(bytes 300 v)" "$tree/b511"
  setfattr -n trusted.dir -v on-a-directory "$tree/sub"
  out=corpus/read_image
fi
mkdir -p "$out"

mk194() { local name=$1; shift; "$MKFS194" --quiet -T0 -U 6f2c5a4e-8d1b-4c3a-9e7f-0123456789ab "$@" "$out/$name.img" "$tree"; }
mk15() { local name=$1; shift; "$MKFS15" -T0 -U 6f2c5a4e-8d1b-4c3a-9e7f-0123456789ab "$@" "$out/$name.img" "$tree" >/dev/null; }

xattr_opts=(--xattr-prefix=user.pfx. --xattr-inode-digest -Exattr-name-filter)
if [ $small = 1 ]; then
  mk194 xattrs-512 -b512 "${xattr_opts[@]}"
  mk194 xattrs-512-extended -b512 "${xattr_opts[@]}" -Eforce-inode-extended
  mk194 chunkidx-512 -b512 --chunksize=4096 -Eforce-chunk-indexes
  mk194 chunkmap-512 -b512 --chunksize=512
  mk15 mkfs15-4k
  # Compressed seeds (issue 4): one per algorithm and cluster layout, with a file of
  # compressible text added to the tree (after the uncompressed seeds, which stay as
  # they were).
  for i in $(seq 1 150); do echo "erofs cluster $((i % 7)) extent page $((i % 3))"; done > "$tree/text.txt"
  mk194 z-lz4hc-512 -b512 -zlz4hc --xattr-inode-digest
  mk194 z-lzma-512 -b512 -zlzma -C2048
  mk194 z-deflate-512-frag -b512 -zdeflate -C1024 -Efragments,dedupe
  mk194 z-zstd-512-allfrag -b512 -zzstd -Eall-fragments
  mk194 z-lz4-512-legacy -b512 -zlz4 -C1024 -Elegacy-compress
  mk194 z-lz4hc-512-extents -b512 -zlz4hc -E48bit
  mk194 z-lz4hc-1k-ztail -b1024 -zlz4hc -Eztailpacking
else
  mk194 xattrs-4k "${xattr_opts[@]}"
  mk194 xattrs-512 -b512 "${xattr_opts[@]}"
  mk194 xattrs-512-extended -b512 "${xattr_opts[@]}" -Eforce-inode-extended
  mk194 chunkmap-4k --chunksize=4096
  mk194 chunkidx-4k --chunksize=4096 -Eforce-chunk-indexes
  mk194 chunkidx-512-extended -b512 --chunksize=4096 -Eforce-chunk-indexes,force-inode-extended
  mk15 mkfs15-4k
  mk15 mkfs15-chunk-4k --chunksize=4096 2>/dev/null
fi
ls -l "$out"
