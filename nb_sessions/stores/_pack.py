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
import io
import mmap
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..chunks import verify_entries
from ..errors import StoreCorruptedError
from ._fs import fsync_dir, open_regular

__all__ = ["EntryPack", "PackState", "Ranges", "check_ranges", "from_ranges", "to_ranges"]

_RECORD = struct.Struct("<QI16s")
Ranges = Sequence[Sequence[int]]  # (first ordinal, count) pairs, as to_ranges makes them
_BLOCK = 1 << 20  # bytes copied at a time between the pack and a latest file


def write_fully(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (it may write less: a full disk, a signal)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _lines(blobs: Sequence[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """The entries, one per line, in blocks of about ``_BLOCK`` bytes."""
    block: list[bytes] = []
    size = 0
    for _, data in blobs:
        block += (data, b"\n")
        size += len(data) + 1
        if size >= _BLOCK:
            yield b"".join(block)
            block, size = [], 0
    if block:
        yield b"".join(block)


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
        self._index: tuple[PackState, bytes] | None = None

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
        position = offset
        for h, data in blobs:
            records += _RECORD.pack(position, len(data), h)
            position += len(data) + 1
        for path, committed, blocks in (
            (self.data_path, self.state.nbytes, _lines(blobs)),
            (self.index_path, self.state.count * _RECORD.size, iter([bytes(records)])),
        ):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, committed)  # drop what a killed save appended
                os.lseek(fd, committed, os.SEEK_SET)
                for block in blocks:
                    write_fully(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(self.folder)
        return PackState(self.state.gen, self.state.count + len(blobs), position, self.state.uid)

    def read(self, ordinals: Sequence[int], where: str) -> list[bytes]:
        """The entries at ``ordinals``, in that order."""
        if not ordinals:
            return []
        raw = self._read_index()
        with self._mapped(where) as data:
            return self._slices(data, ordinals, raw, where)

    def _slices(self, data: mmap.mmap, ordinals: Sequence[int], raw: bytes, where: str) -> list[bytes]:
        out = []
        for n, offset, length, h in self._located(ordinals, raw, where):
            verify_entries(data, [(offset, length, h)], where, str(self.data_path), [n])
            out.append(data[offset:offset + length])
        return out

    def _located(self, ordinals: Sequence[int], raw: bytes, where: str) -> Iterator[tuple[int, int, int, bytes]]:
        """``(ordinal, offset, length, hash)`` of each entry at ``ordinals``, its bounds checked."""
        for n in ordinals:
            if not 0 <= n < self.state.count:
                raise StoreCorruptedError(
                    f"{where}: entry {n} is beyond the {self.state.count} in {self.data_path.name}",
                    location=str(self.data_path),
                )
            offset, length, h = _RECORD.unpack_from(raw, n * _RECORD.size)
            if offset + length > self.state.nbytes:
                raise self._damaged(where)
            yield n, offset, length, h

    def array_size(self, ranges: Ranges, where: str) -> int:
        """The length of :meth:`write_array`'s output for ``ranges``."""
        if not ranges:
            return 2
        raw = self._read_index()
        spans = self._spans(ranges, raw, where)
        return 1 + sum(end - start for start, end, _, _, _ in spans) + len(spans)

    def write_array(self, out: BinaryIO, ranges: Ranges, where: str) -> int:
        """Write the entries of ``ranges`` to ``out`` as one JSON array; return the bytes written.

        Entries stored one after another are copied from the pack file in blocks,
        their newlines turned into commas (compact JSON has no raw newline), so a
        100 MB array never sits in memory whole.
        """
        return self._copy_array(out, ranges, where)[0]

    def read_array(self, ranges: Ranges, where: str) -> tuple[bytes, bool]:
        """The entries of ``ranges`` as one JSON array, and whether any starts with a space.

        A space starts the entries :mod:`nb_sessions.codec` wrote by its exact path.
        """
        buffer = io.BytesIO()
        exact = self._copy_array(buffer, ranges, where)[1]
        return buffer.getvalue(), exact

    def _copy_array(self, out: BinaryIO, ranges: Ranges, where: str) -> tuple[int, bool]:
        if not ranges:
            return out.write(b"[]"), False
        raw = self._read_index()
        written, exact = 0, False
        with self._mapped(where) as data:
            for i, (start, end, first, count, records) in enumerate(self._spans(ranges, raw, where)):
                verify_entries(data, records, where, str(self.data_path), range(first, first + count))
                written += out.write(b"[" if i == 0 else b",")
                begun = out.tell()
                newlines = 0
                before = b"\n"  # what precedes the span's first entry, as far as the check goes
                for at in range(start, end, _BLOCK):
                    block = data[at:min(end, at + _BLOCK)]
                    newlines += block.count(b"\n")
                    # An entry starts with a space where a space follows a newline.
                    exact = exact or (before == b"\n" and block[:1] == b" ") or b"\n " in block
                    before = block[-1:]
                    written += out.write(block.replace(b"\n", b","))
                if newlines != count - 1:
                    # An entry holding a raw newline (not written by our codec): entry by entry.
                    written -= out.tell() - begun
                    out.seek(begun)
                    out.truncate()
                    parts = self._slices(data, range(first, first + count), raw, where)
                    exact = exact or any(part[:1] == b" " for part in parts)
                    written += out.write(b",".join(parts))
        return written + out.write(b"]"), exact

    def _spans(self, ranges: Ranges, raw: bytes, where: str) -> list[tuple[int, int, int, int, list[tuple[int, int, bytes]]]]:
        """``(start, end, first ordinal, count, records)``: the byte span of each range."""
        spans = []
        for first, count in check_ranges(ranges):
            last = first + count - 1
            if first < 0 or last >= self.state.count:
                raise StoreCorruptedError(
                    f"{where}: entry {last if first >= 0 else first} is beyond the {self.state.count} "
                    f"in {self.data_path.name}",
                    location=str(self.data_path),
                )
            records = list(_RECORD.iter_unpack(raw[first * _RECORD.size:(last + 1) * _RECORD.size]))
            start = records[0][0]
            offset, length, _ = records[-1]
            if offset + length > self.state.nbytes or offset < start:
                raise self._damaged(where)
            # The span is copied whole: its entries must lie end to end, one newline apart.
            position = start
            for at, size, _ in records:
                if at != position:
                    raise self._damaged(where)
                position = at + size + 1
            spans.append((start, offset + length, first, count, records))
        return spans

    @contextlib.contextmanager
    def _mapped(self, where: str) -> Iterator[mmap.mmap]:
        try:
            fh = os.fdopen(open_regular(self.data_path), "rb")
        except FileNotFoundError:
            raise StoreCorruptedError(f"{where}: {self.data_path} is missing", location=str(self.data_path)) from None
        with fh:
            if os.fstat(fh.fileno()).st_size < self.state.nbytes:
                raise StoreCorruptedError(
                    f"{where}: {self.data_path.name} is shorter than the history expects; "
                    "checkpoints of this session cannot be read",
                    location=str(self.data_path),
                )
            if self.state.nbytes == 0:
                yield mmap.mmap(-1, 1)
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                yield data

    def _damaged(self, where: str) -> StoreCorruptedError:
        return StoreCorruptedError(
            f"{where}: {self.data_path.name} does not match its index {self.index_path.name}; "
            "checkpoints of this session cannot be read",
            location=str(self.data_path),
        )

    @contextlib.contextmanager
    def located_runs(self, ranges: Ranges, where: str) -> Iterator[tuple[memoryview, list[tuple[int, int, bytes]]]]:
        """The data file, mapped, and the ``(offset, length, hash)`` record of each entry of ``ranges``,
        in order, bounds checked: for reading many entries in place, without a copy of each."""
        if not ranges:  # (a pack may have no data file yet)
            yield memoryview(b""), []
            return
        spans = self._spans(ranges, self._read_index(), where)
        with self._mapped(where) as data:
            view = memoryview(data)
            try:
                yield view, [record for *_, records in spans for record in records]
            finally:
                view.release()

    def records(self, ordinals: Sequence[int], where: str) -> list[tuple[bytes, bytes]]:
        """``(data, hash)`` of the entries at ``ordinals``, as stored: bounds checked, not verified.

        An encrypted store's entries are ciphertexts under a keyed hash; it
        verifies each by opening it (see ``_json_sealed``).
        """
        if not ordinals:
            return []
        raw = self._read_index()
        with self._mapped(where) as data:
            return [(data[offset:offset + length], h) for _, offset, length, h in self._located(ordinals, raw, where)]

    def iter_entries(self) -> Iterable[tuple[int, bytes]]:
        """``(ordinal, data)`` for every committed entry."""
        return enumerate(self.read(range(self.state.count), str(self.data_path)))

    def compact(
        self, keep: Sequence[int], check: Callable[[bytes, bytes, int], None] | None = None
    ) -> tuple[EntryPack, dict[int, int]]:
        """Write the next generation holding only ``keep`` (sorted ordinals); return it and old -> new ordinals.

        ``check(data, hash, ordinal)`` verifies each entry kept where the hash is not
        the content hash (an encrypted store's keyed hash); by default it is.
        """
        where = str(self.data_path)
        if check is None:
            old = self.read(keep, where)
        else:
            pairs = self.records(keep, where)
            for n, (data, h) in zip(keep, pairs, strict=True):
                check(data, h, n)
            old = [data for data, _ in pairs]
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
        # The committed records never change (appends go after them), so one read per state.
        if self._index is not None and self._index[0] == self.state:
            return self._index[1]
        need = self.state.count * _RECORD.size
        try:
            with os.fdopen(open_regular(self.index_path), "rb") as fh:
                # Bounded by the file's size first: a crafted count of 10**12 must not allocate.
                have = os.fstat(fh.fileno()).st_size
                raw = fh.read(need) if have >= need else b""
        except FileNotFoundError:
            have, raw = 0, b""
        if len(raw) < need:
            raise StoreCorruptedError(
                f"{self.index_path} holds {have // _RECORD.size} entries, the history expects "
                f"{self.state.count}; checkpoints of this session cannot be read",
                location=str(self.index_path),
            )
        self._index = (self.state, raw)
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


def check_ranges(ranges: object) -> list[tuple[int, int]]:
    """``ranges`` as ``(start, count)`` pairs; malformed ones raise :class:`StoreCorruptedError`."""
    out = []
    try:
        for start, count in ranges:  # type: ignore[attr-defined]
            if type(start) is not int or type(count) is not int or count < 1:
                raise ValueError(f"not a (start, count) range: {[start, count]!r}")
            out.append((start, count))
    except (TypeError, ValueError) as exc:
        raise StoreCorruptedError(f"a history index holds malformed entry ranges ({exc})") from None
    return out


def from_ranges(ranges: Iterable[Sequence[int]]) -> list[int]:
    """The inverse of :func:`to_ranges`; malformed ranges raise :class:`StoreCorruptedError`."""
    try:
        return [n for start, count in ranges for n in range(start, start + count)]
    except (TypeError, ValueError) as exc:
        raise StoreCorruptedError(f"a history index holds malformed entry ranges ({exc})") from None
