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
exec node_modules/.bin/bun test --timeout 300000 test/*.test.ts
