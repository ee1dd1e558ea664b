#!/usr/bin/env bash
# Runs the Kafka integration tests (sabot/tests/kafka.rs) against a real Kafka-compatible
# broker: tansu with SQLite storage, started here on 127.0.0.1 and stopped at the end.
# Not part of CI: the first `cargo install tansu` compiles it (about 20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v tansu >/dev/null 2>&1; then
    cargo install tansu --locked --features dynostore,libsql
fi

port="${TANSU_PORT:-19093}"
dir="$(mktemp -d)"
(cd "$dir" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "sqlite://tansu.db" >"$dir/broker.log" 2>&1) &
broker=$!
trap 'kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; rm -rf "$dir"' EXIT

for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done

SABOT_TEST_BROKER="127.0.0.1:$port" cargo test -p sabot --test kafka -- --test-threads 1 "$@" \
    || { echo "--- broker log ---"; tail -50 "$dir/broker.log"; exit 1; }
