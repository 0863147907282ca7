"""Config reload without a restart (SIGHUP, `node-daemon reload`) on a real node with real
containers: containers added, removed and rolled while jobs run, with no failed job; an invalid
file changes nothing. The plan itself (what applies live, what waits for a restart) in-process."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from node.config import parse_config
from node.reload import plan
from tests.helpers import REPO, NodeProcess, container_entry


def test_the_plan_applies_containers_limits_and_log_level_live_and_lists_the_rest_for_a_restart():
    old = parse_config({"containers": [{"id": "a", "image": "x"}, {"id": "b", "image": "y"},
                                       {"id": "c", "image": "z"}]}, env={})
    new = parse_config({"containers": [{"id": "a", "image": "x2"}, {"id": "c", "image": "z", "allowed_ips": ["10.0.0.0/8"]},
                                       {"id": "d", "image": "y"}],
                        "log": {"level": "DEBUG"}, "server": {"rate_limit": {"num_requests": 5}, "port": 4100},
                        "storage": {"path": "other.db"}}, env={})
    changes = plan(old, new)
    assert [c.id for c in changes.added] == ["d"] and changes.removed == ["b"]
    assert [c.id for c in changes.rolled] == ["a"] and [c.id for c in changes.retuned] == ["c"]
    assert changes.live == ["log.level", "server.rate_limit"]
    assert changes.restart == ["server.port", "storage.path"]
    assert plan(old, old).summary() == {"added": [], "removed": [], "rolled": [], "retuned": [], "live": [],
                                        "restart_needed": []}


def test_a_changed_private_key_is_listed_for_a_restart_though_secrets_dump_alike():
    chain = {"enabled": True, "rpc_url": "http://127.0.0.1:1", "coordinator_address": "0x" + "11" * 20,
             "reader_address": "0x" + "22" * 20}
    old = parse_config({"chain": {**chain, "wallet": {"private_key": "0x" + "01" * 32}}}, env={})
    new = parse_config({"chain": {**chain, "wallet": {"private_key": "0x" + "02" * 32}}}, env={})
    assert plan(old, new).restart == ["chain.wallet"]


def test_in_swarm_mode_a_container_change_waits_for_a_restart():
    old = parse_config({"containers": [{"id": "a", "image": "x"}]}, env={})
    new = parse_config({"containers": [{"id": "a", "image": "x2"}]}, env={})
    changes = plan(old, new, containers_live=False)
    assert not changes.containers_changed and changes.restart == ["containers"]


class Load:
    """Jobs submitted and awaited back to back from a thread, on the given containers."""

    def __init__(self, node: NodeProcess, chains: list[list[str]]) -> None:
        self.http, self.chains = node.http(), chains
        self.results: list[tuple[list[str], dict]] = []
        self.refused: list[tuple[list[str], int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            chain = self.chains[i % len(self.chains)]
            i += 1
            resp = self.http.post("/api/jobs", {"containers": chain, "data": {"i": i}})
            if resp.status != 200:
                self.refused.append((chain, resp.status, resp.json.get("error", "")))
                continue
            self.results.append((chain, self.http.wait_job(resp.json["id"], timeout=60)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)


@pytest.fixture
def node(docker_engine, tmp_path):
    proc = NodeProcess(tmp_path, [container_entry("echo", "echo"),
                                  container_entry("upper", "transform", env={"MODE": "upper"})],
                       {"server": {"host": "127.0.0.1", "shutdown_grace": 3}})
    proc.start()
    yield proc
    proc.stop()
    proc.remove_containers()


def info_ids(node: NodeProcess) -> list[str]:
    return [c["id"] for c in node.http().get("/info").json["containers"]]


def status(node: NodeProcess) -> dict:
    return node.http().get("/api/node/status").json


@pytest.mark.docker
@pytest.mark.slow
def test_sighup_adds_removes_and_rolls_containers_under_load_with_no_failed_job(node):
    before = status(node)["config"]
    with Load(node, [["echo"], ["upper"], ["echo", "upper"]]) as load:
        time.sleep(1.5)
        node.containers = [container_entry("echo", "echo", env={"ECHO_HOSTNAME": "1"}),  # rolled
                           container_entry("stats", "numeric")]  # added; upper removed
        node.write_config()
        node.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 90
        while "config.reloaded" not in node.log() and time.monotonic() < deadline:
            assert "config.reload_failed" not in node.log(), node.log()
            time.sleep(0.2)
        assert info_ids(node) == ["echo", "stats"], node.log()
        time.sleep(1.5)  # the load goes on against the new set
    failed = [(chain, job) for chain, job in load.results if job["status"] != "success"]
    assert failed == [], failed
    assert len(load.results) > 20
    # the only refusals: jobs naming `upper` once it was gone
    assert load.refused and all("upper" in chain and status_code == 400 and err == "Container not supported"
                                for chain, status_code, err in load.refused), load.refused[:5]
    rolled = [job["result"]["output"] for chain, job in load.results if chain == ["echo"]]
    assert isinstance(rolled[-1], dict) and "hostname" in rolled[-1]  # the successor answers now
    assert rolled[0] == {"i": 1}  # the first echo jobs ran on the old container
    http = node.http()
    job = http.wait_job(http.submit(["stats"], {"n": [1, 2, 3]}))
    assert job["status"] == "success" and job["result"]["output"]["sum"] == 6
    after = status(node)["config"]
    assert after["sha256"] != before["sha256"] and after["loaded_at"] > before["loaded_at"]
    names = subprocess.run(["docker", "ps", "--format", "{{.Names}}", "--filter", f"name=^{node.prefix}"],
                           capture_output=True, text=True).stdout.split()
    assert sorted(names) == sorted([f"{node.prefix}echo", f"{node.prefix}stats"])  # successor took the name


@pytest.mark.docker
@pytest.mark.slow
def test_an_invalid_reload_changes_nothing_and_says_which_field(node):
    before = status(node)["config"]
    good = node.config_path.read_text()
    node.containers = [container_entry("echo", "echo", port="not-a-port"), container_entry("stats", "numeric")]
    node.write_config()
    out = subprocess.run([sys.executable, "-m", "node", "reload", "--config", str(node.config_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "containers.0.port" in out.stderr, out
    assert info_ids(node) == ["echo", "upper"]
    assert status(node)["config"] == before
    [line] = [line for line in node.log().splitlines() if "config.reload_invalid" in line]
    assert "containers.0.port" in line
    metrics = node.http().get("/metrics").body.decode()
    assert 'node_config_reloads_total{outcome="invalid"} 1.0' in metrics
    http = node.http()
    assert http.wait_job(http.submit(["upper"], "still here"))["result"]["output"] == "STILL HERE"
    node.config_path.write_text(good)
    out = subprocess.run([sys.executable, "-m", "node", "reload", "--config", str(node.config_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_a_removed_container_serves_the_running_jobs_that_reach_it_before_it_goes(docker_engine, tmp_path):
    proc = NodeProcess(tmp_path, [container_entry("faulty", "faulty"),
                                  container_entry("upper", "transform", env={"MODE": "upper"})])
    proc.start()
    try:
        http = proc.http()
        job_id = http.submit(["faulty", "upper"], {"mode": "sleep", "seconds": 3})  # reaches upper in 3 s
        time.sleep(0.5)
        proc.containers = [container_entry("faulty", "faulty")]
        proc.write_config()
        proc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        refused = http.post("/api/jobs", {"containers": ["upper"], "data": "x"})
        assert refused.status == 400 and refused.json["error"] == "Container not supported"
        job = http.wait_job(job_id, timeout=30)
        assert job["status"] == "success" and job["result"]["container"] == "upper", job
        deadline = time.monotonic() + 30
        while "config.container_removed" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert info_ids(proc) == ["faulty"]
    finally:
        proc.stop()
        proc.remove_containers()
