"""Ritual Infernet node 1.4.0's config.json, read unmodified (node/infernet_config.py): every key
with Infernet's meaning and default, the keys that mean nothing here named, bad values named by
field. In-process; the real node on such a file is in test_infernet_node.py."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from web3.exceptions import ContractLogicError

from node.chain.wallet import Wallet
from node.cli import default_config_path
from node.config import ConfigError, read_config
from node.infernet_config import assign_ports, parse_infernet
from tests.helpers import REPO

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

# The form of Ritual's hello-world starter config (infernet-container-starter,
# projects/hello-world/container/config.json): same keys, same value types.
STARTER: dict[str, Any] = {
    "log_path": "infernet_node.log",
    "server": {"port": 4000, "rate_limit": {"num_requests": 100, "period": 100}},
    "chain": {
        "enabled": True,
        "trail_head_blocks": 0,
        "rpc_url": "http://host.docker.internal:8545",
        "registry_address": "0x663F3ad617193148711d28f5334eE4Ed07016602",
        "wallet": {"max_gas_limit": 4000000, "private_key": KEY, "allowed_sim_errors": []},
        "snapshot_sync": {"sleep": 1.5, "batch_size": 50, "starting_sub_id": 0, "sync_period": 1},
    },
    "startup_wait": 1.0,
    "docker": {"username": "your-username", "password": ""},
    "redis": {"host": "redis", "port": 6379},
    "forward_stats": True,
    "containers": [{
        "id": "hello-world", "image": "ritualnetwork/hello-world-infernet:latest", "external": True,
        "port": "3000", "allowed_delegate_addresses": [], "allowed_addresses": [], "allowed_ips": [],
        "command": "--bind=0.0.0.0:3000 --workers=2", "env": {}, "volumes": [], "accepted_payments": {},
        "generates_proofs": False,
    }],
}


def write(tmp_path: Path, data: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def test_the_hello_world_starter_config_loads_with_infernets_meanings(tmp_path):
    loaded = read_config(write(tmp_path, STARTER), env={})
    config = loaded.config
    assert loaded.form == "infernet"
    [c] = config.containers
    assert c.id == "hello-world" and c.port == 3000 and c.external
    assert c.command == ["--bind=0.0.0.0:3000", "--workers=2"]
    assert config.server.host == "0.0.0.0" and config.server.port == 4000
    assert (config.server.rate_limit.num_requests, config.server.rate_limit.period) == (100, 100)
    assert config.startup_wait == 1.0 and config.manage_containers
    assert config.chain.enabled and config.chain.trail_head_blocks == 0
    assert config.chain.wallet.max_gas_limit == 4000000
    assert config.chain.wallet.private_key.get_secret_value() == KEY
    assert config.chain.reader_batch == 50 and config.chain.poll_interval == 1.0
    assert config.chain.output_encoding == "infernet"  # consumers written for Infernet decode str()
    assert config.log.path == str(tmp_path / "infernet_node.log")


def test_each_key_without_a_meaning_here_gets_one_note_saying_what_the_node_does_instead(tmp_path):
    notes = read_config(write(tmp_path, STARTER), env={}).notes
    for key in ("redis", "forward_stats", "log_path", "docker", "chain.snapshot_sync.sleep"):
        assert sum(n.startswith(f"{key}:") for n in notes) == 1, (key, notes)
    assert any("SQLite" in n for n in notes if n.startswith("redis:"))


def test_unknown_keys_are_accepted_and_each_is_named_in_a_note(tmp_path):
    data = copy.deepcopy(STARTER)
    data["colour"] = "blue"
    data["containers"][0]["gpus"] = 2
    data["chain"]["wallet"]["nonce_manager"] = True
    notes = read_config(write(tmp_path, data), env={}).notes
    for key in ("colour", "containers.0.gpus", "chain.wallet.nonce_manager"):
        assert any(n.startswith(f"{key}: not a key of Infernet") for n in notes), (key, notes)


def test_infernets_defaults_apply_to_a_minimal_config(tmp_path):
    config = read_config(write(tmp_path, {"containers": [{"id": "a", "image": "x"}]}), env={}).config
    assert config.containers[0].port == 3000  # Infernet's default host port
    assert (config.server.rate_limit.num_requests, config.server.rate_limit.period) == (60, 60)
    assert config.server.port == 4000 and config.startup_wait == 5.0
    assert config.log.path == str(tmp_path / "infernet_node.log")
    assert (config.log.max_file_size, config.log.backup_count) == (2**30, 2)
    assert config.chain.enabled is False and config.containers[0].external is True


def test_duplicate_host_ports_are_reassigned_counting_down_from_3999_as_infernet_does():
    config = parse_infernet({"containers": [{"id": "a", "port": 3000}, {"id": "b", "port": "3000"},
                                            {"id": "c"}, {"id": "d", "port": 3999}, {"id": "e", "port": 4100}]})
    assert assign_ports(config.containers) == {"a": 3000, "b": 3999, "c": 3998, "d": 3997, "e": 4100}


def test_command_is_split_as_docker_py_splits_a_string(tmp_path):
    data = {"containers": [{"id": "a", "image": "x", "command": "python -c 'print(\"a b\")' --flag=\"x y\""},
                           {"id": "b", "image": "x", "command": ""}]}
    a, b = read_config(write(tmp_path, data), env={}).config.containers
    assert a.command == ["python", "-c", 'print("a b")', "--flag=x y"]
    assert b.command is None


def test_every_container_key_carries_over(tmp_path):
    token = "0x" + "ab" * 20
    data = {"manage_containers": False, "containers": [{
        "id": "svc", "url": "http://127.0.0.1:9999", "bearer": "s3cret", "external": False, "gpu": True,
        "accepted_payments": {token: "5"}, "allowed_ips": ["10.0.0.0/8"], "allowed_addresses": ["0x" + token[2:].upper()],
        "allowed_delegate_addresses": [token], "description": "d", "env": {"N": 1, "FLAG": True},
        "volumes": ["/a:/b"], "generates_proofs": True}, {"id": "local", "port": 5000}]}
    svc, local = read_config(write(tmp_path, data), env={}).config.containers
    assert svc.url == "http://127.0.0.1:9999" and svc.bearer.get_secret_value() == "s3cret"
    assert svc.external is False and svc.gpu and svc.generates_proofs and svc.description == "d"
    assert svc.accepted_payments == {token: 5} and svc.allowed_ips == ["10.0.0.0/8"]
    assert svc.allowed_addresses == [token] and svc.allowed_delegate_addresses == [token]
    assert svc.env == {"N": "1", "FLAG": "True"} and svc.volumes == ["/a:/b"]
    assert local.port == 5000 and local.url is None


def test_docker_credentials_with_a_password_are_used_for_pulls(tmp_path):
    data = {"docker": {"username": "me", "password": "pw"}, "containers": []}
    creds = read_config(write(tmp_path, data), env={}).config.docker.credentials
    assert creds.username == "me" and creds.password.get_secret_value() == "pw"


def test_wallet_keys_and_snapshot_sync_carry_over(tmp_path):
    data = copy.deepcopy(STARTER)
    data["chain"]["wallet"].update(private_key=KEY[2:], payment_address="0x" + "12" * 20,
                                   allowed_sim_errors=["bad input"])
    data["chain"]["snapshot_sync"].update(starting_sub_id=7, batch_size=9000)
    loaded = read_config(write(tmp_path, data), env={})
    chain = loaded.config.chain
    assert chain.wallet.private_key.get_secret_value() == KEY  # 0x added, as Infernet does
    assert chain.wallet.payment_address == "0x" + "12" * 20
    assert chain.wallet.allowed_sim_errors == ["bad input"]
    assert chain.starting_sub_id == 7 and chain.reader_batch == 5000
    assert any(n.startswith("chain.snapshot_sync.batch_size:") for n in loaded.notes)


@pytest.mark.parametrize("change, field", [
    (lambda d: d["containers"][0].update(port="abc"), "containers.0.port"),
    (lambda d: d["server"].update(port=70000), "server.port"),
    (lambda d: d["chain"]["snapshot_sync"].update(batch_size=0), "chain.snapshot_sync.batch_size"),
    (lambda d: d["containers"][0].update(allowed_ips=["nope"]), "containers.0.allowed_ips.0"),
    (lambda d: d["chain"].update(rpc_url=None), "chain"),
    (lambda d: d["containers"][0].pop("id"), "containers.0.id"),
])
def test_a_bad_value_is_refused_naming_the_field(tmp_path, change, field):
    data = copy.deepcopy(STARTER)
    change(data)
    with pytest.raises(ConfigError) as err:
        read_config(write(tmp_path, data), env={})
    assert f"  {field}:" in str(err.value), str(err.value)


def test_not_json_names_the_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "server": {,}\n}')
    with pytest.raises(ConfigError, match="not valid JSON.*line 2"):
        read_config(path, env={})


def test_infernet_form_is_recognised_in_a_yaml_file_too(tmp_path):
    loaded = read_config(write(tmp_path, STARTER, "config.yaml"), env={})
    assert loaded.form == "infernet" and loaded.config.chain.output_encoding == "infernet"
    ours = read_config(write(tmp_path, {"containers": [{"id": "a", "image": "x"}]}, "ours.yaml"), env={})
    assert ours.form == "yaml" and ours.config.server.host == "127.0.0.1"


def test_a_node_section_and_a_node_yaml_beside_add_our_sections(tmp_path):
    data = copy.deepcopy(STARTER)
    data["node"] = {"storage": {"path": "state/node.db"}, "server": {"host": "127.0.0.1"}}
    (tmp_path / "node.yaml").write_text(yaml.safe_dump({"registry": {"enabled": True}}))
    loaded = read_config(write(tmp_path, data), env={})
    assert loaded.config.storage.path == str(tmp_path / "state/node.db")
    assert loaded.config.server.host == "127.0.0.1" and loaded.config.server.port == 4000
    assert loaded.config.registry.enabled
    with pytest.raises(ConfigError, match="storage.colour"):
        data["node"] = {"storage": {"colour": 1}}
        read_config(write(tmp_path, data), env={})


def test_infernet_config_path_is_the_default_config(tmp_path):
    assert default_config_path({"INFERNET_CONFIG_PATH": "/app/x.json"}, tmp_path) == "/app/x.json"
    assert default_config_path({}, tmp_path) == "config.yaml"
    (tmp_path / "config.json").write_text("{}")
    assert default_config_path({}, tmp_path) == "config.json"
    (tmp_path / "config.yaml").write_text("{}")
    assert default_config_path({}, tmp_path) == "config.yaml"


def test_convert_prints_an_equivalent_config_yaml_naming_every_dropped_key(tmp_path):
    source = write(tmp_path, {**STARTER, "colour": "blue"})
    out = subprocess.run([sys.executable, "-m", "node", "convert", str(source)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for key in ("redis", "forward_stats", "log_path", "docker", "chain.snapshot_sync.sleep", "colour"):
        assert f"#   - {key}:" in out.stdout, key
    converted = tmp_path / "converted.yaml"
    converted.write_text(out.stdout)
    ours, theirs = read_config(converted, env={}), read_config(source, env={})
    assert ours.form == "yaml" and ours.config == theirs.config


def test_convert_of_a_bad_config_exits_2_naming_the_field(tmp_path):
    source = write(tmp_path, {"containers": [{"id": "a", "image": "x", "port": "abc"}]})
    out = subprocess.run([sys.executable, "-m", "node", "convert", str(source)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "containers.0.port" in out.stderr


# -- allowed_sim_errors: a simulated revert whose message matches is sent anyway ------------------


class _Eth:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def get_transaction_count(self, *a: Any) -> int:
        return 0

    async def get_block(self, *a: Any) -> dict:
        return {"baseFeePerGas": 1}

    @property
    async def max_priority_fee(self) -> int:
        return 1

    @property
    async def block_number(self) -> int:
        return 1

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        self.sent.append(raw)
        return b"\x11" * 32

    async def get_transaction_receipt(self, tx_hash: Any) -> dict:
        return {"status": 1}


class _W3:
    def __init__(self) -> None:
        self.eth = _Eth()


class _RevertingCall:
    """A contract function whose simulation reverts with `message`."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.built: dict | None = None

    async def call(self, tx: dict) -> None:
        raise ContractLogicError(f"execution reverted: {self.message}")

    async def estimate_gas(self, tx: dict) -> int:
        raise ContractLogicError(f"execution reverted: {self.message}")

    async def build_transaction(self, tx: dict) -> dict:
        self.built = tx
        return {**tx, "to": "0x" + "22" * 20, "value": 0, "data": "0x"}


def _transact(allowed: list[str], message: str) -> tuple[Any, _RevertingCall, _W3]:
    w3 = _W3()
    wallet = Wallet(w3, KEY, 4_000_000, 31337, allowed_sim_errors=allowed)  # type: ignore[arg-type]
    fn = _RevertingCall(message)
    return asyncio.run(wallet.transact(fn, "deliverCompute(1,1)")), fn, w3


def test_a_simulated_revert_matching_allowed_sim_errors_is_sent_anyway_with_the_gas_cap():
    result, fn, w3 = _transact(["BAD INPUT"], "Contract says: bad input.")
    assert result.ok and len(w3.eth.sent) == 1
    assert fn.built is not None and fn.built["gas"] == 4_000_000


def test_a_simulated_revert_not_in_allowed_sim_errors_is_not_sent():
    result, fn, w3 = _transact(["bad input"], "something else")
    assert not result.ok and result.tx_hash is None and w3.eth.sent == []
