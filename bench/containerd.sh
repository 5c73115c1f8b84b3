#!/usr/bin/env bash
# Benchmark: containers from a family of related images on containerd 2.1.9 + runc,
# through `ishare snapshotter` (layers shared through the node daemon) against
# containerd's built-in overlayfs and erofs (fingerprints on) snapshotters.
#
# The images are the Debian root filesystems of bench/mount.sh's family (minbase,
# minbase-r2, curl, python, python-r2, perl, git, web, dev, dev-r2), one uncompressed
# layer each, written as an OCI layout by this script. For N in $NS: N containers, one
# per image, started one after the other; each reads every regular file of its root
# (`find / -xdev -type f | xargs cat`). Reported: the page cache charged to the
# containers' memory cgroups in total, and to the cgroup of this script (the node
# daemon, the snapshotter, containerd: ishare's first open of a file copies it into
# the store there), and the wall time of `ctr run --rm IMAGE true` (snapshot, mount,
# runc start and exit) per snapshotter.
#
# Everything is private: containerd's root, state and sockets, the snapshotter, the
# node daemon and the store live in a temporary directory. Caches are dropped before
# each row; ishare is measured twice per N: while it makes the store's objects, and
# with every object made. Run as root; it needs free disk space of about seven times
# the trees of the largest N (checked first).
#
# Environment:
#   ISHARE_CACHE  cache directory (default /var/cache/ishare)
#   NS            container counts (default "2 5 10")
#   SNAPSHOTTERS  (default "ishare overlayfs erofs")
#   RESULTS       where the report goes (default bench/results/containerd.md)
#   SKIP_BUILD=1  do not run `cargo build --release -p ishare`
#   ISHARE_BIN    ishare binary (default $CARGO_TARGET_DIR/release/ishare, or
#                 target/release/ishare)
set -euo pipefail

BENCH_NAME=containerd.sh
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NS=${NS:-2 5 10}
SNAPSHOTTERS=${SNAPSHOTTERS:-ishare overlayfs erofs}
RESULTS=${RESULTS:-$ROOT/bench/results/containerd.md}
ISHARE_BIN=${ISHARE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ishare}
CTRD_BIN=$CACHE/containerd-2.1.9/usr/bin
FAMILY=(minbase minbase-r2 curl python python-r2 perl git web dev dev-r2)
[ "$(id -u)" = 0 ] || die "run as root"
[ -x "$CTRD_BIN/containerd" ] || die "containerd 2.1.9 missing: run scripts/install-deps.sh"
[ -x "$MKFS" ] || die "mkfs.erofs 1.9.4 missing: run scripts/install-deps.sh"
max_n=0
for n in $NS; do [ "$n" -le ${#FAMILY[@]} ] || die "NS: at most ${#FAMILY[@]}"; [ "$n" -le "$max_n" ] || max_n=$n; done
for name in "${FAMILY[@]:0:$max_n}"; do
  [ -d "$BENCH/rootfs-bookworm-$name" ] ||
    die "$BENCH/rootfs-bookworm-$name missing: run PARTS=memory bench/mount.sh once (it builds the family)"
done
bench_build "$ISHARE_BIN"

# --- private containerd, node daemon, snapshotter --------------------------------
W=$(mktemp -d /var/tmp/ishare-bench-ctrd.XXXXXX)
PIDS=()
cleanup() {
  set +e
  if [ -S "$W/containerd.sock" ]; then
    for c in $(ctr containers ls -q 2>/dev/null); do
      ctr tasks kill -s KILL "$c" >/dev/null 2>&1; sleep 0.2
      ctr tasks rm -f "$c" >/dev/null 2>&1; ctr containers rm "$c" >/dev/null 2>&1
    done
  fi
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[$i]}" 2>/dev/null; wait "${PIDS[$i]}" 2>/dev/null
  done
  grep -o " $W/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$W"
  [ -z "${CG:-}" ] || { echo $$ >"$CG_PARENT$ORIG_CG/cgroup.procs"; rmdir "$CG" 2>/dev/null; }
}
trap cleanup EXIT

# --- the OCI layout: one uncompressed layer per image ----------------------------
# Written into the work directory and streamed into each import: the layers, the
# content store and three snapshotters each hold the trees once, so the script
# first checks there is room for about seven times the trees.
OCI=$W/oci
need_kib=0
for name in "${FAMILY[@]:0:$max_n}"; do
  need_kib=$((need_kib + $(du -sk "$BENCH/rootfs-bookworm-$name" | cut -f1)))
done
avail_kib=$(df -Pk "$W" | awk 'NR == 2 { print $4 }')
if [ $((need_kib * 7)) -gt "$avail_kib" ]; then
  die "needs about $((need_kib * 7 / 1024)) MiB free on $(dirname "$W"), has $((avail_kib / 1024)) MiB (use a smaller NS)"
fi
sha() { sha256sum "$1" | cut -d' ' -f1; }
log "writing the OCI layout ($max_n images)"
mkdir -p "$OCI/blobs/sha256"
printf '{"imageLayoutVersion":"1.0.0"}' >"$OCI/oci-layout"
entries=()
for name in "${FAMILY[@]:0:$max_n}"; do
  tar --sort=name --numeric-owner --xattrs --xattrs-include='*' \
    -C "$BENCH/rootfs-bookworm-$name" -cf "$OCI/layer.tar" .
  l=$(sha "$OCI/layer.tar"); lsize=$(stat -c %s "$OCI/layer.tar")
  mv "$OCI/layer.tar" "$OCI/blobs/sha256/$l"
  printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$l" >"$OCI/c"
  c=$(sha "$OCI/c"); csize=$(stat -c %s "$OCI/c"); mv "$OCI/c" "$OCI/blobs/sha256/$c"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$c" "$csize" "$l" "$lsize" >"$OCI/m"
  m=$(sha "$OCI/m"); msize=$(stat -c %s "$OCI/m"); mv "$OCI/m" "$OCI/blobs/sha256/$m"
  entries+=("$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}' "$m" "$msize" "$name")")
done
(IFS=,; printf '{"schemaVersion":2,"manifests":[%s]}' "${entries[*]}") >"$OCI/index.json"

export PATH=$CTRD_BIN:$EU_BIN:$PATH
ctr() { "$CTRD_BIN/ctr" -a "$W/containerd.sock" "$@"; }

# This script, and so the daemons it starts, in a memory cgroup of its own (v1 here).
CG_PARENT=/sys/fs/cgroup/memory
[ -d "$CG_PARENT" ] || die "this script reads cgroup v1 memory.stat (cache)"
ORIG_CG=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
CG=$CG_PARENT$ORIG_CG/ishare-bench-ctrd-$$
mkdir "$CG"
echo $$ >"$CG/cgroup.procs"
cg_cache() { awk '$1 == "cache" { print $2 }' "$1/memory.stat"; }

"$ISHARE_BIN" daemon --socket "$W/daemon.sock" --log "$W/daemon.log" >/dev/null 2>&1 &
PIDS+=($!)
until [ -S "$W/daemon.sock" ]; do sleep 0.1; done
ISHARE_DOMAIN_ID=bench-containerd "$ISHARE_BIN" snapshotter --root "$W/snap" --address "$W/snap.sock" \
  --socket "$W/daemon.sock" --store "$W/store" >"$W/snapshotter.log" 2>&1 &
PIDS+=($!)
until [ -S "$W/snap.sock" ]; do sleep 0.1; done
cat >"$W/config.toml" <<EOF
version = 3
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[proxy_plugins.ishare]
  type = "snapshot"
  address = "$W/snap.sock"
[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "ishare"
    differ = "walking"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
    differ = "walking"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "erofs"
    differ = "erofs"
[plugins."io.containerd.differ.v1.erofs"]
  mkfs_options = ["--xattr-inode-digest"]
EOF
"$CTRD_BIN/containerd" --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
PIDS+=($!)
until [ -S "$W/containerd.sock" ]; do sleep 0.1; done

# The content first, so each snapshotter's import time is its unpack alone.
tar -C "$OCI" -cf - . | ctr images import --no-unpack --base-name localhost/fam - >/dev/null
declare -A IMPORT_S=()
for s in $SNAPSHOTTERS; do
  log "import into $s"
  t0=$(date +%s.%N)
  tar -C "$OCI" -cf - . | ctr images import --snapshotter "$s" --base-name localhost/fam - >/dev/null
  IMPORT_S[$s]=$(echo "$(date +%s.%N) - $t0" | bc)
done
rm -rf "$OCI"

mib() { echo "scale=1; $1 / 1048576" | bc; }
wait_done() { # container id
  local f="$W/state/io.containerd.runtime.v2.task/default/$1/rootfs/done" i
  for ((i = 0; i < 6000; i++)); do [ -f "$f" ] && return 0; sleep 0.1; done
  die "container $1 did not finish reading"
}

# Caches dropped twice with a pause: the imports leave much to write back.
settle() { sync; sleep 1; drop_caches; sleep 1; drop_caches; }

declare -A ROW=() LAT=()
LABELS=()
RUN=0
# measure LABEL SNAPSHOTTER N: N containers, one after the other, each reading its root.
measure() {
  local label=$1 s=$2 n=$3 i id c total=0 first=0 infra0 infra
  RUN=$((RUN + 1))
  log "$label: $n containers"
  settle
  infra0=$(cg_cache "$CG")
  for ((i = 0; i < n; i++)); do
    id=b$RUN-$i
    ctr run -d --snapshotter "$s" "localhost/fam:${FAMILY[$i]}" "$id" \
      sh -c 'find / -xdev -type f -print0 | xargs -0 cat >/dev/null; echo done >/done; sleep 100000' >/dev/null
    wait_done "$id"
    c=$(cg_cache "$CG_PARENT/default/$id")
    total=$((total + c))
    [ "$i" != 0 ] || first=$c
  done
  infra=$(( $(cg_cache "$CG") - infra0 ))
  ROW[$label,$n]="| $n | $label | $(mib "$first") | $(mib "$total") | $(mib "$infra") | $(mib $((total + infra))) |"
  [[ " ${LABELS[*]} " == *" $label "* ]] || LABELS+=("$label")
  for ((i = 0; i < n; i++)); do
    id=b$RUN-$i
    ctr tasks kill -s KILL "$id" >/dev/null 2>&1 || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do ctr tasks rm -f "$id" >/dev/null 2>&1 && break; sleep 0.3; done
    ctr containers rm "$id" >/dev/null
  done
}

for s in $SNAPSHOTTERS; do
  # Start latency: `ctr run --rm IMAGE true`, median of 3 (the first image, unpacked).
  times=()
  for i in 1 2 3; do
    t0=$(date +%s.%N)
    ctr run --rm --snapshotter "$s" "localhost/fam:${FAMILY[0]}" "lat-$s-$i" true >/dev/null
    times+=("$(echo "$(date +%s.%N) - $t0" | bc)")
  done
  LAT[$s]=$(printf '%s\n' "${times[@]}" | median)
  for n in $NS; do
    if [ "$s" = ishare ]; then
      # 1st pass: files no earlier row read are copied into the store now (by the node
      # daemon, charged to infra; with N=2 the store starts empty). 2nd pass: every
      # object exists (caches dropped): the steady state of a node.
      measure ishare-1st-pass ishare "$n"
      measure ishare-2nd-pass ishare "$n"
    else
      measure "$s" "$s" "$n"
    fi
  done
done

{
  echo "# containerd: N containers from N related images, page cache charged"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs, load $(loadavg) at the end;"
  echo "containerd 2.1.9, runc $(runc --version | head -1 | awk '{print $3}'), ishare $(git -C "$ROOT" rev-parse --short HEAD)."
  echo "Images: ${FAMILY[*]:0:$max_n} (bench/mount.sh's family, one uncompressed layer each)."
  echo "Each container reads every regular file of its root; containers start one after the other;"
  echo "caches are dropped before each row. \"infra\": the cgroup of the node daemon, the snapshotter and"
  echo "containerd (ishare copies a file into its store there at the file's first open;"
  echo "ishare-1st-pass makes the objects no earlier row made, ishare-2nd-pass finds them all)."
  echo "Which cgroup a page is charged to depends on who reads it first (a container, or the node"
  echo "daemon checking a new object): compare totals."
  echo
  echo "| N | snapshotter | first container (MiB) | all containers (MiB) | infra (MiB) | total (MiB) |"
  echo "|---|---|---|---|---|---|"
  for n in $NS; do for l in "${LABELS[@]}"; do echo "${ROW[$l,$n]}"; done; done
  echo
  echo "Unpack (\`ctr images import\` with the content already in, s): $(for s in $SNAPSHOTTERS; do printf '%s %.1f; ' "$s" "${IMPORT_S[$s]}"; done)"
  echo "\`ctr run --rm IMAGE true\` (s, median of 3): $(for s in $SNAPSHOTTERS; do printf '%s %.3f; ' "$s" "${LAT[$s]}"; done)"
} | tee "$RESULTS"
