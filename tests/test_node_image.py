"""The node's own Docker image builds from the local base and runs a job end to end, managing
its containers through the engine socket."""

from __future__ import annotations

import http.client as http_client
import subprocess
import time
import uuid

import pytest
import yaml

from tests.helpers import REPO, Http, container_entry, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_node_image_builds_and_serves_jobs(docker_engine, tmp_path):
    tag = "node-daemon:test"
    build = subprocess.run(["bash", "scripts/build_node_image.sh", tag], cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr

    port = free_port()
    prefix = f"img{uuid.uuid4().hex[:6]}-"
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "storage": {"path": "/data/node.db"},
        "docker": {"name_prefix": prefix},
        "containers": [container_entry("echo", "echo")],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    name = f"{prefix}node"
    run = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host",
         "-v", "/var/run/docker.sock:/var/run/docker.sock",
         "-v", f"{REPO / 'containers'}:{REPO / 'containers'}:ro",
         "-v", f"{tmp_path}:/data", tag, "run", "--config", "/data/config.yaml"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    try:
        http = Http(port)
        deadline = time.monotonic() + 90
        while True:
            try:
                if http.get("/health", timeout=1).status == 200:
                    break
            except (OSError, http_client.HTTPException):
                pass
            assert time.monotonic() < deadline, subprocess.run(["docker", "logs", name], capture_output=True,
                                                               text=True).stderr
            time.sleep(0.3)
        job = http.wait_job(http.submit(["echo"], {"from": "image"}))
        assert job["status"] == "success" and job["result"]["output"] == {"from": "image"}
        stop = subprocess.run(["docker", "stop", "-t", "20", name], capture_output=True, text=True)
        assert stop.returncode == 0
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True).stderr
        assert "node.stopped" in logs
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{prefix}"], capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
