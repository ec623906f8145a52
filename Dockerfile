# One image for every mcfs role: daemon, csi-node, csi-controller, status.
# Base images are build args, so they can come from your own registry; scripts/build-image.sh builds
# Debian ones locally where no registry can be reached.
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev pkg-config libfuse3-dev npm ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Extra CA certificates for a TLS-inspecting proxy between the build and the npm registry
# (scripts/build-image.sh copies the host's from /usr/local/share/ca-certificates).
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV NODE_OPTIONS=--use-openssl-ca
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY . .
RUN node_modules/.bin/bun run build.ts && ./dist/mcfs --version

FROM ${RUNTIME_IMAGE}
# The binary needs glibc only (libfuse is linked in). redis-server is the private Redis of
# `mcfs daemon` without --redis_url; setpriv (util-linux, in every Debian image) ties it to mcfs.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && command -v setpriv
COPY --from=build /src/dist/mcfs /usr/local/bin/mcfs
ENTRYPOINT ["/usr/local/bin/mcfs"]
CMD ["--help"]
