"""Parts of the CRE WASM host that need no guest: the 6-field cron, one-node consensus over the
SDK's aggregations, the config section's field-named errors, and the checks of the gateway-form
HTTP trigger (JSON-RPC body and ETH-signed JWT)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest
from eth_account import Account
from pydantic import ValidationError

from node.cre.config import CreConfig
from node.cre.gateway import build_request, canonical, make_jwt
from node.cre.wasm import messages as pb
from node.cre.wasm.capabilities import CapabilityError, consensus
from node.cre.wasm.cron import Cron, CronError
from node.cre.wasm.gateway_trigger import parse
from node.errors import Invalid, Unauthenticated

T0 = datetime(2026, 1, 1, 0, 0, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("schedule, expected", [
    ("*/30 * * * * *", datetime(2026, 1, 1, 0, 0, 30, tzinfo=timezone.utc)),
    ("0 */5 * * * *", datetime(2026, 1, 1, 0, 5, 0, tzinfo=timezone.utc)),
    ("0 0 12 * * MON", datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)),
    ("15 30 6 29 2 *", datetime(2028, 2, 29, 6, 30, 15, tzinfo=timezone.utc)),
    ("*/5 * * * *", datetime(2026, 1, 1, 0, 5, 0, tzinfo=timezone.utc)),  # 5 fields: second 0
])
def test_cron_next_firing_time_follows_the_six_field_schedule(schedule, expected):
    assert Cron(schedule).next_after(T0) == expected


@pytest.mark.parametrize("schedule, part", [
    ("* * * * * * *", "expected 6 fields"), ("61 * * * * *", "second"), ("* * 25 * * *", "hour"),
    ("* * * * 13 *", "month"), ("*/0 * * * * *", "second"), ("* * * 31 2 *", "never fires"),
])
def test_a_bad_cron_schedule_is_refused_naming_the_field(schedule, part):
    with pytest.raises(CronError, match=part):
        Cron(schedule).next_after(T0)


def observation(value, aggregation=None, fields=None, error=None, default=None):
    inputs = pb.SimpleConsensusInputs()
    if error is not None:
        inputs.error = error
    else:
        inputs.value.CopyFrom(value)
    if aggregation is not None:
        inputs.descriptors.aggregation = aggregation
    for key, agg in (fields or {}).items():
        entry = inputs.descriptors.fields_map.fields.add(key=key)
        entry.value.aggregation = agg
    if default is not None:
        inputs.default.CopyFrom(default)
    return inputs


def test_one_node_median_and_identical_consensus_are_the_observation_itself():
    value = pb.Value(float64_value=12.5)
    assert consensus(observation(value, aggregation=1)) == value
    assert consensus(observation(value, aggregation=2)) == value


def test_one_node_frequency_list_counts_the_observation_once():
    agreed = consensus(observation(pb.Value(string_value="a"), aggregation=5))
    assert pb.value_to_python(agreed) == [{"value": "a", "count": 1}]


def test_fields_map_consensus_applies_each_fields_aggregation():
    value = pb.Value()
    value.map_value.fields.add(key="price").value.float64_value = 3.0
    value.map_value.fields.add(key="sig").value.string_value = "s"
    agreed = consensus(observation(value, fields={"price": 1, "sig": 5}))
    assert pb.value_to_python(agreed) == {"price": 3.0, "sig": [{"value": "s", "count": 1}]}


def test_an_error_observation_takes_the_default_or_fails_with_its_error():
    default = pb.Value(int64_value=123)
    assert consensus(observation(None, error="boom", default=default)) == default
    with pytest.raises(CapabilityError, match="boom"):
        consensus(observation(None, error="boom"))


@pytest.mark.parametrize("section, field", [
    ({"workflows": [{"name": "a", "file": "w.py"}]}, "workflows.0.file"),
    ({"workflows": [{"name": "bad name", "file": "w.ts"}]}, "workflows.0.name"),
    ({"workflows": [{"name": "a", "file": "w.ts"}, {"name": "a", "file": "x.ts"}]}, "workflows"),
    ({"workflows": [{"name": "a", "file": "w.ts", "secrets": {"K": "env:NOPE_UNSET"}}]}, "workflows.0.secrets"),
    ({"wasm": {"chains": {"nowhere": "http://127.0.0.1:8545"}}}, "wasm.chains"),
    ({"wasm": {"http_allowed_networks": ["not-a-net"]}}, "wasm.http_allowed_networks.0"),
    ({"wasm": {"timeout": 0}}, "wasm.timeout"),
])
def test_a_bad_cre_workflows_config_names_the_field(section, field):
    with pytest.raises(ValidationError) as info:
        CreConfig.model_validate(section, context={"env": {}})
    assert field in str(info.value)


# -- the gateway-form HTTP trigger's request checks -------------------------------------------------

SIGNER = Account.create()
NOW = 1_800_000_000
BODY = canonical(build_request("ab" * 32, "r1", {"q": 1}))


def bearer(body: bytes = BODY, key=SIGNER, now: int = NOW, lifetime: int = 300) -> str:
    return "Bearer " + make_jwt(body, key.key.hex(), now=now, lifetime=lifetime)


def forged(header: dict | None = None, claims: dict | None = None, signature: bytes | None = None) -> str:
    """A JWT with these parts, signed by SIGNER unless a signature is given."""
    real = make_jwt(BODY, SIGNER.key.hex(), now=NOW).split(".")
    enc = [real[0], real[1]]
    if header is not None:
        enc[0] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    if claims is not None:
        base = json.loads(base64.urlsafe_b64decode(real[1] + "=="))
        enc[1] = base64.urlsafe_b64encode(json.dumps({**base, **claims}).encode()).rstrip(b"=").decode()
    sig = real[2] if signature is None else base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    return "Bearer " + ".".join([*enc, sig])


def test_a_gateway_request_signed_by_its_iss_is_accepted_with_the_recovered_signer():
    req = parse(BODY, bearer(), NOW)
    assert (req.signer, req.request_id, req.input, req.workflow_id) == (SIGNER.address, "r1", {"q": 1}, "ab" * 32)


@pytest.mark.parametrize("body, field", [
    (b"not json", "body"), (b"[]", "body"),
    (canonical({**build_request("ab" * 32, "r", {}), "jsonrpc": "1.0"}), "jsonrpc"),
    (canonical({**build_request("ab" * 32, "r", {}), "method": "workflows.delete"}), "method"),
    (canonical(build_request("ab" * 32, "a/b", {})), "id"),
    (canonical(build_request("ab" * 32, "r", "text")), "params.input"),
    (canonical(build_request("AB" * 32, "r", {})), "params.workflow.workflowID"),
])
def test_a_malformed_gateway_request_is_refused_naming_the_field(body, field):
    with pytest.raises(Invalid, match=f"^{field}"):
        parse(body, bearer(body), NOW)


@pytest.mark.parametrize("authorization, problem", [
    ("", "Bearer"), ("Bearer a.b", "not a JWT"), ("Bearer !!!.b.c", "header"),
    (forged(header={"alg": "none", "typ": "JWT"}), "alg"),
    (forged(claims={"jti": None}), "jti"),
    (forged(claims={"exp": NOW + 3600}), "at most 300s"),
    (forged(signature=b"\x01" * 64), "65 bytes"),
    (forged(claims={"iss": Account.create().address}), "not by its iss"),
    (forged(claims={"digest": "0x" + "00" * 32}), "digest"),
])
def test_a_bad_gateway_jwt_is_refused_saying_why(authorization, problem):
    with pytest.raises(Unauthenticated, match=problem):
        parse(BODY, authorization, NOW)


def test_an_expired_or_future_gateway_jwt_is_refused():
    with pytest.raises(Unauthenticated, match="expired"):
        parse(BODY, bearer(now=NOW - 400), NOW)
    with pytest.raises(Unauthenticated, match="future"):
        parse(BODY, bearer(now=NOW + 120), NOW)


def test_a_gateway_jwt_signed_for_another_body_is_refused():
    other = canonical(build_request("ab" * 32, "r1", {"q": 2}))
    with pytest.raises(Unauthenticated, match="digest"):
        parse(BODY, bearer(other), NOW)


@pytest.mark.parametrize("section, message", [
    ({"wasm": {"forwarders": {"anvil-devnet": "0x" + "11" * 20}}}, "is not one of chains"),
    ({"wasm": {"chains": {"anvil-devnet": "http://127.0.0.1:8545"}, "forwarders": {"anvil-devnet": "0x" + "11" * 20}}},
     "need don_key"),
    ({"wasm": {"chains": {"anvil-devnet": "http://127.0.0.1:8545"}, "forwarders": {"anvil-devnet": "0x12"}}},
     "wasm.forwarders.anvil-devnet"),
])
def test_a_forwarder_needs_a_configured_chain_a_don_key_and_an_address(section, message):
    with pytest.raises(ValidationError, match=message):
        CreConfig.model_validate(section, context={"env": {}})


def test_wasm_keys_can_be_read_from_the_environment_and_a_missing_one_is_named():
    config = CreConfig.model_validate({"wasm": {"don_key": "env:DON"}}, context={"env": {"DON": "0x" + "11" * 32}})
    assert config.wasm.don_key.get_secret_value() == "0x" + "11" * 32
    with pytest.raises(ValidationError, match="wasm.api_key"):
        CreConfig.model_validate({"wasm": {"api_key": "env:NOPE"}}, context={"env": {}})


async def test_an_execution_cut_short_by_a_restart_is_listed_as_failed_interrupted(tmp_path):
    from node.cre.wasm.runtime import Subscription
    from node.cre.wasm.service import ExecutionStore
    from node.storage import Database

    db = Database(str(tmp_path / "node.db"))
    await db.open()
    try:
        store = ExecutionStore(db)
        await store.start()
        await store.begin("e" * 64, "price-feed", Subscription(0, "cron-trigger@1.0.0", "Trigger", None, "cron"), {})
        assert (await store.get("e" * 64))["status"] == "running"
        assert await ExecutionStore(db).start() == 1  # the next start of the node
        record = await store.get("e" * 64)
        assert (record["status"], record["error"]) == ("failed", "interrupted: the node stopped during the execution")
    finally:
        await db.close()
