"""Tables of the gateway (all prefixed `gw_`). The audit log is append-only: triggers refuse
UPDATE and DELETE."""

from node.storage import Migration

MIGRATIONS = [
    Migration(
        "gateway.0001",
        """
        CREATE TABLE gw_users (
            id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
            password_hash TEXT, oauth_provider TEXT, oauth_subject TEXT, created_at REAL NOT NULL
        );
        CREATE TABLE gw_orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, settings TEXT NOT NULL DEFAULT '{}',
                              created_at REAL NOT NULL, deleted_at REAL);
        CREATE TABLE gw_members (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES gw_orgs(id), user_id TEXT NOT NULL REFERENCES gw_users(id),
            role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')), created_at REAL NOT NULL,
            UNIQUE (org_id, user_id)
        );
        CREATE TABLE gw_sessions (token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL, expires_at REAL NOT NULL);
        CREATE TABLE gw_api_keys (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL REFERENCES gw_orgs(id), name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE, key_prefix TEXT NOT NULL, secret_sealed TEXT NOT NULL,
            workflow_id TEXT, created_by TEXT, created_at REAL NOT NULL, rotated_at REAL, revoked_at REAL,
            last_used_at REAL, request_count INTEGER NOT NULL DEFAULT 0, cost_usd REAL NOT NULL DEFAULT 0
        );
        CREATE TABLE gw_invites (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, email TEXT NOT NULL, role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE, status TEXT NOT NULL, sent_count INTEGER NOT NULL DEFAULT 1,
            invited_by TEXT, created_at REAL NOT NULL, expires_at REAL NOT NULL
        );
        CREATE TABLE gw_workflows (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'killed')),
            budget_usd REAL, spent_usd REAL NOT NULL DEFAULT 0, reserved_usd REAL NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, updated_at REAL NOT NULL
        );
        CREATE INDEX gw_workflows_org ON gw_workflows (org_id);
        CREATE TABLE gw_reservations (
            id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, amount_usd REAL NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('held', 'settled', 'expired', 'released')),
            execution_id TEXT, created_at REAL NOT NULL, expires_at REAL NOT NULL
        );
        CREATE INDEX gw_reservations_held ON gw_reservations (expires_at) WHERE status = 'held';
        CREATE TABLE gw_executions (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workflow_id TEXT, kind TEXT NOT NULL,
            allowed INTEGER NOT NULL, reason TEXT, policy_id TEXT, model TEXT, tool TEXT, container TEXT,
            estimated_cost_usd REAL, reservation_id TEXT, api_key_id TEXT, job_id TEXT, created_at REAL NOT NULL
        );
        CREATE INDEX gw_executions_org ON gw_executions (org_id, created_at);
        CREATE INDEX gw_executions_wf ON gw_executions (workflow_id, created_at);
        CREATE TABLE gw_events (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workflow_id TEXT NOT NULL, model TEXT, cost_usd REAL NOT NULL,
            input_tokens INTEGER, output_tokens INTEGER, latency_ms REAL, metadata TEXT, api_key_id TEXT,
            reservation_id TEXT, created_at REAL NOT NULL
        );
        CREATE INDEX gw_events_wf ON gw_events (workflow_id, created_at);
        CREATE TABLE gw_policies (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, priority INTEGER NOT NULL,
            enabled INTEGER NOT NULL, action TEXT NOT NULL, reason TEXT, match TEXT NOT NULL,
            template_id TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
        );
        CREATE INDEX gw_policies_org ON gw_policies (org_id, priority);
        CREATE TABLE gw_audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT, org_id TEXT, actor TEXT NOT NULL, action TEXT NOT NULL,
            target_type TEXT NOT NULL, target_id TEXT, before TEXT, after TEXT, created_at REAL NOT NULL
        );
        CREATE INDEX gw_audit_org ON gw_audit (org_id, id);
        CREATE TRIGGER gw_audit_no_update BEFORE UPDATE ON gw_audit
            BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        CREATE TRIGGER gw_audit_no_delete BEFORE DELETE ON gw_audit
            BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        CREATE TABLE gw_alerts (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workflow_id TEXT, threshold REAL NOT NULL,
            message TEXT NOT NULL, status TEXT NOT NULL, created_at REAL NOT NULL, dismissed_at REAL,
            UNIQUE (workflow_id, threshold)
        );
        CREATE TABLE gw_alert_channels (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, type TEXT NOT NULL, url TEXT NOT NULL,
            enabled INTEGER NOT NULL, created_at REAL NOT NULL
        );
        CREATE TABLE gw_notification_settings (
            org_id TEXT NOT NULL, user_id TEXT NOT NULL, settings TEXT NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (org_id, user_id)
        )
        """,
    ),
    # The SDK contract (issue 13): key versions for rotation (the previous secret stays valid for a
    # short grace so in-flight SDK calls survive a rotation) and the control plane's per-org
    # sequence numbers, which must never be reused after a restart.
    Migration(
        "gateway.sdk.0001",
        """
        ALTER TABLE gw_api_keys ADD COLUMN key_version INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE gw_api_keys ADD COLUMN prev_secret_sealed TEXT;
        CREATE TABLE gw_control_seq (org_id TEXT PRIMARY KEY, seq INTEGER NOT NULL);
        CREATE INDEX gw_reservations_execution ON gw_reservations (execution_id);
        """,
    ),
    # Workflow ids per org (security issue, item 12): rows keyed `org_id/workflow_id`, and so
    # the rows that point at them; tables with their own org_id keep the plain id.
    Migration(
        "gateway.sdk.0002",
        """
        UPDATE gw_reservations SET workflow_id = (SELECT w.org_id FROM gw_workflows w
            WHERE w.id = gw_reservations.workflow_id) || '/' || workflow_id WHERE instr(workflow_id, '/') = 0;
        UPDATE gw_alerts SET workflow_id = org_id || '/' || workflow_id
            WHERE workflow_id IS NOT NULL AND instr(workflow_id, '/') = 0;
        UPDATE gw_workflows SET id = org_id || '/' || id WHERE instr(id, '/') = 0;
        """,
    ),
    # The audit log as a keyed hash chain per org and its export jobs (issue 25): rows written
    # before get their hashes once at start (store_audit.chain_unhashed).
    Migration(
        "gateway.audit.0001",
        """
        ALTER TABLE gw_audit ADD COLUMN prev_hash TEXT;
        ALTER TABLE gw_audit ADD COLUMN hash TEXT;
        CREATE TABLE gw_audit_exports (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workflow_scope TEXT, requested_by TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
            since REAL NOT NULL, until REAL NOT NULL, record_count INTEGER, file_path TEXT, error TEXT,
            created_at REAL NOT NULL, completed_at REAL
        );
        CREATE INDEX gw_audit_exports_org ON gw_audit_exports (org_id, created_at);
        """,
    ),
    # Approvals (issue 25): a policy may ask a person before a call runs; each request is kept
    # with the execution it gates and is used at most once.
    Migration(
        "gateway.approvals.0001",
        """
        ALTER TABLE gw_policies ADD COLUMN approval TEXT;
        CREATE TABLE gw_approvals (
            id TEXT PRIMARY KEY, org_id TEXT NOT NULL, workflow_id TEXT, execution_id TEXT NOT NULL,
            record_id TEXT NOT NULL, tool TEXT, model TEXT, policy_id TEXT, api_key_id TEXT NOT NULL,
            reason TEXT, approver_role TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
            note TEXT, decided_by TEXT, created_at REAL NOT NULL, expires_at REAL NOT NULL,
            decided_at REAL, consumed_at REAL
        );
        CREATE INDEX gw_approvals_org ON gw_approvals (org_id, status, created_at);
        CREATE INDEX gw_approvals_due ON gw_approvals (expires_at) WHERE status IN ('pending', 'approved');
        """,
    ),
]
