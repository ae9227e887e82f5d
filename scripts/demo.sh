#!/usr/bin/env bash
# The relay on one machine, with no AWS account: a local S3 and SQS emulator,
# the edge agent watching a directory, the cloud processor in poll mode (the
# Lambda's handler outside Lambda; the emulator cannot run Lambdas), and a
# load generator writing files the way the edge container does. Reads the
# output queue to the end and prints files, records, messages, duplicates,
# losses and latency. Ctrl-C stops everything.
#
# Knobs: RELAY_DEMO_RATE (messages/s, default 6000),
#        RELAY_DEMO_DURATION_SECS (default 20),
#        RELAY_DEMO_RECORDS_PER_FILE (default 1000),
#        RELAY_DEMO_PROFILE (cargo profile: dev or release, default dev).
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
cargo build --locked --profile "$profile" -p edge-agent --bin edge-agent --example loadgen \
  -p cloud-processor --bin cloud-processor

say "starting the local S3 emulator"
scripts/moto.sh install
env_lines=$(scripts/moto.sh start)
eval "$env_lines"

agent_pid="" processor_pid=""
cleanup() {
  trap - EXIT INT TERM
  for pid in $agent_pid $processor_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -INT "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  pkill -TERM -f "$target_dir/examples/loadgen" 2>/dev/null || true
  scripts/moto.sh stop
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

rm -rf "$work" && mkdir -p "$work/in"
bucket=relay-demo
aws=("$root/.venv/bin/aws" --endpoint-url "$AWS_ENDPOINT_URL")
"${aws[@]}" s3 mb "s3://$bucket" >/dev/null
notifications=$("${aws[@]}" sqs create-queue --queue-name relay-demo-notifications --query QueueUrl --output text)
output=$("${aws[@]}" sqs create-queue --queue-name relay-demo-output --query QueueUrl --output text)
canaries=$("${aws[@]}" sqs create-queue --queue-name relay-demo-canary --query QueueUrl --output text)
arn=$("${aws[@]}" sqs get-queue-attributes --queue-url "$notifications" --attribute-names QueueArn --query Attributes.QueueArn --output text)
"${aws[@]}" s3api put-bucket-notification-configuration --bucket "$bucket" --notification-configuration \
  "{\"QueueConfigurations\":[$(for prefix in raw/ ledger/; do
    printf '{"QueueArn":"%s","Events":["s3:ObjectCreated:*"],"Filter":{"Key":{"FilterRules":[{"Name":"prefix","Value":"%s"}]}}}\n' "$arn" "$prefix"
  done | paste -sd, -)]}"

free_port() { "$root/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
processor_port=$(free_port)
say "starting the cloud processor (poll mode; metrics on 127.0.0.1:$processor_port)"
RELAY_FIELDS='id,ts=timestamp,type,user_id=user.id,country=geo.country,first_tag=tags.0' \
  RELAY_OUTPUT_QUEUE_URL=$output RELAY_NOTIFICATION_QUEUE_URL=$notifications \
  RELAY_CANARY_QUEUE_URL=$canaries RELAY_METRICS_ADDR=127.0.0.1:$processor_port \
  RELAY_LEDGER_GRACE_SECS=10 \
  "$target_dir/cloud-processor" poll 2>"$work/processor.log" &
processor_pid=$!

agent_port=$(free_port)
say "starting the edge agent on $work/in (metrics on 127.0.0.1:$agent_port)"
RELAY_WATCH_DIR=$work/in RELAY_BUCKET=$bucket RELAY_SOURCE_ID=demo-edge \
  RELAY_ON_SUCCESS=delete RELAY_METRICS_ADDR=127.0.0.1:$agent_port \
  RELAY_STATE_DIR=$work/state RELAY_CANARY_SECS=2 \
  "$target_dir/edge-agent" 2>"$work/agent.log" &
agent_pid=$!

files=$(( (rate * duration + per_file - 1) / per_file ))
records=$(( files * per_file ))
say "writing $rate messages/s for ${duration}s, $per_file per file ($files files)"
"$target_dir/examples/loadgen" --dir "$work/in" --rate "$rate" --duration-secs "$duration" --records-per-file "$per_file"
kill -0 "$agent_pid" 2>/dev/null || { echo "the edge agent exited; see $work/agent.log" >&2; exit 1; }
kill -0 "$processor_pid" 2>/dev/null || { echo "the processor exited; see $work/processor.log" >&2; exit 1; }

say "reading the output queue to the end"
status=0
"$root/.venv/bin/python" scripts/demo_summary.py "$output" "$records" "$files" 60 \
  "http://127.0.0.1:$processor_port/metrics" || status=$?

say "in S3, and the agent's and processor's counters"
"${aws[@]}" s3 ls --recursive --summarize "s3://$bucket/raw/" | tail -n 2
"$root/.venv/bin/python" - "$agent_port" "$processor_port" <<'PY'
import sys, urllib.request
for port in sys.argv[1:]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(("relay_agent_", "relay_processor_")) and "_bucket{" not in line:
            print("  " + line)
PY
echo "logs: $work/agent.log, $work/processor.log" >&2
exit "$status"
