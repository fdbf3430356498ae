"""Ordered schema migrations for the SQLite store, each applied in its own transaction.

A migration is a number, a name and a list of SQL statements. The table
``nbs_migrations`` records which ran; a store opens by applying the missing
ones in order under ``BEGIN IMMEDIATE``, so two processes opening a new file
at once cannot both apply one. Append new migrations; never edit old ones.
AgentScope's own ``as_session`` table, when present, is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["MIGRATIONS", "Migration", "apply_migrations"]


@dataclass(frozen=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions and checkpoints",
        (
            """CREATE TABLE nbs_sessions (
                id INTEGER PRIMARY KEY,
                user_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                next_seq INTEGER NOT NULL,
                UNIQUE (user_id, session_id)
            )""",
            """CREATE TABLE nbs_checkpoints (
                id INTEGER PRIMARY KEY,
                session INTEGER NOT NULL REFERENCES nbs_sessions(id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                parent INTEGER,
                created_at TEXT NOT NULL,
                label TEXT,
                metadata TEXT NOT NULL,
                modules TEXT NOT NULL,
                size INTEGER NOT NULL,
                state BLOB NOT NULL,
                UNIQUE (session, seq),
                UNIQUE (session, label)
            )""",
        ),
    ),
    Migration(
        2,
        "entries stored once, shared by checkpoints",
        (
            # One row per distinct list entry (a message, in practice), by content hash.
            """CREATE TABLE nbs_blobs (
                id INTEGER PRIMARY KEY,
                hash BLOB NOT NULL UNIQUE,
                data BLOB NOT NULL
            )""",
            # A run of up to SEGMENT blob ids (packed int64), shared while unchanged.
            """CREATE TABLE nbs_segments (
                id INTEGER PRIMARY KEY,
                hash BLOB NOT NULL UNIQUE,
                blobs BLOB NOT NULL
            )""",
            # JSON [[path, [segment id, ...]], ...]; NULL for checkpoints written whole.
            "ALTER TABLE nbs_checkpoints ADD COLUMN chunks TEXT",
            "CREATE TABLE nbs_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO nbs_meta (key, value) VALUES ('gc_generation', 0)",
        ),
    ),
    Migration(
        3,
        "full-text search index (filled on first search)",
        (
            # Trigram: substrings of 3+ characters, Chinese included. Contentless: the
            # text lives in nbs_blobs; rows are removed with FTS5's 'delete' command.
            "CREATE VIRTUAL TABLE nbs_fts USING fts5(text, tokenize = 'trigram', content = '')",
            "INSERT INTO nbs_meta (key, value) VALUES ('fts_indexed_upto', 0)",
        ),
    ),
    Migration(
        4,
        "an identity for the store file",
        # A store object checks it on every connection: a file deleted and made anew at
        # the same path (perhaps with the same inode) is another store.
        ("INSERT OR IGNORE INTO nbs_meta (key, value) VALUES ('store_uid', abs(random()))",),
    ),
    Migration(
        5,
        "a hash of each checkpoint row",
        (
            # stores/row_hash.py: 16 bytes over the skeleton and list references, 16 over the
            # row's facts (owner, seq, parent, time, label, metadata, modules, size) and those.
            "ALTER TABLE nbs_checkpoints ADD COLUMN hash BLOB",
            # Rows up to this id were written before: their hash is NULL until
            # SQLiteStore.hash_unhashed() adds it. Any later row without one is damaged; new
            # rows always get a larger id (SQLiteStore._write), even after deletes.
            "INSERT OR IGNORE INTO nbs_meta (key, value) "
            "VALUES ('unhashed_upto', (SELECT coalesce(max(id), 0) FROM nbs_checkpoints))",
            # The same for a session row: 16 bytes over (user_id, session_id), so a row whose
            # ids were edited is not listed as a session.
            "ALTER TABLE nbs_sessions ADD COLUMN hash BLOB",
            "INSERT OR IGNORE INTO nbs_meta (key, value) "
            "VALUES ('unhashed_sessions_upto', (SELECT coalesce(max(id), 0) FROM nbs_sessions))",
        ),
    ),
)


async def apply_migrations(db: Any, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply the migrations ``db`` lacks, in order; return the versions applied."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS nbs_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    applied: list[int] = []
    for migration in migrations:
        await db.execute("BEGIN IMMEDIATE")
        try:
            async with db.execute(
                "SELECT 1 FROM nbs_migrations WHERE version = ?", (migration.version,)
            ) as cursor:
                done = await cursor.fetchone() is not None
            if not done:
                for statement in migration.statements:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO nbs_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, datetime.now(timezone.utc).isoformat()),
                )
                applied.append(migration.version)
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
    return applied


def latest_version(migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """The schema version this code writes."""
    return migrations[-1].version
