#!/usr/bin/env bash
# Builds the fixture images the container tests and the demo use, and pushes them to the local
# registry: a busybox base made with `docker import` (no registry needed), then the fixture app
# (test/fixtures/app) as 1.0.0 (v1), 2.0.0 (v2) and failing variants of 2.0.x.
#   eval "$(bash scripts/engine.sh start)"; bash scripts/fixtures.sh
# Writes $PGU_ENGINE_DIR/fixtures.json: {"base": ref, "images": {name: {ref, digest, version}}}.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${PGU_ENGINE_DIR:-/tmp/pgu-engine}
: "${DOCKER_HOST:?run: eval \"\$(bash scripts/engine.sh start)\"}"
: "${PGU_REGISTRY:?run: eval \"\$(bash scripts/engine.sh start)\"}"
repo="$PGU_REGISTRY/processgit-fixture"
base="$PGU_REGISTRY/pgu-busybox:1"

if ! docker image inspect "$base" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/tmp" "$tmp/rootfs/data"
  cp /bin/busybox "$tmp/rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$applet"
  done
  chmod 1777 "$tmp/rootfs/tmp"
  tar -C "$tmp/rootfs" -c . | docker import - "$base" >/dev/null
  rm -rf "$tmp"
fi

# name version mode
variants="v1 1.0.0 good
v2 2.0.0 good
never-healthy 2.0.1 never-healthy
crash 2.0.2 crash
slow 2.0.3 slow
migration-fails 2.0.4 migration-fails"

json="{\"base\":\"$base\",\"images\":{"
first=1
while read -r name version mode; do
  tag="$repo:$version"
  docker build -q --build-arg "BASE=$base" --build-arg "VERSION=$version" --build-arg "MODE=$mode" \
    -t "$tag" "$root/test/fixtures/app" >/dev/null
  digest=$(docker push "$tag" | sed -nE 's/.*digest: (sha256:[0-9a-f]{64}).*/\1/p')
  [ -n "$digest" ] || { echo "fixtures: push of $tag gave no digest" >&2; exit 1; }
  [ $first -eq 1 ] || json+=","
  first=0
  json+="\"$name\":{\"ref\":\"$tag\",\"repository\":\"$repo\",\"digest\":\"$digest\",\"version\":\"$version\"}"
done <<< "$variants"
json+="}}"
echo "$json" > "$dir/fixtures.json"
echo "$json"
