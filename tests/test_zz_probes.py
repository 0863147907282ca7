"""Startup and readiness probes against real outages. Runs last (file name): it stops and
restarts the Docker engine itself."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.helpers import NodeProcess, container_entry, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_startup_probe_is_503_until_containers_answer(docker_engine, tmp_path):
    silent = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    node = NodeProcess(tmp_path, [{"id": "remote", "url": silent}], {"startup_wait": 3})
    node.start_background()
    try:
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                resp = node.http().get("/health/startup", timeout=1)
            except OSError:
                time.sleep(0.05)
                continue
            seen.append(resp.status)
            if resp.status == 200:
                break
            time.sleep(0.1)
        assert 503 in seen and seen[-1] == 200
        assert node.http().get("/health").json == {"status": "healthy"}
        assert "containers.not_answering" in node.log()
    finally:
        node.stop()


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
