"""deploy/infernet/docker-compose.yaml, as an Infernet operator uses it: the node's image started
by compose with a config.json mounted at /app/config.json (and node.yaml beside it), nothing
else changed; it starts the container the config names and serves jobs. Redis and fluent-bit,
behind profiles, do not start. Compose is driven directly (not through pytest-docker's
session-wide fixtures, which tests/containers/test_node_image.py already holds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest

from tests.daemon.test_infernet_config import STARTER
from tests.daemon.test_infernet_node import IMAGE, ensure_echo_image
from tests.helpers import REPO, Http, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = "node-daemon:infernet-test"


def compose() -> list[str]:
    return ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]


@pytest.fixture(scope="module")
def deployment(docker_engine, tmp_path_factory):
    build = subprocess.run(["bash", "scripts/build_node_image.sh", TAG], cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    ensure_echo_image()
    folder = tmp_path_factory.mktemp("deploy")
    for name in ("docker-compose.yaml", "node.yaml"):
        shutil.copy(REPO / "deploy" / "infernet" / name, folder / name)
    cid = f"hello-{uuid.uuid4().hex[:8]}"
    config = json.loads(json.dumps(STARTER))
    config["chain"]["enabled"] = False
    config["server"]["port"] = free_port()
    config["startup_wait"] = 30.0
    config["containers"][0].update(id=cid, image=IMAGE, port=str(free_port()), command="python3 -u /app/app.py")
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    project = f"infernet{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "NODE_IMAGE": TAG}
    run = [*compose(), "-p", project]
    up = subprocess.run([*run, "up", "-d"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    http = Http(config["server"]["port"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if http.get("/health", timeout=1).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        logs = lambda: subprocess.run([*run, "logs", "--no-color"], cwd=folder, env=env,  # noqa: E731
                                      capture_output=True, text=True).stdout
        yield http, cid, run, folder, env, logs
    finally:
        subprocess.run([*run, "down", "-v", "-t", "20"], cwd=folder, env=env, capture_output=True, timeout=120)
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_the_compose_file_runs_the_node_on_a_mounted_config_json_and_serves_jobs(deployment):
    http, cid, run, folder, env, logs = deployment
    assert http.get("/health").status == 200, logs()
    job = http.wait_job(http.submit([cid], {"hello": "compose"}))
    assert job["status"] == "success" and job["result"]["output"] == {"hello": "compose"}
    out = logs()
    assert "form=infernet" in out and "/app/config.json" in out
    assert 'note="redis:' in out
    services = subprocess.run([*run, "ps", "--services", "--filter", "status=running"], cwd=folder, env=env,
                              capture_output=True, text=True).stdout.split()
    assert services == ["node"]  # Redis and fluent-bit only with their profiles
    status = http.get("/api/node/status").json
    assert status["config"]["path"] == "/app/config.json" and status["config"]["form"] == "infernet"
