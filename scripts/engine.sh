#!/usr/bin/env bash
# A private Docker engine and registry on loopback, for the container tests and the demo.
#   bash scripts/engine.sh start   # prints the environment to use (eval it)
#   bash scripts/engine.sh stop
# Network rule: nothing leaves loopback. The engine has no bridge, no iptables, no forwarding;
# containers run with host networking and bind 127.0.0.1. The registry listens on 127.0.0.1.
# Needs root (dockerd) and Debian's docker.io, docker-registry, busybox-static and docker-compose
# (1.29, for the Compose consistency test) (installed when missing and apt-get is available).
set -euo pipefail

dir=${PGU_ENGINE_DIR:-/tmp/pgu-engine}
registry_port=${PGU_REGISTRY_PORT:-25000}
sock="$dir/docker.sock"

say() { printf 'engine: %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_packages
  mkdir -p "$dir/data" "$dir/exec" "$dir/registry"
  if ! running "$dir/dockerd.pid"; then
    say "starting dockerd (data in $dir)"
    setsid dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
      -H "unix://$sock" --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
      >"$dir/dockerd.log" 2>&1 < /dev/null &
    for _ in $(seq 1 300); do
      DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1 && break
      sleep 0.1
    done
    DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1 || { say "dockerd did not start; see $dir/dockerd.log"; tail -20 "$dir/dockerd.log" >&2; exit 1; }
  fi
  if ! running "$dir/registry.pid"; then
    say "starting the registry on 127.0.0.1:$registry_port"
    cat >"$dir/registry.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
YAML
    setsid docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 < /dev/null &
    echo $! >"$dir/registry.pid"
    for _ in $(seq 1 100); do
      curl -fsS "http://127.0.0.1:$registry_port/v2/" >/dev/null 2>&1 && break
      sleep 0.1
    done
    curl -fsS "http://127.0.0.1:$registry_port/v2/" >/dev/null || { say "the registry did not start; see $dir/registry.log"; exit 1; }
  fi
  echo "export DOCKER_HOST=unix://$sock"
  echo "export PGU_REGISTRY=127.0.0.1:$registry_port"
}

stop() {
  for name in registry dockerd; do
    if running "$dir/$name.pid"; then
      pid=$(cat "$dir/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
  done
  # dockerd leaves its network namespace mounts under the exec root.
  if [ -d "$dir/exec" ]; then
    grep -o "$dir/exec[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
