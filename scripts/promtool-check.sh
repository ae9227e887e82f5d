#!/usr/bin/env bash
# Checks the Prometheus alert rules (infra/prometheus): their syntax and
# their unit tests, with promtool. promtool comes from Debian's prometheus
# package, unpacked into .tools/prometheus (nothing is installed or
# started). Where it cannot be had this says so loudly, and under CI=true
# it fails instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tools=$PWD/.tools/prometheus
promtool=$tools/usr/bin/promtool

unavailable() {
  if [[ ${CI:-} == true ]]; then
    echo "promtool-check.sh: $1, and CI must check the alert rules" >&2
    exit 1
  fi
  echo "promtool-check.sh: WARNING: $1; the alert rules are NOT checked" >&2
  exit 0
}

if [[ ! -x $promtool ]]; then
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
    || unavailable "apt-get and dpkg-deb are needed to fetch promtool"
  echo "promtool-check.sh: fetching promtool from Debian's prometheus package (about 20 MB)" >&2
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1) \
    || unavailable "apt-get download prometheus failed"
  mkdir -p "$tools"
  dpkg-deb -x "$work"/prometheus_*.deb "$tools"
fi
"$promtool" check rules infra/prometheus/relay.rules.yml
(cd infra/prometheus && "$promtool" test rules relay.rules.test.yml)
