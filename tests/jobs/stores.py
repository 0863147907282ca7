"""A job store on a fresh SQLite file, for the in-process job tests."""

from __future__ import annotations

from node.jobs.store import JobStore
from node.storage import Database


async def open_store(tmp_path) -> tuple[Database, JobStore]:
    db = Database(str(tmp_path / "jobs.db"))
    await db.open()
    store = JobStore(db)
    await store.start()
    return db, store
