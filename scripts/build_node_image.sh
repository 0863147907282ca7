#!/usr/bin/env bash
# Build the node's own image (node-daemon:latest, or the tag given as $1) from Dockerfile.
# Each step says what it does and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-node-daemon:latest}"
ctx=build/node-image
since() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
total=$(date +%s.%N)
rm -rf "$ctx" && mkdir -p "$ctx"
echo "[image] 1/2 pip install --target $ctx/site-packages (the node and its dependencies)"
start=$(date +%s.%N)
.venv/bin/pip install -q --no-compile --target "$ctx/site-packages" . >/dev/null 2>&1
rm -rf "$ctx"/site-packages/*.dist-info/RECORD build/lib
echo "[image] 1/2 done in $(since "$start")s ($(du -sm "$ctx/site-packages" | cut -f1) MB)"
echo "[image] 2/2 docker build -t $tag"
start=$(date +%s.%N)
docker build -q -t "$tag" -f Dockerfile "$ctx" >/dev/null 2>&1
echo "[image] 2/2 done in $(since "$start")s"
echo "[image] $(docker image ls "$tag" --format '{{.Repository}}:{{.Tag}} {{.Size}}') built in $(since "$total")s"
