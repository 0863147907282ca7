"""Fast checks of the registry's pure parts: cron arithmetic and oracle aggregation."""

from __future__ import annotations

import calendar
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from node.canonical import stable_json
from node.registry.cron import Cron, CronError
from node.registry.inputs import InputError, aggregate, output_name
from node.registry.models import OracleQuery


def ts(*parts: int) -> int:
    return calendar.timegm((*parts, 0, 0, 0))


def test_six_field_cron_seconds_first():
    hourly = Cron.parse("0 0 * * * *")
    assert hourly.next_after(ts(2026, 11, 23, 8, 20, 5)) == ts(2026, 11, 23, 9, 0, 0)
    assert hourly.next_after(ts(2026, 11, 23, 9, 0, 0)) == ts(2026, 11, 23, 10, 0, 0)
    every2 = Cron.parse("*/2 * * * * *")
    assert every2.next_after(ts(2026, 1, 1, 0, 0, 1)) == ts(2026, 1, 1, 0, 0, 2)
    weekdays = Cron.parse("30 15 10 * * 1-5")
    assert weekdays.next_after(ts(2026, 11, 21, 0, 0, 0)) == ts(2026, 11, 23, 10, 15, 30)  # Sat -> Mon
    assert Cron.parse("0 0 0 29 2 *").next_after(ts(2026, 3, 1, 0, 0, 0)) == ts(2028, 2, 29, 0, 0, 0)
    assert every2.last_at_or_before(ts(2026, 1, 1, 0, 0, 9), ts(2026, 1, 1, 0, 0, 0)) == ts(2026, 1, 1, 0, 0, 8)
    assert hourly.last_at_or_before(ts(2026, 1, 1, 0, 30, 0), ts(2026, 1, 1, 0, 0, 0)) is None
    for bad in ("0 0 * * *", "61 * * * * *", "* * * * 13 *", "*/0 * * * * *", "a * * * * *"):
        with pytest.raises(CronError):
            Cron.parse(bad)


def test_output_names_follow_the_seed():
    assert output_name("getPrice") == "prices"
    assert output_name("getRelevantTokens") == "relevantTokens"


def _response(oracle, query, params, data, age=0):
    stamp = int(time.time()) - age
    payload = {"query": query, "params": params, "data": data, "timestamp": stamp}
    sig = oracle.sign_message(encode_defunct(primitive=keccak(text=stable_json(payload)))).signature.hex()
    return {"data": data, "timestamp": stamp, "signature": "0x" + sig}


def test_aggregation_median_and_agreement():
    a, b, c = Account.create(), Account.create(), Account.create()
    oracles = {a.address.lower(), b.address.lower(), c.address.lower()}
    raw = {
        "getPrice": [OracleQuery.model_validate({"params": ["X"], "responses": [
            _response(a, "getPrice", ["X"], 192.57), _response(b, "getPrice", ["X"], 190.56)]})],
        "getTokens": [OracleQuery.model_validate({"params": ["W"], "responses": [
            _response(a, "getTokens", ["W"], ["t1", "t2"]), _response(b, "getTokens", ["W"], ["t1"]),
            _response(c, "getTokens", ["W"], ["t1", "t2", "t3"])]})],
    }
    out = aggregate(raw, oracles, required=2, max_age=60)
    assert out.inputs["prices"]["X"] == pytest.approx(191.565)
    assert out.inputs["tokens"]["W"] == ["t1", "t2"]
    assert out.count == 5
    with pytest.raises(InputError, match="Invalid oracle signature for getPrice"):
        aggregate(raw, {a.address.lower()}, required=1, max_age=60)
    stale = {"getPrice": [OracleQuery.model_validate({"params": ["X"], "responses": [
        _response(a, "getPrice", ["X"], 1.0, age=120)]})]}
    with pytest.raises(InputError, match="Outdated oracle response for getPrice"):
        aggregate(stale, oracles, required=1, max_age=60)
    with pytest.raises(InputError, match="confirmations not reached"):
        aggregate(raw, oracles, required=3, max_age=60)
