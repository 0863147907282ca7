"""Signed task configs (what triggers a task: cron or a chain event) and the cron scheduler's
last tick per config (part of `RegistryStore`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from node.registry.store_schema import iso, new_id
from node.storage import Database


class ConfigStore:
    if TYPE_CHECKING:  # from ProjectStore, its sibling in RegistryStore
        @staticmethod
        def _use_signature(conn: sqlite3.Connection, digest: str, kind: str, project_id: str) -> bool: ...
    db: Database

    # -- configs ---------------------------------------------------------------------------------

    async def create_config(self, project_id: str, task_id: str, body: dict[str, Any], signer: str,
                            digest: str, max_live: int | None = None) -> dict | str:
        """The new config, or 'used' when its signed digest was used before, or 'full' when the
        project already has `max_live` live configs (counted in the same transaction)."""
        config_id = new_id("config")

        def op(conn: sqlite3.Connection) -> str | None:
            if max_live is not None and conn.execute(
                    "SELECT COUNT(*) FROM reg_configs WHERE project_id = ? AND deprecated_at IS NULL",
                    (project_id,)).fetchone()[0] >= max_live:
                return "full"
            if not self._use_signature(conn, digest, "config", project_id):
                return "used"
            conn.execute(
                "INSERT INTO reg_configs (id, project_id, task_id, name, oracle_confirmations, relayer_confirmations,"
                " trigger, data, signature, signer, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (config_id, project_id, task_id, body["name"], body["oracleConfirmations"],
                 body["relayerConfirmations"], json.dumps(body["trigger"]), json.dumps(body["data"]),
                 body["signature"], signer, time.time()))
            return None

        refused = await self.db.run_in_transaction(op)
        if refused is not None:
            return refused
        written = await self.config(config_id)
        assert written is not None  # the row written just above
        return written

    async def config(self, config_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_configs WHERE id = ?", (config_id,))
        return self._config(row) if row else None

    @staticmethod
    def _config(row) -> dict[str, Any]:
        return {"projectId": row["project_id"], "taskId": row["task_id"], "configId": row["id"], "name": row["name"],
                "requriedOracleConfirmations": row["oracle_confirmations"],
                "requriedRelayerConfirmations": row["relayer_confirmations"],
                "trigger": json.loads(row["trigger"]), "data": json.loads(row["data"]), "signature": row["signature"],
                "signer": row["signer"], "deprecated": row["deprecated_at"] is not None,
                "createdAt": iso(row["created_at"])}

    async def deprecate_config(self, config_id: str) -> None:
        await self.db.execute("UPDATE reg_configs SET deprecated_at = ? WHERE id = ?", (time.time(), config_id))

    _LIVE = ("SELECT c.*, t.cid, p.owner AS project_owner FROM reg_configs c JOIN reg_tasks t ON t.id = c.task_id"
             " JOIN reg_projects p ON p.id = c.project_id WHERE c.deprecated_at IS NULL")

    def _live(self, row) -> dict[str, Any]:
        return {**self._config(row), "cid": row["cid"], "owner": row["project_owner"], "created_ts": row["created_at"]}

    # The scans the relayer (ten times a second) and the watcher (every batch of logs) run: only
    # configs of the CIDs the node relays, and without their `data` (None; `config_data` reads it
    # when a config fires). Anyone can store configs, of any CID, with up to
    # registry.max_config_bytes of data each; parsing every one on every pass once stalled the
    # event loop for seconds.
    _SCAN = ("SELECT c.id, c.project_id, c.task_id, c.name, c.oracle_confirmations, c.relayer_confirmations,"
             " c.trigger, 'null' AS data, c.signature, c.signer, c.deprecated_at, c.created_at, t.cid,"
             " p.owner AS project_owner FROM reg_configs c JOIN reg_tasks t ON t.id = c.task_id"
             " JOIN reg_projects p ON p.id = c.project_id WHERE c.deprecated_at IS NULL")

    async def _scan(self, where: str, params: tuple, cids: Collection[str]) -> list[dict[str, Any]]:
        cids = list(cids)
        if not cids:
            return []
        marks = ", ".join("?" * len(cids))
        rows = await self.db.fetchall(f"{self._SCAN} AND t.cid IN ({marks}) AND {where} ORDER BY c.rowid",
                                      (*cids, *params))
        return [self._live(r) for r in rows]

    async def cron_configs(self, cids: Collection[str]) -> list[dict[str, Any]]:
        """Live configs of tasks with these CIDs that have a cron trigger, with their task's CID
        and their project's owner (`data` None: see `config_data`)."""
        return await self._scan("json_extract(c.trigger, '$.cron') IS NOT NULL", (), cids)

    async def event_configs(self, chain_id: int, cids: Collection[str]) -> list[dict[str, Any]]:
        """Live configs of tasks with these CIDs whose trigger is an event on the given chain
        (`data` None: see `config_data`)."""
        return await self._scan("json_extract(c.trigger, '$.event.chainId') = ?", (chain_id,), cids)

    async def config_data(self, config_id: str) -> Any:
        """A config's `data` (None when the config is gone)."""
        row = await self.db.fetchone("SELECT data FROM reg_configs WHERE id = ?", (config_id,))
        return json.loads(row[0]) if row else None

    # -- cron state --------------------------------------------------------------------------------

    async def last_tick(self, config_id: str) -> int | None:
        row = await self.db.fetchone("SELECT last_tick FROM reg_cron_state WHERE config_id = ?", (config_id,))
        return row[0] if row else None

    async def set_last_tick(self, config_id: str, tick: int) -> None:
        await self.db.execute("INSERT INTO reg_cron_state (config_id, last_tick) VALUES (?, ?) ON CONFLICT (config_id)"
                              " DO UPDATE SET last_tick = MAX(last_tick, excluded.last_tick)", (config_id, tick))
