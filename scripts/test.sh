#!/usr/bin/env bash
# Install what is needed, build everything from source, type-check, and run the whole test suite:
# the fast tests first (no root, FUSE or Redis: a broken unit fails in seconds), then the suites
# that mount real filesystems on real Redis. Arguments: test files to run instead of the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
node_modules/.bin/bun run build.ts
node_modules/.bin/tsc --noEmit
if [ $# -gt 0 ]; then exec node_modules/.bin/bun test --timeout 300000 "$@"; fi
node_modules/.bin/bun test --timeout 60000 test/unit
# The suites' output is long and CI keeps its tail: each failure's own lines are printed again last.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Two files at a time: a suite mostly waits on the daemons, redis-servers and mounts it starts (one
# at a time, CPUs were busy about half the run). test/durations.json (written by a run with
# --update-timings) has the longest files start first. --no-isolate: each worker loads the native
# libraries once, as one process running every file did (a worker loading them again for each file
# crashed in Bun 1.4.5 after some hundred files).
node_modules/.bin/bun test --parallel=2 --no-isolate --timings=test/durations.json --timeout 300000 test/*.test.ts 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "=== the failures again, each with the 60 lines before it ==="
  awk '/ tests? failed:$/ { exit } { seen[NR % 60] = $0 } /^\(fail\)/ { print "---"; for (i = (NR > 59 ? NR - 59 : 1); i <= NR; i++) print seen[i % 60] }' "$log"
fi
exit "$status"
