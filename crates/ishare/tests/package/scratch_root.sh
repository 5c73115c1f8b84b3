#!/usr/bin/env bash
# tests/package.rs runs this as the first process of new PID and mount namespaces
# (`unshare --mount --pid --fork`): it installs the package into a scratch root, a
# copy-on-write overlay of this host's root (so dpkg checks Depends against a real
# package database and the maintainer scripts run chrooted in a real system), mounts
# an image twice with the installed binary (through a node daemon on a private socket
# and with a daemon of its own), removes the package and purges it. It prints what it
# saw as `key: value` lines on stdout for the test to judge. Nothing outlives the
# namespaces: the overlay, the mounts and every process started here end with it.
#
#   scratch_root.sh DEB SCRATCH_DIR
set -euo pipefail
deb=$1
scratch=$2

mount --make-rprivate /
mount -t tmpfs tmpfs "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
r=$scratch/root
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$r"
# This PID namespace's processes only: the prerm's process scan sees nothing of the host.
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount --rbind /sys "$r/sys"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
cp "$deb" "$r/tmp/ishare.deb"

in_root() {
  chroot "$r" env -i PATH=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# Mounts of the package's filesystem type in the scratch root (the namespace holds
# copies of the host's too), and processes running an ishare binary (this PID
# namespace's only).
facts() {
  echo "$1-mounts: $(awk -v r="$r/" '$3 == "fuse.ishare" && index($2, r) == 1' "$r/proc/self/mounts" | wc -l)"
  local n=0 p
  for p in "$r"/proc/[0-9]*; do
    case $(readlink "$p/exe" 2>/dev/null) in
      *ishare*) n=$((n + 1)) ;;
    esac
  done
  echo "$1-processes: $n"
}

in_root dpkg -i /tmp/ishare.deb >&2
echo "status: $(in_root dpkg-query -W -f='${Status}' ishare)"
echo "version: $(in_root ishare --version)"
echo "doctor: $(in_root ishare doctor --json | tr -d '\n')"
echo "config: $(grep -c '^#' "$r/etc/default/ishare") comment lines"
# man(1) finds the pages, bash loads the completion.
echo "man: $(in_root man -w ishare-mount mount.fuse.ishare ishare | tr '\n' ' ')"
echo "completion: $(in_root bash -c '. /usr/share/bash-completion/completions/ishare && complete -p ishare')"
# systemd's own check of the units with their drop-ins (it warns on stderr, exits 0).
echo "units-verify: $(in_root systemd-analyze verify ishare.service ishare-snapshotter.service 2>&1 | tr '\n' ';')"

# An image, mounted twice by the installed binary.
mkdir "$r/tmp/tree" "$r/tmp/mnt1" "$r/tmp/mnt2"
mkdir -m 0700 "$r/tmp/node"
echo "from the scratch root" >"$r/tmp/tree/file"
in_root ishare mkfs /tmp/a.erofs /tmp/tree >&2
in_root env ISHARE_SOCKET=/tmp/node/daemon.sock ishare mount /tmp/a.erofs /tmp/mnt1 >&2
in_root ishare mount --dedicated /tmp/a.erofs /tmp/mnt2 >&2
echo "read: $(cat "$r/tmp/mnt1/file") / $(cat "$r/tmp/mnt2/file")"
facts before

# A systemd that only records what the maintainer scripts ask of it.
mkdir -p "$r/run/systemd/system"
for tool in deb-systemd-invoke systemctl; do
  printf '#!/bin/sh\necho "%s $*" >>/tmp/systemd-calls\n' "$tool" >"$r/usr/local/sbin/$tool"
  chmod 0755 "$r/usr/local/sbin/$tool"
done

in_root dpkg -r ishare >&2
facts after
echo "systemd-calls: $(tr '\n' ';' <"$r/tmp/systemd-calls")"
echo "binary-after-remove: $([ -e "$r/usr/bin/ishare" ] && echo present || echo absent)"
echo "config-after-remove: $([ -e "$r/etc/default/ishare" ] && echo present || echo absent)"
in_root dpkg -P ishare >&2
echo "config-after-purge: $([ -e "$r/etc/default/ishare" ] && echo present || echo absent)"
