"""Job persistence: SQLite (table `jobs`) behind an in-memory cache with write-behind batching.

Every state change is applied to memory at once (reads are served from there) and queued;
a flusher writes queued jobs in one transaction every few milliseconds. That keeps a SQLite
commit off each request's path while results still reach disk within `flush_interval`.
`flush()` forces the write (shutdown, listings). On start, jobs a previous process left
`running` are marked failed: a job is never left running forever.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Iterable

from node.jobs.models import Job
from node.logs import get_logger
from node.storage import Database, Migration

log = get_logger(__name__)

MIGRATIONS = [
    Migration(
        "jobs.0001",
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            client TEXT NOT NULL,
            source TEXT NOT NULL,
            containers TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('running', 'success', 'failed')),
            result TEXT,
            intermediate TEXT NOT NULL DEFAULT '[]',
            workflow_id TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX jobs_client ON jobs (client, created_at);
        CREATE INDEX jobs_running ON jobs (status) WHERE status = 'running';
        CREATE INDEX jobs_workflow ON jobs (workflow_id) WHERE workflow_id IS NOT NULL
        """,
    ),
]

_UPSERT = """
INSERT INTO jobs (id, client, source, containers, status, result, intermediate, workflow_id,
                  created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, result = excluded.result, intermediate = excluded.intermediate,
    containers = excluded.containers, updated_at = excluded.updated_at
"""

RESTART_ERROR = "node stopped while the job was running"
# Jobs the node runs for itself (chain subscriptions, registry cron ticks): their results are not
# any HTTP client's private data (a chain result is delivered on chain anyway), so any client may
# read them by id; listings stay per client.
PUBLIC_SOURCES = frozenset({"chain", "registry"})


def _row(job: Job) -> tuple:
    return (
        job.id,
        job.client,
        job.source,
        json.dumps(job.containers),
        job.status,
        None if job.result is None else json.dumps(job.result),
        json.dumps(job.intermediate),
        job.workflow_id,
        job.created_at,
        job.updated_at,
    )


def _job(row) -> Job:
    return Job(
        id=row["id"],
        client=row["client"],
        source=row["source"],
        containers=json.loads(row["containers"]),
        status=row["status"],
        result=None if row["result"] is None else json.loads(row["result"]),
        intermediate=json.loads(row["intermediate"]),
        workflow_id=row["workflow_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class JobStore:
    def __init__(self, db: Database, flush_interval: float = 0.005, cache_size: int = 10_000) -> None:
        self._db = db
        self._flush_interval = flush_interval
        self._cache_size = cache_size
        self._running: dict[str, Job] = {}
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._dirty: dict[str, Job] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task | None = None
        self._flush_lock = asyncio.Lock()
        self._waiters: dict[str, list[asyncio.Future]] = {}

    async def start(self) -> int:
        """Apply migrations, fail jobs orphaned by a previous process, start the flusher."""
        await self._db.migrate(MIGRATIONS)
        orphans = await self._db.fetchall("SELECT * FROM jobs WHERE status = 'running'")
        for row in orphans:
            job = _job(row)
            job.finish([*job.intermediate, {"container": job.containers[-1], "error": RESTART_ERROR}])
            self._dirty[job.id] = job
        if orphans:
            await self.flush()
            log.warning("jobs.recovered", failed=len(orphans), reason=RESTART_ERROR)
        self._flusher = asyncio.create_task(self._flush_loop(), name="jobs-flusher")
        return len(orphans)

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
            self._flusher = None
        await self.flush()

    # -- writes --------------------------------------------------------------------------

    def save(self, job: Job) -> None:
        """Record a job's current state (memory now, disk within flush_interval)."""
        if job.pending:
            self._running[job.id] = job
        else:
            self._running.pop(job.id, None)
            for waiter in self._waiters.pop(job.id, ()):
                if not waiter.done():
                    waiter.set_result(None)
            self._recent[job.id] = job
            self._recent.move_to_end(job.id)
            while len(self._recent) > self._cache_size:
                self._recent.popitem(last=False)
        self._dirty[job.id] = job
        self._wake.set()

    async def flush(self) -> None:
        async with self._flush_lock:
            if not self._dirty:
                return
            batch, self._dirty = self._dirty, {}
            try:
                async with self._db.transaction() as tx:
                    await tx.executemany(_UPSERT, [_row(job) for job in batch.values()])
            except Exception:
                # Put them back (newer states queued meanwhile win) and let the caller see it.
                self._dirty = {**batch, **self._dirty}
                raise

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._flush_interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep flushing; the batch was re-queued
                log.exception("jobs.flush_failed", queued=len(self._dirty))
                await asyncio.sleep(1.0)
                self._wake.set()

    # -- reads ---------------------------------------------------------------------------

    def cached(self, job_id: str) -> Job | None:
        return self._running.get(job_id) or self._recent.get(job_id)

    async def get_many(self, ids: Iterable[str], client: str | None = None) -> list[Job]:
        """Jobs by id, in the order asked; unknown ids (or other clients' jobs) are dropped."""
        ids = list(dict.fromkeys(ids))
        found: dict[str, Job] = {}
        missing: list[str] = []
        for job_id in ids:
            job = self.cached(job_id)
            if job is None:
                missing.append(job_id)
            else:
                found[job_id] = job
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in await self._db.fetchall(f"SELECT * FROM jobs WHERE id IN ({marks})", chunk):
                found[row["id"]] = _job(row)
        return [found[i] for i in ids if i in found and (client is None or found[i].client == client
                                                           or found[i].source in PUBLIC_SOURCES)]

    async def list_ids(self, client: str, pending: bool | None = None, limit: int = 10_000) -> list[str]:
        await self.flush()
        sql = "SELECT id FROM jobs WHERE client = ?"
        if pending is True:
            sql += " AND status = 'running'"
        elif pending is False:
            sql += " AND status != 'running'"
        sql += " ORDER BY created_at LIMIT ?"
        return [row[0] for row in await self._db.fetchall(sql, (client, limit))]

    async def wait_finished(self, ids: list[str], timeout: float) -> None:
        """Return when none of `ids` is running any more, or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        futures = []
        for job_id in ids:
            if job_id in self._running:
                future = loop.create_future()
                self._waiters.setdefault(job_id, []).append(future)
                futures.append((job_id, future))
        if not futures:
            return
        try:
            await asyncio.wait([f for _, f in futures], timeout=timeout)
        finally:
            for job_id, future in futures:
                if not future.done():
                    future.cancel()
                    waiters = self._waiters.get(job_id)
                    if waiters is not None:
                        waiters.remove(future)
                        if not waiters:
                            del self._waiters[job_id]

    def running(self) -> list[Job]:
        return list(self._running.values())

    def count_running(self, source: str | None = None) -> int:
        if source is None:
            return len(self._running)
        return sum(1 for job in self._running.values() if job.source == source)
