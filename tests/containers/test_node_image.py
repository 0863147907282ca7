"""The node's own Docker image builds from the local base and runs jobs end to end: started by
pytest-docker from a compose file beside a container it runs jobs on, and managing a container
of its own through the engine's socket. Its status endpoint and metrics answer from the image."""

from __future__ import annotations

import http.client as http_client
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from tests.helpers import REPO, Http, container_entry, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TAG = "node-daemon:test"
PREFIX = f"img{uuid.uuid4().hex[:6]}-"


@pytest.fixture(scope="session")
def node_image(docker_engine):
    build = subprocess.run(["bash", "scripts/build_node_image.sh", TAG], cwd=REPO, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    return TAG


@pytest.fixture(scope="session")
def node_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    """Debian ships compose v1 (`docker-compose`); use the v2 plugin where that is what exists."""
    return "docker-compose" if shutil.which("docker-compose") else "docker compose"


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"nodeimg{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def docker_compose_file(node_image, node_port, tmp_path_factory):
    data = tmp_path_factory.mktemp("node-image")
    echo_port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": node_port},
        "storage": {"path": "/data/node.db"},
        "docker": {"name_prefix": PREFIX},
        "containers": [{"id": "echo", "url": f"http://127.0.0.1:{echo_port}"},
                       container_entry("upper", "transform", env={"MODE": "upper"})],
    }
    (data / "config.yaml").write_text(yaml.safe_dump(config))
    os.environ.update(NODE_IMAGE=node_image, ECHO_PORT=str(echo_port), REPO=str(REPO), DATA_DIR=str(data))
    return str(REPO / "tests" / "compose" / "node-image.yml")


@pytest.fixture(scope="session")
def docker_setup():
    return ["up -d"]


@pytest.fixture(scope="session")
def node_http(docker_services, node_port):
    http = Http(node_port)

    def healthy() -> bool:
        try:
            return http.get("/health", timeout=1).status == 200
        except (OSError, http_client.HTTPException):
            return False

    try:
        docker_services.wait_until_responsive(healthy, timeout=120, pause=0.5)
    except Exception:
        print(docker_services._docker_compose.execute("logs node").decode(errors="replace")[-4000:])
        raise
    yield http
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{PREFIX}"], capture_output=True,
                         text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def test_node_image_serves_jobs_on_a_neighbour_and_on_its_own_container(node_http, docker_services):
    job = node_http.wait_job(node_http.submit(["echo", "upper"], {"from": "image"}))
    assert job["status"] == "success" and job["result"]["output"] == {"from": "IMAGE"}
    status = node_http.get("/api/node/status").json
    assert {c["id"]: c["status"] for c in status["containers"]} == {"echo": "external", "upper": "running"}
    metrics = node_http.get("/metrics").body.decode()
    assert 'node_jobs_total{containers="echo,upper",outcome="success",source="offchain"} 1.0' in metrics

    compose = docker_services._docker_compose
    compose.execute("stop -t 20 node")
    assert "node.stopped" in compose.execute("logs node").decode(errors="replace")
