#!/usr/bin/env bash
# The cluster benchmark (issue 4's table): csync2-watch against the csync2
# floor and a `csync2 -x` loop, on a 3-node testbed holding a 170,000-file
# tree. Root only; about 15 minutes on 2 cores (`--quick`: a 17,000-file
# tree, about 2 minutes). Knobs: see the top of benches/cluster.rs.
#
#   scripts/bench-cluster.sh [--quick] 2>&1 | tee bench-cluster.txt
#
# `cargo bench` builds target/release/csync2-watch first and the benchmark
# runs that binary (CARGO_BIN_EXE_csync2-watch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--quick" ]]; then
    shift
    export CSYNC2_WATCH_BENCH_FILES="${CSYNC2_WATCH_BENCH_FILES:-17000}"
    export CSYNC2_WATCH_BENCH_DIRS="${CSYNC2_WATCH_BENCH_DIRS:-1711}"
fi
exec cargo bench --bench cluster -- "$@"
