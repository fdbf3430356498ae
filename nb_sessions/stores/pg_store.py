"""A team store on PostgreSQL (psycopg 3, async).

Writes are planned by the code the SQLite store uses (:mod:`._planned`): each
distinct list entry (a message) is one row of ``nbs_blobs`` (a bigint id, its
content hash, its bytes), runs of entry ids are packed into shared rows of
``nbs_segments``, and a checkpoint row keeps its skeleton and, per long list,
its segment ids. A save sends only what changed since the session's last
save. Seqs come from a row lock on the session (``SELECT ... FOR UPDATE``), so
writers on many machines get gap-free numbers without a table lock; reads run
in one REPEATABLE READ transaction, so they see exactly one checkpoint.
Garbage collection (``vacuum``) and saves meet on the ``gc_generation`` row of
``nbs_meta``: a save holds it ``FOR SHARE``, a collection ``FOR UPDATE``, so a
segment or entry a save reuses is never collected under it. Every checkpoint
row carries its hash (:mod:`.row_hash`) and every entry its content hash,
checked on each read. Migrations run under an advisory lock, so several
clients may start at once. A store opened with a key is encrypted at rest
(:mod:`._sealed` holds what it shares with the SQLite store; this module
adds the SQL): its header is ``nbs_meta``'s ``encryption`` row, each
session's sealed manifest ``nbs_sessions.manifest``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import threading
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from .. import codec
from .._loop import run_sync
from ..chunks import SEGMENT, assemble, path_text, split
from ..crypto import Cipher, KeySource, open_checkpoint, open_metadata, resolve_key, seal_checkpoint
from ..errors import (
    CheckpointNotFoundError,
    ConflictError,
    InvalidIdError,
    KeyRequiredError,
    StoreCorruptedError,
    StoreError,
)
from ..generations import conversation_path
from ._planned import (
    SessionCaches,
    chunk_refs,
    chunk_rows,
    entry_hash,
    list_where,
    live_entries,
    live_segments,
    loaded_entry,
    pack_ids,
    segment_ids,
    store_plans,
    verified_array,
)
from ._sealed import (
    HEADER_KEY,
    Row,
    check_rows,
    not_encrypted,
    open_cipher,
    open_entries,
    resealed_manifest,
)
from .base import At, BaseStore, Checkpoint, Redactor, SessionInfo, SessionKey, utcnow, validate_id
from .row_hash import key_hash, relabelled, row_hash, verify_facts, verify_row
from .space import CheckpointSpace, SessionSpace, list_pieces, module_bytes

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


async def _segmented(conn: Any) -> None:
    """Migration 3: entries and segments with bigint ids (the SQLite store's layout), row hashes.

    Stores written by migrations 1-2 (entries keyed by hash, each checkpoint
    listing the hex hashes of its entries) are converted in place: their
    entries keep their bytes and hashes, their lists become segments, and
    each checkpoint row gets its hash. Then ``nbs_entries`` goes.
    """
    await conn.execute(
        """
        CREATE TABLE nbs_meta (key text PRIMARY KEY, value bigint NOT NULL);
        INSERT INTO nbs_meta (key, value) VALUES ('gc_generation', 0), ('search_indexed_upto', 0);
        CREATE TABLE nbs_blobs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            hash bytea NOT NULL UNIQUE, data bytea NOT NULL);
        CREATE TABLE nbs_segments (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            hash bytea NOT NULL UNIQUE, blobs bytea NOT NULL);
        CREATE TABLE nbs_search (
            id bigint PRIMARY KEY REFERENCES nbs_blobs (id) ON DELETE CASCADE, text text NOT NULL);
        ALTER TABLE nbs_checkpoints ADD COLUMN hash bytea;
        ALTER TABLE nbs_sessions ADD COLUMN hash bytea;
        INSERT INTO nbs_blobs (hash, data) SELECT hash, data FROM nbs_entries ORDER BY hash;
        """
    )
    cur = await conn.execute("SELECT hash, id FROM nbs_blobs")
    ids = {bytes(h): int(i) for h, i in await cur.fetchall()}
    cur = await conn.execute(
        "SELECT s.user_id, s.session_id, c.session, c.seq, c.parent, c.created_at, c.label, c.metadata, "
        "c.modules, c.size, c.state, c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s ON s.id = c.session"
    )
    for (
        uid,
        sid,
        session,
        seq,
        parent,
        created,
        label,
        meta,
        modules,
        size,
        state,
        old,
    ) in await cur.fetchall():
        chunks = None
        if old is not None:
            refs = []
            for path, hashes in codec.loads(
                bytes(old), f"checkpoint {uid}/{sid}@{seq}", trusted=True
            ):
                entry_ids = [
                    ids.get(bytes.fromhex(h), 0) for h in hashes
                ]  # 0: missing, a named error on read
                seg_ids = []
                for start in range(0, len(entry_ids), SEGMENT):
                    packed = pack_ids(entry_ids[start : start + SEGMENT])
                    found = await conn.execute(
                        "INSERT INTO nbs_segments (hash, blobs) VALUES (%s, %s) ON CONFLICT (hash) "
                        "DO UPDATE SET hash = excluded.hash RETURNING id",
                        (entry_hash(packed), packed),
                    )
                    seg_ids.append((await found.fetchone())[0])
                refs.append([path, seg_ids])
            chunks = codec.dumps(refs)
        key = SessionKey(uid, sid)
        facts = _facts(seq, parent, created, label, meta, modules, size, state, chunks)
        await conn.execute(
            "UPDATE nbs_checkpoints SET chunks = %s, hash = %s WHERE session = %s AND seq = %s",
            (chunks, row_hash(key, *facts), session, seq),
        )
    cur = await conn.execute("SELECT id, user_id, session_id FROM nbs_sessions")
    for row_id, uid, sid in await cur.fetchall():
        await conn.execute(
            "UPDATE nbs_sessions SET hash = %s WHERE id = %s",
            (key_hash(SessionKey(uid, sid)), row_id),
        )
    await conn.execute("DROP TABLE nbs_entries")


_Migration = str | Callable[[Any], Coroutine[Any, Any, None]]

_MIGRATIONS: tuple[_Migration, ...] = (
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
    _segmented,
    # Encryption at rest: the header (the wrapped data key) as the bytes of nbs_meta's
    # 'encryption' row, and each session's sealed manifest of its checkpoints.
    "ALTER TABLE nbs_meta ADD COLUMN IF NOT EXISTS data bytea; "
    "ALTER TABLE nbs_sessions ADD COLUMN IF NOT EXISTS manifest bytea",
)
#: The first schema version this code reads (migration 3 converts the data of older ones).
_LAYOUT = 3
#: The first schema version that can hold an encrypted store (migration 4).
_SEALED = 4
_SCHEMA_SQL = (
    "SELECT CASE WHEN to_regclass('nbs_migrations') IS NULL THEN 0 "
    "ELSE (SELECT coalesce(max(version), 0) FROM nbs_migrations) END"
)
#: Run after the migrations when the role may: trigram index for search (else search scans).
_TRIGRAM = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS nbs_search_text_trgm ON nbs_search USING gin (text gin_trgm_ops)",
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


def _cannot_connect(location: str, exc: BaseException) -> _CannotConnect:
    return _CannotConnect(
        f"{location}: cannot connect ({str(exc).strip()}); check the server runs and the URL"
    )


def _pool_class() -> Any:
    # The pool logs each failed reconnection; the caller gets it as a named error already, so
    # without logging configured it is not printed (configured logging still receives it).
    logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
    try:
        from psycopg_pool import AsyncConnectionPool
    except ImportError as exc:
        raise StoreError(
            "a postgresql:// store needs psycopg_pool: pip install 'nb_sessions[postgres]' "
            "(or pip install psycopg-pool)"
        ) from exc
    return AsyncConnectionPool


@functools.cache
def _watched_connection() -> Any:
    """psycopg's async connection, telling its pool's waiting callers why a connection failed."""
    base: Any = _psycopg().AsyncConnection

    class Watched(base):  # type: ignore[misc]
        @classmethod
        async def connect(
            cls,
            conninfo: str = "",
            *,
            nbs_report: Callable[[BaseException | None], None],
            **kwargs: Any,
        ) -> Any:
            try:
                conn = await super().connect(conninfo, **kwargs)
            except Exception as exc:
                nbs_report(exc)
                raise
            nbs_report(None)
            return conn

    return Watched


class _Pool:
    """A psycopg_pool pool on one event loop of one process.

    The pool opens connections in its own tasks; when one of them fails, the
    callers waiting for a connection get that error at once (the message a
    direct connection gives) instead of waiting for the acquire timeout. Until
    the pool connects again, callers connect directly (one connection per
    operation, closed after it), so an unreachable server fails each attempt
    at once and a server back serves the next attempt, whatever the pool's own
    reconnection schedule.
    """

    def __init__(self, store: PostgresStore, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timeout = store.connect_timeout
        self.url = store.url
        self.failing = False  # the pool's last connection attempt failed: connect directly
        self.reconnecting = False  # the pool is still trying again in the background
        self._direct: weakref.WeakSet[Any] = weakref.WeakSet()
        self._waiting: set[asyncio.Future[BaseException]] = set()
        self.pool = _pool_class()(
            store.url,
            connection_class=_watched_connection(),
            kwargs={"connect_timeout": store.connect_timeout, "nbs_report": self._report},
            min_size=0,
            max_size=store.pool_size,
            open=False,
            timeout=store.connect_timeout,
            max_idle=60.0,  # an idle store gives its connections back to the server within minutes
            reconnect_timeout=60.0,
            reconnect_failed=self._gave_up,
            name=f"nb_sessions {store.location}",
        )
        self.opening = loop.create_task(self.pool.open())

    def _report(self, exc: BaseException | None) -> None:
        self.failing = self.reconnecting = exc is not None
        if exc is None:
            return
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(exc)
        self._waiting.clear()

    def _gave_up(self, pool: Any) -> None:
        self.reconnecting = False  # it tries again when asked for a connection

    async def checkout(self, location: str) -> Any:
        """An idle connection that answers (a dead one is closed and the next tried)."""
        psycopg = _psycopg()
        await asyncio.shield(self.opening)
        if self.failing:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, connect_timeout=self.timeout)
            except psycopg.Error as exc:
                raise _cannot_connect(location, exc) from exc
            self._direct.add(conn)
            if not self.reconnecting:
                self.failing = False  # the server is back and the pool gave up: use it again
            return conn
        for _ in range(self.pool.max_size + 1):
            conn = await self._get(location)
            try:
                await self.pool.check_connection(conn)
            except psycopg.Error:
                await conn.close()  # a killed backend or a restarted server: never handed out again
                await self.pool.putconn(conn)
                continue
            except BaseException:
                await self.pool.putconn(conn)
                raise
            return conn
        raise _CannotConnect(
            f"{location}: cannot connect (every pooled connection was broken); check the server runs"
        )

    async def _get(self, location: str) -> Any:
        psycopg = _psycopg()
        failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._waiting.add(failed)
        getting = asyncio.ensure_future(self.pool.getconn())
        try:
            await asyncio.wait((getting, failed), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self._abandon(getting)
            raise
        finally:
            self._waiting.discard(failed)
        if not getting.done():
            await self._abandon(getting)
            exc = failed.result()
            raise _cannot_connect(location, exc) from exc
        try:
            return getting.result()
        except psycopg.Error as exc:
            raise _CannotConnect(
                f"{location}: cannot connect (no connection within {self.timeout} s: {str(exc).strip()}); "
                "check the server runs and the URL"
            ) from exc

    async def _abandon(self, getting: asyncio.Future[Any]) -> None:
        getting.cancel()
        await asyncio.wait((getting,))
        if not getting.cancelled() and getting.exception() is None:
            await self.pool.putconn(getting.result())

    async def checkin(self, conn: Any) -> None:
        """Give ``conn`` back idle, in the default isolation level; a connection that is not, closed."""
        psycopg = _psycopg()
        if conn in self._direct:
            await conn.close()
            return
        status = psycopg.pq.TransactionStatus
        try:
            state = conn.pgconn.transaction_status
            if state == status.ACTIVE:  # cancelled in the middle of a statement
                await conn.close()
            elif state in (status.INTRANS, status.INERROR):
                await conn.rollback()
            if not conn.closed and conn.isolation_level is not None:
                await conn.set_isolation_level(None)
        except psycopg.Error:
            await conn.close()
        finally:
            await self.pool.putconn(conn)


class _Pools:
    """A store's pools: one per process and event loop (a forked child never uses its parent's)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.by_loop: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._lock = threading.RLock()  # loops in several threads (the private one, a notebook's)
        _ALL_POOLS.add(self)

    async def get(self, store: PostgresStore) -> _Pool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.pid != os.getpid():
                # The parent's connections are the parent's: kept, never closed nor collected
                # here (closing one would end the parent's session on the shared socket).
                _FORKED.append(self.by_loop)
                self.pid, self.by_loop = os.getpid(), {}
            pool = self.by_loop.get(loop)
            if pool is None:
                for old in [old for old in self.by_loop if old.is_closed()]:
                    del self.by_loop[old]  # a finished loop's pool: its tasks are gone with it
                pool = self.by_loop[loop] = _Pool(store, loop)
        return pool

    async def aclose(self) -> None:
        """Close every pool of this process (waiting for those on the running loop and on live ones)."""
        if self.pid != os.getpid():
            return
        with self._lock:
            pools, self.by_loop = self.by_loop, {}
        running = asyncio.get_running_loop()
        for loop, pool in pools.items():
            if loop is running:
                await pool.pool.close()
            elif loop.is_running():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool.pool.close(), loop))

    def close_soon(self, *, wait: bool = False) -> None:
        """Close every pool of this process on its own loop; with ``wait``, until closed (5 s at most)."""
        if self.pid != os.getpid():
            return
        with self._lock:
            pools, self.by_loop = self.by_loop, {}
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, pool in pools.items():
            if loop.is_closed():
                continue  # its tasks ended with it; the connections close when collected
            done = asyncio.run_coroutine_threadsafe(pool.pool.close(), loop)
            if wait and loop is not running and loop.is_running():
                with contextlib.suppress(Exception):
                    done.result(timeout=5)


#: Every store's pools, closed at interpreter exit.
_ALL_POOLS: weakref.WeakSet[_Pools] = weakref.WeakSet()
#: Pools a forked child inherited: never touched, never collected.
_FORKED: list[dict[asyncio.AbstractEventLoop, _Pool]] = []


@atexit.register
def _close_all_pools() -> None:
    for pools in list(_ALL_POOLS):
        pools.close_soon(wait=True)


class PostgresStore(BaseStore):
    """Checkpoints in a PostgreSQL database, shared by every client that can reach it.

    ``key`` encrypts a new database's store at rest (see :mod:`nb_sessions.crypto`
    and docs/reliability.md, "Encryption at rest"); an encrypted one opened
    without ``key`` takes ``NB_SESSIONS_KEY``.
    """

    def __init__(
        self,
        url: str,
        *,
        redact: Redactor | None = None,
        connect_timeout: int = 10,
        retries: int = 3,
        retry_delay: float = 0.5,
        pool_size: int = 4,
        key: KeySource | None = None,
    ) -> None:
        super().__init__(redact=redact)
        self._key = resolve_key(key) if key is not None else None
        self._cipher: Cipher | None = None
        self._schema = 0  # the schema version found on opening
        self.url = url
        self.connect_timeout = connect_timeout
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
        #: The most connections this store holds open per process and event loop (see docs/postgres.md).
        self.pool_size = pool_size
        self._pools = _Pools()
        weakref.finalize(self, self._pools.close_soon)
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
        """A connection of this store's pool, idle and in the default isolation level.

        It goes back to the pool rolled back to that state; a broken one is closed
        instead (and never handed out again). Errors are the named ones of this module.
        """
        psycopg = _psycopg()
        pool = await self._pools.get(self)
        conn = await pool.checkout(self.location)
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
            await conn.close()  # whatever state it is in, it goes no further
            raise _ConnectionLost(
                f"{self.location}: connection lost ({str(exc).strip()}); what was not acknowledged "
                "was not committed. Retrying the call is safe"
            ) from exc
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.errors.UniqueViolation) and "label" in (
                exc.diag.constraint_name or ""
            ):
                raise  # a label taken by another checkpoint: the caller names it (ConflictError)
            raise StoreError(
                f"{self.location}: the server refused ({type(exc).__name__}: {str(exc).strip()}); "
                "nothing was written. Check the nbs_* tables were made by this version of "
                "nb_sessions (open the store once as their owner) and the server's log"
            ) from exc
        finally:
            await pool.checkin(conn)

    async def aclose(self) -> None:
        """Close the connections this store keeps open (it opens new ones if used again)."""
        await self._pools.aclose()

    def close(self) -> None:
        """Close the connections this store keeps open (it opens new ones if used again)."""
        self._pools.close_soon(wait=True)

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
        """Apply the missing migrations, then open the store's key (this client is ready only after both)."""
        try:
            await self._apply_migrations(conn)
            await self._open_cipher(conn)
        except BaseException:
            self._ready = False
            raise

    async def _apply_migrations(self, conn: Any) -> None:
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
                for version, migration in enumerate(_MIGRATIONS, 1):
                    if version > done:
                        if isinstance(migration, str):
                            await conn.execute(migration)
                        else:
                            await migration(conn)
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
            await self._refuse_old_layout(conn)
            self._ready = True
            return
        self._ready = True

    async def _refuse_old_layout(self, conn: Any) -> None:
        """A role that may not migrate cannot read a schema older than migration 3 (which converts data)."""
        async with conn.transaction():
            version = (await (await conn.execute(_SCHEMA_SQL)).fetchone())[0]
        if version < _LAYOUT:
            raise StoreError(
                f"{self.location} has nb_sessions schema version {version}; this version of nb_sessions "
                f"needs {_LAYOUT} or later, and this database role may not apply the migrations. Open the "
                "store once as the role that owns its tables (or may create them), then again as this one"
            )

    async def _open_cipher(self, conn: Any) -> None:
        """Open the header with the key; make it for a new store opened with one (the first made stands)."""
        async with conn.transaction():
            self._schema = (await (await conn.execute(_SCHEMA_SQL)).fetchone())[0]
        if self._schema < _SEALED:  # a role that may not migrate, on an older schema: a plain store
            self._cipher = None
            if self._key is not None:
                raise StoreError(
                    f"{self.location} has nb_sessions schema version {self._schema}; an encrypted store needs "
                    f"{_SEALED}, and this database role may not apply the migrations. Open the store once as "
                    "the role that owns its tables, then again as this one"
                )
            return

        async def read_header() -> bytes | None:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT (SELECT data FROM nbs_meta WHERE key = %s), "
                    "EXISTS (SELECT 1 FROM nbs_sessions WHERE manifest IS NOT NULL)",
                    (HEADER_KEY,),
                )
                header, sealed = await cur.fetchone()
            if header is None and sealed:  # sealed manifests: never take it for a plain store
                raise StoreCorruptedError(
                    f"{self.location}: the encryption header (nbs_meta row {HEADER_KEY!r}) is gone but its "
                    "sessions are encrypted; nothing was changed. Restore the database from a backup",
                    location=self.location,
                )
            return _bytes(header)  # type: ignore[no-any-return]

        async def create_header(header: bytes) -> bool:
            async with conn.transaction():
                # Saves under way end first (they hold this row FOR SHARE), and a save that starts
                # later reads the header under it: no plain checkpoint lands in an encrypted store.
                await conn.execute("SELECT value FROM nbs_meta WHERE key = 'gc_generation' FOR UPDATE")
                cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM nbs_checkpoints)")
                if (await cur.fetchone())[0]:
                    return False
                await conn.execute(
                    "INSERT INTO nbs_meta (key, value, data) VALUES (%s, 0, %s) ON CONFLICT (key) DO NOTHING",
                    (HEADER_KEY, header),
                )
            return True

        self._cipher = await open_cipher(self._key, self.location, read_header, create_header)

    # -- primitives ----------------------------------------------------------

    @functools.cached_property
    def _caches(self) -> SessionCaches:
        """What this process knows of each session's last save (see :mod:`._planned`)."""
        return SessionCaches()

    async def _write(
        self,
        key: SessionKey,
        states: dict[str, Any],
        label: str | None,
        metadata: dict[str, Any],
        parent: int | None,
        *,
        uid: uuid.UUID | None = None,
        at: At | None = None,
    ) -> Checkpoint:
        """Save once, retrying a lost connection under the same checkpoint id (idempotent on it)."""
        uid = uid or uuid.uuid4()
        lost = False

        async def attempt() -> Checkpoint:
            nonlocal lost
            try:
                return await self._write_once(key, states, label, metadata, parent, uid=uid, at=at)
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
        at: At | None = None,
    ) -> Checkpoint:
        psycopg = _psycopg()
        uid = uid or uuid.uuid4()  # idempotent retries: the same id commits at most once
        skeleton, chunks = split(states)
        skeleton_data = codec.dumps(skeleton)
        meta_data = codec.dumps(metadata)
        modules = tuple(states)
        if not self._ready:
            await self._opened()  # an encrypted store's keyed hash plans the entries
        cipher = self._cipher
        while True:  # twice at most: a new cache is never stale
            cache = self._caches.get(key, cipher.mac if cipher is not None else None)
            plans, remembered = cache.plan(chunks)
            size = len(skeleton_data) + sum(plan.size for plan in plans)
            now = utcnow() if at is None else at.created_at
            payloads: list[list[int]] = []
            try:
                async with self._connect() as conn, conn.transaction():
                    # Garbage collection waits for this save, and this save for a collection under way.
                    cur = await conn.execute(
                        "SELECT m.value, c.seq, c.parent, c.created_at FROM nbs_meta m LEFT JOIN nbs_checkpoints c "
                        "ON c.uid = %s WHERE m.key = 'gc_generation' FOR SHARE OF m",
                        (uid,),
                    )
                    row = await cur.fetchone()
                    generation = _meta_value(row, "gc_generation", self.location)
                    if row[1] is not None:  # a retry of a save that did commit
                        seq, parent, now = row[1:]
                        break
                    if not cache.fresh(generation):
                        raise _Stale
                    payloads = await store_plans(_PostgresRows(conn, cipher), plans, cache.entry_ids)
                    sid, seq = await self._allocate(conn, key, now)
                    if at is not None:  # an exact copy: its source's seq and parent, as they are
                        seq = at.seq_after(key, seq, self.location)
                    # After the lock on gc_generation: a header made since this client opened is seen.
                    header = _HEADER_SQL if self._schema >= _SEALED else ", NULL"
                    cur = await conn.execute(
                        f"SELECT max(seq), coalesce(bool_or(seq = %s), false){header} FROM nbs_checkpoints "
                        "WHERE session = %s",
                        (parent, sid),
                    )
                    latest, known, sealed = await cur.fetchone()
                    self._check_header(sealed)
                    parent = parent if known or at is not None else latest  # a parent deleted meanwhile: the latest
                    refs = chunk_rows(plans, payloads)
                    chunk_data = codec.dumps(refs) if refs else None
                    stored_state, stored_meta, manifest = skeleton_data, meta_data, []
                    if cipher is not None:  # bound to this checkpoint and its entries, in order
                        created = _utc_text(now)
                        stored_state, stored_meta = seal_checkpoint(
                            cipher, key, seq, created, skeleton_data, meta_data,
                            [h for plan in plans for seg in plan.segments for h in seg.hashes],
                        )
                        manifest = [await self._resealed(conn, key, sid, added=[(seq, created)])]
                    facts = _facts(
                        seq, parent, now, label, stored_meta, modules, size, stored_state, chunk_data
                    )
                    await conn.execute(
                        "WITH s AS (UPDATE nbs_sessions SET next_seq = %s, updated_at = %s"
                        + (", manifest = %s" if manifest else "")
                        + " WHERE id = %s) "
                        "INSERT INTO nbs_checkpoints (session, seq, uid, parent, created_at, label, metadata, "
                        "modules, size, state, chunks, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                        (
                            seq + 1,
                            now,
                            *manifest,
                            sid,
                            sid,
                            seq,
                            uid,
                            parent,
                            now,
                            label,
                            stored_meta,
                            list(modules),
                            size,
                            stored_state,
                            chunk_data,
                            row_hash(key, *facts),
                        ),
                    )
            except _Stale:  # another client collected garbage: cached segment ids may be gone
                self._caches.drop(key)
                continue
            except psycopg.errors.UniqueViolation as exc:
                self._caches.drop(key)
                raise ConflictError(
                    f"label {label!r} already names another checkpoint of {key}; choose another "
                    f"label, or move it first with store.label(ref, None)"
                ) from exc
            except BaseException:
                self._caches.drop(key)
                raise
            cache.remember(plans, payloads, remembered)
            break
        self._parents[key] = seq
        return Checkpoint(
            session_id=key.session_id,
            user_id=key.user_id,
            seq=seq,
            created_at=now,
            modules=modules,
            size=size,
            parent=parent,
            label=label,
            metadata=metadata,
            store=self,
        )

    async def _allocate(self, conn: Any, key: SessionKey, now: datetime) -> tuple[int, int]:
        """The session's row id and next seq, under a row lock held until the commit."""
        # Insert or lock the existing row in one statement: a session deleted meanwhile is made anew.
        cur = await conn.execute(
            "INSERT INTO nbs_sessions (user_id, session_id, created_at, updated_at, hash) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, session_id) "
            "DO UPDATE SET next_seq = nbs_sessions.next_seq RETURNING id, next_seq, hash",
            (key.user_id, key.session_id, now, now, key_hash(key)),
        )
        sid, seq, stored = await cur.fetchone()
        if _bytes(stored) != key_hash(key):
            where = f"nbs_sessions row of session {key} in {self.location}"
            raise StoreCorruptedError(
                f"{where} does not match its hash: its ids were edited by hand or damaged, so it is not "
                "the session it names; nothing was saved. Restore the database from a backup",
                location=where,
            )
        return int(sid), int(seq)

    def _check_header(self, present: bool | None) -> None:
        """Inside a save: the store is still encrypted, or still plain, as this client found it on opening."""
        if present and self._cipher is None:
            raise KeyRequiredError(
                f"{self.location} was encrypted by another client since this one opened it; nothing was "
                "saved. Open it again with its key",
                location=self.location,
            )
        if present is False and self._cipher is not None:
            raise StoreCorruptedError(
                f"{self.location}: the encryption header (nbs_meta row {HEADER_KEY!r}) is gone; nothing was "
                "saved. Restore the database from a backup",
                location=self.location,
            )

    async def _resealed(
        self, conn: Any, key: SessionKey, sid: int, *, gone: Sequence[int] = (), added: Sequence[Row] = ()
    ) -> bytes:
        """Under the session's row lock: its rows checked against its manifest, and the new manifest sealed."""
        assert self._cipher is not None
        cur = await conn.execute(
            "SELECT s.manifest, c.seq, c.created_at FROM nbs_sessions s LEFT JOIN nbs_checkpoints c "
            "ON c.session = s.id WHERE s.id = %s",
            (sid,),
        )
        rows = await cur.fetchall()
        found = {(int(seq), _utc_text(created)) for _, seq, created in rows if seq is not None}
        sealed = _bytes(rows[0][0]) if rows else None
        return resealed_manifest(self._cipher, key, sealed, found, self.location, gone=gone, added=added)

    @_retried_read
    async def _read(self, cp: Checkpoint) -> dict[str, Any]:
        psycopg = _psycopg()
        where = f"checkpoint {cp.ref} in {self.location}"
        async with self._connect() as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                cur = await conn.execute(_ROW_SQL + " AND c.seq = %s", (*cp.key, cp.seq))
                row = await cur.fetchone()
                if row is None or row[4] != cp.created_at:
                    raise CheckpointNotFoundError(
                        f"checkpoint {cp.ref} is no longer in {self.location} (deleted meanwhile?)",
                        ref=cp.ref,
                    )
                stored, *fields = row
                facts = _facts(*fields)
                verify_row(_bytes(stored), cp.key, *facts, where=where, location=self.location)
                state_data, chunk_data = facts[-2:]
                hashes: list[bytes] = []
                lists = await self._read_lists(conn, chunk_data, where, hashes) if chunk_data else []
        if self._cipher is not None:  # bound to this checkpoint and its entries' hashes, in order
            state_data = open_checkpoint(
                self._cipher, cp.key, cp.seq, facts[2], state_data, hashes, where, self.location
            )
        state = codec.loads(state_data, where, trusted=True)
        if not isinstance(state, dict):
            raise StoreCorruptedError(f"{where} holds no object of module states", location=where)
        try:
            return assemble(state, lists) if lists else state
        except (KeyError, IndexError, TypeError) as exc:
            raise StoreCorruptedError(
                f"{where}: a stored list does not fit its place ({exc}); delete that checkpoint",
                location=where,
            ) from None

    async def _read_lists(
        self, conn: Any, chunk_data: bytes, where: str, hashes: list[bytes]
    ) -> list[tuple[tuple[str | int, ...], list[Any]]]:
        """A checkpoint's long lists: its segments, then their entries, in bulk (in the caller's snapshot).

        An encrypted store's entries are opened, and their keyed hashes appended to ``hashes`` in order.
        """
        refs = chunk_refs(chunk_data, where)
        # Binary results and parameters: bytea arrives as it is stored, not as hex text to decode.
        cur = await conn.execute(
            "SELECT id, blobs, hash FROM nbs_segments WHERE id = ANY(%b)",
            (sorted({i for _, ids in refs for i in ids}),),
            binary=True,
        )
        segments = {int(i): (_bytes(packed), _bytes(h)) for i, packed, h in await cur.fetchall()}
        lists_ids: list[tuple[Any, list[int]]] = []
        for path, seg_ids in refs:
            entry_ids: list[int] = []
            for seg_id in seg_ids:
                if seg_id not in segments:
                    raise StoreCorruptedError(
                        f"{where}: segment {seg_id} of {path_text(tuple(path))} is missing; delete "
                        "that checkpoint, the others are intact",
                        location=where,
                    )
                packed, seg_hash = segments[seg_id]
                entry_ids.extend(
                    segment_ids(packed, seg_id, list_where(where, path), where, seg_hash)
                )
            lists_ids.append((path, entry_ids))
        cur = await conn.execute(
            "SELECT id, data, hash FROM nbs_blobs WHERE id = ANY(%b)",
            (sorted({i for _, ids in lists_ids for i in ids}),),
            binary=True,
        )
        entries = {int(i): (_bytes(data), _bytes(h)) for i, data, h in await cur.fetchall()}
        out: list[tuple[tuple[str | int, ...], list[Any]]] = []
        for path, entry_ids in lists_ids:
            label = list_where(where, path)
            missing = [i for i in entry_ids if i not in entries]
            if missing:
                raise StoreCorruptedError(
                    f"{label}: entry {missing[0]} is missing; delete that checkpoint, the others are intact",
                    location=where,
                )
            if self._cipher is not None:
                body, exact = open_entries(
                    self._cipher, entry_ids, entries, where, path, self.location, hashes
                )
            else:
                body, exact = verified_array(
                    [entries[i] for i in entry_ids], entry_ids, label, "table nbs_blobs"
                )
            out.append((tuple(path), codec.loads(body, label, trusted=not exact)))
        return out

    @_retried_read
    async def _history(self, key: SessionKey) -> list[Checkpoint]:
        psycopg = _psycopg()
        async with self._connect() as conn:
            cipher = self._cipher  # known once connected
            if cipher is None:
                cur = await conn.execute(_ROW_SQL + " ORDER BY c.seq", key)
                rows = await cur.fetchall()
            else:  # the rows and the manifest from one snapshot
                await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
                async with conn.transaction():
                    cur = await conn.execute(_ROW_SQL + " ORDER BY c.seq", key)
                    rows = await cur.fetchall()
                    cur = await conn.execute(
                        "SELECT manifest FROM nbs_sessions WHERE user_id = %s AND session_id = %s", key
                    )
                    sealed = await cur.fetchone()
                if rows:
                    found = {(int(r[2]), _utc_text(r[4])) for r in rows}
                    check_rows(cipher, key, _bytes(sealed[0]) if sealed else None, found, self.location)
        if not rows:
            raise self._not_found(key)
        out = []
        for stored, *fields in rows:
            seq, parent, created, label, meta, modules, size, *_ = _facts(*fields)
            where = f"checkpoint {key}@{seq} in {self.location}"
            try:  # the facts only: reading the state (get_state, check) checks the rest
                verify_facts(
                    _bytes(stored),
                    key,
                    seq,
                    parent,
                    created,
                    label,
                    meta,
                    modules,
                    size,
                    where=where,
                    location=self.location,
                )
                if cipher is not None:
                    meta = open_metadata(cipher, key, seq, created, meta, where, self.location)
                metadata = codec.loads(meta, where)
            except StoreCorruptedError:  # this checkpoint only: its read raises the named error
                parent, size, label, metadata = None, 0, None, {"corrupted": True}
            out.append(
                Checkpoint(
                    session_id=key.session_id,
                    user_id=key.user_id,
                    seq=seq,
                    created_at=fields[3],
                    modules=tuple(fields[6]),
                    size=size,
                    parent=parent,
                    label=label,
                    metadata=metadata if isinstance(metadata, dict) else {"corrupted": True},
                    store=self,
                )
            )
        return out

    @_retried_read
    async def _sessions(self) -> list[SessionInfo]:
        async with self._connect() as conn:
            cur = await conn.execute(
                "SELECT s.user_id, s.session_id, count(*), max(c.seq), min(c.created_at), max(c.created_at), "
                "array_remove(array_agg(c.label ORDER BY c.seq), NULL), s.hash "
                "FROM nbs_sessions s JOIN nbs_checkpoints c ON c.session = s.id GROUP BY s.id"
            )
            rows = await cur.fetchall()
        out = []
        for uid, sid, count, latest, first, last, labels, stored in rows:
            try:
                key = SessionKey(
                    validate_id(uid, "user id", literal=True), validate_id(sid, literal=True)
                )
                if _bytes(stored) != key_hash(key):
                    raise InvalidIdError(
                        f"its ids {uid!r}, {sid!r} do not match its hash (edited or damaged)"
                    )
            except InvalidIdError as exc:
                warnings.warn(
                    f"nb_sessions: {self.location}: nbs_sessions holds a row that is no session ({exc}); "
                    "it is not listed",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            out.append(
                SessionInfo(
                    session_id=sid,
                    user_id=uid,
                    checkpoints=count,
                    latest_seq=latest,
                    created_at=first,
                    updated_at=last,
                    labels=tuple(labels),
                )
            )
        return out

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
            elif self._cipher is not None:  # under the row lock taken above
                manifest = await self._resealed(conn, key, sid, gone=seqs or ())
                await conn.execute("UPDATE nbs_sessions SET manifest = %s WHERE id = %s", (manifest, sid))
        return int(count)

    async def _set_label(self, key: SessionKey, seq: int, label: str | None) -> None:
        psycopg = _psycopg()
        async with self._connect() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        _ROW_SQL + " AND c.seq = %s FOR UPDATE OF c", (*key, seq)
                    )
                    row = await cur.fetchone()
                    if row is None:
                        return
                    stored, *fields = row
                    # The label is hashed with the row: checked first, so damage is never re-sealed.
                    digest = relabelled(
                        _bytes(stored),
                        key,
                        *_facts(*fields)[:7],
                        new_label=label,
                        where=f"checkpoint {key}@{seq} in {self.location}",
                        location=self.location,
                    )
                    await conn.execute(
                        "UPDATE nbs_checkpoints SET label = %s, hash = %s WHERE uid = %s",
                        (label, digest, fields[0]),
                    )
            except psycopg.errors.UniqueViolation as exc:
                raise ConflictError(
                    f"label {label!r} already names another checkpoint of {key}; remove it there "
                    "first with store.label(ref, None)"
                ) from exc

    @property
    def encrypted(self) -> bool:
        """Whether this store is encrypted at rest (connects to find out)."""
        if not self._ready:
            run_sync(self._retrying(f"{self.location}: opening", self._opened))
        return self._cipher is not None

    async def _opened(self) -> None:
        """Connect once: migrations applied, the key opened."""
        async with self._connect():
            pass

    def rekey(self, new_key: KeySource) -> None:
        """Re-wrap the data key of this encrypted store with ``new_key`` (one transaction updates the header).

        The entries are not re-encrypted: only the wrapped data key changes, in one
        statement, so an interruption leaves the store opening with the old key or
        the new one, never neither. Other clients must reopen with the new key.
        """
        run_sync(self._rekey(resolve_key(new_key)))

    async def _rekey(self, material: bytes | str) -> None:
        async with self._connect() as conn:
            if self._cipher is None:
                raise not_encrypted(self.location)
            new = self._cipher.rewrap(material)
            async with conn.transaction():
                cur = await conn.execute(
                    "UPDATE nbs_meta SET data = %s WHERE key = %s", (new.header, HEADER_KEY)
                )
                if cur.rowcount != 1:
                    self._check_header(False)
            self._cipher, self._key = new, material

    @_retried_read
    async def _search(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """Messages whose text contains ``text`` (case-insensitive): ILIKE on ``nbs_search`` (a
        pg_trgm index serves it, also for CJK), filled on first search like SQLite's FTS index;
        entries not indexed yet (a read-only role cannot index) are scanned. Skeletons are scanned."""
        from ..search import (
            Hit,
            entry_message,
            matches,
            scan_state,
            searchable_text,
            unless_unreadable,
        )

        psycopg = _psycopg()
        if not self._ready:
            await self._opened()
        if self._cipher is not None:
            return await self._search_decrypted(text, keys)
        pattern = (
            "%"
            + (_pg_text(text) or "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "%"
        )
        hits: list[Hit] = []
        async with self._connect() as conn:
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                await self._update_index(conn)
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT b.id, b.data FROM nbs_search s JOIN nbs_blobs b ON b.id = s.id WHERE s.text ILIKE %s "
                    "UNION ALL SELECT id, data FROM nbs_blobs WHERE id > "
                    "(SELECT value FROM nbs_meta WHERE key = 'search_indexed_upto')",
                    (pattern,),
                    binary=True,  # entries as stored, not hex text
                )
                found: dict[int, Mapping[str, Any]] = {}
                for blob_id, data in await cur.fetchall():
                    with unless_unreadable(f"stored entry {blob_id} (nbs_blobs)"):
                        msg = entry_message(codec.loads(loaded_entry(_bytes(data))))
                        if msg is not None and matches(searchable_text(msg), text):
                            found[int(blob_id)] = msg
                segments: dict[int, Sequence[int]] = {}
                for key in keys:
                    cur = await conn.execute(
                        "SELECT c.seq, c.state, c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s "
                        "ON c.session = s.id WHERE s.user_id = %s AND s.session_id = %s ORDER BY c.seq",
                        key,
                    )
                    for seq, skeleton, chunks in await cur.fetchall():
                        with unless_unreadable(f"{key}@{seq}"):
                            state = codec.loads(_bytes(skeleton))
                            if isinstance(state, dict):
                                hits += [
                                    Hit(key.session_id, key.user_id, seq, p, m)
                                    for p, m in scan_state(state, text)
                                ]
                        if chunks is None or not found:
                            continue
                        for path, seg_ids in chunk_refs(
                            _bytes(chunks), f"checkpoint {key}@{seq} in {self.location}"
                        ):
                            missing = [i for i in seg_ids if i not in segments]
                            if missing:
                                got = await conn.execute(
                                    "SELECT id, blobs FROM nbs_segments WHERE id = ANY(%s)",
                                    (missing,),
                                )
                                for i, packed in await got.fetchall():
                                    segments[int(i)] = segment_ids(
                                        _bytes(packed), i, self.location, self.location
                                    )
                            where = path_text(conversation_path(tuple(path)))
                            for seg_id in seg_ids:
                                hits += [
                                    Hit(key.session_id, key.user_id, seq, where, found[i])
                                    for i in segments.get(seg_id, ())
                                    if i in found
                                ]
        return hits

    async def _search_decrypted(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """An encrypted store: entries decrypted and scanned in memory, each distinct one once (no index).

        In one snapshot, per checkpoint: its lists' entry ids (through the segments),
        the entries not seen yet opened and matched, then its skeleton opened
        (bound to those entries' hashes) and scanned. A damaged checkpoint is passed
        over and named in the search's unreadable list, as by the plain search.
        """
        from ..search import (
            Hit,
            entry_message,
            matches,
            scan_state,
            searchable_text,
            unless_unreadable,
        )

        psycopg = _psycopg()
        cipher = self._cipher
        assert cipher is not None
        hits: list[Hit] = []
        segments: dict[int, Sequence[int]] = {}
        entries: dict[int, tuple[bytes, Mapping[str, Any] | None]] = {}  # id -> keyed hash, message if it matches
        async with self._connect() as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                for key in keys:
                    cur = await conn.execute(
                        "SELECT c.seq, c.created_at, c.state, c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s "
                        "ON c.session = s.id WHERE s.user_id = %s AND s.session_id = %s ORDER BY c.seq",
                        key,
                    )
                    for seq, created, skeleton, chunks in await cur.fetchall():
                        where = f"checkpoint {key}@{seq} in {self.location}"
                        with unless_unreadable(f"{key}@{seq}"):
                            lists = []
                            for path, seg_ids in chunk_refs(_bytes(chunks), where) if chunks is not None else []:
                                missing = [i for i in seg_ids if i not in segments]
                                if missing:
                                    got = await conn.execute(
                                        "SELECT id, blobs FROM nbs_segments WHERE id = ANY(%s)", (missing,)
                                    )
                                    for i, packed in await got.fetchall():
                                        segments[int(i)] = segment_ids(_bytes(packed), i, where, where)
                                ids: list[int] = []
                                for seg_id in seg_ids:
                                    if seg_id not in segments:
                                        raise StoreCorruptedError(
                                            f"{where}: segment {seg_id} of {path_text(tuple(path))} is missing; "
                                            "delete that checkpoint, the others are intact",
                                            location=self.location,
                                        )
                                    ids += segments[seg_id]
                                lists.append((path, ids))
                            new = sorted({i for _, ids in lists for i in ids} - entries.keys())
                            if new:
                                got = await conn.execute(
                                    "SELECT id, data, hash FROM nbs_blobs WHERE id = ANY(%b)", (new,), binary=True
                                )
                                for i, data, h in await got.fetchall():
                                    plain = cipher.open(_bytes(data), _bytes(h), f"{where} entry {i}", self.location)
                                    msg = entry_message(codec.loads(plain, f"{where} entry {i}"))
                                    if msg is not None and not matches(searchable_text(msg), text):
                                        msg = None
                                    entries[int(i)] = (_bytes(h), msg)
                            gone = [i for _, ids in lists for i in ids if i not in entries]
                            if gone:
                                raise StoreCorruptedError(
                                    f"{where}: entry {gone[0]} is missing; delete that checkpoint, the others are "
                                    "intact",
                                    location=self.location,
                                )
                            hashes = [entries[i][0] for _, ids in lists for i in ids]
                            state = codec.loads(open_checkpoint(
                                cipher, key, seq, _utc_text(created), _bytes(skeleton), hashes, where, self.location
                            ), where)
                            if isinstance(state, dict):
                                hits += [Hit(key.session_id, key.user_id, seq, p, m) for p, m in scan_state(state, text)]
                            for path, ids in lists:
                                at = path_text(conversation_path(tuple(path)))
                                for i in ids:
                                    msg = entries[i][1]
                                    if msg is not None:
                                        hits.append(Hit(key.session_id, key.user_id, seq, at, msg))
        return hits

    async def _update_index(self, conn: Any) -> None:
        """Index the entries stored since the last search (the index fills on first use)."""
        from ..search import entry_message, searchable_text, unless_unreadable

        if self._cipher is not None:
            return  # an encrypted store's nbs_search stays empty: it would hold plaintext
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT (SELECT value FROM nbs_meta WHERE key = 'search_indexed_upto'), "
                "(SELECT coalesce(max(id), 0) FROM nbs_blobs)"
            )
            upto, top = await cur.fetchone()
        if top <= upto:
            return
        async with conn.transaction():
            # Waits for saves under way: no entry with a smaller id can commit after this.
            await conn.execute("LOCK TABLE nbs_blobs IN SHARE MODE")
            cur = await conn.execute(
                "SELECT value FROM nbs_meta WHERE key = 'search_indexed_upto' FOR UPDATE"
            )
            upto = (await cur.fetchone())[0]
            cur = await conn.execute(
                "SELECT id, data FROM nbs_blobs WHERE id > %s ORDER BY id", (upto,)
            )
            rows = await cur.fetchall()
            texts: list[tuple[int, str]] = []
            for blob_id, data in rows:
                with unless_unreadable(f"stored entry {blob_id} (nbs_blobs)"):
                    msg = entry_message(codec.loads(loaded_entry(_bytes(data))))
                    text = _pg_text(searchable_text(msg)) if msg is not None else None
                    if text:
                        texts.append((blob_id, text))
            if texts:
                async with conn.cursor() as c:
                    await c.executemany("INSERT INTO nbs_search (id, text) VALUES (%s, %s)", texts)
            if rows:
                await conn.execute(
                    "UPDATE nbs_meta SET value = %s WHERE key = 'search_indexed_upto'",
                    (rows[-1][0],),
                )

    async def _vacuum(self) -> int:
        """Delete segments and entries no checkpoint refers to; return the bytes they held.

        Holding the ``gc_generation`` row ``FOR UPDATE`` waits for the saves under
        way and keeps new ones from starting; the new generation tells every
        client that its cached segment ids may be gone.
        """
        async with self._connect() as conn, conn.transaction():
            await conn.execute("SELECT value FROM nbs_meta WHERE key = 'gc_generation' FOR UPDATE")
            cur = await conn.execute(
                "SELECT seq, chunks FROM nbs_checkpoints WHERE chunks IS NOT NULL"
            )
            live_segs = live_segments(
                [(seq, _bytes(chunks)) for seq, chunks in await cur.fetchall()], self.location
            )
            cur = await conn.execute(
                "SELECT id, blobs FROM nbs_segments WHERE id = ANY(%s)", (sorted(live_segs),)
            )
            live = live_entries({int(i): _bytes(b) for i, b in await cur.fetchall()}, self.location)
            await conn.execute(
                "DELETE FROM nbs_segments WHERE NOT (id = ANY(%s))", (sorted(live_segs),)
            )
            cur = await conn.execute(
                "DELETE FROM nbs_blobs WHERE NOT (id = ANY(%s)) RETURNING length(data)",
                (sorted(live),),
            )
            freed = sum(int(r[0]) for r in await cur.fetchall())
            await conn.execute("UPDATE nbs_meta SET value = value + 1 WHERE key = 'gc_generation'")
            return freed

    async def _space(self, key: SessionKey) -> SessionSpace:
        """Each checkpoint's row (split by module) and the segments and entries it uses, by row id."""
        history = await self._history(key)
        rows = await self._space_rows(key)
        by_seq = {cp.seq: cp for cp in history}
        return SessionSpace(
            key, [CheckpointSpace(by_seq[seq], own, pieces) for seq, own, pieces in rows if seq in by_seq]
        )

    @_retried_read
    async def _space_rows(self, key: SessionKey) -> list[tuple[int, dict[str, int], dict[str, dict[str, int]]]]:
        """One snapshot of the session's rows: skeleton and metadata bytes, its segments' and entries' sizes."""
        psycopg = _psycopg()
        async with self._connect() as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT c.seq, c.state, c.chunks, octet_length(c.metadata) "
                    "+ coalesce(octet_length(array_to_string(c.modules, ',')), 0) FROM nbs_checkpoints c "
                    "JOIN nbs_sessions s ON c.session = s.id WHERE s.user_id = %s AND s.session_id = %s",
                    tuple(key),
                )
                found = [(int(seq), _bytes(state), chunks, int(extra)) for seq, state, chunks, extra in await cur.fetchall()]
                refs = {
                    seq: chunk_refs(_bytes(chunks), f"checkpoint {key}@{seq} in {self.location}") if chunks else []
                    for seq, _, chunks, _ in found
                }
                cur = await conn.execute(
                    "SELECT id, blobs, hash FROM nbs_segments WHERE id = ANY(%s)",
                    (sorted({i for rows in refs.values() for _, ids in rows for i in ids}),),
                )
                segments = {int(i): (_bytes(packed), _bytes(h)) for i, packed, h in await cur.fetchall()}
                entries = {
                    i: segment_ids(packed, i, self.location, self.location, h) for i, (packed, h) in segments.items()
                }
                cur = await conn.execute(
                    "SELECT id, octet_length(data) FROM nbs_blobs WHERE id = ANY(%s)",
                    (sorted({e for ids in entries.values() for e in ids}),),
                )
                entry_sizes = {int(i): int(n) for i, n in await cur.fetchall()}
        sizes = {i: len(packed) for i, (packed, _) in segments.items()}
        return [
            (seq, module_bytes(state, extra, f"checkpoint {key}@{seq}"), list_pieces(refs[seq], entries, sizes, entry_sizes))
            for seq, state, _, extra in found
        ]

    @_retried_read
    async def _disk_bytes(self) -> int:
        """What the server keeps for this store: every nbs_* table of its schema, TOAST and indexes included."""
        async with self._connect(setup=False) as conn:
            cur = await conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND c.relname LIKE 'nbs\\_%' AND n.nspname = current_schema()"
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0


class _Stale(Exception):
    """A session's cache predates the last garbage collection: plan the save again."""


class _PostgresRows:
    """The SQL of :func:`._planned.store_plans` for PostgreSQL (sorted by hash: one lock order)."""

    def __init__(self, conn: Any, cipher: Cipher | None = None) -> None:
        self.conn = conn
        self.cipher = cipher

    async def _insert(self, table: str, column: str, rows: Sequence[tuple[bytes, bytes]]) -> None:
        ordered = sorted(rows)
        # Binary parameters: the server reads the bytes as they are (text would send each as hex).
        await self.conn.execute(
            f"INSERT INTO {table} (hash, {column}) SELECT * FROM unnest(%b::bytea[], %b::bytea[]) "
            "ON CONFLICT (hash) DO NOTHING",
            ([h for h, _ in ordered], [d for _, d in ordered]),
        )

    async def _ids(self, table: str, hashes: Sequence[bytes]) -> dict[bytes, int]:
        cur = await self.conn.execute(
            f"SELECT hash, id FROM {table} WHERE hash = ANY(%b)", (list(hashes),), binary=True
        )
        return {bytes(h): int(i) for h, i in await cur.fetchall()}

    async def insert_entries(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        if self.cipher is not None:  # each entry sealed, bound to its keyed hash
            seal = self.cipher.seal
            rows = [(h, seal(data, h)) for h, data in rows]
        await self._insert("nbs_blobs", "data", rows)

    async def entry_ids(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        return await self._ids("nbs_blobs", hashes)

    async def insert_segments(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        await self._insert("nbs_segments", "blobs", rows)

    async def segment_ids(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        return await self._ids("nbs_segments", hashes)


# A checkpoint row as _facts takes it (after its hash): uid, then the facts and content.
_ROW_SQL = (
    "SELECT c.hash, c.uid, c.seq, c.parent, c.created_at, c.label, c.metadata, c.modules, c.size, c.state, "
    "c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s ON c.session = s.id "
    "WHERE s.user_id = %s AND s.session_id = %s"
)


# In a save, after the lock on gc_generation: whether the store has an encryption header.
_HEADER_SQL = f", EXISTS (SELECT 1 FROM nbs_meta WHERE key = '{HEADER_KEY}')"


def _utc_text(when: Any) -> Any:
    """A ``timestamptz`` as the UTC ISO text the row hash, the seals and the manifest name it by."""
    return when.astimezone(timezone.utc).isoformat() if isinstance(when, datetime) else when


def _facts(*row: Any) -> tuple[Any, ...]:
    """A checkpoint row's values in the form :mod:`.row_hash` hashes them, as written and as read back.

    Takes ``[uid,] seq, parent, created_at, label, metadata, modules, size, state, chunks``
    (a row of ``_ROW_SQL`` or the values of a new row): times as UTC ISO text
    (PostgreSQL returns them in the session's time zone), the module names as
    the JSON of their list, ``bytea`` as bytes.
    """
    if len(row) == 10:
        row = row[1:]  # the uid
    seq, parent, created, label, meta, modules, size, state, chunks = row
    when = _utc_text(created)
    names = codec.dumps(list(modules)) if isinstance(modules, (list, tuple)) else modules
    return (seq, parent, when, label, _bytes(meta), names, size, _bytes(state), _bytes(chunks))


def _bytes(value: Any) -> Any:
    """``bytea`` as bytes (psycopg may return a memoryview); anything else as it is."""
    return bytes(value) if isinstance(value, (memoryview, bytearray)) else value


def _meta_value(row: Any, key: str, location: str) -> int:
    if row is None or type(row[0]) is not int:
        raise StoreCorruptedError(
            f"{location}: nbs_meta value {key!r} is {row[0] if row else 'missing'!r}, not an integer; the "
            "store's own bookkeeping was edited: restore the database from a backup",
            location=f"{location} (nbs_meta {key})",
        )
    return int(row[0])


def _pg_text(text: str | None) -> str | None:
    """``text`` as PostgreSQL can hold it: no NUL, no lone surrogate (matches are confirmed on the original)."""
    if text is None:
        return None
    return text.replace("\x00", " ").encode("utf-8", "replace").decode("utf-8")
