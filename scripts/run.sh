#!/usr/bin/env bash
# Set up (if needed) and run the node on config.yaml (or the config given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m node run --config "${1:-config.yaml}"
