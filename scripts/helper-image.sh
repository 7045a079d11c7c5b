#!/usr/bin/env bash
# A small image with only node (the checkout's Node.js 24 from .tools/node) and the libraries it
# links, for running the snapshot helper when the updater runs outside a container (the demo, or
# `npm start` from a checkout): PROCESSGIT_UPDATER_HELPER_IMAGE=pgu-node-helper:24. In production the
# updater's own image is the helper image and this is not needed.
#   eval "$(bash scripts/engine.sh start)"; bash scripts/helper-image.sh   # prints the image name
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${DOCKER_HOST:?run: eval \"\$(bash scripts/engine.sh start)\"}"
image=${PGU_HELPER_IMAGE_NAME:-pgu-node-helper:24}
node="$root/.tools/node/bin/node"
[ -x "$node" ] || { echo "helper-image: $node is missing; run scripts/setup.sh first" >&2; exit 1; }
want=$("$node" --version)
if [ "$(docker image inspect -f '{{index .Config.Labels "io.processgit.updater.node"}}' "$image" 2>/dev/null)" = "$want" ]; then
  echo "$image"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rootfs/usr/local/bin" "$tmp/rootfs/tmp"
chmod 1777 "$tmp/rootfs/tmp"
cp "$node" "$tmp/rootfs/usr/local/bin/node"
ldd "$node" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' | while read -r lib; do
  [ -n "$lib" ] && cp -L --parents "$lib" "$tmp/rootfs"
done
tar -C "$tmp/rootfs" -c . | docker import \
  --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
  --change "LABEL io.processgit.updater.node=$want" \
  - "$image" >/dev/null
docker run --rm --network none "$image" node -e 'process.exit(0)'
echo "$image"
