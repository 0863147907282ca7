"""CRE workflow secrets from the node's sealed store: `node-daemon cre secrets set` seals a value
with the node's master key into the database, a running workflow reads it at its next
execution, and bad input is refused naming what is wrong."""

from __future__ import annotations

import io
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import yaml

from node.cli import main as cli_main
from node.config import read_config
from node.cre.wasm.runtime import cron_payload
from node.cre.wasm.service import WasmWorkflows
from node.lifecycle import Supervisor
from node.secrets import SecretBox
from node.storage import Database
from tests.cre.workflows.harness import PRICE_FEED, PriceServer, toolchain

pytestmark = pytest.mark.slow

VALUE = "s3cret-from-the-store"


@pytest.fixture(scope="module")
def prices():
    server = PriceServer(b"7.5")
    yield server
    server.close()


def write_config(tmp_path, prices, secrets: dict | None = None):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"path": "node.db"}, "master_key_path": "node.key",
        "cre": {"wasm": {"http_allowed_networks": ["127.0.0.1/32"], "timeout": 20},
                "workflows": [{"name": "price-feed", "file": str(PRICE_FEED), "cron": False,
                               "config": {"priceUrl": prices.url}, "secrets": secrets or {}}]}}))
    return path


def cli(monkeypatch, capsys, args: list[str], stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with ThreadPoolExecutor(1) as pool:  # the command runs its own event loop, as from a shell
        code = pool.submit(cli_main, ["cre", "secrets", *args]).result()
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
async def started(tmp_path, prices):
    """The node's WasmWorkflows as node/app.py builds it, from the config file."""
    toolchain()
    config = read_config(write_config(tmp_path, prices)).config
    db = Database(config.storage.path)
    await db.open()
    wasm = WasmWorkflows(config.cre, db, Supervisor(on_fatal=lambda reason: None),
                         secret_box=lambda: SecretBox.from_file(tmp_path / "node.key"))
    await wasm.start()
    yield wasm
    await wasm.stop()
    await db.close()


async def cron(wasm: WasmWorkflows) -> dict:
    sub = wasm.workflows["price-feed"].loaded.first("cron")
    return await wasm.fire("price-feed", sub, cron_payload(datetime.now(timezone.utc)), {})


async def test_a_secret_set_while_the_node_runs_is_read_by_the_next_execution_and_sealed_at_rest(
        started, tmp_path, monkeypatch, capsys):
    before = await cron(started)
    assert before["status"] == "failed" and "PRICE_API_KEY" in before["error"]
    code, out, err = cli(monkeypatch, capsys, ["set", "price-feed", "PRICE_API_KEY", "--config",
                                               str(tmp_path / "config.yaml")], VALUE + "\n")
    assert code == 0, err
    assert "stored" in out and VALUE not in out
    after = await cron(started)
    assert after["status"] == "succeeded", after["error"]
    assert f"key={len(VALUE)} chars" in after["logs"][0]  # the trailing newline of stdin is not part of it
    assert VALUE.encode() not in (tmp_path / "node.db").read_bytes()
    for wal in tmp_path.glob("node.db-*"):
        assert VALUE.encode() not in wal.read_bytes()


async def test_a_configured_secret_takes_precedence_over_the_store(tmp_path, prices, monkeypatch, capsys):
    toolchain()
    path = write_config(tmp_path, prices, secrets={"PRICE_API_KEY": "abc"})
    assert cli(monkeypatch, capsys, ["set", "price-feed", "PRICE_API_KEY", "--config", str(path)], VALUE)[0] == 0
    config = read_config(path).config
    db = Database(config.storage.path)
    await db.open()
    wasm = WasmWorkflows(config.cre, db, Supervisor(on_fatal=lambda reason: None),
                         secret_box=lambda: SecretBox.from_file(tmp_path / "node.key"))
    try:
        await wasm.start()
        record = await cron(wasm)
        assert record["status"] == "succeeded" and "key=3 chars" in record["logs"][0]
    finally:
        await wasm.stop()
        await db.close()


async def test_a_secret_sealed_under_another_master_key_fails_the_execution_saying_so(
        started, tmp_path, monkeypatch, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text((tmp_path / "config.yaml").read_text().replace(
        "node.db", str(tmp_path / "node.db")))  # the same database, another master key
    assert cli(monkeypatch, capsys, ["set", "price-feed", "PRICE_API_KEY", "--config",
                                     str(other / "config.yaml")], VALUE)[0] == 0
    record = await cron(started)
    assert record["status"] == "failed"
    assert "cannot be opened with this node's master key" in record["error"]


def test_secrets_list_shows_names_and_never_values_and_delete_removes_one(tmp_path, prices, monkeypatch, capsys):
    path = str(write_config(tmp_path, prices))
    assert cli(monkeypatch, capsys, ["set", "price-feed", "A", "--config", path], "one")[0] == 0
    assert cli(monkeypatch, capsys, ["set", "price-feed", "B", "--namespace", "ops", "--config", path], "two")[0] == 0
    code, out, _ = cli(monkeypatch, capsys, ["list", "--config", path])
    assert code == 0 and "price-feed\tmain/A\t" in out and "price-feed\tops/B\t" in out
    assert "one" not in out and "two" not in out
    assert cli(monkeypatch, capsys, ["delete", "price-feed", "A", "--config", path])[0] == 0
    assert "main/A" not in cli(monkeypatch, capsys, ["list", "price-feed", "--config", path])[1]
    code, _, err = cli(monkeypatch, capsys, ["delete", "price-feed", "A", "--config", path])
    assert code == 1 and "has no secret main/A" in err


@pytest.mark.parametrize(("args", "stdin", "problem"), [
    (["set", "bad name", "A"], "v", "workflow:"),
    (["set", "price-feed", "A/B"], "v", "id:"),
    (["set", "price-feed", "A", "--namespace", ""], "v", "namespace:"),
    (["set", "price-feed", "A"], "", "value: empty"),
    (["set", "price-feed", "A"], "x" * (64 * 1024 + 1), "value: over"),
])
def test_a_bad_secret_is_refused_with_exit_2_naming_the_field(tmp_path, prices, monkeypatch, capsys, args, stdin,
                                                              problem):
    code, out, err = cli(monkeypatch, capsys, [*args, "--config", str(write_config(tmp_path, prices))], stdin)
    assert code == 2 and problem in err and "Traceback" not in err
