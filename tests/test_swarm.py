"""docker.mode: swarm on a real single-node swarm: services, replicas, task replacement under
load, scaling in place, and a placement no machine meets.

The set-up runs `docker swarm init` when the engine is in no swarm and leaves the swarm again at
the end; a swarm it found stays as it was. Services, networks and images are this module's own
(unique name prefix per node, image tags under node-swarm-test/)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, NodeProcess

IMAGE = "node-swarm-test/echo:latest"


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}")


@pytest.fixture(scope="module")
def swarm(docker_engine):
    had_gwbridge = bool(docker("network", "ls", "-q", "--filter", "name=^docker_gwbridge$"))
    created = swarm_state() == "inactive"
    if created:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    assert swarm_state() == "active"
    yield
    if created:
        docker("swarm", "leave", "--force")
        if not had_gwbridge:  # made by the swarm for its tasks; gone with it unless still in use
            docker("network", "rm", "docker_gwbridge", check=False)


def echo_service(cid: str = "echo", **extra: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "image": IMAGE,
        "build": {"context": str(REPO / "containers"), "dockerfile": "echo/Dockerfile"},
        "env": {"ECHO_HOSTNAME": "1"},
        **extra,
    }


def swarm_node(workdir: Path, containers: list[dict[str, Any]], **docker_extra: Any) -> NodeProcess:
    return NodeProcess(workdir, containers, extra={
        "docker": {"mode": "swarm", "swarm": {"connect_via": "tasks"}, **docker_extra},
        "startup_wait": 90,
    })


def remove_services(prefix: str) -> None:
    names = docker("service", "ls", "--format", "{{.Name}}", "--filter", f"name={prefix}").split()
    names = [n for n in names if n.startswith(prefix)]
    if names:
        docker("service", "rm", *names, check=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the network goes once the tasks have left it
        if subprocess.run(["docker", "network", "rm", f"{prefix}net"], capture_output=True).returncode == 0:
            return
        if not docker("network", "ls", "-q", "--filter", f"name=^{prefix}net$"):
            return
        time.sleep(0.5)


def running_tasks(service: str) -> list[dict[str, Any]]:
    lines = docker("service", "ps", service, "--filter", "desired-state=running", "--format", "{{json .}}")
    return [t for t in (json.loads(line) for line in lines.splitlines() if line) if t["CurrentState"].startswith("Running")]


def container_state(node: NodeProcess, cid: str) -> dict[str, Any]:
    states = {s["id"]: s for s in node.http().get("/api/containers").json}
    return states[cid]


def run_job(node: NodeProcess, data: Any, container: str = "echo") -> dict[str, Any]:
    http = node.http()
    job_id = http.submit([container], data)
    resp = http.get(f"/api/jobs?id={job_id}&wait=30", timeout=60)
    assert resp.status == 200, resp.body
    return resp.json[0]


@pytest.fixture(scope="module")
def three(swarm, tmp_path_factory):
    """A node whose echo container is a service of three replicas."""
    node = swarm_node(tmp_path_factory.mktemp("swarm3"), [echo_service(replicas=3)])
    try:
        node.start(timeout=150)
        yield node
    finally:
        node.stop()
        remove_services(node.prefix)


def test_a_container_with_three_replicas_is_a_service_with_three_tasks_that_all_answer_jobs(three):
    service = f"{three.prefix}echo"
    assert len(running_tasks(service)) == 3
    state = container_state(three, "echo")
    assert (state["mode"], state["status"]) == ("swarm", "running")
    assert (state["replicas_running"], state["replicas_desired"]) == (3, 3)
    assert len(state["task_urls"]) == 3
    ready = three.http().get("/health/ready")
    assert ready.status == 200 and ready.json["checks"]["services"]["status"] == "ok", ready.body

    jobs = [run_job(three, {"n": i}) for i in range(12)]
    assert all(job["status"] == "success" for job in jobs), jobs
    assert [job["result"]["output"]["data"] for job in jobs] == [{"n": i} for i in range(12)]
    hostnames = {job["result"]["output"]["hostname"] for job in jobs}
    assert len(hostnames) == 3, hostnames  # calls go round the three tasks


def test_removing_a_task_container_under_load_fails_no_job_while_swarm_replaces_it(three):
    service = f"{three.prefix}echo"
    results: list[dict[str, Any]] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        n = 0
        while not stop.is_set():
            results.append(run_job(three, {"worker": worker, "n": n}))
            n += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        before = len(results)
        victim = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").split()[0]
        docker("rm", "-f", victim)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # Swarm starts a new task; the node picks it up
            state = container_state(three, "echo")
            urls_ok = len(state["task_urls"]) == 3 and state["replicas_running"] == 3
            if urls_ok and not any(victim in t["ID"] for t in running_tasks(service)):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"service did not get back to 3 tasks: {container_state(three, 'echo')}")
        time.sleep(2)  # and goes on serving with the new task
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    failed = [job for job in results if job["status"] != "success"]
    assert not failed, [job["result"]["error"] for job in failed]
    assert before > 0 and len(results) > before + 20, (before, len(results))
    after = {job["result"]["output"]["hostname"] for job in results[-30:]}
    assert victim[:12] not in after


def test_changing_replicas_in_the_config_scales_the_running_service_in_place(swarm, tmp_path):
    node = swarm_node(tmp_path, [echo_service(replicas=1)], stop_on_exit=False)
    service = f"{node.prefix}echo"
    try:
        node.start(timeout=150)
        first_id = docker("service", "inspect", service, "--format", "{{.ID}}")
        first_task = running_tasks(service)[0]["ID"]
        assert node.stop() == 0
        assert docker("service", "inspect", service, "--format", "{{.ID}}") == first_id  # left running

        node.containers = [echo_service(replicas=2)]
        node.write_config()
        node.start(timeout=150)
        assert docker("service", "inspect", service, "--format", "{{.ID}}") == first_id  # not recreated
        tasks = running_tasks(service)
        assert len(tasks) == 2 and first_task in {t["ID"] for t in tasks}  # the old task kept running
        state = container_state(node, "echo")
        assert (state["replicas_running"], state["replicas_desired"]) == (2, 2)
        assert "containers.service_scaled" in node.log() and "replicas_to=2" in node.log()
        assert len({run_job(node, i)["result"]["output"]["hostname"] for i in range(6)}) == 2
    finally:
        node.stop()
        remove_services(node.prefix)


def test_a_placement_no_machine_meets_is_reported_as_unschedulable_not_waited_for(swarm, tmp_path):
    gpu = echo_service("gpu", placement=["node.labels.gpu == true"])
    node = swarm_node(tmp_path, [echo_service("echo"), gpu])
    try:
        started = time.monotonic()
        node.start(timeout=150)
        assert time.monotonic() - started < 60  # not the 90 s startup_wait
        state = container_state(node, "gpu")
        assert state["status"] == "unschedulable"
        assert (state["replicas_running"], state["replicas_desired"]) == (0, 1)
        assert "cannot be placed" in state["last_error"] and "no suitable node" in state["last_error"]
        assert "containers.unschedulable" in node.log() and "node.labels.gpu == true" in node.log()
        ready = node.http().get("/health/ready")
        assert ready.status == 503 and "gpu: 0/1 running" in ready.json["checks"]["services"]["error"]
        assert run_job(node, 1)["status"] == "success"  # the placeable service still serves
        failed = run_job(node, 1, container="gpu")
        assert failed["status"] == "failed" and "unreachable" in failed["result"]["error"]
    finally:
        node.stop()
        remove_services(node.prefix)
