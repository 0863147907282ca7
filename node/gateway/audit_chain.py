"""The audit log's hash chain (issue 25): each org's rows form one chain, every row carrying
`prev_hash` (the org's previous row's hash, None for the first) and `hash` = HMAC-SHA256 under
a key derived from the node's master key over `prev_hash` and the row's own content (id
included, so rows cannot be reordered).

Why keyed: the triggers on `gw_audit` refuse UPDATE and DELETE, but anyone who can open the
SQLite file can drop them. With a plain hash such a person could rewrite a row and recompute
every hash after it; without the master key (a separate file, mode 0600) they cannot, so a row
changed (its content no longer matches its hash) or deleted (the next row's `prev_hash` no
longer names the row before it) shows up in `verify`. Not detectable: the newest rows cut off
the end of the chain (nothing after them to notice), see docs/gateway-sdk.md.

Pure functions here; the store part that appends and walks is store_audit.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A stored row (sqlite3.Row, which is not a Mapping) or a dict of one: read by column name only.
Row = Mapping[str, Any] | sqlite3.Row

CONTENT = ("id", "org_id", "actor", "action", "target_type", "target_id", "before", "after", "created_at")


def row_hash(key: bytes, prev_hash: str | None, row: Row) -> str:
    """The hash a row must carry given the hash before it."""
    content = json.dumps([row[name] for name in CONTENT], separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, f"{prev_hash or ''}|{content}".encode(), hashlib.sha256).hexdigest()


@dataclass
class ChainWalk:
    """Walks one org's rows in id order, page by page, remembering the first broken link."""

    key: bytes
    count: int = 0
    first_hash: str | None = None
    last_hash: str | None = None
    failure: dict[str, Any] | None = None
    _prev: str | None = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)

    def anchor(self, row: Row | None) -> None:
        """Start after `row` (a `since` walk), trusting its stored hash as the link to follow."""
        self._prev = None if row is None else row["hash"]
        self._started = row is not None

    def feed(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.count += 1
            if self.first_hash is None:
                self.first_hash = row["hash"]
            self.last_hash = row["hash"]
            if self.failure is not None:
                continue
            if row["prev_hash"] != self._prev:
                self._fail(row, "previous_hash_mismatch",
                           "the row before this one was deleted or changed" if self._started or self._prev
                           else "the first row names a predecessor that is not there")
            elif row["hash"] is None or not hmac.compare_digest(row["hash"], row_hash(self.key, self._prev, row)):
                self._fail(row, "content_hash_mismatch", "this row's content does not match its hash")
            self._prev = row["hash"]
            self._started = True

    def _fail(self, row: Row, reason: str, detail: str) -> None:
        self.failure = {"reason": reason, "id": str(row["id"]), "detail": detail}

    def result(self) -> dict[str, Any]:
        failure = self.failure
        if failure is None and self.count == 0:
            failure = {"reason": "empty_chain", "id": None, "detail": "no audit rows in this range"}
        ok = failure is None
        return {"verified": ok, "chain_valid": ok, "record_count": self.count, "first_hash": self.first_hash,
                "last_hash": self.last_hash, "first_failure_reason": None if failure is None else failure["reason"],
                "first_failure_id": None if failure is None else failure["id"],
                "first_failure_detail": None if failure is None else failure["detail"],
                # the SDK reads hmac_checked as "the answer itself is signed": it is not; the rows are.
                "hmac_checked": False, "keyed_chain": True}
