"""`node-daemon cre setup|build|simulate` as a CRE developer runs them (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cre.workflows.harness import PRICE_FEED, PriceServer, toolchain
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", "cre", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def prices():
    toolchain()
    server = PriceServer(b"77.5")
    yield server
    server.close()


def test_cre_setup_is_idempotent_once_the_toolchain_is_installed(prices):
    out = cli("setup")
    assert out.returncode == 0, out.stderr
    assert "already installed" in out.stdout


def test_cre_build_serves_an_unchanged_workflow_from_the_cache(prices):
    cli("build", str(PRICE_FEED))
    again = cli("build", str(PRICE_FEED))
    assert again.returncode == 0, again.stderr
    assert "(cached in" in again.stdout and "sha256" in again.stdout


def test_cre_simulate_runs_the_cron_trigger_and_prints_logs_calls_and_result(prices):
    out = cli("simulate", str(PRICE_FEED), "--config", json.dumps({"priceUrl": prices.url}),
              "--secret", "PRICE_API_KEY=abc", "--allow-network", "127.0.0.1/32")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[log] median price=77.5" in out.stdout
    assert "[call] http-actions@1.0.0-alpha SendRequest (node mode)" in out.stdout
    assert 'result: "price=77.5 onchain=none"' in out.stdout


def test_cre_simulate_json_http_trigger_echoes_the_input(prices):
    out = cli("simulate", str(PRICE_FEED), "--config", json.dumps({"priceUrl": prices.url}),
              "--trigger", "http", "--input", '{"q":"cli"}', "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert (report["ok"], report["result"]) == (True, 'echo: {"q":"cli"}')


def test_cre_simulate_exits_1_with_the_error_when_the_workflow_fails(prices):
    out = cli("simulate", str(PRICE_FEED), "--config", json.dumps({"priceUrl": prices.url}))
    assert out.returncode == 1
    assert "error:" in out.stdout and "PRICE_API_KEY" in out.stdout


def test_cre_simulate_names_a_missing_file_in_one_line(tmp_path):
    out = cli("simulate", str(tmp_path / "nope.ts"))
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no such file" in out.stderr
