"""Ritual's own `infernet-client` 1.4.0 (PyPI) drives a real node started from a config in the
exact form of Ritual's hello-world starter config (tests/daemon/test_infernet_node.py's form):
every public `NodeClient` call, and a delegated subscription signed by the client's `chain`
parts on anvil, answered as the client expects.

The client cannot live in the node's venv: it pins `web3<7` (the node uses web3 7) and requires
`infernet-ml`, which does not install here. So a session fixture makes a separate venv once,
cached in `build/infernet-client-venv/` (git-ignored; re-made only when its stamp is missing):
`pip install 'web3<7' aiohttp click quart`, then `pip install --no-deps infernet-client==1.4.0`.
Of infernet-ml the client imports only `infernet_ml.utils.spec.ServiceResources` (a type in a
`cast`); `tests/infernet_client_shim/` holds our own minimal stand-in for it, put on the
client's PYTHONPATH, and `drive.py`, the script that makes the calls in that venv and prints
what each returned or raised.
"""

from __future__ import annotations

import copy
import fcntl
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from eth_abi import decode as abi_decode
from eth_account import Account

from tests.chain_helpers import KEYS, Anvil, deploy
from tests.daemon.test_infernet_config import STARTER
from tests.daemon.test_infernet_node import IMAGE, InfernetNode, ensure_echo_image
from tests.helpers import REPO, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CLIENT = "infernet-client==1.4.0"
CLIENT_DEPS = ["web3<7", "aiohttp", "click", "quart"]
VENV = REPO / "build" / "infernet-client-venv"
SHIM = REPO / "tests" / "infernet_client_shim"
STAMP = VENV / f".installed-{CLIENT}"


@pytest.fixture(scope="session")
def client_python() -> str:
    """The client venv's python, made once and reused (a lock keeps parallel sessions from
    building it twice; a venv without its stamp is half-made and is built again)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / "infernet-client-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not STAMP.exists():
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
            for args in (CLIENT_DEPS, ["--no-deps", CLIENT]):
                done = subprocess.run([*pip, *args], capture_output=True, text=True, check=False)
                assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}"
            STAMP.touch()
    return str(VENV / "bin" / "python")


class ModelService(BaseHTTPRequestHandler):
    """A remote (`url`) container that serves `/service-resources` as an infernet-ml service
    does: its models, or with `?model_id=` whether it serves that one."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/service-resources":
            model = parse_qs(url.query).get("model_id")
            body = {"supported": model == ["llama"]} if model else {"models": ["llama"]}
        else:
            body = {"status": "healthy"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def models_url():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), ModelService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def chain():
    anvil = Anvil(block_time=1).start()
    yield anvil, deploy(anvil.url)
    anvil.stop()


@pytest.fixture(scope="module")
def started(docker_engine, chain, models_url, tmp_path_factory):
    """The starter-form config of test_infernet_node.py, plus a remote `models` container."""
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
    config["containers"].append({"id": "models", "url": models_url, "external": True})
    node = InfernetNode(tmp_path_factory.mktemp("infernet-client"), config).start()
    yield node, dep, cid
    node.stop()
    subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


@pytest.fixture(scope="module")
def driven(started, chain, client_python):
    """Every client call made once, in the client venv: {call name: {"ok": value} or
    {"raised": type, "status": …, "message": …}}."""
    node, dep, cid = started
    anvil, _ = chain
    spec = {"url": f"http://127.0.0.1:{node.port}", "container": cid, "rpc_url": anvil.url,
            "coordinator": dep.coordinator.address, "consumer": dep.consumer.address,
            "signer_key": dep.signer_key, "chain_now": dep.w3.eth.get_block("latest")["timestamp"],
            "recorded_id": str(uuid.uuid4()), "wallet_factory": dep.wallet_factory.address,
            "token": dep.token.address, "user_key": KEYS[2]}
    run = subprocess.run([client_python, str(SHIM / "drive.py"), json.dumps(spec)], capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(SHIM), "PATH": "/usr/bin:/bin"}, check=False)
    assert run.returncode == 0, run.stderr + node.log()[-4000:]
    (node.workdir / "driven.json").write_text(run.stdout)  # beside the node's log, for a failing run
    return json.loads(run.stdout)


def ok(results: dict, name: str):
    assert "ok" in results[name], f"{name}: {results[name]}"
    return results[name]["ok"]


def test_the_client_sees_the_node_healthy(driven):
    assert ok(driven, "health") is True


def test_the_clients_get_info_reads_the_containers_and_the_chain_address(driven, started):
    _, _, cid = started
    info = ok(driven, "get_info")
    assert [c["id"] for c in info["containers"]] == [cid, "models"]
    assert info["containers"][0]["image"] == IMAGE and info["containers"][0]["external"] is True
    assert info["chain"]["enabled"] is True and info["chain"]["address"] == Account.from_key(KEYS[1]).address
    assert isinstance(info["version"], str) and set(info["pending"]) >= {"offchain", "onchain"}


def test_the_clients_get_resources_maps_each_container_to_its_own_answer(driven, started):
    _, _, cid = started
    # The echo workload answers any GET with its health body; the node passes it on unchanged.
    assert ok(driven, "get_resources") == {cid: {"status": "ok"}, "models": {"models": ["llama"]}}


def test_the_clients_check_model_support_passes_the_model_id_to_each_container(driven, started):
    _, _, cid = started
    assert ok(driven, "check_model_support") == {cid: {"status": "ok"}, "models": {"supported": True}}


def test_the_clients_request_job_and_sync_wait_return_the_containers_output(driven, started):
    _, _, cid = started
    job_id = ok(driven, "request_job")
    result = ok(driven, "get_job_result_sync")
    assert result["id"] == job_id and result["status"] == "success"
    assert result["result"] == {"container": cid, "output": {"prompt": "hi"}}


def test_the_clients_batch_answers_ids_in_order_and_an_error_for_an_unknown_container(driven):
    batch = ok(driven, "request_jobs")
    assert [set(b) for b in batch] == [{"id"}, {"id"}, {"id"}, {"error", "params"}]
    assert batch[3] == {"error": "Container not supported", "params": {"containers": ["nope"]}}
    results = ok(driven, "get_job_results")
    assert [r["id"] for r in results] == [b["id"] for b in batch[:3]]
    assert [(r["status"], r["result"]["output"]) for r in results] == [("success", {"i": i}) for i in range(3)]


def test_the_clients_intermediate_results_of_a_chained_job_hold_the_first_containers_output(driven, started):
    _, _, cid = started
    [result] = ok(driven, "get_job_results_intermediate")
    assert result["id"] == ok(driven, "request_job_chained") and result["status"] == "success"
    assert result["result"] == {"container": cid, "output": {"twice": True}}
    # the client's JobResult names the key `intermediate`; Infernet 1.4 answers `intermediate_results`
    assert result["intermediate"] == result["intermediate_results"] == [{"container": cid, "output": {"twice": True}}]


def test_the_clients_record_status_sets_a_jobs_status_and_its_success_output(driven, started):
    _, _, cid = started
    assert ok(driven, "record_status_running") is None and ok(driven, "record_status_success") is None
    assert [r["status"] for r in ok(driven, "get_job_results_recorded_running")] == ["running"]
    [done] = ok(driven, "get_job_results_recorded_success")
    assert done["status"] == "success" and done["result"] == {"container": cid, "output": {"out": "of band"}}


def test_the_clients_get_jobs_lists_this_clients_jobs_and_filters_by_pending(driven):
    ids = {ok(driven, "request_job"), *(b["id"] for b in ok(driven, "request_jobs")[:3])}
    assert set(ok(driven, "get_jobs")) >= ids
    assert set(ok(driven, "get_jobs_done")) >= ids
    assert not ids & set(ok(driven, "get_jobs_pending"))


def test_the_clients_request_stream_yields_the_job_id_then_the_output(driven):
    streamed = ok(driven, "request_stream")
    assert streamed["job_id"] and json.loads(streamed["output"]) == {"say": "streamed"}


def test_the_client_raises_api_error_with_the_status_for_an_unknown_container(driven):
    error = driven["request_job_unknown_container"]
    assert error == {"raised": "APIError", "status": 400, "message": "Container not supported",
                     "params": {"containers": ["nope"]}}


def test_the_clients_sync_wait_on_an_unknown_job_id_returns_none(driven):
    assert ok(driven, "get_job_result_sync_unknown_id") is None


def delivered(dep, msg: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(msg in abi_decode(["string"], d["output"])[0] for d in dep.deliveries()):
            return True
        time.sleep(0.25)
    return False


def test_a_delegated_subscription_signed_by_the_client_is_delivered_on_chain(driven, started):
    _, dep, _ = started
    assert ok(driven, "request_delegated_subscription") is None  # the client returns nothing on success
    assert delivered(dep, "hello from infernet-client"), dep.deliveries()


# Before the fix, node/chain ran and delivered at once, before activeAt: the Coordinator reverted
# SubscriptionNotActive and the accepted subscription was lost. Infernet waits until it is active.
def test_a_delegated_subscription_active_a_few_seconds_later_is_delivered_once_active(driven, started):
    _, dep, _ = started
    assert ok(driven, "request_delegated_subscription_later") is None
    assert delivered(dep, "later from infernet-client", timeout=15), dep.deliveries()


def test_the_clients_wallet_factory_makes_a_payment_wallet_on_the_nodes_contracts(driven, started):
    _, dep, _ = started
    made = ok(driven, "payment_wallet")
    assert made["valid"] is True and made["owner"] == Account.from_key(KEYS[2]).address
    assert dep.wallet_factory.functions.isValidWallet(made["wallet"]).call() is True
    assert dep.wallet(made["wallet"]).functions.allowance(dep.consumer.address, dep.token.address).call() == 5
    assert made["token_balance"] == 0 and made["balance"] == 0
