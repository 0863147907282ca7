"""One aiosqlite connection in WAL mode, and the migration runner.

Each subsystem owns its tables and declares its migrations as `Migration` objects with ids
like `jobs.0001`. They are applied once, in order, each in its own transaction, and recorded in
`schema_migrations`, so subsystems evolve their schema independently.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiosqlite

from node.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# Group commits never checkpoint the WAL themselves (a checkpoint copies pages into the database
# file and fsyncs it: tens of ms, which on the event loop stalls every request). A checkpoint
# runs in a thread instead, on its own connection, at most this often while commits come in.
CHECKPOINT_INTERVAL = 1.0
# The WAL starts over once a commit finds it all checkpointed; should commits keep landing
# during every passive checkpoint, it grows instead: past this many frames (32 MB) a passive
# checkpoint is followed by a restarting one under the write lock (commits wait, the loop does not).
CHECKPOINT_FORCE_FRAMES = 8000


@dataclass(frozen=True)
class Migration:
    id: str
    sql: str


class Database:
    """Thin owner of the connection. Writes go through `run_in_transaction()` (one unit of work
    in the SQLite thread; `GroupCommitter` batches many) or `transaction()` (statement by
    statement), serialised by a lock so concurrent coroutines never interleave statements of two
    transactions.

    Readers see committed data only: a `run_in_transaction` unit runs whole in the SQLite
    thread (no read can come between its statements), and while a `transaction()` is open, reads
    from other tasks wait for its end (they share the connection, so they would otherwise see
    its uncommitted rows, which a crash would take back)."""

    def __init__(self, path: str, synchronous: str = "normal") -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self._conn: aiosqlite.Connection | None = None
        self._batch_conn: sqlite3.Connection | None = None  # group commits (see run_batch)
        self._write_lock = asyncio.Lock()
        self._tx_task: asyncio.Task | None = None  # the task inside an open transaction()
        self._tx_done = asyncio.Event()
        self._tx_done.set()
        # Called with the seconds each COMMIT took (metrics); must be cheap and never raise.
        self.commit_observers: list[Callable[[float], None]] = []
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_task: asyncio.Task | None = None
        self._checkpoint_at = 0.0  # monotonic time the last checkpoint started

    def _observe_commit(self, seconds: float) -> None:
        for observer in self.commit_observers:
            observer(seconds)

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def open(self) -> None:
        _private_files(self.path)
        self._conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn.row_factory = aiosqlite.Row
        await self._conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives a crash of the process (the WAL is
        # written before COMMIT returns); FULL also fsyncs it, so it survives power loss.
        await self._conn.execute(f"PRAGMA synchronous={'FULL' if self.synchronous == 'FULL' else 'NORMAL'}")
        await self._conn.execute("PRAGMA foreign_keys=ON")
        await self._conn.execute("PRAGMA busy_timeout=5000")
        await self._conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        batch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        batch.row_factory = sqlite3.Row
        for pragma in (f"synchronous={'FULL' if self.synchronous == 'FULL' else 'NORMAL'}", "foreign_keys=ON",
                       "busy_timeout=1000",  # never long: it blocks the event loop
                       "wal_autocheckpoint=0"):  # checkpoints run in a thread (_checkpoint)
            batch.execute(f"PRAGMA {pragma}")
        self._batch_conn = batch
        self._checkpoint_conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._checkpoint_conn.execute("PRAGMA busy_timeout=5000")

    async def close(self) -> None:
        if self._checkpoint_task is not None:
            await asyncio.gather(self._checkpoint_task, return_exceptions=True)
        if self._checkpoint_conn is not None:
            self._checkpoint_conn.close()
            self._checkpoint_conn = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._batch_conn is not None:
            async with self._write_lock:
                self._batch_conn.close()
                self._batch_conn = None

    async def migrate(self, migrations: Iterable[Migration]) -> list[str]:
        applied = {row[0] for row in await self.fetchall("SELECT id FROM schema_migrations")}
        done: list[str] = []
        for migration in migrations:
            if migration.id in applied:
                continue
            async with self.transaction() as conn:
                await conn.executescript_in_tx(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)", (migration.id, time.time())
                )
            done.append(migration.id)
            log.info("storage.migrated", migration=migration.id)
        return done

    async def run_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` inside one write transaction in the SQLite thread: one thread
        hop for a whole unit of work, instead of one per statement."""

        def unit(conn: sqlite3.Connection) -> T:
            return _unit(conn, fn, self._observe_commit)

        async with self._write_lock:
            # aiosqlite's documented surface has no "run this function in your thread"; its
            # internal _execute is exactly that, and has been stable across releases.
            return await self.conn._execute(unit, self.conn._conn)

    async def run_batch(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`run_in_transaction` for group commits, on a second connection. With
        `synchronous=NORMAL` a commit does not fsync, and a batch of small writes costs well
        under a millisecond of CPU: it runs right here on the event loop, because in a thread
        every statement is a GIL hand-off that waits up to the switch interval (5 ms) while the
        loop is busy, which made commit latency, not SQLite, the cost of a durable job. With
        `FULL` (an fsync per commit) it runs in a worker thread. Holding the write lock, no
        other write transaction is open, so this never waits on SQLite's lock; and the main
        connection's readers, being another connection, see its rows only once committed."""
        async with self._write_lock:
            if self._batch_conn is None:
                raise RuntimeError("database is not open")
            if self.synchronous == "FULL":
                result = await asyncio.to_thread(_unit, self._batch_conn, fn, self._observe_commit)
            else:
                result = _unit(self._batch_conn, fn, self._observe_commit)
        now = time.monotonic()
        if self._checkpoint_task is None and now - self._checkpoint_at >= CHECKPOINT_INTERVAL:
            self._checkpoint_at = now
            self._checkpoint_task = asyncio.create_task(self._checkpoint())
        return result

    async def _checkpoint(self) -> None:
        """Copy committed WAL pages into the database file, in a thread, passive: commits go on
        meanwhile. Should the WAL not have started over since the last time (commits landed
        during every passive checkpoint) and have grown past CHECKPOINT_FORCE_FRAMES, a
        restarting checkpoint follows at once under the write lock, so the next commit writes the
        WAL from its start again. Right after the passive one it has only the pages committed
        meanwhile to copy, and it does not truncate the file: commits wait 2-6 ms, where a
        truncating checkpoint on its own held them for 50-75 ms every other second at 2,700
        jobs/s (the tail of the job path's latency, docs/perf.md). The WAL file keeps the size it
        grew to (tens of MB at that rate) and is reused from its start. Durability does not
        depend on any of it: a commit is in the WAL."""
        try:
            conn = self._checkpoint_conn
            if conn is None:
                return
            row = await asyncio.to_thread(lambda: conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
            if row[1] >= CHECKPOINT_FORCE_FRAMES:  # -1 (not in WAL mode) never is
                async with self._write_lock:
                    await asyncio.to_thread(lambda: conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone())
        except Exception:  # noqa: BLE001 - a failed checkpoint is retried by the next one
            log.exception("storage.checkpoint_failed")
        finally:
            self._checkpoint_task = None

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement in its own transaction (committed on return); the row count."""
        return await self.run_in_transaction(lambda conn: conn.execute(sql, params).rowcount)

    async def _committed_view(self) -> None:
        """Wait while another task's transaction() is open (its rows are not committed)."""
        while self._tx_task is not None and self._tx_task is not asyncio.current_task():
            await self._tx_done.wait()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        if self._tx_task is not None:
            await self._committed_view()
        return await self._read(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        if self._tx_task is not None:
            await self._committed_view()
        rows = await self._read(sql, params)
        return rows[0] if rows else None

    async def _read(self, sql: str, params: Sequence[Any]) -> list[aiosqlite.Row]:
        """Execute, fetch every row and reset the statement in ONE call on the connection's
        thread. A cursor used across awaits (execute, then fetch, then close: three queued calls)
        leaves its SELECT open in between, holding a read snapshot; a write queued meanwhile on
        this connection then finds its snapshot stale after a group commit on the other one and
        SQLite refuses it at once, "database is locked", with no busy wait that could help."""
        return list(await self.conn.execute_fetchall(sql, params))

    async def writable(self) -> bool:
        """Health probe: can we take the write lock and write?"""
        try:
            async with self.transaction() as tx:
                await tx.execute("CREATE TEMP TABLE IF NOT EXISTS _probe (x)")
            return True
        except Exception:  # noqa: BLE001 - any failure means "not writable"
            return False


def _unit(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T],
          observe: Callable[[float], None]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    committing = time.perf_counter()
    conn.execute("COMMIT")
    observe(time.perf_counter() - committing)
    return result


def _private_files(path: str) -> None:
    """Create the database file (and fix its WAL and shared-memory files) as mode 0600: it
    holds sessions, sealed keys and every client's jobs. SQLite creates -wal and -shm with the
    permissions of the database file."""
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            pass


class _Transaction:
    """`async with db.transaction() as tx:` - BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __aenter__(self) -> _Transaction:
        await self._db._write_lock.acquire()
        try:
            await self._db.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._db._write_lock.release()
            raise
        self._db._tx_task = asyncio.current_task()
        self._db._tx_done.clear()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            committing = time.perf_counter()
            await self._db.conn.execute("ROLLBACK" if exc_type else "COMMIT")
            if not exc_type:
                self._db._observe_commit(time.perf_counter() - committing)
        finally:
            self._db._tx_task = None
            self._db._tx_done.set()
            self._db._write_lock.release()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = await self._db.conn.execute(sql, params)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._db.conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        rows = list(await self._db.conn.execute_fetchall(sql, params))  # one call: see Database._read
        return rows[0] if rows else None

    async def executescript_in_tx(self, script: str) -> None:
        # executescript() would COMMIT first; run the statements one by one instead.
        for statement in _split_sql(script):
            await self._db.conn.execute(statement)


def _split_sql(script: str) -> list[str]:
    """Statements of a script; a `;` inside a trigger body does not end its statement."""
    statements, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n\t;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n\t;"):
        statements.append(buffer.strip())
    return statements
