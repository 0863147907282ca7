"""EVM log triggers of CRE workflows: each matching log fires its handler once.

A log trigger subscription (`evm:ChainSelector:<sel>@1.0.0`, method `LogTrigger`) names contract
addresses, optional topic filters (per position, any of the values; empty = any) and a
confidence. The node follows the chain with the chain subsystem's `LogFollower` (a cursor in
SQLite, `confirmations` blocks behind the head for `SAFE`/`FINALIZED`, none for `LATEST`,
block-hash reorg detection and rewind), one follower per handler.

Each matching log is first claimed in `cre_wasm_log_fired`, unique per (workflow, handler,
transaction, log index), with the log itself and the execution id it will run under, and only
then fired: a restart that scans the block again never fires it twice. The claim is marked
executed in the same transaction that records the execution's end (service.py), so a crash
between the claim and the end of the execution leaves an unexecuted claim, and the handler runs
those again (oldest first) before it follows the chain: each log is executed at least once, and
recorded once (the run again reuses the claim's execution id, hence its execution record; a
report it writes carries that same execution id, which the forwarder accepts once per receiver).

The execution id is sha256(workflow id ‖ the log's transaction hash and index ‖ handler), as a
DON derives it from the workflow and the trigger event, not from the time of the run.

A reorg deeper than the confirmations forgets the claims of the replaced blocks, so a log that
reappears in another block fires again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from web3 import AsyncWeb3
from web3.providers import AsyncHTTPProvider

from node.chain.follow import LogFollower
from node.cre.wasm import messages as pb
from node.cre.wasm.runtime import Subscription
from node.logs import get_logger
from node.storage import Database, Migration

log = get_logger(__name__)

MIGRATIONS = [
    Migration(
        "crewasm.0003",
        """
        CREATE TABLE cre_wasm_log_cursor (
            workflow TEXT NOT NULL,
            handler INTEGER NOT NULL,
            block INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (workflow, handler)
        );
        CREATE TABLE cre_wasm_log_blocks (
            workflow TEXT NOT NULL,
            handler INTEGER NOT NULL,
            number INTEGER NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (workflow, handler, number)
        );
        CREATE TABLE cre_wasm_log_fired (
            workflow TEXT NOT NULL,
            handler INTEGER NOT NULL,
            tx_hash TEXT NOT NULL,
            log_index INTEGER NOT NULL,
            block_number INTEGER NOT NULL,
            claimed_at REAL NOT NULL,
            PRIMARY KEY (workflow, handler, tx_hash, log_index)
        );
        """,
    ),
    Migration(
        "crewasm.0004",
        """
        ALTER TABLE cre_wasm_log_fired ADD COLUMN execution_id TEXT;
        ALTER TABLE cre_wasm_log_fired ADD COLUMN payload BLOB;
        ALTER TABLE cre_wasm_log_fired ADD COLUMN trigger TEXT;
        ALTER TABLE cre_wasm_log_fired ADD COLUMN executed_at REAL;
        UPDATE cre_wasm_log_fired SET executed_at = claimed_at;
        CREATE INDEX cre_wasm_log_fired_execution ON cre_wasm_log_fired (execution_id);
        CREATE INDEX cre_wasm_log_fired_pending ON cre_wasm_log_fired (workflow, handler, block_number)
            WHERE executed_at IS NULL;
        """,
    ),
]

_LOG = pb.message("capabilities.blockchain.evm.v1alpha.Log")
CONFIDENCE_LATEST = 1


class LogCursor:
    """One handler's follower state, in the shape LogFollower expects, plus the fired claims."""

    def __init__(self, db: Database, workflow: str, handler: int) -> None:
        self._db = db
        self._key = (workflow, handler)

    async def cursor(self) -> int | None:
        row = await self._db.fetchone("SELECT block FROM cre_wasm_log_cursor WHERE workflow = ? AND handler = ?",
                                      self._key)
        return row[0] if row else None

    async def advance(self, block: int, hashes: dict[int, str], keep: int = 256) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO cre_wasm_log_cursor (workflow, handler, block, updated_at) VALUES (?, ?, ?, ?)"
                         " ON CONFLICT (workflow, handler) DO UPDATE SET block = excluded.block,"
                         " updated_at = excluded.updated_at", (*self._key, block, time.time()))
            conn.executemany("INSERT OR REPLACE INTO cre_wasm_log_blocks (workflow, handler, number, hash)"
                             " VALUES (?, ?, ?, ?)", [(*self._key, n, h) for n, h in hashes.items()])
            conn.execute("DELETE FROM cre_wasm_log_blocks WHERE workflow = ? AND handler = ? AND number < ?",
                         (*self._key, block - keep))

        await self._db.run_in_transaction(op)

    async def block_hash(self, number: int) -> str | None:
        row = await self._db.fetchone("SELECT hash FROM cre_wasm_log_blocks WHERE workflow = ? AND handler = ?"
                                      " AND number = ?", (*self._key, number))
        return row[0] if row else None

    async def rewind(self, block: int, since: float) -> list[str]:
        def op(conn: sqlite3.Connection) -> list[str]:
            conn.execute("DELETE FROM cre_wasm_log_blocks WHERE workflow = ? AND handler = ? AND number > ?",
                         (*self._key, block))
            conn.execute("UPDATE cre_wasm_log_cursor SET block = ?, updated_at = ? WHERE workflow = ? AND handler = ?",
                         (block, time.time(), *self._key))
            gone = [f"{r[0]}:{r[1]}" for r in conn.execute(
                "SELECT tx_hash, log_index FROM cre_wasm_log_fired WHERE workflow = ? AND handler = ?"
                " AND block_number > ?", (*self._key, block)).fetchall()]
            conn.execute("DELETE FROM cre_wasm_log_fired WHERE workflow = ? AND handler = ? AND block_number > ?",
                         (*self._key, block))
            return gone

        return await self._db.run_in_transaction(op)

    async def claim(self, tx_hash: str, log_index: int, block_number: int, execution_id: str, payload: bytes,
                    trigger: dict[str, Any]) -> bool:
        """True once per log: the first caller fires it. The claim keeps what a run again needs."""
        return await self._db.execute(
            "INSERT INTO cre_wasm_log_fired (workflow, handler, tx_hash, log_index, block_number, claimed_at,"
            " execution_id, payload, trigger) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (*self._key, tx_hash.lower(), log_index, block_number, time.time(), execution_id, payload,
             json.dumps(trigger))) == 1

    async def unexecuted(self) -> list[Any]:
        """Claims whose execution never ended (the node stopped first), oldest first: at most the
        logs one crash cut short, since each is marked executed when its execution ends."""
        return await self._db.fetchall(
            "SELECT execution_id, payload, trigger, tx_hash, log_index FROM cre_wasm_log_fired"
            " WHERE workflow = ? AND handler = ? AND executed_at IS NULL ORDER BY block_number, log_index",
            self._key)


def execution_id(workflow_id: str, handler: int, tx_hash: str, log_index: int) -> str:
    return hashlib.sha256(f"{workflow_id}|{tx_hash.lower()}:{log_index}|{handler}".encode()).hexdigest()


def matches(log_filter: Any, entry: dict[str, Any]) -> bool:
    addresses = {"0x" + a.hex() for a in log_filter.addresses}
    if entry["address"].lower() not in addresses:
        return False
    topics = [t.lower() for t in entry["topics"]]
    for position, wanted in enumerate(log_filter.topics):
        values = {"0x" + v.hex() for v in wanted.values}
        if values and (position >= len(topics) or topics[position] not in values):
            return False
    return True


def log_payload(entry: dict[str, Any]) -> Any:
    out = _LOG(address=bytes.fromhex(entry["address"][2:]), tx_hash=bytes.fromhex(entry["transactionHash"][2:]),
               block_hash=bytes.fromhex(entry["blockHash"][2:]), data=bytes.fromhex(entry["data"][2:]),
               index=entry["logIndex"])
    out.topics.extend(bytes.fromhex(t[2:]) for t in entry["topics"])
    if entry["topics"]:
        out.event_sig = bytes.fromhex(entry["topics"][0][2:])
    out.block_number.CopyFrom(pb.int_to_bigint(entry["blockNumber"]))
    return out


Fire = Callable[[Subscription, Any, dict[str, Any], str], Awaitable[Any]]  # (sub, payload, trigger, execution id)


class LogTrigger:
    """Follows one log-trigger handler of one workflow; run under the node's Supervisor."""

    def __init__(self, db: Database, workflow: str, sub: Subscription, rpc_url: str, confirmations: int,
                 fire: Fire, poll_interval: float = 1.0, workflow_id: str = "") -> None:
        self._workflow = workflow
        self._workflow_id = workflow_id or workflow
        self._sub = sub
        self._fire = fire
        self.cursor = LogCursor(db, workflow, sub.index)
        self._w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
        self._trail = 0 if sub.log_filter.confidence == CONFIDENCE_LATEST else confirmations
        self.poll_interval = poll_interval
        addresses = ["0x" + a.hex() for a in sub.log_filter.addresses]

        async def watched() -> list[str]:
            return addresses

        self._follower = LogFollower(self._w3, self.cursor, addresses=watched, on_logs=self._on_logs,
                                     on_reorg=self._on_reorg, trail=self._trail)
        self.wake = self._follower.wake  # the Supervisor's loop runs the next round at once when set
        self._resumed = False

    async def close(self) -> None:
        """Close the RPC connection (after the Supervisor stopped the loop)."""
        await self._w3.provider.disconnect()

    async def round(self) -> None:
        """One follower round; the first (until it succeeds) runs again the executions a stopped
        process left claimed."""
        if not self._resumed:
            await self._run_unexecuted()
            self._resumed = True
        await self._follower.round()

    async def _run_unexecuted(self) -> None:
        """Run again the claimed logs whose execution never ended (at least once)."""
        for row in await self.cursor.unexecuted():  # once per start of the handler: a run that fails again waits
            log.warning("cre.wasm.log_run_again", workflow=self._workflow, handler=self._sub.index,
                        tx=row["tx_hash"], log_index=row["log_index"], execution=row["execution_id"][:16],
                        reason="claimed, but its execution never ended (the node stopped)")
            trigger = {**json.loads(row["trigger"]), "runAgain": True}
            await self._fire(self._sub, _LOG.FromString(row["payload"]), trigger, row["execution_id"])

    async def _on_logs(self, logs: list[dict[str, Any]]) -> None:
        for entry in logs:
            if not matches(self._sub.log_filter, entry):
                continue
            tx, index = entry["transactionHash"], entry["logIndex"]
            payload = log_payload(entry)
            trigger = {"transactionHash": tx, "logIndex": index, "blockNumber": entry["blockNumber"]}
            run_id = execution_id(self._workflow_id, self._sub.index, tx, index)
            if not await self.cursor.claim(tx, index, entry["blockNumber"], run_id, payload.SerializeToString(),
                                           trigger):
                log.info("cre.wasm.log_already_fired", workflow=self._workflow, tx=tx, log_index=index)
                continue
            await self._fire(self._sub, payload, trigger, run_id)

    async def _on_reorg(self, reverted: list[str]) -> None:
        log.warning("cre.wasm.logs_reverted", workflow=self._workflow, handler=self._sub.index,
                    logs=len(reverted), ids=reverted[:20])
