#!/usr/bin/env bash
# LocalStack, the second local AWS implementation, for tests that need the
# behaviour moto does not have (FIFO deduplication after consumption,
# checksum refusals, one event per multipart upload with versionId and
# sequencer, conditional deletes refused).
#
#   scripts/localstack.sh install   create .venv-localstack with the pinned LocalStack (idempotent)
#   scripts/localstack.sh start     start it on 127.0.0.1 (S3, SQS and CloudWatch) and print `export` lines
#   scripts/localstack.sh env       print the `export` lines of the running server
#   scripts/localstack.sh stop      stop the server by its recorded PID
#
# Use it as: eval "$(scripts/localstack.sh start)". It runs in host mode
# (no Docker), with the hypercorn gateway, which binds the host it is given
# (the default server binds 0.0.0.0 whatever it is told); start-up checks
# that it listens on loopback only. It needs Python 3.13: RELAY_LOCALSTACK_PYTHON
# names one, else python3.13 on PATH or under pyenv is used. Where none is
# found it says so and fails. RELAY_LOCALSTACK_PORT picks a port (default:
# a free one); RELAY_LOCALSTACK_DIR holds the PID, port, data and log.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-localstack"
state=${RELAY_LOCALSTACK_DIR:-$root/.localstack}
req="$root/scripts/requirements-localstack.txt"

log() { printf 'localstack.sh: %s\n' "$*" >&2; }

python313() {
  local candidates=()
  [[ -n ${RELAY_LOCALSTACK_PYTHON:-} ]] && candidates+=("$RELAY_LOCALSTACK_PYTHON")
  command -v python3.13 >/dev/null 2>&1 && candidates+=("$(command -v python3.13)")
  for p in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
    [[ -x $p ]] && candidates+=("$p")
  done
  for p in "${candidates[@]}"; do
    if "$p" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 13))' 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  log "LocalStack 2026.3 needs Python 3.13 or newer (it imports warnings.deprecated), and none was found:"
  log "  set RELAY_LOCALSTACK_PYTHON to one, put python3.13 on PATH, or run: pyenv install 3.13"
  return 1
}

install() {
  local want stamp="$venv/.requirements.sha256"
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  local python
  python=$(python313)
  log "installing pinned LocalStack into $venv with $python (about a minute)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" >"$stamp"
}

running_pid() {
  [[ -f "$state/pid" ]] || return 1
  local pid
  pid=$(cat "$state/pid")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

print_env() {
  echo "export RELAY_LOCALSTACK_URL=http://127.0.0.1:$(cat "$state/port")"
}

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() {
  local port=$1 pid=$2
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "LocalStack exited during start-up; its log ($state/server.log) ends with:"
      tail -n 20 "$state/server.log" >&2
      return 1
    fi
    if "$venv/bin/python" - "$port" <<'PY' 2>/dev/null; then
import json, sys, urllib.request
health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_localstack/health", timeout=1))
sys.exit(0 if all(health["services"].get(s) in ("available", "running") for s in ("s3", "sqs", "cloudwatch")) else 1)
PY
      return 0
    fi
    sleep 0.2
  done
  log "LocalStack did not answer on 127.0.0.1:$port within 60 s; see $state/server.log"
  return 1
}

# Fails if anything of LocalStack's listens beyond loopback.
check_loopback() {
  local pid=$1
  command -v ss >/dev/null 2>&1 || { log "ss is not installed; cannot check the listening address"; return 0; }
  local wide
  wide=$(ss -Hltnp 2>/dev/null | grep "pid=$pid," | awk '{print $4}' | grep -v '^127\.0\.0\.1:' || true)
  if [[ -n $wide ]]; then
    log "LocalStack listens beyond loopback ($wide); refusing to run it"
    return 1
  fi
}

start() {
  install
  mkdir -p "$state"
  if running_pid >/dev/null; then
    print_env
    return 0
  fi
  local port=${RELAY_LOCALSTACK_PORT:-$(free_port)}
  rm -rf "$state/fs"
  mkdir -p "$state/fs/tmp"
  # setsid: not in the caller's process group (see moto.sh). TMPDIR: run
  # this way LocalStack keeps its state (CloudWatch's metrics database among
  # it) under the temporary directory, not FILESYSTEM_ROOT, and deletes it
  # when it stops: each instance gets its own, so none removes another's.
  GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" \
    SERVICES=s3,sqs,cloudwatch SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 LOCALSTACK_TELEMETRY_DISABLED=1 \
    PERSISTENCE=0 DNS_ADDRESS=0 SQS_ENDPOINT_STRATEGY=path FILESYSTEM_ROOT="$state/fs" \
    AWS_EC2_METADATA_DISABLED=true TMPDIR="$state/fs/tmp" \
    setsid "$venv/bin/python" -m localstack.runtime.main >"$state/server.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$state/pid"
  echo "$port" >"$state/port"
  wait_ready "$port" "$pid" || { stop; return 1; }
  check_loopback "$pid" || { stop; return 1; }
  log "LocalStack $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("localstack-core"))') ready at http://127.0.0.1:$port (pid $pid)"
  print_env
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped LocalStack (pid $pid)"
  fi
  rm -f "$state/pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  env) running_pid >/dev/null || { log "not running; use: scripts/localstack.sh start"; exit 1; }; print_env ;;
  stop) stop ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
