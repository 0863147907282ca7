"""Budget alerts, alert channels and per-user notification settings (part of `GatewayStore`)."""

from __future__ import annotations

import json
import time
from typing import Any

from node.errors import NotFound
from node.gateway.store_rows import new_id, public_id, wf_key
from node.storage import Database
from node.timefmt import iso_utc as _iso


class AlertStore:
    db: Database

    # -- alerts ----------------------------------------------------------------------------

    async def raise_alert(self, org_id: str, workflow_id: str, threshold: float, message: str) -> dict | None:
        alert_id = new_id("alr")
        changed = await self.db.execute(
            "INSERT INTO gw_alerts (id, org_id, workflow_id, threshold, message, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'active', ?) ON CONFLICT (workflow_id, threshold) DO NOTHING",
            (alert_id, org_id, wf_key(org_id, workflow_id), threshold, message, time.time()))
        if not changed:
            return None
        return {"id": alert_id, "workflow_id": workflow_id, "threshold": threshold, "message": message}

    async def alerts(self, org_id: str, include_dismissed: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM gw_alerts WHERE org_id = ?" + ("" if include_dismissed else " AND status = 'active'")
        rows = await self.db.fetchall(sql + " ORDER BY created_at DESC", (org_id,))
        return [{"id": r["id"], "workflow_id": public_id(r["workflow_id"]), "threshold": r["threshold"],
                 "message": r["message"],
                 "status": r["status"], "created_at": _iso(r["created_at"])} for r in rows]

    async def dismiss_alert(self, org_id: str, alert_id: str) -> None:
        if not await self.db.execute("UPDATE gw_alerts SET status = 'dismissed', dismissed_at = ?"
                                     " WHERE org_id = ? AND id = ?", (time.time(), org_id, alert_id)):
            raise NotFound("alert not found")

    async def channels(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM gw_alert_channels WHERE org_id = ? ORDER BY created_at", (org_id,))
        return [{"id": r["id"], "type": r["type"], "url": r["url"], "enabled": bool(r["enabled"]),
                 "created_at": _iso(r["created_at"])} for r in rows]

    async def add_channel(self, org_id: str, kind: str, url: str, enabled: bool) -> dict[str, Any]:
        channel_id = new_id("chn")
        await self.db.execute("INSERT INTO gw_alert_channels (id, org_id, type, url, enabled, created_at)"
                              " VALUES (?, ?, ?, ?, ?, ?)", (channel_id, org_id, kind, url, int(enabled), time.time()))
        return {"id": channel_id, "type": kind, "url": url, "enabled": enabled}

    async def notification_settings(self, org_id: str, user_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT settings FROM gw_notification_settings WHERE org_id = ? AND user_id = ?",
                                     (org_id, user_id))
        return json.loads(row[0]) if row else None

    async def org_notification_settings(self, org_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT settings FROM gw_notification_settings WHERE org_id = ?", (org_id,))
        return [json.loads(r[0]) for r in rows]

    async def set_notification_settings(self, org_id: str, user_id: str, settings: dict[str, Any]) -> None:
        await self.db.execute("INSERT INTO gw_notification_settings (org_id, user_id, settings, updated_at)"
                              " VALUES (?, ?, ?, ?) ON CONFLICT (org_id, user_id) DO UPDATE SET"
                              " settings = excluded.settings, updated_at = excluded.updated_at",
                              (org_id, user_id, json.dumps(settings), time.time()))
