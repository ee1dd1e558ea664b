#!/usr/bin/env bash
# The whole test suite: installs missing system packages, then runs every test of the
# workspace with every feature (unit, integration, property, doc tests), the compile-fail
# tests (without the RocksDB feature, see sabot/tests/compile_fail.rs), and builds the
# examples and benches.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo test --workspace --all-features
cargo test -p sabot --test compile_fail
cargo build --benches --examples --all-features
