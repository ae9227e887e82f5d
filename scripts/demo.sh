#!/usr/bin/env bash
# The relay on one machine, with no AWS account: a local S3 emulator, the edge
# agent watching a directory, and a load generator writing files the way the
# edge container does. Prints what reached S3. Ctrl-C stops everything.
#
# Knobs: RELAY_DEMO_RATE (messages/s, default 6000),
#        RELAY_DEMO_DURATION_SECS (default 20),
#        RELAY_DEMO_RECORDS_PER_FILE (default 1000),
#        RELAY_DEMO_PROFILE (cargo profile: dev or release, default dev).
#
# The cloud processor (S3 -> SQS) joins this demo when it is built; until
# then the demo stops at S3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
rate=${RELAY_DEMO_RATE:-6000}
duration=${RELAY_DEMO_DURATION_SECS:-20}
per_file=${RELAY_DEMO_RECORDS_PER_FILE:-1000}
profile=${RELAY_DEMO_PROFILE:-dev}
target_dir=$root/target/$([[ $profile == dev ]] && echo debug || echo "$profile")
work=$root/.tmp/demo
export RELAY_MOTO_DIR=$root/.moto/demo

say() { printf '\n== %s\n' "$*" >&2; }

say "building (cargo --profile $profile)"
cargo build --locked --profile "$profile" -p edge-agent --bin edge-agent --example loadgen

say "starting the local S3 emulator"
scripts/moto.sh install
env_lines=$(scripts/moto.sh start)
eval "$env_lines"

agent_pid=""
cleanup() {
  trap - EXIT INT TERM
  if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    wait "$agent_pid" 2>/dev/null || true
  fi
  pkill -TERM -f "$target_dir/examples/loadgen" 2>/dev/null || true
  scripts/moto.sh stop
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

rm -rf "$work" && mkdir -p "$work/in"
bucket=relay-demo
"$root/.venv/bin/aws" s3 mb "s3://$bucket" >/dev/null

metrics_port=$("$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
say "starting the edge agent on $work/in (metrics on 127.0.0.1:$metrics_port)"
RELAY_WATCH_DIR=$work/in RELAY_BUCKET=$bucket RELAY_SOURCE_ID=demo-edge \
  RELAY_ON_SUCCESS=delete RELAY_SETTLE_MS=500 RELAY_METRICS_ADDR=127.0.0.1:$metrics_port \
  RELAY_STATE_DIR=$work/state \
  "$target_dir/edge-agent" 2>"$work/agent.log" &
agent_pid=$!

say "writing $rate messages/s for ${duration}s, $per_file per file"
"$target_dir/examples/loadgen" --dir "$work/in" --rate "$rate" --duration-secs "$duration" --records-per-file "$per_file"

say "waiting for the agent to drain"
for _ in $(seq 1 600); do
  if [[ -z $(find "$work/in" -maxdepth 1 -name '*.json' -print -quit) ]]; then break; fi
  kill -0 "$agent_pid" 2>/dev/null || { echo "the edge agent exited; see $work/agent.log" >&2; exit 1; }
  sleep 0.2
done

say "what reached S3"
"$root/.venv/bin/aws" s3 ls --recursive --summarize "s3://$bucket/raw/" | tail -n 2
"$root/.venv/bin/python" - "$metrics_port" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
want = ("relay_agent_files_total", "relay_agent_bytes_in_total", "relay_agent_bytes_out_total",
        "relay_agent_retries_total", "relay_agent_rejected_files_total", "relay_agent_upload_seconds_sum",
        "relay_agent_upload_seconds_count")
for line in text.splitlines():
    if line.startswith(want):
        print("  " + line)
PY
echo "agent log: $work/agent.log" >&2
