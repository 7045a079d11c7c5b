#!/usr/bin/env bash
# Builds the writer fixture images (test/fixtures/writer: an app that acknowledges a write only once
# it is durable, for measuring the data safety of an update) and pushes them to the local registry.
#   eval "$(bash scripts/engine.sh start)"; bash scripts/image.sh; bash scripts/writer-fixtures.sh
# Needs node:24-bookworm-slim in the engine (scripts/base-image.sh makes it; scripts/image.sh runs that).
# Three sets, each its own repository with the version as tag: the log store and the SQLite store
# on node:24-bookworm-slim, and the log store on an image with no shell at all (FROM scratch).
# Writes $PGU_ENGINE_DIR/writer-fixtures.json and prints the same JSON:
#   {"key": ..., "images": {name: {ref, repository, digest, version, store, mode, format, shell}}}
# Up to date (same sources, same base image, every manifest still in the registry and every tag in
# the engine): prints the recorded JSON without building. PGU_WRITER_FORCE=1 rebuilds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${PGU_ENGINE_DIR:-/tmp/pgu-engine}
: "${DOCKER_HOST:?run: eval \"\$(bash scripts/engine.sh start)\"}"
: "${PGU_REGISTRY:?run: eval \"\$(bash scripts/engine.sh start)\"}"
ctx="$root/test/fixtures/writer"
base=node:24-bookworm-slim
out="$dir/writer-fixtures.json"
say() { printf 'writer-fixtures: %s\n' "$*" >&2; }
mkdir -p "$dir"
# One build at a time (test files calling this in parallel wait, then find it up to date).
exec 9>"$dir/writer-fixtures.lock"
flock 9

base_id=$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null) ||
  { say "$base is not in the engine: run bash scripts/image.sh (or scripts/base-image.sh) first"; exit 1; }
key=$(cat "${BASH_SOURCE[0]}" "$ctx/writer.mjs" "$ctx/Dockerfile" "$ctx/shell-less.Dockerfile" |
  { sha256sum; echo "$base_id $PGU_REGISTRY"; } | sha256sum | cut -c1-16)

# set name version mode format migration_fails
variants="v1 1.0.0 good 1 0
v2 2.0.0 good 2 0
rewrite-unhealthy 2.0.1 rewrite-then-unhealthy 2 0
unhealthy 2.0.2 unhealthy 2 0
migration-fails 2.0.3 good 2 1
rewrite-on-start 2.0.4 rewrite-on-start 2 0"
# set repository store dockerfile shell
sets="log processgit-writer-log log Dockerfile yes
sqlite processgit-writer-sqlite sqlite Dockerfile yes
noshell-log processgit-writer-noshell log shell-less.Dockerfile no"

# Up to date: the recorded key matches, and every image is in the registry and in the engine.
if [ "${PGU_WRITER_FORCE:-0}" != 1 ] && [ -f "$out" ] && grep -q "\"key\":\"$key\"" "$out"; then
  fresh=1
  tags=()
  while read -r repository digest version; do
    tags+=("$PGU_REGISTRY/$repository:$version")
    curl -sf -o /dev/null -I -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$PGU_REGISTRY/v2/$repository/manifests/$digest" || { fresh=0; break; }
  done < <(grep -oE '"repository":"[^"]+","digest":"[^"]+","version":"[^"]+"' "$out" |
    sed -E 's/"repository":"[^/]+\/([^"]+)","digest":"([^"]+)","version":"([^"]+)"/\1 \2 \3/')
  if [ $fresh = 1 ] && [ ${#tags[@]} -gt 0 ] && docker image inspect "${tags[@]}" >/dev/null 2>&1; then
    cat "$out"
    exit 0
  fi
fi

start=$(date +%s)
json="{\"key\":\"$key\",\"images\":{"
first=1
while read -r set repository store dockerfile shell; do
  repo="$PGU_REGISTRY/$repository"
  while read -r name version mode format fails; do
    tag="$repo:$version"
    # The docker CLI without buildx warns on every build that it falls back to the legacy builder:
    # its stderr is shown only when the build fails.
    if ! log=$(docker build -q -f "$ctx/$dockerfile" --build-arg "BASE=$base" --build-arg "VERSION=$version" \
      --build-arg "MODE=$mode" --build-arg "STORE=$store" --build-arg "FORMAT=$format" \
      --build-arg "MIGRATION_FAILS=$fails" -t "$tag" "$ctx" 2>&1 >/dev/null); then
      printf '%s\n' "$log" >&2
      say "build of $tag failed"
      exit 1
    fi
    if [ "$shell" = no ] && docker run --rm --network none --entrypoint /bin/sh "$tag" -c true >/dev/null 2>&1; then
      say "$tag has a /bin/sh, but the set $set must have none"
      exit 1
    fi
    digest=$(docker push "$tag" | sed -nE 's/.*digest: (sha256:[0-9a-f]{64}).*/\1/p')
    [ -n "$digest" ] || { say "push of $tag gave no digest"; exit 1; }
    [ $first -eq 1 ] || json+=","
    first=0
    json+="\"$set-$name\":{\"ref\":\"$tag\",\"repository\":\"$repo\",\"digest\":\"$digest\",\"version\":\"$version\","
    json+="\"store\":\"$store\",\"mode\":\"$mode\",\"format\":$format,\"migrationFails\":$([ "$fails" = 1 ] && echo true || echo false),\"shell\":$([ "$shell" = yes ] && echo true || echo false)}"
  done <<< "$variants"
done <<< "$sets"
json+="}}"
echo "$json" > "$out.tmp" && mv "$out.tmp" "$out"
say "built and pushed $(grep -o '"ref"' <<< "$json" | wc -l) images in $(($(date +%s) - start)) s"
echo "$json"
