#!/usr/bin/env bash
# Set up everything the node and its tests need on a fresh Debian machine, idempotently:
# the Docker engine (installed and started if absent), a Python venv with the node and its
# test dependencies, Debian's chromium (the status page's browser tests) and docker-compose
# (pytest-docker), and the locally built base images. Safe to run again: it skips what is done.
# Each step says what it does and how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[setup] %s\n' "$*"; }
since() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }
SETUP_START=$(date +%s.%N)
step() { STEP_NAME="$1"; STEP_START=$(date +%s.%N); say "$1 ..."; }
done_step() { say "$STEP_NAME: ${1:-done} in $(since "$STEP_START")s"; }
# Playwright drives Debian's chromium: never let it download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

apt_install() {
  say "apt-get install $*"
  if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -qq; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. System packages: the Docker engine, compose (pytest-docker), chromium (browser tests)
step "1/5 system packages"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
command -v promtool >/dev/null || missing+=(prometheus)   # deploy/prometheus tests: promtool, a real Prometheus
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd"
  # In its own session: killing the process group that ran this script must not take dockerd along.
  setsid dockerd >/tmp/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 /tmp/dockerd.log; echo "dockerd did not start" >&2; exit 1; }
fi
done_step "$([ ${#missing[@]} -eq 0 ] && echo "all present" || echo "installed ${missing[*]}")"

# 2. Python venv (re-installed when pyproject.toml changes)
step "2/5 python venv"
[ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "pip install -e .[test,docs]"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e '.[test,docs]'
  rm -f .venv/.installed-*; touch "$stamp"
  done_step "installed"
else
  done_step "up to date"
fi

# 3. The local chain toolkit: anvil and solc-js from npm (contracts/node_modules), and the
#    contracts recompiled into node/chain/abi when their sources changed.
step "3/5 chain toolkit (anvil, solc, contracts)"
command -v npm >/dev/null || apt_install nodejs npm
if [ ! -x contracts/node_modules/.bin/anvil ] || [ ! -d contracts/node_modules/solc ]; then
  say "npm install (anvil, solc) in contracts/"
  (cd contracts && npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1)
fi
sources=$(sha256sum contracts/src/*.sol contracts/compile.js | sha256sum | cut -c1-64)
if [ "$sources" != "$(cat node/chain/abi/SOURCES_SHA256 2>/dev/null)" ]; then
  say "compiling contracts"
  node contracts/compile.js && echo "$sources" > node/chain/abi/SOURCES_SHA256
fi
done_step

# 3b. The CRE workflow toolchain (node/cre/wasm): @chainlink/cre-sdk, its Javy plugin and bun from npm
#     into build/cre-toolchain (git-ignored; BUSL-1.1: installed here, never committed). Idempotent.
step "3b CRE workflow toolchain (npm, build/cre-toolchain)"
PYTHONPATH=$PWD .venv/bin/python -m node cre setup >/dev/null
done_step

# 4. Base images (built only when missing)
step "4/5 base images"
bash scripts/build_base_images.sh >/dev/null
done_step

step "5/5 check"
say "ready: $(docker --version | cut -d, -f1), $(.venv/bin/python --version), $(chromium --version 2>/dev/null | cut -d' ' -f1-2)"
done_step
say "setup took $(since "$SETUP_START")s"
