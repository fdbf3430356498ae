"""AgentScope's server-side session storage, opened read-only as stores.

An AgentScope app keeps the latest state of each session in its own storage:

- 2.x ``AsyncSQLAlchemyStorage`` (SQLite or PostgreSQL): a ``sessions`` row
  per session, its ``payload`` JSON holding ``{origin, config, state}``;
- 2.x ``RedisStorage``: a STRING ``agentscope:user:{u}:session:{s}`` holding
  the ``SessionRecord`` JSON (``state`` inside);
- 1.x ``RedisSession``: a STRING ``{prefix}user_id:{u}:session:{s}:state``
  holding ``{module: state_dict}``.

Each source is a :class:`BaseStore` whose sessions are those of the app and
whose history is one checkpoint, ``@1``: the state as the app holds it now
(AgentScope keeps no history). Everything that reads works (``sessions``,
``history``, ``get_state``, ``load``, views, diff, search); everything that
writes raises :class:`~nb_sessions.errors.ReadOnlyStoreError`. Nothing is
ever written: SQLite opens with ``mode=ro`` and ``query_only``, PostgreSQL in
read-only transactions, Redis reads with ``SCAN``/``GET``/``LRANGE`` only (never
``GETEX``, so reading does not slide a key's TTL).

Addresses (``open_store`` and the CLI's ``--store``)::

    agentscope+sqlite:///relative/app.db     agentscope+sqlite:////abs/app.db
    agentscope+postgresql://user:pw@host:5432/db
    agentscope+redis://[:pw@]host:6379/0     (2.x RedisStorage)
    agentscope1+redis://host:6379/0?prefix=prod:   (1.x RedisSession, key_prefix)

The SQL forms are AgentScope's own SQLAlchemy URL with ``agentscope+`` in
front (a driver such as ``+aiosqlite`` or ``+asyncpg`` is accepted and
ignored). Nothing here imports AgentScope: the layouts are read with plain
SQL and Redis commands.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiosqlite

from .. import codec
from .._loop import run_sync
from ..errors import (
    CheckpointNotFoundError,
    MissingDependencyError,
    ReadOnlyStoreError,
    StoreCorruptedError,
    StoreError,
)
from .base import At, BaseStore, Checkpoint, PruneResult, SessionInfo, SessionKey, parse_ref

__all__ = [
    "AgentScope1RedisSource",
    "AgentScopeRedisSource",
    "AgentScopeSQLSource",
    "ReadOnlySource",
    "is_agentscope2_sqlite",
    "is_source_url",
    "open_source",
]

#: The module name a 2.x session's ``AgentState`` gets in a checkpoint.
AGENT_MODULE = "agent"
#: URL schemes of the sources (``agentscope1+`` is the 1.x Redis layout).
_SCHEMES = ("agentscope+", "agentscope1+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class SourceRow:
    """One session as its source holds it: the raw state JSON and what is known about it."""

    key: SessionKey
    data: Any  #: the ``{module: state}`` JSON text/bytes, or an already parsed dict
    where: str  #: the row or key, for error messages
    created_at: datetime = _EPOCH
    updated_at: datetime = _EPOCH
    metadata: Mapping[str, Any] | None = None
    size: int = 0


class ReadOnlySource(BaseStore):
    """A store over data that belongs to someone else: readable, never written.

    A backend implements :meth:`_rows` (every session, cheaply) and
    :meth:`_row` (one session with its state); the checkpoints, reading and the
    refusal of every write are shared here.
    """

    #: What the source is, in messages (e.g. "AgentScope 2.x SQL storage").
    kind = "read-only source"

    async def _rows(self) -> list[SourceRow]:
        """Every session of the source (``data`` may be left out)."""
        raise NotImplementedError

    async def _row(self, key: SessionKey) -> SourceRow | None:
        """The session ``key`` with its state data, or None."""
        raise NotImplementedError

    def _states(self, row: SourceRow, parsed: Any) -> dict[str, Any]:
        """The ``{module: state}`` a row's parsed JSON holds (1.x: itself)."""
        if not isinstance(parsed, dict):
            raise StoreCorruptedError(
                f"{row.where} holds {type(parsed).__name__} JSON, not an object of module states",
                location=row.where,
            )
        return parsed

    def _modules(self, row: SourceRow) -> tuple[str, ...]:
        """The module names of a row's state (empty when it cannot be parsed)."""
        with contextlib.suppress(StoreCorruptedError):
            return tuple(self._parse(row))
        return ()

    # -- what every source shares ---------------------------------------------------

    def _read_only(self, cp: Checkpoint) -> bool:
        return True

    def _refuse(self, what: str) -> ReadOnlyStoreError:
        return ReadOnlyStoreError(
            f"cannot {what}: {self.location} is an {self.kind}, which nb_sessions opens read-only "
            "(it never writes to an app's own storage). Copy its sessions into an nb_sessions store "
            f"first: nb-sessions copy '{self.location}' nb_sessions.db (or bundle.copy_sessions), "
            "then work there",
            location=self.location,
        )

    async def _write(
        self,
        key: SessionKey,
        states: dict[str, Any],
        label: str | None,
        metadata: dict[str, Any],
        parent: int | None,
        *,
        at: At | None = None,
    ) -> Checkpoint:
        raise self._refuse(f"save a checkpoint of {key}")

    async def _delete(self, key: SessionKey, seqs: Sequence[int] | None) -> int:
        raise self._refuse(f"delete {key}")

    async def _set_label(self, key: SessionKey, seq: int, label: str | None) -> None:
        raise self._refuse(f"label {key}@{seq}")

    async def _vacuum(self) -> int:
        raise self._refuse("vacuum")

    async def aprune(
        self,
        session: str | SessionKey,
        keep_last: int | None = None,
        keep_labeled: bool = True,
        older_than: timedelta | datetime | None = None,
        dry_run: bool = False,
        *,
        user_id: str | None = None,
    ) -> PruneResult:
        """Refused: a source has one checkpoint per session and is never written."""
        raise self._refuse(f"prune {session}")

    async def _history(self, key: SessionKey) -> list[Checkpoint]:
        row = await self._row(key)
        if row is None:
            raise self._not_found(key)
        return [
            Checkpoint(
                session_id=key.session_id,
                user_id=key.user_id,
                seq=1,
                created_at=row.updated_at,
                modules=self._modules(row),
                size=row.size,
                metadata=dict(row.metadata or {}),
                store=self,
                origin=row.where,
            )
        ]

    async def _read(self, cp: Checkpoint) -> dict[str, Any]:
        row = await self._row(cp.key)
        if row is None:
            raise CheckpointNotFoundError(
                f"session {cp.key} is no longer in {self.location} (deleted or expired meanwhile)",
                ref=cp.ref,
            )
        return self._parse(row)

    def _parse(self, row: SourceRow) -> dict[str, Any]:
        data = row.data
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        parsed = codec.loads(data, row.where, trusted=False) if isinstance(data, bytes) else data
        return self._states(row, parsed)

    async def _sessions(self) -> list[SessionInfo]:
        return [
            SessionInfo(
                session_id=row.key.session_id,
                user_id=row.key.user_id,
                checkpoints=1,
                latest_seq=1,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in await self._rows()
        ]


class _TranscriptSource(ReadOnlySource):
    """A 2.x source: besides the state, the app keeps a message log per session (what its UI shows)."""

    def _modules(self, row: SourceRow) -> tuple[str, ...]:
        return (AGENT_MODULE,)  # one AgentState per session: no need to parse it to say so

    async def _transcript(self, key: SessionKey) -> list[tuple[str, Any]]:
        """``(where, json)`` of each logged message, oldest first."""
        raise NotImplementedError

    async def atranscript(
        self, session: str | SessionKey, *, user_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The app's message log of ``session``, oldest first, as ``Msg`` dicts.

        AgentScope 2.x keeps it apart from the agent's state (a ``messages``
        table, or a Redis list): it is what the app shows, and outlives the
        context a compression shortens.
        """
        key = parse_ref(session, user_id).key
        await self._history(key)  # a named error for a session the app does not have
        out: list[dict[str, Any]] = []
        for where, data in await self._transcript(key):
            msg = codec.loads(_as_bytes(data), where, trusted=False)
            if not isinstance(msg, dict):
                raise StoreCorruptedError(
                    f"{where} holds {type(msg).__name__} JSON, not a message", location=where
                )
            out.append(msg)
        return out

    def transcript(
        self, session: str | SessionKey, *, user_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The app's message log of ``session``; see :meth:`atranscript`."""
        return run_sync(self.atranscript(session, user_id=user_id))


# -- AgentScope 2.x SQL storage ----------------------------------------------------------


_SQL_COLUMNS = "id, user_id, agent_id, team_id, created_at, updated_at"


class AgentScopeSQLSource(_TranscriptSource):
    """An AgentScope 2.x ``AsyncSQLAlchemyStorage`` database (SQLite or PostgreSQL), read-only.

    Each ``sessions`` row is a session keyed ``(user_id, id)``; its checkpoint
    ``@1`` holds ``{"agent": payload.state}`` (the ``AgentState``), and its
    metadata the row's ``agent_id``, ``team_id``, ``origin`` and ``config``.
    The ``messages`` table (the app's transcript for display) is not part of
    the state (the agent's own context is): :meth:`transcript` reads it.
    """

    kind = "AgentScope 2.x SQL storage"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        scheme, _, rest = url.partition("://")
        dialect = scheme.removeprefix("agentscope+").split("+", 1)[0]
        self.dialect = dialect
        if dialect == "sqlite":
            if not rest.startswith("/") or rest == "/":
                raise StoreError(
                    f"{url!r}: write agentscope+sqlite:///relative/app.db or "
                    "agentscope+sqlite:////absolute/app.db (SQLAlchemy's form, with 'agentscope+' in front)"
                )
            self.path: Path | None = Path(
                urllib.parse.unquote(rest[1:].split("?", 1)[0])
            ).absolute()
            self.dsn = ""
        elif dialect in ("postgresql", "postgres"):
            self.path = None
            self.dsn = f"postgresql://{rest}"
        else:
            raise StoreError(
                f"{url!r}: AgentScope's SQL storage is read on SQLite (agentscope+sqlite:///app.db) "
                f"or PostgreSQL (agentscope+postgresql://user@host/db), not {dialect!r}"
            )

    @property
    def location(self) -> str:
        """The URL (password hidden)."""
        return _hide_password(self.url)

    async def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.path is not None:
            return await self._query_sqlite(self.path, sql, params)
        return await self._query_postgres(sql.replace("?", "%s"), params)

    async def _query_sqlite(
        self, path: Path, sql: str, params: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        if not path.is_file():
            raise StoreError(f"no AgentScope database at {path}: check the path in {self.location}")
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
        try:
            async with aiosqlite.connect(uri, uri=True, isolation_level=None) as db:
                await db.execute("PRAGMA trusted_schema = OFF")
                await db.execute("PRAGMA query_only = ON")
                async with db.execute(sql, tuple(params)) as cur:
                    return [tuple(r) for r in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise self._sql_error(exc) from exc

    async def _query_postgres(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingDependencyError(
                f"reading {self.location} needs psycopg 3: pip install 'nb_sessions[sources]'"
            ) from exc
        try:
            async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
                await conn.set_read_only(True)
                async with conn.cursor() as cur:
                    await cur.execute(sql.encode(), tuple(params))
                    rows = await cur.fetchall()
                await conn.rollback()
                return [tuple(r) for r in rows]
        except psycopg.Error as exc:
            raise self._sql_error(exc) from exc

    def _sql_error(self, exc: Exception) -> StoreError:
        text = str(exc).strip()
        if "no such table" in text or ("does not exist" in text and "relation" in text):
            return StoreError(
                f"{self.location} has no AgentScope 2.x 'sessions' table ({text}): is it the "
                "database your app passes to AsyncSQLAlchemyStorage, and has the app started once?"
            )
        if "not a database" in text or "malformed" in text:
            return StoreCorruptedError(
                f"{self.location} is not a readable SQLite database ({text})",
                location=self.location,
            )
        return StoreError(f"cannot read {self.location}: {text}")

    def _row_of(self, found: tuple[Any, ...], data: Any) -> SourceRow:
        sid, uid, agent_id, team_id, created, updated = found[:6]
        where = f"sessions row {sid!r} in {self.location}"
        return SourceRow(
            key=SessionKey(str(uid), str(sid)),
            data=data,
            where=where,
            created_at=_utc(created),
            updated_at=_utc(updated),
            metadata={
                "agentscope": "2.x",
                "agent_id": agent_id,
                **({"team_id": team_id} if team_id else {}),
            },
            size=len(data.encode("utf-8", "surrogatepass"))
            if isinstance(data, str)
            else len(data or b""),
        )

    async def _rows(self) -> list[SourceRow]:
        return [
            self._row_of(r, None) for r in await self._query(f"SELECT {_SQL_COLUMNS} FROM sessions")
        ]

    async def _row(self, key: SessionKey) -> SourceRow | None:
        payload = "payload::text" if self.path is None else "payload"
        found = await self._query(
            f"SELECT {_SQL_COLUMNS}, {payload} FROM sessions WHERE id = ? AND user_id = ?",
            (key.session_id, key.user_id),
        )
        if not found:
            return None
        row = self._row_of(found[0], found[0][6])
        with contextlib.suppress(StoreCorruptedError):
            parsed = codec.loads(_as_bytes(row.data), row.where, trusted=False)
            if isinstance(parsed, dict):
                extra = {k: parsed[k] for k in ("origin", "config") if k in parsed}
                # Keep what was parsed: reading the state must not parse it a second time.
                row = dataclasses.replace(
                    row, data=parsed, metadata={**dict(row.metadata or {}), **extra}
                )
        return row

    def _states(self, row: SourceRow, parsed: Any) -> dict[str, Any]:
        return {AGENT_MODULE: _record_state(row, parsed)}

    async def _transcript(self, key: SessionKey) -> list[tuple[str, Any]]:
        payload = "payload::text" if self.path is None else "payload"
        rows = await self._query(
            f"SELECT msg_id, {payload} FROM messages WHERE session_id = ? ORDER BY created_at, msg_id",
            (key.session_id,),
        )
        return [
            (f"messages row {mid!r} of session {key} in {self.location}", data)
            for mid, data in rows
        ]


def is_agentscope2_sqlite(path: str | Path) -> bool:
    """True if ``path`` is an AgentScope 2.x SQL storage database nb_sessions has not been added to.

    Read with ``mode=ro``: looking never writes. A file that is no SQLite
    database at all is not one (``SQLiteStore`` reports it).
    """
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size == 0:
            return False
        conn = sqlite3.connect(f"file:{urllib.parse.quote(str(p.absolute()))}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return False
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = (
            {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
            if "sessions" in names
            else set()
        )
    except (sqlite3.Error, UnicodeDecodeError):  # a damaged schema (SQLite's message quotes its bytes)
        return False
    finally:
        conn.close()
    return (
        "nbs_migrations" not in names
        and {"sessions", "messages"} <= names
        and {"id", "user_id", "agent_id", "payload"} <= columns
    )


# -- Redis -------------------------------------------------------------------------------


class _RedisSource(ReadOnlySource):
    """Sessions stored one STRING per session in Redis, found by a key template."""

    #: The session key template, with ``{user_id}`` and ``{session_id}``.
    template = ""
    #: Templates of other keys that the session template's pattern also matches.
    others: tuple[str, ...] = ()

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self._redis_url = urllib.parse.urlunsplit(
            (parts.scheme.split("+", 1)[1], parts.netloc, parts.path, "", "")
        )
        self.query = dict(urllib.parse.parse_qsl(parts.query))
        self._pattern = _template_regex(self.template)
        self._other_patterns = [_template_regex(t) for t in self.others]

    @property
    def location(self) -> str:
        """The URL (password hidden)."""
        return _hide_password(self.url)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        try:
            import redis.asyncio as aredis
        except ImportError as exc:
            raise MissingDependencyError(
                f"reading {self.location} needs the redis client: pip install 'nb_sessions[sources]'"
            ) from exc
        client = aredis.Redis.from_url(self._redis_url, decode_responses=False)
        try:
            yield client
        except aredis.RedisError as exc:
            raise StoreError(
                f"cannot read {self.location}: {exc}; is the Redis server up and the address right?"
            ) from exc
        finally:
            await client.aclose()

    def _key(self, key: SessionKey) -> str:
        return self.template.format(user_id=key.user_id, session_id=key.session_id)

    def _parse_key(self, name: str) -> SessionKey | None:
        if any(p.match(name) for p in self._other_patterns):
            return None
        m = self._pattern.match(name)
        return SessionKey(m["user_id"], m["session_id"]) if m else None

    async def _scan(self, client: Any) -> list[tuple[SessionKey, str]]:
        glob = _glob_escape(self.template).replace(r"{user_id}", "*").replace(r"{session_id}", "*")
        found: list[tuple[SessionKey, str]] = []
        async for raw in client.scan_iter(match=glob, count=1000, _type="STRING"):
            name = raw.decode("utf-8", "surrogateescape")
            key = self._parse_key(name)
            if key is not None:
                found.append((key, name))
        return sorted(found)

    def _row_from(self, key: SessionKey, name: str, data: bytes | None) -> SourceRow:
        raise NotImplementedError

    async def _rows(self) -> list[SourceRow]:
        async with self._client() as client:
            keys = await self._scan(client)
            values = await client.mget([name for _, name in keys]) if keys else []
        # A key that expired between SCAN and MGET is gone: not a session any more.
        return [
            self._row_from(k, n, v) for (k, n), v in zip(keys, values, strict=True) if v is not None
        ]

    async def _row(self, key: SessionKey) -> SourceRow | None:
        name = self._key(key)
        async with self._client() as client:
            data = await client.get(name)  # GET, never GETEX: a read must not slide the TTL
        return None if data is None else self._row_from(key, name, data)


class AgentScopeRedisSource(_RedisSource, _TranscriptSource):
    """AgentScope 2.x ``RedisStorage``: ``agentscope:user:{u}:session:{s}`` holds a ``SessionRecord``.

    ``?session_key=...`` (and ``?messages_key=...``) give other templates when
    the app customised ``RedisStorage.KeyConfig``. :meth:`transcript` reads the
    session's message list.
    """

    kind = "AgentScope 2.x Redis storage"

    def __init__(self, url: str) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        self.template = query.get("session_key", "agentscope:user:{user_id}:session:{session_id}")
        self.messages_template = query.get("messages_key", self.template + ":messages")
        self.others = (self.messages_template, self.template + ":message_ids")
        super().__init__(url)

    def _row_from(self, key: SessionKey, name: str, data: bytes | None) -> SourceRow:
        where = f"Redis key {name!r} of {self.location}"
        meta: dict[str, Any] = {"agentscope": "2.x"}
        with contextlib.suppress(StoreCorruptedError):
            record = codec.loads(data or b"", where, trusted=False)
            if isinstance(record, dict):
                meta.update(
                    {
                        k: record[k]
                        for k in ("agent_id", "team_id", "origin", "config")
                        if record.get(k)
                    }
                )
                # RedisStorage stamps records in the app's local time, without a zone.
                created = _local(record.get("created_at"))
                updated = _local(record.get("updated_at")) or created
                return SourceRow(
                    key, record, where, created or _EPOCH, updated or _EPOCH, meta, len(data or b"")
                )
        return SourceRow(key, data, where, _EPOCH, _EPOCH, meta, len(data or b""))

    def _states(self, row: SourceRow, parsed: Any) -> dict[str, Any]:
        return {AGENT_MODULE: _record_state(row, parsed)}

    async def _transcript(self, key: SessionKey) -> list[tuple[str, Any]]:
        name = self.messages_template.format(user_id=key.user_id, session_id=key.session_id)
        async with self._client() as client:
            items = await client.lrange(name, 0, -1)  # LRANGE: the list's TTL is left as it is
        return [
            (f"Redis list {name!r}[{i}] of {self.location}", data) for i, data in enumerate(items)
        ]


class AgentScope1RedisSource(_RedisSource):
    """AgentScope 1.x ``RedisSession``: ``{prefix}user_id:{u}:session:{s}:state`` holds ``{module: state}``.

    ``?prefix=...`` is the session's ``key_prefix``. The value carries no
    time, so sessions show the epoch as their time.
    """

    kind = "AgentScope 1.x Redis session storage"

    def __init__(self, url: str) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        prefix = query.get("prefix", "").replace("{", "{{").replace("}", "}}")
        self.template = prefix + "user_id:{user_id}:session:{session_id}:state"
        super().__init__(url)

    def _row_from(
        self, key: SessionKey, name: str, data: bytes | None, size: int | None = None
    ) -> SourceRow:
        where = f"Redis key {name!r} of {self.location}"
        return SourceRow(
            key,
            data,
            where,
            metadata={"agentscope": "1.x"},
            size=len(data or b"") if size is None else size,
        )

    async def _rows(self) -> list[SourceRow]:
        # The values hold nothing a listing shows (no times): their lengths will do.
        async with self._client() as client:
            keys = await self._scan(client)
            async with client.pipeline(transaction=False) as pipe:
                for _, name in keys:
                    pipe.strlen(name)
                sizes = await pipe.execute() if keys else []
        # STRLEN is 0 for a key that expired since the SCAN: not a session any more.
        return [
            self._row_from(k, n, None, size)
            for (k, n), size in zip(keys, sizes, strict=True)
            if size
        ]


# -- addresses --------------------------------------------------------------------------


def is_source_url(value: str) -> bool:
    """True for an ``agentscope+...://`` or ``agentscope1+...://`` address."""
    return value.startswith(_SCHEMES) and "://" in value


def open_source(url: str) -> ReadOnlySource:
    """Open an AgentScope storage address read-only; see the module docstring for the forms."""
    scheme = url.partition("://")[0].lower()
    backend = scheme.split("+", 1)[1] if "+" in scheme else ""
    backend = backend.split("+", 1)[0]
    if scheme.startswith("agentscope1+"):
        if backend in ("redis", "rediss"):
            return AgentScope1RedisSource(url)
    elif backend in ("redis", "rediss"):
        return AgentScopeRedisSource(url)
    elif backend in ("sqlite", "postgresql", "postgres"):
        return AgentScopeSQLSource(url)
    raise StoreError(
        f"unknown AgentScope storage address {_hide_password(url)!r}: use agentscope+sqlite:///app.db, "
        "agentscope+postgresql://user@host/db, agentscope+redis://host:6379/0 (2.x) or "
        "agentscope1+redis://host:6379/0?prefix=... (1.x RedisSession)"
    )


# -- helpers ----------------------------------------------------------------------------


def _record_state(row: SourceRow, parsed: Any) -> Any:
    """The ``state`` of a 2.x session payload or record."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("state"), dict):
        raise StoreCorruptedError(
            f"{row.where} holds no AgentState: its JSON has no 'state' object "
            "(is this an AgentScope 2.x session?)",
            location=row.where,
        )
    return parsed["state"]


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{user_id\}|\{session_id\})", template)
    body = "".join(
        "(?P<user_id>.+?)"
        if p == "{user_id}"
        else "(?P<session_id>.+)"
        if p == "{session_id}"
        else re.escape(p.replace("{{", "{").replace("}}", "}"))
        for p in parts
    )
    return re.compile(f"^{body}$", re.DOTALL)


def _glob_escape(template: str) -> str:
    text = template.replace("{{", "\0").replace("}}", "\1")
    text = re.sub(r"([\\*?\[\]])", r"\\\1", text)
    return text.replace("\0", "{").replace("\1", "}")


def _hide_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    return bytes(data or b"")


def _utc(value: Any) -> datetime:
    """A timestamp column (naive UTC, as SQLAlchemy writes it) as an aware UTC datetime."""
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            return _EPOCH
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _local(value: Any) -> datetime | None:
    """A local-time ISO stamp (as RedisStorage writes them) in UTC."""
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when.astimezone(timezone.utc)
