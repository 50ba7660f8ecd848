#!/usr/bin/env bash
# Builds local stand-ins for the three base images from Debian packages, for hosts that cannot pull them
# (no Docker Hub, no mirror): a debootstrap'd Debian root imported as sbaudit-standin/debian:<suite>, then
# sbaudit-standin/python:3.11, sbaudit-standin/postgres:15 and sbaudit-standin/redis:7. Prints the three
# variables that point the build and docker-compose.yml at them. The Debian root is made once and reused.
#   DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
debian=sbaudit-standin/debian:$suite

have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$debian"; then
  if ! command -v debootstrap >/dev/null; then
    apt-get install -y --no-install-recommends debootstrap || apt-get update
    command -v debootstrap >/dev/null || apt-get install -y --no-install-recommends debootstrap
  fi
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  echo "standins: debootstrap $suite" >&2
  nice -n 10 debootstrap --variant=minbase "$suite" "$root" "$mirror" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import - "$debian" >&2
fi

build() {  # tag dir: always built, so an edited Dockerfile takes effect (unchanged: from the cache, seconds)
  echo "standins: building $1" >&2
  nice -n 10 docker build -q --build-arg "DEBIAN_IMAGE=$debian" -t "$1" "$2" >&2
}
# The python stand-in trusts the host's extra CA certificates (a TLS-inspecting proxy's) so that pip inside
# the build reaches the package index the way the host does.
ctx=$(mktemp -d)
cp -r "$here/python/." "$ctx/"
mkdir -p "$ctx/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
build sbaudit-standin/python:3.11 "$ctx"
rm -rf "$ctx"
build sbaudit-standin/postgres:15 "$here/postgres"
build sbaudit-standin/redis:7 "$here/redis"

echo "SBAUDIT_PYTHON_IMAGE=sbaudit-standin/python:3.11"
echo "SBAUDIT_POSTGRES_IMAGE=sbaudit-standin/postgres:15"
echo "SBAUDIT_REDIS_IMAGE=sbaudit-standin/redis:7"
