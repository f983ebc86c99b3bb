# Source this file: it picks a container engine for `make images` and the container tests, and exports
# CONTAINER_ENGINE, PYTHON_IMAGE, DEBIAN_IMAGE, BUILD_FLAGS and DOCKER_HOST.
#   - a Docker engine that answers: used as it is, with the official python and debian images;
#   - otherwise podman (installed from Debian's packages when missing, as root), with base images built
#     from Debian's own packages (no image registry needed) and its Docker-compatible socket, which
#     docker-py and kfp.local's DockerRunner use.
# State of the podman setup lives in $CONTAINERS_STATE (default /var/tmp/mnist-gan-containers).

_engine_podman() {
  local state=${CONTAINERS_STATE:-/var/tmp/mnist-gan-containers}
  mkdir -p "$state" || return 1
  if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
    echo "engine: installing podman from Debian's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc \
      mmdebstrap fuse-overlayfs slirp4netns uidmap containernetworking-plugins >/dev/null || return 1
  fi
  # runc and cgroupfs work where crun and systemd do not (cgroups v1 hybrid, no systemd); nofile and
  # nproc stay under the hard limits an unprivileged sandbox allows.
  cat > "$state/containers.conf" <<CONF
[containers]
netns = "host"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
CONF
  cat > "$state/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$state/run"
graphroot = "$state/storage"
CONF
  export CONTAINERS_CONF="$state/containers.conf" CONTAINERS_STORAGE_CONF="$state/storage.conf"
  export CONTAINER_ENGINE=podman
  export DEBIAN_IMAGE=localhost/debian-base:bookworm PYTHON_IMAGE=localhost/python-base:3.11-bookworm
  # Package registries may sit behind a proxy only the host's CA bundle trusts: mount it into builds.
  export BUILD_FLAGS="-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro"
  if ! podman image exists "$DEBIAN_IMAGE"; then
    echo "engine: building $DEBIAN_IMAGE from Debian's packages" >&2
    local sources=/etc/apt/sources.list.d/debian.sources
    [ -f "$sources" ] || sources=/etc/apt/sources.list
    mmdebstrap --quiet --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
      bookworm "$state/debian-base.tar" - < "$sources" >/dev/null || return 1
    podman import --change 'CMD ["/bin/bash"]' "$state/debian-base.tar" "$DEBIAN_IMAGE" >/dev/null || return 1
    rm -f "$state/debian-base.tar"
  fi
  if ! podman image exists "$PYTHON_IMAGE"; then
    echo "engine: building $PYTHON_IMAGE (what the official python:3.11-slim offers)" >&2
    local context; context=$(mktemp -d)
    cp "$(dirname "${BASH_SOURCE[0]}")/python-base.Dockerfile" "$context/Dockerfile"
    podman build -q $BUILD_FLAGS --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" -t "$PYTHON_IMAGE" "$context" \
      >/dev/null || return 1
    rm -rf "$context"
  fi
  local socket="$state/podman.sock"
  if ! curl -sf --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; then
    rm -f "$socket"
    # from /: a service left running in a checkout that is later deleted cannot start containers
    (cd / && exec podman system service --time=0 "unix://$socket") >"$state/service.log" 2>&1 &
    for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
  fi
  export DOCKER_HOST="unix://$socket"
}

if [ "${CONTAINER_ENGINE:-}" != podman ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  export CONTAINER_ENGINE=docker BUILD_FLAGS=""
  export PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.7-slim-bookworm} DEBIAN_IMAGE=${DEBIAN_IMAGE:-debian:bookworm-slim}
else
  _engine_podman || echo "engine: no container engine: install Docker, or run this as root on Debian" >&2
fi
