"""A real managed container that keeps crashing: the node restarts it, and the restarts show in
the metrics, as the `container_restarting` problem, and in `node-daemon status`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, NodeProcess, container_entry
from tests.observe.test_observe import scrape, value

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_a_container_that_keeps_crashing_is_restarted_and_reported(docker_engine, tmp_path):
    node = NodeProcess(tmp_path, [container_entry("faulty", "faulty", timeout=2)],
                       {"observe": {"interval": 0.5, "container_restarts": 2}}).start()
    try:
        http = node.http()
        assert value(scrape(http), "node_container_state", container="faulty", state="running") == 1
        for crash in range(2):
            http.wait_job(http.submit(["faulty"], {"mode": "crash"}))
            deadline = time.monotonic() + 30
            while value(samples := scrape(http), "node_container_restarts_total", container="faulty") < crash + 1:
                assert time.monotonic() < deadline, "faulty was not restarted"
                time.sleep(0.3)
            # let its server listen again before the next crash
            deadline = time.monotonic() + 15
            while http.wait_job(http.submit(["faulty"], {"mode": "ok"}))["status"] != "success":
                assert time.monotonic() < deadline
                time.sleep(0.3)
        deadline = time.monotonic() + 10
        while value(samples := scrape(http), "node_problems", problem="container_restarting") != 1:
            assert time.monotonic() < deadline, samples
            time.sleep(0.3)
        assert "problem.detected" in node.log() and "container_restarting" in node.log()
        out = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(node.config_path)],
                             cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert out.returncode == 0, out.stderr
        assert "container_restarting" in out.stdout and "faulty" in out.stdout
    finally:
        node.stop()
        node.remove_containers()
