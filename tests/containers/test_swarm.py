"""docker.mode: swarm on a real single-node swarm: services, replicas, task replacement under
load, scaling in place, and a placement no machine meets.

The set-up runs `docker swarm init` when the engine is in no swarm and leaves the swarm again at
the end; a swarm it found stays as it was. Services, networks and images are this module's own
(unique name prefix per node, image tags under node-swarm-test/)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node.config import ConfigError, parse_config
from node.jobs.client import ContainerClient
from node.jobs.endpoint import ContainerEndpoint, ContainerFailure
from tests.helpers import REPO, NodeProcess, free_port

IMAGE = "node-swarm-test/echo:latest"


# -- the call path (in process, no Docker) --------------------------------------------------


class Task:
    """A stand-in for one task of a service: answers /service_output, counts and times calls."""

    def __init__(self, delay: float = 0.0, status: int = 200, gauge: dict[str, int] | None = None) -> None:
        self.delay, self.status = delay, status
        self.calls = 0
        self.gauge = gauge if gauge is not None else {"in_flight": 0, "peak": 0}  # may be shared
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.gauge["in_flight"] += 1
        self.gauge["peak"] = max(self.gauge["peak"], self.gauge["in_flight"])
        try:
            await asyncio.sleep(self.delay)
            return web.json_response({"port": self.port}, status=self.status)
        finally:
            self.gauge["in_flight"] -= 1

    async def __aenter__(self) -> Task:
        app = web.Application()
        app.router.add_post("/service_output", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.runner.cleanup()


class Hangup:
    """A port whose peer accepts and closes at once, as Docker's port proxy does for a dead task."""

    def __init__(self) -> None:
        self.accepted = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Hangup:
        async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.transport.abort()

        self.server = await asyncio.start_server(drop, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()


async def call(endpoint: ContainerEndpoint, times: int = 1) -> list[Any]:
    client = ContainerClient()
    try:
        return await asyncio.gather(*(client.call(endpoint, {"data": i}) for i in range(times)))
    finally:
        await client.close()


async def test_a_call_refused_at_connect_is_retried_once_on_another_task():
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    async with Task() as alive:
        endpoint = ContainerEndpoint("svc", dead)
        endpoint.set_urls([dead, alive.url])
        answers = await call(endpoint, 10)
    assert answers == [{"port": alive.port}] * 10
    assert alive.calls == 10


async def test_calls_spread_over_the_tasks_in_turn():
    async with Task() as a, Task() as b, Task() as c:
        endpoint = ContainerEndpoint("svc", a.url)
        endpoint.set_urls([a.url, b.url, c.url])
        for _ in range(9):
            await call(endpoint)
    assert (a.calls, b.calls, c.calls) == (3, 3, 3)


async def test_a_swarm_call_dropped_before_any_answer_is_retried_only_once():
    async with Hangup() as proxy:
        endpoint = ContainerEndpoint("svc", proxy.url, retry_dropped=True)
        with pytest.raises(ContainerFailure, match="unreachable"):
            await call(endpoint)
    assert proxy.accepted == 2


async def test_a_local_call_dropped_after_connecting_is_not_retried():
    async with Hangup() as container:  # it may have received the request: at most once
        endpoint = ContainerEndpoint("svc", container.url)
        with pytest.raises(ContainerFailure, match="unreachable"):
            await call(endpoint)
    assert container.accepted == 1


async def test_a_call_the_container_answered_is_never_retried():
    async with Task(status=500) as failing:
        endpoint = ContainerEndpoint("svc", failing.url)
        with pytest.raises(ContainerFailure, match="HTTP 500"):
            await call(endpoint)
    assert failing.calls == 1


async def test_a_call_that_timed_out_is_never_retried():
    async with Task(delay=2) as slow:
        endpoint = ContainerEndpoint("svc", slow.url, timeout=0.3)
        with pytest.raises(ContainerFailure, match="timed out"):
            await call(endpoint)
        await asyncio.sleep(0)
    assert slow.calls == 1


async def test_the_concurrency_limit_holds_for_the_service_not_per_task():
    both: dict[str, int] = {"in_flight": 0, "peak": 0}
    async with Task(delay=0.2, gauge=both) as a, Task(delay=0.2, gauge=both) as b:
        endpoint = ContainerEndpoint("svc", a.url, concurrency=2)
        endpoint.set_urls([a.url, b.url])
        await call(endpoint, 8)
    assert (a.calls, b.calls) == (4, 4)
    assert both["peak"] == 2  # two in flight over the two tasks together, never two each


def test_swarm_only_fields_are_refused_in_local_mode_and_accepted_in_swarm_mode():
    entry = {"id": "gpu", "image": "x", "replicas": 3, "placement": ["node.labels.gpu == true"],
             "resources": {"cpu_limit": 1.5, "memory_limit": 1 << 30, "generic": {"NVIDIA-GPU": 1}}}
    with pytest.raises(ConfigError, match=r"containers\.0\.replicas: only used with docker\.mode: swarm"):
        parse_config({"containers": [entry]})
    config = parse_config({"docker": {"mode": "swarm"}, "containers": [entry]})
    assert config.containers[0].replicas == 3 and config.docker.swarm.connect_via == "tasks"
    with pytest.raises(ConfigError, match="needs manage_containers"):
        parse_config({"docker": {"mode": "swarm"}, "manage_containers": False, "containers": [{**entry, "port": 1}]})
    with pytest.raises(ConfigError, match="resources.generic"):
        parse_config({"docker": {"mode": "swarm"}, "containers": [{"id": "g", "image": "x", "gpu": True}]})
    with pytest.raises(ConfigError, match="connect_via"):
        parse_config({"docker": {"mode": "swarm", "swarm": {"connect_via": "dns"}}})


# -- a real single-node swarm ------------------------------------------------------------


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
    shared = tmp_path_factory.mktemp("shared")
    node = swarm_node(tmp_path_factory.mktemp("swarm3"), [echo_service(
        replicas=3, command=["python3", "-u", "/app/app.py"], volumes=[f"{shared}:/mnt/shared:ro"],
        resources={"cpu_limit": 1.0, "memory_limit": 256 << 20, "memory_reservation": 16 << 20})])
    node.shared = shared  # type: ignore[attr-defined]
    try:
        node.start(timeout=150)
        yield node
    finally:
        node.stop()
        remove_services(node.prefix)


@pytest.mark.docker
@pytest.mark.slow
def test_a_container_with_three_replicas_is_a_service_with_three_tasks_that_all_answer_jobs(three):
    service = f"{three.prefix}echo"
    assert len(running_tasks(service)) == 3
    spec = json.loads(docker("service", "inspect", service, "--format", "{{json .Spec.TaskTemplate}}"))
    assert spec["ContainerSpec"]["Args"] == ["python3", "-u", "/app/app.py"]
    assert "ECHO_HOSTNAME=1" in spec["ContainerSpec"]["Env"]
    [mount] = spec["ContainerSpec"]["Mounts"]
    assert (mount["Source"], mount["Target"], mount.get("ReadOnly")) == (str(three.shared), "/mnt/shared", True)
    assert spec["Resources"]["Limits"] == {"NanoCPUs": 1_000_000_000, "MemoryBytes": 256 << 20}
    assert spec["Resources"]["Reservations"] == {"MemoryBytes": 16 << 20}
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


@pytest.mark.docker
@pytest.mark.slow
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


@pytest.mark.docker
@pytest.mark.slow
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


@pytest.mark.docker
@pytest.mark.slow
def test_an_unchanged_service_is_adopted_and_a_changed_one_rolls_through_an_update_in_place(swarm, tmp_path):
    node = swarm_node(tmp_path, [echo_service(replicas=2)], stop_on_exit=False)
    service = f"{node.prefix}echo"
    try:
        node.start(timeout=150)
        first_id = docker("service", "inspect", service, "--format", "{{.ID}}")
        first_tasks = {t["ID"] for t in running_tasks(service)}
        node.stop()

        node.start(timeout=150)  # same config: adopted as it is
        assert "containers.service_adopted" in node.log()
        assert {t["ID"] for t in running_tasks(service)} == first_tasks
        node.stop()

        node.containers = [echo_service(replicas=2, env={"ECHO_HOSTNAME": "1", "EXTRA": "on"})]
        node.write_config()
        node.start(timeout=150)
        assert "containers.service_updating" in node.log()
        assert docker("service", "inspect", service, "--format", "{{.ID}}") == first_id  # updated, not recreated
        env = json.loads(docker("service", "inspect", service, "--format",
                                "{{json .Spec.TaskTemplate.ContainerSpec.Env}}"))
        assert "EXTRA=on" in env
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # one task at a time, the new one first
            tasks = {t["ID"] for t in running_tasks(service)}
            if len(tasks) == 2 and not tasks & first_tasks:
                break
            assert all(run_job(node, 1)["status"] == "success" for _ in range(3))  # served throughout
            time.sleep(0.5)
        else:
            raise AssertionError(f"update did not replace the tasks: {running_tasks(service)}")
        assert run_job(node, 7)["result"]["output"]["data"] == 7
    finally:
        node.stop()
        remove_services(node.prefix)


@pytest.mark.docker
@pytest.mark.slow
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
        assert failed["status"] == "failed" and "no running task" in failed["result"]["error"], failed
    finally:
        node.stop()
        remove_services(node.prefix)


@pytest.mark.docker
@pytest.mark.slow
def test_a_mesh_service_publishes_one_ingress_port_and_keeps_it_across_restarts(swarm, tmp_path):
    # The routing mesh needs the kernel's IPVS, which this machine lacks: the spec is checked here,
    # calls through the mesh are not.
    node = NodeProcess(tmp_path, [echo_service(replicas=2)], extra={"startup_wait": 3, "docker": {
        "mode": "swarm", "swarm": {"connect_via": "mesh"}, "stop_on_exit": False}})
    service = f"{node.prefix}echo"
    try:
        node.start(timeout=150)
        url = container_state(node, "echo")["url"]
        ports = json.loads(docker("service", "inspect", service, "--format", "{{json .Spec.EndpointSpec.Ports}}"))
        assert [(p["TargetPort"], p["PublishMode"]) for p in ports] == [(3000, "ingress")]
        assert url == f"http://127.0.0.1:{ports[0]['PublishedPort']}"
        node.stop()
        node.start(timeout=150)  # a new free port is drawn for the config, the service's own is kept
        assert container_state(node, "echo")["url"] == url
        assert "containers.service_adopted" in node.log() and "containers.service_updating" not in node.log()
    finally:
        node.stop()
        remove_services(node.prefix)
