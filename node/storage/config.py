"""The `storage:` section: the SQLite file, how hard it syncs, how long finished rows stay."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from node.fields import ConfigModel


class StorageConfig(ConfigModel):
    path: str = "node.db"
    # NORMAL (WAL): every committed transaction survives a process crash; the last ones may be
    # lost on power loss. FULL: an fsync per commit, so they survive power loss too.
    synchronous: Literal["normal", "full"] = "normal"
    job_retention: float = Field(7 * 86400.0, ge=0, description="Seconds finished jobs are kept (0: forever)")
    prune_interval: float = Field(60.0, gt=0, description="Seconds between prunes of expired rows")
