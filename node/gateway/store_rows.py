"""Row helpers shared by the gateway's stores: ids, the per-org workflow key, and the views that
turn SQLite rows into the JSON the API answers with."""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from node.timefmt import iso_utc as _iso

SESSION_TTL = 24 * 3600
INVITE_TTL = 7 * 24 * 3600

def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class ApiKey:
    id: str
    org_id: str
    api_key: str
    secret: str
    workflow_id: str | None
    version: int = 1
    previous_secret: str | None = None
    rotated_at: float | None = None


@dataclass(frozen=True)
class Reservation:
    granted: bool
    reason: str
    reservation_id: str | None
    remaining_usd: float | None
    expires_at: float | None = None


def wf_key(org_id: str, workflow_id: str) -> str:
    """Workflow ids are per org: rows are keyed `org_id/workflow_id` ('/' is not allowed in ids),
    so two tenants can use the same id and neither can tell that the other does."""
    return f"{org_id}/{workflow_id}"


def public_id(key: str | None) -> str | None:
    return None if key is None else key.split("/", 1)[-1]


def workflow_view(row: sqlite3.Row | dict) -> dict[str, Any]:
    budget = row["budget_usd"]
    remaining = None if budget is None else max(0.0, budget - row["spent_usd"] - row["reserved_usd"])
    return {
        "id": public_id(row["id"]), "org_id": row["org_id"], "name": row["name"], "status": row["status"],
        "budget_usd": budget, "spent_usd": round(row["spent_usd"], 10), "reserved_usd": round(row["reserved_usd"], 10),
        "remaining_usd": None if remaining is None else round(remaining, 10),
        "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"]),
    }


def policy_view(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "org_id": row["org_id"], "name": row["name"], "priority": row["priority"],
            "enabled": bool(row["enabled"]), "action": row["action"], "reason": row["reason"],
            "match": json.loads(row["match"]), "template_id": row["template_id"],
            "approval": json.loads(row["approval"]) if row["approval"] else None,
            "created_at": _iso(row["created_at"]), "updated_at": _iso(row["updated_at"])}

