#!/usr/bin/env bash
# The chain side in one command: anvil (from contracts/node_modules), every contract deployed,
# devnet.yaml written (TEST-ONLY keys), the node started on it. Ctrl-C stops all of it.
# Options are those of `node-daemon devnet` (--port, --anvil-port, --dir, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python || ! -x contracts/node_modules/.bin/anvil ]]; then
  bash scripts/setup.sh
fi
exec .venv/bin/python -m node devnet "$@"
