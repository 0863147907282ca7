"""`node-daemon devnet` (`bash scripts/devnet.sh`): the chain side in one command.

Starts anvil from the project's own npm install, deploys every contract with the product's
deployer, writes `devnet.yaml` (the default config with the chain and the CRE workflow runtime
on, keys from anvil's public test mnemonic), makes the node's payment Wallet through the
WalletFactory (so the devnet node serves paid subscriptions out of the box), starts the node on it
and prints what to try next.
SIGINT/SIGTERM stop the node (which stops its containers), then anvil. anvil's chain is fresh
on every start, so the devnet's node state (devnet/node.db) is reset with it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from eth_account import Account
from web3 import Web3

from node.chain.codec import abi
from node.tools.deploy import GROUPS, Deployer, DeployError, Deployment, send
from node.tools.paywallet import PaymentWalletTool

REPO = Path(__file__).resolve().parents[2]
ANVIL = REPO / "contracts" / "node_modules" / ".bin" / "anvil"
MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default: public
ROLES = {"user": 0, "node": 1, "don": 2, "transmitter": 3, "backend_signer": 4}
USDC = 10**6
HEADER = """\
# TEST-ONLY: written by `node-daemon devnet` for a local anvil chain. Every private key below comes
# from anvil's public test mnemonic ("test test ... junk"): anyone can spend from these addresses
# on any chain. Never use them, or this file, outside a local devnet.
"""


def anvil_keys() -> dict[str, str]:
    Account.enable_unaudited_hdwallet_features()
    return {role: Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.to_0x_hex()
            for role, i in ROLES.items()}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Children get SIGTERM if the devnet process dies without cleaning up (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def devnet_config(base: dict[str, Any], keys: dict[str, str], dep: Deployment, rpc_url: str, port: int,
                  name_prefix: str, state_dir: str, api_key: str,
                  payment_address: str | None = None) -> dict[str, Any]:
    """The default config (`base`) with the chain and the CRE workflow runtime on."""
    config = dict(base)
    config["server"] = {**base.get("server", {}), "host": "127.0.0.1", "port": port}
    config["storage"] = {"path": f"{state_dir}/node.db"}
    config["docker"] = {**base.get("docker", {}), "name_prefix": name_prefix}
    config["containers"] = [
        {**c, "build": {**c["build"], "context": str(REPO / c["build"]["context"])}} if isinstance(c.get("build"), dict)
        else c for c in base.get("containers", [])]
    ids = {c["id"] for c in config["containers"]}
    config["chain"] = {
        "enabled": True, "rpc_url": rpc_url, "registry_address": dep.address("Registry"),
        "trail_head_blocks": 0, "poll_interval": 0.25,
        "processor_tick": 0.25, "retry_backoff": 0.5,
        "pipelines": [["upper", "echo"]] if {"upper", "echo"} <= ids else [],
        "wallet": {"private_key": keys["node"],
                   **({"payment_address": payment_address} if payment_address else {})}}
    config["cre"] = {**base.get("cre", {}), "runtime": {
        "rpc_url": rpc_url, "api_key": api_key, "don_key": keys["don"], "transmitter_key": keys["transmitter"],
        "backend_signer_key": keys["backend_signer"], "tee_master_key": secrets.token_hex(32),
        "forwarder_address": dep.address("ReportForwarder"), "sub0_address": dep.address("Sub0"),
        "vault_address": dep.address("PredictionVault"),
        "conditional_tokens_address": dep.address("ConditionalTokens"), "usdc_address": dep.address("MockUSDC")}}
    config["master_key_path"] = f"{state_dir}/node.key"
    return config


class Devnet:
    def __init__(self, workdir: Path, port: int, anvil_port: int, name_prefix: str, base_config: Path,
                 anvil: Path = ANVIL, block_time: float = 1.0, out=print) -> None:
        self.workdir = workdir.resolve()
        self.state = self.workdir / "devnet"
        self.config_path = self.workdir / "devnet.yaml"
        self.port, self.anvil_port, self.name_prefix = port, anvil_port, name_prefix
        self.base_config, self.anvil_bin, self.block_time = base_config, anvil, block_time
        self.out = out
        self.anvil: subprocess.Popen | None = None
        self.node: subprocess.Popen | None = None
        self._stop = False
        self.payment_address: str | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.anvil_port}"

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        with open(log, "ab") as sink:
            return subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
                                    preexec_fn=_die_with_parent)

    def start_anvil(self) -> Web3:
        if not self.anvil_bin.exists():
            raise DeployError(f"anvil not found at {self.anvil_bin}: run bash scripts/setup.sh first")
        if _port_in_use(self.port):
            raise DeployError(f"port {self.port} is already in use (a node running?): stop it or pass --port")
        if _port_in_use(self.anvil_port):
            raise DeployError(f"port {self.anvil_port} is already in use (another anvil?): stop it or pass "
                              "--anvil-port")
        self.anvil = self._spawn([str(self.anvil_bin), "--port", str(self.anvil_port), "--mnemonic", MNEMONIC,
                                  "--block-time", f"{self.block_time:g}"], self.state / "anvil.log")
        w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 5}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.anvil.poll() is not None:
                raise DeployError(f"anvil exited with {self.anvil.returncode}; see {self.state / 'anvil.log'}")
            try:
                _ = w3.eth.block_number  # the probe: raises until anvil is listening
                self.out(f"anvil: {self.rpc_url} (chain {w3.eth.chain_id}, pid {self.anvil.pid})")
                return w3
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        raise DeployError("anvil did not answer within 30s")

    def deploy(self, w3: Web3, keys: dict[str, str]) -> Deployment:
        addresses = self.state / "addresses.json"
        addresses.unlink(missing_ok=True)  # a fresh anvil: nothing recorded can still be there
        deployer = Deployer(w3, w3.eth.chain_id, keys["user"], out=lambda line: self.out(f"deploy: {line}"))
        dep = deployer.run(GROUPS["all"], addresses, self.rpc_url,
                           don=Account.from_key(keys["don"]).address, signer=Account.from_key(keys["user"]).address)
        usdc = w3.eth.contract(address=dep.address("MockUSDC"), abi=abi("MockUSDC"))
        user = Account.from_key(keys["user"])
        for role in ("user", "transmitter"):
            send(w3, user, usdc.functions.mint(Account.from_key(keys[role]).address, 100_000 * USDC), "mint USDC")
        self.out("deploy: minted 100000 test USDC to the user and the CRE transmitter")
        tool = PaymentWalletTool(w3, w3.eth.chain_id, keys["node"], dep.address("Registry"), out=lambda line: None)
        self.payment_address = tool.create(None)  # owned by the node's account
        self.out(f"deploy: the node's payment wallet {self.payment_address} (made by the WalletFactory)")
        return dep

    def write_config(self, keys: dict[str, str], dep: Deployment, api_key: str) -> None:
        base = yaml.safe_load(self.base_config.read_text()) or {}
        config = devnet_config(base, keys, dep, self.rpc_url, self.port, self.name_prefix, "devnet", api_key,
                               self.payment_address)
        text = yaml.safe_dump(config, sort_keys=False)
        text = re.sub(r"^(\s+(?:private_key|don_key|transmitter_key|backend_signer_key|tee_master_key|api_key): .*)$",
                      r"\1  # TEST-ONLY", text, flags=re.MULTILINE)
        self.config_path.write_text(HEADER + text)
        key_file = self.state / "user.key"
        key_file.write_text(keys["user"] + "\n")
        key_file.chmod(0o600)
        self.out(f"config: {self.config_path} (TEST-ONLY keys)")

    def start_node(self, timeout: float = 900) -> None:
        for suffix in ("", "-wal", "-shm"):
            (self.state / f"node.db{suffix}").unlink(missing_ok=True)
        self.node = self._spawn([sys.executable, "-m", "node", "run", "--config", str(self.config_path)],
                                self.state / "node.log")
        self.out(f"node: starting (pid {self.node.pid}, log {self.state / 'node.log'})")
        start = time.monotonic()
        next_note = start + 5
        while not self._stop:
            if self.node.poll() is not None:
                tail = (self.state / "node.log").read_text(errors="replace").splitlines()[-15:]
                raise DeployError(f"the node exited with {self.node.returncode}:\n" + "\n".join(tail))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            now = time.monotonic()
            if now - start > timeout:
                raise DeployError(f"the node did not become healthy within {timeout:g}s")
            if now >= next_note:
                self.out(f"node: waiting for its containers ({now - start:.0f}s; the first start builds images)")
                next_note = now + 5
            time.sleep(0.3)

    def print_ready(self, api_key: str) -> None:
        rel = self.state if self.workdir != Path.cwd() else Path("devnet")
        script = Path(sys.executable).parent / "node-daemon"
        cli = f"{sys.executable} -m node"
        if script.exists():
            cli = str(script) if os.path.relpath(script).startswith("..") else os.path.relpath(script)
        request = f"{cli} request --deployment {rel}/addresses.json --key {rel}/user.key"
        node = f"http://127.0.0.1:{self.port}"
        node_arg = "" if self.port == 4000 else f" --node {node}"  # 4000: request's default
        user = Account.from_key(anvil_keys()["user"]).address
        market = json.dumps({"action": "createMarket", "apiKey": api_key, "question": "Rain tomorrow?",
                             "oracle": user, "duration": 3600, "outcomeSlotCount": 2, "oracleType": 1,
                             "marketType": 0, "creatorAddress": user})
        assert self.node is not None and self.anvil is not None, "print_ready comes after start_anvil and start_node"
        self.out(f"""
devnet ready: node {node} (pid {self.node.pid}), anvil {self.rpc_url} (pid {self.anvil.pid})
  contracts: {rel}/addresses.json    config: {self.config_path}    node log: {rel}/node.log
  the node's payment wallet: {self.payment_address} (paid subscriptions: request --pay)

Try, in another terminal:
  {request} --containers upper,echo --input "hello devnet"
  {request} --containers echo --input tick --frequency 3 --period 2
  {request}{node_arg} --containers upper --input paid --pay 1000000000000000
  {request} --delegated{node_arg} --containers upper --input '{{"msg": "hi"}}'
  curl -s {node}/info
  curl -s {node}/api/cre/workflow -H 'content-type: application/json' -d '{market}'

Ctrl-C stops the node and anvil.""")

    def run(self) -> int:
        self.state.mkdir(parents=True, exist_ok=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            keys = anvil_keys()
            w3 = self.start_anvil()
            dep = self.deploy(w3, keys)
            api_key = "devnet-" + secrets.token_hex(16)
            self.write_config(keys, dep, api_key)
            self.start_node()
            if not self._stop:
                self.print_ready(api_key)
            assert self.node is not None and self.anvil is not None, "start_anvil and start_node set both"
            while not self._stop:
                for name, proc in (("node", self.node), ("anvil", self.anvil)):
                    if proc.poll() is not None:
                        raise DeployError(f"{name} exited with {proc.returncode}; see {self.state / (name + '.log')}")
                time.sleep(0.3)
            return 0
        except KeyboardInterrupt:
            return 0
        except DeployError as exc:
            self.out(f"devnet: {exc}")
            return 1
        finally:
            self.shutdown()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """The first signal interrupts whatever is running (the `finally` shuts down); later ones
        are ignored so that they cannot cut the shutdown short."""
        if not self._stop:
            self._stop = True
            raise KeyboardInterrupt

    def shutdown(self) -> None:
        """The node first (it stops its containers and may still be delivering), then anvil."""
        for name, proc, grace in (("node", self.node, 60), ("anvil", self.anvil, 10)):
            if proc is None or proc.poll() is not None:
                continue
            self.out(f"stopping {name} (pid {proc.pid})")
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.out("devnet stopped")
