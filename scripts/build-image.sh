#!/usr/bin/env bash
# Build the mcfs image (every role) and try it: `mcfs --help`, then a FUSE mount inside a container.
# Where no image registry can be reached, a Debian base image is first built from Debian's packages
# (mmdebstrap) and imported.
#   scripts/build-image.sh [TAG]          (default multicloud-csi-driver:0.1.0)
# Env: ENGINE=docker|podman, BUILD_IMAGE / RUNTIME_IMAGE (base images), MIRROR (Debian mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-multicloud-csi-driver:0.1.0}"

ENGINE="${ENGINE:-}"
if [ -z "$ENGINE" ]; then
  # docker only when its daemon answers; podman needs none.
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then ENGINE=docker
  elif command -v podman >/dev/null 2>&1; then ENGINE=podman
  elif command -v docker >/dev/null 2>&1; then
    echo "build-image: docker is installed but its daemon does not answer; start it, or install podman" >&2
    exit 1
  else
    echo "build-image: neither docker nor podman is installed (apt-get install podman, or docker.io)" >&2
    exit 1
  fi
fi
# podman: build without a runtime container and run without cgroups, so it works in containers and
# on hosts with hybrid cgroups too.
build_flags=()
run_flags=()
if [ "$ENGINE" = podman ]; then
  build_flags=(--isolation=chroot)
  run_flags=(--cgroups=disabled --ulimit=host)
fi
BUILD_IMAGE="${BUILD_IMAGE:-debian:bookworm}"
RUNTIME_IMAGE="${RUNTIME_IMAGE:-debian:bookworm-slim}"

have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# The host's Debian mirror, so the image reaches what the host reaches.
host_mirror() {
  local uri
  uri="$( { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources; sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?//p' /etc/apt/sources.list; } 2>/dev/null \
    | grep -oE '^https?://[^ ]+' | grep -v security | head -n1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! have_image "$BUILD_IMAGE" && ! timeout 60 "$ENGINE" pull -q "$BUILD_IMAGE" >/dev/null 2>&1; then
  LOCAL_BASE="localhost/mcfs-debian:bookworm"
  echo "build-image: cannot pull $BUILD_IMAGE; building $LOCAL_BASE from Debian packages"
  if ! have_image "$LOCAL_BASE"; then
    command -v mmdebstrap >/dev/null 2>&1 || { echo "build-image: mmdebstrap is needed (apt-get install mmdebstrap)" >&2; exit 1; }
    MIRROR="${MIRROR:-$(host_mirror)}"
    # Slim like Debian's own images: no docs, man pages or locales; no package caches.
    # shellcheck disable=SC2016 # $1 is the hook's argument
    mmdebstrap --variant=minbase --include=ca-certificates \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook='chroot "$1" apt-get clean' --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
      bookworm - "$MIRROR" | "$ENGINE" import - "$LOCAL_BASE"
  fi
  BUILD_IMAGE="$LOCAL_BASE"
  RUNTIME_IMAGE="$LOCAL_BASE"
fi

# The host's extra CA certificates (a TLS-inspecting proxy) reach npm inside the build.
find docker/ca-certificates -name '*.crt' -delete
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt docker/ca-certificates/
fi

echo "build-image: building $TAG with $ENGINE (build: $BUILD_IMAGE, runtime: $RUNTIME_IMAGE)"
"$ENGINE" build "${build_flags[@]}" -t "$TAG" --build-arg "BUILD_IMAGE=$BUILD_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" .

# What the smoke test runs inside the image: --help, then a mount with a file written and read back.
# shellcheck disable=SC2016 # runs in the image's shell
SMOKE='
  set -e
  mcfs --help | head -n 3
  mkdir -p /mnt/mcfs
  mcfs daemon -f /mnt/mcfs -r /tmp/root 2>/tmp/log &
  pid=$!
  for _ in $(seq 100); do mountpoint -q /mnt/mcfs && break; sleep 0.1; done
  mountpoint -q /mnt/mcfs || { cat /tmp/log; exit 1; }
  echo "hello from mcfs" > /mnt/mcfs/hello.txt
  cat /mnt/mcfs/hello.txt
  ls -l /mnt/mcfs
  kill "$pid"; wait "$pid"'

echo "build-image: mcfs --help and a FUSE mount in $TAG"
if ! err="$("$ENGINE" run "${run_flags[@]}" --rm "$TAG" --version 2>&1 >/dev/null)"; then
  # Some sandboxes let podman build but not start containers (no cgroups, no setrlimit): the image's
  # own files are run with chroot instead, which still proves its binary, libraries and FUSE work.
  if [ "$ENGINE" != podman ] || [ "$(id -u)" -ne 0 ]; then
    echo "build-image: cannot run $TAG: $err" >&2
    exit 1
  fi
  echo "build-image: $ENGINE cannot start containers here ($err); running the image's files with chroot"
  root="$(podman image mount "$TAG")"
  trap 'podman image unmount "$TAG" >/dev/null' EXIT
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --pid --fork sh -c '
    r="$1"; script="$2"
    mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev"
    mount -t tmpfs tmp "$r/tmp" && mount -t tmpfs mnt "$r/mnt"
    chroot "$r" /bin/sh -c "$script"' sh "$root" "$SMOKE"
else
  "$ENGINE" run "${run_flags[@]}" --rm --privileged --device /dev/fuse --entrypoint /bin/sh "$TAG" -c "$SMOKE"
fi
echo "build-image: $TAG is ready"
