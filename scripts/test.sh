#!/usr/bin/env bash
# The test command: lint, build the .deb and .rpm, then every test (unit,
# property, inotify and real-csync2 cluster tests, the packages' contents
# and lint, and the live-system package test on a minimal Debian under
# systemd-nspawn). Needs root (namespaces, mounts, csync2 -ii, nspawn).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The API docs build without a warning (broken or private links, stray
# HTML).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The package tests check what this builds (a release build, a minute or
# two on 2 cores).
./scripts/package.sh
cargo test --workspace --all-targets
