"""SQLiteStore: checkpoints in one SQLite file through aiosqlite.

WAL, a busy timeout, ``BEGIN IMMEDIATE`` for every write (in WAL a
read-then-write transaction fails with "database is locked" whatever the
timeout), one checkpoint per transaction, ordered migrations. Connections
live for one operation and are always closed: aiosqlite runs a non-daemon
thread per connection, and one left open delays kernel shutdown.

A file that already holds AgentScope's example table
``as_session(session_id, session_data, created_at, updated_at)`` opens as it
is: each row is a session whose checkpoint @1 is that row. nb_sessions adds
its own tables beside it and never writes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import queue
import sqlite3
import threading
import urllib.parse
import warnings
from array import array
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from .. import codec
from .._loop import run_sync
from ..chunks import (
    assemble,
    path_text,
    split,
    verify_entries,
)
from ..crypto import (
    Cipher,
    KeySource,
    open_checkpoint,
    open_metadata,
    resolve_key,
    seal_checkpoint,
)
from ..errors import (
    CheckpointNotFoundError,
    ConflictError,
    InvalidIdError,
    StoreCorruptedError,
    StoreError,
)
from ..generations import conversation_path
from ._fs import make_folders, settle_late_cancel
from ._planned import (
    SessionCaches,
    chunk_refs,
    chunk_rows,
    list_where,
    live_entries,
    segment_ids,
    store_plans,
    verified_array,
)
from ._planned import (
    live_segments as _live_segments,
)
from ._sealed import (
    HEADER_KEY,
    check_rows,
    not_encrypted,
    open_cipher,
    open_entries,
    resealed_manifest,
)
from .base import (
    At,
    BaseStore,
    Checkpoint,
    Redactor,
    Ref,
    SessionInfo,
    SessionKey,
    utcnow,
    validate_id,
)
from .migrations import apply_migrations, latest_version
from .row_hash import key_hash, relabelled, row_hash, verify_facts, verify_row
from .space import CheckpointSpace, SessionSpace, list_pieces, module_bytes

if TYPE_CHECKING:
    from ..search import Hit

__all__ = ["SQLiteStore"]

LEGACY_TABLE = "as_session"
# SQLite's own busy timeout per statement; BEGIN IMMEDIATE waits longer, in polls (see _begin).
_BUSY_POLL = 1.0


class SQLiteStore(BaseStore):
    """Checkpoints in a SQLite file (created on first write, owner-only)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        redact: Redactor | None = None,
        key: KeySource | None = None,
    ) -> None:
        super().__init__(redact=redact)
        self._key = resolve_key(key) if key is not None else None
        self._cipher: Cipher | None = None
        self.path = Path(path).expanduser().absolute()
        self.timeout = timeout
        self._ready = False
        self._has_legacy: bool | None = None
        self._caches = SessionCaches()
        self._readonly = False
        self._immutable = False
        self._file_id: tuple[int, int] | None = None
        self._uid: int | None = None

    @property
    def location(self) -> str:
        """The database file."""
        return str(self.path)

    def _read_only(self, cp: Checkpoint) -> bool:
        return cp.origin == LEGACY_TABLE

    # -- connections -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[aiosqlite.Connection]:
        await self._check_open()
        db, uid = await self._open_connection()
        if uid != self._uid:
            await db.close()
            raise self._gone()
        completed = False
        try:
            await db.execute("PRAGMA foreign_keys = ON")
            yield db
            completed = True
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # see _wrap
            raise self._wrap(exc) from exc
        except UnicodeEncodeError as exc:
            # An id or label holding a lone surrogate (half an emoji): SQLite text cannot hold it.
            raise InvalidIdError(
                f"{exc.object[max(0, exc.start - 20):exc.end + 20]!r} holds a lone surrogate "
                f"(half of an emoji?), which {self.path} cannot store as text; fix the text",
                value=exc.object,
            ) from None
        finally:
            # Closing after a COMMIT: a cancel arriving now must not report the
            # committed operation as cancelled (the result stands, as in _commit).
            closing = asyncio.ensure_future(db.close())
            try:
                await asyncio.shield(closing)
            except asyncio.CancelledError:
                await closing
                if not completed:
                    raise
                settle_late_cancel()

    async def _check_open(self) -> None:
        """Set the store up on first use; afterwards, refuse a file deleted meanwhile."""
        if not self._ready:
            await self._setup()
        elif self._identity() is None:
            raise self._gone()

    async def _open_connection(self) -> tuple[aiosqlite.Connection, int | None]:
        """Connect and read the store's identity, waiting out other processes' locks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = 0.01
        while True:
            db: aiosqlite.Connection | None = None
            try:
                # mode=rw|ro: never create the file here (a deleted store must not come back empty).
                db = await aiosqlite.connect(self._uri(), uri=True, timeout=_BUSY_POLL, isolation_level=None)
                await db.execute(_UNTRUSTED_SCHEMA)
                return db, await _store_uid(db, self.path)
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                if db is not None:
                    with contextlib.suppress(sqlite3.Error):
                        await db.close()
                # Writable when set up, read-only now (a remount, chmod, chattr): read on.
                if _read_only_error(exc) and not self._readonly and await self._setup_read_only():
                    continue
                # Another process switching the journal mode, recovering or checkpointing the
                # WAL holds the file for a moment: wait and retry, up to the store's timeout.
                if _locked_error(exc) and loop.time() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                raise self._wrap(exc) from exc

    def _gone(self) -> StoreError:
        return StoreError(
            f"{self.path} was deleted while open (or replaced by another store), and its "
            "checkpoints with it; open_store() the path again to work with what is there now"
        )

    def _identity(self) -> tuple[int, int] | None:
        """The file's (device, inode): a store deleted and made anew at the path is another file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _uri(self) -> str:
        mode = "ro&immutable=1" if self._immutable else ("ro" if self._readonly else "rw")
        return f"file:{urllib.parse.quote(str(self.path))}?mode={mode}"

    async def _setup(self) -> None:
        """Create the file (mode 0600) and apply pending migrations; idempotent across processes.

        Several processes opening a new store at once meet each other's locks while the
        journal mode changes and migrations run: retried until the store's timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = 0.01
        while True:
            try:
                await self._setup_once()
                return
            except StoreError as exc:
                cause = exc.__cause__
                locked = isinstance(cause, sqlite3.OperationalError) and _locked_error(cause)
                if not locked or loop.time() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _setup_once(self) -> None:
        if not self.path.parent.exists():
            try:  # as a JSONStore does: the missing folders, owner-only
                make_folders(self.path.parent)
            except OSError as exc:
                raise StoreError(f"cannot create folder {self.path.parent} for {self.path}: {exc.strerror}") from exc
        if not self.path.parent.is_dir():
            raise StoreError(f"cannot open {self.path}: {self.path.parent} is not a folder")
        if self.path.is_symlink():
            raise StoreError(
                f"{self.path} is a symbolic link; nb_sessions opens a database only at its real "
                f"path (never creating or writing through a link): open {os.path.realpath(self.path)} "
                "itself, or remove the link"
            )
        if not self.path.exists():
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                os.close(os.open(self.path, flags, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create {self.path}: {exc.strerror}") from exc
        try:
            db = await aiosqlite.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            if await self._setup_read_only():
                return
            raise self._wrap(exc) from exc
        try:
            await db.execute(_UNTRUSTED_SCHEMA)
            await _check_schema(db, self.path)
            await _refuse_foreign(db, self.path)
            mode = await (await db.execute("PRAGMA journal_mode = WAL")).fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode}); use a local disk")
            async with db.execute(
                "SELECT max(version) FROM nbs_migrations"
                if await _table_exists(db, "nbs_migrations")
                else "SELECT 0"
            ) as cursor:
                row = await cursor.fetchone()
            found = int(row[0] or 0) if row else 0
            if found > latest_version():
                raise StoreError(
                    f"{self.path} has schema version {found}, newer than this nb_sessions "
                    f"understands ({latest_version()}); upgrade nb_sessions to open it"
                )
            await apply_migrations(db)
            self._has_legacy = await _table_exists(db, LEGACY_TABLE)
            self._cipher = await _open_cipher(db, self._key, str(self.path))
        except sqlite3.OperationalError as exc:
            await db.close()
            if _read_only_error(exc) and await self._setup_read_only():
                return
            raise self._wrap(exc) from exc
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            await db.close()
            raise self._wrap(exc) from exc
        except BaseException:
            await db.close()
            raise
        try:
            self._uid = await _store_uid(db, self.path)
        except BaseException:
            await db.close()
            raise
        await db.close()
        self._file_id = self._identity()
        self._ready = True

    async def _setup_read_only(self) -> bool:
        """Open a store we may not write (a read-only file, folder or disk) for reading only."""
        for immutable in (False, True):
            self._readonly, self._immutable = True, immutable
            try:
                async with aiosqlite.connect(self._uri(), uri=True, isolation_level=None) as db:
                    await db.execute(_UNTRUSTED_SCHEMA)
                    async with db.execute("SELECT max(version) FROM nbs_migrations") as cur:
                        row = await cur.fetchone()
                    version = int(row[0] or 0) if row else 0
                    self._has_legacy = await _table_exists(db, LEGACY_TABLE)
                    self._uid = await _store_uid(db, self.path)
            except (sqlite3.Error, UnicodeDecodeError):
                continue
            if version != latest_version():
                raise StoreError(
                    f"{self.path} is read-only and has schema version {version}, not "
                    f"{latest_version()}: make it writable once so nb_sessions can upgrade it"
                )
            self._file_id = self._identity()
            self._ready = True
            return True
        self._readonly = self._immutable = False
        return False

    def _wrap(self, exc: sqlite3.Error | UnicodeDecodeError) -> StoreError:
        if isinstance(exc, UnicodeDecodeError):
            # Python's sqlite3 decodes SQLite's messages and names as UTF-8: a damaged schema
            # or row (a flipped byte) reaches us as this rather than as a sqlite3 error.
            return StoreCorruptedError(
                f"{self.path} holds bytes that are not UTF-8 where SQLite keeps text ({exc.reason} at byte "
                f"{exc.start}): the file is damaged; restore it from a backup, or open a different file",
                location=str(self.path),
            )
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return StoreCorruptedError(
                f"{self.path} is not a readable SQLite database ({text}); restore it from a "
                "backup, or open a different file",
                location=str(self.path),
            )
        if _locked_error(exc):
            return StoreError(
                f"{self.path} is locked by another process ({text}) and stayed so past the "
                f"{self.timeout:.0f}s this store waits; retry, or raise SQLiteStore(timeout=...)"
            )
        if "readonly" in text or "read-only" in text:
            return StoreError(f"{self.path} is read-only ({text}); earlier checkpoints stay readable")
        if "disk is full" in text or "full" in text:
            return StoreError(f"{self.path}: the disk is full ({text}); free space and save again")
        if "disk I/O error" in text:
            return StoreError(
                f"{self.path}: disk I/O error: the disk may be full, over a quota or failing; "
                "free space and save again (earlier checkpoints are intact)"
            )
        return StoreError(f"{self.path}: {text}")

    # -- primitives ------------------------------------------------------------

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
        if not self._ready:
            await self._setup()  # an encrypted store's keyed hash plans the entries
        skeleton, chunks = split(states)
        skeleton_data = codec.dumps(skeleton)
        meta_text = codec.dumps(metadata)  # bytes: SQLite's text cannot hold a lone surrogate
        modules = tuple(states)
        while True:  # twice at most: a new cache is never stale
            cache = self._caches.get(key, self._cipher.mac if self._cipher is not None else None)
            plans, remembered = cache.plan(chunks)
            size = len(skeleton_data) + sum(plan.size for plan in plans)
            now = utcnow() if at is None else at.created_at
            async with self._connect() as db:
                await self._begin(db)
                try:
                    if not cache.fresh(await _gc_generation(db, self.path)):
                        # Another writer collected garbage: cached segment ids may be gone.
                        await _rollback(db)
                        self._caches.drop(key)
                        continue
                    payloads = await store_plans(_SQLiteRows(db, self._cipher), plans, cache.entry_ids)
                    sid, seq = await self._allocate(db, key, now)
                    if at is not None:  # an exact copy: its source's seq and parent, as they are
                        seq, parent = at.seq_after(key, seq, str(self.path)), at.parent
                    else:
                        parent = await self._choose_parent(db, key, sid, seq, parent)
                    refs = chunk_rows(plans, payloads)
                    stored_state, stored_meta = skeleton_data, meta_text
                    if self._cipher is not None:  # bound to this checkpoint and its entries, in order
                        stored_state, stored_meta = seal_checkpoint(
                            self._cipher, key, seq, now.isoformat(), skeleton_data, meta_text,
                            [h for plan in plans for seg in plan.segments for h in seg.hashes],
                        )
                    row = (seq, parent, now.isoformat(), label, stored_meta, codec.dumps(list(modules)).decode(),
                           size, stored_state, codec.dumps(refs).decode() if refs else None)
                    row_id = await _next_row_id(db, self.path)
                    try:
                        await db.execute(
                            "INSERT INTO nbs_checkpoints (id, session, seq, parent, created_at, label, metadata, "
                            "modules, size, state, chunks, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (row_id, sid, *row, row_hash(key, *row)),
                        )
                    except sqlite3.IntegrityError as exc:
                        raise ConflictError(
                            f"label {label!r} already names another checkpoint of {key}; choose another "
                            f"label, or move it first with store.label(ref, None)"
                        ) from exc
                    await db.execute(
                        "UPDATE nbs_sessions SET next_seq = ?, updated_at = ? WHERE id = ?",
                        (seq + 1, now.isoformat(), sid),
                    )
                    if self._cipher is not None:
                        await _reseal_manifest(db, self._cipher, key, sid, str(self.path), new=seq)
                    # Inside the try: a COMMIT that fails (disk full) must also drop the cache, which
                    # store_plans filled with the ids of rows that are now rolled back.
                    await _commit(db)
                except BaseException:
                    await _rollback(db)
                    self._caches.drop(key)
                    raise
            cache.remember(plans, payloads, remembered)
            break
        self._parents[key] = seq
        return Checkpoint(
            session_id=key.session_id, user_id=key.user_id, seq=seq, created_at=now,
            modules=modules, size=size, parent=parent, label=label,
            metadata=metadata, store=self,
        )

    async def _choose_parent(
        self, db: aiosqlite.Connection, key: SessionKey, sid: int, seq: int, parent: int | None
    ) -> int | None:
        if parent is not None:
            async with db.execute(
                "SELECT 1 FROM nbs_checkpoints WHERE session = ? AND seq = ?", (sid, parent)
            ) as cur:
                if await cur.fetchone() is not None:
                    return parent
        async with db.execute("SELECT max(seq) FROM nbs_checkpoints WHERE session = ?", (sid,)) as cur:
            row = await cur.fetchone()
        if row and row[0] is not None:
            return int(row[0])
        return 1 if seq == 2 and await self._legacy_row(db, key) else None

    async def _begin(self, db: aiosqlite.Connection) -> None:
        """BEGIN IMMEDIATE, waiting up to ``timeout`` for other writers in short polls.

        SQLite's own busy wait would block the connection's thread for the whole
        timeout; polling from here lets a cancelled save stop waiting at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        delay = 0.005
        while True:
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            try:
                # No other writer can plant a trigger between this check and our writes.
                await _check_schema(db, self.path)
            except BaseException:
                await _rollback(db)
                raise
            return

    async def _allocate(
        self, db: aiosqlite.Connection, key: SessionKey, now: datetime
    ) -> tuple[int, int]:
        async with db.execute(
            "SELECT id, next_seq, hash FROM nbs_sessions WHERE user_id = ? AND session_id = ?", key
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            sid, next_seq, stored = row
            where = f"nbs_sessions row of session {key} in {self.path}"
            if type(sid) is not int or type(next_seq) is not int or next_seq < 1:
                raise StoreCorruptedError(
                    f"{where} holds next_seq={next_seq!r}, not a checkpoint number; nothing was saved. "
                    "Set it to one more than the session's highest seq, or copy the session to a new store",
                    location=where,
                )
            if not self._session_row_ok(sid, stored, key, await _meta(db, _SESSIONS_UPTO, self.path) or 0):
                raise StoreCorruptedError(
                    f"{where} does not match its hash: its ids were edited by hand or damaged, so it is not "
                    "the session it names; nothing was saved. Restore the database from a backup",
                    location=where,
                )
            return sid, next_seq
        first = 2 if await self._legacy_row(db, key) else 1
        sid = await _next_row_id(db, self.path, "nbs_sessions", _SESSIONS_UPTO)
        await db.execute(
            "INSERT INTO nbs_sessions (id, user_id, session_id, created_at, updated_at, next_seq, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sid, *key, now.isoformat(), now.isoformat(), first, key_hash(key)),
        )
        return sid, first

    @staticmethod
    def _session_row_ok(row_id: Any, stored: Any, key: SessionKey, upto: int) -> bool:
        """True if an nbs_sessions row's hash fits its ids (or it was written before row hashes)."""
        if stored is None and _is_int(row_id) and row_id <= upto:
            return True
        return bool(stored == key_hash(key))

    async def _legacy_row(self, db: aiosqlite.Connection, key: SessionKey) -> tuple[Any, ...] | None:
        if not self._has_legacy or key.user_id:
            return None
        async with db.execute(
            f"SELECT session_data, created_at, updated_at FROM {LEGACY_TABLE} WHERE session_id = ?",
            (key.session_id,),
        ) as cur:
            row = await cur.fetchone()
        return tuple(row) if row is not None else None

    async def _read(self, cp: Checkpoint) -> dict[str, Any]:
        where = f"checkpoint {cp.ref} in {self.path}"
        lists: list[tuple[tuple[str | int, ...], list[Any]]] = []
        if cp.origin == LEGACY_TABLE:
            async with self._connect() as db:
                row = await self._legacy_row(db, cp.key)
            data = row[0] if row else None
            where = f"{LEGACY_TABLE} row {cp.session_id!r} in {self.path}"
        else:
            await self._check_open()
            data, lists = await asyncio.to_thread(self._read_snapshot, cp, where)
        if data is None:
            raise CheckpointNotFoundError(
                f"checkpoint {cp.ref} is no longer in {self.path} (deleted meanwhile?)", ref=cp.ref
            )
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        if not isinstance(data, bytes):
            raise StoreCorruptedError(f"{where} holds a {type(data).__name__}, not JSON", location=where)
        state = codec.loads(data, where, trusted=cp.origin != LEGACY_TABLE)
        if not isinstance(state, dict):
            raise StoreCorruptedError(
                f"{where} holds {type(state).__name__} JSON, not an object of module states; "
                "delete that checkpoint",
                location=where,
            )
        try:
            return assemble(state, lists) if lists else state
        except (KeyError, IndexError, TypeError) as exc:
            raise StoreCorruptedError(
                f"{where}: a stored list does not fit its place ({exc}); delete that checkpoint",
                location=where,
            ) from None

    def _read_snapshot(
        self, cp: Checkpoint, where: str
    ) -> tuple[Any, list[tuple[tuple[str | int, ...], list[Any]]]]:
        """A checkpoint's skeleton and long lists, all read in one transaction (a worker thread).

        One connection, one ``BEGIN`` .. ``COMMIT``: every piece comes from the same
        snapshot, so a checkpoint deleted (and its rows reused) by another process
        meanwhile is either read whole or not found, never mixed with another.
        The row must also be the checkpoint ``cp`` names (same creation time): a
        session deleted and saved anew numbers its checkpoints from 1 again.
        """
        try:
            conn = sqlite3.connect(
                self._uri(), uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc
        try:
            conn.execute(_UNTRUSTED_SCHEMA)
            conn.execute("BEGIN")
            row = conn.execute(_STORE_UID_SQL).fetchone()
            if _meta_int(row, "store_uid", self.path) != self._uid:
                raise self._gone()
            found = conn.execute(_ROW_SQL, (*cp.key, cp.seq)).fetchone()
            if found is None or (cp.created_at != _EPOCH and found[4] != cp.created_at.isoformat()):
                return None, []
            row_id, stored, *fields = found
            if stored is not None or row_id > (_meta_int(conn.execute(_UPTO_SQL).fetchone(), _UPTO, self.path) or 0):
                verify_row(stored, cp.key, *fields, where=where, location=str(self.path))
            state, chunks = fields[-2:]
            hashes: list[bytes] | None = [] if self._cipher is not None else None
            lists = self._read_chunks(conn, chunks, where, hashes) if chunks else []
            if self._cipher is not None and hashes is not None:
                state = open_checkpoint(self._cipher, cp.key, cp.seq, fields[2], state, hashes, where, str(self.path))
            conn.execute("COMMIT")
            return state, lists
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._wrap(exc) from exc
        except UnicodeEncodeError:
            return None, []  # an id no SQLite row can hold (a lone surrogate): not stored here
        finally:
            conn.close()

    def _read_chunks(
        self, conn: sqlite3.Connection, chunks_text: Any, where: str, hashes: list[bytes] | None = None
    ) -> list[tuple[tuple[str | int, ...], list[Any]]]:
        """Load the long lists of a checkpoint from their segments and entries (adding their hashes to ``hashes``)."""
        try:
            return self._read_chunks_unchecked(conn, chunks_text, where, hashes)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            # Garbage where our own rows should be: this checkpoint is damaged, the others are not.
            raise StoreCorruptedError(
                f"{where}: its list references are damaged ({type(exc).__name__}: {exc}); "
                "delete that checkpoint, the others are intact",
                location=where,
            ) from None

    def _read_chunks_unchecked(
        self, conn: sqlite3.Connection, chunks_text: Any, where: str, hashes: list[bytes] | None = None
    ) -> list[tuple[tuple[str | int, ...], list[Any]]]:
        rows = codec.loads(chunks_text, where)
        out: list[tuple[tuple[str | int, ...], list[Any]]] = []
        for path, seg_ids in rows:
            segs: dict[int, tuple[Any, Any]] = {}
            for sql, params in _id_queries("nbs_segments", "blobs, hash", seg_ids):
                segs.update((i, (packed, h)) for i, packed, h in conn.execute(sql, params))
            blob_ids: list[int] = []
            for seg_id in seg_ids:
                packed, seg_hash = segs.get(seg_id, (None, None))
                if packed is None:
                    raise StoreCorruptedError(
                        f"{where}: segment {seg_id} of {path_text(tuple(path))} is missing; delete "
                        "that checkpoint, the others are intact",
                        location=where,
                    )
                # Entry ids that point elsewhere, or are no ids at all, are a named error.
                blob_ids.extend(segment_ids(packed, seg_id, list_where(where, path), where, seg_hash))
            label = f"{where} ({path_text(tuple(path))})"
            fetch_piece = _fetch_array
            if self._cipher is not None and hashes is not None:
                fetch_piece = functools.partial(_fetch_sealed, cipher=self._cipher, location=str(self.path), hashes=hashes)
            out.append((tuple(path), self._read_entries(conn, blob_ids, label, where, path, fetch_piece)))
        return out

    def _read_entries(
        self,
        conn: sqlite3.Connection,
        ids: list[int],
        label: str,
        where: str,
        path: Any,
        fetcher_of: Callable[[sqlite3.Connection, list[int], str, Any], tuple[bytes, bool]] | None = None,
    ) -> list[Any]:
        """Fetch and decode the entries ``ids``, in order, within ``conn``'s open transaction.

        A second thread fetches piece k+1 on ``conn`` (so from the same snapshot)
        while this one decodes piece k: SQLite reads and concatenates without the
        GIL, and this thread never touches ``conn`` until the fetcher has ended.
        """
        fetch_piece = fetcher_of or _fetch_array  # an encrypted store's opens each entry (in this order)
        pieces = [ids[start:start + _PIECE] for start in range(0, len(ids), _PIECE)]
        if len(pieces) == 1:
            data, exact = fetch_piece(conn, pieces[0], where, path)
            return codec.loads(data, label, trusted=not exact)  # type: ignore[no-any-return]
        ready: queue.Queue[tuple[bytes, bool] | BaseException] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def fetch() -> None:
            try:
                for piece in pieces:
                    if stop.is_set():
                        return
                    ready.put(fetch_piece(conn, piece, where, path))
            except BaseException as exc:  # handed to the decoding thread, which raises it
                ready.put(exc)

        fetcher = threading.Thread(target=fetch, name="nb_sessions-read", daemon=True)
        fetcher.start()
        decoded: list[list[Any]] = []
        try:
            for _ in pieces:
                got = ready.get()
                if isinstance(got, BaseException):
                    raise got
                data, exact = got
                decoded.append(codec.loads(data, label, trusted=not exact))
        finally:
            stop.set()
            while fetcher.is_alive():  # after an error: unblock a fetcher waiting to put, then let it end
                with contextlib.suppress(queue.Empty):
                    ready.get_nowait()
                fetcher.join(0.01)
        return [x for piece in decoded for x in piece]

    async def _history(self, key: SessionKey) -> list[Checkpoint]:
        if not self._ready and not self.path.exists():
            raise self._not_found(key)  # reading must not create the file
        out: list[Checkpoint] = []
        async with self._connect() as db:
            legacy = await self._legacy_row(db, key)
            async with db.execute(
                f"SELECT {_ROW_COLUMNS} FROM nbs_checkpoints c JOIN nbs_sessions s ON c.session = s.id "
                "WHERE s.user_id = ? AND s.session_id = ? ORDER BY c.seq",
                key,
            ) as cur:
                rows = list(await cur.fetchall())
            upto = await _unhashed_upto(db, self.path)
            if self._cipher is not None and rows:
                sealed = await _sealed_manifest(db, await _session_id_of_row(db, rows[0][0]))
                check_rows(self._cipher, key, sealed, {(r[2], r[4]) for r in rows}, str(self.path))
        if legacy is not None:
            out.append(self._legacy_checkpoint(key, legacy))
        for row_id, stored, seq, parent, created, label, meta, modules, size in rows:
            where = f"checkpoint {key}@{seq} in {self.path}"
            if not _is_int(seq):  # the checkpoint's identity itself: nothing can stand in for it
                raise StoreCorruptedError(
                    f"session {key} in {self.path}: a row of nbs_checkpoints holds seq={seq!r}, not "
                    "the number nb_sessions wrote (edited by hand?); restore the database from a "
                    "backup, or delete that row with the sqlite3 shell",
                    location=str(self.path),
                )
            garbled = not (parent is None or _is_int(parent)) or not _is_int(size) or not (
                label is None or isinstance(label, str)
            )
            if not garbled and (stored is not None or row_id > upto):
                try:  # the facts only: reading the state (get_state, check) checks the rest
                    verify_facts(stored, key, seq, parent, created, label, meta, modules, size,
                                 where=where, location=str(self.path))
                except StoreCorruptedError:
                    garbled = True  # its read raises the named error; nothing of the edit is shown
            if not garbled and self._cipher is not None:
                try:
                    meta = open_metadata(self._cipher, key, seq, created, meta, where, str(self.path))
                except StoreCorruptedError:
                    garbled = True
            if garbled:  # this checkpoint only: `check` reports it, the others read as usual
                parent, size, label, meta = None, 0, None, None
            try:
                metadata = codec.loads(meta, where)
                names = tuple(codec.loads(modules, where))
                created_at = datetime.fromisoformat(created)
            except (StoreCorruptedError, TypeError, ValueError):
                metadata, names, created_at = {"corrupted": True}, (), _EPOCH
            out.append(Checkpoint(
                session_id=key.session_id, user_id=key.user_id, seq=seq, created_at=created_at,
                modules=names, size=size, parent=parent, label=label,
                metadata=metadata if isinstance(metadata, dict) else {"corrupted": True},
                store=self,
            ))
        if not out:
            raise self._not_found(key)
        return out

    def _legacy_checkpoint(self, key: SessionKey, row: tuple[Any, ...]) -> Checkpoint:
        data, created, updated = row
        size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data or b"")
        modules: tuple[str, ...] = ()
        with contextlib.suppress(Exception):
            parsed = codec.loads(data)
            if isinstance(parsed, dict):
                modules = tuple(parsed)
        return Checkpoint(
            session_id=key.session_id, user_id="", seq=1,
            created_at=_parse_time(updated) or _parse_time(created) or _EPOCH,
            modules=modules, size=size, store=self, origin=LEGACY_TABLE,
        )

    async def _sessions(self) -> list[SessionInfo]:
        if not self._ready and not self.path.exists():
            return []  # reading must not create the file
        async with self._connect() as db:
            async with db.execute(
                # Labels in checkpoint order: group_concat keeps the order of an ordered subquery
                # (which SQLite does not flatten into an aggregate), not of whichever index it scans.
                "SELECT s.user_id, s.session_id, count(c.id), max(c.seq), min(c.created_at), "
                "max(c.created_at), (SELECT group_concat(label, char(0)) FROM (SELECT label FROM "
                "nbs_checkpoints WHERE session = s.id AND label IS NOT NULL ORDER BY seq)), s.id, s.hash "
                "FROM nbs_sessions s JOIN nbs_checkpoints c ON c.session = s.id GROUP BY s.id"
            ) as cur:
                rows = await cur.fetchall()
            upto = await _meta(db, _SESSIONS_UPTO, self.path) or 0
            legacy: list[tuple[Any, ...]] = []
            if self._has_legacy:
                async with db.execute(
                    f"SELECT session_id, created_at, updated_at FROM {LEGACY_TABLE}"
                ) as cur:
                    legacy = [tuple(r) for r in await cur.fetchall()]
        infos: dict[SessionKey, SessionInfo] = {}
        for uid, sid, count, latest, first, last, labels, row_id, stored in rows:
            try:
                validate_id(uid, "user id", literal=True)
                validate_id(sid, literal=True)
                if not self._session_row_ok(row_id, stored, SessionKey(uid, sid), upto):
                    raise InvalidIdError(f"its ids {uid!r}, {sid!r} do not match its hash (edited or damaged)")
            except InvalidIdError as exc:
                # Not an id the API would have written: never listed as a session (its rows
                # stay as they are; `check` and the sqlite3 shell can look at them).
                warnings.warn(
                    f"nb_sessions: {self.path}: nbs_sessions holds a row that is no session ({exc}); "
                    "it is not listed",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            if not _is_int(latest):
                raise StoreCorruptedError(
                    f"session {SessionKey(uid, sid)} in {self.path}: a row of nbs_checkpoints holds "
                    f"seq={latest!r}, not the number nb_sessions wrote (edited by hand?); restore the "
                    "database from a backup, or delete that row with the sqlite3 shell",
                    location=str(self.path),
                )
            infos[SessionKey(uid, sid)] = SessionInfo(
                session_id=sid, user_id=uid, checkpoints=count, latest_seq=latest,
                created_at=_parse_time(first) or _EPOCH, updated_at=_parse_time(last) or _EPOCH,
                labels=tuple(labels.split("\0")) if labels else (),
            )
        for sid, created, updated in legacy:
            key = SessionKey("", str(sid))
            when = _parse_time(updated) or _parse_time(created) or _EPOCH
            if key in infos:
                info = infos[key]
                infos[key] = SessionInfo(
                    session_id=info.session_id, user_id="", checkpoints=info.checkpoints + 1,
                    latest_seq=info.latest_seq, created_at=min(info.created_at, when),
                    updated_at=info.updated_at, labels=info.labels,
                )
            else:
                infos[key] = SessionInfo(
                    session_id=str(sid), user_id="", checkpoints=1, latest_seq=1,
                    created_at=_parse_time(created) or when, updated_at=when,
                )
        return list(infos.values())

    async def _delete(self, key: SessionKey, seqs: Sequence[int] | None) -> int:
        async with self._connect() as db:
            if await self._legacy_row(db, key) is not None and (seqs is None or 1 in seqs):
                raise ConflictError(
                    f"{key}@1 is a row of AgentScope's {LEGACY_TABLE} table, which nb_sessions "
                    "never modifies; delete that row with your own app, or fork the session"
                )
            await self._begin(db)
            try:
                async with db.execute(
                    "SELECT id FROM nbs_sessions WHERE user_id = ? AND session_id = ?", key
                ) as cur:
                    row = await cur.fetchone()
                if row is None:
                    await db.execute("ROLLBACK")
                    return 0
                sid = row[0]
                if seqs is None:
                    cur = await db.execute("DELETE FROM nbs_checkpoints WHERE session = ?", (sid,))
                else:
                    marks = ",".join("?" * len(seqs))
                    cur = await db.execute(
                        f"DELETE FROM nbs_checkpoints WHERE session = ? AND seq IN ({marks})",
                        (sid, *seqs),
                    )
                count = cur.rowcount
                async with db.execute(
                    "SELECT count(*) FROM nbs_checkpoints WHERE session = ?", (sid,)
                ) as cur2:
                    left = (await cur2.fetchone() or (0,))[0]
                if left == 0:
                    await db.execute("DELETE FROM nbs_sessions WHERE id = ?", (sid,))
                if self._cipher is not None:
                    await _reseal_manifest(db, self._cipher, key, sid, str(self.path), gone=seqs, empty=left == 0)
                if count:
                    await _collect_garbage(db, self.path)
            except BaseException:
                await _rollback(db)
                raise
            await _commit(db)
        return int(count)

    async def _set_label(self, key: SessionKey, seq: int, label: str | None) -> None:
        async with self._connect() as db:
            if seq == 1 and await self._legacy_row(db, key) is not None:
                raise ConflictError(
                    f"{key}@1 lives in AgentScope's {LEGACY_TABLE} table and cannot be labelled; "
                    f"fork it into an nb_sessions session first"
                )
            await self._begin(db)
            try:
                async with db.execute(_ROW_SQL, (*key, seq)) as cur:
                    row = await cur.fetchone()
                if row is not None:
                    row_id, stored, *facts = row[:-2]  # not the content: its half of the hash stays
                    if stored is not None or row_id > await _unhashed_upto(db, self.path):
                        # The label is hashed with the row: checked first, so damage is never re-sealed.
                        stored = relabelled(stored, key, *facts, new_label=label,
                                            where=f"checkpoint {key}@{seq} in {self.path}", location=str(self.path))
                    await db.execute(
                        "UPDATE nbs_checkpoints SET label = ?, hash = ? WHERE id = ?", (label, stored, row_id)
                    )
            except sqlite3.IntegrityError as exc:
                await _rollback(db)
                raise ConflictError(
                    f"label {label!r} already names another checkpoint of {key}; remove it there "
                    "first with store.label(ref, None)"
                ) from exc
            except BaseException:
                await _rollback(db)
                raise
            await _commit(db)

    # -- rows written before row hashes ----------------------------------------

    def unhashed(self) -> dict[SessionKey, list[int]]:
        """The checkpoints written before row hashes existed (schema 4 and older), by session.

        They load as before, but a hand edit of their row is not caught;
        :meth:`hash_unhashed` protects them. ``nb-sessions check`` counts them.
        """
        return run_sync(self._unhashed())

    async def _unhashed(self) -> dict[SessionKey, list[int]]:
        if not self._ready and not self.path.exists():
            return {}  # reading must not create the file
        async with self._connect() as db:
            upto = await _unhashed_upto(db, self.path)
            async with db.execute(
                "SELECT s.user_id, s.session_id, c.seq FROM nbs_checkpoints c JOIN nbs_sessions s "
                "ON c.session = s.id WHERE c.hash IS NULL AND c.id <= ? ORDER BY s.user_id, s.session_id, c.seq",
                (upto,),
            ) as cur:
                rows = await cur.fetchall()
        out: dict[SessionKey, list[int]] = {}
        for uid, sid, seq in rows:
            if _is_int(seq):  # a garbled number is history's named error already
                out.setdefault(SessionKey(uid, sid), []).append(seq)
        return out

    def hash_unhashed(self) -> int:
        """Give each checkpoint written before row hashes its hash, once it reads back whole; return how many.

        A checkpoint that does not read back raises its error and stays as it is.
        The rows of the sessions (their ids) get theirs too.
        """
        return run_sync(self._hash_unhashed())

    async def _hash_unhashed(self) -> int:
        done = 0
        for key, seqs in (await self._unhashed()).items():
            for seq in seqs:
                await self.aget_state(Ref(key, seq=seq))  # skeleton and every entry decoded and checked
                async with self._connect() as db:
                    await self._begin(db)
                    try:
                        async with db.execute(_ROW_SQL, (*key, seq)) as cur:
                            row = await cur.fetchone()
                        if row is not None and row[1] is None:
                            row_id, _, *fields = row
                            await db.execute(
                                "UPDATE nbs_checkpoints SET hash = ? WHERE id = ?", (row_hash(key, *fields), row_id)
                            )
                            done += 1
                    except BaseException:
                        await _rollback(db)
                        raise
                    await _commit(db)
        async with self._connect() as db:  # and the rows of the sessions themselves
            await self._begin(db)
            try:
                async with db.execute(
                    "SELECT id, user_id, session_id FROM nbs_sessions WHERE hash IS NULL AND id <= ?",
                    (await _meta(db, _SESSIONS_UPTO, self.path) or 0,),
                ) as cur:
                    rows = list(await cur.fetchall())
                for row_id, uid, sid in rows:
                    with contextlib.suppress(InvalidIdError):  # not a session: never listed, never sealed
                        key = SessionKey(validate_id(uid, "user id", literal=True), validate_id(sid, literal=True))
                        await db.execute("UPDATE nbs_sessions SET hash = ? WHERE id = ?", (key_hash(key), row_id))
            except BaseException:
                await _rollback(db)
                raise
            await _commit(db)
        return done

    @property
    def encrypted(self) -> bool:
        """Whether this store is encrypted at rest (opens the store; an absent file is not)."""
        if not self._ready and not self.path.exists():
            return self._key is not None
        run_sync(self._check_open())
        return self._cipher is not None

    def rekey(self, new_key: KeySource) -> None:
        """Re-wrap the data key of this encrypted store with ``new_key`` (one atomic write of the header).

        The entries are not re-encrypted: only the wrapped data key changes, in one
        SQLite transaction, so an interruption leaves the store opening with the old
        key or the new one, never neither. Other processes must reopen with the new key.
        """
        run_sync(self._rekey(resolve_key(new_key)))

    async def _rekey(self, material: bytes | str) -> None:
        async with self._connect() as db:
            if self._cipher is None:
                raise not_encrypted(str(self.path))
            new = self._cipher.rewrap(material)
            await self._begin(db)
            try:
                await db.execute("UPDATE nbs_meta SET value = ? WHERE key = ?", (new.header, HEADER_KEY))
            except BaseException:
                await _rollback(db)
                raise
            await _commit(db)
            self._cipher, self._key = new, material

    async def _search(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """Entries through the FTS index (or a scan for queries under 3 characters), skeletons by scanning."""
        from ..search import (  # search builds on views, which import the stores
            Hit,
            scan_state,
            unless_unreadable,
        )

        if self._cipher is not None:
            return await self._search_decrypted(text, keys)
        hits: list[Hit] = []
        async with self._connect() as db:
            found = await self._matching_entries(db, text)
            segment_cache: dict[int, array[int]] = {}
            for key in keys:
                legacy = await self._legacy_row(db, key)
                if legacy is not None:
                    with unless_unreadable(f"{key}@1"):
                        state = codec.loads(legacy[0])
                        if isinstance(state, dict):
                            hits += [Hit(key.session_id, "", 1, p, m) for p, m in scan_state(state, text)]
                async with db.execute(
                    "SELECT c.seq, c.state, c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s "
                    "ON c.session = s.id WHERE s.user_id = ? AND s.session_id = ? ORDER BY c.seq",
                    key,
                ) as cur:
                    rows = await cur.fetchall()
                for seq, skeleton, chunks in rows:
                    with unless_unreadable(f"{key}@{seq}"):
                        state = codec.loads(skeleton)
                        if isinstance(state, dict):
                            hits += [Hit(key.session_id, key.user_id, seq, p, m) for p, m in scan_state(state, text)]
                    if not chunks or not found:
                        continue
                    for path, seg_ids in chunk_refs(chunks, f"checkpoint {key}@{seq} in {self.path}"):
                        missing = [i for i in seg_ids if i not in segment_cache]
                        if missing:
                            fetched = await _fetch_by_ids(db, "nbs_segments", "blobs", missing)
                            segment_cache.update(
                                {i: segment_ids(b, i, str(self.path), str(self.path)) for i, b in fetched.items()}
                            )
                        where = path_text(conversation_path(path))
                        for seg_id in seg_ids:
                            for blob_id in segment_cache.get(seg_id, ()):
                                msg = found.get(blob_id)
                                if msg is not None:
                                    hits.append(Hit(key.session_id, key.user_id, seq, where, msg))
        return hits

    async def _search_decrypted(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """An encrypted store: skeletons opened per checkpoint, each distinct entry opened and matched once.

        Nothing is written (an index would hold plaintext); only the matching
        messages are kept in memory, by entry id, for every checkpoint using them.
        """
        histories = [(key, await self._history(key)) for key in keys]  # each checked against its manifest
        await self._check_open()
        return await asyncio.to_thread(self._search_sealed, text, histories)

    def _search_sealed(self, text: str, histories: list[tuple[SessionKey, list[Checkpoint]]]) -> list[Hit]:
        from ..search import (
            Hit,
            entry_message,
            matches,
            scan_state,
            searchable_text,
            unless_unreadable,
        )

        cipher = self._cipher
        assert cipher is not None
        location = str(self.path)
        hits: list[Hit] = []
        entry_ids: dict[int, list[int]] = {}  # segment id -> its entry ids
        hash_of: dict[int, bytes] = {}  # entry id -> its keyed hash (the associated data it opens with)
        matched: dict[int, Mapping[str, Any] | None] = {}  # entry id -> its message, when it matches
        try:
            conn = sqlite3.connect(self._uri(), uri=True, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._wrap(exc) from exc
        try:
            conn.execute(_UNTRUSTED_SCHEMA)
            conn.execute("BEGIN")  # one snapshot for the whole search
            upto = _meta_int(conn.execute(_UPTO_SQL).fetchone(), _UPTO, self.path) or 0
            for key, history in histories:
                for cp in history:
                    where = f"checkpoint {cp.ref} in {self.path}"
                    with unless_unreadable(cp.ref):
                        found = conn.execute(_ROW_SQL, (*cp.key, cp.seq)).fetchone()
                        if found is None:
                            continue  # deleted since the history was read
                        row_id, stored, *fields = found
                        if stored is not None or row_id > upto:
                            verify_row(stored, cp.key, *fields, where=where, location=location)
                        state, chunks = fields[-2:]
                        lists: list[tuple[str, list[int]]] = []
                        for path, seg_ids in chunk_refs(chunks, where) if chunks else ():
                            missing = [i for i in seg_ids if i not in entry_ids]
                            for sql, params in _id_queries("nbs_segments", "blobs, hash", missing):
                                for i, packed, h in conn.execute(sql, params):
                                    entry_ids[i] = list(segment_ids(packed, i, list_where(where, path), where, h))
                            ids: list[int] = []
                            for seg_id in seg_ids:
                                if seg_id not in entry_ids:
                                    raise StoreCorruptedError(
                                        f"{where}: segment {seg_id} of {path_text(tuple(path))} is missing; "
                                        "delete that checkpoint, the others are intact",
                                        location=where,
                                    )
                                ids += entry_ids[seg_id]
                            lists.append((path_text(conversation_path(path)), ids))
                        every = [i for _, ids in lists for i in ids]
                        for sql, params in _id_queries("nbs_blobs", "hash", [i for i in every if i not in hash_of]):
                            hash_of.update((i, h if isinstance(h, bytes) else b"") for i, h in conn.execute(sql, params))
                        if any(i not in hash_of for i in every):
                            gone = next(i for i in every if i not in hash_of)
                            raise StoreCorruptedError(
                                f"{where}: entry {gone} is missing; delete that checkpoint, the others are intact",
                                location=location,
                            )
                        skeleton = codec.loads(
                            open_checkpoint(cipher, cp.key, cp.seq, fields[2], state, [hash_of[i] for i in every],
                                            where, location),
                            where,
                        )
                        if isinstance(skeleton, dict):
                            hits += [Hit(key.session_id, key.user_id, cp.seq, p, m) for p, m in scan_state(skeleton, text)]
                        new = [i for i in every if i not in matched]
                        for sql, params in _id_queries("nbs_blobs", "data", new):
                            for i, data in conn.execute(sql, params):
                                plain = cipher.open(data, hash_of[i], f"{where} entry {i}", location)
                                msg = entry_message(codec.loads(plain, f"{where} entry {i}"))
                                matched[i] = msg if msg is not None and matches(searchable_text(msg), text) else None
                        for place, ids in lists:
                            hits += [
                                Hit(key.session_id, key.user_id, cp.seq, place, msg)
                                for msg in (matched.get(i) for i in ids) if msg is not None
                            ]
            conn.execute("COMMIT")
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._wrap(exc) from exc
        finally:
            conn.close()
        return hits

    async def _matching_entries(self, db: aiosqlite.Connection, text: str) -> dict[int, Mapping[str, Any]]:
        """Blob id -> message for the stored entries whose searchable text contains ``text``."""
        from ..search import entry_message, matches, searchable_text, unless_unreadable

        if len(text) >= 3:
            await self._update_index(db)
            phrase = '"' + _sqlite_text(text).replace('"', '""') + '"'
            async with db.execute(
                "SELECT b.id, b.data FROM nbs_fts f JOIN nbs_blobs b ON b.id = f.rowid "
                "WHERE nbs_fts MATCH ?",
                (phrase,),
            ) as cur:
                rows = await cur.fetchall()
        else:
            # Too short for trigrams: a scan, narrowed by SQL first and confirmed below.
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            # A lone surrogate is stored as its 3 raw bytes, one character to LIKE: '_' matches it.
            pattern = "%" + "".join("_" if "\ud800" <= c <= "\udfff" else c for c in escaped) + "%"
            async with db.execute(
                "SELECT id, data FROM nbs_blobs WHERE CAST(data AS TEXT) LIKE ? ESCAPE '\\'", (pattern,)
            ) as cur:
                rows = await cur.fetchall()
        found: dict[int, Mapping[str, Any]] = {}
        for blob_id, data in rows:
            with unless_unreadable(f"stored entry {blob_id} (nbs_blobs)"):
                msg = entry_message(codec.loads(data))
                if msg is not None and matches(searchable_text(msg), text):
                    found[int(blob_id)] = msg
        return found

    async def _update_index(self, db: aiosqlite.Connection) -> None:
        """Index the entries stored since the last search (the index is built on first use)."""
        if self._cipher is not None:
            return  # an encrypted store's FTS index stays empty: it would hold plaintext
        upto = await _meta(db, "fts_indexed_upto", self.path) or 0
        async with db.execute("SELECT max(id) FROM nbs_blobs") as cur:
            top = (await cur.fetchone() or (None,))[0]
        if top is None or top <= upto:
            return
        await self._begin(db)
        try:
            upto = await _meta(db, "fts_indexed_upto", self.path) or 0  # another process may have done it
            async with db.execute("SELECT id, data FROM nbs_blobs WHERE id > ? ORDER BY id", (upto,)) as cur:
                rows = list(await cur.fetchall())
            texts = [(i, _sqlite_text(t)) for i, t in ((i, _index_text(d)) for i, d in rows) if t]
            await db.executemany("INSERT INTO nbs_fts (rowid, text) VALUES (?, ?)", texts)
            if rows:
                await db.execute(
                    "UPDATE nbs_meta SET value = ? WHERE key = 'fts_indexed_upto'", (rows[-1][0],)
                )
        except BaseException:
            await _rollback(db)
            raise
        await _commit(db)

    async def _vacuum(self) -> int:
        if not self._ready and not self.path.exists():
            return 0
        before = self._disk_size()
        async with self._connect() as db:
            for statement in ("PRAGMA wal_checkpoint(TRUNCATE)", "VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"):
                async with db.execute(statement) as cur:
                    await cur.fetchall()
        return max(0, before - self._disk_size())

    async def _disk_bytes(self) -> int:
        return self._disk_size()

    async def _space(self, key: SessionKey) -> SessionSpace:
        """Each checkpoint's row (split by module) and the segments and entries it uses, by row id."""
        history = await self._history(key)
        if not history or any(cp.origin == LEGACY_TABLE for cp in history):
            return await super()._space(key)
        await self._check_open()
        rows = await asyncio.to_thread(self._space_rows, key)
        by_seq = {cp.seq: cp for cp in history}
        return SessionSpace(
            key, [CheckpointSpace(by_seq[seq], own, pieces) for seq, own, pieces in rows if seq in by_seq]
        )

    def _space_rows(self, key: SessionKey) -> list[tuple[int, dict[str, int], dict[str, dict[str, int]]]]:
        conn = sqlite3.connect(self._uri(), uri=True, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")  # one snapshot for every row read
            found = conn.execute(
                "SELECT c.seq, c.state, c.chunks, length(c.metadata) + length(c.modules) FROM nbs_checkpoints c "
                "JOIN nbs_sessions s ON c.session = s.id WHERE s.user_id = ? AND s.session_id = ?",
                tuple(key),
            ).fetchall()
            chunks = {seq: codec.loads(text, f"checkpoint {key}@{seq}") if text else [] for seq, _, text, _ in found}
            seg_ids = [seg for rows in chunks.values() for _, segs in rows for seg in segs]
            segs: dict[int, bytes] = {}
            for sql, params in _id_queries("nbs_segments", "blobs", seg_ids):
                segs.update(conn.execute(sql, params).fetchall())
            blob_ids = [b for seg, packed in segs.items() for b in segment_ids(packed, seg, str(self.path), str(self.path))]
            blob_sizes: dict[int, int] = {}
            for sql, params in _id_queries("nbs_blobs", "length(data)", blob_ids):
                blob_sizes.update(conn.execute(sql, params).fetchall())
            conn.execute("COMMIT")
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise self._wrap(exc) from exc
        finally:
            conn.close()
        entries = {seg: segment_ids(packed, seg, str(self.path), str(self.path)) for seg, packed in segs.items()}
        sizes = {seg: len(packed) for seg, packed in segs.items()}
        return [
            (seq, module_bytes(state, extra, f"checkpoint {key}@{seq}"), list_pieces(chunks[seq], entries, sizes, blob_sizes))
            for seq, state, _, extra in found
        ]

    def _disk_size(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_BATCH = 500  # parameters per IN (...) query
_PIECE = 4096  # entries fetched and decoded at a time when reading a long list


class _SQLiteRows:
    """The SQL of :func:`._planned.store_plans` for SQLite."""

    def __init__(self, db: aiosqlite.Connection, cipher: Cipher | None = None) -> None:
        self.db = db
        self.cipher = cipher

    async def insert_entries(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        if self.cipher is not None:  # each entry sealed, bound to its keyed hash
            seal = self.cipher.seal
            rows = [(h, seal(data, h)) for h, data in rows]
        await self.db.executemany("INSERT OR IGNORE INTO nbs_blobs (hash, data) VALUES (?, ?)", rows)

    async def entry_ids(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        return await _ids_by_hash(self.db, "nbs_blobs", hashes)

    async def insert_segments(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        await self.db.executemany("INSERT OR IGNORE INTO nbs_segments (hash, blobs) VALUES (?, ?)", rows)

    async def segment_ids(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        return await _ids_by_hash(self.db, "nbs_segments", hashes)


_STORE_UID_SQL = "SELECT value FROM nbs_meta WHERE key = 'store_uid'"
# Rows up to this id were written before row hashes (migration 5); a later row must have one.
_UPTO = "unhashed_upto"
_UPTO_SQL = f"SELECT value FROM nbs_meta WHERE key = '{_UPTO}'"
_SESSIONS_UPTO = "unhashed_sessions_upto"
# A checkpoint row as stores/row_hash.py takes it (after id and hash): its facts, then its content.
_ROW_COLUMNS = "c.id, c.hash, c.seq, c.parent, c.created_at, c.label, c.metadata, c.modules, c.size"
_ROW_SQL = (
    f"SELECT {_ROW_COLUMNS}, c.state, c.chunks FROM nbs_checkpoints c JOIN nbs_sessions s ON c.session = s.id "
    "WHERE s.user_id = ? AND s.session_id = ? AND c.seq = ?"
)
# Functions with side effects and virtual tables stay out of triggers, views and indexes.
_UNTRUSTED_SCHEMA = "PRAGMA trusted_schema = OFF"


def _meta_int(row: Any, key: str, path: Path) -> int | None:
    """The integer an ``nbs_meta`` row holds (None for no row); anything else is a damaged store."""
    if row is None:
        return None
    value = row[0]
    if type(value) is not int:
        raise StoreCorruptedError(
            f"{path}: nbs_meta value {key!r} is {value!r}, not an integer; the store's own "
            "bookkeeping was edited: restore the file from a backup",
            location=f"{path} (nbs_meta {key})",
        )
    return value


async def _meta(db: aiosqlite.Connection, key: str, path: Path) -> int | None:
    async with db.execute("SELECT value FROM nbs_meta WHERE key = ?", (key,)) as cur:
        row = await cur.fetchone()
    return _meta_int(row, key, path)


async def _store_uid(db: aiosqlite.Connection, path: Path) -> int | None:
    return await _meta(db, "store_uid", path)


async def _unhashed_upto(db: aiosqlite.Connection, path: Path) -> int:
    """The last row id written before row hashes; a store missing the value checks every row."""
    return await _meta(db, _UPTO, path) or 0


async def _next_row_id(
    db: aiosqlite.Connection, path: Path, table: str = "nbs_checkpoints", upto: str = _UPTO
) -> int:
    """The id of a new row of ``table``: above every row, and above every row written before row hashes."""
    async with db.execute(f"SELECT max(id) FROM {table}") as cur:
        row = await cur.fetchone()
    top = max(row[0] if row and _is_int(row[0]) else 0, await _meta(db, upto, path) or 0)
    if top >= 2**63 - 1:
        raise StoreCorruptedError(
            f"{path}: a row of {table} has id {top}, the largest SQLite allows (edited by hand?); "
            "nothing was saved. Copy the sessions to a new store (nb-sessions copy)",
            location=f"{path} ({table})",
        )
    return top + 1


async def _gc_generation(db: aiosqlite.Connection, path: Path) -> int:
    return await _meta(db, "gc_generation", path) or 0


async def _check_schema(db: aiosqlite.Connection, path: Path) -> None:
    """Refuse triggers and views on nbs_* tables: the migrations create none.

    A trigger planted there would run on every save (rewriting what is stored);
    a view named like one of our tables would change what is read.
    """
    async with db.execute(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('trigger', 'view')"
    ) as cur:
        rows = await cur.fetchall()
    for kind, name, table in rows:
        if str(name).lower().startswith("nbs_") or str(table).lower().startswith("nbs_"):
            raise StoreCorruptedError(
                f"{path} holds a {kind} {name!r} on {table!r} that nb_sessions never creates: "
                f"someone edited the schema. Inspect it (sqlite3 {path} '.schema {name}'), drop it "
                f"(DROP {str(kind).upper()} \"{name}\") if you did not put it there, then open the store again",
                location=f"{path} ({kind} {name})",
            )




async def _refuse_foreign(db: aiosqlite.Connection, path: Path) -> None:
    """Refuse a database of another application: nb_sessions never adds its tables to it.

    A file with tables, none of them ``nbs_*`` and no AgentScope ``as_session``
    table, belongs to someone else (an AgentScope 2.x app's storage, say):
    migrating it would change another program's database behind its back.
    """
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    ) as cur:
        names = sorted(str(row[0]) for row in await cur.fetchall())
    if not names or LEGACY_TABLE in names or any(n.lower().startswith("nbs_") for n in names):
        return
    from .agentscope_sources import is_agentscope2_sqlite

    if is_agentscope2_sqlite(path):
        advice = (
            f"it is an AgentScope 2.x app database: open it read-only with "
            f"nbs.open_store('agentscope+sqlite:///{path}') (or open_store('{path}'), which does so), "
            "or copy its sessions out with nb-sessions copy"
        )
    else:
        advice = "choose a new file for the store"
    shown = ", ".join(names[:8]) + (" …" if len(names) > 8 else "")
    raise StoreError(
        f"{path} is another application's SQLite database (tables: {shown}); nb_sessions never adds "
        f"its tables to a database it did not create: {advice}"
    )


async def _ids_by_hash(db: aiosqlite.Connection, table: str, hashes: Sequence[bytes]) -> dict[bytes, int]:
    found: dict[bytes, int] = {}
    for start in range(0, len(hashes), _BATCH):
        batch = list(hashes[start:start + _BATCH])
        marks = ",".join("?" * len(batch))
        async with db.execute(f"SELECT hash, id FROM {table} WHERE hash IN ({marks})", batch) as cur:
            found.update({bytes(h): int(i) for h, i in await cur.fetchall()})
    return found


def _id_queries(table: str, column: str, ids: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Queries for rows by id: runs of consecutive ids (appended messages) as one range each."""
    unique = sorted(set(ids))
    ranges: list[tuple[int, int]] = []
    for i in unique:
        if ranges and i == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i, i))
    queries: list[tuple[str, tuple[int, ...]]] = [
        (f"SELECT id, {column} FROM {table} WHERE id BETWEEN ? AND ?", (lo, hi)) for lo, hi in ranges if lo != hi
    ]
    singles = [lo for lo, hi in ranges if lo == hi]
    for start in range(0, len(singles), _BATCH):
        batch = tuple(singles[start:start + _BATCH])
        queries.append((f"SELECT id, {column} FROM {table} WHERE id IN ({','.join('?' * len(batch))})", batch))
    return queries


async def _fetch_by_ids(
    db: aiosqlite.Connection, table: str, column: str, ids: Sequence[int]
) -> dict[int, bytes]:
    """Rows by id (see :func:`_id_queries`)."""
    out: dict[int, bytes] = {}
    for sql, params in _id_queries(table, column, ids):
        async with db.execute(sql, params) as cur:
            out.update(await cur.fetchall())  # type: ignore[arg-type]
    return out


def _fetch_array(conn: sqlite3.Connection, ids: list[int], where: str, path: Any) -> tuple[bytes, bool]:
    """The entries ``ids`` as one JSON array, and whether any was written by the exact path."""
    joined = _fetch_run_joined(conn, ids, f"{where} ({path_text(tuple(path))})")
    if joined is not None:
        return joined
    blobs: dict[int, tuple[bytes, bytes]] = {}
    for sql, params in _id_queries("nbs_blobs", "data, hash", ids):
        blobs.update((i, (data, h)) for i, data, h in conn.execute(sql, params))
    try:
        rows = [blobs[i] for i in ids]
    except KeyError as exc:
        raise StoreCorruptedError(
            f"{where}: entry {exc} of {path_text(tuple(path))} is missing; delete that "
            "checkpoint, the others are intact",
            location=where,
        ) from None
    return verified_array(rows, ids, f"{where} ({path_text(tuple(path))})", "table nbs_blobs")


def _fetch_run_joined(conn: sqlite3.Connection, ids: Sequence[int], where: str) -> tuple[bytes, bool] | None:
    """Entries whose ids are one ascending run (a memory appended in order) as one JSON array; else None.

    SQLite concatenates the rows itself, without Python objects per row and
    without holding the GIL. The ids come back concatenated in the same pass,
    which proves the order. The second value says whether an entry starts with
    the exact path's mark (a space: the only first byte below ``!``). A run too
    big for one SQLite value (> 1 GB) is left to the row-by-row path.
    """
    if not ids or ids[-1] - ids[0] + 1 != len(ids) or list(ids) != list(range(ids[0], ids[-1] + 1)):
        return None
    try:
        row = conn.execute(
            "SELECT CAST(group_concat(id) AS BLOB), total(data < x'21'), CAST(group_concat(data, ',') AS BLOB), "
            "group_concat(length(CAST(data AS BLOB))), group_concat(hex(hash), '') "
            "FROM nbs_blobs WHERE id BETWEEN ? AND ?",
            (ids[0], ids[-1]),
        ).fetchone()
    except sqlite3.DataError:  # SQLITE_TOOBIG
        return None
    if row is None or not isinstance(row[2], bytes) or row[0] != ",".join(map(str, ids)).encode():
        return None
    body = b"".join((b"[", row[2], b"]"))
    try:
        lengths = [int(n) for n in str(row[3]).split(",")]
        hashes = bytes.fromhex(str(row[4]))
    except ValueError:
        lengths, hashes = [], b""
    if len(lengths) != len(ids) or len(hashes) != 16 * len(ids):
        return None  # a hash that is not 16 bytes: the row-by-row path names the entry
    spans, at = [], 1  # after "["
    for n, length in enumerate(lengths):
        spans.append((at, length, hashes[16 * n:16 * n + 16]))
        at += length + 1
    verify_entries(body, spans, where, "table nbs_blobs", ids)
    return body, row[1] > 0


async def _open_cipher(db: aiosqlite.Connection, key: bytes | str | None, location: str) -> Cipher | None:
    """The store's cipher: its header opened with ``key`` (or NB_SESSIONS_KEY), created for a new store."""

    async def read_header() -> bytes | None:
        async with db.execute("SELECT value FROM nbs_meta WHERE key = ?", (HEADER_KEY,)) as cur:
            row = await cur.fetchone()
        return None if row is None else row[0]

    async def create_header(header: bytes) -> bool:
        async with db.execute("SELECT 1 FROM nbs_checkpoints LIMIT 1") as cur:
            if await cur.fetchone() is not None:
                return False
        await db.execute("INSERT OR IGNORE INTO nbs_meta (key, value) VALUES (?, ?)", (HEADER_KEY, header))
        return True

    return await open_cipher(key, location, read_header, create_header)


def _fetch_sealed(
    conn: sqlite3.Connection, ids: list[int], where: str, path: Any, *, cipher: Cipher, location: str,
    hashes: list[bytes],
) -> tuple[bytes, bool]:
    """An encrypted store's entries ``ids`` as one JSON array (see :func:`._sealed.open_entries`)."""
    blobs: dict[int, tuple[bytes, bytes]] = {}
    low, high = (min(ids), max(ids)) if ids else (0, -1)
    if ids and high - low < 2 * len(ids):  # mostly a run (a memory appended in order): one range query
        rows = conn.execute("SELECT id, data, hash FROM nbs_blobs WHERE id BETWEEN ? AND ?", (low, high))
        blobs.update((i, (data, h)) for i, data, h in rows)
    else:
        for sql, params in _id_queries("nbs_blobs", "data, hash", ids):
            blobs.update((i, (data, h)) for i, data, h in conn.execute(sql, params))
    return open_entries(cipher, ids, blobs, where, path, location, hashes)


def _manifest_key(sid: Any) -> str:
    return f"manifest:{sid}"


async def _session_id_of_row(db: aiosqlite.Connection, row_id: Any) -> Any:
    async with db.execute("SELECT session FROM nbs_checkpoints WHERE id = ?", (row_id,)) as cur:
        row = await cur.fetchone()
    return row[0] if row else None


async def _sealed_manifest(db: aiosqlite.Connection, sid: Any) -> Any:
    """The session's sealed manifest as stored (None when it has none)."""
    async with db.execute("SELECT value FROM nbs_meta WHERE key = ?", (_manifest_key(sid),)) as cur:
        row = await cur.fetchone()
    return row[0] if row else None


async def _reseal_manifest(
    db: aiosqlite.Connection, cipher: Cipher, key: SessionKey, sid: Any, location: str, *,
    new: int | None = None, gone: Sequence[int] | None = None, empty: bool = False,
) -> None:
    """Inside a write's transaction: check the session's rows against its manifest, then seal the new list."""
    if empty:
        await db.execute("DELETE FROM nbs_meta WHERE key = ?", (_manifest_key(sid),))
        return
    async with db.execute("SELECT seq, created_at FROM nbs_checkpoints WHERE session = ?", (sid,)) as cur:
        rows = {(int(seq), str(created)) for seq, created in await cur.fetchall()}
    sealed = resealed_manifest(
        cipher, key, await _sealed_manifest(db, sid), {r for r in rows if r[0] != new}, location,
        gone=gone or (), added={r for r in rows if r[0] == new},
    )
    await db.execute("INSERT OR REPLACE INTO nbs_meta (key, value) VALUES (?, ?)", (_manifest_key(sid), sealed))


async def _collect_garbage(db: aiosqlite.Connection, path: Path) -> None:
    """Delete segments and entries no checkpoint refers to any more (inside the caller's transaction)."""
    async with db.execute("SELECT seq, chunks FROM nbs_checkpoints WHERE chunks IS NOT NULL") as cur:
        live_segments = _live_segments(await cur.fetchall(), str(path))
    segments = await _fetch_by_ids(db, "nbs_segments", "blobs", sorted(live_segments))
    live_blobs = live_entries(segments, str(path))
    indexed = await _meta(db, "fts_indexed_upto", path) or 0
    if indexed:
        # Contentless FTS rows go by FTS5's 'delete' command, which wants the indexed text back.
        async with db.execute("SELECT id, data FROM nbs_blobs WHERE id <= ?", (indexed,)) as cur:
            dead = [(i, d) async for i, d in cur if i not in live_blobs]
        await db.executemany(
            "INSERT INTO nbs_fts (nbs_fts, rowid, text) VALUES ('delete', ?, ?)",
            [(i, _sqlite_text(t)) for i, t in ((i, _index_text(d)) for i, d in dead) if t],
        )
    for table, live in (("nbs_segments", live_segments), ("nbs_blobs", live_blobs)):
        await db.execute("CREATE TEMP TABLE IF NOT EXISTS nbs_live (id INTEGER PRIMARY KEY)")
        await db.execute("DELETE FROM nbs_live")
        await db.executemany("INSERT INTO nbs_live (id) VALUES (?)", ((i,) for i in live))
        await db.execute(f"DELETE FROM {table} WHERE id NOT IN (SELECT id FROM nbs_live)")
    await db.execute("UPDATE nbs_meta SET value = value + 1 WHERE key = 'gc_generation'")


async def _table_exists(db: aiosqlite.Connection, name: str) -> bool:
    async with db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ) as cur:
        return await cur.fetchone() is not None


async def _rollback(db: aiosqlite.Connection) -> None:
    """ROLLBACK if a transaction is open; never mask the error that led here."""
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


async def _commit(db: aiosqlite.Connection) -> None:
    """COMMIT; once started it finishes even if the task is cancelled meanwhile (the result stands)."""
    commit = asyncio.ensure_future(db.execute("COMMIT"))
    try:
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        await commit
        settle_late_cancel()


def _locked_error(exc: BaseException) -> bool:
    """Another connection holds the lock (SQLITE_BUSY / SQLITE_LOCKED): worth waiting for."""
    text = str(exc)
    return "locked" in text or "busy" in text


def _read_only_error(exc: BaseException) -> bool:
    text = str(exc)
    return "readonly" in text or "read-only" in text or "unable to open" in text


def _sqlite_text(text: str) -> str:
    """``text`` as SQLite can bind it: a lone surrogate (half an emoji) becomes '?'.

    Used for the search index and queries only; matches are confirmed on the
    original text afterwards, so the replacement never invents a hit.
    """
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _index_text(data: bytes) -> str:
    """What the search index holds for an entry: its message's searchable text, else nothing."""
    from ..search import entry_message, searchable_text

    try:
        msg = entry_message(codec.loads(data))
    except StoreCorruptedError:
        return ""
    return searchable_text(msg) if msg is not None else ""


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _is_int(value: Any) -> bool:
    """True for an integer as SQLite returns one (not a bool, text or float)."""
    return isinstance(value, int) and not isinstance(value, bool)
