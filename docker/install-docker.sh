#!/usr/bin/env bash
# Makes `docker` and `docker compose` (v2) usable on a Debian host, installing what is missing from Debian
# packages, and starts dockerd when no daemon answers. Used by `make compose-test`; exits non-zero (never
# skips) when it cannot.
#   - docker.io (engine + CLI) from the host's own suite;
#   - the Compose v2 plugin from trixie's docker-compose 2.x package (bookworm's docker-compose is 1.29, which
#     rejects docker-compose.yml's top-level `name:`), fetched into a scratch apt state so the host's sources,
#     pins and package database stay as they were; only the plugin binary is installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-docker: %s\n' "$*" >&2; }

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  command -v apt-get >/dev/null || { log "no docker and no apt-get: install Docker Engine yourself"; exit 1; }
  log "installing docker.io"
  apt-get install -y --no-install-recommends docker.io \
    || { apt-get update && apt-get install -y --no-install-recommends docker.io; }
fi

compose_v2() { docker compose version --short 2>/dev/null | grep -Eq '^v?2\.'; }
if ! compose_v2; then
  command -v apt-get >/dev/null || { log "no Compose v2 plugin and no apt-get"; exit 1; }
  log "installing the Compose v2 plugin from Debian trixie's docker-compose package"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  chmod -R a+rwx "$tmp"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$tmp/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "Dir::State::status=/dev/null")
  apt-get "${apt_opts[@]}" update
  (cd "$tmp" && apt-get "${apt_opts[@]}" download 'docker-compose/trixie')
  dpkg-deb -x "$tmp"/docker-compose_2*.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  compose_v2 || { log "the Compose plugin does not run"; exit 1; }
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/sbaudit-dockerd.log)"
  # Low priority: image builds share the machine with whatever else runs on it.
  nohup nice -n 10 dockerd >/var/log/sbaudit-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer within 60 s"; tail -n 50 /var/log/sbaudit-dockerd.log >&2; exit 1; }
fi
log "$(docker version --format 'engine {{.Server.Version}}') compose $(docker compose version --short)"
