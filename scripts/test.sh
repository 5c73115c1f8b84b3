#!/usr/bin/env bash
# Installs everything the tests need (Debian packages, erofs-utils 1.9.4) and runs
# them all: formatting, lints, the whole test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "the tests mount images and create device nodes: run as root" >&2
  exit 1
fi
bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
