#!/usr/bin/env bash
# Wire compatibility with a Kafka client that is not librdkafka: kafka-python (from PyPI, in a
# venv under /tmp) produces to and consumes from a fraud-detection worker process through the
# embedded cluster (tests/wire_compat.rs, skipped unless SABOT_WIRE_TESTS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SABOT_WIRE_VENV:-/tmp/sabot-wire-venv}"
if ! "$VENV/bin/python" -c 'import kafka' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check kafka-python
fi
# `cargo test --test wire_compat` does not build the examples: the test runs this binary.
cargo build --example fraud_detection
SABOT_WIRE_TESTS=1 PYTHON="$VENV/bin/python" cargo test --test wire_compat -- --nocapture
