#!/usr/bin/env bash
# Builds target/debian/ishare_<version>_amd64.deb with dpkg-deb (no extra packaging
# tool): the release binary, its mount.fuse.ishare link, the systemd units of
# dist/systemd (installed, not enabled), the man pages and bash/zsh/fish completions
# that `ishare generate` writes from the command line's own definitions, and
# maintainer scripts that stop the units and leave no mount or process behind on
# removal. Depends is computed by dpkg-shlibdeps from the binary.
#
#   scripts/package.sh            # build the release binary, then the package
#   ISHARE_BIN=path scripts/package.sh   # package an already-built binary
#   ISHARE_DEB_DIR=dir scripts/package.sh # write the .deb (and its staging tree) there
#
# Needs dpkg-dev (dpkg-shlibdeps), man-db is not needed; scripts/install-deps.sh
# installs them. Prints the path of the .deb.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
# The workspace version: the same one `ishare --version` and the man pages print.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "package.sh: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

bin=${ISHARE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -p ishare >&2
  bin=$root/target/release/ishare
fi
got=$("$bin" --version)
[ "$got" = "ishare $version" ] || { echo "package.sh: $bin says '$got', Cargo.toml $version" >&2; exit 1; }

out=${ISHARE_DEB_DIR:-$root/target/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$out/ishare_${version}_$arch
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
cd "$stage"

# The binary, stripped (the debug line tables are for local profiling only).
install -D -m 0755 "$bin" usr/bin/ishare
strip --remove-section=.comment --remove-section=.note --strip-unneeded usr/bin/ishare
# mount(8) runs /sbin/mount.fuse.ishare for `mount -t fuse.ishare` (merged /usr).
mkdir -p usr/sbin
ln -s ../bin/ishare usr/sbin/mount.fuse.ishare
# mkfs.erofs's command line, offered without taking over erofs-utils' own file: put
# /usr/lib/ishare/bin first in PATH (e.g. containerd's service) to use it.
mkdir -p usr/lib/ishare/bin
ln -s ../../../bin/ishare usr/lib/ishare/bin/mkfs.erofs

# Units, installed but not enabled (no postinst enabling them): the admin chooses.
install -D -m 0644 -t lib/systemd/system "$root"/dist/systemd/*.service
# The default configuration (a conffile) and, per unit, a vendor drop-in reading it:
# the units in dist/systemd stay usable without the package.
install -D -m 0644 "$root/dist/default/ishare" etc/default/ishare
for unit in "$root"/dist/systemd/*.service; do
  unit=$(basename "$unit")
  install -d "lib/systemd/system/$unit.d"
  printf '# From the ishare package: settings in /etc/default/ishare (optional).\n[Service]\nEnvironmentFile=-/etc/default/ishare\n' \
    >"lib/systemd/system/$unit.d/ishare-defaults.conf"
done

# Man pages and completions from the binary's own definitions.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bin" generate man "$gen/man"
"$bin" generate completions "$gen/comp"
for page in "$gen"/man/*; do
  sect=${page##*.}
  install -D -m 0644 "$page" "usr/share/man/man$sect/$(basename "$page")"
done
# The helper link's page points at ishare-mount(8).
printf '.so man8/ishare-mount.8\n' >usr/share/man/man8/mount.fuse.ishare.8
gzip -9n usr/share/man/man*/*
install -D -m 0644 "$gen/comp/ishare.bash" usr/share/bash-completion/completions/ishare
install -D -m 0644 "$gen/comp/_ishare" usr/share/zsh/vendor-completions/_ishare
install -D -m 0644 "$gen/comp/ishare.fish" usr/share/fish/vendor_completions.d/ishare.fish

# Documentation: copyright, a Debian-format changelog (lintian wants one in a native
# package), the containerd snippet and how to use the mkfs.erofs link.
doc=usr/share/doc/ishare
install -d "$doc/examples"
install -m 0644 "$root/dist/containerd/config.toml" "$doc/examples/containerd-config.toml"
cat >"$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ishare

Files: *
Copyright: 2026 ishare developers
License: MIT or Apache-2.0
 On Debian systems the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0. The MIT license:
 .
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT.
EOF
cat >"$doc/README.Debian" <<'EOF'
ishare for Debian
-----------------

The units ishare.service (the node daemon) and ishare-snapshotter.service
(containerd's proxy snapshotter) are installed but not enabled:

  systemctl enable --now ishare
  install -m 0600 /dev/stdin /etc/ishare/domain-id <<<"$(head -c 32 /dev/urandom | base64)"
  systemctl enable --now ishare-snapshotter

examples/containerd-config.toml is the snippet for /etc/containerd/config.toml.

/etc/default/ishare sets the units' environment (the log level); its comments say
what is configured where else.

mkfs.erofs: /usr/lib/ishare/bin/mkfs.erofs is ishare with mkfs.erofs's command line
(erofs-utils 1.9.4's options). It does not replace erofs-utils' /usr/bin/mkfs.erofs;
put /usr/lib/ishare/bin first in PATH where you want it, e.g. in a systemd drop-in:
  [Service]
  Environment=PATH=/usr/lib/ishare/bin:/usr/sbin:/usr/bin:/sbin:/bin

Check the host with `ishare doctor`.
EOF
date_rfc=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct)}")
cat >"$doc/changelog" <<EOF
ishare ($version) unstable; urgency=medium

  * Release $version; see CHANGELOG.md in the source for what it contains.

 -- ishare developers <developers@ishare.invalid>  $date_rfc
EOF
gzip -9n "$doc/changelog"
install -m 0644 "$root/CHANGELOG.md" "$doc/CHANGELOG.md"
gzip -9n "$doc/CHANGELOG.md"

# Depends from the binary's shared libraries (dpkg-shlibdeps wants a debian/control).
shl=$(mktemp -d)
mkdir "$shl/debian"
printf 'Source: ishare\n\nPackage: ishare\nArchitecture: any\n' >"$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O "$stage/usr/bin/ishare" | sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN . | cut -f1)
cat >DEBIAN/control <<EOF
Package: ishare
Version: $version
Architecture: $arch
Maintainer: ishare developers <developers@ishare.invalid>
Installed-Size: $installed_size
Depends: $depends
Recommends: fuse3
Suggests: containerd
Section: admin
Priority: optional
Description: EROFS images with page cache sharing
 ishare builds EROFS images (mkfs.erofs-compatible, with per-file content
 fingerprints), reads and checks them, and mounts them over FUSE so that
 identical files across images share one copy in the page cache. It ships a
 node daemon serving every mount of the host and a containerd proxy
 snapshotter.
EOF

# Stop the units before the binary goes, then take down any mount or daemon the
# package's binary still serves (mounts made without the unit run their own daemon).
cat >DEBIAN/prerm <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
  if [ -d /run/systemd/system ]; then
    # deb-systemd-invoke (init-system-helpers, Essential) stops enabled or not.
    deb-systemd-invoke stop ishare-snapshotter.service ishare.service >/dev/null 2>&1 || true
  fi
  # Unmount every ishare mount, innermost first.
  awk '$3 == "fuse.ishare" { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$(printf '%b' "$m")" 2>/dev/null || true
  done
  # Any process still running this package's binary (a daemon started by a mount):
  # asked to stop, given 10 s to finish (a daemon may be publishing objects), then
  # killed, so that nothing runs the binary dpkg is about to remove.
  ishare_pids() {
    for p in /proc/[0-9]*; do
      if [ "$(readlink "$p/exe" 2>/dev/null)" = /usr/bin/ishare ]; then
        echo "${p#/proc/}"
      fi
    done
  }
  pids=$(ishare_pids)
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  tries=0
  while [ -n "$pids" ] && [ $tries -lt 100 ]; do
    sleep 0.1
    tries=$((tries + 1))
    pids=$(ishare_pids)
  done
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
fi
exit 0
EOF
cat >DEBIAN/postrm <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
  rm -rf /run/ishare
fi
exit 0
EOF
cat >DEBIAN/postinst <<'EOF'
#!/bin/sh
set -e
# The units are installed, not enabled: only make systemd see them.
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOF
chmod 0755 DEBIAN/prerm DEBIAN/postrm DEBIAN/postinst
# Every file under /etc is the admin's once installed: dpkg keeps their changes.
find etc -type f -printf '/%p\n' | LC_ALL=C sort >DEBIAN/conffiles
# md5sums lets debsums check the installed files.
find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums

cd "$out"
deb=$out/ishare_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
