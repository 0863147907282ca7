#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, Docker and chain tests included.
# Extra arguments go to pytest (e.g. scripts/test.sh -k chain -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -ra "$@"
