"""Group commit: many small writes from concurrent requests share one transaction.

`await committer.submit(op)` queues `op` (a function of a sqlite3 connection) and returns its
result once the transaction holding it has committed. Everything submitted while a flush is
running goes into the next one, so under load each commit carries many writes and at low load
a write waits for nothing but its own commit. `on_commit` (cheap, synchronous) runs right after
the COMMIT, before any waiter resumes: what it publishes is visible a turn of the event loop
sooner than if the waiter published it, and is published even if the waiter was cancelled. An exception from one op fails only that op: the
batch is then redone with each op in its own savepoint, and the others commit. Ops are pure SQL
(no side effects outside the transaction), so running one twice is harmless.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

from node.logs import get_logger
from node.storage.db import Database

Op = Callable[[sqlite3.Connection], Any]
# One submitted op: the op, the future its caller awaits, and its on_commit hook.
Queued = tuple[Op, asyncio.Future, Callable[[Any], None] | None]
log = get_logger(__name__)


class GroupCommitter:
    def __init__(self, db: Database, max_batch: int = 512) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: list[Queued] = []
        self._flushing = False

    async def submit(self, op: Op, on_commit: Callable[[Any], None] | None = None) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((op, future, on_commit))
        if not self._flushing:
            # The flush starts two turns of the loop from now (the callback, then the task's
            # first step): what is submitted meanwhile joins this commit. Measured, this beats
            # starting it a turn sooner: larger batches, fewer commits, less CPU per job.
            self._flushing = True
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._flush()))
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]

                # batch bound as a default: the closure must see this turn's batch, not a later one.
                def run(conn: sqlite3.Connection, batch: list[Queued] = batch) -> list[tuple[bool, Any]]:
                    # Fast path: every op in the one transaction, no savepoints (each statement
                    # is a GIL hand-off between this thread and the event loop's).
                    conn.execute("SAVEPOINT batch")
                    try:
                        outcomes = [(True, op(conn)) for op, _, _ in batch]
                        conn.execute("RELEASE batch")
                        return outcomes
                    except Exception:  # noqa: BLE001 - one op failed: redo them one by one
                        conn.execute("ROLLBACK TO batch")
                        conn.execute("RELEASE batch")
                    outcomes = []
                    for op, _, _ in batch:
                        conn.execute("SAVEPOINT op")
                        try:
                            outcomes.append((True, op(conn)))
                            conn.execute("RELEASE op")
                        except Exception as exc:  # noqa: BLE001 - handed to that op's caller
                            conn.execute("ROLLBACK TO op")
                            conn.execute("RELEASE op")
                            outcomes.append((False, exc))
                    return outcomes

                try:
                    outcomes = await self._db.run_batch(run)
                except Exception as exc:  # noqa: BLE001 - the whole commit failed
                    outcomes = [(False, exc)] * len(batch)
                for (_, future, on_commit), (ok, value) in zip(batch, outcomes, strict=True):
                    if ok and on_commit is not None:
                        try:
                            on_commit(value)
                        except Exception:  # noqa: BLE001 - committed all the same; the waiter learns of it
                            log.exception("storage.on_commit_failed")
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = False
