"""The orgs' policies (part of `GatewayStore`)."""

from __future__ import annotations

import json
import time
from typing import Any

from node.errors import NotFound
from node.gateway.store_rows import new_id, policy_view
from node.storage import Database


class PolicyStore:
    db: Database

    # -- policies --------------------------------------------------------------------------

    async def policies(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM gw_policies WHERE org_id = ? ORDER BY priority, created_at, id",
                                      (org_id,))
        return [policy_view(r) for r in rows]

    async def policy(self, org_id: str, policy_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_policies WHERE org_id = ? AND id = ?", (org_id, policy_id))
        return policy_view(row) if row else None

    async def require_policy(self, org_id: str, policy_id: str) -> dict[str, Any]:
        policy = await self.policy(org_id, policy_id)
        if policy is None:
            raise NotFound(f"policy {policy_id!r} not found")
        return policy

    async def policy_any_org(self, policy_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_policies WHERE id = ?", (policy_id,))
        return policy_view(row) if row else None

    async def create_policy(self, org_id: str, body: dict[str, Any], template_id: str | None = None) -> dict:
        policy_id, now = new_id("pol"), time.time()
        await self.db.execute(
            "INSERT INTO gw_policies (id, org_id, name, priority, enabled, action, reason, match, template_id,"
            " created_at, updated_at, approval) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (policy_id, org_id, body["name"], body["priority"], int(body.get("enabled", True)), body["action"],
             body.get("reason"), json.dumps(body.get("match") or {}), template_id, now, now,
             json.dumps(body["approval"]) if body.get("approval") else None))
        written = await self.policy(org_id, policy_id)
        assert written is not None  # the row written just above
        return written

    async def update_policy(self, policy_id: str, changes: dict[str, Any]) -> None:
        columns = {"name": "name", "priority": "priority", "enabled": "enabled", "action": "action",
                   "reason": "reason", "match": "match", "approval": "approval"}
        sets, params = [], []
        for key, value in changes.items():
            sets.append(f"{columns[key]} = ?")
            params.append(json.dumps(value) if key in ("match", "approval") and value is not None
                          else int(value) if key == "enabled" else value)
        if sets:
            await self.db.execute(f"UPDATE gw_policies SET {', '.join(sets)}, updated_at = ? WHERE id = ?",
                                  (*params, time.time(), policy_id))

    async def delete_policy(self, policy_id: str) -> None:
        await self.db.execute("DELETE FROM gw_policies WHERE id = ?", (policy_id,))

    async def template_policy(self, org_id: str, template_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM gw_policies WHERE org_id = ? AND template_id = ?",
                                     (org_id, template_id))
        return policy_view(row) if row else None
