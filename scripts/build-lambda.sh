#!/usr/bin/env bash
# Builds the cloud processor as a Lambda zip for provided.al2023: a release
# binary named `bootstrap`, built against glibc 2.28 with cargo-zigbuild.
#
#   scripts/build-lambda.sh [x86_64|arm64]     (default x86_64)
#
# Writes target/lambda/cloud-processor-<arch>.zip, the file infra/'s
# `lambda_zip_path` points at. arm64 needs the aarch64 Rust standard library
# (`rustup target add aarch64-unknown-linux-gnu`), which these machines lack.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
arch=${1:-x86_64}
case $arch in
  x86_64) triple=x86_64-unknown-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu ;;
  *) echo "build-lambda.sh: architecture must be x86_64 or arm64, not $arch" >&2; exit 2 ;;
esac
if ! rustc --print target-libdir --target "$triple" >/dev/null 2>&1 || [[ ! -d $(rustc --print target-libdir --target "$triple") ]]; then
  echo "build-lambda.sh: the Rust standard library for $triple is not installed (rustup target add $triple)" >&2
  exit 1
fi
scripts/moto.sh install
req=scripts/requirements-build.txt stamp=.venv/.build-requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
cargo zigbuild --locked --release -p cloud-processor --bin cloud-processor --target "$triple.2.28"
out=target/lambda
mkdir -p "$out/$arch"
cp "target/$triple/release/cloud-processor" "$out/$arch/bootstrap"
zip_path="$out/cloud-processor-$arch.zip"
rm -f "$zip_path"
.venv/bin/python - "$out/$arch/bootstrap" "$zip_path" <<'PY'
import sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
    info = zipfile.ZipInfo("bootstrap")
    info.external_attr = 0o755 << 16  # executable, as Lambda requires
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, open(src, "rb").read())
PY
echo "built $zip_path ($(du -h "$zip_path" | cut -f1))" >&2
