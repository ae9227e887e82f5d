#!/usr/bin/env bash
# Fuzz the relay's parsers with cargo-fuzz (libFuzzer): the preamble rule,
# the record reader, the whole pipeline and the key scheme.
#
#   scripts/fuzz.sh                 every target for 20 s (a smoke run)
#   scripts/fuzz.sh 600 reader      one target for 10 minutes
#
# Needs the nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz,
# which it installs if missing. The first build takes about 10 minutes (the
# processor crate brings the AWS SDK). Corpora are kept under
# cloud-processor/fuzz/corpus/<target>, crashes under .../artifacts/<target>;
# a crash fails the run and names the input to reproduce it with:
#   cd cloud-processor/fuzz && cargo +nightly fuzz run -O <target> <file>
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../cloud-processor/fuzz"

secs=${1:-20}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(preamble reader pipeline differential stream key_scheme)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz 0.13.2" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t: ${secs}s" >&2
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" >"$log" 2>&1; then
    grep -E '^Done' "$log" >&2 || true
  else
    status=1
    grep -E 'panicked at|Test unit written|SUMMARY' -A3 "$log" >&2 || tail -n 30 "$log" >&2
  fi
  rm -f "$log"
done
exit "$status"
