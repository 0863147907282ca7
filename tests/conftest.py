from __future__ import annotations

import subprocess

import pytest

from tests.helpers import NodeProcess, container_entry


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Docker tests need the engine and the local base images (scripts/setup.sh makes both)."""
    info = subprocess.run(["docker", "info"], capture_output=True)
    assert info.returncode == 0, "Docker engine not reachable: run scripts/setup.sh"
    image = subprocess.run(["docker", "image", "inspect", "node-base/python:bookworm"], capture_output=True)
    assert image.returncode == 0, "base image node-base/python:bookworm missing: run scripts/setup.sh"


def standard_containers() -> list[dict]:
    return [
        container_entry("echo", "echo", description="identity"),
        container_entry("upper", "transform", env={"MODE": "upper"}),
        container_entry("stats", "numeric"),
        container_entry("faulty", "faulty", timeout=2, concurrency=8),
        container_entry("inner", "echo", external=False),
        container_entry("private", "echo", allowed_ips=["127.0.0.2/32"]),
    ]


@pytest.fixture(scope="module")
def node(docker_engine, tmp_path_factory):
    """One real node with the shipped workloads, shared by a test module."""
    proc = NodeProcess(tmp_path_factory.mktemp("node"), standard_containers())
    proc.start()
    yield proc
    proc.stop()
    proc.remove_containers()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run after every other test, and the engine-stopping probes after them.
    Playwright's sync API keeps an event loop running in the main thread for the rest of the
    session (its `playwright` fixture is session-scoped), and pytest-asyncio cannot run a test
    in a thread that already has a running loop."""
    items.sort(key=lambda item: (item.path.name == "test_zz_probes.py",
                                 "page" in getattr(item, "fixturenames", ())))
