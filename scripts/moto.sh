#!/usr/bin/env bash
# The local AWS emulator (moto server) for development, tests and the demo.
#
#   scripts/moto.sh install   create .venv with the pinned tools (idempotent)
#   scripts/moto.sh start     start moto on 127.0.0.1 and print `export` lines
#   scripts/moto.sh env       print the `export` lines of the running server
#   scripts/moto.sh stop      stop the server by its recorded PID
#   scripts/moto.sh reset     wipe all emulator state
#
# Use it as: eval "$(scripts/moto.sh start)"
# RELAY_MOTO_PORT picks a port (default: a free one). RELAY_MOTO_DIR holds the
# PID, port and log (default: .moto), so several instances can coexist.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
state=${RELAY_MOTO_DIR:-$root/.moto}
python=${PYTHON:-python3}

log() { printf 'moto.sh: %s\n' "$*" >&2; }

install() {
  local req="$root/scripts/requirements-dev.txt" stamp="$venv/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [[ -x "$venv/bin/moto_server" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  log "installing pinned tools into $venv (about 30 s)"
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
  local port
  port=$(cat "$state/port")
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export RELAY_S3_PATH_STYLE=true
export PATH="$venv/bin:\$PATH"
ENV
}

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_ready() {
  local port=$1 pid=$2
  for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "moto exited during start-up; its log ($state/server.log) ends with:"
      tail -n 20 "$state/server.log" >&2
      return 1
    fi
    if "$venv/bin/python" - "$port" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
PY
      return 0
    fi
    sleep 0.2
  done
  log "moto did not answer on 127.0.0.1:$port within 30 s; see $state/server.log"
  return 1
}

start() {
  install
  mkdir -p "$state"
  if running_pid >/dev/null; then
    print_env
    return 0
  fi
  local port=${RELAY_MOTO_PORT:-$(free_port)}
  # setsid: the server must not share the caller's process group, so a Ctrl-C
  # meant for a test run does not leave it half-dead; `stop` ends it by PID.
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/server.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$state/pid"
  echo "$port" >"$state/port"
  wait_ready "$port" "$pid" || { stop; return 1; }
  log "moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)') ready at http://127.0.0.1:$port (pid $pid)"
  print_env
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped moto (pid $pid)"
  fi
  rm -f "$state/pid"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  env) running_pid >/dev/null || { log "not running; use: scripts/moto.sh start"; exit 1; }; print_env ;;
  stop) stop ;;
  reset)
    running_pid >/dev/null || { log "not running"; exit 1; }
    "$venv/bin/python" -c "import sys,urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1] + '/moto-api/reset', method='POST'))" "http://127.0.0.1:$(cat "$state/port")"
    ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
