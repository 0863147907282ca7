"""SQLite state shared by every subsystem: one file, WAL, versioned migrations."""

from node.storage.db import Database, Migration

__all__ = ["Database", "Migration"]
