#!/usr/bin/env bash
# Install what is needed, build everything from source, type-check, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
node_modules/.bin/bun run build.ts
node_modules/.bin/tsc --noEmit
exec node_modules/.bin/bun test --timeout 300000 "$@"
