"""Persistence: core's repository ports over SQLAlchemy (SQLite by default, PostgreSQL by URL)."""
from storage.database import Database, is_database_error
from storage.stores import Stores, open_stores

__all__ = ["Database", "Stores", "is_database_error", "open_stores"]
