"""File-system helpers: atomic writes, owner-only files, leftover temp files, commit points."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from ..errors import StoreCorruptedError

__all__ = [
    "Aborted",
    "atomic_write",
    "clean_temp_files",
    "fsync_dir",
    "make_folders",
    "open_regular",
    "read_regular",
    "run_blocking",
    "settle_late_cancel",
]

T = TypeVar("T")
TEMP_SUFFIX = ".nbs-tmp"


def make_folders(folder: Path) -> None:
    """Create ``folder`` and each missing parent, every one owner-only (``0o700``).

    ``mkdir(parents=True)`` would give the parents the umask's mode. Every store
    creates the folders its path needs this way on its first write.
    """
    for each in [*reversed(folder.parents), folder]:
        if not each.exists():
            each.mkdir(mode=0o700, exist_ok=True)  # exist_ok: another process may race us


class Aborted(Exception):
    """Raised inside a blocking job that was asked to stop before its commit point."""


def open_regular(path: Path) -> int:
    """Open a store file for reading: a regular file, never through a symlink, never blocking.

    A FIFO, a device (``/dev/zero``), a folder or a symlink planted where a
    store file belongs is refused with :class:`StoreCorruptedError` naming the
    path, before a byte is read: nothing outside the store is read, nothing
    hangs, and memory stays bounded by the file's size. A missing file raises
    ``FileNotFoundError`` as usual.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            problem = "is a symbolic link; a store never follows links inside it"
        else:
            problem = f"cannot be opened ({exc.strerror or exc})"
        raise StoreCorruptedError(
            f"{path} {problem}: move it away (the rest of the store stays readable)", location=str(path)
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreCorruptedError(
            f"{path} is not a regular file (a folder, FIFO or device was put there): move it away",
            location=str(path),
        )
    return fd


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as fh:
        return fh.read()


def fsync_dir(path: Path) -> None:
    """Flush a directory entry to disk (so a rename survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path,
    data: bytes | Callable[[BinaryIO], object],
    before_commit: Callable[[], None] | None = None,
    *,
    mtime_ns: int | None = None,
) -> None:
    """Write ``data`` to ``path`` all or nothing: temp file, fsync, ``os.replace``, fsync folder.

    ``data`` is the bytes, or a function that writes them to the open temp
    file (so a large file need not be in memory whole).

    The temp file carries the writer's pid so :func:`clean_temp_files` can tell
    a dead writer's leftovers from a live one's. ``before_commit`` runs just
    before the rename and may raise :class:`Aborted`. ``mtime_ns`` stamps the
    file before it appears, so no reader ever sees it with another time.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def clean_temp_files(folder: Path) -> int:
    """Remove temp files left in ``folder`` (recursively) by writers that no longer run."""
    removed = 0
    if not folder.is_dir():
        return 0
    for tmp in folder.rglob(f"*{TEMP_SUFFIX}"):
        parts = tmp.name[: -len(TEMP_SUFFIX)].rsplit(".", 2)
        try:
            pid = int(parts[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def run_blocking(job: Callable[[Callable[[], None]], T]) -> T:
    """Run ``job(check_abort)`` in a thread; cancelling stops it only before its commit point.

    ``job`` calls ``check_abort()`` right before committing; after a cancel it
    raises :class:`Aborted` there and nothing is written. If the job had
    already committed, its result is returned: the cancel came too late.
    """
    stop = threading.Event()

    def check_abort() -> None:
        if stop.is_set():
            raise Aborted

    future = asyncio.ensure_future(asyncio.to_thread(job, check_abort))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        try:
            result = await future
        except Aborted:
            raise asyncio.CancelledError from None
        settle_late_cancel()
        return result


def settle_late_cancel() -> None:
    """Withdraw a cancel that came after the commit point: the operation's result stands."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):  # Python 3.11+
        task.uncancel()
