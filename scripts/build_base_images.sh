#!/usr/bin/env bash
# Build the local base images every container we ship (and the node's own image) starts FROM.
# Nothing can be pulled here, so each base is made from Debian packages and cached: an image
# that already exists is left alone (pass --force to rebuild).
set -euo pipefail
force=0; [ "${1:-}" = "--force" ] && force=1

have() { docker image inspect "$1" >/dev/null 2>&1; }

# node-base/python:bookworm - Debian bookworm minbase with python3 (3.11), made by debootstrap.
if [ $force = 1 ] || ! have node-base/python:bookworm; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
  dir=$(mktemp -d /tmp/rootfs.XXXXXX)
  echo "building node-base/python:bookworm (debootstrap, ~45 s)"
  debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$dir" >/tmp/debootstrap.log 2>&1 \
    || { tail -20 /tmp/debootstrap.log; exit 1; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  tar -C "$dir" -c . | docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - node-base/python:bookworm
  rm -rf "$dir"
fi

# node-base/busybox:static - FROM scratch with Debian's busybox-static, for tiny shell workloads.
if [ $force = 1 ] || ! have node-base/busybox:static; then
  command -v busybox >/dev/null && busybox --help 2>&1 | grep -q static \
    || { dpkg -s busybox-static >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq busybox-static; }; }
  ctx=$(mktemp -d /tmp/bbctx.XXXXXX)
  cp "$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -1)" "$ctx/busybox"
  cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
DOCKERFILE
  docker build -q -t node-base/busybox:static "$ctx" >/dev/null
  rm -rf "$ctx"
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^node-base/'
