#!/usr/bin/env bash
# Every check the relay has, from a fresh machine with only Rust and Python:
# formatting, clippy with warnings denied, unit, property and integration tests
# against a private moto server, the .deb, Terraform, and the alert rules.
# A check that cannot run here says so loudly; under CI=true it fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# A private emulator instance, so a developer's own `scripts/moto.sh start`
# is neither reused nor stopped by the test run.
export RELAY_MOTO_DIR="$PWD/.moto/test"
scripts/moto.sh install
# cargo-lambda (the Lambda runtime test) lives in the same virtualenv.
export PATH="$PWD/.venv/bin:$PATH"
env_lines=$(scripts/moto.sh start)
eval "$env_lines"
trap 'scripts/moto.sh stop' EXIT

echo "== cargo fmt" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (emulator at $AWS_ENDPOINT_URL)" >&2
cargo test --workspace --locked

echo "== edge agent .deb (packaging checked on the debug build)" >&2
RELAY_DEB_PROFILE=dev scripts/package-deb.sh

echo "== terraform" >&2
scripts/terraform-check.sh

echo "== Prometheus alert rules" >&2
scripts/promtool-check.sh
echo "== all checks passed" >&2
