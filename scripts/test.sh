#!/usr/bin/env bash
# The test command: lint, then every test (unit, property, inotify and
# real-csync2 cluster tests). Needs root (namespaces, mounts, csync2 -ii).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets
