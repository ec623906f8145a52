#!/usr/bin/env bash
# Build mcfs and run it on one node with its own private Redis.
#   scripts/run.sh [mount point] [root path] [more mcfs daemon flags...]
# Defaults: mount at /mnt/mcfs, bytes kept under /var/lib/mcfs/root. Stop with Ctrl-C (unmounts).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
node_modules/.bin/bun run build.ts
mnt=${1:-/mnt/mcfs}
root=${2:-/var/lib/mcfs/root}
shift $(( $# > 2 ? 2 : $# ))
echo "mcfs: mounting at $mnt (bytes under $root); Ctrl-C stops and unmounts"
exec dist/mcfs daemon -f "$mnt" -r "$root" "$@"
