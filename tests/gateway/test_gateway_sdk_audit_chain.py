"""The audit log's keyed hash chain (issue 25), in process: fast checks of what the SDK tests
cannot reach cheaply (rows from before the chain, concurrent writers, a forger without the key)."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from node.gateway.audit_chain import row_hash
from node.secrets import SecretBox
from node.gateway.store import GatewayStore
from node.storage import Database


@pytest.fixture
async def db(tmp_path):
    database = Database(str(tmp_path / "gateway.db"))
    await database.open()
    yield database
    await database.close()


async def test_rows_written_before_the_chain_existed_are_chained_at_start_and_verify(db):
    box = SecretBox(os.urandom(32))
    store = GatewayStore(db, box)
    await store.start()
    for n in range(3):  # as an older node wrote them: no hashes
        await db.execute("INSERT INTO gw_audit (org_id, actor, action, target_type, created_at)"
                         " VALUES ('org_1', 'user:u', ?, 'thing', ?)", (f"old.{n}", 1000.0 + n))
    restarted = GatewayStore(db, box)
    await restarted.start()
    await restarted.audit("org_1", "user:u", "new.0", "thing", None)
    result = await restarted.audit_verify("org_1", None)
    assert result["verified"] is True and result["record_count"] == 4
    with pytest.raises(Exception, match="append-only"):  # the trigger is back after the one-time chaining
        await db.execute("UPDATE gw_audit SET action = 'x' WHERE org_id = 'org_1'")


async def test_concurrent_writers_keep_one_unbroken_chain_per_org(db):
    store = GatewayStore(db, SecretBox(os.urandom(32)))
    await store.start()
    await asyncio.gather(*(store.audit(f"org_{n % 3}", "key:k", "execution.allowed", "execution", f"exe_{n}",
                                       after={"n": n}) for n in range(60)))
    for org in ("org_0", "org_1", "org_2"):
        result = await store.audit_verify(org, None)
        assert (result["verified"], result["record_count"]) == (True, 20), (org, result)


async def test_a_forger_who_rewrites_a_row_and_its_hash_without_the_node_key_is_caught(db):
    store = GatewayStore(db, SecretBox(os.urandom(32)))
    await store.start()
    for n in range(3):
        await store.audit("org_1", "key:k", "execution.denied", "execution", f"exe_{n}", after={"n": n})
    row = dict(await db.fetchone("SELECT * FROM gw_audit WHERE target_id = 'exe_1'"))
    row["action"] = "execution.allowed"
    forged = row_hash(os.urandom(32), row["prev_hash"], row)  # the best a forger without the key can do
    await db.execute("DROP TRIGGER gw_audit_no_update")
    await db.execute("UPDATE gw_audit SET action = ?, hash = ? WHERE id = ?", (row["action"], forged, row["id"]))
    result = await store.audit_verify("org_1", None)
    assert result["verified"] is False and result["first_failure_reason"] == "content_hash_mismatch"
    assert result["first_failure_id"] == str(row["id"])
    assert json.loads(row["after"]) == {"n": 1}
