#!/usr/bin/env bash
# The guard rails: ruff (pyflakes, sorted imports, bugbear, pyupgrade, blind except; config in
# pyproject.toml) over the code, the tests and the scripts, then mypy over the node package.
# Run by scripts/test.sh before pytest; fast (a few seconds), so run it before every commit too.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf "[lint] %s\n" "$*"; }
say "ruff check node tests scripts"
.venv/bin/ruff check node tests scripts
say "mypy node"
.venv/bin/mypy node
