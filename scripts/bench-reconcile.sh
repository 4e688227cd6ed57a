#!/usr/bin/env bash
# The reconcile benchmark (issue 11's table): csync2-watch's reconcile
# (walk + stat cache) against `csync2 -cr /` and `find` on a csync2 testbed
# holding a 170,000-file tree, nothing changed and 100 changed files, warm
# and cold page cache, the daemon's memory and the cache on disk, and a
# FUSE tree written behind the daemon's back. Root only; it drops the
# machine's page cache for the cold runs. About 6 minutes on 2 cores, the
# first time 30 s more to build the tree (`--quick`: a 17,000-file tree and
# fewer repetitions, about 2 minutes).
# Knobs: see the top of benches/reconcile.rs.
#
#   scripts/bench-reconcile.sh [--quick] 2>&1 | tee bench-reconcile.txt
#
# `cargo bench` builds target/release/csync2-watch first and the benchmark
# runs that binary (CARGO_BIN_EXE_csync2-watch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--quick" ]]; then
    shift
    export CSYNC2_WATCH_BENCH_FILES="${CSYNC2_WATCH_BENCH_FILES:-17000}"
    export CSYNC2_WATCH_BENCH_DIRS="${CSYNC2_WATCH_BENCH_DIRS:-1711}"
    export CSYNC2_WATCH_BENCH_REPS="${CSYNC2_WATCH_BENCH_REPS:-3}"
    export CSYNC2_WATCH_BENCH_CHANGE_REPS="${CSYNC2_WATCH_BENCH_CHANGE_REPS:-3}"
fi
cargo bench --bench reconcile --no-run
exec cargo bench --bench reconcile -- "$@"
