#!/usr/bin/env bash
# Set up (if needed), lint (scripts/lint.sh) and run the whole test suite, Docker and chain tests included.
# Extra arguments go to pytest (e.g. scripts/test.sh -k chain -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
say() { printf "[test] %s\n" "$*"; }
say "mkdocs build --strict (the documentation site; a broken link fails)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet
say "promtool check rules, promtool test rules (deploy/prometheus)"
promtool check rules deploy/prometheus/alerts.yml >/dev/null
promtool test rules deploy/prometheus/alerts_test.yml >/dev/null
say "scripts/lint.sh (ruff and mypy)"
bash scripts/lint.sh
exec .venv/bin/python -m pytest -q -ra "$@"
