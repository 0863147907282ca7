"""CRE workflow executions are visible like every other job, in process: counted in the node's
metrics by workflow, trigger and outcome with their duration, summarised per workflow for the
operator status document (last execution, failures), and a failure is one warning line."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from node.cre.config import CreConfig
from node.cre.wasm.runtime import cron_payload, http_payload
from node.cre.wasm.service import WasmWorkflows
from node.lifecycle import Supervisor
from node.observe.metrics import NodeMetrics
from node.storage import Database
from tests.cre.workflows.harness import PRICE_FEED, PriceServer, toolchain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prices():
    server = PriceServer(b"10.5")
    yield server
    server.close()


@pytest.fixture
async def node_parts(tmp_path, prices):
    """A started WasmWorkflows on its own database, with the node's metrics as its observer;
    the workflow has no secret configured, so its cron handler fails and its HTTP one succeeds."""
    toolchain()
    db = Database(str(tmp_path / "node.db"))
    await db.open()
    metrics = NodeMetrics()
    config = CreConfig.model_validate({
        "wasm": {"http_allowed_networks": ["127.0.0.1/32"], "timeout": 20},
        "workflows": [{"name": "price-feed", "file": str(PRICE_FEED), "cron": False,
                       "config": {"priceUrl": prices.url}}]}, context={"env": {}})
    wasm = WasmWorkflows(config, db, Supervisor(on_fatal=lambda reason: None), observer=metrics)
    await wasm.start()
    yield wasm, metrics
    await wasm.stop()
    await db.close()


async def run(wasm: WasmWorkflows, kind: str) -> dict:
    sub = wasm.workflows["price-feed"].loaded.first(kind)
    payload = cron_payload(datetime.now(timezone.utc)) if kind == "cron" else http_payload(b'"hi"')
    return await wasm.fire("price-feed", sub, payload, {})


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_each_execution_is_counted_by_workflow_trigger_and_outcome_with_its_duration(node_parts):
    wasm, metrics = node_parts
    assert (await run(wasm, "http"))["status"] == "succeeded"
    assert (await run(wasm, "http"))["status"] == "succeeded"
    assert (await run(wasm, "cron"))["status"] == "failed"
    ok = {"workflow": "price-feed", "trigger": "http", "outcome": "succeeded"}
    assert sample(metrics, "node_cre_workflow_executions_total", **ok) == 2
    assert sample(metrics, "node_cre_workflow_executions_total", workflow="price-feed", trigger="cron",
                  outcome="failed") == 1
    assert sample(metrics, "node_cre_workflow_duration_seconds_count", workflow="price-feed") == 3
    assert sample(metrics, "node_cre_workflow_duration_seconds_sum", workflow="price-feed") > 0


async def test_the_status_part_gives_each_workflow_its_last_execution_and_its_failures(node_parts):
    wasm, _ = node_parts
    (before,) = await wasm.status()
    assert (before["name"], before["executions"], before["lastExecution"]) == ("price-feed", 0, None)
    failed = await run(wasm, "cron")
    last = await run(wasm, "http")
    (part,) = await wasm.status()
    assert part["triggers"] == ["cron", "http"]
    assert (part["executions"], part["failures"]) == (2, 1)
    assert part["lastExecution"]["executionId"] == last["executionId"]
    assert (part["lastExecution"]["status"], part["lastExecution"]["trigger"]) == ("succeeded", "http")
    assert part["lastFailure"]["executionId"] == failed["executionId"]
    assert "PRICE_API_KEY" in part["lastFailure"]["error"]


async def test_a_failed_execution_is_one_warning_line_naming_the_workflow_and_the_error(node_parts, caplog):
    wasm, _ = node_parts
    with caplog.at_level(logging.INFO, logger="node.cre.wasm.service"):
        record = await run(wasm, "cron")
    lines = [r for r in caplog.records if r.getMessage() == "cre.wasm.execution_failed"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    fields = lines[0]._fields
    assert fields["workflow"] == "price-feed" and fields["trigger"] == "cron"
    assert record["executionId"].startswith(fields["execution"])
    assert "PRICE_API_KEY" in fields["error"]
