"""Problems are said out loud: each detector raises its problem once (a warning log line and
the node_problems gauge) when the condition holds, and clears it when it stops holding."""

from __future__ import annotations

import logging

from node.observe.config import ObserveConfig
from node.observe.sampler import ChainSample, Sampler, Snapshot
from node.observe.watchdog import Watchdog

CONFIG = ObserveConfig(cursor_stall_seconds=30, subscription_failures=3, container_restarts=3, restart_window=60)


def chain(**kw) -> Snapshot:
    base = dict(address="0xabc", rpc_up=True, head=100, cursor=100, trail=1, balance_wei=10**18, min_balance_wei=0)
    return Snapshot(taken_at=0, chain=ChainSample(**{**base, **kw}))


def dog(restarts=None) -> Watchdog:
    return Watchdog(Sampler(), CONFIG, restarts=lambda: restarts or {})


def test_a_cursor_that_stops_while_the_chain_moves_on_is_a_problem(caplog):
    watchdog = dog()
    caplog.set_level(logging.INFO)
    watchdog.check(chain(head=100, cursor=99), now=0)
    watchdog.check(chain(head=120, cursor=99), now=29)
    assert watchdog.counts()["chain_cursor_stalled"] == 0
    watchdog.check(chain(head=130, cursor=99), now=31)
    assert watchdog.counts()["chain_cursor_stalled"] == 1
    [line] = [r for r in caplog.records if r.getMessage() == "problem.detected"]
    assert line.levelno == logging.WARNING
    watchdog.check(chain(head=131, cursor=99), now=40)  # still stalled: said once, not every check
    assert len([r for r in caplog.records if r.getMessage() == "problem.detected"]) == 1
    watchdog.check(chain(head=131, cursor=130), now=41)
    assert watchdog.counts()["chain_cursor_stalled"] == 0
    assert any(r.getMessage() == "problem.cleared" for r in caplog.records)


def test_a_quiet_chain_is_not_a_stalled_cursor():
    watchdog = dog()
    watchdog.check(chain(head=100, cursor=99), now=0)
    watchdog.check(chain(head=100, cursor=99), now=600)  # no new blocks: nothing to read
    assert watchdog.counts()["chain_cursor_stalled"] == 0


def test_an_rpc_that_stops_answering_stalls_the_cursor():
    watchdog = dog()
    watchdog.check(chain(head=100, cursor=100), now=0)
    watchdog.check(chain(rpc_up=False, rpc_error="connection refused", head=100, cursor=100), now=31)
    [problem] = watchdog.active.values()
    assert problem.problem == "chain_cursor_stalled" and "connection refused" in problem.detail


def test_a_subscription_that_keeps_failing_and_a_low_wallet_are_problems():
    watchdog = dog()
    watchdog.check(chain(failing=[(7, 3)], balance_wei=5, min_balance_wei=10), now=0)
    assert watchdog.counts() == {"chain_cursor_stalled": 0, "subscription_failing": 1, "wallet_balance_low": 1,
                                 "container_restarting": 0, "tx_pending_long": 0}
    assert ("subscription_failing", "7") in watchdog.active
    watchdog.check(chain(failing=[], balance_wei=50, min_balance_wei=10), now=1)
    assert watchdog.active == {}


def test_a_transaction_pending_for_the_alert_number_of_blocks_is_a_problem_until_it_is_mined():
    watchdog = dog()
    watchdog.check(chain(tx_pending=1, tx_pending_blocks=9, tx_pending_alert_blocks=10), now=0)
    assert watchdog.counts()["tx_pending_long"] == 0
    watchdog.check(chain(tx_pending=2, tx_pending_blocks=10, tx_pending_alert_blocks=10), now=1)
    [problem] = watchdog.active.values()
    assert problem.problem == "tx_pending_long" and "10 blocks" in problem.detail
    watchdog.check(chain(tx_pending=0, tx_pending_blocks=0, tx_pending_alert_blocks=10), now=2)
    assert watchdog.active == {}


def test_a_container_that_keeps_restarting_is_a_problem_and_old_restarts_age_out():
    restarts = {"echo": 0}
    watchdog = dog(restarts)
    watchdog.check(Snapshot(), now=0)
    restarts["echo"] = 2
    watchdog.check(Snapshot(), now=10)
    assert watchdog.counts()["container_restarting"] == 0
    restarts["echo"] = 3
    watchdog.check(Snapshot(), now=20)
    assert ("container_restarting", "echo") in watchdog.active
    watchdog.check(Snapshot(), now=100)  # no restart for a whole window
    assert watchdog.counts()["container_restarting"] == 0

