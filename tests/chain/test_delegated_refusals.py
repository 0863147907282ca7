"""Why a delegated subscription (`POST /api/jobs` with `subscription`) is refused, by kind
(node/errors.py), for the refusals decided before any chain call: the HTTP edge gives Invalid
400, Forbidden 403 (an owner not on a container's allow-list). In-process: the chain service is
built but not started (no RPC is reached), with a stand-in wallet and chain id."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from node.chain.codec import container_id
from node.chain.config import ChainConfig
from node.chain.service import ChainService
from node.containers.config import ContainerConfig
from node.errors import Forbidden, Invalid
from node.jobs.models import DelegatedSubscriptionRequest
from node.lifecycle import Supervisor
from node.storage import Database

ZERO = "0x" + "00" * 20
OWNER = "0x" + "ab" * 20
TOKEN = "0x" + "cd" * 20


@pytest.fixture
async def chain(tmp_path):
    db = Database(str(tmp_path / "chain.db"))
    await db.open()
    supervisor = Supervisor(on_fatal=lambda name: None)
    containers = [ContainerConfig(id="echo", image="x"),
                  ContainerConfig(id="inner", image="x", external=False),
                  ContainerConfig(id="listed", image="x", allowed_delegate_addresses=["0x" + "11" * 20]),
                  ContainerConfig(id="paid", image="x", accepted_payments={TOKEN: 5})]
    config = ChainConfig(enabled=True, rpc_url="http://127.0.0.1:9", coordinator_address=ZERO, reader_address=ZERO,
                         wallet={"private_key": Account.create().key.hex()})
    service = ChainService(config, containers, db, orchestrator=None, supervisor=supervisor)
    service.wallet, service.chain_id = object(), 31337  # as after start(); no refusal here reaches either
    yield service
    await supervisor.close()
    await db.close()


def request(pipeline: list[str], expiry: float | None = None, **sub) -> DelegatedSubscriptionRequest:
    subscription = {"owner": OWNER, "active_at": 0, "period": 0, "frequency": 1, "redundancy": 1,
                    "containers": "0x" + container_id(pipeline).hex(), "lazy": False, **sub}
    signature = {"nonce": 1, "expiry": int(expiry or time.time() + 600), "v": 27, "r": 1, "s": 1}
    return DelegatedSubscriptionRequest(subscription=subscription, signature=signature, data={})


async def test_an_owner_not_on_a_containers_delegate_list_is_forbidden(chain):
    with pytest.raises(Forbidden) as refused:
        await chain.delegated(request(["listed"]), "127.0.0.1")
    assert refused.value.message == f"Owner {OWNER} not allowed for container listed"


@pytest.mark.parametrize(("containers", "sub", "expiry", "message"), [
    (["nothing"], {}, None, "Container chain not served by this node"),
    (["inner"], {}, None, "Container inner is not external"),
    (["echo"], {}, 1.0, "Signature expired"),
    (["echo"], {"containers": "0x1234"}, None, "subscription.containers: expected a 32-byte hash"),
    (["paid"], {}, None, "Container paid charges for its work and the subscription pays nothing"),
], ids=["not served", "not external", "expired", "short container hash", "unpaid terms"])
async def test_a_delegated_subscription_this_node_cannot_run_is_invalid_naming_why(chain, containers, sub, expiry,
                                                                                   message):
    with pytest.raises(Invalid) as refused:
        await chain.delegated(request(containers, expiry, **sub), "127.0.0.1")
    assert refused.value.message == message
