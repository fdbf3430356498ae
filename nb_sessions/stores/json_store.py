"""JSONStore: a folder of AgentScope JSONSession files, with history kept beside them.

``<folder>/<name>.json`` is always the latest state in AgentScope's exact
format (``name`` is ``session`` or ``user_session``), so AgentScope's own
JSONSession reads what nb_sessions writes and the other way round. History
lives in ``<folder>/.nb_sessions/<name>/``: ``index.json`` (the checkpoints),
one small ``<seq>.json`` per checkpoint (its skeleton: the state with its
long lists left empty), and the entry pack (``entries-<gen>.jsonl``), where
each distinct message is stored once and checkpoints refer to runs of it.

A save appends new entries to the pack, writes the checkpoint file, then
the index (the commit point), then the latest file; every write is atomic (temp file, fsync, ``os.replace``,
fsync the folder) and a sidecar lock file serialises writers across
processes: a lock on the data file itself protects nothing once
``os.replace`` swaps the inode. A latest file that AgentScope (or anyone)
rewrote after our last save shows up as one more checkpoint, and is kept in
the history at the next save.

A file holding one bare AgentScope 2.x ``AgentState`` (what
``state.model_dump_json()`` writes, not ``{module: state}``) is a session
with one module, named ``agent`` (:data:`BARE_MODULE`); its saves keep the
latest file bare, so ``AgentState.model_validate_json`` still reads it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import logging
import os
import secrets
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import filelock

from .. import codec
from ..chunks import ChunkCache, assemble, blob_hash, path_text, split
from ..crypto import ENV_KEY, Cipher, KeySource, key_from_env, resolve_key
from ..errors import (
    CheckpointNotFoundError,
    ConflictError,
    InvalidIdError,
    KeyRequiredError,
    StoreCorruptedError,
    StoreError,
)
from ..generations import conversation_path, v2
from . import _json_sealed as sealed
from ._fs import atomic_write, clean_temp_files, open_regular, read_regular, run_blocking
from ._pack import EntryPack, PackState, Ranges, check_ranges, from_ranges, to_ranges
from .base import At, BaseStore, Checkpoint, Redactor, SessionInfo, SessionKey, utcnow, validate_id

if TYPE_CHECKING:
    from ..search import Hit
    from .space import SessionSpace

__all__ = ["JSONStore"]

log = logging.getLogger("nb_sessions")

HIDDEN = ".nb_sessions"
INDEX_FORMAT = 2
SOURCE_FILE = "json-file"  # a checkpoint that is the latest file itself (not yet in history)
#: The module name of a session whose file holds one bare AgentScope 2.x ``AgentState``.
BARE_MODULE = "agent"


def stem_for(key: SessionKey) -> str:
    """AgentScope's file name (without ``.json``) for a session."""
    return f"{key.user_id}_{key.session_id}" if key.user_id else key.session_id


class JSONStore(BaseStore):
    """Checkpoints as JSON files in a folder (created on first write, owner-only files).

    ``key`` encrypts a new folder at rest (32 raw bytes, their base64 text, a
    passphrase, a key file as a ``Path``, or a callable returning one); an
    encrypted folder opened without one takes ``NB_SESSIONS_KEY``. An encrypted
    folder writes **no AgentScope latest file** (``<name>.json``): AgentScope
    could not read it encrypted, and a plaintext copy would defeat the key. Its
    history files are sealed instead (see :mod:`._json_sealed` and
    docs/reliability.md, "Encryption at rest"). A plain folder that already
    holds sessions is refused with a key: nb_sessions never encrypts in place.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 60.0,
        redact: Redactor | None = None,
        key: KeySource | None = None,
    ) -> None:
        super().__init__(redact=redact)
        self._key = resolve_key(key) if key is not None else None
        self._cipher: Cipher | None = None
        self._header_seen: tuple[int, int, int, int] | None = None
        self.path = Path(path).expanduser().absolute()
        self.timeout = timeout
        self._cleaned = False
        self._modules_cache: dict[tuple[str, int, int], tuple[str, ...]] = {}
        self._content_memo: dict[tuple[str, int, int, str], bool] = {}
        self._caches: dict[SessionKey, _PackCache] = {}

    @property
    def location(self) -> str:
        """The folder."""
        return str(self.path)

    # -- encryption at rest ------------------------------------------------------

    @property
    def _header_path(self) -> Path:
        return self.path / HIDDEN / sealed.HEADER

    def _crypt(self, create: bool = False) -> Cipher | None:
        """The folder's cipher (None for a plain folder); ``create`` makes the header of a new keyed folder.

        Raises KeyRequiredError for an encrypted folder without a key (nor
        ``NB_SESSIONS_KEY``) and for a plain folder holding sessions opened with
        one; WrongKeyError when the key does not open the header. Nothing is written then.
        """
        header = self._header_path
        for _ in range(2):
            seen = _file_identity(header)
            if seen is not None and seen == self._header_seen and self._cipher is not None:
                return self._cipher
            try:
                data = read_regular(header)
            except FileNotFoundError:
                data = None
            if data is not None:
                material = self._key if self._key is not None else key_from_env()
                if material is None:
                    raise KeyRequiredError(
                        f"{self.path} is an encrypted JSON store and no key was given; nothing was changed. "
                        f"Pass key=... to open_store, set {ENV_KEY}, or give --key to nb-sessions",
                        location=str(self.path),
                    )
                cipher = self._cipher
                if cipher is None or _store_id(data) != cipher.store_id:
                    cipher = Cipher.open_header(data, material, str(self.path))
                self._cipher, self._header_seen = cipher, seen  # a rekey elsewhere keeps the data key
                return cipher
            if self._cipher is not None:
                raise StoreCorruptedError(
                    f"{header} is gone: this encrypted store's header (its wrapped key) was removed while "
                    "it was open; restore it from a backup, nothing else opens the store",
                    location=str(header),
                )
            if self._key is None:
                return None
            if self._holds_sessions():
                for index_path in (self.path / HIDDEN).glob("*/index.json"):
                    parsed = None
                    with contextlib.suppress(StoreError, OSError):
                        parsed = codec.loads(read_regular(index_path))
                    if sealed.is_sealed_index(parsed):
                        raise sealed.headerless(index_path, header)
                raise KeyRequiredError(
                    f"{self.path} is a plain (unencrypted) JSON store and a key was given; nb_sessions does not "
                    "encrypt a store in place. Copy its sessions into a new encrypted store: "
                    f"nb-sessions copy {self.path} NEW_FOLDER --to-key ... (or store.copy_sessions), then remove "
                    "the plain folder",
                    location=str(self.path),
                )
            if not create:
                return None  # an empty folder, encrypted by its first write
            (self.path / HIDDEN).mkdir(mode=0o700, exist_ok=True)
            sealed.create_header(header, Cipher.create(self._key).header)
        raise StoreError(f"{header} kept changing while it was read; retry")  # pragma: no cover

    def _holds_sessions(self) -> bool:
        """True when the folder holds a plain session (a history index, or an AgentScope file)."""
        if not self.path.is_dir():
            return False
        return any((self.path / HIDDEN).glob("*/index.json")) or any(
            not f.name.startswith(".") for f in self.path.glob("*.json")
        )

    @property
    def encrypted(self) -> bool:
        """Whether this folder is encrypted at rest (a folder not made yet: whether a key was given)."""
        if self._header_path.exists():
            return self._crypt() is not None
        return self._key is not None

    def rekey(self, new_key: KeySource) -> None:
        """Re-wrap the data key of this encrypted folder with ``new_key``: one atomic replace of its header.

        Nothing else is rewritten, so an interruption leaves the folder opening with
        the old key or the new one, never neither. Other processes must reopen with the new key.
        """
        material = resolve_key(new_key)
        cipher = self._crypt()
        if cipher is None:
            raise KeyRequiredError(
                f"{self.path} is not encrypted; copy its sessions into a new store opened with key=... instead",
                location=str(self.path),
            )
        new = cipher.rewrap(material)
        atomic_write(self._header_path, new.header)
        self._cipher, self._key, self._header_seen = new, material, _file_identity(self._header_path)

    async def _disk_bytes(self) -> int:
        def job() -> int:
            total = 0
            for root, _dirs, files in os.walk(self.path):
                total += sum(_size(Path(root, name)) for name in files)
            return total

        return await asyncio.to_thread(job)

    async def _space(self, key: SessionKey) -> SessionSpace:
        """Each checkpoint's skeleton file (split by module) and the pack entries it uses."""
        from .space import CheckpointSpace, SessionSpace, module_bytes

        history = await self._history(key)

        def job() -> SessionSpace:
            index = self._read_index(key)
            hdir = self._history_dir(key)
            if index is None:
                return SessionSpace(key, [CheckpointSpace(cp, {"*": cp.size}) for cp in history])
            pack = EntryPack(hdir, PackState.from_json(index["pack"])) if "pack" in index else None
            entries = {e["seq"]: e for e in index["checkpoints"]}
            stem = stem_for(key)
            encrypted = self._crypt() is not None
            out = []
            for cp in history:
                entry = entries.get(cp.seq, {})
                where = f"checkpoint {cp.ref}"
                try:
                    own = module_bytes(self._skeleton_bytes(key, index, entry) if entry else b"", 0, where)
                except FileNotFoundError:
                    own = {"*": 0}
                pieces: dict[str, dict[str, int]] = {}
                for path, ranges in entry.get("chunks") or ():
                    ordinals = from_ranges(check_ranges(ranges))
                    if pack is None:
                        sizes: list[bytes] = []
                    elif encrypted:  # what each takes on disk, sealed
                        sizes = [data for data, _ in pack.records(ordinals, where)]
                    else:
                        sizes = pack.read(ordinals, where)
                    module = pieces.setdefault(str(path[0]), {})
                    for n, data in zip(ordinals, sizes, strict=False):
                        module[f"{stem}:entry:{n}"] = len(data)
                out.append(CheckpointSpace(cp, own, pieces))
            overhead = (0 if encrypted else _size(self._latest_file(key))) + _size(hdir / "index.json")
            if pack is not None:
                overhead += _size(pack.index_path)
            return SessionSpace(key, out, overhead)

        return await asyncio.to_thread(job)

    # -- paths ---------------------------------------------------------------

    def _name(self, key: SessionKey) -> str:
        """The name of the session's files: AgentScope's, so two keys can share it (``u/s``, ``u_s``).

        Never the identity: every access checks the owner key recorded in the
        history's ``index.json``. A file system that folds case or Unicode (macOS)
        shares one name between more keys still; the same check guards them.
        """
        return stem_for(key)

    def _latest_file(self, key: SessionKey) -> Path:
        return self.path / f"{self._name(key)}.json"

    def _history_dir(self, key: SessionKey) -> Path:
        return self.path / HIDDEN / self._name(key)

    def _own_history_dir(self, key: SessionKey) -> Path:
        """The session's history folder, made owner-only; a symlink on the way is refused."""
        hdir = self._history_dir(key)
        for folder in (self.path / HIDDEN, hdir):
            if folder.is_symlink():
                raise StoreCorruptedError(
                    f"{folder} is a symlink; a store writes only inside its own folder. Replace the "
                    "link with the folder it points to, or move it away",
                    location=str(folder),
                )
        hdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return hdir

    def _lock(self, key: SessionKey) -> filelock.FileLock:
        # In a folder of their own: beside the history folders, session "x"'s lock
        # file "x.lock" would be session "x.lock"'s history folder.
        hidden = self.path / HIDDEN
        for folder in (hidden, hidden / ".locks"):  # each made owner-only (parents=True would not)
            folder.mkdir(mode=0o700, exist_ok=True)
        locks = hidden / ".locks"
        return filelock.FileLock(
            locks / f"{self._name(key)}.lock", timeout=self.timeout, mode=0o600, thread_local=False,
        )

    def _prepare_folder(self) -> None:
        if not self.path.exists():
            try:
                # Each missing folder owner-only (parents=True would give the parents the umask's
                # mode); exist_ok: another process may race us.
                for folder in [*reversed(self.path.parents), self.path]:
                    if not folder.exists():
                        folder.mkdir(mode=0o700, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store folder {self.path}: {_os_problem(exc)}") from exc
        if not self.path.is_dir():
            raise StoreError(f"{self.path} is a file, not a folder: a JSONStore is a folder")
        if not self._cleaned:
            clean_temp_files(self.path)
            self._cleaned = True

    def was_reset(self, key: SessionKey) -> bool:
        """True when the session has a history but its latest file was deleted (AgentScope's reset)."""
        if self._crypt() is not None:
            return False  # an encrypted folder writes no latest file
        return not self._latest_file(key).exists() and self._read_index(key) is not None

    def _remove_history(self, key: SessionKey) -> None:
        """Delete the session's history: its index first, so a reader never meets an index whose files went."""
        hdir = self._history_dir(key)
        with contextlib.suppress(FileNotFoundError):
            (hdir / "index.json").unlink()
        shutil.rmtree(hdir, ignore_errors=True)

    # -- index ---------------------------------------------------------------

    def _read_index(self, key: SessionKey) -> dict[str, Any] | None:
        path = self._history_dir(key) / "index.json"
        try:
            data = read_regular(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        index = codec.loads(data, str(path))
        cipher = self._crypt()
        if cipher is not None:
            if sealed.is_sealed_index(index) and sealed.envelope_ids(index) != tuple(key):
                return None  # another session whose file name collides with this one
            index = sealed.open_index(cipher, key, index, path)
        elif sealed.is_sealed_index(index):
            raise sealed.headerless(path, self._header_path)
        if not isinstance(index, dict) or not isinstance(index.get("checkpoints"), list):
            raise StoreCorruptedError(
                f"{path} is not a history index; move it away to see the latest file alone",
                location=str(path),
            )
        if (index.get("user_id"), index.get("session_id")) != tuple(key):
            return None  # another session whose file name collides with this one
        return index

    def _owned_by_other(self, key: SessionKey) -> bool:
        """True when the history at this key's file name records another session as its owner.

        The latest file then belongs to that session: this key must not read or delete it.
        """
        return self._read_index(key) is None and (self._history_dir(key) / "index.json").exists()

    def _write_index(self, key: SessionKey, index: dict[str, Any], check: Callable[[], None] | None = None) -> None:
        cipher = self._crypt()
        data = codec.dumps(index) if cipher is None else sealed.seal_index(cipher, key, index)
        atomic_write(self._history_dir(key) / "index.json", data, check)

    def _cp_from_entry(self, key: SessionKey, entry: Any) -> Checkpoint:
        try:
            return Checkpoint(
                session_id=key.session_id, user_id=key.user_id, seq=int(entry["seq"]),
                created_at=datetime.fromisoformat(entry["created_at"]),
                modules=tuple(str(m) for m in entry.get("modules", ())), size=int(entry.get("size", 0)),
                parent=entry.get("parent"), label=entry.get("label"),
                metadata=dict(entry.get("metadata") or {}), store=self,
                origin="imported" if entry.get("origin") == "imported" else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            where = self._history_dir(key) / "index.json"
            raise StoreCorruptedError(
                f"{where} holds a malformed checkpoint entry ({type(exc).__name__}: {exc}); "
                "move the index away to see the latest file alone",
                location=str(where),
            ) from None

    def _file_checkpoint(self, key: SessionKey, seq: int, parent: int | None, note: str) -> Checkpoint | None:
        """The latest file as a checkpoint of its own (AgentScope wrote it, or wrote it last)."""
        if self._crypt() is not None:
            return None  # not part of an encrypted store
        path = self._latest_file(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return Checkpoint(
            session_id=key.session_id, user_id=key.user_id, seq=seq,
            created_at=datetime.fromtimestamp(st.st_mtime, timezone.utc),
            modules=self._modules_of(path, st), size=st.st_size, parent=parent,
            metadata={"note": note}, store=self, origin=SOURCE_FILE,
        )

    def _modules_of(self, path: Path, st: os.stat_result) -> tuple[str, ...]:
        cache_key = (str(path), st.st_size, st.st_mtime_ns)
        if cache_key not in self._modules_cache:
            try:
                parsed = codec.loads(read_regular(path), str(path))
                names = tuple(_wrap_bare(parsed)) if isinstance(parsed, dict) else ()
            except (StoreCorruptedError, OSError):
                names = ()
            self._modules_cache[cache_key] = names
        return self._modules_cache[cache_key]

    def _latest_changed(self, key: SessionKey, index: dict[str, Any]) -> bool:
        """True when the latest file is not the one our last save wrote."""
        if self._crypt() is not None:
            return False  # an encrypted store neither writes nor reads a latest file
        stamp = self._latest_stamp(key)
        # The second record: a save stopped between its index and its latest file left
        # the file that was there before in place: stale, not a foreign write.
        return stamp is not None and not any(
            _same_stamp(stamp, recorded) for recorded in (index.get("latest_file"), index.get("stale_latest_file"))
        ) and not self._same_content(key, index, stamp)

    def _same_content(self, key: SessionKey, index: dict[str, Any], stamp: dict[str, int]) -> bool:
        """True when the latest file holds the last checkpoint's bytes though its mtime changed.

        ``cp -r`` and ``git clone`` rewrite mtimes only: decided by content, once per file state.
        """
        recorded = index.get("latest_file")
        entries = index.get("checkpoints")
        if not isinstance(recorded, dict) or recorded.get("size") != stamp["size"] or not entries:
            return False
        memo = (str(self._latest_file(key)), stamp["size"], stamp["mtime_ns"], repr(recorded))
        if memo not in self._content_memo:
            try:
                # Streamed: neither the file nor the checkpoint is held in memory whole.
                with os.fdopen(open_regular(self._latest_file(key)), "rb") as f:
                    sink = _Comparer(f)
                    self._full_layout(key, index, entries[-1]).write(cast("BinaryIO", sink))
                    same = sink.same and not f.read(1)
            except (StoreError, OSError, KeyError, TypeError, ValueError):
                same = False  # a damaged history: the file counts as written outside
            self._content_memo[memo] = same
        return self._content_memo[memo]

    def _latest_stamp(self, key: SessionKey) -> dict[str, int] | None:
        """Size and mtime of the latest file as it is now, or None when there is none."""
        try:
            st = self._latest_file(key).stat()
        except FileNotFoundError:
            return None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def _latest_is_current(self, key: SessionKey, index: dict[str, Any]) -> bool:
        """True when the latest file holds exactly the last checkpoint of the index."""
        if self._crypt() is not None:
            return False
        stamp = self._latest_stamp(key)
        return stamp is not None and (
            _same_stamp(stamp, index.get("latest_file")) or self._same_content(key, index, stamp)
        )

    def _history_sync(self, key: SessionKey) -> list[Checkpoint]:
        # A save between our read of the index and our look at the latest file would make its
        # new file look written outside (a phantom checkpoint): then the index changed, look again.
        index_path = self._history_dir(key) / "index.json"
        for _ in range(_READ_ATTEMPTS):
            before = _file_identity(index_path)
            out = self._history_once(key)
            if out[-1].origin != SOURCE_FILE or _file_identity(index_path) == before:
                return out
        return out

    def _history_once(self, key: SessionKey) -> list[Checkpoint]:
        index = self._read_index(key)
        if index is None:
            if self._owned_by_other(key):
                raise self._not_found(key)
            cp = self._file_checkpoint(key, 1, None, "an AgentScope JSONSession file")
            if cp is None:
                raise self._not_found(key)
            return [cp]
        out = [self._cp_from_entry(key, e) for e in index["checkpoints"]]
        if self._latest_changed(key, index):
            last = out[-1].seq if out else None
            cp = self._file_checkpoint(key, int(index["next_seq"]), last, "the latest file, written outside nb_sessions")
            if cp is not None:
                out.append(cp)
        if not out:
            raise self._not_found(key)
        return out

    # -- primitives ------------------------------------------------------------

    async def _history(self, key: SessionKey) -> list[Checkpoint]:
        return await asyncio.to_thread(self._history_sync, key)

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
        def job(check_abort: Callable[[], None]) -> Checkpoint:
            skeleton, chunks = split(states)
            skeleton_data = codec.dumps(skeleton)
            self._prepare_folder()
            cipher = self._crypt(create=True)
            with self._locked(key, check_abort):
                index = self._adopt_latest_file(key)
                seq = int(index["next_seq"])
                if at is not None:  # an exact copy: its source's seq
                    seq = at.seq_after(key, seq, str(self.path))
                entries = index["checkpoints"]
                if label is not None and any(e.get("label") == label for e in entries):
                    raise ConflictError(
                        f"label {label!r} already names another checkpoint of {key}; choose another "
                        "label, or move it first with store.label(ref, None)"
                    )
                known = {e["seq"] for e in entries}
                chosen = parent if parent in known or at is not None else (entries[-1]["seq"] if entries else None)
                hdir = self._own_history_dir(key)
                pack_state = PackState.from_json(index.get("pack"))
                if not pack_state.uid:
                    # A new pack gets an identity: a session deleted and made again
                    # must not meet a cache of its former self with equal counts.
                    pack_state = dataclasses.replace(pack_state, uid=secrets.token_hex(8))
                pack = EntryPack(hdir, pack_state)
                cache = self._caches.get(key)
                if cache is None or cache.pack != pack.state:
                    # Another writer appended (reload the numbers) or compacted (forget the runs).
                    same_gen = (
                        cache is not None
                        and (cache.pack.uid, cache.pack.gen) == (pack.state.uid, pack.state.gen)
                    )
                    cache = _PackCache(
                        pack.state, pack.hashes(), cache.chunks if same_gen and cache else None,
                        cipher.mac if cipher is not None else None,
                    )
                    self._caches[key] = cache
                with codec.paused_gc():
                    planned = [cache.chunks.plan(chunk) for chunk in chunks]
                plans = [plan for plan, _ in planned]
                ordinals = cache.ordinals
                fresh = {h: d for plan in plans for h, d in plan.new.items() if h not in ordinals}
                blobs = list(fresh.items())
                if cipher is not None:
                    blobs = sealed.seal_entries(cipher, key, blobs)
                try:
                    new_state = pack.append(blobs)
                except BaseException:
                    self._caches.pop(key, None)
                    raise
                self._caches.pop(key, None)  # back only once the index commits
                ordinals.update({h: pack.state.count + i for i, h in enumerate(fresh)})
                written = EntryPack(hdir, new_state)
                payloads = [
                    [seg.cached if seg.cached is not None else [ordinals[h] for h in seg.hashes] for seg in plan.segments]
                    for plan in plans
                ]
                lists = [
                    (plan.path, [n for run in runs for n in run])
                    for plan, runs in zip(plans, payloads, strict=True)
                ]
                ranges = [(path, to_ranges(ns)) for path, ns in lists]
                chunk_rows = [[list(path), r] for path, r in ranges]
                _check_bare(index, states, key)
                latest = None if cipher is not None else _Layout.of(
                    *_unwrap_bare(index, skeleton, ranges), written, f"checkpoint {key}@{seq}"
                )
                # An encrypted folder writes no latest file: the size of the state, as SQLite counts it.
                size = latest.size() if latest is not None else len(skeleton_data) + sum(p.size for p in plans)
                now = utcnow()
                entry: dict[str, Any] = {
                    "seq": seq, "parent": chosen, "label": label,
                    "created_at": (now if at is None else at.created_at).isoformat(),
                    "modules": list(states), "size": size, "metadata": metadata,
                    "hash": blob_hash(skeleton_data).hex(),  # of <seq>.json, checked on every read
                }
                if chunk_rows:
                    entry["chunks"] = chunk_rows
                if cipher is not None:  # sealed to its place (creation time included) and its entries in order
                    hashes = [h for plan in plans for seg in plan.segments for h in seg.hashes]
                    skeleton_data = sealed.seal_state(cipher, key, seq, entry["created_at"], skeleton_data, hashes)
                    entry["hash"] = blob_hash(skeleton_data).hex()
                atomic_write(hdir / f"{seq}.json", skeleton_data)
                ns = int(now.timestamp() * 1e9)
                new_index = {
                    **index, "format": INDEX_FORMAT, "next_seq": seq + 1,
                    "checkpoints": [*entries, entry], "pack": new_state.to_json(),
                }
                if latest is not None:
                    new_index["latest_file"] = {"size": size, "mtime_ns": ns}
                    # What is on disk now, ours: if this save stops before it rewrites the
                    # file, the next one must not take the file for a foreign write.
                    new_index["stale_latest_file"] = self._latest_stamp(key)
                try:
                    self._write_index(key, new_index, check_abort)  # the commit point
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        (hdir / f"{seq}.json").unlink()
                    raise
                remembered: dict[Any, Any] = {}
                for _, entries_seen in planned:
                    remembered.update(entries_seen)
                cache.chunks.remember(plans, payloads, remembered)
                cache.pack = new_state
                self._caches[key] = cache
                if latest is not None:
                    self._write_latest(key, latest, ns)
                elif not entries:
                    log.info("nb_sessions: %s is encrypted: no AgentScope latest file %s is written for %s",
                             self.path, self._latest_file(key).name, key)
            return self._cp_from_entry(key, entry)

        try:
            cp = await run_blocking(job)
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(
                f"cannot save {key} in {self.path}: {_os_problem(exc)}; earlier checkpoints are intact"
            ) from exc
        self._parents[key] = cp.seq
        return cp

    def _full_layout(self, key: SessionKey, index: dict[str, Any], entry: dict[str, Any]) -> _Layout:
        """A checkpoint's whole state, as AgentScope's file holds it."""
        hdir = self._history_dir(key)
        where = f"checkpoint {key}@{entry['seq']}"
        data = read_regular(hdir / f"{entry['seq']}.json")
        self._verify_file(f"{key}@{entry['seq']}", hdir / f"{entry['seq']}.json", data, entry)
        if not entry.get("chunks") and not index.get("bare"):
            return _Layout([data], None, where)
        skeleton = _wrap_bare(codec.loads(data, where))
        pack = EntryPack(hdir, PackState.from_json(index.get("pack")))
        rows = [(tuple(p), check_ranges(r)) for p, r in entry.get("chunks") or ()]
        return _Layout.of(*_unwrap_bare(index, skeleton, rows), pack, where)

    def _verify_file(self, ref: str, path: Path, data: bytes, entry: dict[str, Any]) -> None:
        """Refuse a checkpoint file whose bytes are not the ones its index entry recorded.

        Entries written before hashes were recorded carry none and are read as they are.
        """
        recorded = entry.get("hash")
        if recorded is not None and blob_hash(data).hex() != recorded:
            raise StoreCorruptedError(
                f"checkpoint {ref}: {path} is not the file that was saved (its content hash "
                "differs from the one in index.json: edited or damaged); restore it from a "
                f"backup, or delete the checkpoint (nb-sessions prune / store.delete({ref!r}))",
                location=str(path),
            )

    def _write_latest(self, key: SessionKey, latest: _Layout, mtime_ns: int) -> None:
        """Rewrite AgentScope's file after the index committed; a failure here loses nothing."""
        try:
            atomic_write(self._latest_file(key), latest.write, mtime_ns=mtime_ns)
        except (OSError, StoreCorruptedError) as exc:
            # The checkpoint is in the history; the file shows the previous state until the
            # next save rewrites it (it is recognised as stale, not as a foreign write).
            problem = _os_problem(exc) if isinstance(exc, OSError) else str(exc)
            warnings.warn(
                f"nb_sessions: saved {key} but could not update {self._latest_file(key).name}: {problem}",
                RuntimeWarning,
                stacklevel=2,
            )

    @contextlib.contextmanager
    def _locked(self, key: SessionKey, check_abort: Callable[[], None]) -> Any:
        """Hold the session's sidecar lock; wait in short polls so a cancel stops the wait."""
        lock = self._lock(key)
        deadline = time.monotonic() + self.timeout
        while True:
            check_abort()
            try:
                lock.acquire(timeout=0.05)
                break
            except (IsADirectoryError, NotADirectoryError) as exc:
                raise self._bad_lock(lock, exc) from None
            except filelock.Timeout:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"session {key} in {self.path} stayed locked for {self.timeout:.0f}s by "
                        "another writer; retry, or raise JSONStore(timeout=...)"
                    ) from None
            except OSError as exc:  # filelock.Timeout is an OSError too: it is handled above
                if exc.errno == errno.ELOOP:  # a symlink planted where the lock file belongs
                    raise self._bad_lock(lock, exc) from None
                raise
        try:
            yield
        finally:
            lock.release()

    @staticmethod
    def _bad_lock(lock: filelock.BaseFileLock, exc: OSError) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"{lock.lock_file} is not a lock file ({exc.strerror}): something else was put where "
            "nb_sessions keeps its lock; remove it (nothing is lost) and try again",
            location=str(lock.lock_file),
        )

    def _adopt_latest_file(self, key: SessionKey) -> dict[str, Any]:
        """Return the index, first taking a latest file we did not write into the history."""
        index = self._read_index(key)
        stem_index = self._history_dir(key) / "index.json"
        if index is None and stem_index.exists():
            owner = "another session"
            with contextlib.suppress(StoreError, OSError):
                recorded = codec.loads(read_regular(stem_index), str(stem_index))
                owner = f"session {str(SessionKey(str(recorded['user_id']), str(recorded['session_id'])))!r}"
            raise ConflictError(
                f"cannot save {str(key)!r}: its file {self._latest_file(key).name} already belongs to "
                f"{owner} (AgentScope names files user_session.json, and this file system may fold "
                "case or accents); choose another id for one of them"
            )
        if index is None:
            index = {"format": INDEX_FORMAT, "user_id": key.user_id, "session_id": key.session_id,
                     "next_seq": 1, "checkpoints": []}
            note = "imported from an AgentScope JSONSession file"
            if self._crypt() is not None:
                return index  # an AgentScope file in an encrypted folder is not part of the store
        elif self._latest_changed(key, index):
            note = "the latest file, written outside nb_sessions"
        else:
            return index
        path = self._latest_file(key)
        try:
            data = read_regular(path)
            st = path.stat()
        except FileNotFoundError:
            return index
        seq = int(index["next_seq"])
        entries = index["checkpoints"]
        hdir = self._own_history_dir(key)
        data = self._redacted(data, str(path))
        atomic_write(hdir / f"{seq}.json", data)
        entry = {
            "seq": seq, "parent": entries[-1]["seq"] if entries else None,
            "created_at": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(),
            "label": None, "modules": list(self._modules_of(path, st)), "size": len(data),
            "metadata": {"note": note}, "origin": "imported", "hash": blob_hash(data).hex(),
        }
        index = {**index, "next_seq": seq + 1, "checkpoints": [*entries, entry],
                 "latest_file": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}}
        if entry["modules"] == [BARE_MODULE] and _is_bare(data):
            index["bare"] = BARE_MODULE  # the file holds one bare AgentState: keep it that way
        self._write_index(key, index)
        return index

    def _redacted(self, data: bytes, where: str) -> bytes:
        """A file AgentScope wrote, as the history keeps it: through the store's redactor, if any."""
        if self.redact is None:
            return data
        state = codec.loads(data, where)
        if not isinstance(state, dict):
            return data  # not module states: read back as a damaged checkpoint, never as states
        return codec.dumps({name: self.redact(name, module) for name, module in state.items()})

    async def _read(self, cp: Checkpoint, *, thorough: bool = False) -> dict[str, Any]:
        """A checkpoint's state; the latest from AgentScope's file when it is current, unless
        ``thorough``: then from the history (skeleton and entry pack), as `check` reads it."""
        from_history = thorough  # also set when the latest file went while we used it

        def job() -> dict[str, Any]:
            nonlocal from_history
            if self._crypt() is not None:
                return self._read_sealed(cp)
            entry: dict[str, Any] | None = None
            index: dict[str, Any] | None = None
            trusted = False  # written by our codec (see codec.loads)
            if cp.origin == SOURCE_FILE:
                path = self._latest_file(cp.key)
            else:
                path = self._history_dir(cp.key) / f"{cp.seq}.json"
                index = self._read_index(cp.key)
                entries = index["checkpoints"] if index else []
                entry = next((e for e in entries if e["seq"] == cp.seq), None)
                if entry is None:
                    raise CheckpointNotFoundError(
                        f"checkpoint {cp.ref} is no longer in {self.path} (deleted meanwhile?)", ref=cp.ref
                    )
                trusted = bool(entry.get("chunks"))
                if (
                    not from_history and entry.get("chunks") and entries[-1] is entry and index
                    and self._latest_is_current(cp.key, index)
                ):
                    path, entry = self._latest_file(cp.key), None  # the same state, in one file
            shortcut = index is not None and entry is None
            try:
                data = read_regular(path)
                if shortcut and not self._latest_is_current(cp.key, index):  # type: ignore[arg-type]
                    raise _Moved  # a save replaced the file between our check and our read
            except FileNotFoundError:
                if shortcut:  # deleted meanwhile: the history still holds the same state
                    from_history = True
                    raise _Moved from None
                raise StoreCorruptedError(
                    f"checkpoint {cp.ref}: its file {path} is missing; delete the checkpoint "
                    f"(store.delete({cp.ref!r})) or restore the file",
                    location=str(path),
                ) from None
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
            if entry is not None:
                self._verify_file(cp.ref, path, data, entry)
            state = _wrap_bare(codec.loads(data, f"checkpoint {cp.ref} ({path})", trusted=trusted))
            if not isinstance(state, dict):
                raise StoreCorruptedError(
                    f"checkpoint {cp.ref} ({path}) holds {type(state).__name__} JSON, not an object "
                    "of module states",
                    location=str(path),
                )
            if entry is not None and "chunks" in entry and not isinstance(entry["chunks"], list):
                index_path = self._history_dir(cp.key) / "index.json"
                raise StoreCorruptedError(
                    f"checkpoint {cp.ref}: its record in {index_path} has 'chunks' that are not a "
                    "list; delete the checkpoint or restore .nb_sessions",
                    location=str(index_path),
                )
            if entry is not None and entry.get("chunks") and index is not None:
                pack = EntryPack(self._history_dir(cp.key), PackState.from_json(index.get("pack")))
                where = f"checkpoint {cp.ref}"
                lists = []
                for p, ranges in entry["chunks"]:
                    try:
                        ranges = check_ranges(ranges)
                    except StoreCorruptedError as exc:
                        index_path = self._history_dir(cp.key) / "index.json"
                        raise StoreCorruptedError(
                            f"checkpoint {cp.ref}: its record in {index_path} holds malformed entry "
                            f"ranges for {path_text(tuple(p))} ({exc})",
                            location=str(index_path),
                        ) from None
                    body, exact = pack.read_array(ranges, where)
                    lists.append((tuple(p), codec.loads(body, f"{where} ({path_text(tuple(p))})", trusted=not exact)))
                try:
                    assemble(state, lists)
                except (KeyError, IndexError, TypeError) as exc:
                    raise StoreCorruptedError(
                        f"{where}: a stored list does not fit its place ({exc})", location=str(path)
                    ) from None
            return state

        def attempt() -> dict[str, Any]:
            # Reads take no lock: a writer may delete, prune or vacuum between our reads of the
            # index, the checkpoint file and the pack. When the index changed while we read, what
            # looked damaged was only moved: read again from the new index (which may say the
            # checkpoint is gone). An index that did not change means the damage is real.
            for _ in range(_READ_ATTEMPTS):
                before = _file_identity(self._history_dir(cp.key) / "index.json")
                try:
                    return job()
                except _Moved:
                    continue
                except StoreCorruptedError:
                    if _file_identity(self._history_dir(cp.key) / "index.json") == before:
                        raise
            raise StoreError(
                f"checkpoint {cp.ref} in {self.path} kept changing while it was read "
                f"({_READ_ATTEMPTS} attempts); retry when the writers pause"
            )

        def guarded() -> dict[str, Any]:
            try:
                return attempt()
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                # A history index edited by hand or damaged: this checkpoint only.
                raise StoreCorruptedError(
                    f"checkpoint {cp.ref} in {self.path}: its history record is malformed "
                    f"({type(exc).__name__}: {exc}); delete the checkpoint or restore .nb_sessions",
                    location=str(self._history_dir(cp.key)),
                ) from None

        return await asyncio.to_thread(guarded)

    def _skeleton_bytes(
        self, key: SessionKey, index: dict[str, Any], entry: dict[str, Any], known: list[bytes] | None = None
    ) -> bytes:
        """A checkpoint's skeleton file as JSON (an encrypted one opened: its entries' hashes
        read from the pack, or taken from ``known``, the pack's hashes by ordinal)."""
        path = self._history_dir(key) / f"{entry['seq']}.json"
        data = read_regular(path)
        cipher = self._crypt()
        if cipher is None:
            return data
        ordinals = [n for _, ranges in entry.get("chunks") or () for n in from_ranges(check_ranges(ranges))]
        if known is not None and all(0 <= n < len(known) for n in ordinals):
            hashes = [known[n] for n in ordinals]
        else:
            pack = EntryPack(path.parent, PackState.from_json(index.get("pack")))
            hashes = [h for _, h in pack.records(ordinals, f"checkpoint {key}@{entry['seq']}")]
        return sealed.open_state(cipher, key, entry, data, hashes, path)

    async def _verify(self, cp: Checkpoint) -> dict[str, Any]:
        return await self._read(cp, thorough=True)

    def _read_sealed(self, cp: Checkpoint) -> dict[str, Any]:
        """A checkpoint of an encrypted store: its entries opened first, then its skeleton bound to them."""
        cipher = self._crypt()
        assert cipher is not None
        index = self._read_index(cp.key)
        entry = next((e for e in (index["checkpoints"] if index else []) if e["seq"] == cp.seq), None)
        if index is None or entry is None:
            raise CheckpointNotFoundError(
                f"checkpoint {cp.ref} is no longer in {self.path} (deleted meanwhile?)", ref=cp.ref
            )
        hdir = self._history_dir(cp.key)
        path = hdir / f"{cp.seq}.json"
        data = sealed.read_file(path, cp.ref)
        self._verify_file(cp.ref, path, data, entry)
        where = f"checkpoint {cp.ref}"
        pack = EntryPack(hdir, PackState.from_json(index.get("pack")))
        hashes: list[bytes] = []
        lists = list(sealed.sealed_lists(cipher, cp.key, pack, entry.get("chunks"), where, hashes))
        state = codec.loads(sealed.open_state(cipher, cp.key, entry, data, hashes, path), where, trusted=True)
        if not isinstance(state, dict):
            raise StoreCorruptedError(f"{where} ({path}) holds no object of module states", location=str(path))
        try:
            assemble(state, lists)
        except (KeyError, IndexError, TypeError) as exc:
            raise StoreCorruptedError(f"{where}: a stored list does not fit its place ({exc})", location=str(path)) from None
        return state

    async def _sessions(self) -> list[SessionInfo]:
        return await asyncio.to_thread(self._sessions_sync)

    def _sessions_sync(self) -> list[SessionInfo]:
        if not self.path.is_dir():
            return []
        cipher = self._crypt()  # a missing or wrong key is named here, not taken for "no sessions"
        keys: dict[str, SessionKey] = {}
        hidden = self.path / HIDDEN
        if hidden.is_dir():
            for index_path in hidden.glob("*/index.json"):
                with contextlib.suppress(StoreCorruptedError, OSError):
                    index = codec.loads(read_regular(index_path), str(index_path))
                    if cipher is not None and sealed.is_sealed_index(index):
                        index = dict(zip(("user_id", "session_id"), sealed.envelope_ids(index), strict=True))
                    if isinstance(index, dict) and "session_id" in index:
                        key = _valid_key(index.get("user_id", ""), index["session_id"])
                        # An id that is a path, or names another folder than the one it lies in, is
                        # hostile input: following it would read and write outside this session.
                        if key is not None and self._history_dir(key) == index_path.parent:
                            keys[index_path.parent.name] = key
        for file in self.path.glob("*.json"):
            if file.name.startswith(".") or file.stem in keys or cipher is not None:
                continue
            key = _valid_key("", file.stem)
            if key is not None:
                keys[file.stem] = key
        infos = []
        for key in keys.values():
            try:
                history = self._history_sync(key)
            except (StoreError, LookupError, ValueError) as exc:
                if cipher is not None and isinstance(exc, StoreCorruptedError):
                    # An encrypted session whose sealed index does not open is listed, empty, so
                    # `check` names it (a plain one's damaged index leaves its latest file to list).
                    infos.append(SessionInfo(session_id=key.session_id, user_id=key.user_id, checkpoints=0,
                                             latest_seq=0, created_at=_EPOCH, updated_at=_EPOCH))
                continue
            infos.append(SessionInfo(
                session_id=key.session_id, user_id=key.user_id, checkpoints=len(history),
                latest_seq=history[-1].seq, created_at=history[0].created_at,
                updated_at=history[-1].created_at,
                labels=tuple(c.label for c in history if c.label),
            ))
        return infos

    async def _delete(self, key: SessionKey, seqs: Sequence[int] | None) -> int:
        def job(check_abort: Callable[[], None]) -> int:
            with self._locked(key, check_abort):
                index = self._read_index(key)
                plain = self._crypt() is None  # an encrypted store has no latest file to remove
                if index is None and (self._owned_by_other(key) or not plain):
                    raise self._not_found(key)  # the file and history are another session's
                if index is None or seqs is None:
                    count = len(index["checkpoints"]) if index else 1
                    check_abort()
                    if plain:
                        with contextlib.suppress(FileNotFoundError):
                            self._latest_file(key).unlink()
                    self._remove_history(key)
                    return count
                index = self._adopt_latest_file(key)
                entries = index["checkpoints"]
                doomed = set(seqs)  # once: a set per entry made pruning 20,000 checkpoints quadratic
                gone = [e for e in entries if e["seq"] in doomed]
                left = [e for e in entries if e["seq"] not in doomed]
                if not left:
                    check_abort()
                    if plain:
                        with contextlib.suppress(FileNotFoundError):
                            self._latest_file(key).unlink()
                    self._remove_history(key)
                    return len(gone)
                new_index = {**index, "checkpoints": left}
                latest_moved = plain and entries[-1] in gone
                hdir = self._history_dir(key)
                if latest_moved:
                    latest = self._full_layout(key, index, left[-1])
                    stamp = int(utcnow().timestamp() * 1e9)
                    new_index["latest_file"] = {"size": latest.size(), "mtime_ns": stamp}
                    new_index["stale_latest_file"] = self._latest_stamp(key)
                self._write_index(key, new_index, check_abort)
                if latest_moved:
                    self._write_latest(key, latest, stamp)
                for e in gone:
                    with contextlib.suppress(FileNotFoundError):
                        (hdir / f"{e['seq']}.json").unlink()
                return len(gone)

        try:
            return await run_blocking(job)
        except StoreError:
            raise
        except OSError as exc:  # a folder, symlink or special file planted in the store
            raise StoreError(f"cannot delete from {key} in {self.path}: {_os_problem(exc)} at {exc.filename}; remove what does not belong there and try again") from exc

    async def _set_label(self, key: SessionKey, seq: int, label: str | None) -> None:
        def job(check_abort: Callable[[], None]) -> None:
            with self._locked(key, check_abort):
                index = self._adopt_latest_file(key)
                entries = index["checkpoints"]
                if label is not None and any(e.get("label") == label and e["seq"] != seq for e in entries):
                    raise ConflictError(
                        f"label {label!r} already names another checkpoint of {key}; remove it there "
                        "first with store.label(ref, None)"
                    )
                new_entries = [{**e, "label": label} if e["seq"] == seq else e for e in entries]
                self._write_index(key, {**index, "checkpoints": new_entries}, check_abort)

        try:
            await run_blocking(job)
        except StoreError:
            raise
        except OSError as exc:  # a folder, symlink or special file planted in the store
            raise StoreError(f"cannot label a checkpoint of {key} in {self.path}: {_os_problem(exc)} at {exc.filename}; remove what does not belong there and try again") from exc

    async def _vacuum(self) -> int:
        """Rewrite each session's entry pack without the entries no checkpoint uses any more."""

        def job(check_abort: Callable[[], None]) -> int:
            reclaimed = 0
            for info in self._sessions_sync():
                key = info.key
                with self._locked(key, check_abort):
                    index = self._read_index(key)
                    if index is None or "pack" not in index:
                        continue
                    hdir = self._history_dir(key)
                    pack = EntryPack(hdir, PackState.from_json(index["pack"]))
                    live = sorted({n for e in index["checkpoints"] for _, r in e.get("chunks", ()) for n in from_ranges(r)})
                    if len(live) == pack.state.count:
                        continue
                    before = _size(pack.data_path) + _size(pack.index_path)
                    cipher = self._crypt()
                    fresh, remap = pack.compact(
                        live, sealed.check_entry(cipher, key, pack) if cipher is not None else None
                    )
                    checkpoints = [
                        {**e, "chunks": [[p, to_ranges([remap[n] for n in from_ranges(r)])] for p, r in e["chunks"]]}
                        if e.get("chunks") else e
                        for e in index["checkpoints"]
                    ]
                    self._write_index(key, {**index, "checkpoints": checkpoints, "pack": fresh.state.to_json()}, check_abort)
                    pack.remove_files()
                    self._caches.pop(key, None)
                    reclaimed += before - _size(fresh.data_path) - _size(fresh.index_path)
            return reclaimed

        try:
            return await run_blocking(job)
        except StoreError:
            raise
        except OSError as exc:  # a folder, symlink or special file planted in the store
            raise StoreError(f"cannot vacuum {self.path}: {_os_problem(exc)} at {exc.filename}; remove what does not belong there and try again") from exc

    async def _search(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """Scan each session's entry pack once, then map matches to the checkpoints using them."""
        from ..search import (
            Hit,
            entry_message,
            matches,
            scan_state,
            searchable_text,
            unless_unreadable,
        )

        def job() -> list[Hit]:
            hits: list[Hit] = []
            needle = text.lower().encode("utf-8", "surrogatepass")  # a lone surrogate is a query too
            # A raw-bytes prefilter is exact only where JSON writes the text unescaped.
            prefilter = text.isascii() and not any(c in text for c in '"\\') and text.isprintable()
            cipher = self._crypt()
            for key in keys:
                index = self._read_index(key)
                if index is None and cipher is not None:
                    continue
                if index is None:
                    for cp in self._history_sync(key):
                        with unless_unreadable(f"{cp.ref} ({self._latest_file(key).name})"):
                            state = codec.loads(read_regular(self._latest_file(key)))
                            hits += [Hit(key.session_id, key.user_id, cp.seq, p, m) for p, m in scan_state(state, text)]
                    continue
                found: dict[int, Any] = {}
                hashes: list[bytes] = []  # an encrypted pack's keyed hashes, by ordinal
                if "pack" in index:
                    pack = EntryPack(self._history_dir(key), PackState.from_json(index["pack"]))
                    with unless_unreadable(f"the stored entries of {key} ({pack.data_path.name})"):
                        # An encrypted pack is opened in memory; nothing of it is written.
                        every = [(0, pack.state.count)] if pack.state.count else []
                        for n, data in (
                            pack.iter_entries() if cipher is None
                            else enumerate(sealed.open_entries(cipher, key, pack, every, str(pack.data_path), hashes))
                        ):
                            if prefilter and needle not in data.lower():
                                continue
                            with unless_unreadable(f"stored entry {n} of {key}"):
                                msg = entry_message(codec.loads(data))
                                if msg is not None and matches(searchable_text(msg), text):
                                    found[n] = msg
                for entry in index["checkpoints"]:
                    seq = entry["seq"]
                    with unless_unreadable(f"{key}@{seq}"):
                        skeleton = codec.loads(self._skeleton_bytes(key, index, entry, hashes or None))
                        hits += [Hit(key.session_id, key.user_id, seq, p, m) for p, m in scan_state(skeleton, text)]
                    for p, ranges in entry.get("chunks", ()):
                        where = path_text(conversation_path(p))
                        hits += [
                            Hit(key.session_id, key.user_id, seq, where, found[n])
                            for n in from_ranges(ranges) if n in found
                        ]
            return hits

        return await asyncio.to_thread(job)


class _Layout:
    """A latest file to write: literal JSON pieces and, between them, runs of pack entries."""

    def __init__(self, pieces: list[bytes | Ranges], pack: EntryPack | None, where: str) -> None:
        self.pieces = pieces
        self.pack = pack
        self.where = where
        self._size: int | None = None

    @classmethod
    def of(
        cls,
        skeleton: dict[str, Any],
        rows: Sequence[tuple[tuple[str | int, ...], Ranges]],
        pack: EntryPack,
        where: str,
    ) -> _Layout:
        """The full state: the skeleton (modified here) with each list's entries from ``pack``.

        Entries are copied as the bytes they were stored as, never decoded and re-encoded.
        """
        if not rows:
            return cls([codec.dumps(skeleton)], pack, where)
        token = secrets.token_hex(8)
        marks = [f"\x00nbs:{token}:{i}" for i in range(len(rows))]  # strings no state holds
        text = codec.dumps(assemble(skeleton, [(path, mark) for (path, _), mark in zip(rows, marks, strict=True)]))  # type: ignore[misc]
        encoded = [codec.dumps(mark) for mark in marks]
        found = sorted((text.index(mark), mark, ranges) for mark, (_, ranges) in zip(encoded, rows, strict=True))
        pieces: list[bytes | Ranges] = []
        at = 0
        for position, mark, ranges in found:
            pieces += (text[at:position], ranges)
            at = position + len(mark)
        pieces.append(text[at:])
        return cls(pieces, pack, where)

    def size(self) -> int:
        if self._size is None:
            self._size = sum(
                len(piece) if isinstance(piece, bytes) else self._pack().array_size(piece, self.where)
                for piece in self.pieces
            )
        return self._size

    def write(self, out: BinaryIO) -> int:
        """Write the file's bytes to ``out``; raise if they are not :meth:`size` bytes."""
        expected = self.size()
        written = sum(
            out.write(piece) if isinstance(piece, bytes) else self._pack().write_array(out, piece, self.where)
            for piece in self.pieces
        )
        if written != expected:
            raise StoreCorruptedError(
                f"{self.where}: the entry pack yielded {written} bytes where its index promises {expected}",
                location=self.where,
            )
        return written

    def _pack(self) -> EntryPack:
        assert self.pack is not None, "a layout with lists has a pack"
        return self.pack


class _PackCache:
    """What this process knows of a session's pack: valid while the pack state is unchanged."""

    def __init__(
        self, pack: PackState, ordinals: dict[bytes, int], chunks: ChunkCache | None,
        hasher: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.pack = pack
        self.ordinals = ordinals
        self.chunks = chunks or (ChunkCache(hasher) if hasher is not None else ChunkCache())


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _store_id(header: bytes) -> bytes | None:
    """The store id a header names (None when it cannot be read: opening it will say why)."""
    with contextlib.suppress(Exception):
        return base64.b64decode(codec.loads(header)["store"])
    return None


def _valid_key(user_id: Any, session_id: Any) -> SessionKey | None:
    """The key of ids read from disk, or None when they are not ids the API would accept."""
    try:
        return SessionKey(validate_id(user_id, "user id", literal=True), validate_id(session_id, literal=True))
    except InvalidIdError:
        return None


_READ_ATTEMPTS = 20


class _Moved(Exception):
    """The latest file changed while a read used it: read again."""


def _file_identity(path: Path) -> tuple[int, int, int, int] | None:
    """What changes whenever ``path`` is replaced (atomic writes make a new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def _is_bare(data: bytes) -> bool:
    """True when a file's bytes are one bare AgentScope 2.x ``AgentState`` dump."""
    try:
        parsed = codec.loads(data, "latest file")
    except StoreCorruptedError:
        return False
    return _wrap_bare(parsed) is not parsed


def _wrap_bare(state: Any) -> Any:
    """``{BARE_MODULE: state}`` for a bare ``AgentState`` dump, anything else as it is."""
    if isinstance(state, dict) and v2.is_agent_state(state) and v2.foreign_generation(state) is None:
        return {BARE_MODULE: state}
    return state


def _check_bare(index: dict[str, Any], states: dict[str, Any], key: SessionKey) -> None:
    """A bare-AgentState session holds exactly its one module: refuse any other set, by name."""
    name = index.get("bare")
    if name and list(states) != [name]:
        raise StoreError(
            f"session {key}'s file holds one bare AgentScope AgentState (module {name!r}); "
            f"save exactly that module (store.save(..., {name}=agent)), not {sorted(states)}, "
            "or use another session for other objects"
        )


def _unwrap_bare(
    index: dict[str, Any], skeleton: dict[str, Any], rows: Sequence[tuple[tuple[str | int, ...], Ranges]]
) -> tuple[dict[str, Any], list[tuple[tuple[str | int, ...], Ranges]]]:
    """The skeleton and list rows of the latest file: unwrapped to the bare state in a bare session."""
    name = index.get("bare")
    if not name:
        return skeleton, list(rows)
    return skeleton[name], [(path[1:], r) for path, r in rows]


class _Comparer:
    """A write-only sink that compares what is written with a file's bytes at the same place.

    It answers ``tell``/``seek``/``truncate`` as the pack's copy expects of a file, so a
    span that is rewritten entry by entry is compared again from where it restarted.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.pos = 0
        self.mismatch: int | None = None

    @property
    def same(self) -> bool:
        return self.mismatch is None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.f.read(len(data)) != data and self.mismatch is None:
            self.mismatch = self.pos
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int) -> int:
        self.pos = pos
        self.f.seek(pos)
        if self.mismatch is not None and self.mismatch >= pos:
            self.mismatch = None
        return pos

    def truncate(self) -> int:
        return self.pos


def _same_stamp(stamp: dict[str, int], recorded: Any) -> bool:
    return isinstance(recorded, dict) and [stamp["size"], stamp["mtime_ns"]] == [
        recorded.get("size"), recorded.get("mtime_ns")
    ]


def _os_problem(exc: OSError) -> str:
    """An OSError in words a person can act on."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return f"the disk is full ({exc.strerror}); free space and save again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the store is read-only here ({exc.strerror})"
    return str(exc)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
