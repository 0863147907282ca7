"""Job persistence: SQLite (table `jobs`), written by group commit, with an in-memory view of
what has been committed.

Every state change of a job is a row written through the node's `GroupCommitter`: the call
returns once the transaction holding it has committed, and only then does the new state become
visible to readers (the in-memory view, waiters, `GET /api/jobs`). So a job id is handed out
only after its row is durable, and a result a client has read is the result it will read after
a crash. Concurrent jobs share commits, which keeps the cost per job small.

On start, jobs a previous process left `running` are marked failed, except jobs whose
containers all declare `idempotent: true` and whose input was kept: those are handed back to be
run again (at-least-once), each run recorded in the row's `runs`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from node.jobs.models import Job
from node.logs import get_logger
from node.server.http import dumps
from node.storage import Database, Migration
from node.storage.batch import GroupCommitter

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
    Migration(
        "jobs.0002",
        """
        ALTER TABLE jobs ADD COLUMN input TEXT;
        ALTER TABLE jobs ADD COLUMN runs TEXT NOT NULL DEFAULT '[]';
        CREATE INDEX jobs_finished_age ON jobs (updated_at) WHERE status != 'running'
        """,
    ),
]

_UPSERT = """
INSERT INTO jobs (id, client, source, containers, status, result, intermediate, workflow_id,
                  created_at, updated_at, input, runs)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, result = excluded.result, intermediate = excluded.intermediate,
    containers = excluded.containers, updated_at = excluded.updated_at, runs = excluded.runs,
    input = CASE WHEN excluded.status = 'running' THEN excluded.input ELSE NULL END
"""

RESTART_ERROR = "node stopped while the job was running"
# Jobs the node runs for itself (chain subscriptions, registry cron ticks): their results are not
# any HTTP client's private data (a chain result is delivered on chain anyway), so any client may
# read them by id; listings stay per client.
PUBLIC_SOURCES = frozenset({"chain", "registry"})


@dataclass(frozen=True)
class Rerun:
    """An interrupted job of idempotent containers, to be run again from its input."""

    job: Job
    data: Any


def _text(value: Any) -> str:
    return dumps(value).decode()  # TEXT, not a BLOB: rows stay readable by `json.loads`


def _json_list(value: list) -> str:
    return _text(value) if value else "[]"  # most jobs: no intermediate results, no reruns


def _row(job: Job, data: str | None) -> tuple:
    return (
        job.id,
        job.client,
        job.source,
        _text(job.containers),
        job.status,
        None if job.result is None else _text(job.result),
        _json_list(job.intermediate),
        job.workflow_id,
        job.created_at,
        job.updated_at,
        data if job.pending else None,  # the input is kept only while a rerun may need it
        _json_list(job.runs),
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
        runs=json.loads(row["runs"]),
    )


def _snapshot(job: Job) -> Job:
    """A copy readers may hold while the orchestrator keeps changing the original."""
    return Job(id=job.id, client=job.client, containers=list(job.containers), source=job.source,
               status=job.status, result=job.result, intermediate=list(job.intermediate),
               workflow_id=job.workflow_id, created_at=job.created_at, updated_at=job.updated_at,
               runs=list(job.runs))  # not dataclasses.replace: that costs 10 µs a call


class JobStore:
    def __init__(self, db: Database, committer: GroupCommitter | None = None, cache_size: int = 10_000) -> None:
        self._db = db
        self._writes = committer or GroupCommitter(db)
        self._cache_size = cache_size
        self._running: dict[str, Job] = {}
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future]] = {}

    async def start(self, rerunnable: frozenset[str] = frozenset()) -> list[Rerun]:
        """Apply migrations and settle jobs orphaned by a previous process: fail them, or, when
        every container of the job is in `rerunnable` and its input was kept, return them to be
        run again."""
        await self._db.migrate(MIGRATIONS)
        orphans = await self._db.fetchall("SELECT * FROM jobs WHERE status = 'running'")
        reruns: list[Rerun] = []
        failed = 0
        now = time.time()
        for row in orphans:
            job = _job(row)
            runs = job.runs or [{"started_at": job.created_at}]
            runs[-1] = {**runs[-1], "interrupted_at": now, "error": RESTART_ERROR}
            job.runs = runs
            if row["input"] is not None and job.containers and set(job.containers) <= rerunnable:
                job.runs.append({"started_at": now})
                job.intermediate, job.updated_at = [], now
                await self.save(job, data=row["input"])
                reruns.append(Rerun(job, json.loads(row["input"])))
            else:
                job.finish([*job.intermediate, {"container": job.containers[-1], "error": RESTART_ERROR}])
                await self.save(job)
                failed += 1
        if failed:
            log.warning("jobs.recovered", failed=failed, reason=RESTART_ERROR)
        if reruns:
            log.warning("jobs.rerun", count=len(reruns), reason="idempotent containers")
        return reruns

    # -- writes --------------------------------------------------------------------------

    async def save(self, job: Job, data: str | None = None, then: Callable[[], None] | None = None) -> None:
        """Commit a job's current state; it becomes visible right after the COMMIT (before
        this returns), and `then` (cheap, synchronous) runs right after that, even if this
        call was cancelled meanwhile. `data` (JSON of the job's input) is kept with a running
        job whose containers may run it again after a crash."""
        row, snapshot = _row(job, data), _snapshot(job)

        def committed(_: Any) -> None:
            self._publish(snapshot)
            if then is not None:
                then()

        await self._writes.submit(lambda conn: conn.execute(_UPSERT, row), committed)

    def _publish(self, job: Job) -> None:
        if job.pending:
            self._running[job.id] = job
            return
        self._running.pop(job.id, None)
        self._recent[job.id] = job
        self._recent.move_to_end(job.id)
        while len(self._recent) > self._cache_size:
            self._recent.popitem(last=False)
        for waiter in self._waiters.pop(job.id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def prune(self, retention: float) -> int:
        """Delete finished jobs last changed more than `retention` seconds ago (0: keep all)."""
        if retention <= 0:
            return 0
        cutoff = time.time() - retention
        deleted = await self._db.execute(
            "DELETE FROM jobs WHERE status != 'running' AND updated_at < ?", (cutoff,))
        for job_id in [j for j, job in self._recent.items() if job.updated_at < cutoff]:
            del self._recent[job_id]
        return deleted

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
                # A row read from the database is committed; a newer committed state may
                # already be in memory (published while we read), and wins.
                found[row["id"]] = self.cached(row["id"]) or _job(row)
        return [found[i] for i in ids if i in found and (client is None or found[i].client == client
                                                           or found[i].source in PUBLIC_SOURCES)]

    async def list_ids(self, client: str, pending: bool | None = None, limit: int = 10_000) -> list[str]:
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
