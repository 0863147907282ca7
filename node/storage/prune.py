"""Pruning of rows that only expire: sessions, sign-in tokens and nonces.

Each rule names a table and its expiry column; a row whose expiry has passed is refused by its
subsystem anyway, so deleting it changes no answer and keeps the file from growing forever.
A rule whose table does not exist (its subsystem is disabled) is skipped. Job results have
their own retention (`JobStore.prune`), CRE replay nonces their own window (the CRE store).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from node.storage.db import Database


@dataclass(frozen=True)
class ExpiryRule:
    table: str
    expires_column: str = "expires_at"


def expiry_rules() -> list[ExpiryRule]:
    return [
        ExpiryRule("gw_sessions"),  # dashboard sessions (governance gateway)
        ExpiryRule("reg_tokens"),  # registry bearer tokens
        ExpiryRule("reg_nonces"),  # registry sign-in nonces (single use, short-lived)
    ]


async def prune_expired(db: Database, rules: list[ExpiryRule], now: float | None = None) -> dict[str, int]:
    """Delete expired rows of each rule's table; returns the count per table."""
    now = time.time() if now is None else now
    present = {row[0] for row in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
    counts: dict[str, int] = {}
    for rule in rules:
        if rule.table in present:
            counts[rule.table] = await db.execute(
                f"DELETE FROM {rule.table} WHERE {rule.expires_column} < ?", (now,))
    return counts
