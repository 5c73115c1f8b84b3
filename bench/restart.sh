#!/bin/bash
# bench/restart.sh: what readers see while the node daemon restarts (issue 11, part 5).
#
# MOUNTS (8) images mounted through one `ishare daemon` on a private socket (half with
# FUSE passthrough, half passthrough=off, where the daemon reads shared files), READERS
# (16) reader processes checksum their mount's files in a loop (open, drop the file's
# cached pages, read(2) in 1 MiB chunks; every third pass through mmap; and a file
# opened before the first restart read again with pread), while the daemon is stopped
# with SIGTERM and started again RESTARTS (3) times, then killed with SIGKILL and
# started again RESTARTS times, LOAD (2) seconds of reading between restarts.
# Reports: reads, wrong reads, failed reads, the longest single read call, open and
# mmap pass (the pause a reader sees), the daemon's down time (signal to listening),
# the fd holder's RSS and PSS. Needs root. ISHARE=path of the binary
# (default target/release/ishare).
set -euo pipefail
cd "$(dirname "$0")/.."
ISHARE=${ISHARE:-$PWD/target/release/ishare}
MOUNTS=${MOUNTS:-8}
READERS=${READERS:-16}
RESTARTS=${RESTARTS:-3}
LOAD=${LOAD:-2}
[ -x "$ISHARE" ] || { echo "no $ISHARE: cargo build --release -p ishare" >&2; exit 1; }
W=$(mktemp -d /tmp/ishare-restart-bench.XXXXXX)
S=$W/sock/daemon.sock
export ISHARE_DOMAIN_ID=restart-bench
cleanup() {
	[ -S "$S" ] && "$ISHARE" daemon --stop --socket "$S" >/dev/null 2>&1 || true
	for i in $(seq 0 $((MOUNTS - 1))); do
		mountpoint -q "$W/m$i" && umount -l "$W/m$i" || true
	done
	rm -rf "$W"
}
trap cleanup EXIT

# Images: a 16 MiB file common to all, 8 MiB of each image's own.
python3 - "$W" "$MOUNTS" <<'EOF'
import os, random, sys
w, n = sys.argv[1], int(sys.argv[2])
common = random.Random(1).randbytes(16 << 20)
for i in range(n):
    d = f"{w}/src{i}"
    os.makedirs(f"{d}/own")
    open(f"{d}/common", "wb").write(common)
    open(f"{d}/own/{i}", "wb").write(random.Random(100 + i).randbytes(8 << 20))
EOF
for i in $(seq 0 $((MOUNTS - 1))); do
	"$ISHARE" mkfs --quiet "$W/$i.erofs" "$W/src$i"
	mkdir "$W/m$i"
done
mkdir -m 0755 "$W/sock" "$W/store"

start_daemon() {
	"$ISHARE" daemon --socket "$S" --log "$W/daemon.log" &
	DAEMON=$!
	until [ -S "$S" ] && "$ISHARE" mounts --socket "$S" >/dev/null 2>&1; do sleep 0.005; done
}
start_daemon
for i in $(seq 0 $((MOUNTS - 1))); do
	opts="inode_share,store=$W/store"
	[ "$i" -ge $((MOUNTS / 2)) ] && opts="$opts,passthrough=off"
	"$ISHARE" mount --socket "$S" -o "$opts" "$W/$i.erofs" "$W/m$i"
done
# First opens prepare and verify the shared objects: not what is measured here.
cat "$W"/m*/common "$W"/m*/own/* >/dev/null

# The readers: one process each; their figures go to $W/r$N.json at $W/stop.
python3 - "$W" "$MOUNTS" "$READERS" <<'EOF' &
import hashlib, json, mmap, os, sys, time
w, n, readers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def want(path):
    return hashlib.sha256(open(path.replace("/m", "/src", 1), "rb").read()).digest()
def reader(r):
    m = r % n
    files = [f"{w}/m{m}/common", f"{w}/m{m}/own/{m}"]
    wants = {f: want(f) for f in files}
    kept = os.open(files[r % 2], os.O_RDONLY)
    st = dict(reads=0, wrong=0, failed=0, max_read=0.0, max_open=0.0, max_mmap=0.0, errors=[])
    def timed(key, f):
        t = time.monotonic()
        v = f()
        st[key] = max(st[key], time.monotonic() - t)
        return v
    k = 0
    while not os.path.exists(f"{w}/stop"):
        path = files[k % 2]
        try:
            h = hashlib.sha256()
            if k % 3 == 2:
                fd = kept
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                at = 0
                while b := timed("max_read", lambda: os.pread(fd, 1 << 20, at)):
                    h.update(b)
                    at += len(b)
                path = files[r % 2]
            else:
                fd = timed("max_open", lambda: os.open(path, os.O_RDONLY))
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    if k % 3 == 1:
                        def whole():
                            with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
                                h.update(mm)
                        timed("max_mmap", whole)
                    else:
                        while b := timed("max_read", lambda: os.read(fd, 1 << 20)):
                            h.update(b)
                finally:
                    os.close(fd)
            st["reads"] += 1
            if h.digest() != wants[path]:
                st["wrong"] += 1
        except OSError as e:
            st["failed"] += 1
            if len(st["errors"]) < 5:
                st["errors"].append(f"{path}: {e}")
        k += 1
    json.dump(st, open(f"{w}/r{r}.json", "w"))
pids = []
for r in range(readers):
    pid = os.fork()
    if pid == 0:
        reader(r)
        os._exit(0)
    pids.append(pid)
for p in pids:
    os.waitpid(p, 0)
EOF
READERS_PID=$!

sleep "$LOAD"
holder=$(pgrep -f "fd-holder --socket $S.holder")
holder_mem=$(awk '/^Rss:/{r=$2} /^Pss:/{p=$2} /^Pss_Anon:/{a=$2} END{printf "RSS %d KiB, PSS %d KiB (anonymous %d KiB)", r, p, a}' "/proc/$holder/smaps_rollup")
downs=()
for round in $(seq 1 $((2 * RESTARTS))); do
	sig=TERM
	[ "$round" -gt "$RESTARTS" ] && sig=KILL
	t0=$(date +%s.%N)
	kill -$sig "$DAEMON"
	{ wait "$DAEMON" || true; } 2>/dev/null
	start_daemon
	t1=$(date +%s.%N)
	downs+=("$sig $(echo "($t1 - $t0) * 1000" | bc | cut -d. -f1) ms")
	sleep "$LOAD"
done
touch "$W/stop"
wait "$READERS_PID"
[ "$(pgrep -f "fd-holder --socket $S.holder")" = "$holder" ] || echo "warning: the fd holder changed" >&2
resent=$(grep -c "served again" "$W/daemon.log" || true)

python3 - "$W" "$READERS" "$holder_mem" "$resent" "${downs[@]}" <<'EOF'
import json, sys
w, readers, holder, resent, downs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]
st = [json.load(open(f"{w}/r{r}.json")) for r in range(readers)]
tot = lambda k: sum(s[k] for s in st)
mx = lambda k: max(s[k] for s in st)
print("| figure | value |\n| --- | ---: |")
print(f"| reads (whole files) | {tot('reads')} |")
print(f"| wrong reads | {tot('wrong')} |")
print(f"| failed reads | {tot('failed')} |")
print(f"| longest single read call (1 MiB) | {mx('max_read') * 1000:.0f} ms |")
print(f"| longest open | {mx('max_open') * 1000:.0f} ms |")
print(f"| longest mmap pass (whole file) | {mx('max_mmap') * 1000:.0f} ms |")
print(f"| daemon down, signal to listening | {', '.join(downs)} |")
print(f"| mounts served again (log lines) | {resent} |")
print(f"| fd holder | {holder} |")
errs = [e for s in st for e in s["errors"]]
if errs:
    print("\nerrors:", *errs[:10], sep="\n  ")
EOF
