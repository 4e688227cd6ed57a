#!/usr/bin/env bash
# Build the .deb and .rpm packages of csync2-watch and print where they are.
#
# Installs cargo-deb and cargo-generate-rpm (cargo install --locked) when
# they are missing; that takes a few minutes once. Honours CARGO_TARGET_DIR.
# The binary is built in release mode with its debug info stripped (symbol
# names stay, so backtraces remain readable).
set -euo pipefail
cd "$(dirname "$0")/.."

need_tool() { # subcommand crate
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "package.sh: installing $2 (once; takes a few minutes)" >&2
        cargo install --locked "$2"
    fi
}
need_tool deb cargo-deb
need_tool generate-rpm cargo-generate-rpm

for f in packaging/csync2-watch.toml csync2.cfg.example systemd/csync2-watch.service \
    systemd/csync2-watch@.service packaging/README-install.md; do
    if [ ! -f "$f" ]; then
        echo "package.sh: $f is missing; it is packaged, so it must exist" >&2
        exit 1
    fi
done

export CARGO_PROFILE_RELEASE_STRIP=debuginfo
target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --release --locked
deb_out="$target_dir/debian"
rpm_out="$target_dir/generate-rpm"
mkdir -p "$deb_out" "$rpm_out"
deb=$(cargo deb --no-build --locked --output "$deb_out" | tail -n 1)
pkgid=$(cargo pkgid)
version=${pkgid##*[#@]}
rpm="$rpm_out/csync2-watch-$version-1.$(uname -m).rpm"
cargo generate-rpm --output "$rpm"

echo "deb: $(realpath "$deb")"
echo "rpm: $(realpath "$rpm")"
