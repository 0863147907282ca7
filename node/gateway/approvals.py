"""Approvals (issue 25): a policy with `action: require_approval` makes the SDK's `/execute`
ask a person before the call runs.

The life of one approval:
1. `/execute` matches the policy: an approval row is written (pending, bound to the execution
   id the SDK will re-send, its tool and workflow, expiring after the policy's
   `timeout_seconds`) before the answer `require_approval` names it; the org's alert channels
   are told.
2. A member with at least the policy's `approver_role` approves or denies it on the dashboard
   API (audited); the decision is pushed as `approval_resolved` on `/ws/control/{org}`, which
   is what the waiting SDK wakes on.
3. Approved: the SDK re-sends the same `/execute` with the `approval_id`; it is accepted once,
   only for that execution, tool and workflow (the row flips to consumed in the same statement
   that checks it), and the body runs. `POST /approvals/{id}/consume` flips an approved row the
   re-check did not use (the SDK's cleanup path) and is idempotent.
4. Nobody decides in time: the SDK gives up on its own clock (its expiry error; no push, since
   the SDK reads any outcome but approved/denied as a generic block); the sweep marks the row
   expired and audits it. An approved row not used within `APPROVED_TTL` expires too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from node.errors import Conflict, Forbidden, NotFound
from node.gateway.auth import ROLES, Actor
from node.gateway.control import ControlHub
from node.gateway.store import ApiKey, GatewayStore, new_id
from node.logs import get_logger
from node.timefmt import iso_utc as _iso

log = get_logger(__name__)

APPROVED_TTL = 300.0  # seconds an approval stays usable after it was approved
SWEEP_LIMIT = 500  # rows expired per sweep round: one round's work is bounded

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


def view(row: Any, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    status = row["status"]
    if status == "pending" and row["expires_at"] <= now:
        status = "expired"  # before the sweep has written it
    return {"id": row["id"], "approval_id": row["id"], "status": status, "workflow_id": row["workflow_id"],
            "execution_id": row["execution_id"], "record_id": row["record_id"], "tool": row["tool"],
            "model": row["model"], "policy_id": row["policy_id"], "api_key_id": row["api_key_id"],
            "reason": row["reason"], "approver_role": row["approver_role"], "note": row["note"],
            "decided_by": row["decided_by"], "created_at": _iso(row["created_at"]),
            "expires_at": _iso(row["expires_at"]), "decided_at": _iso(row["decided_at"]),
            "consumed_at": _iso(row["consumed_at"])}


class ApprovalDesk:
    def __init__(self, store: GatewayStore, hub: ControlHub, notify: Notify) -> None:
        self.store = store
        self.db = store.db
        self.hub = hub
        self._notify = notify

    async def ask(self, key: ApiKey, *, execution_id: str, record_id: str, workflow_id: str | None,
                  tool: str | None, model: str | None, policy_id: str | None, reason: str,
                  rule: dict[str, Any] | None) -> dict[str, Any]:
        rule = rule or {}
        timeout = int(rule.get("timeout_seconds", 300))
        now = time.time()
        approval_id = new_id("apr")
        await self.db.execute(
            "INSERT INTO gw_approvals (id, org_id, workflow_id, execution_id, record_id, tool, model, policy_id,"
            " api_key_id, reason, approver_role, status, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (approval_id, key.org_id, workflow_id, execution_id, record_id, tool, model, policy_id, key.id, reason,
             rule.get("approver_role", "admin"), now, now + timeout))
        approval = await self.get(key.org_id, approval_id)
        assert approval is not None  # the row written just above
        log.info("gateway.approval_pending", org_id=key.org_id, approval_id=approval_id, tool=tool,
                 workflow_id=workflow_id, timeout_s=timeout)
        await self._notify(key.org_id, {"type": "approval_pending", **approval})
        return {**approval, "timeout_seconds": timeout}

    async def get(self, org_id: str, approval_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_approvals WHERE org_id = ? AND id = ?", (org_id, approval_id))
        return None if row is None else view(row)

    async def require(self, org_id: str, approval_id: str) -> dict[str, Any]:
        approval = await self.get(org_id, approval_id)
        if approval is None:
            raise NotFound(f"approval {approval_id!r} not found", {"error_code": "APPROVAL_NOT_FOUND"})
        return approval

    async def listing(self, org_id: str, status: str | None, scope: str | None, limit: int) -> list[dict[str, Any]]:
        now = time.time()
        sql = "SELECT * FROM gw_approvals WHERE org_id = ?"
        params: list[Any] = [org_id]
        if scope is not None:
            sql += " AND workflow_id = ?"
            params.append(scope)
        if status == "pending":
            sql += " AND status = 'pending' AND expires_at > ?"
            params.append(now)
        elif status == "expired":
            sql += " AND (status = 'expired' OR (status = 'pending' AND expires_at <= ?))"
            params.append(now)
        elif status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit))
        return [view(r, now) for r in rows]

    async def pending_count(self, org_id: str) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM gw_approvals WHERE org_id = ? AND status = 'pending'"
                                     " AND expires_at > ?", (org_id, time.time()))
        assert row is not None  # an aggregate: always one row
        return row[0]

    async def resolve(self, org_id: str, approval_id: str, actor: Actor, approved: bool,
                      note: str | None) -> dict[str, Any]:
        """A member's decision: at most once, before the approval expires, by the right role."""
        approval = await self.require(org_id, approval_id)
        if ROLES[actor.role or "viewer"] < ROLES[approval["approver_role"]]:
            raise Forbidden(f"deciding this approval requires the {approval['approver_role']} role")
        now = time.time()
        status = "approved" if approved else "denied"
        changed = await self.db.execute(
            "UPDATE gw_approvals SET status = ?, note = ?, decided_by = ?, decided_at = ?"
            " WHERE org_id = ? AND id = ? AND status = 'pending' AND expires_at > ?",
            (status, note, actor.label, now, org_id, approval_id, now))
        if not changed:
            current = await self.require(org_id, approval_id)
            raise Conflict(f"approval {approval_id} is already {current['status']}",
                           {"error_code": "APPROVAL_NOT_PENDING", "status": current["status"]})
        after = await self.require(org_id, approval_id)
        await self.store.audit(org_id, actor.label, f"approval.{status}", "approval", approval_id,
                               {"status": "pending"}, self._audited(after))
        await self.hub.publish(org_id, "ApprovalResolved", {
            "approval_id": approval_id, "workflow_id": after["workflow_id"], "execution_id": after["execution_id"],
            "outcome": status, "note": note, "resolved_at": int(now)})
        log.info("gateway.approval_resolved", org_id=org_id, approval_id=approval_id, outcome=status)
        return after

    @staticmethod
    def _audited(approval: dict[str, Any]) -> dict[str, Any]:
        return {k: approval[k] for k in ("status", "workflow_id", "execution_id", "tool", "policy_id", "note",
                                          "decided_by", "api_key_id")}

    async def use(self, key: ApiKey, approval_id: str, execution_id: str | None, tool: str | None,
                  workflow_id: str | None) -> str | None:
        """The SDK's re-check after an approval: accepted once, for the execution, tool and workflow
        it was granted for. Returns None when accepted, else why not."""
        now = time.time()
        changed = await self.db.execute(
            "UPDATE gw_approvals SET status = 'consumed', consumed_at = ? WHERE id = ? AND org_id = ?"
            " AND status = 'approved' AND execution_id = ? AND tool IS ? AND workflow_id IS ? AND decided_at > ?",
            (now, approval_id, key.org_id, execution_id, tool, workflow_id, now - APPROVED_TTL))
        if changed:
            await self.store.audit(key.org_id, f"key:{key.id}", "approval.consumed", "approval", approval_id,
                                   after={"workflow_id": workflow_id, "execution_id": execution_id, "tool": tool})
            return None
        approval = await self.get(key.org_id, approval_id)
        if approval is None:
            return f"approval {approval_id} not found"
        if approval["status"] != "approved":
            return f"approval {approval_id} is {approval['status']}"
        if (approval["execution_id"], approval["tool"], approval["workflow_id"]) != (execution_id, tool, workflow_id):
            return f"approval {approval_id} was granted for another execution"
        return f"approval {approval_id} is no longer valid"

    async def consume(self, key: ApiKey, approval_id: str, execution_id: str | None) -> str:
        """`POST /approvals/{id}/consume`: consumed | already_consumed | not_approved."""
        approval = await self.get(key.org_id, approval_id)
        if approval is None or (key.workflow_id is not None and approval["workflow_id"] != key.workflow_id):
            raise NotFound(f"approval {approval_id!r} not found", {"error_code": "APPROVAL_NOT_FOUND"})
        if execution_id is not None and execution_id != approval["execution_id"]:
            raise Conflict(f"approval {approval_id} is bound to another execution",
                           {"error_code": "APPROVAL_EXECUTION_MISMATCH"})
        changed = await self.db.execute("UPDATE gw_approvals SET status = 'consumed', consumed_at = ?"
                                        " WHERE id = ? AND status = 'approved'", (time.time(), approval_id))
        if changed:
            await self.store.audit(key.org_id, f"key:{key.id}", "approval.consumed", "approval", approval_id,
                                   after={"workflow_id": approval["workflow_id"],
                                          "execution_id": approval["execution_id"], "tool": approval["tool"]})
            return "consumed"
        return "already_consumed" if approval["status"] == "consumed" else "not_approved"

    async def expire_due(self) -> int:
        """One sweep (a Supervisor task): pending rows past their time and approved rows left
        unused become expired, each audited."""
        now = time.time()
        rows = await self.db.fetchall(
            "SELECT * FROM gw_approvals WHERE (status = 'pending' AND expires_at <= ?)"
            " OR (status = 'approved' AND decided_at <= ?) LIMIT ?", (now, now - APPROVED_TTL, SWEEP_LIMIT))
        for row in rows:
            changed = await self.db.execute("UPDATE gw_approvals SET status = 'expired' WHERE id = ? AND status = ?",
                                            (row["id"], row["status"]))
            if changed:
                approval = view(row)
                await self.store.audit(row["org_id"], "system", "approval.expired", "approval", row["id"],
                                       {"status": row["status"]}, {**self._audited(approval), "status": "expired"})
        return len(rows)
