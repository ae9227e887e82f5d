#!/usr/bin/env bash
# The soaks at length, against a private emulator, with the real agent
# (delete mode) and two real pollers:
#
# - transport (cloud-processor/tests/transport.rs): a TCP proxy cuts
#   requests and responses at random bytes, goes silent and resets, and
#   refuses connections, while the agent and a poller are killed with
#   SIGKILL; its schedule repeated, with a longer black hole.
# - AWS errors (cloud-processor/tests/http_faults.rs): an HTTP proxy answers
#   a share of requests as S3 and SQS do when they struggle (XML and JSON
#   errors, throttling, partial batches, cut downloads, lost and replaced
#   answers to writes), into a FIFO and a standard queue, once per seed.
#
# Prints the figures docs/benchmarks.md quotes: recovery after each fault,
# file-to-SQS latency, and per storm what was injected and what the retry
# counter counted.
#
# Knobs: RELAY_SOAK_ROUNDS (default 5), RELAY_SOAK_SILENCE_SECS (40),
# RELAY_SOAK_SEEDS (default "1 2 3"), RELAY_STORM_PERCENT (15),
# RELAY_STORM_SECS (60); RELAY_SOAK_ONLY=transport|storm runs one of them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RELAY_SOAK_ROUNDS=${RELAY_SOAK_ROUNDS:-5}
export RELAY_SOAK_SILENCE_SECS=${RELAY_SOAK_SILENCE_SECS:-40}
export RELAY_STORM_PERCENT=${RELAY_STORM_PERCENT:-15}
export RELAY_STORM_SECS=${RELAY_STORM_SECS:-60}
seeds=${RELAY_SOAK_SEEDS:-1 2 3}
only=${RELAY_SOAK_ONLY:-}
export RELAY_MOTO_DIR=$PWD/.moto/soak

scripts/moto.sh install
eval "$(scripts/moto.sh start)"
trap 'scripts/moto.sh stop' EXIT

# The tests run the agent binary beside them, so build both in one profile.
cargo build --locked --release -p edge-agent --bin edge-agent
if [[ -z $only || $only == transport ]]; then
  cargo test --locked --release -p cloud-processor --test integration -- transport:: --nocapture
fi
if [[ -z $only || $only == storm ]]; then
  for seed in $seeds; do
    echo "== AWS errors, seed $seed ($RELAY_STORM_PERCENT% of requests for $RELAY_STORM_SECS s)" >&2
    RELAY_STORM_SEED=$seed cargo test --locked --release -p cloud-processor --test integration \
      -- http_faults:: --nocapture --test-threads 1
  done
fi
