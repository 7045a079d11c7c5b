#!/usr/bin/env bash
# Sets up a fresh checkout and runs the updater with a demo configuration (see scripts/demo.ts).
#   bash scripts/demo.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=scripts/setup.sh
. scripts/setup.sh
npm run --silent build
exec node dist/scripts/demo.js
