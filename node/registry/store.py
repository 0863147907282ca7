"""Registry tables (prefixed `reg_`) and their queries."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from typing import Any

from node.gateway.crypto import token_hash
from node.storage import Database, Migration
from node.timefmt import iso_utc

MIGRATIONS = [
    Migration(
        "registry.0001",
        """
        CREATE TABLE reg_nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL, used_at REAL);
        CREATE TABLE reg_tokens (token_hash TEXT PRIMARY KEY, address TEXT NOT NULL, expires_at REAL NOT NULL);
        CREATE TABLE reg_accounts (address TEXT PRIMARY KEY, deployment_key TEXT NOT NULL, created_at REAL NOT NULL);
        CREATE TABLE reg_tasks (
            id TEXT PRIMARY KEY, cid TEXT NOT NULL, version TEXT NOT NULL, name TEXT NOT NULL, description TEXT,
            creator TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (creator, name, version)
        );
        CREATE TABLE reg_projects (id TEXT PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, created_at REAL NOT NULL);
        CREATE TABLE reg_project_tasks (project_id TEXT NOT NULL, task_id TEXT NOT NULL, created_at REAL NOT NULL,
                                        PRIMARY KEY (project_id, task_id));
        CREATE TABLE reg_roles (
            id TEXT PRIMARY KEY, project_id TEXT NOT NULL, account TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('owner', 'maintainer')), project_key TEXT NOT NULL,
            signature TEXT, deprecated_at REAL, created_at REAL NOT NULL
        );
        CREATE INDEX reg_roles_project ON reg_roles (project_id, account);
        CREATE TABLE reg_configs (
            id TEXT PRIMARY KEY, project_id TEXT NOT NULL, task_id TEXT NOT NULL, name TEXT NOT NULL,
            oracle_confirmations INTEGER NOT NULL, relayer_confirmations INTEGER NOT NULL, trigger TEXT NOT NULL,
            data TEXT NOT NULL, signature TEXT NOT NULL, signer TEXT NOT NULL, deprecated_at REAL, created_at REAL NOT NULL
        );
        CREATE TABLE reg_inputs (
            id TEXT PRIMARY KEY, task_id TEXT NOT NULL, config_id TEXT NOT NULL, chain_id INTEGER NOT NULL,
            tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, raw TEXT NOT NULL, inputs TEXT NOT NULL,
            proofs TEXT NOT NULL, count INTEGER NOT NULL, created_at REAL NOT NULL,
            UNIQUE (chain_id, tx_hash, log_index)
        );
        CREATE INDEX reg_inputs_config ON reg_inputs (config_id, created_at);
        CREATE TABLE reg_executions (
            id TEXT PRIMARY KEY, task_id TEXT NOT NULL, input_id TEXT NOT NULL, config_id TEXT NOT NULL,
            content_hash TEXT NOT NULL, logs TEXT NOT NULL, relayers TEXT NOT NULL, signatures TEXT NOT NULL,
            status TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (input_id, content_hash)
        );
        CREATE INDEX reg_executions_task ON reg_executions (task_id, created_at);
        CREATE TABLE reg_intents (
            id TEXT PRIMARY KEY, execution_id TEXT NOT NULL, task_id TEXT NOT NULL, type TEXT NOT NULL,
            data TEXT NOT NULL, status TEXT NOT NULL, deadline INTEGER, signed_proposal TEXT, relayer_signature TEXT,
            created_at REAL NOT NULL
        );
        CREATE TABLE reg_intent_events (intent_id TEXT NOT NULL, timestamp REAL NOT NULL, level TEXT NOT NULL,
                                        message TEXT NOT NULL);
        CREATE INDEX reg_intent_events_intent ON reg_intent_events (intent_id, timestamp);
        CREATE TABLE reg_proposals (
            id TEXT PRIMARY KEY, intent_id TEXT NOT NULL, solver TEXT NOT NULL, data TEXT NOT NULL,
            signature TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (intent_id, solver)
        );
        CREATE TABLE reg_cron_state (config_id TEXT PRIMARY KEY, last_tick INTEGER NOT NULL)
        """,
    ),
    # A trigger is unique per config (one chain event may feed several tasks), not globally; the
    # watcher records the block of the events it fires on, so a reorg can revert their inputs
    # (a reverted trigger may fire again if the event comes back in another block).
    Migration(
        "registry.0002",
        """
        CREATE TABLE reg_inputs_v2 (
            id TEXT PRIMARY KEY, task_id TEXT NOT NULL, config_id TEXT NOT NULL, chain_id INTEGER NOT NULL,
            tx_hash TEXT NOT NULL, log_index INTEGER NOT NULL, raw TEXT NOT NULL, inputs TEXT NOT NULL,
            proofs TEXT NOT NULL, count INTEGER NOT NULL, created_at REAL NOT NULL,
            block_number INTEGER, block_hash TEXT, reverted_at REAL
        );
        INSERT INTO reg_inputs_v2 (id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs, proofs, count,
                                   created_at)
            SELECT id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs, proofs, count, created_at
            FROM reg_inputs;
        DROP TABLE reg_inputs;
        ALTER TABLE reg_inputs_v2 RENAME TO reg_inputs;
        CREATE UNIQUE INDEX reg_inputs_trigger ON reg_inputs (config_id, chain_id, tx_hash, log_index)
            WHERE reverted_at IS NULL;
        CREATE INDEX reg_inputs_config ON reg_inputs (config_id, created_at);
        CREATE INDEX reg_inputs_block ON reg_inputs (chain_id, block_number) WHERE block_number IS NOT NULL;
        CREATE TABLE reg_watch_cursor (chain_id INTEGER PRIMARY KEY, block INTEGER NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE reg_watch_blocks (chain_id INTEGER NOT NULL, number INTEGER NOT NULL, hash TEXT NOT NULL,
                                       PRIMARY KEY (chain_id, number));
        CREATE TABLE reg_used_signatures (digest TEXT PRIMARY KEY, kind TEXT NOT NULL, project_id TEXT NOT NULL,
                                          used_at REAL NOT NULL);
        ALTER TABLE reg_nonces ADD COLUMN message TEXT;
        ALTER TABLE reg_nonces ADD COLUMN address TEXT
        """,
    ),
]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def iso(ts: float) -> str:
    return iso_utc(ts, millis=False)


def new_key(prefix: str) -> str:
    raw = secrets.token_hex(8).upper()
    return f"{prefix}-{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:]}"


class RegistryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self) -> None:
        await self.db.migrate(MIGRATIONS)

    # -- auth ----------------------------------------------------------------------------------

    async def new_nonce(self, ttl: float) -> tuple[str, float]:
        """An alphanumeric nonce (EIP-4361 wants at least 8 alphanumeric characters)."""
        nonce, expires = secrets.token_hex(16), time.time() + ttl
        await self.db.execute("INSERT INTO reg_nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires))
        return nonce, expires

    async def bind_nonce(self, nonce: str, address: str, message: str) -> None:
        """Remember the sign-in message the node composed for this nonce and address."""
        await self.db.execute("UPDATE reg_nonces SET address = ?, message = ? WHERE nonce = ?", (address, message, nonce))

    async def nonce_info(self, nonce: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_nonces WHERE nonce = ?", (nonce,))
        return dict(row) if row else None

    async def use_nonce(self, nonce: str) -> str:
        """'ok', 'unknown', 'used' or 'expired'; marks it used (single use, atomically)."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT expires_at, used_at FROM reg_nonces WHERE nonce = ?", (nonce,)).fetchone()
            if row is None:
                return "unknown"
            if row[1] is not None:
                return "used"
            conn.execute("UPDATE reg_nonces SET used_at = ? WHERE nonce = ?", (now, nonce))
            return "expired" if row[0] < now else "ok"

        return await self.db.run_in_transaction(op)

    async def sign_in(self, address: str, ttl: float) -> tuple[str, float]:
        token, expires, now = secrets.token_urlsafe(32), time.time() + ttl, time.time()

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO reg_accounts (address, deployment_key, created_at) VALUES (?, ?, ?)"
                         " ON CONFLICT (address) DO NOTHING", (address, new_key("DEPLOYMENT-KEY"), now))
            conn.execute("INSERT INTO reg_tokens (token_hash, address, expires_at) VALUES (?, ?, ?)",
                         (token_hash(token), address, expires))

        await self.db.run_in_transaction(op)
        return token, expires

    async def token_address(self, token: str) -> str | None:
        row = await self.db.fetchone("SELECT address FROM reg_tokens WHERE token_hash = ? AND expires_at > ?",
                                     (token_hash(token), time.time()))
        return row[0] if row else None

    async def account(self, address: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_accounts WHERE address = ?", (address,))
        if row is None:
            return None
        return {"address": row["address"], "deploymentKey": row["deployment_key"], "createdAt": iso(row["created_at"])}

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
        return await self.project(project_id)

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

    # -- configs ---------------------------------------------------------------------------------

    async def create_config(self, project_id: str, task_id: str, body: dict[str, Any], signer: str,
                            digest: str) -> dict | None:
        """The new config, or None when its signed digest was used before."""
        config_id = new_id("config")

        def op(conn: sqlite3.Connection) -> bool:
            if not self._use_signature(conn, digest, "config", project_id):
                return False
            conn.execute(
                "INSERT INTO reg_configs (id, project_id, task_id, name, oracle_confirmations, relayer_confirmations,"
                " trigger, data, signature, signer, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (config_id, project_id, task_id, body["name"], body["oracleConfirmations"],
                 body["relayerConfirmations"], json.dumps(body["trigger"]), json.dumps(body["data"]),
                 body["signature"], signer, time.time()))
            return True

        if not await self.db.run_in_transaction(op):
            return None
        return await self.config(config_id)

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

    async def cron_configs(self) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT c.*, t.cid FROM reg_configs c JOIN reg_tasks t ON t.id = c.task_id"
                                      " WHERE c.deprecated_at IS NULL AND json_extract(c.trigger, '$.cron') IS NOT NULL")
        return [{**self._config(r), "cid": r["cid"], "created_ts": r["created_at"]} for r in rows]

    async def event_configs(self, chain_id: int) -> list[dict[str, Any]]:
        """Live configs whose trigger is an event on the given chain."""
        rows = await self.db.fetchall("SELECT c.*, t.cid FROM reg_configs c JOIN reg_tasks t ON t.id = c.task_id"
                                      " WHERE c.deprecated_at IS NULL AND json_extract(c.trigger, '$.event.chainId') = ?",
                                      (chain_id,))
        return [{**self._config(r), "cid": r["cid"], "created_ts": r["created_at"]} for r in rows]

    # -- inputs ------------------------------------------------------------------------------------

    async def add_input(self, task_id: str, config_id: str, trigger: dict, raw: dict, inputs: dict, proofs: dict,
                        count: int, block: tuple[int, str] | None = None) -> dict[str, Any] | None:
        """None when the config already has this trigger (unique per config, not globally)."""
        input_id = new_id("input")
        number, block_hash = block if block else (None, None)
        try:
            await self.db.execute(
                "INSERT INTO reg_inputs (id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs, proofs,"
                " count, created_at, block_number, block_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (input_id, task_id, config_id, trigger["chainId"], trigger["transactionHash"].lower(),
                 trigger["logIndex"], json.dumps(raw), json.dumps(inputs), json.dumps(proofs), count, time.time(),
                 number, block_hash))
        except sqlite3.IntegrityError:
            return None
        return await self.input(input_id)

    async def input(self, input_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_inputs WHERE id = ?", (input_id,))
        if row is None:
            return None
        return {"inputId": row["id"], "taskId": row["task_id"], "configId": row["config_id"],
                "trigger": {"chainId": row["chain_id"], "transactionHash": row["tx_hash"], "logIndex": row["log_index"]},
                "inputs": json.loads(row["inputs"]), "rawInputs": json.loads(row["raw"]),
                "proofs": json.loads(row["proofs"]), "count": row["count"], "createdAt": iso(row["created_at"]),
                "reverted": row["reverted_at"] is not None}

    async def latest_input(self, config_id: str) -> dict[str, Any] | None:
        """The latest oracle inputs submitted for the config (rows the node fired itself carry none)."""
        row = await self.db.fetchone("SELECT id FROM reg_inputs WHERE config_id = ? AND count > 0"
                                     " AND reverted_at IS NULL ORDER BY created_at DESC LIMIT 1", (config_id,))
        return await self.input(row[0]) if row else None

    # -- executions and intents ----------------------------------------------------------------------

    async def add_execution(self, task_id: str, input_row: dict[str, Any], content_hash: str, logs: list,
                            intents: list[dict[str, Any]], relayer: str, signature: str,
                            required: int) -> tuple[str, bool] | None:
        """Record a relayer's execution, or its confirmation of an identical one. Returns
        (execution id, created), or None when the input was reverted (its event left the chain).
        Intents stay 'pending' (closed to proposals) until `required` distinct relayers submitted
        the same execution; then they are 'submitted'."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> tuple[str, bool] | None:
            reverted = conn.execute("SELECT reverted_at FROM reg_inputs WHERE id = ?",
                                    (input_row["inputId"],)).fetchone()
            if reverted is None or reverted[0] is not None:
                return None
            row = conn.execute("SELECT id, relayers, signatures, status FROM reg_executions WHERE input_id = ?"
                               " AND content_hash = ?", (input_row["inputId"], content_hash)).fetchone()
            if row is not None:
                relayers, signatures = json.loads(row[1]), json.loads(row[2])
                if relayer.lower() not in [r.lower() for r in relayers]:
                    relayers.append(relayer)
                    signatures.append(signature)
                status = "confirmed" if len(relayers) >= required else "pending"
                conn.execute("UPDATE reg_executions SET relayers = ?, signatures = ?, status = ? WHERE id = ?",
                             (json.dumps(relayers), json.dumps(signatures), status, row[0]))
                if status == "confirmed" and row[3] == "pending":
                    opened = [r[0] for r in conn.execute("SELECT id FROM reg_intents WHERE execution_id = ?"
                                                         " AND status = 'pending'", (row[0],)).fetchall()]
                    conn.execute("UPDATE reg_intents SET status = 'submitted' WHERE execution_id = ?"
                                 " AND status = 'pending'", (row[0],))
                    conn.executemany("INSERT INTO reg_intent_events (intent_id, timestamp, level, message)"
                                     " VALUES (?, ?, ?, ?)", [(i, now, "info", f"Confirmed by {len(relayers)} relayers")
                                                              for i in opened])
                return row[0], False
            execution_id = new_id("execution")
            confirmed = required <= 1
            conn.execute(
                "INSERT INTO reg_executions (id, task_id, input_id, config_id, content_hash, logs, relayers, signatures,"
                " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (execution_id, task_id, input_row["inputId"], input_row["configId"], content_hash, json.dumps(logs),
                 json.dumps([relayer]), json.dumps([signature]), "confirmed" if confirmed else "pending", now))
            for intent in intents:
                conn.execute("INSERT INTO reg_intents (id, execution_id, task_id, type, data, status, deadline,"
                             " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                             (intent["intentId"], execution_id, task_id, intent["type"], json.dumps(intent["data"]),
                              "submitted" if confirmed else "pending", intent["data"].get("deadline"), now))
                conn.execute("INSERT INTO reg_intent_events (intent_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                             (intent["intentId"], now, "info", "Intent received"))
            return execution_id, True

        return await self.db.run_in_transaction(op)

    async def executions(self, task_id: str, page: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        total = (await self.db.fetchone("SELECT COUNT(*) FROM reg_executions WHERE task_id = ?", (task_id,)))[0]
        rows = await self.db.fetchall(
            "SELECT e.*, c.name, c.oracle_confirmations, c.relayer_confirmations, i.chain_id, i.tx_hash, i.log_index,"
            " i.count, (SELECT COUNT(*) FROM reg_intents n WHERE n.execution_id = e.id) AS intents"
            " FROM reg_executions e JOIN reg_configs c ON c.id = e.config_id JOIN reg_inputs i ON i.id = e.input_id"
            " WHERE e.task_id = ? ORDER BY e.created_at DESC LIMIT ? OFFSET ?", (task_id, limit, page * limit))
        return [{"executionId": r["id"], "status": r["status"],
                 "config": {"name": r["name"], "requriedOracleConfirmations": r["oracle_confirmations"],
                            "requriedRelayerConfirmations": r["relayer_confirmations"]},
                 "trigger": {"chainId": r["chain_id"], "transactionHash": r["tx_hash"], "logIndex": r["log_index"]},
                 "input": {"count": r["count"], "inputId": r["input_id"]}, "intents": r["intents"]}
                for r in rows], total

    async def execution(self, task_id: str, execution_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_executions WHERE id = ? AND task_id = ?",
                                     (execution_id, task_id))
        if row is None:
            return None
        input_row = await self.input(row["input_id"])
        intents = await self.db.fetchall("SELECT * FROM reg_intents WHERE execution_id = ? ORDER BY rowid",
                                         (execution_id,))
        return {"executionId": row["id"], "configId": row["config_id"], "status": row["status"],
                "relayers": json.loads(row["relayers"]), "trigger": input_row["trigger"],
                "inputs": input_row["inputs"], "rawInputs": input_row["rawInputs"],
                "intents": [{"intentId": i["id"], "status": self._intent_status(i), "type": i["type"],
                             "data": json.loads(i["data"])} for i in intents],
                "logs": json.loads(row["logs"]), "proofs": input_row["proofs"], "createdAt": iso(row["created_at"])}

    @staticmethod
    def _intent_status(row) -> str:
        status = row["status"]
        if status in ("submitted", "proposed") and row["deadline"] is not None and row["deadline"] < time.time():
            return "expired"
        return status

    async def intent(self, intent_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT * FROM reg_intents WHERE id = ?", (intent_id,))
        if row is None:
            return None
        proposals = await self.db.fetchall("SELECT * FROM reg_proposals WHERE intent_id = ? ORDER BY created_at",
                                           (intent_id,))
        events = await self.db.fetchall("SELECT * FROM reg_intent_events WHERE intent_id = ? ORDER BY timestamp, rowid",
                                        (intent_id,))
        return {"intentId": row["id"], "executionId": row["execution_id"], "taskId": row["task_id"],
                "status": self._intent_status(row), "type": row["type"], "data": json.loads(row["data"]),
                "proposals": [{"proposalId": p["id"], "solver": p["solver"], "data": json.loads(p["data"]),
                               "signature": p["signature"], "createdAt": iso(p["created_at"])} for p in proposals],
                "signedProposal": row["signed_proposal"], "relayerSignature": row["relayer_signature"],
                "events": [{"timestamp": int(e["timestamp"]), "level": e["level"], "message": e["message"]}
                           for e in events]}

    async def add_proposal(self, intent_id: str, solver: str, data: dict, signature: str) -> str | None:
        proposal_id, now = new_id("proposal"), time.time()

        def op(conn: sqlite3.Connection) -> str | None:
            try:
                conn.execute("INSERT INTO reg_proposals (id, intent_id, solver, data, signature, created_at)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (proposal_id, intent_id, solver, json.dumps(data), signature, now))
            except sqlite3.IntegrityError:
                return None
            conn.execute("UPDATE reg_intents SET status = 'proposed' WHERE id = ? AND status = 'submitted'", (intent_id,))
            conn.execute("INSERT INTO reg_intent_events (intent_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                         (intent_id, now, "info", f"Proposal received from solver {solver}"))
            return proposal_id

        return await self.db.run_in_transaction(op)

    async def sign_proposal(self, intent_id: str, proposal_id: str, solver: str, signature: str) -> bool:
        now = time.time()

        def op(conn: sqlite3.Connection) -> bool:
            changed = conn.execute("UPDATE reg_intents SET status = 'signed', signed_proposal = ?, relayer_signature = ?"
                                   " WHERE id = ? AND status = 'proposed'",
                                   (proposal_id, signature, intent_id)).rowcount
            if changed:
                conn.execute("INSERT INTO reg_intent_events (intent_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                             (intent_id, now, "success", f"Proposal signed for solver {solver}"))
            return bool(changed)

        return await self.db.run_in_transaction(op)

    async def auctions_closed(self, first_proposal_before: float) -> list[str]:
        """Intents still 'proposed' whose first proposal came before the given time."""
        rows = await self.db.fetchall(
            "SELECT i.id FROM reg_intents i WHERE i.status = 'proposed' AND (SELECT MIN(created_at) FROM reg_proposals p"
            " WHERE p.intent_id = i.id) < ?", (first_proposal_before,))
        return [r[0] for r in rows]

    async def expire_intents(self) -> int:
        now = time.time()

        def op(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute("SELECT id FROM reg_intents WHERE status IN ('submitted', 'proposed')"
                                              " AND deadline IS NOT NULL AND deadline < ?", (now,)).fetchall()]
            for intent_id in ids:
                conn.execute("UPDATE reg_intents SET status = 'expired' WHERE id = ?", (intent_id,))
                conn.execute("INSERT INTO reg_intent_events (intent_id, timestamp, level, message) VALUES (?, ?, ?, ?)",
                             (intent_id, now, "warning", "Intent expired at its deadline"))
            return len(ids)

        return await self.db.run_in_transaction(op)

    # -- cron state --------------------------------------------------------------------------------

    async def last_tick(self, config_id: str) -> int | None:
        row = await self.db.fetchone("SELECT last_tick FROM reg_cron_state WHERE config_id = ?", (config_id,))
        return row[0] if row else None

    async def set_last_tick(self, config_id: str, tick: int) -> None:
        await self.db.execute("INSERT INTO reg_cron_state (config_id, last_tick) VALUES (?, ?) ON CONFLICT (config_id)"
                              " DO UPDATE SET last_tick = MAX(last_tick, excluded.last_tick)", (config_id, tick))
