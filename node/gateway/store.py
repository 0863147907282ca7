"""Data access of the gateway: one `GatewayStore` over one database, assembled from one part per
resource (accounts/orgs/keys, workflows and budgets, policies, records, alerts), so callers keep
one object while each part stays small. The parts raise `node/errors.py`'s domain errors; the
HTTP edge turns them into statuses."""

from __future__ import annotations

from node.gateway.schema import MIGRATIONS
from node.gateway.store_accounts import AccountStore
from node.gateway.store_alerts import AlertStore
from node.gateway.store_audit import AuditStore
from node.gateway.store_budgets import BudgetStore
from node.gateway.store_policies import PolicyStore
from node.gateway.store_records import RecordStore
from node.gateway.store_rows import (  # noqa: F401 - the store's public names, imported from here
    INVITE_TTL,
    SESSION_TTL,
    ApiKey,
    Reservation,
    new_id,
    policy_view,
    public_id,
    wf_key,
    workflow_view,
)
from node.secrets import SecretBox
from node.storage import Database


class GatewayStore(AccountStore, BudgetStore, PolicyStore, RecordStore, AlertStore, AuditStore):
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self._box = box
        self._audit_key = box.derive("gateway audit chain")
        self._keys: dict[str, ApiKey] = {}  # key hash -> key (HMAC check on every SDK call)

    async def start(self) -> None:
        await self.db.migrate(MIGRATIONS)
        await self.chain_unhashed()
