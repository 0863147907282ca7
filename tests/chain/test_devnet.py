"""The chain tools as a user meets them: `scripts/devnet.sh` as a real process (anvil, contracts,
the node), `node-daemon request` against it, `node-daemon deploy` against anvil and a dead RPC."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from eth_utils import keccak
from web3 import Web3

from node.chain.codec import abi
from node.tools.deploy import CORE, Deployer, DeployError, load_key
from node.config import parse_config
from tests.chain_helpers import KEYS, Anvil
from tests.helpers import REPO, Http, free_port


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class DevnetProcess:
    """`bash scripts/devnet.sh` in a subprocess, its output collected line by line."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port, self.anvil_port = workdir, free_port(), free_port()
        self.prefix = f"dv{uuid.uuid4().hex[:6]}-"
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["bash", "scripts/devnet.sh", "--dir", str(workdir), "--port", str(self.port), "--anvil-port",
             str(self.anvil_port), "--name-prefix", self.prefix],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in the devnet's output:\n{self.output}")

    def request(self, *args: str) -> subprocess.CompletedProcess:
        state = self.workdir / "devnet"
        return cli("request", "--deployment", str(state / "addresses.json"), "--key", str(state / "user.key"), *args)


@pytest.fixture(scope="module")
def devnet(docker_engine, tmp_path_factory):
    net = DevnetProcess(tmp_path_factory.mktemp("devnet"))
    found = net.wait_for(r"devnet ready: node \S+ \(pid (\d+)\), anvil \S+ \(pid (\d+)\)", timeout=900)
    net.node_pid, net.anvil_pid = int(found.group(1)), int(found.group(2))
    yield net
    if net.proc.poll() is None:
        net.proc.send_signal(signal.SIGINT)
        net.proc.wait(120)
    subprocess.run(f"docker rm -f $(docker ps -aq --filter name=^{net.prefix}) 2>/dev/null", shell=True)


@pytest.mark.docker
@pytest.mark.slow
def test_a_subscription_made_with_request_on_the_devnet_is_delivered_and_printed(devnet):
    text = (devnet.workdir / "devnet.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["chain"]["enabled"] and config["cre"]["runtime"]["api_key"]
    for secret in ("private_key", "don_key", "transmitter_key", "backend_signer_key", "tee_master_key", "api_key"):
        assert re.search(rf"{secret}: \S+  # TEST-ONLY", text), secret
    assert cli("check-config", "--config", str(devnet.workdir / "devnet.yaml")).returncode == 0
    result = devnet.request("--containers", "upper,echo", "--input", "hello devnet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"subscription \d+ created", result.stdout)
    assert "delivery 1/1" in result.stdout
    # the containers see on-chain inputs as hex; `upper` upper-cased those hex digits
    assert "output: \"68656C6C6F206465766E6574\" (hex of text: 'hello devnet')" in result.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_a_recurring_subscription_made_with_request_prints_every_interval(devnet):
    result = devnet.request("--containers", "echo", "--input", "tick", "--frequency", "3", "--period", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = re.findall(r"interval (\d+) by node .*\noutput: .*\(hex of text: '(.*)'\)", result.stdout)
    assert outputs == [("1", "tick:1"), ("2", "tick:2"), ("3", "tick:3")]
    assert "waiting for deliveries of subscription" in result.stderr  # the progress line while it waits


@pytest.mark.docker
@pytest.mark.slow
def test_a_delegated_subscription_sent_by_request_is_delivered_once(devnet):
    args = ("--delegated", "--node", f"http://127.0.0.1:{devnet.port}", "--containers", "upper",
            "--input", '{"msg": "delegated"}', "--nonce", "4242")
    first = devnet.request(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'output: {"msg": "DELEGATED"}' in first.stdout
    sub_id = int(re.search(r"subscription (\d+) is on chain", first.stdout).group(1))
    again = devnet.request(*args)  # the same signed subscription sent again (a client retry)
    assert again.returncode == 0 and f"subscription {sub_id} is on chain" in again.stdout
    time.sleep(3)  # the node has run the containers again and tried to deliver by now
    w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{devnet.anvil_port}"))
    consumer = w3.eth.contract(address=yaml.safe_load((devnet.workdir / "devnet" / "addresses.json").read_text())
                               ["contracts"]["ExampleConsumer"]["address"], abi=abi("ExampleConsumer"))
    assert consumer.functions.deliveryCount(sub_id).call() == 1


@pytest.mark.docker
@pytest.mark.slow
def test_a_paid_request_on_the_devnet_pays_the_nodes_payment_wallet_less_the_protocol_fee(devnet):
    wallet = devnet.wait_for(r"the node's payment wallet: (0x[0-9a-fA-F]{40})", timeout=5).group(1)
    assert yaml.safe_load((devnet.workdir / "devnet.yaml").read_text())["chain"]["wallet"]["payment_address"] == wallet
    amount = 10**15  # wei
    result = devnet.request("--node", f"http://127.0.0.1:{devnet.port}", "--containers", "upper",
                            "--input", "paid", "--pay", str(amount))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(rf"consumer wallet 0x[0-9a-fA-F]{{40}} .*: {amount} wei sent", result.stdout), result.stdout
    assert "delivery 1/1" in result.stdout and "(hex of text: 'paid')" in result.stdout
    received = amount - amount * 2 * 500 // 10_000  # the protocol fee (5%) is charged on both sides
    assert f"the node's payment wallet {wallet} received {received} wei" in result.stdout, result.stdout
    refused = devnet.request("--delegated", "--containers", "upper", "--pay", "1")
    assert refused.returncode != 0 and "--pay does not work with --delegated" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_the_devnet_cre_runtime_answers_with_its_api_key(devnet):
    config = yaml.safe_load((devnet.workdir / "devnet.yaml").read_text())
    user = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    market = {"action": "createMarket", "question": "Rain?", "oracle": user, "duration": 3600,
              "outcomeSlotCount": 2, "oracleType": 1, "marketType": 0, "creatorAddress": user}
    http = Http(devnet.port)
    refused = http.post("/api/cre/workflow", {**market, "apiKey": "wrong"})
    assert refused.status in (401, 403), refused.body
    created = http.post("/api/cre/workflow", {**market, "apiKey": config["cre"]["runtime"]["api_key"]})
    assert created.status == 200 and created.json["questionId"].startswith("0x"), created.body


@pytest.mark.docker
@pytest.mark.slow
def test_ctrl_c_stops_the_devnet_node_and_anvil(devnet):
    assert alive(devnet.node_pid) and alive(devnet.anvil_pid)
    devnet.proc.send_signal(signal.SIGINT)
    assert devnet.proc.wait(120) == 0, devnet.output
    assert "devnet stopped" in devnet.output
    assert not alive(devnet.node_pid) and not alive(devnet.anvil_pid)
    leftover = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{devnet.prefix}"],
                              capture_output=True, text=True).stdout.split()
    assert leftover == []


@pytest.fixture
def anvil():
    chain = Anvil(block_time=None).start()
    yield chain
    chain.stop()


@pytest.mark.docker
@pytest.mark.slow
def test_deploy_twice_reuses_every_contract(anvil, tmp_path):
    out, env = tmp_path / "chain.json", {"DEPLOYER_KEY": KEYS[0]}
    first = cli("deploy", "--rpc", anvil.url, "--key", "DEPLOYER_KEY", "--what", "all", "--out", str(out), env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("deployed at") == 15
    addresses = yaml.safe_load(out.read_text())["contracts"]
    block = Web3(Web3.HTTPProvider(anvil.url)).eth.block_number
    second = cli("deploy", "--rpc", anvil.url, "--key", "DEPLOYER_KEY", "--what", "all", "--out", str(out), env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("(code verified)") == 15 and "sent" not in second.stdout
    assert yaml.safe_load(out.read_text())["contracts"] == addresses
    assert Web3(Web3.HTTPProvider(anvil.url)).eth.block_number == block  # not one transaction
    # the snippet is a valid config once its secrets are in the environment
    snippet = yaml.safe_load(out.with_suffix(".yaml").read_text())
    config = parse_config(snippet, env={"NODE_PRIVATE_KEY": KEYS[1], "CRE_RUNTIME_API_KEY": "k",
                                        "CRE_DON_KEY": KEYS[2]})
    assert config.chain.registry_address == addresses["Registry"]["address"]
    assert config.chain.coordinator_address is None  # the node reads it from the Registry
    assert config.cre.runtime.vault_address == addresses["PredictionVault"]["address"]
    assert config.cre.wasm.forwarders["anvil-devnet"] == addresses["CreForwarder"]["address"]


@pytest.mark.docker
@pytest.mark.slow
def test_deploy_shows_progress_while_a_receipt_is_pending_and_verifies_the_code(tmp_path):
    chain = Anvil(block_time=2).start()  # a receipt takes up to 2 s: a "real" chain
    try:
        w3 = Web3(Web3.HTTPProvider(chain.url))
        lines: list[str] = []
        dep = Deployer(w3, w3.eth.chain_id, KEYS[0], out=lines.append, poll=0.1, note_every=0.5).run(
            ["Reader"], tmp_path / "d.json", chain.url)  # the Reader is part of the core set: all six deployed
        assert set(dep.contracts) == set(CORE)
        assert any("Registry: waiting for the receipt" in line for line in lines), lines
        for name in CORE:
            code = bytes(w3.eth.get_code(dep.address(name)))
            assert code and "0x" + keccak(code).hex() == dep.contracts[name]["code_hash"]
        reader = w3.eth.contract(address=dep.address("Reader"), abi=abi("Reader"))
        assert len(reader.functions.readSubscriptionBatch(1, 2).call()) == 1  # reads through the Coordinator
    finally:
        chain.stop()


@pytest.mark.docker
@pytest.mark.slow
def test_deploy_on_a_fresh_chain_redeploys_what_is_gone(anvil, tmp_path):
    out, env = tmp_path / "chain.json", {"DEPLOYER_KEY": KEYS[0]}
    assert cli("deploy", "--rpc", anvil.url, "--key", "DEPLOYER_KEY", "--out", str(out), env=env).returncode == 0
    fresh = Anvil(block_time=None).start()  # same chain id, none of the contracts
    try:
        again = cli("deploy", "--rpc", fresh.url, "--key", "DEPLOYER_KEY", "--out", str(out), env=env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("no code at that address") == 7 and again.stdout.count("deployed at") == 7
        coordinator = yaml.safe_load(out.read_text())["contracts"]["Coordinator"]["address"]
        assert Web3(Web3.HTTPProvider(fresh.url)).eth.get_code(coordinator)
    finally:
        fresh.stop()


def test_deploy_to_an_rpc_that_is_down_fails_fast_with_a_clear_message(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    result = cli("deploy", "--rpc", url, "--key", "DEPLOYER_KEY", "--out", str(tmp_path / "x.json"),
                 env={"DEPLOYER_KEY": KEYS[0]})
    assert time.monotonic() - start < 15
    assert result.returncode == 1
    assert f"cannot reach the RPC at {url}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_a_private_key_given_on_the_command_line_is_refused(tmp_path):
    with pytest.raises(DeployError, match="not the key itself"):
        load_key(KEYS[0], env={})
    key_file = tmp_path / "k"
    key_file.write_text(KEYS[0] + "\n")
    assert load_key(str(key_file), env={}) == "0x" + KEYS[0].removeprefix("0x")
    with pytest.raises(DeployError, match="no environment variable or file"):
        load_key("NOPE_NOT_SET", env={})
