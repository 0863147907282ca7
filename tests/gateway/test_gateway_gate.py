"""The governance gate's refusals of a job, by kind (node/errors.py): the HTTP edge gives each
its status (401, 404, 503, 403), a chain, CRE or registry job records the message. In-process
against a real gateway store."""

from __future__ import annotations

import os

import pytest

from node.errors import Forbidden, NotFound, Unauthenticated, Unavailable
from node.gateway.binding import BOUND_ORG
from node.gateway.crypto import SecretBox
from node.gateway.gate import GovernanceGate
from node.gateway.store import GatewayStore, wf_key
from node.jobs.orchestrator import Admission
from node.storage import Database


@pytest.fixture
async def store(tmp_path):
    db = Database(str(tmp_path / "gateway.db"))
    await db.open()
    gateway_store = GatewayStore(db, SecretBox(os.urandom(32)))
    await gateway_store.start()
    yield gateway_store
    await db.close()


@pytest.fixture
async def org(store):
    return (await store.register("a@example.com", "A", "A org", password_hash="x"))["org_id"]


def gate(store, defaults=None, costs=None) -> GovernanceGate:
    return GovernanceGate(store, defaults or {}, costs or {}, reservation_ttl=60)


async def test_a_job_naming_a_workflow_without_a_signed_key_is_unauthenticated(store, org):
    await store.create_workflow(org, "wf", "wf", None)
    with pytest.raises(Unauthenticated, match="needs a signed API key") as refused:
        await gate(store).admit(Admission(("echo",), "1.2.3.4", "offchain", "wf"))
    assert refused.value.params == {"workflow_id": "wf"}


async def test_a_job_naming_an_unknown_workflow_of_its_org_is_not_found(store, org):
    token = BOUND_ORG.set(org)
    try:
        with pytest.raises(NotFound, match="Unknown workflow 'nope'"):
            await gate(store).admit(Admission(("echo",), "1.2.3.4", "offchain", "nope"))
    finally:
        BOUND_ORG.reset(token)


async def test_a_source_whose_default_workflow_does_not_exist_is_unavailable(store, org):
    with pytest.raises(Unavailable, match="which does not exist") as refused:
        await gate(store, {"chain": f"{org}/missing"}).admit(Admission(("echo",), "chain", "chain", None))
    assert refused.value.params == {"workflow_id": "missing", "source": "chain"}


async def test_a_paused_workflow_or_an_exhausted_budget_is_forbidden(store, org):
    await store.create_workflow(org, "wf", "wf", 0.5)
    governed = gate(store, {"cre": f"{org}/wf"}, {"echo": 1.0})
    with pytest.raises(Forbidden, match="Workflow wf: ") as refused:
        await governed.admit(Admission(("echo",), "cre", "cre", None))
    assert set(refused.value.params) == {"workflow_id", "remaining_usd"}
    await store.set_status(wf_key(org, "wf"), "paused")
    with pytest.raises(Forbidden, match="Workflow wf is paused"):
        await governed.admit(Admission(("echo",), "cre", "cre", None))
