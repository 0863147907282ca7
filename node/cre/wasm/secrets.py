"""CRE workflow secrets kept in the node's sealed store, so a secret need not sit in config.yaml
or in the node's environment.

`node-daemon cre secrets set WORKFLOW ID` reads the value from stdin and stores it in
`cre_wasm_secrets`, sealed (AES-256-GCM) with the node's master key (top-level `master_key_path`,
the key the gateway seals API secrets with too: node/secrets.py). The plaintext never reaches
the database, the command line or a log line.

A workflow's `runtime.getSecret({id, namespace})` is answered from the workflow's configured
`secrets` first, then from this store, read at each execution: a secret set or changed while the
node runs is seen by the next execution, without a restart. Secrets are per workflow (by its
`cre.workflows` name) and namespace (default "main"), as in CRE's vault.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from node.secrets import SecretBox
from node.storage import Database, Migration

MAX_SECRET_BYTES = 64 << 10
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

MIGRATIONS = [
    Migration(
        "crewasm.0005",
        """
        CREATE TABLE cre_wasm_secrets (
            workflow TEXT NOT NULL,
            namespace TEXT NOT NULL,
            id TEXT NOT NULL,
            sealed TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (workflow, namespace, id)
        );
        """,
    ),
]


class SecretInputError(ValueError):
    """A secret's name or value that cannot be stored (the message names which)."""


def check_name(kind: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise SecretInputError(f"{kind}: use 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
    return value


class SecretStore:
    """Sealed workflow secrets in SQLite. The box is asked for only when a value is sealed or
    opened, so a node whose workflows use no stored secret never loads the master key."""

    def __init__(self, db: Database, box: Callable[[], SecretBox]) -> None:
        self._db = db
        self._box = box

    async def start(self) -> None:
        await self._db.migrate(MIGRATIONS)

    async def set(self, workflow: str, namespace: str, secret_id: str, value: str) -> bool:
        """Store (or replace) one secret; True if it replaced one."""
        check_name("workflow", workflow)
        check_name("namespace", namespace)
        check_name("id", secret_id)
        if not value:
            raise SecretInputError("value: empty")
        if len(value.encode()) > MAX_SECRET_BYTES:
            raise SecretInputError(f"value: over {MAX_SECRET_BYTES} bytes")
        sealed = self._box().seal(value)
        existed = await self._db.fetchone(
            "SELECT 1 FROM cre_wasm_secrets WHERE workflow = ? AND namespace = ? AND id = ?",
            (workflow, namespace, secret_id)) is not None
        await self._db.execute(
            "INSERT INTO cre_wasm_secrets (workflow, namespace, id, sealed, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (workflow, namespace, id) DO UPDATE SET sealed = excluded.sealed,"
            " updated_at = excluded.updated_at", (workflow, namespace, secret_id, sealed, time.time()))
        return existed

    async def delete(self, workflow: str, namespace: str, secret_id: str) -> bool:
        return await self._db.execute(
            "DELETE FROM cre_wasm_secrets WHERE workflow = ? AND namespace = ? AND id = ?",
            (workflow, namespace, secret_id)) == 1

    async def names(self, workflow: str | None = None) -> list[dict[str, object]]:
        """What is stored (never the values)."""
        sql = "SELECT workflow, namespace, id, updated_at FROM cre_wasm_secrets"
        rows = await self._db.fetchall(sql + (" WHERE workflow = ?" if workflow else "") + " ORDER BY 1, 2, 3",
                                       (workflow,) if workflow else ())
        return [dict(r) for r in rows]

    async def get(self, workflow: str, namespace: str, secret_id: str) -> str | None:
        row = await self._db.fetchone(
            "SELECT sealed FROM cre_wasm_secrets WHERE workflow = ? AND namespace = ? AND id = ?",
            (workflow, namespace, secret_id))
        if row is None:
            return None
        return self._box().open(row[0])
