# bootstrap_rootfs, shared by scripts/install-deps.sh (the minbase tree that
# crates/ishare/tests/minbase_compressed.rs compresses) and the benchmarks
# (bench/lib.sh), so both make and recognise the same cached trees.
# shellcheck shell=bash

# bootstrap_rootfs DIR [DEBOOTSTRAP_OPTION...]: `debootstrap --variant=minbase
# [options] bookworm DIR` from the mirror in /etc/apt/sources.list.d/debian.sources,
# once: DIR is a cache. The options are recorded in DIR.options; a DIR made with
# other options is bootstrapped again. Apt's downloaded archives are removed.
bootstrap_rootfs() {
  local dir=$1 mirror
  shift
  local options="--variant=minbase${*:+ $*}"
  if [ -d "$dir" ]; then
    # A rootfs from before the options were recorded is the plain minbase one.
    if [ ! -e "$dir.options" ] && [ "$options" = --variant=minbase ]; then return 0; fi
    if [ "$(cat "$dir.options" 2>/dev/null)" = "$options" ]; then return 0; fi
    echo "== $dir was bootstrapped with other options: bootstrapping it again" >&2
    rm -rf "$dir"
  fi
  mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  echo "== debootstrap $options bookworm from $mirror (cached in $dir)" >&2
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir.tmp"
  # shellcheck disable=SC2086 # the options are words
  if ! debootstrap $options bookworm "$dir.tmp" "$mirror" >"$dir.log" 2>&1; then
    echo "${BENCH_NAME:-${0##*/}}: debootstrap failed, see $dir.log" >&2
    exit 1
  fi
  # Drop apt's downloaded archives: they are not part of an installed system.
  rm -f "$dir.tmp"/var/cache/apt/archives/*.deb
  echo "$options" >"$dir.options"
  mv "$dir.tmp" "$dir"
}
