#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh Debian bookworm machine:
# Debian packages, and erofs-utils 1.9.4 built from Debian sid's source package
# (bookworm only has 1.5, which lacks --xattr-inode-digest), and a Debian bookworm
# minbase root filesystem (debootstrap). The 1.9.4 build and the tree are cached
# outside the repository, in $ISHARE_CACHE (default /var/cache/ishare).
set -euo pipefail

CACHE=${ISHARE_CACHE:-/var/cache/ishare}
EU_VER=1.9.4
EU_DIR=$CACHE/erofs-utils-$EU_VER
export DEBIAN_FRONTEND=noninteractive

need_apt=()
for p in erofs-utils attr build-essential autoconf automake libtool pkg-config \
    liblz4-dev liblzma-dev libzstd-dev libdeflate-dev zlib1g-dev uuid-dev \
    libfuse3-dev libxxhash-dev libselinux1-dev dpkg-dev xz-utils zstd debootstrap \
    qemu-system-x86 busybox-static cpio fuse3 squashfs-tools squashfuse; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$p")
done

# Debian sid as a low-priority suite: deb-src for erofs-utils 1.9.4, and the
# Linux 7.2 packages the VM tests download. Pinned low so nothing is upgraded.
sid_src=/etc/apt/sources.list.d/ishare-sid.sources
if [ ! -f "$sid_src" ]; then
  awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources \
    | sed -e 's/^Suites:.*/Suites: sid/' -e 's/^Types:.*/Types: deb deb-src/' >"$sid_src"
  printf 'Package: *\nPin: release n=sid\nPin-Priority: 90\n' >/etc/apt/preferences.d/ishare-sid
fi

apt-get update -qq
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- erofs-utils 1.9.4 --------------------------------------------------------------------
# Built with libselinux (--with-selinux) so that its mkfs.erofs honours --file-contexts,
# the oracle of crates/ishare/tests/mkfs_file_contexts.rs; an older cached build without
# it is rebuilt. Without --file-contexts the selinux build behaves exactly as before.
eu_ok() {
  [ -x "$EU_DIR/bin/mkfs.erofs" ] && ldd "$EU_DIR/bin/mkfs.erofs" | grep -q libselinux
}
if ! eu_ok; then
  work=$(mktemp -d)
  (
    cd "$work"
    apt-get source -qq --download-only "erofs-utils=$EU_VER*" >/dev/null 2>&1 || apt-get source -qq --download-only erofs-utils
    dpkg-source -x --no-check erofs-utils_*.dsc src >/dev/null
    cd src
    ./autogen.sh >/dev/null 2>&1
    ./configure -q --prefix="$EU_DIR" --enable-fuse --with-libzstd --with-libdeflate \
      --with-xxhash --enable-lzma --with-selinux >/dev/null
    make -s -j"$(nproc)" >/dev/null 2>&1
    make -s install DESTDIR="$work/stage" >/dev/null
    # Each file renamed into place: tools already running (another test, a
    # benchmark) keep their old copy instead of failing with "text file busy".
    cd "$work/stage$EU_DIR"
    find . -type f -o -type l | while read -r f; do
      mkdir -p "$EU_DIR/$(dirname "$f")"
      cp -a "$f" "$EU_DIR/$f.new.$$" && mv -f "$EU_DIR/$f.new.$$" "$EU_DIR/$f"
    done
  )
  rm -rf "$work"
  eu_ok || { echo "erofs-utils $EU_VER: mkfs.erofs was not built with libselinux" >&2; exit 1; }
fi
# --- end of erofs-utils 1.9.4 -------------------------------------------------------------
# --- SELinux reference policy file_contexts (crates/ishare/tests/mkfs_file_contexts.rs) ---
# A real-world file_contexts (5,600 specs) for --file-contexts: the file contexts of
# Debian's selinux-policy-default modules, unpacked with semodule_unpackage into one
# file (the package is not installed: that would build and load a policy), with the
# package's file_contexts.subs_dist next to it.
FC_DIR=$CACHE/selinux-refpolicy
if [ ! -s "$FC_DIR/file_contexts" ]; then
  dpkg-query -W -f='${Status}' semodule-utils 2>/dev/null | grep -q 'install ok installed' ||
    apt-get install -y -qq --no-install-recommends semodule-utils >/dev/null
  work=$(mktemp -d)
  (
    cd "$work"
    apt-get download -qq selinux-policy-default >/dev/null 2>&1
    dpkg-deb -x selinux-policy-default_*.deb x
    mods=x/usr/share/selinux/default
    unpack() {
      bzcat "$1" >m.pp
      semodule_unpackage m.pp m.mod m.fc
      cat m.fc >>file_contexts
    }
    # The base module first, as the policy's own file_contexts lists it.
    unpack "$mods/base.pp.bz2"
    for pp in "$mods"/*.pp.bz2; do
      [ "$pp" = "$mods/base.pp.bz2" ] || unpack "$pp"
    done
    mkdir -p "$FC_DIR"
    cp x/etc/selinux/default/contexts/files/file_contexts.subs_dist "$FC_DIR/"
    mv file_contexts "$FC_DIR/file_contexts.new"
    mv "$FC_DIR/file_contexts.new" "$FC_DIR/file_contexts"
  )
  rm -rf "$work"
fi
# --- end of SELinux reference policy file_contexts ------------------------------------------
# --- minbase tree (crates/ishare/tests/minbase_compressed.rs) ---------------------------
# A Debian bookworm minbase root filesystem, bootstrapped once (debootstrap is in the package
# list above) into the benchmarks' cache with bench/lib.sh's conventions (DIR.options), so
# the benchmarks and that test use the same tree.
# shellcheck source=scripts/rootfs.sh
. "$(dirname "${BASH_SOURCE[0]}")/rootfs.sh"
bootstrap_rootfs "$CACHE/bench/rootfs-bookworm-minbase"
# --- end of minbase tree -----------------------------------------------------------------
# --- VM tests (crates/ishare/tests/kernel_share.rs) ------------------------------------
# Debian sid's Linux 7.2 (cloud-amd64): vmlinuz, config, erofs.ko and loop.ko, fetched once
# into $CACHE/linux-7.2 by scripts/vm/fetch-linux.sh (idempotent; needs the sid suite set up
# above). qemu-system-x86, busybox-static and build-essential (gcc and the static libc that
# memtool.c is built with) are in the package list above.
ISHARE_CACHE=$CACHE bash "$(dirname "${BASH_SOURCE[0]}")/vm/fetch-linux.sh"
# --- end of VM tests ---------------------------------------------------------------------
# --- containerd (snapshotter tests) -----------------------------------------------------
# crates/snapshotter's tests run real containerd 2.1.9 + runc. protoc builds the vendored
# snapshots protos (crates/snapshotter/build.rs; libprotobuf-dev holds the well-known
# types they import); runc and umoci (offline OCI images) come
# from bookworm. containerd 2.1.9 comes from Debian sid's package, downloaded and unpacked
# into $CACHE/containerd-2.1.9 but never installed (installing it would upgrade libc; its
# binaries need only glibc 2.34). The sid suite is set up, pinned low, above.
CTRD_VER=2.1.9
CTRD_DIR=$CACHE/containerd-$CTRD_VER
need_ctr=()
for p in protobuf-compiler libprotobuf-dev runc umoci; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_ctr+=("$p")
done
if [ ${#need_ctr[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need_ctr[@]}" >/dev/null
fi
if [ ! -x "$CTRD_DIR/usr/bin/containerd" ] || [ ! -x "$CTRD_DIR/usr/bin/containerd-shim-runc-v2" ]; then
  work=$(mktemp -d)
  chmod 0755 "$work" && chown _apt "$work" 2>/dev/null || true # apt downloads as _apt
  (
    cd "$work"
    apt-get download -qq "containerd=$CTRD_VER*" >/dev/null
    rm -rf "$CTRD_DIR.tmp"
    dpkg-deb -x containerd_*.deb "$CTRD_DIR.tmp"
    rm -rf "$CTRD_DIR"
    mv "$CTRD_DIR.tmp" "$CTRD_DIR"
  )
  rm -rf "$work"
fi
"$CTRD_DIR/usr/bin/containerd" --version
# --- end of containerd -------------------------------------------------------------------
# --- packaging (crates/ishare/tests/manpages.rs, scripts/package.sh) ----------------------
# man-db and groff render the generated man pages (the test checks they render without
# warnings); dpkg-dev has dpkg-shlibdeps (the package's Depends); lintian checks the .deb.
need_pkg=()
for p in man-db groff-base dpkg-dev lintian; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkg+=("$p")
done
if [ ${#need_pkg[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need_pkg[@]}" >/dev/null
fi
# --- end of packaging --------------------------------------------------------------------
"$EU_DIR/bin/mkfs.erofs" --version | head -1
