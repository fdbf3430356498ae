"""JSONStore: a folder of AgentScope JSONSession files, with history kept beside them.

``<folder>/<name>.json`` is always the latest state in AgentScope's exact
format (``name`` is ``session`` or ``user_session``), so AgentScope's own
JSONSession reads what nb_sessions writes and the other way round. History
lives in ``<folder>/.nb_sessions/<name>/``: ``index.json`` (the checkpoints)
and one ``<seq>.json`` per checkpoint.

A save writes the checkpoint file, then the index (the commit point), then
the latest file; every write is atomic (temp file, fsync, ``os.replace``,
fsync the folder) and a sidecar lock file serialises writers across
processes: a lock on the data file itself protects nothing once
``os.replace`` swaps the inode. A latest file that AgentScope (or anyone)
rewrote after our last save shows up as one more checkpoint, and is kept in
the history at the next save.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

from .. import codec
from ..chunks import materialize
from ..errors import ConflictError, StoreCorruptedError, StoreError
from ._fs import atomic_write, clean_temp_files, run_blocking
from .base import BaseStore, Checkpoint, Redactor, SessionInfo, SessionKey, utcnow

__all__ = ["JSONStore"]

HIDDEN = ".nb_sessions"
INDEX_FORMAT = 1
SOURCE_FILE = "json-file"  # a checkpoint that is the latest file itself (not yet in history)


def stem_for(key: SessionKey) -> str:
    """AgentScope's file name (without ``.json``) for a session."""
    return f"{key.user_id}_{key.session_id}" if key.user_id else key.session_id


class JSONStore(BaseStore):
    """Checkpoints as JSON files in a folder (created on first write, owner-only files)."""

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 60.0, redact: Redactor | None = None
    ) -> None:
        super().__init__(redact=redact)
        self.path = Path(path).expanduser().absolute()
        self.timeout = timeout
        self._cleaned = False
        self._modules_cache: dict[tuple[str, int, int], tuple[str, ...]] = {}

    @property
    def location(self) -> str:
        """The folder."""
        return str(self.path)

    # -- paths ---------------------------------------------------------------

    def _latest_file(self, key: SessionKey) -> Path:
        return self.path / f"{stem_for(key)}.json"

    def _history_dir(self, key: SessionKey) -> Path:
        return self.path / HIDDEN / stem_for(key)

    def _lock(self, key: SessionKey) -> filelock.FileLock:
        (self.path / HIDDEN).mkdir(mode=0o700, parents=True, exist_ok=True)
        return filelock.FileLock(
            self.path / HIDDEN / f"{stem_for(key)}.lock", timeout=self.timeout, mode=0o600,
            thread_local=False,
        )

    def _prepare_folder(self) -> None:
        if not self.path.exists():
            try:
                self.path.mkdir(mode=0o700, parents=True)
            except OSError as exc:
                raise StoreError(f"cannot create store folder {self.path}: {exc}") from exc
        elif not self.path.is_dir():
            raise StoreError(f"{self.path} is a file, not a folder: a JSONStore is a folder")
        if not self._cleaned:
            clean_temp_files(self.path)
            self._cleaned = True

    # -- index ---------------------------------------------------------------

    def _read_index(self, key: SessionKey) -> dict[str, Any] | None:
        path = self._history_dir(key) / "index.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        index = codec.loads(data, str(path))
        if not isinstance(index, dict) or not isinstance(index.get("checkpoints"), list):
            raise StoreCorruptedError(
                f"{path} is not a history index; move it away to see the latest file alone",
                location=str(path),
            )
        if (index.get("user_id"), index.get("session_id")) != tuple(key):
            return None  # another session whose file name collides with this one
        return index

    def _write_index(self, key: SessionKey, index: dict[str, Any], check: Callable[[], None] | None = None) -> None:
        atomic_write(self._history_dir(key) / "index.json", codec.dumps(index), check)

    def _cp_from_entry(self, key: SessionKey, entry: dict[str, Any]) -> Checkpoint:
        return Checkpoint(
            session_id=key.session_id, user_id=key.user_id, seq=int(entry["seq"]),
            created_at=datetime.fromisoformat(entry["created_at"]),
            modules=tuple(entry.get("modules", ())), size=int(entry.get("size", 0)),
            parent=entry.get("parent"), label=entry.get("label"),
            metadata=dict(entry.get("metadata") or {}), store=self,
        )

    def _file_checkpoint(self, key: SessionKey, seq: int, parent: int | None, note: str) -> Checkpoint | None:
        """The latest file as a checkpoint of its own (AgentScope wrote it, or wrote it last)."""
        path = self._latest_file(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return Checkpoint(
            session_id=key.session_id, user_id=key.user_id, seq=seq,
            created_at=datetime.fromtimestamp(st.st_mtime, timezone.utc),
            modules=self._modules_of(path, st), size=st.st_size, parent=parent,
            metadata={"source": SOURCE_FILE, "note": note}, store=self,
        )

    def _modules_of(self, path: Path, st: os.stat_result) -> tuple[str, ...]:
        cache_key = (str(path), st.st_size, st.st_mtime_ns)
        if cache_key not in self._modules_cache:
            try:
                parsed = codec.loads(path.read_bytes(), str(path))
                names = tuple(parsed) if isinstance(parsed, dict) else ()
            except (StoreCorruptedError, OSError):
                names = ()
            self._modules_cache[cache_key] = names
        return self._modules_cache[cache_key]

    def _latest_changed(self, key: SessionKey, index: dict[str, Any]) -> bool:
        """True when the latest file is not the one our last save wrote."""
        path = self._latest_file(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        expected = index.get("latest_file") or {}
        if [st.st_size, st.st_mtime_ns] == [expected.get("size"), expected.get("mtime_ns")]:
            return False
        # A save interrupted between its index and its latest file leaves the
        # previous checkpoint's bytes there: stale, not a foreign write.
        entries = index["checkpoints"]
        if len(entries) >= 2 and entries[-2].get("size") == st.st_size:
            with contextlib.suppress(OSError):
                previous = self._history_dir(key) / f"{entries[-2]['seq']}.json"
                if previous.read_bytes() == path.read_bytes():
                    return False
        return True

    def _history_sync(self, key: SessionKey) -> list[Checkpoint]:
        index = self._read_index(key)
        if index is None:
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
    ) -> Checkpoint:
        def job(check_abort: Callable[[], None]) -> Checkpoint:
            data = codec.dumps(materialize(states))
            self._prepare_folder()
            with self._locked(key, check_abort):
                index = self._adopt_latest_file(key)
                seq = int(index["next_seq"])
                entries = index["checkpoints"]
                if label is not None and any(e.get("label") == label for e in entries):
                    raise ConflictError(
                        f"label {label!r} already names another checkpoint of {key}; choose another "
                        "label, or move it first with store.label(ref, None)"
                    )
                known = {e["seq"] for e in entries}
                chosen = parent if parent in known else (entries[-1]["seq"] if entries else None)
                now = utcnow()
                entry = {
                    "seq": seq, "parent": chosen, "created_at": now.isoformat(), "label": label,
                    "modules": list(states), "size": len(data), "metadata": metadata,
                }
                hdir = self._history_dir(key)
                hdir.mkdir(mode=0o700, parents=True, exist_ok=True)
                atomic_write(hdir / f"{seq}.json", data)
                stamp = now.timestamp()
                ns = int(stamp * 1e9)
                new_index = {
                    **index, "next_seq": seq + 1, "checkpoints": [*entries, entry],
                    "latest_file": {"size": len(data), "mtime_ns": ns},
                }
                try:
                    self._write_index(key, new_index, check_abort)  # the commit point
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        (hdir / f"{seq}.json").unlink()
                    raise
                self._write_latest(key, data, ns)
            return self._cp_from_entry(key, entry)

        cp = await run_blocking(job)
        self._parents[key] = cp.seq
        return cp

    def _write_latest(self, key: SessionKey, data: bytes, mtime_ns: int) -> None:
        path = self._latest_file(key)
        atomic_write(path, data)
        os.utime(path, ns=(mtime_ns, mtime_ns))

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
            except filelock.Timeout:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"session {key} in {self.path} stayed locked for {self.timeout:.0f}s by "
                        "another writer; retry, or raise JSONStore(timeout=...)"
                    ) from None
        try:
            yield
        finally:
            lock.release()

    def _adopt_latest_file(self, key: SessionKey) -> dict[str, Any]:
        """Return the index, first taking a latest file we did not write into the history."""
        index = self._read_index(key)
        stem_index = self._history_dir(key) / "index.json"
        if index is None and stem_index.exists():
            raise ConflictError(
                f"{self._latest_file(key).name} already belongs to another session with the same "
                f"file name (AgentScope names files user_session.json); choose another id for {key}"
            )
        if index is None:
            index = {"format": INDEX_FORMAT, "user_id": key.user_id, "session_id": key.session_id,
                     "next_seq": 1, "checkpoints": []}
            note = "imported from an AgentScope JSONSession file"
        elif self._latest_changed(key, index):
            note = "the latest file, written outside nb_sessions"
        else:
            return index
        path = self._latest_file(key)
        try:
            data = path.read_bytes()
            st = path.stat()
        except FileNotFoundError:
            return index
        seq = int(index["next_seq"])
        entries = index["checkpoints"]
        hdir = self._history_dir(key)
        hdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(hdir / f"{seq}.json", data)
        entry = {
            "seq": seq, "parent": entries[-1]["seq"] if entries else None,
            "created_at": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(),
            "label": None, "modules": list(self._modules_of(path, st)), "size": len(data),
            "metadata": {"source": "imported", "note": note},
        }
        index = {**index, "next_seq": seq + 1, "checkpoints": [*entries, entry],
                 "latest_file": {"size": st.st_size, "mtime_ns": st.st_mtime_ns}}
        self._write_index(key, index)
        return index

    async def _read(self, cp: Checkpoint) -> dict[str, Any]:
        def job() -> dict[str, Any]:
            if cp.metadata.get("source") == SOURCE_FILE:
                path = self._latest_file(cp.key)
            else:
                path = self._history_dir(cp.key) / f"{cp.seq}.json"
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise StoreCorruptedError(
                    f"checkpoint {cp.ref}: its file {path} is missing; delete the checkpoint "
                    f"(store.delete({cp.ref!r})) or restore the file",
                    location=str(path),
                ) from None
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc}") from exc
            state = codec.loads(data, f"checkpoint {cp.ref} ({path})")
            if not isinstance(state, dict):
                raise StoreCorruptedError(
                    f"checkpoint {cp.ref} ({path}) holds {type(state).__name__} JSON, not an object "
                    "of module states",
                    location=str(path),
                )
            return state

        return await asyncio.to_thread(job)

    async def _sessions(self) -> list[SessionInfo]:
        return await asyncio.to_thread(self._sessions_sync)

    def _sessions_sync(self) -> list[SessionInfo]:
        if not self.path.is_dir():
            return []
        keys: dict[str, SessionKey] = {}
        hidden = self.path / HIDDEN
        if hidden.is_dir():
            for index_path in hidden.glob("*/index.json"):
                with contextlib.suppress(StoreCorruptedError, OSError):
                    index = codec.loads(index_path.read_bytes(), str(index_path))
                    if isinstance(index, dict) and "session_id" in index:
                        keys[index_path.parent.name] = SessionKey(
                            str(index.get("user_id", "")), str(index["session_id"])
                        )
        for file in self.path.glob("*.json"):
            if file.name.startswith(".") or file.stem in keys:
                continue
            keys[file.stem] = SessionKey("", file.stem)
        infos = []
        for key in keys.values():
            try:
                history = self._history_sync(key)
            except (StoreError, LookupError, ValueError):
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
                if index is None or seqs is None:
                    count = len(index["checkpoints"]) if index else 1
                    check_abort()
                    with contextlib.suppress(FileNotFoundError):
                        self._latest_file(key).unlink()
                    shutil.rmtree(self._history_dir(key), ignore_errors=True)
                    return count
                index = self._adopt_latest_file(key)
                entries = index["checkpoints"]
                gone = [e for e in entries if e["seq"] in set(seqs)]
                left = [e for e in entries if e["seq"] not in set(seqs)]
                if not left:
                    check_abort()
                    with contextlib.suppress(FileNotFoundError):
                        self._latest_file(key).unlink()
                    shutil.rmtree(self._history_dir(key), ignore_errors=True)
                    return len(gone)
                new_index = {**index, "checkpoints": left}
                latest_moved = entries[-1] in gone
                hdir = self._history_dir(key)
                if latest_moved:
                    data = (hdir / f"{left[-1]['seq']}.json").read_bytes()
                    ns = utcnow().timestamp()
                    stamp = int(ns * 1e9)
                    new_index["latest_file"] = {"size": len(data), "mtime_ns": stamp}
                self._write_index(key, new_index, check_abort)
                if latest_moved:
                    self._write_latest(key, data, stamp)
                for e in gone:
                    with contextlib.suppress(FileNotFoundError):
                        (hdir / f"{e['seq']}.json").unlink()
                return len(gone)

        return await run_blocking(job)

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

        await run_blocking(job)

    async def _vacuum(self) -> int:
        return 0  # deleted files give their space back at once
