"""The event watcher's per-chain cursor and recent block hashes (tables `reg_watch_*`), with the
shape `node.chain.follow.LogFollower` expects. A rewind (a reorg deeper than the confirmations)
also reverts, in the same transaction, what the node fired on the replaced blocks: their inputs
are marked reverted (so the trigger may fire again if the event comes back in another block),
their executions 'reverted' and their intents 'reverted' (closed to proposals and signing)."""

from __future__ import annotations

import sqlite3
import time

from node.storage import Database


class WatchCursor:
    def __init__(self, db: Database, chain_id: int) -> None:
        self._db = db
        self.chain_id = chain_id

    async def cursor(self) -> int | None:
        row = await self._db.fetchone("SELECT block FROM reg_watch_cursor WHERE chain_id = ?", (self.chain_id,))
        return row[0] if row else None

    async def advance(self, block: int, hashes: dict[int, str], keep: int = 256) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO reg_watch_cursor (chain_id, block, updated_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (chain_id) DO UPDATE SET block = excluded.block, updated_at = excluded.updated_at",
                         (self.chain_id, block, time.time()))
            conn.executemany("INSERT OR REPLACE INTO reg_watch_blocks (chain_id, number, hash) VALUES (?, ?, ?)",
                             [(self.chain_id, n, h) for n, h in hashes.items()])
            conn.execute("DELETE FROM reg_watch_blocks WHERE chain_id = ? AND number < ?", (self.chain_id, block - keep))

        await self._db.run_in_transaction(op)

    async def block_hash(self, number: int) -> str | None:
        row = await self._db.fetchone("SELECT hash FROM reg_watch_blocks WHERE chain_id = ? AND number = ?",
                                      (self.chain_id, number))
        return row[0] if row else None

    async def rewind(self, block: int, since: float) -> list[str]:
        """Forget blocks after `block` and revert what fired on them. Returns the input ids
        reverted. (`since` is the common ancestor's time; the block number is what counts here.)"""
        now = time.time()

        def op(conn: sqlite3.Connection) -> list[str]:
            conn.execute("DELETE FROM reg_watch_blocks WHERE chain_id = ? AND number > ?", (self.chain_id, block))
            conn.execute("UPDATE reg_watch_cursor SET block = ?, updated_at = ? WHERE chain_id = ?",
                         (block, now, self.chain_id))
            inputs = [r[0] for r in conn.execute(
                "SELECT id FROM reg_inputs WHERE chain_id = ? AND block_number > ? AND reverted_at IS NULL",
                (self.chain_id, block)).fetchall()]
            for input_id in inputs:
                conn.execute("UPDATE reg_inputs SET reverted_at = ? WHERE id = ?", (now, input_id))
                executions = [r[0] for r in conn.execute("SELECT id FROM reg_executions WHERE input_id = ?",
                                                         (input_id,)).fetchall()]
                for execution_id in executions:
                    conn.execute("UPDATE reg_executions SET status = 'reverted' WHERE id = ?", (execution_id,))
                    intents = [r[0] for r in conn.execute(
                        "SELECT id FROM reg_intents WHERE execution_id = ? AND status != 'reverted'",
                        (execution_id,)).fetchall()]
                    conn.executemany("UPDATE reg_intents SET status = 'reverted' WHERE id = ?", [(i,) for i in intents])
                    conn.executemany("INSERT INTO reg_intent_events (intent_id, timestamp, level, message)"
                                     " VALUES (?, ?, ?, ?)",
                                     [(i, now, "warning", "Reverted: a chain reorganisation removed the trigger event")
                                      for i in intents])
            return inputs

        return await self._db.run_in_transaction(op)
