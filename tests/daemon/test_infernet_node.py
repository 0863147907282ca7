"""A real node started from a config in the exact form of Ritual's hello-world starter config
(same keys and value types: `log_path`, a string `port`, `redis`, `forward_stats`, `docker`,
`snapshot_sync`), only rpc_url, registry_address and the image pointing at the test's own: it
serves off-chain jobs the way infernet-client asks for them (the same REST calls) and a
subscription on the SDK-shaped contracts, on anvil."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account

from tests.chain_helpers import KEYS, Anvil, deploy
from tests.daemon.test_infernet_config import STARTER
from tests.helpers import REPO, Http, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "node-local/echo:latest"


def ensure_echo_image() -> None:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        subprocess.run(["docker", "build", "-q", "-t", IMAGE, "-f", "echo/Dockerfile", "."],
                       cwd=REPO / "containers", check=True, capture_output=True)


class InfernetNode:
    """`python -m node run --config config.json` on an Infernet config."""

    def __init__(self, workdir: Path, config: dict) -> None:
        self.workdir, self.config = workdir, config
        self.path = workdir / "config.json"
        self.path.write_text(json.dumps(config, indent=4))
        self.port = config["server"]["port"]
        self.out = workdir / "stdout.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> InfernetNode:
        self.proc = subprocess.Popen([sys.executable, "-m", "node", "run", "--config", str(self.path)], cwd=REPO,
                                     stdout=open(self.out, "ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if self.http().get("/health", timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"node did not start:\n{self.log()}")

    def http(self) -> Http:
        return Http(self.port)

    def log(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def chain():
    anvil = Anvil(block_time=1).start()
    yield anvil, deploy(anvil.url)
    anvil.stop()


@pytest.fixture(scope="module")
def started(docker_engine, chain, tmp_path_factory):
    ensure_echo_image()
    anvil, dep = chain
    cid = f"hello-{uuid.uuid4().hex[:8]}"
    config = copy.deepcopy(STARTER)
    config["server"]["port"] = free_port()
    config["chain"].update(rpc_url=anvil.url, registry_address=dep.registry.address)
    config["chain"]["wallet"]["private_key"] = KEYS[1]
    config["startup_wait"] = 30.0
    [container] = config["containers"]
    container.update(id=cid, image=IMAGE, port=str(free_port()),
                     command="python3 -u -c \"import runpy; runpy.run_path('/app/app.py', run_name='__main__')\"")
    node = InfernetNode(tmp_path_factory.mktemp("infernet"), config).start()
    yield node, dep, cid
    node.stop()
    subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_the_starter_config_serves_offchain_jobs_as_infernet_client_asks_for_them(started):
    node, _, cid = started
    http = node.http()
    job_id = http.submit([cid], {"prompt": "hello"})  # infernet-client's request_job
    job = http.wait_job(job_id)  # get_job_result: GET /api/jobs?id=
    assert job["status"] == "success" and job["result"] == {"container": cid, "output": {"prompt": "hello"}}
    batch = http.post("/api/jobs/batch", [{"containers": [cid], "data": {"i": i}} for i in range(3)]).json
    assert [http.wait_job(b["id"])["result"]["output"] for b in batch] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert set(http.get("/api/jobs").json) >= {job_id, *(b["id"] for b in batch)}  # get_jobs: this client's ids
    info = http.get("/info").json
    assert info["chain"]["enabled"] is True and info["chain"]["address"] == Account.from_key(KEYS[1]).address
    assert info["containers"][0]["id"] == cid and isinstance(info["version"], str)


def test_the_starter_config_serves_a_subscription_with_infernets_output_encoding(started):
    node, dep, cid = started
    receipt = dep.send(dep.consumer.functions.requestCompute(cid, b"hello infernet", 1))
    [delivery] = dep.wait_deliveries(dep.created_id(receipt), 1)
    # The echo container answers the chain's hex input; Infernet sends str() of the output.
    assert abi_decode(["string"], delivery["output"])[0] == b"hello infernet".hex()


def test_the_starter_config_logs_one_line_per_key_without_a_meaning_here(started):
    node, _, _ = started
    log = node.log()
    for key in ("redis", "forward_stats", "log_path", "docker", "chain.snapshot_sync.sleep"):
        assert log.count(f'event=config.infernet_key note="{key}:') == 1, key
    assert (node.workdir / "infernet_node.log").stat().st_size > 0  # log.path, Infernet's default
