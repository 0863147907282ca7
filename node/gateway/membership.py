"""Role changes and removals of org members, under the owner rules:

- only an owner changes an owner's role, makes someone an owner, or removes an owner;
- an org always keeps at least one owner.

Each change is one SQLite write transaction that re-reads the actor's role, the member's role
and the owner count before writing, so two owners removing or demoting each other at the same
moment cannot leave the org without an owner (a check-then-write across awaits could).
"""

from __future__ import annotations

import sqlite3

from node.errors import Conflict, Forbidden, NotFound
from node.gateway.auth import ROLES
from node.storage import Database


def _check(conn: sqlite3.Connection, org_id: str, member_id: str, actor_id: str, min_role: str,
           new_role: str | None) -> str:
    """The member's current role, if `actor_id` may set it to `new_role` (None: remove)."""
    actor = conn.execute("SELECT role FROM gw_members WHERE org_id = ? AND user_id = ?", (org_id, actor_id)).fetchone()
    if actor is None:
        raise Forbidden("Not a member of this org")
    if ROLES[actor[0]] < ROLES[min_role]:
        raise Forbidden(f"Requires the {min_role} role")
    row = conn.execute("SELECT role FROM gw_members WHERE org_id = ? AND id = ?", (org_id, member_id)).fetchone()
    if row is None:
        raise NotFound(f"member {member_id!r} not found")
    role = row[0]
    touches_owner = role == "owner" or new_role == "owner"
    if touches_owner and actor[0] != "owner":
        raise Forbidden("Only an owner can change or remove an owner")
    if role == "owner" and new_role != "owner":
        owners = conn.execute("SELECT COUNT(*) FROM gw_members WHERE org_id = ? AND role = 'owner'",
                              (org_id,)).fetchone()[0]
        if owners <= 1:
            raise Conflict("an org needs at least one owner")
    return role


async def set_role(db: Database, org_id: str, member_id: str, actor_id: str, min_role: str, role: str) -> str:
    """Change a member's role; returns the previous one."""

    def op(conn: sqlite3.Connection) -> str:
        before = _check(conn, org_id, member_id, actor_id, min_role, role)
        conn.execute("UPDATE gw_members SET role = ? WHERE id = ?", (role, member_id))
        return before

    return await db.run_in_transaction(op)


async def remove(db: Database, org_id: str, member_id: str, actor_id: str, min_role: str) -> str:
    """Remove a member; returns the role they had."""

    def op(conn: sqlite3.Connection) -> str:
        before = _check(conn, org_id, member_id, actor_id, min_role, None)
        conn.execute("DELETE FROM gw_members WHERE id = ?", (member_id,))
        return before

    return await db.run_in_transaction(op)
