#!/usr/bin/env bash
# `make compose-test`: the shipped docker-compose.yml, built and run on this host, checked over HTTP
# (docker/compose_check.py), then `docker compose down -v` whatever happened.
#
#  1. Docker and Compose v2, installed from Debian packages where missing, dockerd started if needed
#     (docker/install-docker.sh); a failure there fails the test.
#  2. The base images: the configured ones (SBAUDIT_PYTHON_IMAGE, SBAUDIT_POSTGRES_IMAGE,
#     SBAUDIT_REDIS_IMAGE, defaults python:3.11-slim, postgres:16-alpine, redis:7-alpine) when present or
#     pullable; otherwise stand-ins built from Debian packages (docker/standins/build.sh).
#  3. Packages: the build uses PyPI, unless this machine has a local package index (/opt/pypi, as pip here
#     is configured with), which is served to the build over the Docker bridge so torch (~5 GB with its CUDA
#     libraries) is copied rather than downloaded. Docker's build cache keeps the torch layer between runs.
#  4. `docker compose up -d --build` under a project name of its own (sbaudit-composetest) with the API on a
#     free loopback port, so a stack of yours and the host's PostgreSQL/Redis/8000 are left alone.
#
# Environment: PYTHON (the interpreter for the checks; needs httpx), SBAUDIT_COMPOSE_TEST_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
T0=$(date +%s)
log() { printf '\ncompose-test [%ss]: %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

docker/install-docker.sh

export COMPOSE_PROJECT_NAME=sbaudit-composetest
export COMPOSE_FILE=docker-compose.yml:docker/compose-test.yml
export POSTGRES_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export REDIS_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SBAUDIT_BIND=127.0.0.1
export SBAUDIT_API_PORT=${SBAUDIT_COMPOSE_TEST_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
index_pid=

cleanup() {
  status=$?
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ]; then
    log "FAILED (status $status); the services:"
    docker compose ps -a || true
    docker compose logs --no-color --timestamps --tail=150 || true
  fi
  log "docker compose down -v"
  docker compose down -v --remove-orphans --timeout 30 || true
  [ -z "$index_pid" ] || kill "$index_pid" 2>/dev/null || true
  log "done (status $status)"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 2. Base images.
available() {  # image: present, or pulled within 2 minutes
  docker image inspect "$1" >/dev/null 2>&1 && return 0
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}
python_image=${SBAUDIT_PYTHON_IMAGE:-python:3.11-slim}
postgres_image=${SBAUDIT_POSTGRES_IMAGE:-postgres:16-alpine}
redis_image=${SBAUDIT_REDIS_IMAGE:-redis:7-alpine}
if available "$python_image" && available "$postgres_image" && available "$redis_image"; then
  export SBAUDIT_PYTHON_IMAGE=$python_image SBAUDIT_POSTGRES_IMAGE=$postgres_image SBAUDIT_REDIS_IMAGE=$redis_image
  log "base images: $python_image $postgres_image $redis_image"
else
  log "the base images cannot be pulled; building stand-ins from Debian packages"
  standins=$(docker/standins/build.sh)  # fails the test if it fails
  eval "$(sed 's/^/export /' <<<"$standins")"
  log "base images: $SBAUDIT_PYTHON_IMAGE $SBAUDIT_POSTGRES_IMAGE $SBAUDIT_REDIS_IMAGE"
fi

# 3. A local package index, when this machine has one.
if [ -d /opt/pypi/simple ] && [ -z "${SBAUDIT_PIP_INDEX_URL:-}" ]; then
  # The host's address on Docker's default bridge, where the build's containers reach it.
  gateway=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
  [ -n "$gateway" ] || gateway=$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)
  # 38517 when free: a fixed port keeps the build arguments, hence the torch layer's cache key, the same.
  port=$("$PYTHON" - "$gateway" <<'PY'
import socket, sys
with socket.socket() as s:
    try:
        s.bind((sys.argv[1], 38517))
    except OSError:
        s.bind((sys.argv[1], 0))
    print(s.getsockname()[1])
PY
)
  served=$(mktemp -d)
  for dir in /opt/pypi /opt/pypi-more; do [ -d "$dir/simple" ] && ln -s "$dir" "$served/$(basename "$dir")"; done
  python3 -m http.server --bind "$gateway" --directory "$served" "$port" >/dev/null 2>&1 &
  index_pid=$!
  for _ in $(seq 1 20); do curl -fs "http://$gateway:$port/pypi/simple/" >/dev/null && break; sleep 0.5; done
  curl -fs "http://$gateway:$port/pypi/simple/" >/dev/null || { log "the local package index did not start on $gateway:$port"; exit 1; }
  export SBAUDIT_PIP_INDEX_URL=http://$gateway:$port/pypi/simple
  extra=https://pypi.org/simple
  [ -d /opt/pypi-more/simple ] && extra="http://$gateway:$port/pypi-more/simple $extra"
  export SBAUDIT_PIP_EXTRA_INDEX_URL=$extra SBAUDIT_PIP_TRUSTED_HOST=$gateway
  log "packages from this machine's index ($SBAUDIT_PIP_INDEX_URL), then PyPI"
fi

# 4. Up.
log "docker compose up -d --build (API on 127.0.0.1:$SBAUDIT_API_PORT)"
nice -n 10 docker compose build
log "built; image sizes:"
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^(sbaudit|sbaudit-standin/[a-z]+):' | sort -u >&2 || true
timeout 600 docker compose up -d --build --wait
log "up; checking over HTTP"
"$PYTHON" docker/compose_check.py "http://127.0.0.1:$SBAUDIT_API_PORT"
log "all compose checks passed"
