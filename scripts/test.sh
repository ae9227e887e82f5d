#!/usr/bin/env bash
# Every check the relay has, from a fresh machine with only Rust and Python:
# formatting, clippy with warnings denied, unit, property and integration tests
# against a private moto server, the .deb, Terraform, and the alert rules.
# A check that cannot run here says so loudly; under CI=true it fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The run writes about 4 GB (target/, the virtualenv); a full disk shows up
# later as a linker's bus error, so say up front what there is.
echo "== disk: $(df -h --output=avail . | tail -n 1 | tr -d ' ') free here" >&2

# Private instances of both AWS implementations (moto, and LocalStack where
# moto is lenient), so a developer's own `start` is neither reused nor
# stopped by the test run.
export RELAY_MOTO_DIR="$PWD/.moto/test"
export RELAY_LOCALSTACK_DIR="$PWD/.localstack/test"
scripts/moto.sh install
scripts/localstack.sh install
# cargo-lambda (the Lambda runtime test) lives in the same virtualenv.
export PATH="$PWD/.venv/bin:$PATH"
trap 'scripts/moto.sh stop; scripts/localstack.sh stop' EXIT
env_lines=$(scripts/moto.sh start)
eval "$env_lines"
env_lines=$(scripts/localstack.sh start)
eval "$env_lines"

echo "== cargo fmt" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (moto at $AWS_ENDPOINT_URL, LocalStack at $RELAY_LOCALSTACK_URL)" >&2
cargo test --workspace --locked --no-fail-fast

echo "== edge agent .deb (packaging checked on the debug build)" >&2
RELAY_DEB_PROFILE=dev scripts/package-deb.sh

echo "== terraform" >&2
scripts/terraform-check.sh

echo "== Prometheus alert rules" >&2
scripts/promtool-check.sh
echo "== all checks passed (target/ holds $(du -sh target | cut -f1))" >&2
