"""Workflows and their budgets (part of `GatewayStore`). Budget operations (reserve, settle,
track) run as one sync unit inside a single SQLite write transaction, so concurrent reservations
can never overspend."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from node.errors import Conflict, NotFound
from node.gateway.store_rows import Reservation, new_id, wf_key, workflow_view
from node.storage import Database


class BudgetStore:
    db: Database

    # -- workflows and budgets -------------------------------------------------------------

    async def create_workflow(self, org_id: str, workflow_id: str | None, name: str,
                              budget: float | None) -> dict[str, Any]:
        workflow_id = workflow_id or new_id("wf")
        now = time.time()
        try:
            await self.db.execute("INSERT INTO gw_workflows (id, org_id, name, status, budget_usd, created_at,"
                                  " updated_at) VALUES (?, ?, ?, 'active', ?, ?, ?)",
                                  (wf_key(org_id, workflow_id), org_id, name, budget, now, now))
        except sqlite3.IntegrityError:
            raise Conflict(f"workflow {workflow_id!r} already exists") from None
        written = await self.workflow(workflow_id, org_id)
        assert written is not None  # the row written just above
        return written

    async def workflow(self, workflow_id: str, org_id: str | None) -> dict[str, Any] | None:
        """`workflow_id` of `org_id`; with `org_id` None, `workflow_id` is a row key (org/id)."""
        key = workflow_id if org_id is None else wf_key(org_id, workflow_id)
        row = await self.db.fetchone("SELECT * FROM gw_workflows WHERE id = ?", (key,))
        return None if row is None else workflow_view(row)

    async def require_workflow(self, org_id: str, workflow_id: str) -> dict[str, Any]:
        workflow = await self.workflow(workflow_id, org_id)
        if workflow is None:
            raise NotFound(f"workflow {workflow_id!r} not found")
        return workflow

    async def workflow_orgs(self, workflow_id: str) -> list[str]:
        """The orgs that have a workflow called `workflow_id` (for the node's own bindings)."""
        rows = await self.db.fetchall("SELECT org_id FROM gw_workflows WHERE id = org_id || '/' || ?", (workflow_id,))
        return [r["org_id"] for r in rows]

    async def workflows(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM gw_workflows WHERE org_id = ? ORDER BY created_at", (org_id,))
        return [workflow_view(r) for r in rows]

    async def patch_workflow(self, workflow_id: str, name: str | None, budget: float | None,
                             budget_set: bool) -> None:
        if name is not None:
            await self.db.execute("UPDATE gw_workflows SET name = ?, updated_at = ? WHERE id = ?",
                                  (name, time.time(), workflow_id))
        if budget_set:
            await self.db.execute("UPDATE gw_workflows SET budget_usd = ?, updated_at = ? WHERE id = ?",
                                  (budget, time.time(), workflow_id))

    async def set_status(self, workflow_id: str, status: str) -> None:
        await self.db.execute("UPDATE gw_workflows SET status = ?, updated_at = ? WHERE id = ?",
                              (status, time.time(), workflow_id))

    @staticmethod
    def _expire(conn: sqlite3.Connection, workflow_id: str, now: float) -> None:
        expired = conn.execute("SELECT COALESCE(SUM(amount_usd), 0) FROM gw_reservations"
                               " WHERE workflow_id = ? AND status = 'held' AND expires_at <= ?",
                               (workflow_id, now)).fetchone()[0]
        if expired:
            conn.execute("UPDATE gw_reservations SET status = 'expired' WHERE workflow_id = ? AND status = 'held'"
                         " AND expires_at <= ?", (workflow_id, now))
            conn.execute("UPDATE gw_workflows SET reserved_usd = MAX(0, reserved_usd - ?) WHERE id = ?",
                         (expired, workflow_id))

    async def reserve(self, workflow_id: str, amount: float, ttl: float, execution_id: str | None) -> Reservation:
        """Atomically hold `amount` of the workflow's budget (or refuse)."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> Reservation:
            self._expire(conn, workflow_id, now)
            row = conn.execute("SELECT status, budget_usd, spent_usd, reserved_usd FROM gw_workflows WHERE id = ?",
                               (workflow_id,)).fetchone()
            if row is None:
                return Reservation(False, "unknown workflow", None, None)
            status, budget, spent, reserved = row
            if status != "active":
                return Reservation(False, f"workflow is {status}", None, None)
            remaining = None if budget is None else budget - spent - reserved
            if remaining is not None and amount > remaining + 1e-12:
                return Reservation(False, "budget exhausted", None, max(0.0, remaining))
            reservation_id = new_id("res")
            conn.execute("INSERT INTO gw_reservations (id, workflow_id, amount_usd, status, execution_id, created_at,"
                         " expires_at) VALUES (?, ?, ?, 'held', ?, ?, ?)",
                         (reservation_id, workflow_id, amount, execution_id, now, now + ttl))
            conn.execute("UPDATE gw_workflows SET reserved_usd = reserved_usd + ? WHERE id = ?", (amount, workflow_id))
            return Reservation(True, "reserved", reservation_id,
                               None if remaining is None else max(0.0, remaining - amount), now + ttl)

        return await self.db.run_in_transaction(op)

    async def track(self, org_id: str, event: dict[str, Any], api_key_id: str | None) -> dict[str, Any]:
        """Record a cost event; settle its reservation if it names one; create an unknown
        workflow in the key's org. Returns the workflow after the event."""
        now = time.time()
        event_id = new_id("evt")

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            workflow_id = wf_key(org_id, event["workflow_id"])
            row = conn.execute("SELECT org_id FROM gw_workflows WHERE id = ?", (workflow_id,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO gw_workflows (id, org_id, name, status, created_at, updated_at)"
                             " VALUES (?, ?, ?, 'active', ?, ?)", (workflow_id, org_id, event["workflow_id"], now, now))
            reservation_id = event.get("reservation_id")
            if reservation_id:
                held = conn.execute("SELECT amount_usd FROM gw_reservations WHERE id = ? AND workflow_id = ?"
                                    " AND status = 'held'", (reservation_id, workflow_id)).fetchone()
                if held is not None:
                    conn.execute("UPDATE gw_reservations SET status = 'settled' WHERE id = ?", (reservation_id,))
                    conn.execute("UPDATE gw_workflows SET reserved_usd = MAX(0, reserved_usd - ?) WHERE id = ?",
                                 (held[0], workflow_id))
            conn.execute("UPDATE gw_workflows SET spent_usd = spent_usd + ?, updated_at = ? WHERE id = ?",
                         (event["cost_usd"], now, workflow_id))
            conn.execute("INSERT INTO gw_events (id, org_id, workflow_id, model, cost_usd, input_tokens, output_tokens,"
                         " latency_ms, metadata, api_key_id, reservation_id, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (event_id, org_id, event["workflow_id"], event.get("model"), event["cost_usd"],
                          event.get("input_tokens"), event.get("output_tokens"), event.get("latency_ms"),
                          json.dumps(event.get("metadata")) if event.get("metadata") is not None else None,
                          api_key_id, reservation_id, now))
            if api_key_id:
                conn.execute("UPDATE gw_api_keys SET cost_usd = cost_usd + ? WHERE id = ?",
                             (event["cost_usd"], api_key_id))
            return workflow_view(conn.execute("SELECT * FROM gw_workflows WHERE id = ?", (workflow_id,)).fetchone())

        workflow = await self.db.run_in_transaction(op)
        return {"event_id": event_id, "workflow": workflow}

    async def release(self, reservation_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            held = conn.execute("SELECT workflow_id, amount_usd FROM gw_reservations WHERE id = ? AND status = 'held'",
                                (reservation_id,)).fetchone()
            if held is not None:
                conn.execute("UPDATE gw_reservations SET status = 'released' WHERE id = ?", (reservation_id,))
                conn.execute("UPDATE gw_workflows SET reserved_usd = MAX(0, reserved_usd - ?) WHERE id = ?",
                             (held[1], held[0]))

        await self.db.run_in_transaction(op)

    async def expire_all(self) -> None:
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            for (workflow_id,) in conn.execute("SELECT DISTINCT workflow_id FROM gw_reservations"
                                               " WHERE status = 'held' AND expires_at <= ?", (now,)).fetchall():
                self._expire(conn, workflow_id, now)

        await self.db.run_in_transaction(op)

    async def burn_rate(self, org_id: str, workflow_id: str, window: float = 3600) -> float:
        row = await self.db.fetchone("SELECT COALESCE(SUM(cost_usd), 0) FROM gw_events WHERE org_id = ?"
                                     " AND workflow_id = ? AND created_at > ?",
                                     (org_id, workflow_id, time.time() - window))
        assert row is not None  # an aggregate: always one row
        return row[0] / window
