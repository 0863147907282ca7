#!/usr/bin/env bash
# Run the SIGKILL crash loop for longer than CI does: scripts/crash_loop.sh [cycles] [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
cycles="${1:-100}"
shift || true
CRASH_CYCLES="$cycles" exec .venv/bin/python -m pytest -q -m crash_loop tests/daemon/test_crash_loop.py "$@"
