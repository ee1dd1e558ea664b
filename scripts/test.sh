#!/usr/bin/env bash
# The whole test suite: installs missing system packages, then runs every test of the
# workspace (unit, integration, compile-fail and doc tests) and builds examples and benches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-features
cargo build --benches --examples
