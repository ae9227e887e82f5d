#!/usr/bin/env bash
# Runs the relay's benchmarks against a private emulator and prints their
# tables (copy them into README.md with the machine they came from).
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh agent      only the edge agent's
# Knobs: RELAY_BENCH_FILES, RELAY_BENCH_FILE_BYTES (see each bench's header).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RELAY_MOTO_DIR="$PWD/.moto/bench"
env_lines=$(scripts/moto.sh start)
eval "$env_lines"
trap 'scripts/moto.sh stop' EXIT
which=${1:-all}
if [[ $which == all || $which == agent ]]; then
  echo "== edge agent (release build, $(nproc) cores, $(uname -m))" >&2
  cargo bench --locked -p edge-agent --bench agent
fi
