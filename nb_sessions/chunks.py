"""Splitting states into a small skeleton and long lists stored entry by entry.

A long conversation should not be rewritten on every checkpoint. Messages
are immutable once written, so a store keeps each list entry once (keyed by
the hash of its JSON) and a checkpoint references them. :func:`split` finds
the long lists of containers in ``{module: state}`` (memory contents, in
practice) and returns a skeleton with each replaced by ``[]`` plus the lists'
entries; :func:`EntryEncoder` turns entries into blobs, encoding only those it
has not seen since the last save; :func:`assemble` puts loaded lists back.

Objects can make saving cheaper still by returning :class:`Entries` from
``_nbs_snapshot()``: then an entry that has not changed is recognised by a
key (message identity plus change counter) without building its dict at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import codec

__all__ = ["CHUNK_MIN", "Entries", "EntryEncoder", "ListChunk", "assemble", "blob_hash", "split"]

#: Lists at least this long whose items are all containers are stored entry by entry.
CHUNK_MIN = 32
#: How deep :func:`split` looks for long lists (snapshots put Entries near the top).
MAX_DEPTH = 16

Path = tuple[str | int, ...]


class Entries:
    """A list-valued state whose items know cheaply whether they changed.

    ``key(item)`` returns a hashable that changes whenever the item's JSON
    would (it is only compared while the item is alive); ``value(item)``
    builds the item's JSON value. ``list(entries)`` gives the plain values.
    """

    __slots__ = ("items", "key", "value")

    def __init__(
        self, items: Sequence[Any], key: Callable[[Any], Hashable], value: Callable[[Any], Any]
    ) -> None:
        self.items = items
        self.key = key
        self.value = value

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return (self.value(item) for item in self.items)


@dataclass
class ListChunk:
    """One long list found in a state: where it is and what it holds."""

    path: Path
    items: Sequence[Any]
    key: Callable[[Any], Hashable] | None = None
    value: Callable[[Any], Any] | None = None
    blob_ids: list[int] = field(default_factory=list)


def split(states: dict[str, Any], *, threshold: int = CHUNK_MIN) -> tuple[dict[str, Any], list[ListChunk]]:
    """Return ``(skeleton, chunks)``: ``states`` with long lists of containers replaced by ``[]``."""
    chunks: list[ListChunk] = []

    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, Entries):
            chunks.append(ListChunk(path, value.items, value.key, value.value))
            return []
        if len(path) > MAX_DEPTH:
            return value  # long lists live near the top; deeper data is written as it is
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if len(value) >= threshold and all(isinstance(v, (dict, list)) for v in value):
                chunks.append(ListChunk(path, value))
                return []
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    skeleton = {name: walk(state, (name,)) for name, state in states.items()}
    return skeleton, chunks


def materialize(states: dict[str, Any]) -> dict[str, Any]:
    """Replace every :class:`Entries` in ``states`` by a plain list (for redactors and views)."""

    def walk(value: Any, depth: int) -> Any:
        if isinstance(value, Entries):
            return list(value)
        if depth > MAX_DEPTH:
            return value
        if isinstance(value, dict):
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        return value

    return {name: walk(state, 1) for name, state in states.items()}


def path_text(path: Path) -> str:
    """``("agent", "memory", "content", 3)`` -> ``agent.memory.content[3]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def blob_hash(data: bytes) -> bytes:
    """The content address of an encoded entry."""
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class NewBlob:
    """An entry encoded in this save, not known to be stored yet."""

    hash: bytes
    data: bytes


@dataclass
class EntryEncoder:
    """Encodes list entries, remembering those of the previous save of one session.

    ``known`` maps an entry key to ``(blob_hash, size, keepalive)``; the
    keepalive holds the keyed object so its ``id()`` cannot be reused while
    the key is remembered. For plain lists the key is the entry's orjson
    bytes; an entry is only trusted by those bytes when they cannot hide a
    NaN that orjson wrote as ``null``.
    """

    known: dict[Hashable, tuple[bytes, int, Any]] = field(default_factory=dict)

    def encode(self, chunk: ListChunk) -> tuple[list[bytes], list[int], list[NewBlob], dict[Hashable, tuple[bytes, int, Any]]]:
        """Return ``(hashes, sizes, new_blobs, next_known)`` for the chunk's entries, in order."""
        hashes: list[bytes] = []
        sizes: list[int] = []
        new: list[NewBlob] = []
        seen: dict[Hashable, tuple[bytes, int, Any]] = {}
        known = self.known
        where = path_text(chunk.path)
        if chunk.key is not None:
            assert chunk.value is not None
            key_of, value_of = chunk.key, chunk.value
            for i, item in enumerate(chunk.items):
                k = key_of(item)
                hit = known.get(k)
                if hit is None:
                    data = codec.dumps(value_of(item), f"{where}[{i}]")
                    hit = (blob_hash(data), len(data), item)
                    new.append(NewBlob(hit[0], data))
                seen[k] = hit
                hashes.append(hit[0])
                sizes.append(hit[1])
        else:
            for i, item in enumerate(chunk.items):
                try:
                    fast: bytes | None = orjson.dumps(item)
                except (orjson.JSONEncodeError, TypeError):
                    fast = None
                hit = known.get(fast) if fast is not None and b"null" not in fast else None
                if hit is None:
                    data = codec.dumps(item, f"{where}[{i}]")
                    hit = (blob_hash(data), len(data), None)
                    new.append(NewBlob(hit[0], data))
                if fast is not None:
                    seen[fast] = hit
                hashes.append(hit[0])
                sizes.append(hit[1])
        return hashes, sizes, new, seen


def assemble(skeleton: dict[str, Any], lists: Sequence[tuple[Path, list[Any]]]) -> dict[str, Any]:
    """Put loaded lists back into the skeleton at their paths (in place) and return it."""
    for path, items in lists:
        parent: Any = skeleton
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = items
    return skeleton
