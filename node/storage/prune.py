"""Pruning of rows that only expire: sessions, sign-in tokens, nonces.

Each subsystem yields its own `ExpiryRule`s from its lifespan (node/subsystem.py `Mount.expiry`)
and the node's one pruner applies the rules of whatever is mounted: the pruner names no table of
its own, so a new subsystem's expiring table is pruned without an edit here. A rule names a table
and its expiry column; a row whose expiry has passed is refused by its subsystem anyway, so
deleting it changes no answer and keeps the file from growing forever. A rule whose table does
not exist (yet) is skipped. `forget` trims an in-memory copy of the table (CRE's replay nonces)
at the same cutoff. Job results have their own retention (`JobStore.prune`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.storage.db import Database


@dataclass(frozen=True)
class ExpiryRule:
    table: str
    expires_column: str = "expires_at"
    forget: Callable[[float], object] | None = None  # trims an in-memory copy at the same `now`


async def prune_expired(db: Database, rules: Sequence[ExpiryRule], now: float | None = None) -> dict[str, int]:
    """Delete expired rows of each rule's table; returns the count per table."""
    now = time.time() if now is None else now
    present = {row[0] for row in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    counts: dict[str, int] = {}
    for rule in rules:
        if rule.forget is not None:
            rule.forget(now)
        if rule.table in present:
            counts[rule.table] = await db.execute(
                f"DELETE FROM {rule.table} WHERE {rule.expires_column} < ?", (now,))
    return counts
