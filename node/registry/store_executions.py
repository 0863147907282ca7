"""What runs through the registry (part of `RegistryStore`): trigger inputs, relayers'
executions and their confirmation, and the intents, solver proposals and auctions they open."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from node.registry.store_schema import iso, new_id
from node.storage import Database


class ExecutionStore:
    db: Database

    # -- inputs ------------------------------------------------------------------------------------

    async def add_input(self, task_id: str, config_id: str, trigger: dict, raw: dict, inputs: dict, proofs: dict,
                        count: int) -> dict[str, Any] | None:
        """An input submitted through the API; None when the config already has this trigger
        among the submitted ones (unique per config, not globally)."""
        input_id = new_id("input")

        def op(conn: sqlite3.Connection) -> bool:
            return self._insert_input(conn, input_id, "submitted", task_id, config_id, trigger, raw, inputs, proofs,
                                      count, None)

        return await self.input(input_id) if await self.db.run_in_transaction(op) else None

    async def claim(self, task_id: str, config_id: str, trigger: dict, inputs: dict, proofs: dict,
                    run: dict[str, Any], block: tuple[int, str] | None = None) -> dict[str, Any] | None:
        """The node claims one of its own triggers (a cron tick, a watched event): an input in the
        node's namespace and, in the same transaction, what its run needs (`run`, kept until
        `finish_claim`). None when the node claimed this trigger for the config before."""
        input_id = new_id("input")

        def op(conn: sqlite3.Connection) -> bool:
            if not self._insert_input(conn, input_id, "node", task_id, config_id, trigger, {}, inputs, proofs, 0,
                                      block):
                return False
            conn.execute("INSERT INTO reg_node_claims (input_id, config_id, run, claimed_at) VALUES (?, ?, ?, ?)",
                         (input_id, config_id, json.dumps(run), time.time()))
            return True

        return await self.input(input_id) if await self.db.run_in_transaction(op) else None

    @staticmethod
    def _insert_input(conn: sqlite3.Connection, input_id: str, origin: str, task_id: str, config_id: str,
                      trigger: dict, raw: dict, inputs: dict, proofs: dict, count: int,
                      block: tuple[int, str] | None) -> bool:
        number, block_hash = block if block else (None, None)
        try:
            conn.execute(
                "INSERT INTO reg_inputs (id, task_id, config_id, chain_id, tx_hash, log_index, raw, inputs, proofs,"
                " count, created_at, block_number, block_hash, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (input_id, task_id, config_id, trigger["chainId"], trigger["transactionHash"].lower(),
                 trigger["logIndex"], json.dumps(raw), json.dumps(inputs), json.dumps(proofs), count, time.time(),
                 number, block_hash, origin))
        except sqlite3.IntegrityError:
            return False
        return True

    async def finish_claim(self, input_id: str) -> None:
        """The claim's run ended: what it needed is dropped (its input row stays, the claim)."""
        await self.db.execute("DELETE FROM reg_node_claims WHERE input_id = ?", (input_id,))

    async def open_claims(self, claimed_before: float) -> list[dict[str, Any]]:
        """Claims whose run never ended (the process stopped during it), oldest first."""
        rows = await self.db.fetchall("SELECT input_id, run FROM reg_node_claims WHERE claimed_at < ?"
                                      " ORDER BY claimed_at", (claimed_before,))
        return [{"inputId": r[0], "run": json.loads(r[1])} for r in rows]

    async def executed_by(self, input_id: str, relayer: str | None) -> bool:
        """Whether `relayer` already recorded an execution of the input (a node with no relayer
        key has recorded none)."""
        if relayer is None:
            return False
        rows = await self.db.fetchall("SELECT relayers FROM reg_executions WHERE input_id = ?", (input_id,))
        return any(relayer.lower() in (r.lower() for r in json.loads(row[0])) for row in rows)

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

    async def executions(self, task_id: str, page: int, limit: int,
                         reader: str) -> tuple[list[dict[str, Any]], int]:
        """The task's executions of configs in projects where `reader` has a role."""
        mine = ("e.config_id IN (SELECT c.id FROM reg_configs c JOIN reg_roles r ON r.project_id = c.project_id"
                " WHERE lower(r.account) = lower(?) AND r.deprecated_at IS NULL)")
        count = await self.db.fetchone(f"SELECT COUNT(*) FROM reg_executions e WHERE e.task_id = ? AND {mine}",
                                       (task_id, reader))
        assert count is not None  # an aggregate: always one row
        total = count[0]
        rows = await self.db.fetchall(
            "SELECT e.*, c.name, c.oracle_confirmations, c.relayer_confirmations, i.chain_id, i.tx_hash, i.log_index,"
            " i.count, (SELECT COUNT(*) FROM reg_intents n WHERE n.execution_id = e.id) AS intents"
            " FROM reg_executions e JOIN reg_configs c ON c.id = e.config_id JOIN reg_inputs i ON i.id = e.input_id"
            f" WHERE e.task_id = ? AND {mine} ORDER BY e.created_at DESC LIMIT ? OFFSET ?",
            (task_id, reader, limit, page * limit))
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
        assert input_row is not None  # an execution is only ever written for a stored input
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

    async def add_proposal(self, intent_id: str, solver: str, data: dict, signature: str,
                           max_proposals: int | None = None) -> str | None:
        """The new proposal's id, None when the solver proposed before, or 'full' when the
        intent already has `max_proposals` (counted in the same transaction)."""
        proposal_id, now = new_id("proposal"), time.time()

        def op(conn: sqlite3.Connection) -> str | None:
            if max_proposals is not None and conn.execute("SELECT COUNT(*) FROM reg_proposals WHERE intent_id = ?",
                                                          (intent_id,)).fetchone()[0] >= max_proposals:
                return "full"
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
