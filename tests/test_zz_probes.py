"""Readiness probes against real outages. Runs last (file name): it stops and restarts the
Docker engine itself. (The start-up probe is tested in-process: tests/daemon/test_startup_probe.py.)"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.helpers import NodeProcess, container_entry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _dockerd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0


def _engine_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def test_readiness_turns_503_when_the_docker_engine_stops(docker_engine, tmp_path):
    node = NodeProcess(tmp_path, [container_entry("echo", "echo")]).start()
    try:
        assert node.http().get("/health/ready").status == 200
        subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
        deadline = time.monotonic() + 60
        while _dockerd_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _engine_up()
        ready = node.http().get("/health/ready", timeout=10)
        assert ready.status == 503
        assert ready.json["checks"]["docker"]["status"] == "unavailable"
        assert ready.json["checks"]["sqlite"]["status"] == "ok"
        assert node.http().get("/health/live").status == 200
    finally:
        deadline = time.monotonic() + 60
        while _dockerd_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _engine_up():
            with open("/tmp/dockerd.log", "ab") as log:
                subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
            deadline = time.monotonic() + 60
            while not _engine_up() and time.monotonic() < deadline:
                time.sleep(0.5)
        node.stop()
        node.remove_containers()
    assert _engine_up(), "the Docker engine did not come back"
