"""Registry data access: one `RegistryStore` over one database, assembled from one part per
responsibility (sign-in and accounts, tasks/projects/roles, configs and cron state, inputs/
executions/intents), so callers keep one object while each part stays small. The migrations live
in one ordered list in `store_schema.py`."""

from __future__ import annotations

from node.registry.store_accounts import AccountStore
from node.registry.store_configs import ConfigStore
from node.registry.store_executions import ExecutionStore
from node.registry.store_projects import ProjectStore
from node.registry.store_schema import MIGRATIONS, iso, new_id, new_key  # noqa: F401 - public names, from here
from node.storage import Database


class RegistryStore(AccountStore, ProjectStore, ConfigStore, ExecutionStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self) -> None:
        await self.db.migrate(MIGRATIONS)
