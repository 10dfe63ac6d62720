"""Persistence: core's repository ports over SQLAlchemy (SQLite by default, PostgreSQL by URL)."""
from storage.database import Database, is_database_error
from storage.repositories import SqlStore, open_store

__all__ = ["Database", "SqlStore", "is_database_error", "open_store"]
