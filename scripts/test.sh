#!/usr/bin/env bash
# Sets up a fresh checkout and runs every check and test: the one command CI runs.
#   bash scripts/test.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/setup.sh
. scripts/setup.sh
export GRPCURL="$root/.tools/bin/grpcurl"
export COSIGN="$root/.tools/bin/cosign"

echo "== lint (biome, buf lint)"
npm run --silent lint
echo "== contract: no breaking change against main (buf breaking)"
if git rev-parse --verify --quiet main >/dev/null; then
  npm run --silent breaking
else
  echo "no local main branch to compare with; skipped"
fi
echo "== typecheck"
npm run --silent typecheck
echo "== build"
npm run --silent build
echo "== a private Docker engine and registry on loopback (scripts/engine.sh)"
# Started here and stopped on exit, unless DOCKER_HOST already points at an engine to use.
if [ -z "${DOCKER_HOST:-}" ]; then
  trap 'bash scripts/engine.sh stop' EXIT
  eval "$(bash scripts/engine.sh start)"
fi
echo "== the updater's image from the unchanged Dockerfile (scripts/image.sh; base image stand-in when missing)"
bash scripts/image.sh processgit-updater:test
echo "== tests (vitest)"
npm test
