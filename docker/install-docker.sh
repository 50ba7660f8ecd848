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
fail() { log "$*"; exit 1; }
apt_install() {  # packages: from the current lists, else after an update; the status says whether it worked
  apt-get install -y --no-install-recommends "$@" && return 0
  apt-get update && apt-get install -y --no-install-recommends "$@"
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  command -v apt-get >/dev/null || fail "no docker and no apt-get: install Docker Engine yourself"
  log "installing docker.io"
  apt_install docker.io || fail "could not install docker.io"
  command -v dockerd >/dev/null && command -v docker >/dev/null || fail "docker.io installed no docker/dockerd"
fi

compose_v2() { docker compose version --short 2>/dev/null | grep -Eq '^v?2\.'; }
if ! compose_v2; then
  command -v apt-get >/dev/null || fail "no Compose v2 plugin and no apt-get"
  log "installing the Compose v2 plugin from Debian trixie's docker-compose package"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  chmod -R a+rwx "$tmp"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$tmp/sources.list"
  apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "Dir::State::status=/dev/null")
  apt-get "${apt_opts[@]}" update || fail "could not read Debian trixie's package lists"
  (cd "$tmp" && apt-get "${apt_opts[@]}" download 'docker-compose/trixie') || fail "could not download docker-compose"
  dpkg-deb -x "$tmp"/docker-compose_2*.deb "$tmp/x" || fail "could not unpack docker-compose"
  install -D -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  compose_v2 || fail "the Compose plugin does not run"
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/sbaudit-dockerd.log)"
  # A pid file whose process is gone (a dockerd that crashed or is still shutting down) stops a new one.
  for _ in $(seq 1 30); do
    pid=$(cat /var/run/docker.pid 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null && fail "a dockerd ($pid) runs but does not answer"
  rm -f /var/run/docker.pid
  # Low priority: image builds share the machine with whatever else runs on it.
  nohup nice -n 10 dockerd >/var/log/sbaudit-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 50 /var/log/sbaudit-dockerd.log >&2; fail "dockerd did not start (or answer within 60 s)"; }
fi
log "$(docker version --format 'engine {{.Server.Version}}') compose $(docker compose version --short)"
