"""The registry's tables (prefixed `reg_`): the one ordered list of migrations (ids and SQL are
frozen once shipped) and the small id/key/time helpers every part of `RegistryStore` shares."""

from __future__ import annotations

import secrets
import uuid

from node.storage import Migration
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
    # The node's own triggers (cron ticks, the events it watches) live in their own namespace
    # (`origin = 'node'`), which POST …/inputs cannot write: a predictable trigger id no longer
    # lets an outsider claim a tick or an event first. Rows the watcher recorded (they carry a
    # block) are the node's; older cron rows (chain id 0) stay where they are: they are past
    # ticks the node never fires again, and some may be an outsider's squats. Each claim of the
    # node keeps what its run needs until the run ended (then the row goes: the table holds only
    # runs in progress), so a claim a crash interrupted runs again at start.
    Migration(
        "registry.0003",
        """
        ALTER TABLE reg_inputs ADD COLUMN origin TEXT NOT NULL DEFAULT 'submitted';
        UPDATE reg_inputs SET origin = 'node' WHERE block_number IS NOT NULL;
        DROP INDEX reg_inputs_trigger;
        CREATE UNIQUE INDEX reg_inputs_trigger ON reg_inputs (config_id, origin, chain_id, tx_hash, log_index)
            WHERE reverted_at IS NULL;
        CREATE TABLE reg_node_claims (
            input_id TEXT PRIMARY KEY, config_id TEXT NOT NULL, run TEXT NOT NULL, claimed_at REAL NOT NULL
        );
        CREATE INDEX reg_configs_project ON reg_configs (project_id) WHERE deprecated_at IS NULL
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
