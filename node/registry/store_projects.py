"""Tasks, projects, their owner/maintainer roles and the single-use signature ledger of the
registry (part of `RegistryStore`)."""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Any

from node.registry.store_schema import iso, new_id, new_key
from node.storage import Database


class ProjectStore:
    if TYPE_CHECKING:  # from ConfigStore, its sibling in RegistryStore
        @staticmethod
        def _config(row: Any) -> dict[str, Any]: ...
    db: Database

    # -- tasks and projects ----------------------------------------------------------------------

    async def create_task(self, creator: str, cid: str, version: str, name: str, description: str) -> dict | None:
        task_id, now = new_id("task"), time.time()
        try:
            await self.db.execute("INSERT INTO reg_tasks (id, cid, version, name, description, creator, created_at)"
                                  " VALUES (?, ?, ?, ?, ?, ?, ?)", (task_id, cid, version, name, description, creator, now))
        except sqlite3.IntegrityError:
            return None
        return await self.task(task_id)

    async def task(self, task_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_tasks WHERE id = ?", (task_id,))
        return self._task(row) if row else None

    async def tasks_by(self, creator: str) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM reg_tasks WHERE creator = ? ORDER BY created_at", (creator,))
        return [self._task(r) for r in rows]

    @staticmethod
    def _task(row) -> dict[str, Any]:
        return {"taskId": row["id"], "cid": row["cid"], "version": row["version"], "name": row["name"],
                "description": row["description"], "creator": row["creator"], "createdAt": iso(row["created_at"])}

    async def create_project(self, owner: str, name: str) -> dict[str, Any]:
        project_id, now = new_id("project"), time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO reg_projects (id, name, owner, created_at) VALUES (?, ?, ?, ?)",
                         (project_id, name, owner, now))
            conn.execute("INSERT INTO reg_roles (id, project_id, account, role, project_key, created_at)"
                         " VALUES (?, ?, ?, 'owner', ?, ?)", (new_id("role"), project_id, owner, new_key("PROJECT-KEY"), now))

        await self.db.run_in_transaction(op)
        written = await self.project(project_id)
        assert written is not None  # the row written just above
        return written

    async def project(self, project_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_projects WHERE id = ?", (project_id,))
        if row is None:
            return None
        tasks = [r[0] for r in await self.db.fetchall(
            "SELECT task_id FROM reg_project_tasks WHERE project_id = ? ORDER BY created_at", (project_id,))]
        return {"projectId": row["id"], "name": row["name"], "owner": row["owner"], "tasks": tasks,
                "createdAt": iso(row["created_at"])}

    async def link(self, project_id: str, task_id: str) -> None:
        await self.db.execute("INSERT INTO reg_project_tasks (project_id, task_id, created_at) VALUES (?, ?, ?)"
                              " ON CONFLICT DO NOTHING", (project_id, task_id, time.time()))

    async def unlink(self, project_id: str, task_id: str) -> int:
        return await self.db.execute("DELETE FROM reg_project_tasks WHERE project_id = ? AND task_id = ?",
                                     (project_id, task_id))

    async def linked(self, project_id: str, task_id: str) -> bool:
        return await self.db.fetchone("SELECT 1 FROM reg_project_tasks WHERE project_id = ? AND task_id = ?",
                                      (project_id, task_id)) is not None

    async def role(self, project_id: str, account: str) -> dict[str, Any] | None:
        """The account's live (not deprecated) role in the project."""
        row = await self.db.fetchone("SELECT * FROM reg_roles WHERE project_id = ? AND lower(account) = lower(?)"
                                     " AND deprecated_at IS NULL ORDER BY role = 'owner' DESC LIMIT 1",
                                     (project_id, account))
        return self._role(row) if row else None

    @staticmethod
    def _role(row) -> dict[str, Any]:
        return {"roleId": row["id"], "projectId": row["project_id"], "account": row["account"], "role": row["role"],
                "projectKey": row["project_key"], "signature": row["signature"], "createdAt": iso(row["created_at"])}

    @staticmethod
    def _use_signature(conn: sqlite3.Connection, digest: str, kind: str, project_id: str) -> bool:
        """Burn a signed digest: False when it was used before (signatures are single use, and a
        deprecated one stays refused forever)."""
        try:
            conn.execute("INSERT INTO reg_used_signatures (digest, kind, project_id, used_at) VALUES (?, ?, ?, ?)",
                         (digest, kind, project_id, time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    async def signature_used(self, digest: str) -> bool:
        return await self.db.fetchone("SELECT 1 FROM reg_used_signatures WHERE digest = ?", (digest,)) is not None

    async def add_maintainer(self, project_id: str, maintainer: str, signature: str,
                             digest: str) -> dict[str, Any] | str:
        """The new role, or 'used' (the signed digest was used before) or 'exists'."""
        role_id = new_id("role")

        def op(conn: sqlite3.Connection) -> str | None:
            if conn.execute("SELECT 1 FROM reg_roles WHERE project_id = ? AND lower(account) = lower(?)"
                            " AND deprecated_at IS NULL", (project_id, maintainer)).fetchone():
                return "exists"
            if not self._use_signature(conn, digest, "maintainer", project_id):
                return "used"
            conn.execute("INSERT INTO reg_roles (id, project_id, account, role, project_key, signature, created_at)"
                         " VALUES (?, ?, ?, 'maintainer', ?, ?, ?)",
                         (role_id, project_id, maintainer, new_key("PROJECT-KEY"), signature, time.time()))
            return None

        outcome = await self.db.run_in_transaction(op)
        if outcome is not None:
            return outcome
        row = await self.db.fetchone("SELECT * FROM reg_roles WHERE id = ?", (role_id,))
        return self._role(row)

    async def remove_maintainer(self, project_id: str, maintainer: str) -> dict[str, Any] | None:
        """Deprecate the role and, for good, every config its holder signed in the project (a
        later re-addition does not revive them)."""
        now = time.time()

        def op(conn: sqlite3.Connection):
            row = conn.execute("SELECT * FROM reg_roles WHERE project_id = ? AND lower(account) = lower(?)"
                               " AND role = 'maintainer' AND deprecated_at IS NULL", (project_id, maintainer)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE reg_roles SET deprecated_at = ? WHERE id = ?", (now, row["id"]))
            conn.execute("UPDATE reg_configs SET deprecated_at = ? WHERE project_id = ? AND lower(signer) = lower(?)"
                         " AND deprecated_at IS NULL", (now, project_id, maintainer))
            return row

        row = await self.db.run_in_transaction(op)
        return self._role(row) if row is not None else None

    async def backfill_used_signatures(self, digests) -> None:
        """Once: burn the digests of roles and configs stored before signatures were single use.
        `digests(roles, configs)` returns [(digest, kind, project_id)]."""
        if await self.db.fetchone("SELECT 1 FROM reg_used_signatures WHERE kind = 'backfill'"):
            return
        roles = [dict(r) for r in await self.db.fetchall("SELECT * FROM reg_roles WHERE role = 'maintainer'")]
        configs = [self._config(r) for r in await self.db.fetchall("SELECT * FROM reg_configs")]
        rows = digests(roles, configs) + [("backfill", "backfill", "")]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO reg_used_signatures (digest, kind, project_id, used_at)"
                             " VALUES (?, ?, ?, ?)", [(*r, time.time()) for r in rows])

        await self.db.run_in_transaction(op)
