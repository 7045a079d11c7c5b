# processgit-updater: the sidecar that updates a ProcessGit deployment (see README.md).
#
#   docker build -t processgit-updater .
#   docker build --secret id=npmrc,src=$HOME/.npmrc -t processgit-updater .   # private registry / proxy CA
#
# Needs BuildKit (the default builder of Docker 23 and later; DOCKER_BUILDKIT=1 on 20.10) for the
# npm cache mount and the optional npmrc secret. No `# syntax=` line on purpose: the Dockerfile
# frontend built into the engine is used, so the build works without pulling a frontend image.
# Three stages: build (all dependencies, compile TypeScript), prod-deps (runtime dependencies
# only), runtime (node, tini, the compiled code; runs as uid 10001).

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# The npmrc secret (optional) is mounted only for this command and never stored in a layer: a
# private registry with its token, or `cafile=`/`ca=` for a TLS-intercepting proxy.
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    --mount=type=secret,id=npmrc,target=/root/.npmrc \
    npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json tsconfig.dist.json ./
COPY gen gen
COPY src src
RUN npx tsc -p tsconfig.dist.json

FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    --mount=type=secret,id=npmrc,target=/root/.npmrc \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
# tini as PID 1: forwards SIGTERM to node and reaps children. npm, corepack and yarn are removed:
# the updater never runs them, and they are most of the base image's CVE noise.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules /usr/local/bin/npm /usr/local/bin/npx \
           /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg /opt/yarn-* \
 && groupadd --system --gid 10001 updater \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/processgit-updater \
      --shell /usr/sbin/nologin updater \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/processgit-updater

WORKDIR /app
COPY package.json ./
COPY --from=prod-deps /src/node_modules node_modules
COPY assets assets
COPY --from=build /src/dist/gen dist/gen
COPY --from=build /src/dist/src dist/src
RUN chmod 0755 dist/src/cli/bin.js \
 && ln -s /app/dist/src/cli/bin.js /usr/local/bin/processgit-updater

ARG VERSION=0.0.0-dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="processgit-updater" \
      org.opencontainers.image.description="Sidecar that updates a ProcessGit deployment safely: signed release, snapshot, pull by digest, migrate, swap, health-check, commit or roll back." \
      org.opencontainers.image.source="https://github.com/Algomation-AI/processgit-updater" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# State (the job journal) and snapshots live here: mount a volume on it.
ENV NODE_ENV=production \
    PROCESSGIT_UPDATER_STATE_DIR=/var/lib/processgit-updater \
    PROCESSGIT_UPDATER_SNAPSHOT_DIR=/var/lib/processgit-updater/snapshots \
    PROCESSGIT_UPDATER_LISTEN=0.0.0.0:9000
# A numeric user: the Docker socket is reached through its numeric group id, given at run time
# (`--group-add "$(stat -c %g /var/run/docker.sock)"`, or `group_add` in Compose).
USER 10001:10001
EXPOSE 9000
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/app/dist/src/healthcheck.js"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["node", "/app/dist/src/main.js"]
