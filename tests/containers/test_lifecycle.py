"""Node and container lifecycle: restarts with jobs in SQLite, crashed containers, graceful
shutdown, rate limits, unmanaged mode."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.conftest import standard_containers
from tests.helpers import NodeProcess, container_entry

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def make_node(docker_engine, tmp_path):
    made: list[NodeProcess] = []

    def make(containers=None, **extra) -> NodeProcess:
        proc = NodeProcess(tmp_path / f"n{len(made)}", containers or standard_containers()[:4], extra)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop(signal.SIGKILL)
        proc.remove_containers()


def _docker_names(prefix: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", f"name=^{prefix}"],
                         capture_output=True, text=True).stdout
    return sorted(out.split())


def test_results_survive_a_restart_and_running_jobs_are_failed(make_node):
    node = make_node().start()
    http = node.http()
    done = http.submit(["upper", "stats"], {"t": "a", "n": [4, 5]})
    assert http.wait_job(done)["status"] == "success"
    hanging = http.submit(["echo", "faulty"], {"mode": "sleep", "seconds": 1.5})
    time.sleep(0.3)  # the job is running and its row is on disk
    node.stop(signal.SIGKILL)  # no chance to clean up

    node.start()
    http = node.http()
    jobs = {j["id"]: j for j in http.get(f"/api/jobs?id={done}&id={hanging}&intermediate=true").json}
    assert jobs[done]["status"] == "success" and jobs[done]["result"]["output"]["sum"] == 9
    assert jobs[hanging]["status"] == "failed"
    assert "node stopped while the job was running" in jobs[hanging]["result"]["error"]
    assert sorted(http.get("/api/jobs").json) == sorted([done, hanging])
    assert http.get("/api/jobs?pending=true").json == []
    assert "jobs.recovered" in node.log()


def test_sigterm_lets_in_flight_jobs_finish_and_removes_containers(make_node):
    node = make_node().start()
    http = node.http()
    assert len(_docker_names(node.prefix)) == 4
    job_id = http.submit(["faulty"], {"mode": "sleep", "seconds": 1})
    time.sleep(0.2)
    assert node.stop(signal.SIGTERM) == 0
    assert "node.stopped" in node.log()
    assert _docker_names(node.prefix) == []

    node.start()
    job = node.http().wait_job(job_id)
    assert job["status"] == "success" and job["result"]["output"]["ok"] is True


def test_shutdown_grace_fails_jobs_that_outlast_it(make_node):
    containers = [container_entry("faulty", "faulty", timeout=30)]
    node = make_node(containers, server={"shutdown_grace": 0.5}).start()
    job_id = node.http().submit(["faulty"], {"mode": "sleep", "seconds": 20})
    time.sleep(0.2)
    started = time.monotonic()
    assert node.stop(signal.SIGINT) == 0
    assert time.monotonic() - started < 15
    node.start()
    job = node.http().wait_job(job_id)
    assert job["status"] == "failed" and job["result"]["error"] == "node shutting down"


def test_crashed_container_is_restarted(make_node):
    node = make_node().start()
    http = node.http()
    crashed = http.wait_job(http.submit(["faulty"], {"mode": "crash"}))
    assert crashed["status"] == "failed" and crashed["result"]["container"] == "faulty"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = {s["id"]: s for s in http.get("/api/containers").json}["faulty"]
        if state["restarts"] >= 1 and state["status"] == "running":
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"faulty was not restarted: {state}")
    assert "containers.restarting" in node.log()
    # The restarted container serves jobs again (give its server a moment to listen).
    deadline = time.monotonic() + 15
    while True:
        job = http.wait_job(http.submit(["faulty"], {"mode": "ok"}))
        if job["status"] == "success" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert job["status"] == "success"


def test_changed_configuration_replaces_a_stale_container(make_node):
    first = make_node([container_entry("t", "transform", env={"MODE": "upper"}, port=None)])
    first.extra["docker"] = {"stop_on_exit": False}
    first.write_config()
    first.start()
    assert first.http().wait_job(first.http().submit(["t"], "abc"))["result"]["output"] == "ABC"
    first.stop()
    assert _docker_names(first.prefix) == [f"{first.prefix}t"]  # left running on purpose

    second = make_node([container_entry("t", "transform", env={"MODE": "reverse"})])
    second.prefix = first.prefix
    second.write_config()
    second.start()
    assert second.http().wait_job(second.http().submit(["t"], "abc"))["result"]["output"] == "cba"
    assert "configuration changed" in second.log()


def test_rate_limit_answers_429_json(make_node):
    node = make_node([container_entry("echo", "echo")], server={"rate_limit": {"num_requests": 3, "period": 30}})
    node.start()
    http = node.http("127.0.0.7")
    statuses = [http.get("/info").status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    resp = http.get("/info")
    assert resp.json["error"] == "Too many requests" and int(resp.headers["retry-after"]) >= 1
    assert node.http("127.0.0.8").get("/info").status == 200  # per client


def test_unmanaged_mode_talks_to_running_services(make_node):
    managed = make_node([container_entry("echo", "echo")])
    managed.extra["docker"] = {"stop_on_exit": False}
    managed.write_config()
    managed.start()
    url = {s["id"]: s for s in managed.http().get("/api/containers").json}["echo"]["url"]
    managed.stop()

    unmanaged = make_node([{"id": "remote", "url": url}], manage_containers=False)
    unmanaged.prefix = managed.prefix
    unmanaged.start()
    http = unmanaged.http()
    assert http.wait_job(http.submit(["remote"], {"x": 1}))["result"]["output"] == {"x": 1}
    assert http.get("/api/containers").json[0]["status"] == "external"
