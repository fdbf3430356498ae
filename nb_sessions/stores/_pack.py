"""The JSON store's entry pack: every distinct list entry of a session, stored once.

``entries-<gen>.jsonl`` holds one JSON entry per line, appended in order;
``entries-<gen>.idx`` holds a fixed 28-byte record per entry (offset, length,
content hash). An entry's *ordinal* is its line number. Both files only
grow; the session's ``index.json`` records how many entries and bytes are
committed, and anything past that (a save killed mid-append) is cut off
before the next append. ``compact`` writes a new generation holding only
the entries still referenced.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreCorruptedError
from ._fs import fsync_dir

__all__ = ["EntryPack", "PackState", "from_ranges", "to_ranges"]

_RECORD = struct.Struct("<QI16s")


@dataclass(frozen=True)
class PackState:
    """What ``index.json`` records of the pack: its generation and committed size."""

    gen: int = 1
    count: int = 0
    nbytes: int = 0
    uid: str = ""  # set once per pack: equal counts in a re-created session are another pack

    @classmethod
    def from_json(cls, data: object) -> PackState:
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(
                int(data.get("gen", 1)), int(data.get("count", 0)), int(data.get("bytes", 0)),
                str(data.get("uid", "")),
            )
        except (TypeError, ValueError) as exc:
            raise StoreCorruptedError(f"a history index holds a malformed pack record ({exc})") from None

    def to_json(self) -> dict[str, int | str]:
        return {"gen": self.gen, "count": self.count, "bytes": self.nbytes, "uid": self.uid}


class EntryPack:
    """One generation of a session's entry pack."""

    def __init__(self, folder: Path, state: PackState) -> None:
        self.folder = folder
        self.state = state
        self.data_path = folder / f"entries-{state.gen}.jsonl"
        self.index_path = folder / f"entries-{state.gen}.idx"

    def hashes(self) -> dict[bytes, int]:
        """Content hash -> ordinal for every committed entry."""
        raw = self._read_index()
        return {
            _RECORD.unpack_from(raw, i * _RECORD.size)[2]: i for i in range(self.state.count)
        }

    def append(self, blobs: Sequence[tuple[bytes, bytes]]) -> PackState:
        """Append ``(hash, data)`` entries after the committed ones (fsynced); return the new state.

        The caller commits the returned state by writing it into ``index.json``.
        """
        if not blobs:
            return self.state
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        offset = self.state.nbytes
        records = bytearray()
        payload = bytearray()
        for h, data in blobs:
            records += _RECORD.pack(offset + len(payload), len(data), h)
            payload += data + b"\n"
        for path, committed, extra in (
            (self.data_path, self.state.nbytes, payload),
            (self.index_path, self.state.count * _RECORD.size, records),
        ):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, committed)  # drop what a killed save appended
                os.lseek(fd, committed, os.SEEK_SET)
                view = memoryview(bytes(extra))
                while view:  # os.write may write less than asked (a full disk, a signal)
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(self.folder)
        return PackState(self.state.gen, self.state.count + len(blobs), offset + len(payload), self.state.uid)

    def read(self, ordinals: Sequence[int], where: str) -> list[bytes]:
        """The entries at ``ordinals``, in that order."""
        if not ordinals:
            return []
        raw = self._read_index()
        try:
            fh = open(self.data_path, "rb")  # noqa: SIM115 - closed below, with the map
        except FileNotFoundError:
            raise StoreCorruptedError(f"{where}: {self.data_path} is missing", location=str(self.data_path)) from None
        with fh:
            if os.fstat(fh.fileno()).st_size < self.state.nbytes:
                raise StoreCorruptedError(
                    f"{where}: {self.data_path.name} is shorter than the history expects; "
                    "checkpoints of this session cannot be read",
                    location=str(self.data_path),
                )
            return self._slices(fh, ordinals, raw, where)

    def _slices(self, fh: Any, ordinals: Sequence[int], raw: bytes, where: str) -> list[bytes]:
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            out = []
            for n in ordinals:
                if not 0 <= n < self.state.count:
                    raise StoreCorruptedError(
                        f"{where}: entry {n} is beyond the {self.state.count} in {self.data_path.name}",
                        location=str(self.data_path),
                    )
                offset, length, _ = _RECORD.unpack_from(raw, n * _RECORD.size)
                out.append(data[offset:offset + length])
        return out

    def iter_entries(self) -> Iterable[tuple[int, bytes]]:
        """``(ordinal, data)`` for every committed entry."""
        return enumerate(self.read(range(self.state.count), str(self.data_path)))

    def compact(self, keep: Sequence[int]) -> tuple[EntryPack, dict[int, int]]:
        """Write the next generation holding only ``keep`` (sorted ordinals); return it and old -> new ordinals."""
        old = self.read(keep, str(self.data_path))
        raw = self._read_index()
        hashes = [_RECORD.unpack_from(raw, n * _RECORD.size)[2] for n in keep]
        fresh = EntryPack(self.folder, PackState(self.state.gen + 1, 0, 0, self.state.uid))
        for path in (fresh.data_path, fresh.index_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fresh.state = fresh.append(list(zip(hashes, old, strict=True)))
        return fresh, {n: i for i, n in enumerate(keep)}

    def remove_files(self) -> None:
        """Delete this generation's files."""
        for path in (self.data_path, self.index_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _read_index(self) -> bytes:
        need = self.state.count * _RECORD.size
        try:
            with open(self.index_path, "rb") as fh:
                raw = fh.read(need)
        except FileNotFoundError:
            raw = b""
        if len(raw) < need:
            raise StoreCorruptedError(
                f"{self.index_path} holds {len(raw) // _RECORD.size} entries, the history expects "
                f"{self.state.count}; checkpoints of this session cannot be read",
                location=str(self.index_path),
            )
        return raw


def to_ranges(ordinals: Sequence[int]) -> list[list[int]]:
    """``[4, 5, 6, 9]`` -> ``[[4, 3], [9, 1]]`` (start, count)."""
    out: list[list[int]] = []
    for n in ordinals:
        if out and n == out[-1][0] + out[-1][1]:
            out[-1][1] += 1
        else:
            out.append([n, 1])
    return out


def from_ranges(ranges: Iterable[Sequence[int]]) -> list[int]:
    """The inverse of :func:`to_ranges`; malformed ranges raise :class:`StoreCorruptedError`."""
    try:
        return [n for start, count in ranges for n in range(start, start + count)]
    except (TypeError, ValueError) as exc:
        raise StoreCorruptedError(f"a history index holds malformed entry ranges ({exc})") from None
