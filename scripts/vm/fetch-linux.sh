#!/usr/bin/env bash
# Fetches Debian sid's Linux 7.2 (cloud-amd64 flavour) for the VM tests
# (crates/ishare/tests/kernel_share.rs) and caches what they need in
# ${ISHARE_CACHE:-/var/cache/ishare}/linux-7.2/:
#   vmlinuz, config, VERSION, and the uncompressed modules erofs.ko, loop.ko
#   (plus any module they depend on), listed in load order in modules.order.
# Idempotent: does nothing once the cache is complete (the file .complete).
# Needs the sid apt suite that scripts/install-deps.sh configures, dpkg-dev and
# xz-utils. ISHARE_LINUX_VERSION (e.g. 7.2.13+deb14) overrides the version.
set -euo pipefail

CACHE=${ISHARE_CACHE:-/var/cache/ishare}
DEST=$CACHE/linux-7.2
FLAVOUR=cloud-amd64

if [ -f "$DEST/.complete" ]; then
  echo "Linux $(cat "$DEST/VERSION") for the VM tests: cached in $DEST"
  exit 0
fi

ver=${ISHARE_LINUX_VERSION:-}
if [ -z "$ver" ]; then
  # The metapackage in sid names the current ABI, e.g. linux-image-7.2.13+deb14-cloud-amd64.
  ver=$(apt-cache depends "linux-image-$FLAVOUR/sid" 2>/dev/null \
    | sed -n "s/^ *Depends: linux-image-\(7\.2\.[^ ]*\)-$FLAVOUR\$/\1/p" | head -1)
fi
if [ -z "$ver" ]; then
  # sid moved past 7.2: take the newest 7.2 ABI still in the package lists.
  ver=$(apt-cache search --names-only "^linux-binary-7\.2\..*-$FLAVOUR\$" \
    | sed -n "s/^linux-binary-\(7\.2\.[^ ]*\)-$FLAVOUR .*/\1/p" | sort -V | tail -1)
fi
if [ -z "$ver" ]; then
  echo "fetch-linux.sh: no Linux 7.2 $FLAVOUR package in the sid suite" \
    "(apt-cache depends linux-image-$FLAVOUR/sid names no 7.2 version)." \
    "Set ISHARE_LINUX_VERSION=7.2.N+debNN if you know one." >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# linux-binary-* holds vmlinuz, linux-base-* holds config (and System.map),
# linux-modules-* holds the modules (xz-compressed, no modules.dep).
pkgs=("linux-binary-$ver-$FLAVOUR" "linux-base-$ver-$FLAVOUR" "linux-modules-$ver-$FLAVOUR")
# apt-get download warns (harmlessly) when _apt cannot write here; keep stderr quiet.
chmod 755 "$work"
apt-get download -qq "${pkgs[@]/%//sid}" 2>&1 | grep -v 'unsandboxed' >&2 || true
for p in "${pkgs[@]}"; do
  deb=$(ls "$p"_*.deb 2>/dev/null | head -1)
  if [ -z "$deb" ]; then
    echo "fetch-linux.sh: apt-get download $p/sid failed" >&2
    exit 1
  fi
  dpkg-deb -x "$deb" root
done

mdir=root/usr/lib/modules/$ver-$FLAVOUR
grep -qx 'CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y' "$mdir/config" || {
  echo "fetch-linux.sh: Linux $ver-$FLAVOUR lacks CONFIG_EROFS_FS_PAGE_CACHE_SHARE=y" >&2
  exit 1
}

stage=$work/stage
mkdir -p "$stage"
cp "$mdir/vmlinuz" "$mdir/config" "$stage/"
echo "$ver-$FLAVOUR" >"$stage/VERSION"

# Decompress a module and, first, every module it depends on (the .modinfo
# "depends=" field; the package ships no modules.dep, the host may lack kmod).
: >"$stage/modules.order"
add_module() {
  local name=$1 ko dep
  [ -f "$stage/$name.ko" ] && return 0
  ko=$(find "$mdir/kernel" \( -name "$name.ko.xz" -o -name "${name//_/-}.ko.xz" \) | head -1)
  if [ -z "$ko" ]; then
    echo "fetch-linux.sh: module $name not found in linux-modules-$ver-$FLAVOUR" >&2
    exit 1
  fi
  xz -dc "$ko" >"$stage/$name.ko"
  for dep in $(tr '\0' '\n' <"$stage/$name.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
    add_module "$dep"
  done
  echo "$name.ko" >>"$stage/modules.order"
}
add_module erofs
add_module loop

touch "$stage/.complete"
mkdir -p "$CACHE"
rm -rf "$DEST"
mv "$stage" "$DEST"
echo "Linux $ver-$FLAVOUR for the VM tests: cached in $DEST ($(tr '\n' ' ' <"$DEST/modules.order"))"
