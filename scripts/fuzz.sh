#!/usr/bin/env bash
# Runs ishare's fuzz targets (fuzz/, bodies in crates/fuzzing/) with libFuzzer, each for a
# given time, and says how many inputs each ran and whether anything new failed.
#
#   scripts/fuzz.sh [-t SECONDS] [-j JOBS] [TARGET...]
#
# SECONDS per target (default 600), JOBS parallel libFuzzer workers per target (default 1),
# TARGETs default to all: read_image tar_input build_tree serve_image. serve_image mounts
# through FUSE, so run as root. New inputs go to fuzz/corpus/TARGET/ (gitignored);
# failing ones to fuzz/artifacts/TARGET/: copy each into fuzz/regressions/TARGET/ once it
# is fixed, and `cargo test -p ishare-fuzzing` replays it from then on.
#
# Needs cargo-fuzz (installed here from crates.io when missing) and either a nightly
# toolchain or RUSTC_BOOTSTRAP=1 on stable (used when no nightly is installed).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=600
jobs=1
while getopts "t:j:h" o; do
  case $o in
    t) secs=$OPTARG ;;
    j) jobs=$OPTARG ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(read_image tar_input build_tree serve_image)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

# Mounts a crashed serve_image run left behind (its FUSE connection died with it).
cleanup_mounts() {
  awk '$3 == "fuse.ishare" && $2 ~ "^/tmp/\\.tmp" {print $2}' /proc/mounts |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup_mounts EXIT

status=0
for t in "${targets[@]}"; do
  [ -f "fuzz_targets/$t.rs" ] || { echo "unknown target $t" >&2; exit 2; }
  seeds=("seeds/$t")
  [ "$t" = serve_image ] && seeds+=(seeds/read_image)
  mkdir -p "corpus/$t" "artifacts/$t" "${seeds[@]}"
  before=$(find "artifacts/$t" -type f | wc -l)
  log=$(mktemp)
  echo "== $t: ${secs}s, $jobs job(s)"
  # -detect_leaks=0: the builder's per-build thread pool and the FUSE session threads
  # end asynchronously, which LeakSanitizer's per-input check reports as leaks (none
  # reproduces on a single run).
  cargo "${toolchain[@]}" fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -detect_leaks=0 \
    -print_final_stats=1 -jobs="$jobs" -workers="$jobs" >"$log" 2>&1 || true
  runs=$(cat "$log" fuzz-*.log 2>/dev/null | grep 'stat::number_of_executed_units' |
    awk '{s += $2} END {print s + 0}' || true)
  if [ "$runs" = 0 ]; then
    echo "   $t did not run:" >&2
    tail -n 20 "$log" >&2
    status=1
  fi
  rm -f fuzz-*.log
  after=$(find "artifacts/$t" -type f | wc -l)
  echo "   $runs inputs run, corpus $(find "corpus/$t" -type f | wc -l) files, $((after - before)) new failing input(s)"
  if [ "$after" -gt "$before" ]; then
    status=1
    # What failed: the panic or sanitizer report (not the input's bytes).
    grep -E "panicked at|^ERROR|SUMMARY|deadly signal|Timeout|out-of-memory|^    #[0-9]+ .* in (ishare|fuser)" "$log" |
      head -n 30 | cut -c1-300
    find "artifacts/$t" -type f -name '*-*' -newer "$log" -printf '   %p\n'
    cp "$log" "artifacts/$t/log-$(date +%Y%m%d-%H%M%S).txt"
    echo "   (whole log in artifacts/$t/)"
  fi
  rm -f "$log"
  cleanup_mounts
done
exit $status
