#!/usr/bin/env bash
# Builds the updater's image from the repository's Dockerfile, unchanged, on the engine at
# DOCKER_HOST, and prints the image reference on stdout.
#   bash scripts/image.sh [TAG]          # default processgit-updater:test
# No base image can be pulled on this machine: when node:24-bookworm-slim is not in the engine,
# scripts/base-image.sh makes a faithful local stand-in under that name first (docs/base-image.md).
# BuildKit is needed (cache and secret mounts): `docker buildx` when installed, else the Debian
# 20.10 docker CLI with DOCKER_BUILDKIT=1. --network host lets RUN steps reach the npm registry
# and Debian's mirror from an engine that has no bridge network; a normal machine needs neither.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tag=${1:-processgit-updater:test}
say() { printf 'image: %s\n' "$*" >&2; }

bash scripts/base-image.sh >&2

if docker buildx version >/dev/null 2>&1; then
  build=(docker buildx build --load)
elif [ -x /usr/bin/docker ] && DOCKER_BUILDKIT=1 /usr/bin/docker build --help 2>/dev/null | grep -q -- --secret; then
  build=(env DOCKER_BUILDKIT=1 /usr/bin/docker build)
else
  say "no BuildKit client: install docker-buildx (or Debian's docker.io, whose 20.10 CLI has BuildKit built in)"
  exit 1
fi

args=(--network host -t "$tag"
  --build-arg "VERSION=$(node -p 'require("./package.json").version')"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
# A private registry or a proxy's CA for npm: PGU_NPMRC=/path/to/.npmrc, passed as the build
# secret `npmrc` (never stored in a layer). Without it, when this host trusts extra CAs (a
# TLS-intercepting proxy: NODE_EXTRA_CA_CERTS or npm's cafile), an npmrc carrying the ones Node
# does not already trust as `ca[]` entries is generated, as an operator behind such a proxy would
# write it.
npmrc=${PGU_NPMRC:-}
if [ -z "$npmrc" ]; then
  cafile=${NODE_EXTRA_CA_CERTS:-$(npm config get cafile 2>/dev/null || true)}
  if [ -n "$cafile" ] && [ "$cafile" != null ] && [ -f "$cafile" ]; then
    npmrc="$root/.tools/build.npmrc"
    # shellcheck disable=SC2016 # JavaScript, not shell
    CAFILE="$cafile" node -e '
      // Only the CAs node does not already trust (a proxy CA): `ca` replaces node'"'"'s own list
      // for npm, and npm hands its settings to install scripts in the environment, where a whole
      // system bundle does not fit (E2BIG).
      const body = (c) => c.replace(/-----[^-]+-----|\s/g, "");
      const known = new Set(require("node:tls").rootCertificates.map(body));
      const pem = require("node:fs").readFileSync(process.env.CAFILE, "utf8");
      const certs = (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [])
        .filter((c) => !known.has(body(c)));
      process.stdout.write(certs.map((c) => `ca[]="${c.replace(/\r?\n/g, "\\n")}"\n`).join(""));
    ' >"$npmrc"
    say "passing the CAs of $cafile to npm in the build (npmrc secret)"
  fi
fi
[ -n "$npmrc" ] && args+=(--secret "id=npmrc,src=$npmrc")

say "building $tag with ${build[*]}"
start=$(date +%s)
if ! "${build[@]}" "${args[@]}" . >"$root/.tools/image-build.log" 2>&1; then
  tail -40 "$root/.tools/image-build.log" >&2
  say "build failed; whole log in .tools/image-build.log"
  exit 1
fi
size=$(docker image inspect -f '{{.Size}}' "$tag")
say "built $tag in $(($(date +%s) - start)) s: $((size / 1024 / 1024)) MiB"
echo "$tag"
