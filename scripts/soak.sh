#!/usr/bin/env bash
# The transport soak at length: the suite's transport test
# (cloud-processor/tests/transport.rs) with its schedule repeated and a
# longer black hole. The real agent (delete mode) and two real pollers talk
# to a private emulator through a TCP proxy that cuts requests and
# responses at random bytes, goes silent and resets, and refuses
# connections, while the agent and a poller are killed with SIGKILL. Prints
# the figures docs/benchmarks.md quotes: recovery after each fault and
# file-to-SQS latency.
#
# Knobs: RELAY_SOAK_ROUNDS (default 5), RELAY_SOAK_SILENCE_SECS (default 40).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RELAY_SOAK_ROUNDS=${RELAY_SOAK_ROUNDS:-5}
export RELAY_SOAK_SILENCE_SECS=${RELAY_SOAK_SILENCE_SECS:-40}
export RELAY_MOTO_DIR=$PWD/.moto/soak

scripts/moto.sh install
eval "$(scripts/moto.sh start)"
trap 'scripts/moto.sh stop' EXIT

# The test runs the agent binary beside it, so build both in one profile.
cargo build --locked --release -p edge-agent --bin edge-agent
cargo test --locked --release -p cloud-processor --test transport -- --nocapture
