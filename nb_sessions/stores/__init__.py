"""Checkpoint stores: :class:`SQLiteStore` (the default) and :class:`JSONStore`, one API."""

from __future__ import annotations

import os
from pathlib import Path

from ..crypto import KeySource
from ..errors import KeyRequiredError
from .agentscope_sources import ReadOnlySource, is_agentscope2_sqlite, is_source_url, open_source
from .base import (
    BaseStore,
    Checkpoint,
    PruneResult,
    Redactor,
    SessionInfo,
    SessionKey,
    VacuumResult,
    parse_ref,
)
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
    "ReadOnlySource",
    "SQLiteStore",
    "SessionInfo",
    "SessionKey",
    "VacuumResult",
    "open_store",
    "parse_ref",
]

#: The store a notebook uses when none is configured: an embedded SQLite file beside it.
DEFAULT_STORE = "nb_sessions.db"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def open_store(
    path: str | os.PathLike[str] | BaseStore = DEFAULT_STORE,
    *,
    redact: Redactor | None = None,
    key: KeySource | None = None,
) -> BaseStore:
    """Open the store at ``path``: ``.db``/``.sqlite``/``.sqlite3`` is SQLite, anything else a JSON folder.

    ``agentscope+sqlite:///app.db``, ``agentscope+postgresql://...``,
    ``agentscope+redis://...`` and ``agentscope1+redis://...`` open an
    AgentScope app's own storage read-only (see
    :mod:`~nb_sessions.stores.agentscope_sources`); so does a ``.db`` file
    that is an AgentScope 2.x database.

    ``key`` encrypts a new SQLite store, JSON folder or PostgreSQL database at rest (32 raw
    bytes, their base64 text, a passphrase, a key file as a ``Path``, or a callable returning
    one); an encrypted store opened without ``key`` takes ``NB_SESSIONS_KEY``. AgentScope
    sources (read-only) take no key. An encrypted JSON folder writes no AgentScope latest file
    (see :class:`JSONStore`). See docs/reliability.md, "Encryption at rest".

    Opening changes nothing on disk. The first write creates the file or
    folder and any missing parent folders, each owner-only, whatever the kind.
    """
    if isinstance(path, BaseStore):
        return path
    if isinstance(path, str) and is_source_url(path):
        _refuse_key_for_source(path, key)
        return open_source(path)
    if is_postgres_url(path):
        return PostgresStore(str(path), redact=redact, key=key)
    p = Path(path)
    if p.suffix.lower() in SQLITE_SUFFIXES:
        if is_agentscope2_sqlite(p):
            # An app's database: read it in place, never add nb_sessions' tables to it.
            _refuse_key_for_source(str(p), key)
            return open_source(f"agentscope+sqlite:///{p.absolute()}")
        return SQLiteStore(p, redact=redact, key=key)
    return JSONStore(p, redact=redact, key=key)


def _refuse_key_for_source(where: str, key: KeySource | None) -> None:
    """An AgentScope app's own storage is read as it is: a key given for it is refused, never ignored."""
    if key is not None:
        raise KeyRequiredError(
            f"{where} is an AgentScope app's own storage, opened read-only as it is: a key does not apply. "
            "Open it without a key; to keep its sessions encrypted, copy them into an encrypted store "
            "(nb-sessions copy SOURCE new.db --to-key ...)",
            location=where,
        )
