#!/usr/bin/env bash
# Runs the relay's benchmarks against a private emulator and prints their
# tables (copy them into README.md with the machine they came from).
#   scripts/bench.sh            all benchmarks
#   scripts/bench.sh agent      only the edge agent's
#   scripts/bench.sh backlog    the edge agent's memory under a 10,000 and a 100,000-file
#                               backlog, and its recovery after an S3 black hole (no emulator)
#   scripts/bench.sh processor  only the cloud processor's (no emulator needed)
#   scripts/bench.sh demo       the whole relay, release build, for RELAY_BENCH_DEMO_SECS
#                               (default 60) at RELAY_DEMO_RATE: sustained rate and latency
#   scripts/bench.sh lambda     the Lambda's time per file: the release binary behind a
#                               Runtime API, RELAY_BENCH_LAMBDA_FILES (default 200) files
#   scripts/bench.sh replay     replay over RELAY_BENCH_REPLAY_OBJECTS (default 100,000)
#                               raw objects, next to a boto3 script
# Knobs: RELAY_BENCH_FILES, RELAY_BENCH_FILE_BYTES, RELAY_BENCH_BACKLOGS,
# RELAY_BENCH_OUTAGE_SECS, RELAY_BENCH_MB,
# RELAY_BENCH_GB (see each bench's header).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
which=${1:-all}
# A private moto, unless AWS_ENDPOINT_URL names one already.
moto_unless_given() {
  scripts/moto.sh install
  if [[ -z ${AWS_ENDPOINT_URL:-} ]]; then
    export RELAY_MOTO_DIR="$PWD/.moto/bench"
    env_lines=$(scripts/moto.sh start)
    eval "$env_lines"
    trap 'scripts/moto.sh stop' EXIT
  fi
}
if [[ $which == all || $which == demo ]]; then
  echo "== end-to-end demo (release build, $(nproc) cores, $(uname -m))" >&2
  RELAY_DEMO_PROFILE=release RELAY_DEMO_DURATION_SECS=${RELAY_BENCH_DEMO_SECS:-60} scripts/demo.sh
fi
if [[ $which == all || $which == processor ]]; then
  echo "== cloud processor hot path and peak RSS (release build, $(nproc) cores, $(uname -m))" >&2
  # The Python baseline (scripts/bench_python.py) runs on the same file.
  scripts/moto.sh install
  .venv/bin/pip install -q zstandard==0.23.0
  RELAY_BENCH_PYTHON="$PWD/.venv/bin/python" cargo bench --locked -p cloud-processor --bench pipeline
  cargo bench --locked -p cloud-processor --bench rss
fi
if [[ $which == all || $which == agent ]]; then
  export RELAY_MOTO_DIR="$PWD/.moto/bench"
  env_lines=$(scripts/moto.sh start)
  eval "$env_lines"
  trap 'scripts/moto.sh stop' EXIT
  echo "== edge agent (release build, $(nproc) cores, $(uname -m))" >&2
  cargo bench --locked -p edge-agent --bench agent
fi
if [[ $which == all || $which == backlog ]]; then
  echo "== edge agent backlog memory and outage recovery (release build, $(nproc) cores, $(uname -m))" >&2
  cargo bench --locked -p edge-agent --bench backlog
fi
if [[ $which == all || $which == lambda ]]; then
  echo "== the Lambda's time per file (release build, $(nproc) cores, $(uname -m))" >&2
  moto_unless_given
  cargo bench --locked -p cloud-processor --bench lambda
fi
if [[ $which == all || $which == replay ]]; then
  echo "== replay at scale (release build, $(nproc) cores, $(uname -m))" >&2
  cargo build --locked --release -p cloud-processor --bin cloud-processor
  moto_unless_given
  .venv/bin/python scripts/bench_replay.py "$PWD/target/release/cloud-processor"
fi
