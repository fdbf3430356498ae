"""A team store on PostgreSQL (psycopg 3, async).

Each distinct list entry (a message) is stored once in ``nbs_entries`` under
its content hash; a checkpoint keeps its skeleton and, per long list, the
ordered hashes of its entries. A save sends only entries the server lacks.
Seqs come from a row lock on the session (``SELECT ... FOR UPDATE``), so
writers on many machines get gap-free numbers without a table lock; reads run
in one REPEATABLE READ transaction, so they see exactly one checkpoint.
Migrations run under an advisory lock, so several clients may start at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .. import codec
from ..chunks import assemble, blob_hash, path_text, split
from ..errors import CheckpointNotFoundError, ConflictError, StoreCorruptedError, StoreError
from ..generations import conversation_path
from .base import BaseStore, Checkpoint, Redactor, SessionInfo, SessionKey, utcnow

if TYPE_CHECKING:
    from ..search import Hit

__all__ = ["PostgresStore", "is_postgres_url"]

_T = TypeVar("_T")
_P = ParamSpec("_P")


class _Unreachable(StoreError):
    """The server could not be reached: the operation may be run again."""


class _CannotConnect(_Unreachable):
    """No connection was made: nothing of the operation reached the server."""


class _ConnectionLost(_Unreachable):
    """The connection broke during the operation: what was not acknowledged was not committed."""


_LOCK = 0x6E6273  # advisory lock id for migrations ("nbs")

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS nbs_sessions (
        id bigserial PRIMARY KEY, user_id text NOT NULL, session_id text NOT NULL,
        created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
        next_seq bigint NOT NULL DEFAULT 1, UNIQUE (user_id, session_id));
    CREATE TABLE IF NOT EXISTS nbs_checkpoints (
        session bigint NOT NULL REFERENCES nbs_sessions(id) ON DELETE CASCADE,
        seq bigint NOT NULL, uid uuid NOT NULL UNIQUE, parent bigint,
        created_at timestamptz NOT NULL, label text, metadata bytea NOT NULL,
        modules text[] NOT NULL, size bigint NOT NULL, state bytea NOT NULL,
        chunks bytea, PRIMARY KEY (session, seq), UNIQUE (session, label));
    CREATE TABLE IF NOT EXISTS nbs_entries (hash bytea PRIMARY KEY, data bytea NOT NULL);
    """,
    # What search looks in: each entry's message text (NULL for entries that are not messages).
    "ALTER TABLE nbs_entries ADD COLUMN IF NOT EXISTS text text",
)
#: Run after the migrations when the role may: trigram index for search (else search scans).
_TRIGRAM = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS nbs_entries_text_trgm ON nbs_entries USING gin (text gin_trgm_ops)",
)


def _retried_read(
    read: Callable[Concatenate[PostgresStore, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[PostgresStore, _P], Coroutine[Any, Any, _T]]:
    """A read that is run again after a lost or refused connection (reads change nothing)."""

    async def run(self: PostgresStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await self._retrying(
            f"{self.location}: reading", lambda: read(self, *args, **kwargs)
        )

    run.__name__, run.__doc__ = read.__name__, read.__doc__
    return run


def is_postgres_url(value: object) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs."""
    return isinstance(value, str) and value.split("://", 1)[0].lower() in ("postgresql", "postgres")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "a postgresql:// store needs psycopg 3: pip install 'nb_sessions[postgres]' "
            "(or pip install 'psycopg[binary]')"
        ) from exc
    return psycopg


class PostgresStore(BaseStore):
    """Checkpoints in a PostgreSQL database, shared by every client that can reach it."""

    def __init__(
        self,
        url: str,
        *,
        redact: Redactor | None = None,
        connect_timeout: int = 10,
        retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        super().__init__(redact=redact)
        self.url = url
        self.connect_timeout = connect_timeout
        #: A call whose server could not be reached is run again this many times, waiting
        #: ``retry_delay`` seconds, then twice that, and so on; a save keeps its checkpoint id.
        self.retries = retries
        self.retry_delay = retry_delay
        self._ready = False
        _psycopg()

    @property
    def location(self) -> str:
        """The URL without its password (so it can be shown, and reopened with a password file)."""
        head, at, tail = self.url.rpartition("@")
        if not at:
            return self.url
        scheme, _, userinfo = head.partition("://")
        return f"{scheme}://{userinfo.partition(':')[0]}@{tail}"

    # -- connections -------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connect(self, *, setup: bool = True) -> AsyncIterator[Any]:
        psycopg = _psycopg()
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=self.connect_timeout
            )
        except psycopg.Error as exc:
            raise _CannotConnect(
                f"{self.location}: cannot connect ({str(exc).strip()}); check the server runs and the URL"
            ) from exc
        try:
            if setup and not self._ready:
                await self._migrate(conn)
            yield conn
        except psycopg.errors.InsufficientPrivilege as exc:
            raise StoreError(
                f"{self.location}: this database role may only read ({str(exc).strip()}); "
                "nothing was written. Connect as a role with INSERT/UPDATE/DELETE on the nbs_* tables"
            ) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise self._no_tables() from exc
        except psycopg.OperationalError as exc:
            raise _ConnectionLost(
                f"{self.location}: connection lost ({str(exc).strip()}); what was not acknowledged "
                "was not committed. Retrying the call is safe"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(
                f"{self.location}: the server refused ({type(exc).__name__}: {str(exc).strip()}); "
                "nothing was written. Check the nbs_* tables were made by this version of "
                "nb_sessions (open the store once as their owner) and the server's log"
            ) from exc
        finally:
            await conn.close()

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Run ``call``, again after a lost or refused connection (``retries`` times, backing off)."""
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return await call()
            except _Unreachable as exc:
                if attempt + 1 == attempts:
                    raise StoreError(f"{what} failed after {attempts} attempts: {exc}") from exc
                await asyncio.sleep(self.retry_delay * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _no_tables(self) -> StoreError:
        user = self.url.partition("://")[2].rpartition("@")[0].partition(":")[0] or "this role"
        return StoreError(
            f"{self.location}: the database has no nb_sessions tables yet and role {user} may "
            "not create them; open the store once as the role that owns the database (it "
            "creates the nbs_* tables, see docs/postgres.md), then open it again with this role"
        )

    async def _migrate(self, conn: Any) -> None:
        """Apply missing migrations in order, recorded in ``nbs_migrations``, under an advisory lock."""
        psycopg = _psycopg()
        exists = True
        try:
            async with conn.transaction():
                cur = await conn.execute("SELECT to_regclass('nbs_migrations') IS NOT NULL")
                exists = (await cur.fetchone())[0]
                if exists:
                    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM nbs_migrations")
                    if (await cur.fetchone())[0] >= len(_MIGRATIONS):
                        self._ready = True
                        return
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS nbs_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL)"
                )
                cur = await conn.execute("SELECT coalesce(max(version), 0) FROM nbs_migrations")
                done = (await cur.fetchone())[0]
                for version, sql in enumerate(_MIGRATIONS, 1):
                    if version > done:
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO nbs_migrations VALUES (%s, now())", (version,)
                        )
                if done < len(_MIGRATIONS):
                    try:
                        async with conn.transaction():  # a savepoint: lacking rights keeps the rest
                            for sql in _TRIGRAM:
                                await conn.execute(sql)
                    except psycopg.errors.InsufficientPrivilege:
                        pass  # search still works, by scanning the entries' text (see docs)
        except psycopg.errors.InsufficientPrivilege as exc:
            if not exists:
                raise self._no_tables() from exc
            # A read-only role: browse what exists; writes fail with a named error.
            self._ready = True
            return
        self._ready = True

    # -- primitives ----------------------------------------------------------

    async def _write(
        self,
        key: SessionKey,
        states: dict[str, Any],
        label: str | None,
        metadata: dict[str, Any],
        parent: int | None,
        *,
        uid: uuid.UUID | None = None,
    ) -> Checkpoint:
        """Save once, retrying a lost connection under the same checkpoint id (idempotent on it)."""
        uid = uid or uuid.uuid4()
        lost = False

        async def attempt() -> Checkpoint:
            nonlocal lost
            try:
                return await self._write_once(key, states, label, metadata, parent, uid=uid)
            except _ConnectionLost:
                lost = True
                raise

        try:
            return await self._retrying(f"{self.location}: saving {key}", attempt)
        except StoreError as exc:
            if not isinstance(exc.__cause__, _Unreachable):
                raise
            if lost:
                fate = (
                    f"checkpoint {uid} may have committed (a connection broke after sending it): "
                    f"once the server is back, look for it in store.history({key.session_id!r}) "
                    "before saving again"
                )
            else:
                fate = f"checkpoint {uid} was not committed; save again once the server is back"
            raise StoreError(f"{exc}. {fate}") from exc.__cause__

    async def _write_once(
        self,
        key: SessionKey,
        states: dict[str, Any],
        label: str | None,
        metadata: dict[str, Any],
        parent: int | None,
        *,
        uid: uuid.UUID | None = None,
    ) -> Checkpoint:
        from ..search import (  # search builds on views, which import the stores
            entry_message,
            searchable_text,
        )

        psycopg = _psycopg()
        uid = uid or uuid.uuid4()  # idempotent retries: the same id commits at most once
        skeleton, chunks = split(states)
        skeleton_data = codec.dumps(skeleton)
        entries: dict[bytes, bytes] = {}
        texts: dict[bytes, str | None] = {}
        chunk_rows: list[list[Any]] = []
        for chunk in chunks:
            hashes = []
            value_of = chunk.value or (lambda item: item)
            for entry in chunk.items:
                value = value_of(entry)
                data = codec.dumps(value)
                h = blob_hash(data)
                if h not in entries:
                    msg = entry_message(value)
                    texts[h] = searchable_text(msg) if msg is not None else None
                entries[h] = data
                hashes.append(h.hex())
            chunk_rows.append([list(chunk.path), hashes])
        size = len(skeleton_data) + sum(len(d) for d in entries.values())
        now = utcnow()
        async with self._connect() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        "SELECT s.user_id, s.session_id, c.seq, c.parent, c.created_at FROM nbs_checkpoints c "
                        "JOIN nbs_sessions s ON s.id = c.session WHERE c.uid = %s",
                        (uid,),
                    )
                    done = await cur.fetchone()
                    if done is not None:  # a retry of a save that did commit
                        seq, parent, now = done[2], done[3], done[4]
                    else:
                        await conn.execute(
                            "INSERT INTO nbs_sessions (user_id, session_id, created_at, updated_at) "
                            "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, session_id) DO NOTHING",
                            (key.user_id, key.session_id, now, now),
                        )
                        cur = await conn.execute(
                            "SELECT id, next_seq FROM nbs_sessions WHERE user_id = %s AND session_id = %s "
                            "FOR UPDATE",
                            key,
                        )
                        sid, seq = await cur.fetchone()
                        if parent is not None:
                            cur = await conn.execute(
                                "SELECT 1 FROM nbs_checkpoints WHERE session = %s AND seq = %s",
                                (sid, parent),
                            )
                            if await cur.fetchone() is None:
                                parent = None
                        if parent is None:
                            cur = await conn.execute(
                                "SELECT max(seq) FROM nbs_checkpoints WHERE session = %s", (sid,)
                            )
                            parent = (await cur.fetchone())[0]
                        if entries:
                            async with conn.cursor() as c:
                                await c.executemany(
                                    "INSERT INTO nbs_entries (hash, data, text) VALUES (%s, %s, %s) "
                                    "ON CONFLICT DO NOTHING",
                                    [
                                        (h, d, _pg_text(texts[h]))
                                        for h, d in sorted(entries.items())
                                    ],
                                )
                        await conn.execute(
                            "INSERT INTO nbs_checkpoints (session, seq, uid, parent, created_at, label, "
                            "metadata, modules, size, state, chunks) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                            (
                                sid,
                                seq,
                                uid,
                                parent,
                                now,
                                label,
                                codec.dumps(metadata),
                                list(states),
                                size,
                                skeleton_data,
                                codec.dumps(chunk_rows) if chunk_rows else None,
                            ),
                        )
                        await conn.execute(
                            "UPDATE nbs_sessions SET next_seq = %s, updated_at = %s WHERE id = %s",
                            (seq + 1, now, sid),
                        )
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError(
                    f"label {label!r} already names another checkpoint of {key}; choose another "
                    f"label, or move it first with store.label(ref, None)"
                ) from exc
        self._parents[key] = seq
        return Checkpoint(
            session_id=key.session_id,
            user_id=key.user_id,
            seq=seq,
            created_at=now,
            modules=tuple(states),
            size=size,
            parent=parent,
            label=label,
            metadata=metadata,
            store=self,
        )

    @_retried_read
    async def _read(self, cp: Checkpoint) -> dict[str, Any]:
        psycopg = _psycopg()
        where = f"checkpoint {cp.ref} in {self.location}"
        async with self._connect() as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT c.state, c.chunks, c.created_at FROM nbs_checkpoints c JOIN nbs_sessions s "
                    "ON c.session = s.id WHERE s.user_id = %s AND s.session_id = %s AND c.seq = %s",
                    (*cp.key, cp.seq),
                )
                row = await cur.fetchone()
                if row is None or row[2] != cp.created_at:
                    raise CheckpointNotFoundError(
                        f"checkpoint {cp.ref} is no longer in {self.location} (deleted meanwhile?)",
                        ref=cp.ref,
                    )
                lists: list[tuple[tuple[str | int, ...], list[Any]]] = []
                if row[1] is not None:
                    chunk_rows = codec.loads(bytes(row[1]), where, trusted=True)
                    wanted = list({bytes.fromhex(h) for _, hashes in chunk_rows for h in hashes})
                    cur = await conn.execute(
                        "SELECT hash, data FROM nbs_entries WHERE hash = ANY(%s)", (wanted,)
                    )
                    found = {bytes(h): bytes(d) for h, d in await cur.fetchall()}
                    for path, hashes in chunk_rows:
                        items = []
                        for h in hashes:
                            data = found.get(bytes.fromhex(h))
                            if data is None:
                                raise StoreCorruptedError(
                                    f"{where}: entry {h} is missing; delete that checkpoint",
                                    location=where,
                                )
                            items.append(self._decode_entry(data, h, where))
                        lists.append((tuple(path), items))
        state = codec.loads(bytes(row[0]), where, trusted=True)
        return assemble(state, lists) if lists else state

    def _decode_entry(self, data: bytes, hash_hex: str, where: str) -> Any:
        """Decode one stored entry (the place to verify its content hash)."""
        return codec.loads(data, where, trusted=True)

    @_retried_read
    async def _history(self, key: SessionKey) -> list[Checkpoint]:
        async with self._connect() as conn:
            cur = await conn.execute(
                "SELECT c.seq, c.parent, c.created_at, c.label, c.metadata, c.modules, c.size "
                "FROM nbs_checkpoints c JOIN nbs_sessions s ON c.session = s.id "
                "WHERE s.user_id = %s AND s.session_id = %s ORDER BY c.seq",
                key,
            )
            rows = await cur.fetchall()
        if not rows:
            raise self._not_found(key)
        return [
            Checkpoint(
                session_id=key.session_id,
                user_id=key.user_id,
                seq=seq,
                created_at=created,
                modules=tuple(modules),
                size=size,
                parent=parent,
                label=label,
                metadata=codec.loads(bytes(meta), f"checkpoint {key}@{seq}"),
                store=self,
            )
            for seq, parent, created, label, meta, modules, size in rows
        ]

    @_retried_read
    async def _sessions(self) -> list[SessionInfo]:
        async with self._connect() as conn:
            cur = await conn.execute(
                "SELECT s.user_id, s.session_id, count(*), max(c.seq), min(c.created_at), max(c.created_at), "
                "array_remove(array_agg(c.label ORDER BY c.seq), NULL) "
                "FROM nbs_sessions s JOIN nbs_checkpoints c ON c.session = s.id GROUP BY s.id"
            )
            rows = await cur.fetchall()
        return [
            SessionInfo(
                session_id=sid,
                user_id=uid,
                checkpoints=count,
                latest_seq=latest,
                created_at=first,
                updated_at=last,
                labels=tuple(labels),
            )
            for uid, sid, count, latest, first, last, labels in rows
        ]

    async def _delete(self, key: SessionKey, seqs: Sequence[int] | None) -> int:
        async with self._connect() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id FROM nbs_sessions WHERE user_id = %s AND session_id = %s FOR UPDATE", key
            )
            row = await cur.fetchone()
            if row is None:
                return 0
            sid = row[0]
            if seqs is None:
                cur = await conn.execute("DELETE FROM nbs_checkpoints WHERE session = %s", (sid,))
            else:
                cur = await conn.execute(
                    "DELETE FROM nbs_checkpoints WHERE session = %s AND seq = ANY(%s)",
                    (sid, list(seqs)),
                )
            count = cur.rowcount
            left = await (
                await conn.execute(
                    "SELECT count(*) FROM nbs_checkpoints WHERE session = %s", (sid,)
                )
            ).fetchone()
            if left[0] == 0:
                await conn.execute("DELETE FROM nbs_sessions WHERE id = %s", (sid,))
        return int(count)

    async def _set_label(self, key: SessionKey, seq: int, label: str | None) -> None:
        psycopg = _psycopg()
        async with self._connect() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE nbs_checkpoints SET label = %s WHERE seq = %s AND session = "
                        "(SELECT id FROM nbs_sessions WHERE user_id = %s AND session_id = %s)",
                        (label, seq, *key),
                    )
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError(
                    f"label {label!r} already names another checkpoint of {key}; remove it there "
                    "first with store.label(ref, None)"
                ) from exc

    @_retried_read
    async def _search(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """Messages whose text contains ``text`` (case-insensitive), found by ILIKE on the
        entries' text (a pg_trgm index serves it, also for CJK), skeletons by scanning."""
        from ..search import Hit, entry_message, matches, scan_state, searchable_text

        pattern = (
            "%"
            + (_pg_text(text) or "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "%"
        )
        hits: list[Hit] = []
        async with self._connect() as conn:
            psycopg = _psycopg()
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT hash, data FROM nbs_entries WHERE text ILIKE %s", (pattern,)
                )
                found: dict[str, Mapping[str, Any]] = {}
                for h, data in await cur.fetchall():
                    with contextlib.suppress(StoreCorruptedError):
                        msg = entry_message(codec.loads(bytes(data)))
                        if msg is not None and matches(searchable_text(msg), text):
                            found[bytes(h).hex()] = msg
                for key in keys:
                    cur = await conn.execute(
                        "SELECT c.seq, c.state, c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s "
                        "ON c.session = s.id WHERE s.user_id = %s AND s.session_id = %s ORDER BY c.seq",
                        key,
                    )
                    for seq, skeleton, chunks in await cur.fetchall():
                        with contextlib.suppress(StoreCorruptedError):
                            state = codec.loads(bytes(skeleton))
                            if isinstance(state, dict):
                                hits += [
                                    Hit(key.session_id, key.user_id, seq, p, m)
                                    for p, m in scan_state(state, text)
                                ]
                        if chunks is None or not found:
                            continue
                        for path, hashes in codec.loads(bytes(chunks)):
                            where = path_text(conversation_path(tuple(path)))
                            hits += [
                                Hit(key.session_id, key.user_id, seq, where, found[h])
                                for h in hashes
                                if h in found
                            ]
        return hits

    async def _vacuum(self) -> int:
        """Delete entries no checkpoint refers to; return the bytes they held."""
        async with self._connect() as conn, conn.transaction():
            # A save holds its session row lock; collecting under a table lock on
            # entries keeps a concurrent save from losing an entry it just relied on.
            await conn.execute("LOCK TABLE nbs_entries IN SHARE ROW EXCLUSIVE MODE")
            cur = await conn.execute(
                "WITH used AS (SELECT DISTINCT decode(h, 'hex') AS hash FROM nbs_checkpoints c, "
                "jsonb_array_elements(convert_from(c.chunks, 'UTF8')::jsonb) AS ch, "
                "jsonb_array_elements_text(ch->1) AS h WHERE c.chunks IS NOT NULL) "
                "DELETE FROM nbs_entries e WHERE NOT EXISTS (SELECT 1 FROM used u WHERE u.hash = e.hash) "
                "RETURNING length(e.data)"
            )
            return sum(r[0] for r in await cur.fetchall())


def _pg_text(text: str | None) -> str | None:
    """``text`` as PostgreSQL can hold it: no NUL, no lone surrogate (matches are confirmed on the original)."""
    if text is None:
        return None
    return text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
