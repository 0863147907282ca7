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
from node.errors import Conflict, Invalid, Unauthenticated
from node.registry.inputs import aggregate, output_name
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


def test_a_crons_shortest_gap_and_whether_it_fires_within_a_year():
    now = ts(2026, 12, 4, 12, 0, 0)
    gaps = {"* * * * * *": 1, "*/2 * * * * *": 2, "0 */5 * * * *": 300, "0 0 * * * *": 3600,
            "0,1 0 0 1 1 *": 1, "50 59 23 * * *": 86400, "0 0,59 0,23 * * *": 60, "0 0 0 * * 1-5": 86400}
    for text, gap in gaps.items():
        assert Cron.parse(text).shortest_gap(now) == gap, text
    assert not Cron.parse("0 0 0 30 2 *").fires_within(now)
    assert Cron.parse("0 0 0 29 2 *").fires_within(ts(2027, 3, 1, 0, 0, 0))  # 2028-02-29 is within a year
    assert not Cron.parse("0 0 0 29 2 *").fires_within(now)  # 2028-02-29 is not


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
    with pytest.raises(Unauthenticated, match="Invalid oracle signature for getPrice"):
        aggregate(raw, {a.address.lower()}, required=1, max_age=60)
    stale = {"getPrice": [OracleQuery.model_validate({"params": ["X"], "responses": [
        _response(a, "getPrice", ["X"], 1.0, age=120)]})]}
    with pytest.raises(Conflict, match="Outdated oracle response for getPrice"):
        aggregate(stale, oracles, required=1, max_age=60)
    with pytest.raises(Conflict, match="confirmations not reached"):
        aggregate(raw, oracles, required=3, max_age=60)


# -- sign-in messages, event matching, upgrades -------------------------------------------------------

from node.registry.config import RegistryConfig  # noqa: E402
from node.registry import signatures as sig  # noqa: E402
from node.registry import siwe  # noqa: E402
from node.registry.models import EventTrigger  # noqa: E402
from node.registry.service import RegistryService  # noqa: E402
from node.registry.store import MIGRATIONS, RegistryStore  # noqa: E402
from node.storage import Database  # noqa: E402


def test_eip4361_messages_round_trip_and_bind_domain_uri_chain_nonce_and_time():
    account = Account.create()
    now = 1_800_000_000
    text = siwe.compose("node.example:4000", account.address.lower(), "https://node.example:4000", 1, "abcdef0123",
                        now, now + 300)
    parsed = siwe.SiweMessage.parse(text)
    assert parsed.address == account.address and parsed.expiration_time == now + 300
    assert parsed.text() == text
    signature = "0x" + account.sign_message(encode_defunct(text=text)).signature.hex()
    good = dict(domain="node.example:4000", uri="https://node.example:4000", chain_id=1, nonce="abcdef0123",
                now=now + 1, skew=60)
    assert siwe.verify(text, signature, **good) == account.address
    for change in ({"domain": "other:4000"}, {"uri": "https://other"}, {"chain_id": 5}, {"nonce": "zzzzzzzz0"},
                   {"now": now + 301}, {"now": now - 3600}):
        with pytest.raises(siwe.SiweError):
            siwe.verify(text, signature, **(good | change))
    with pytest.raises(siwe.SiweError):  # the address must be checksummed, as EIP-4361 says
        siwe.SiweMessage.parse(text.replace(account.address, account.address.lower()))


def test_event_triggers_match_address_and_positional_topics():
    topic0, topic1 = "0x" + "aa" * 32, "0x" + "bb" * 32
    log = {"address": "0x" + "11" * 20, "topics": [topic0, topic1]}
    assert EventTrigger(chainId=1, address="0x" + "11" * 20).matches(log)
    assert EventTrigger(chainId=1, address="0x" + "11" * 20, topic=topic0).matches(log)
    assert EventTrigger(chainId=1, address="0x" + "11" * 20, topics=[None, topic1]).matches(log)
    assert not EventTrigger(chainId=1, address="0x" + "11" * 20, topics=[None, topic0]).matches(log)
    assert not EventTrigger(chainId=1, address="0x" + "22" * 20, topic=topic0).matches(log)
    assert not EventTrigger(chainId=1, address="0x" + "11" * 20, topics=[topic0, topic1, topic1]).matches(log)


def test_registry_chains_accept_a_url_or_an_object():
    key = "0x" + "01" * 32
    config = RegistryConfig.model_validate({"relayer_key": key,
                                            "chains": {1: "http://a", "5": {"rpc_url": "http://b", "confirmations": 3}}})
    assert config.chains[1].rpc_url == "http://a" and config.chains[1].confirmations == 1
    assert config.chains[5].confirmations == 3
    with pytest.raises(ValueError):
        RegistryConfig.model_validate({"relayer_key": key, "chains": {1: {"rpc_url": "http://a", "confirmation": 3}}})
    with pytest.raises(ValueError, match="relayer_key"):
        RegistryConfig.model_validate({"chains": {1: "http://a"}})


async def test_an_upgraded_database_keeps_its_inputs_and_refuses_replays_of_old_signatures(tmp_path):
    db = Database(str(tmp_path / "old.db"))
    await db.open()
    await db.migrate(MIGRATIONS[:1])  # the schema before per-config triggers and single-use signatures
    maintainer = Account.create().address
    await db.execute("INSERT INTO reg_roles (id, project_id, account, role, project_key, signature, deprecated_at,"
                     " created_at) VALUES ('r1', 'p1', ?, 'maintainer', 'K', '0x', 1, 1)", (maintainer,))
    await db.execute("INSERT INTO reg_inputs (id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs,"
                     " proofs, count, created_at) VALUES ('i1', 't1', 'c1', 1, '0xab', 0, '{}', '{}', '{}', 1, 1)")
    store = RegistryStore(db)
    await store.start()
    await RegistryService(store, RegistryConfig()).start()
    assert (await store.input("i1"))["trigger"] == {"chainId": 1, "transactionHash": "0xab", "logIndex": 0}
    trigger = {"chainId": 1, "transactionHash": "0xab", "logIndex": 0}
    assert await store.add_input("t1", "c1", trigger, {}, {}, {}, 1) is None  # still once per config
    assert await store.add_input("t2", "c2", trigger, {}, {}, {}, 1) is not None  # another config may use it
    old = sig.typed_digest(sig.maintainer_typed_data(1, "p1", maintainer))
    assert await store.signature_used(old)  # the removed maintainer's old signature stays refused
    await db.close()


async def test_legacy_signatures_can_be_refused(tmp_path):

    db = Database(str(tmp_path / "reg.db"))
    await db.open()
    store = RegistryStore(db)
    await store.start()
    owner, maintainer = Account.create(), Account.create()
    service = RegistryService(store, RegistryConfig(legacy_signatures=False))
    project_id = (await store.create_project(owner.address, "p"))["projectId"]
    legacy = sig.sign_typed(sig.maintainer_typed_data(1, project_id, maintainer.address), owner.key.hex())
    with pytest.raises(Invalid) as refused:
        await service.add_maintainer(project_id, maintainer.address, legacy)
    assert refused.value.message.startswith("nonce, deadline")
    deadline = int(time.time()) + 60
    fresh = sig.sign_typed(sig.maintainer_typed_data(1, project_id, maintainer.address, 1, deadline), owner.key.hex())
    added = await service.add_maintainer(project_id, maintainer.address, fresh, 1, deadline)
    assert added["maintainer"] == maintainer.address
    await db.close()


async def test_a_failed_round_of_the_event_watcher_is_logged_and_the_next_round_runs(tmp_path, monkeypatch, caplog):
    import asyncio
    import logging

    from node.chain.follow import LogFollower
    from node.lifecycle import Supervisor
    from node.registry.config import RegistryChain
    from node.registry.watcher import EventWatcher

    db = Database(str(tmp_path / "reg.db"))
    await db.open()
    store = RegistryStore(db)
    await store.start()
    service = RegistryService(store, RegistryConfig(relayer_key="0x" + "01" * 32))
    rounds = []

    async def flaky_round(self):
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            raise RuntimeError("boom")

    monkeypatch.setattr(LogFollower, "round", flaky_round)
    watcher = EventWatcher(service, None, 1, RegistryChain(rpc_url="http://127.0.0.1:9", poll_interval=0.1))
    supervisor = Supervisor(on_fatal=lambda name: None)
    with caplog.at_level(logging.INFO):
        watcher.start(supervisor)
        deadline = time.monotonic() + 5
        while len(rounds) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.wait_for(watcher.stop(), 10)
    assert len(rounds) >= 2 and rounds[1] - rounds[0] >= 0.09  # the next round, one poll_interval later
    [failed] = [r for r in caplog.records if r.getMessage() == "task.round_failed"
                and r._fields["task"] == "registry-watch-1"]
    assert "boom" in str(failed.exc_info[1])
    assert supervisor.task("registry-watch-1").restarts == 0  # a failed round is not a dead loop
    await db.close()


async def test_after_the_upgrade_the_watchers_old_events_do_not_fire_again_and_old_cron_rows_block_nothing(tmp_path):
    db = Database(str(tmp_path / "old.db"))
    await db.open()
    await db.migrate(MIGRATIONS[:2])  # before the node's own namespace
    event, tick = ("0x" + "aa" * 32, 0), ("0x" + "bb" * 32, 0)
    await db.execute("INSERT INTO reg_inputs (id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs,"
                     " proofs, count, created_at, block_number, block_hash) VALUES"
                     " ('i1', 't1', 'c1', 1, ?, 0, '{}', '{}', '{}', 0, 1, 7, '0x07')", (event[0],))
    await db.execute("INSERT INTO reg_inputs (id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs,"
                     " proofs, count, created_at) VALUES ('i2', 't1', 'c1', 0, ?, 0, '{}', '{}', '{}', 0, 1)", (tick[0],))
    store = RegistryStore(db)
    await store.start()
    run = {"data": {}, "fields": {}, "default_ts": None}
    watched = {"chainId": 1, "transactionHash": event[0], "logIndex": 0}
    assert await store.claim("t1", "c1", watched, {}, {}, run, block=(7, "0x07")) is None  # a rescan: no second fire
    squatted = {"chainId": 0, "transactionHash": tick[0], "logIndex": 0}  # maybe an outsider's, before the fix
    assert await store.claim("t1", "c1", squatted, {}, {}, run) is not None
    await db.close()
