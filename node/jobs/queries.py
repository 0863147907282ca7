"""Read-only queries of the jobs table for the operator views (node/observe/api.py): the most
recent jobs, newest first, and jobs finished and failed per minute for the status page's charts.
They live with the table they read (no subsystem's table is named outside it), apart from the job
store's write path."""

from __future__ import annotations

import json
from typing import Any

from node.storage import Database


def _view(row: Any) -> dict[str, Any]:
    result = json.loads(row["result"]) if row["result"] else None
    return {
        "id": row["id"],
        "source": row["source"],
        "containers": json.loads(row["containers"]),
        "status": row["status"],
        "error": result.get("error") if isinstance(result, dict) else None,
        "workflow_id": row["workflow_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "ms": round((row["updated_at"] - row["created_at"]) * 1000, 1) if row["status"] != "running" else None,
    }


async def recent_jobs(db: Database, limit: int = 20, failed: bool = False) -> list[dict[str, Any]]:
    """Newest first (by insertion order: rowid, so no index on created_at is needed)."""
    where = "WHERE status = 'failed' " if failed else ""
    rows = await db.fetchall(
        "SELECT id, source, containers, status, result, workflow_id, created_at, updated_at FROM jobs "
        f"{where}ORDER BY rowid DESC LIMIT ?", (limit,))
    return [_view(r) for r in rows]


# The job chart reads at most this many of the newest jobs, so one request costs a bounded scan
# however busy the last hour was (the jobs table has no index on time; rowid order is insertion
# order, which is creation order).
JOB_CHART_ROWS = 100_000


async def jobs_per_bucket(db: Database, now: float, span: float = 3600, bucket: float = 60,
                          cap: int = JOB_CHART_ROWS) -> dict[str, Any]:
    """Jobs finished (and of those, failed) per `bucket` seconds over the last `span` seconds, by
    the time they finished; the last bucket is the current, partial one. `truncated` says the
    cap cut the oldest buckets short."""
    buckets = int(span // bucket)
    start = (int(now // bucket) - buckets + 1) * bucket
    rows = await db.fetchall(
        "SELECT CAST((updated_at - ?) / ? AS INTEGER) AS b, COUNT(*) AS n, SUM(status = 'failed') AS bad "
        "FROM (SELECT status, updated_at FROM jobs ORDER BY rowid DESC LIMIT ?) "
        "WHERE status != 'running' AND updated_at >= ? GROUP BY b", (start, bucket, cap, start))
    finished, failed = [0] * buckets, [0] * buckets
    for row in rows:
        if 0 <= row["b"] < buckets:
            finished[row["b"]], failed[row["b"]] = int(row["n"]), int(row["bad"] or 0)
    scanned = await db.fetchall("SELECT COUNT(*) AS n FROM (SELECT 1 FROM jobs ORDER BY rowid DESC LIMIT ?)",
                                (cap + 1,))
    return {"bucket_s": bucket, "start": start, "finished": finished, "failed": failed,
            "truncated": scanned[0]["n"] > cap}
