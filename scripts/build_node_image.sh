#!/usr/bin/env bash
# Build the node's own image (node-daemon:latest, or the tag given as $1) from Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-node-daemon:latest}"
ctx=build/node-image
rm -rf "$ctx" && mkdir -p "$ctx"
echo "[image] pip install --target $ctx/site-packages (the node and its dependencies)"
.venv/bin/pip install -q --no-compile --target "$ctx/site-packages" . >/dev/null 2>&1
rm -rf "$ctx"/site-packages/*.dist-info/RECORD build/lib
echo "[image] docker build -t $tag"
docker build -q -t "$tag" -f Dockerfile "$ctx" >/dev/null 2>&1
docker image ls "$tag" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
