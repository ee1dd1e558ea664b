#!/usr/bin/env bash
# Installs what building and testing Sabot needs on a fresh Debian machine with a Rust
# toolchain. Idempotent; uses sudo only when not root.
set -euo pipefail

need=()
# A C/C++ toolchain for the bundled native libraries (zstd, lz4 via parquet).
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# libclang for bindgen: the `rocksdb` feature builds RocksDB from source (librocksdb-sys).
dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q 'ok installed' || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "setup: installing ${need[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust from rustup first" >&2; exit 1; }
