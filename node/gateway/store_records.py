"""What happened, for reading back (part of `GatewayStore`): executions, the dashboard's counts, and the control plane's sequence numbers."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from node.errors import NotFound
from node.gateway.store_rows import new_id, public_id
from node.storage import Database
from node.timefmt import iso_utc as _iso


class RecordStore:
    db: Database

    # -- executions ------------------------------------------------------------------------

    async def record_execution(self, org_id: str, kind: str, allowed: bool, reason: str, *,
                               workflow_id: str | None = None, policy_id: str | None = None,
                               model: str | None = None, tool: str | None = None, container: str | None = None,
                               cost: float | None = None, reservation_id: str | None = None,
                               api_key_id: str | None = None, job_id: str | None = None) -> str:
        execution_id = new_id("exe")
        await self.db.execute(
            "INSERT INTO gw_executions (id, org_id, workflow_id, kind, allowed, reason, policy_id, model, tool,"
            " container, estimated_cost_usd, reservation_id, api_key_id, job_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (execution_id, org_id, workflow_id, kind, int(allowed), reason, policy_id, model, tool, container, cost,
             reservation_id, api_key_id, job_id, time.time()))
        return execution_id

    async def executions(self, org_id: str, workflow_id: str | None, limit: int) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM gw_executions WHERE org_id = ?", [org_id]
        if workflow_id:
            sql += " AND workflow_id = ?"
            params.append(workflow_id)
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [self._execution_view(r) for r in rows]

    async def execution(self, org_id: str, execution_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_executions WHERE org_id = ? AND id = ?", (org_id, execution_id))
        return self._execution_view(row) if row else None

    async def require_execution(self, org_id: str, execution_id: str) -> dict[str, Any]:
        item = await self.execution(org_id, execution_id)
        if item is None:
            raise NotFound("execution not found")
        return item

    @staticmethod
    def _execution_view(r: sqlite3.Row) -> dict[str, Any]:
        return {"id": r["id"], "workflow_id": r["workflow_id"], "kind": r["kind"], "allowed": bool(r["allowed"]),
                "reason": r["reason"], "policy_id": r["policy_id"], "model": r["model"], "tool": r["tool"],
                "container": r["container"], "estimated_cost_usd": r["estimated_cost_usd"],
                "reservation_id": r["reservation_id"], "api_key_id": r["api_key_id"], "job_id": r["job_id"],
                "created_at": _iso(r["created_at"])}

    async def allowed_count(self, org_id: str, workflow_id: str, seconds: float) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM gw_executions WHERE org_id = ? AND workflow_id = ?"
                                     " AND allowed = 1 AND created_at > ?",
                                     (org_id, workflow_id, time.time() - seconds))
        assert row is not None  # an aggregate: always one row
        return row[0]

    def rate_counter(self, org_id: str):
        """The policies' rate counter for one org's workflows."""
        return lambda workflow_id, seconds: self.allowed_count(org_id, workflow_id, seconds)

    # -- dashboard -------------------------------------------------------------------------

    async def dashboard(self, org_id: str) -> dict[str, Any]:
        day = time.time() - 86400
        wf = await self.db.fetchall("SELECT status, COUNT(*) FROM gw_workflows WHERE org_id = ? GROUP BY status",
                                    (org_id,))
        spend = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM gw_events WHERE org_id = ?",
                                       (org_id,))
        spend_day = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0) FROM gw_events WHERE org_id = ?"
                                           " AND created_at > ?", (org_id, day))
        execs = await self.db.fetchone("SELECT COUNT(*), COALESCE(SUM(allowed = 0), 0) FROM gw_executions"
                                       " WHERE org_id = ? AND created_at > ?", (org_id, day))
        alerts = await self.db.fetchone("SELECT COUNT(*) FROM gw_alerts WHERE org_id = ? AND status = 'active'",
                                        (org_id,))
        approvals = await self.db.fetchone("SELECT COUNT(*) FROM gw_approvals WHERE org_id = ? AND status = 'pending'"
                                           " AND expires_at > ?", (org_id, time.time()))
        assert spend and spend_day and execs and alerts and approvals  # an aggregate: always one ros: always one row each
        return {"workflows": {r[0]: r[1] for r in wf}, "spend_usd_total": spend[0], "events_total": spend[1],
                "spend_usd_24h": spend_day[0], "executions_24h": execs[0], "denied_24h": execs[1],
                "active_alerts": alerts[0], "pending_approvals": approvals[0]}

    # -- SDK execution ids and control-plane sequence numbers ---------------------------------

    async def reservation_by_execution(self, execution_id: str) -> dict[str, Any] | None:
        """The reservation `/gate` minted for an SDK execution id (its `reservation_id`)."""
        row = await self.db.fetchone("SELECT r.*, w.org_id FROM gw_reservations r JOIN gw_workflows w"
                                     " ON w.id = r.workflow_id WHERE r.execution_id = ?", (execution_id,))
        return None if row is None else {**dict(row), "workflow_id": public_id(row["workflow_id"])}

    async def control_seqs(self) -> dict[str, int]:
        return {r["org_id"]: r["seq"] for r in await self.db.fetchall("SELECT org_id, seq FROM gw_control_seq")}

    async def save_control_seq(self, org_id: str, seq: int) -> None:
        await self.db.execute("INSERT INTO gw_control_seq (org_id, seq) VALUES (?, ?)"
                              " ON CONFLICT (org_id) DO UPDATE SET seq = MAX(seq, excluded.seq)", (org_id, seq))
