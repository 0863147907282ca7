"""The governance gate's refusals of a job, by kind (node/errors.py): the HTTP edge gives each
its status (401, 404, 503, 403), a chain, CRE or registry job records the message; and the
gateway's request helpers (auth, oauth) refuse by kind as well. In-process against a real
gateway store."""

from __future__ import annotations

import os

import pytest

from node.errors import Forbidden, NotFound, Unauthenticated, Unavailable
from node.gateway.binding import BOUND_ORG
from node.secrets import SecretBox
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


# -- the gateway's request helpers refuse by kind too --------------------------------------------

def mocked(**headers: str):
    from aiohttp.test_utils import make_mocked_request
    return make_mocked_request("POST", "/api/v1/orgs/x/workflows", headers=headers)


async def test_gateway_auth_refuses_a_missing_or_wrong_credential_as_unauthenticated(store):
    from node.gateway.auth import GatewayAuth
    auth = GatewayAuth(store, hmac_required=True, max_age=300)
    with pytest.raises(Unauthenticated, match="Missing X-API-Key"):
        await auth.sdk(mocked(), b"")
    with pytest.raises(Unauthenticated, match="Invalid API key"):
        await auth.sdk(mocked(**{"X-API-Key": "nr_live_nope"}), b"")
    with pytest.raises(Unauthenticated, match="Missing session token"):
        await auth.session(mocked())


async def test_gateway_auth_refuses_another_orgs_key_as_forbidden(store, org):
    from node.gateway.auth import GatewayAuth
    key = await store.create_key(org, "k", None, "usr_x")
    auth = GatewayAuth(store, hmac_required=False, max_age=300)
    with pytest.raises(Forbidden, match="API key does not belong to this org"):
        await auth.org(mocked(Authorization=f"Bearer {key['api_key']}"), "org_other", allow_key=True)


async def test_oauth_sign_up_that_is_not_configured_is_not_found_and_an_unproven_identity_unauthenticated():
    from node.gateway.config import OAuthConfig
    from node.gateway.oauth import OAuthVerifier
    with pytest.raises(NotFound, match="OAuth sign-up is not configured"):
        await OAuthVerifier(OAuthConfig()).prove(mocked(), "google", "sub", "a@example.com", None)
    verifier = OAuthVerifier(OAuthConfig(backend_secret="s" * 32))
    with pytest.raises(Unauthenticated, match="id_token: required"):
        await verifier.prove(mocked(), "google", "sub", "a@example.com", None)
