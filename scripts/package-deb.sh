#!/usr/bin/env bash
# Builds the edge agent's .deb with cargo-deb (installed if missing) and
# checks what it holds with dpkg-deb: the binary, the hardened unit, the
# sysusers entry, the example settings (a conffile), the man page and shell
# completions, and the maintainer scripts.
#
#   scripts/package-deb.sh            build target/debian/relay-edge-agent_*.deb and check it
#
# RELAY_DEB_PROFILE=dev packages the debug build instead (the test script
# does, to check the packaging without a second, release, build).
#
# Install it with `sudo apt install ./target/debian/relay-edge-agent_*.deb`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
CARGO_DEB_VERSION=3.8.0

if ! command -v dpkg-deb >/dev/null; then
  if [[ ${CI:-} == true ]]; then
    echo "package-deb.sh: dpkg-deb is not installed, and CI must check the .deb" >&2
    exit 1
  fi
  echo "package-deb.sh: WARNING: dpkg-deb is not installed (not a Debian system); the .deb is NOT checked" >&2
  exit 0
fi
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "package-deb.sh: installing cargo-deb $CARGO_DEB_VERSION (about a minute)" >&2
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION" --quiet
fi

profile=${RELAY_DEB_PROFILE:-release}
echo "package-deb.sh: building edge-agent ($profile)" >&2
cargo build --profile "$profile" --locked -p edge-agent
dir=$profile
[[ $profile == dev ]] && dir=debug
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$dir/edge-agent
extra=$root/edge-agent/packaging/generated
rm -rf "$extra" && mkdir -p "$extra"
"$bin" man | gzip -9n >"$extra/edge-agent.1.gz"
"$bin" completions bash >"$extra/edge-agent.bash"
"$bin" completions zsh >"$extra/_edge-agent"
"$bin" completions fish >"$extra/edge-agent.fish"
deb=$(cargo deb -p edge-agent --profile "$profile" --no-build --locked --output "$root/target/debian/" | tail -n 1)
[[ -f $deb ]] || { echo "package-deb.sh: cargo deb made no package" >&2; exit 1; }

# What an operator installs: every file in its place, with its mode.
listing=$(dpkg-deb --contents "$deb")
for want in \
  "-rwxr-xr-x 0/0 .* ./usr/bin/edge-agent" \
  "-rw-r--r-- 0/0 .* ./lib/systemd/system/relay-edge-agent.service" \
  "-rw-r--r-- 0/0 .* ./usr/lib/sysusers.d/relay-edge-agent.conf" \
  "-rw------- 0/0 .* ./etc/relay/edge-agent.env" \
  "-rw-r--r-- 0/0 .* ./usr/share/doc/relay-edge-agent/examples/edge-agent.toml" \
  "-rw-r--r-- 0/0 .* ./usr/share/doc/relay-edge-agent/README.md" \
  "-rw-r--r-- 0/0 .* ./usr/share/man/man1/edge-agent.1.gz" \
  "-rw-r--r-- 0/0 .* ./usr/share/bash-completion/completions/edge-agent" \
  "-rw-r--r-- 0/0 .* ./usr/share/zsh/vendor-completions/_edge-agent" \
  "-rw-r--r-- 0/0 .* ./usr/share/fish/vendor_completions.d/edge-agent.fish"; do
  grep -Eq -- "$want\$" <<<"$listing" || { echo "package-deb.sh: $deb lacks $want:"$'\n'"$listing" >&2; exit 1; }
done
control=$(dpkg-deb --info "$deb")
for want in "Package: relay-edge-agent" "Depends: .*systemd" "postinst" "postrm" "conffiles"; do
  grep -Eq -- "$want" <<<"$control" || { echo "package-deb.sh: $deb control lacks $want:"$'\n'"$control" >&2; exit 1; }
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
[[ $conffiles == /etc/relay/edge-agent.env ]] \
  || { echo "package-deb.sh: conffiles are [$conffiles], not /etc/relay/edge-agent.env" >&2; exit 1; }
# The packaged binary (stripped by cargo-deb) runs and is this version.
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
dpkg-deb --extract "$deb" "$unpacked"
[[ $("$unpacked/usr/bin/edge-agent" --version) == $("$bin" --version) ]] \
  || { echo "package-deb.sh: the packaged binary is not $("$bin" --version)" >&2; exit 1; }
echo "package-deb.sh: $deb checked ($(du -h "$deb" | cut -f1))" >&2
