"""Chain state in SQLite: the listener's cursor and recent block hashes (reorg detection), the
subscriptions this node tracks, and one row per (subscription, interval) this node worked on,
which is what makes delivery at-most-once across restarts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from node.chain.codec import Subscription
from node.storage import Database, Migration

MIGRATIONS = [
    Migration(
        "chain.0001",
        """
        CREATE TABLE chain_cursor (coordinator TEXT PRIMARY KEY, block INTEGER NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE chain_blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
        CREATE TABLE chain_subscriptions (
            id INTEGER PRIMARY KEY, data TEXT NOT NULL, containers TEXT NOT NULL, status TEXT NOT NULL,
            created_block INTEGER, updated_at REAL NOT NULL
        );
        CREATE TABLE chain_deliveries (
            subscription_id INTEGER NOT NULL, interval INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'sending', 'delivered', 'failed', 'skipped')),
            attempts INTEGER NOT NULL DEFAULT 0, job_id TEXT, tx_hash TEXT, error TEXT,
            next_attempt_at REAL NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
            PRIMARY KEY (subscription_id, interval)
        )
        """,
    ),
    Migration(
        "chain.0002",
        """
        CREATE TABLE chain_delegated (
            owner TEXT NOT NULL, nonce INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'delivered', 'failed')),
            job_id TEXT, tx_hash TEXT, error TEXT, updated_at REAL NOT NULL,
            PRIMARY KEY (owner, nonce)
        )
        """,
    ),
]


MIGRATIONS.append(Migration(
    "chain.0003",
    """
    CREATE TABLE chain_txs (
        address TEXT NOT NULL, nonce INTEGER NOT NULL, label TEXT NOT NULL,
        to_address TEXT NOT NULL, data TEXT NOT NULL, value TEXT NOT NULL, gas INTEGER NOT NULL,
        fees TEXT NOT NULL, tx_hash TEXT NOT NULL, hashes TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'mined', 'reverted', 'replaced', 'cancelled', 'failed')),
        sent_block INTEGER NOT NULL, last_sent_block INTEGER NOT NULL, resends INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, updated_at REAL NOT NULL,
        PRIMARY KEY (address, nonce)
    )
    """,
))


class ChainStore:
    def __init__(self, db: Database, coordinator: str | None = None) -> None:
        self._db = db
        self._coordinator = (coordinator or "").lower()  # the cursor's key; known at start with a Registry

    async def start(self, coordinator: str | None = None) -> None:
        if coordinator is not None:
            self._coordinator = coordinator.lower()
        await self._db.migrate(MIGRATIONS)

    # -- cursor ----------------------------------------------------------------------------

    async def cursor(self) -> int | None:
        row = await self._db.fetchone("SELECT block FROM chain_cursor WHERE coordinator = ?", (self._coordinator,))
        return row[0] if row else None

    async def advance(self, block: int, hashes: dict[int, str], keep: int = 256) -> None:
        def op(conn) -> None:
            conn.execute("INSERT INTO chain_cursor (coordinator, block, updated_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (coordinator) DO UPDATE SET block = excluded.block, updated_at = excluded.updated_at",
                         (self._coordinator, block, time.time()))
            conn.executemany("INSERT OR REPLACE INTO chain_blocks (number, hash) VALUES (?, ?)", hashes.items())
            conn.execute("DELETE FROM chain_blocks WHERE number < ?", (block - keep,))

        await self._db.run_in_transaction(op)

    async def block_hash(self, number: int) -> str | None:
        row = await self._db.fetchone("SELECT hash FROM chain_blocks WHERE number = ?", (number,))
        return row[0] if row else None

    async def rewind(self, block: int, since: float) -> list[int]:
        """Forget blocks after `block` (a reorg replaced them) and reopen what this node finished
        since `since` (the common ancestor's time): those deliveries may be gone from the chain.
        Reopened rows are re-checked against the chain before anything is delivered again.
        Returns the subscription ids reopened."""
        def op(conn) -> list[int]:
            conn.execute("DELETE FROM chain_blocks WHERE number > ?", (block,))
            conn.execute("UPDATE chain_cursor SET block = ?, updated_at = ? WHERE coordinator = ?",
                         (block, time.time(), self._coordinator))
            ids = [r[0] for r in conn.execute(
                "SELECT DISTINCT subscription_id FROM chain_deliveries WHERE status IN ('delivered', 'skipped')"
                " AND updated_at >= ?", (since,)).fetchall()]
            conn.execute("UPDATE chain_deliveries SET status = 'failed', attempts = 0, next_attempt_at = 0,"
                         " error = 'reopened after a reorg' WHERE status IN ('delivered', 'skipped') AND updated_at >= ?",
                         (since,))
            conn.executemany("UPDATE chain_subscriptions SET status = 'active' WHERE id = ? AND status = 'completed'",
                             [(i,) for i in ids])
            return ids

        return await self._db.run_in_transaction(op)

    # -- subscriptions -----------------------------------------------------------------------

    async def save_subscriptions(self, subs: list[tuple[Subscription, list[str], str]], block: int | None) -> None:
        def op(conn) -> None:
            conn.executemany(
                "INSERT INTO chain_subscriptions (id, data, containers, status, created_block, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data,"
                " status = excluded.status, updated_at = excluded.updated_at",
                [(s.id, json.dumps(s.to_json() | {"raw": [*s.as_tuple()[:5], s.container_id.hex(),
                                                          *s.as_tuple()[6:]]}),
                  json.dumps(c), status, block, time.time()) for s, c, status in subs])

        await self._db.run_in_transaction(op)

    async def set_subscription_status(self, sub_id: int, status: str) -> None:
        await self._db.execute("UPDATE chain_subscriptions SET status = ?, updated_at = ? WHERE id = ?",
                               (status, time.time(), sub_id))

    async def active_subscriptions(self) -> list[tuple[Subscription, list[str]]]:
        rows = await self._db.fetchall("SELECT id, data, containers FROM chain_subscriptions WHERE status = 'active'")
        out = []
        for row in rows:
            raw = json.loads(row["data"])["raw"]
            raw[5] = bytes.fromhex(raw[5])
            out.append((Subscription.from_tuple(row["id"], raw), json.loads(row["containers"])))
        return out

    # -- deliveries ---------------------------------------------------------------------------

    async def claim(self, sub_id: int, interval: int, max_attempts: int) -> int | None:
        """Take (subscription, interval) for processing; returns the attempt number, or None
        when it is done, running, or waiting for its next retry."""
        now = time.time()

        def op(conn) -> int | None:
            row = conn.execute("SELECT status, attempts, next_attempt_at FROM chain_deliveries"
                               " WHERE subscription_id = ? AND interval = ?", (sub_id, interval)).fetchone()
            if row is None:
                conn.execute("INSERT INTO chain_deliveries (subscription_id, interval, status, attempts, updated_at)"
                             " VALUES (?, ?, 'running', 1, ?)", (sub_id, interval, now))
                return 1
            status, attempts, next_at = row
            if status != "failed" or attempts >= max_attempts or next_at > now:
                return None
            conn.execute("UPDATE chain_deliveries SET status = 'running', attempts = attempts + 1, updated_at = ?"
                         " WHERE subscription_id = ? AND interval = ?", (now, sub_id, interval))
            return attempts + 1

        return await self._db.run_in_transaction(op)

    async def mark(self, sub_id: int, interval: int, status: str, *, job_id: str | None = None,
                   tx_hash: str | None = None, error: str | None = None, retry_in: float = 0.0) -> None:
        await self._db.execute(
            "INSERT INTO chain_deliveries (subscription_id, interval, status, attempts, job_id, tx_hash, error,"
            " next_attempt_at, updated_at) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?)"
            " ON CONFLICT (subscription_id, interval) DO UPDATE SET status = excluded.status,"
            " job_id = COALESCE(excluded.job_id, job_id), tx_hash = COALESCE(excluded.tx_hash, tx_hash),"
            " error = excluded.error, next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
            (sub_id, interval, status, job_id, tx_hash, error, time.time() + retry_in, time.time()))

    async def interrupted(self) -> list[dict[str, Any]]:
        """Rows a previous process left 'running' or 'sending'."""
        rows = await self._db.fetchall("SELECT * FROM chain_deliveries WHERE status IN ('running', 'sending')")
        return [dict(r) for r in rows]

    # -- transactions (node/chain/wallet.py) ----------------------------------------------------

    async def tx_record(self, row: dict[str, Any]) -> None:
        """A transaction about to be sent (a nonce whose earlier send failed is taken over)."""
        now = time.time()
        await self._db.execute(
            "INSERT OR REPLACE INTO chain_txs (address, nonce, label, to_address, data, value, gas, fees, tx_hash,"
            " hashes, status, sent_block, last_sent_block, resends, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, 0, ?, ?)",
            (row["address"].lower(), row["nonce"], row["label"], row["to"], row["data"], str(row["value"]), row["gas"],
             json.dumps(row["fees"]), row["tx_hash"], json.dumps([row["tx_hash"]]), row["sent_block"],
             row["sent_block"], now, now))

    async def tx_sent_again(self, address: str, nonce: int, tx_hash: str, fees: dict[str, int], block: int) -> None:
        def op(conn) -> None:
            row = conn.execute("SELECT hashes FROM chain_txs WHERE address = ? AND nonce = ?",
                               (address.lower(), nonce)).fetchone()
            if row is None:
                return
            conn.execute("UPDATE chain_txs SET tx_hash = ?, hashes = ?, fees = ?, last_sent_block = ?,"
                         " resends = resends + 1, updated_at = ? WHERE address = ? AND nonce = ?",
                         (tx_hash, json.dumps([*json.loads(row[0]), tx_hash]), json.dumps(fees), block, time.time(),
                          address.lower(), nonce))

        await self._db.run_in_transaction(op)

    async def tx_done(self, address: str, nonce: int, status: str, tx_hash: str | None) -> None:
        await self._db.execute("UPDATE chain_txs SET status = ?, tx_hash = COALESCE(?, tx_hash), updated_at = ?"
                               " WHERE address = ? AND nonce = ?", (status, tx_hash, time.time(), address.lower(), nonce))

    async def tx_pending(self, address: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall("SELECT * FROM chain_txs WHERE address = ? AND status = 'pending' ORDER BY nonce",
                                       (address.lower(),))
        return [{"address": r["address"], "nonce": r["nonce"], "label": r["label"], "to": r["to_address"],
                 "data": r["data"], "value": int(r["value"]), "gas": r["gas"], "fees": json.loads(r["fees"]),
                 "tx_hash": r["tx_hash"], "hashes": json.loads(r["hashes"]), "sent_block": r["sent_block"],
                 "last_sent_block": r["last_sent_block"], "resumed": True} for r in rows]

    async def txs(self, address: str) -> list[dict[str, Any]]:
        rows = await self._db.fetchall("SELECT nonce, label, tx_hash, hashes, status, resends, sent_block, fees"
                                       " FROM chain_txs WHERE address = ? ORDER BY nonce", (address.lower(),))
        return [dict(r) | {"hashes": json.loads(r["hashes"]), "fees": json.loads(r["fees"])} for r in rows]

    # -- delegated subscriptions ----------------------------------------------------------------

    async def claim_delegated(self, owner: str, nonce: int) -> bool:
        """Take a delegated subscription (owner, nonce) for running: False when a copy of it is
        running or was delivered (only a failed one is taken again). Committed before it returns,
        so the answer that accepts it is durable."""
        now = time.time()

        def op(conn) -> bool:
            row = conn.execute("SELECT status FROM chain_delegated WHERE owner = ? AND nonce = ?",
                               (owner.lower(), nonce)).fetchone()
            if row is not None and row[0] != "failed":
                return False
            conn.execute("INSERT INTO chain_delegated (owner, nonce, status, updated_at) VALUES (?, ?, 'running', ?)"
                         " ON CONFLICT (owner, nonce) DO UPDATE SET status = 'running', error = NULL,"
                         " updated_at = excluded.updated_at", (owner.lower(), nonce, now))
            return True

        return await self._db.run_in_transaction(op)

    async def finish_delegated(self, owner: str, nonce: int, status: str, *, job_id: str | None = None,
                               tx_hash: str | None = None, error: str | None = None) -> None:
        await self._db.execute("UPDATE chain_delegated SET status = ?, job_id = ?, tx_hash = ?, error = ?,"
                               " updated_at = ? WHERE owner = ? AND nonce = ?",
                               (status, job_id, tx_hash, error, time.time(), owner.lower(), nonce))

    async def release_interrupted_delegated(self, in_flight: Iterable[tuple[str, int]] = ()) -> int:
        """Delegated runs a previous process left 'running' become 'failed': a copy may run them
        again (the Coordinator refuses a second delivery of the same (owner, nonce) anyway).
        Those whose transaction is in flight (`in_flight`: (owner, nonce)) stay: the wallet
        watches them to the end."""
        def op(conn) -> int:
            rows = conn.execute("SELECT owner, nonce FROM chain_delegated WHERE status = 'running'").fetchall()
            keep = {(o.lower(), n) for o, n in in_flight}
            release = [(time.time(), o, n) for o, n in rows if (o, n) not in keep]
            conn.executemany("UPDATE chain_delegated SET status = 'failed', error = 'interrupted by restart',"
                             " updated_at = ? WHERE owner = ? AND nonce = ?", release)
            return len(release)

        return await self._db.run_in_transaction(op)

    async def deliveries(self, sub_id: int | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM chain_deliveries", []
        if sub_id is not None:
            sql += " WHERE subscription_id = ?"
            params.append(sub_id)
        return [dict(r) for r in await self._db.fetchall(sql + " ORDER BY subscription_id, interval", params)]
