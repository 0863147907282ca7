"""Read-only queries of the jobs table for the operator views (kept apart from the job store so
the store can change shape without touching them): the most recent jobs, newest first."""

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
