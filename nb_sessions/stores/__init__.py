"""Checkpoint stores: :class:`SQLiteStore` (the default) and :class:`JSONStore`, one API."""

from __future__ import annotations

import os
from pathlib import Path

from .base import BaseStore, Checkpoint, PruneResult, Redactor, SessionInfo, SessionKey, parse_ref
from .json_store import JSONStore
from .pg_store import PostgresStore, is_postgres_url
from .sqlite_store import SQLiteStore

__all__ = [
    "DEFAULT_STORE",
    "BaseStore",
    "Checkpoint",
    "JSONStore",
    "PostgresStore",
    "PruneResult",
    "SQLiteStore",
    "SessionInfo",
    "SessionKey",
    "open_store",
    "parse_ref",
]

#: The store a notebook uses when none is configured: an embedded SQLite file beside it.
DEFAULT_STORE = "nb_sessions.db"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def open_store(
    path: str | os.PathLike[str] | BaseStore = DEFAULT_STORE, *, redact: Redactor | None = None
) -> BaseStore:
    """Open the store at ``path``: ``postgresql://`` is PostgreSQL, ``.db``/``.sqlite``/``.sqlite3`` SQLite, anything else a JSON folder."""
    if isinstance(path, BaseStore):
        return path
    if is_postgres_url(path):
        return PostgresStore(str(path), redact=redact)
    p = Path(path)
    if p.suffix.lower() in SQLITE_SUFFIXES:
        return SQLiteStore(p, redact=redact)
    return JSONStore(p, redact=redact)
