"""`node-daemon deploy`: our contracts on any EVM chain, idempotently.

Before this, only test helpers deployed the Coordinator, Reader, consumer and CRE market
contracts, so an operator had no path to a real chain. This module is that path, and the tests
use it too (one copy of the deploy logic). It is a one-shot command line tool, so it uses
web3's blocking API; the daemon itself never imports it.

The addresses file records, per contract, its address, constructor arguments, a hash of the
artifact's creation code and a hash of the code on chain. A second run on the same chain reuses
every contract whose code is still there unchanged and whose arguments and artifact are the
same, and deploys only the rest (so a run cut short resumes where it stopped).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import rlp
import yaml
from eth_account import Account
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound

from node.chain.codec import abi, bytecode

# Constructor arguments: another contract of the plan by name, or "@don" / "@signer" / "@deployer" /
# "@fee". The Registry's arguments are the addresses of the other five core contracts.
PLAN: dict[str, tuple[str, ...]] = {
    "Registry": ("Coordinator", "Inbox", "Reader", "Fee", "WalletFactory"),
    "Coordinator": ("Registry",),
    "Inbox": ("Registry",),
    "Reader": ("Registry",),
    "Fee": ("@deployer", "@fee"),
    "WalletFactory": ("Registry",),
    "ExampleConsumer": ("Registry", "@signer"),
    "MockToken": (),
    "MockVerifier": ("Registry",),
    "MockUSDC": (),
    "ConditionalTokens": (),
    "ReportForwarder": ("@don",),
    "Sub0": ("ReportForwarder", "ConditionalTokens"),
    "PredictionVault": ("ReportForwarder", "@don", "ConditionalTokens", "Sub0", "MockUSDC"),
    "CreForwarder": ("@don",),  # CRE workflows' WriteReport (node/cre/wasm/reports.py): signer = the DON key
}
# The Infernet SDK's core set, deployed (and reused) as one unit: the Registry first, holding the
# addresses the deployer's next five CREATEs will have, then the others in exactly this order.
CORE = ("Registry", "Coordinator", "Inbox", "Reader", "Fee", "WalletFactory")
DEFAULT_FEE_BPS = 500
GROUPS = {
    "infernet": [*CORE, "ExampleConsumer"],
    "mocks": ["MockToken", "MockVerifier"],
    "cre": ["MockUSDC", "ConditionalTokens", "ReportForwarder", "Sub0", "PredictionVault", "CreForwarder"],
}
CRE_MARKETS = ("MockUSDC", "ConditionalTokens", "ReportForwarder", "Sub0", "PredictionVault")
# chain id -> the chain's name in cre.wasm.chains (node/cre/wasm/capabilities.py CHAIN_SELECTORS)
CRE_CHAIN_NAMES = {31337: "anvil-devnet", 1: "ethereum-mainnet", 11155111: "ethereum-testnet-sepolia"}
GROUPS["all"] = GROUPS["infernet"] + GROUPS["mocks"] + GROUPS["cre"]
_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


class DeployError(Exception):
    """A deployment that cannot go on; the message says what to do."""


def load_key(spec: str, env: Mapping[str, str] | None = None) -> str:
    """A private key from the environment variable named `spec`, or from the file at `spec`.
    A key given literally is refused: it would show in the process list and shell history."""
    env = os.environ if env is None else env
    if spec in env:
        value, where = env[spec].strip(), f"environment variable {spec}"
    elif Path(spec).is_file():
        value, where = Path(spec).read_text().strip(), f"file {spec}"
    elif _KEY.fullmatch(spec):
        raise DeployError("give the name of an environment variable or a key file, not the key itself "
                          "(a key on the command line shows in the process list and shell history)")
    else:
        raise DeployError(f"{spec}: no environment variable or file of that name holds a key")
    if not _KEY.fullmatch(value):
        raise DeployError(f"{where} does not hold a 32-byte hex private key")
    return "0x" + value.removeprefix("0x")


def send(w3: Web3, account: Any, call: Any, label: str, *, value: int = 0, timeout: float = 300.0,
         out: Callable[[str], None] | None = None) -> Any:
    """Sign and send, from `account`, a contract call (a bound function) or a plain transfer
    (`call` is then the recipient's address and `value` the wei), wait for the receipt and
    return it; a revert is a DeployError naming `label`. The one-shot tools' only send path."""
    fields = {"from": account.address, "chainId": w3.eth.chain_id, "value": value,
              "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    if isinstance(call, str):
        tx = {**fields, "to": call, "gas": 100_000, "gasPrice": w3.eth.gas_price}
    else:
        tx = call.build_transaction(fields)
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    if out is not None:
        out(f"{label}: sent {tx_hash.to_0x_hex()}")
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise DeployError(f"{label}: transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


def connect(rpc_url: str, timeout: float = 10.0) -> tuple[Web3, int]:
    """A Web3 on `rpc_url` and its chain id; an RPC that is down fails at once, clearly."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    try:
        return w3, w3.eth.chain_id
    except requests.exceptions.ConnectionError:
        raise DeployError(f"cannot reach the RPC at {rpc_url}: connection refused or host unreachable "
                          "(is the node/anvil running, is the URL right?)") from None
    except requests.exceptions.Timeout:
        raise DeployError(f"the RPC at {rpc_url} did not answer within {timeout:g}s") from None
    except Exception as exc:  # noqa: BLE001 - any other failure of the first call: not a usable RPC
        raise DeployError(f"the RPC at {rpc_url} did not answer eth_chainId: {exc}") from None


def _hash(data: bytes) -> str:
    return "0x" + keccak(data).hex()


def _create_address(sender: str, nonce: int) -> str:
    """The address of the contract `sender` creates with transaction nonce `nonce`."""
    return to_checksum_address(keccak(rlp.encode([bytes.fromhex(sender[2:]), nonce]))[12:])


class Artifacts:
    """Each contract's ABI and creation code: ours (node/chain/abi), or, for the names found
    there, `<Name>.json` files in another directory (built elsewhere, e.g. by Foundry: a
    `bytecode` given as a string or as {"object": ...}; the Coordinator may be EIP712Coordinator.json)."""

    ALIASES = {"Coordinator": ("Coordinator", "EIP712Coordinator")}

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory

    def _external(self, name: str) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        for candidate in self.ALIASES.get(name, (name,)):
            file = self.directory / f"{candidate}.json"
            if file.is_file():
                try:
                    data = json.loads(file.read_text())
                    code = data["bytecode"]
                    code = code["object"] if isinstance(code, dict) else code
                    bytes.fromhex(code.removeprefix("0x"))
                    if not isinstance(data["abi"], list) or not code.removeprefix("0x"):
                        raise ValueError("no abi list or empty bytecode")
                    return {"abi": data["abi"], "bytecode": "0x" + code.removeprefix("0x")}
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise DeployError(f"{file}: not a readable artifact with abi and bytecode ({exc!r})") from None
        return None

    def abi(self, name: str) -> list[dict[str, Any]]:
        ext = self._external(name)
        return abi(name) if ext is None else ext["abi"]

    def bytecode(self, name: str) -> str:
        ext = self._external(name)
        return bytecode(name) if ext is None else ext["bytecode"]

    def hash(self, name: str) -> str:
        return _hash(bytes.fromhex(self.bytecode(name).removeprefix("0x")))


@dataclass
class Deployment:
    """What the addresses file holds."""

    chain_id: int
    rpc_url: str
    deployer: str
    contracts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def address(self, name: str) -> ChecksumAddress:
        return to_checksum_address(self.contracts[name]["address"])

    def to_json(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "rpc_url": self.rpc_url, "deployer": self.deployer,
                "contracts": self.contracts}

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            data = json.loads(path.read_text())
            return cls(int(data["chain_id"]), data["rpc_url"], data["deployer"], dict(data["contracts"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DeployError(f"{path}: not a readable addresses file ({exc})") from None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)


class Deployer:
    """Deploys the contracts of a plan one after another, reusing what an addresses file has."""

    def __init__(self, w3: Web3, chain_id: int, key: str, out: Callable[[str], None] = print,
                 receipt_timeout: float = 300.0, poll: float = 0.5, note_every: float = 5.0,
                 artifacts: Path | None = None) -> None:
        self.w3, self.chain_id = w3, chain_id
        self.account = Account.from_key(key)
        self.out = out
        self.receipt_timeout, self.poll, self.note_every = receipt_timeout, poll, note_every
        self.artifacts = Artifacts(artifacts)

    def run(self, names: list[str], path: Path | None, rpc_url: str, don: str | None = None,
            signer: str | None = None, fee_bps: int = DEFAULT_FEE_BPS) -> Deployment:
        if not 0 <= fee_bps <= 5000:
            raise DeployError(f"the protocol fee is {fee_bps} basis points: give 0..5000 (it is charged twice)")
        specials: dict[str, Any] = {
            "@don": to_checksum_address(don or self.account.address),
            "@signer": to_checksum_address(signer or self.account.address),
            "@deployer": self.account.address, "@fee": fee_bps}
        if path is not None and path.exists():
            dep = Deployment.load(path)
            if dep.chain_id != self.chain_id:
                raise DeployError(f"{path} records chain {dep.chain_id}, but {rpc_url} is chain {self.chain_id}: "
                                  "give another --out for this chain")
            dep.rpc_url = rpc_url
        else:
            dep = Deployment(self.chain_id, rpc_url, self.account.address)
        todo = [n for n in PLAN if n in _closure(names)]
        for name in todo:  # every artifact readable before the first transaction
            self.artifacts.hash(name)
        self.out(f"chain {self.chain_id} at {rpc_url}; deployer {self.account.address}")
        for name in todo:
            if name in CORE:
                if name == CORE[0]:
                    self._core(dep, path, specials)
                continue
            args = [specials[a] if a.startswith("@") else dep.address(a) for a in PLAN[name]]
            reason = self._reusable(dep.contracts.get(name), args, name)
            if reason is None:
                self.out(f"{name}: reusing {dep.address(name)} (code verified)")
                continue
            if name in dep.contracts:
                self.out(f"{name}: not reusing {dep.address(name)}: {reason}")
            dep.contracts[name] = self._deploy(name, args)
            if path is not None:
                dep.save(path)
        return dep

    def _core(self, dep: Deployment, path: Path | None, specials: dict[str, Any]) -> None:
        """The six core contracts: all reused if all still match, otherwise all deployed again,
        the Registry first with the addresses of the next five (from the deployer's nonce)."""
        def args_for(name: str, addresses: dict[str, str]) -> list[Any]:
            return [specials[a] if a.startswith("@") else addresses[a] for a in PLAN[name]]

        recorded = {n: dep.contracts[n]["address"] for n in CORE if n in dep.contracts}
        reasons = {n: "not deployed" for n in CORE if n not in recorded}
        if not reasons:  # only a complete set can be checked (the Registry's arguments are all five)
            for name in CORE:
                reason = self._reusable(dep.contracts[name], args_for(name, recorded), name)
                if reason is not None:
                    reasons[name] = reason
        if not reasons:
            for name in CORE:
                self.out(f"{name}: reusing {recorded[name]} (code verified)")
            return
        for name, reason in reasons.items():
            if name in recorded:
                self.out(f"{name}: not reusing {recorded[name]}: {reason}; deploying the core set again")
        nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
        planned = {name: _create_address(self.account.address, nonce + i) for i, name in enumerate(CORE)}
        for name in CORE:
            dep.contracts.pop(name, None)
        for i, name in enumerate(CORE):
            entry = self._deploy(name, args_for(name, planned), nonce=nonce + i)
            if entry["address"] != planned[name]:
                raise DeployError(f"{name}: deployed at {entry['address']}, not at {planned[name]} as the Registry "
                                  "records (did another transaction of the deployer interleave?): run again")
            dep.contracts[name] = entry
            if path is not None:
                dep.save(path)

    def _reusable(self, entry: dict[str, Any] | None, args: list[Any], name: str) -> str | None:
        """None if the recorded contract can be used as is, else why not."""
        if entry is None:
            return "not deployed"
        if entry.get("args") != args:
            return "its constructor arguments differ (a contract it depends on was redeployed?)"
        if entry.get("artifact_hash") != self.artifacts.hash(name):
            return "the compiled contract changed since"
        code = bytes(self.w3.eth.get_code(to_checksum_address(entry["address"])))
        if not code:
            return "no code at that address (a fresh chain?)"
        if _hash(code) != entry.get("code_hash"):
            return "the code at that address differs"
        return None

    def _deploy(self, name: str, args: list[Any], nonce: int | None = None) -> dict[str, Any]:
        if self.w3.eth.get_balance(self.account.address) == 0:
            raise DeployError(f"the deployer {self.account.address} has no funds on chain {self.chain_id}")
        contract = self.w3.eth.contract(abi=self.artifacts.abi(name), bytecode=self.artifacts.bytecode(name))
        if nonce is None:
            nonce = self.w3.eth.get_transaction_count(self.account.address, "pending")
        tx = contract.constructor(*args).build_transaction({
            "from": self.account.address, "chainId": self.chain_id, "nonce": nonce})
        tx_hash = self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
        self.out(f"{name}: sent {tx_hash.to_0x_hex()}")
        receipt = self._wait(name, tx_hash)
        if receipt["status"] != 1 or not receipt.get("contractAddress"):
            raise DeployError(f"{name}: the deployment transaction {tx_hash.to_0x_hex()} reverted")
        address = receipt["contractAddress"]
        code = bytes(self.w3.eth.get_code(address))
        if not code:
            raise DeployError(f"{name}: no code at {address} after a successful receipt")
        self.out(f"{name}: deployed at {address} (block {receipt['blockNumber']}, {len(code)} bytes of code, "
                 f"gas {receipt['gasUsed']})")
        return {"address": address, "args": args, "tx": tx_hash.to_0x_hex(), "block": receipt["blockNumber"],
                "artifact_hash": self.artifacts.hash(name), "code_hash": _hash(code)}

    def _wait(self, name: str, tx_hash: HexBytes) -> Any:
        start = time.monotonic()
        next_note = start + self.note_every
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            now = time.monotonic()
            if now - start > self.receipt_timeout:
                raise DeployError(f"{name}: no receipt for {tx_hash.to_0x_hex()} after {self.receipt_timeout:g}s "
                                  "(gas price too low? run again to resume)")
            if now >= next_note:
                self.out(f"{name}: waiting for the receipt ({now - start:.0f}s)")
                next_note = now + self.note_every
            time.sleep(self.poll)


def _closure(names: list[str]) -> set[str]:
    """The named contracts and every contract they need."""
    out: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in out:
            out.add(name)
            stack.extend(a for a in PLAN[name] if not a.startswith("@"))
            if name in CORE:
                stack.extend(CORE)
    return out


def config_snippet(dep: Deployment) -> str:
    """The `chain:` / `cre.runtime:` config for a deployment; secrets stay ${VARIABLES}."""
    c = dep.contracts
    data: dict[str, Any] = {}
    if "Registry" in c:
        data["chain"] = {"enabled": True, "rpc_url": dep.rpc_url, "registry_address": c["Registry"]["address"],
                         "wallet": {"private_key": "${NODE_PRIVATE_KEY}"}}
    if all(n in c for n in CRE_MARKETS):
        data.setdefault("cre", {})["runtime"] = {
            "rpc_url": dep.rpc_url, "api_key": "${CRE_RUNTIME_API_KEY}", "don_key": "${CRE_DON_KEY}",
            "forwarder_address": c["ReportForwarder"]["address"], "sub0_address": c["Sub0"]["address"],
            "vault_address": c["PredictionVault"]["address"],
            "conditional_tokens_address": c["ConditionalTokens"]["address"],
            "usdc_address": c["MockUSDC"]["address"]}
    head = f"# Contracts on chain {dep.chain_id}, deployed by node-daemon deploy. Merge into your config.\n"
    if "CreForwarder" in c:
        chain = CRE_CHAIN_NAMES.get(dep.chain_id, "CHAIN_SELECTOR")
        data.setdefault("cre", {})["wasm"] = {
            "chains": {chain: dep.rpc_url}, "forwarders": {chain: c["CreForwarder"]["address"]},
            "don_key": "${CRE_DON_KEY}"}
        head += (f"# CreForwarder (CRE workflows' WriteReport) accepts reports signed by {c['CreForwarder']['args'][0]}:"
                 " cre.wasm.don_key must be that address's key\n")
        if chain == "CHAIN_SELECTOR":
            head += (f"# chain {dep.chain_id} has no known CRE name here: replace CHAIN_SELECTOR with the chain selector "
                     "your workflows' EVMClient uses\n")
    if "ExampleConsumer" in c:
        head += f"# ExampleConsumer (for node-daemon request): {c['ExampleConsumer']['address']}\n"
    if "WalletFactory" in c:
        head += f"# WalletFactory (createWallet for the node's payment wallet): {c['WalletFactory']['address']}\n"
    return head + yaml.safe_dump(data, sort_keys=False)


def deploy_main(rpc_url: str, key_spec: str, what: str, out_path: Path, don: str | None = None,
                signer: str | None = None, receipt_timeout: float = 300.0,
                out: Callable[[str], None] = print, fee_bps: int = DEFAULT_FEE_BPS,
                artifacts: Path | None = None) -> Deployment:
    """The `deploy` command: deploy, save the addresses and the config snippet next to them."""
    key = load_key(key_spec)
    w3, chain_id = connect(rpc_url)
    dep = Deployer(w3, chain_id, key, out, receipt_timeout, artifacts=artifacts).run(
        GROUPS[what], out_path, rpc_url, don, signer, fee_bps)
    dep.save(out_path)
    snippet_path = out_path.with_suffix(".yaml")
    snippet_path.write_text(config_snippet(dep))
    out(f"addresses: {out_path}")
    out(f"config snippet: {snippet_path}")
    if "CreForwarder" in dep.contracts:  # the part a CRE workflow developer needs for WriteReport
        wasm = yaml.safe_load(config_snippet(dep))["cre"]["wasm"]
        out("for CRE workflows' WriteReport, in config.yaml:")
        for line in yaml.safe_dump({"cre": {"wasm": wasm}}, sort_keys=False).splitlines():
            out("  " + line)
    return dep
