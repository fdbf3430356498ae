"""Splitting states into a small skeleton and long lists stored entry by entry.

A long conversation should not be rewritten on every checkpoint. Messages
are immutable once written, so a store keeps each list entry once (keyed by
the hash of its JSON) and a checkpoint references them. :func:`split` finds
the long lists of containers in ``{module: state}`` (memory contents, in
practice) and returns a skeleton with each replaced by ``[]`` plus the lists'
entries; a :class:`ChunkCache` plans a save in runs of :data:`SEGMENT`
entries, recognising the runs unchanged since the session's last save with
one lookup and encoding only the entries of the others; :func:`assemble`
puts loaded lists back.

Objects can make saving cheaper still by returning :class:`Entries` from
``_nbs_snapshot()``: then an entry that has not changed is recognised by a
key (message identity plus change counter) without building its dict at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import orjson

from . import codec
from .errors import StoreCorruptedError

__all__ = [
    "CHUNK_MIN", "SEGMENT", "ChunkCache", "ChunkPlan", "Entries", "ListChunk", "Segment",
    "assemble", "blob_hash", "json_array", "split", "verify_entries",
]

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

    __slots__ = ("items", "key", "keys", "value")

    def __init__(
        self,
        items: Sequence[Any],
        key: Callable[[Any], Hashable],
        value: Callable[[Any], Any],
        keys: Callable[[], list[Hashable]] | None = None,
    ) -> None:
        self.items = items
        self.key = key
        self.value = value
        self.keys = keys  # all keys at once (faster than calling key() per item)

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
    keys: Callable[[], list[Hashable]] | None = None


def split(states: dict[str, Any], *, threshold: int = CHUNK_MIN) -> tuple[dict[str, Any], list[ListChunk]]:
    """Return ``(skeleton, chunks)``: ``states`` with long lists of containers replaced by ``[]``."""
    chunks: list[ListChunk] = []

    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, Entries):
            chunks.append(ListChunk(path, value.items, value.key, value.value, value.keys))
            return []
        if len(path) > MAX_DEPTH:
            return value  # long lists live near the top; deeper data is written as it is
        if isinstance(value, dict):
            return {k: walk(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if len(value) >= threshold and all(map(isinstance, value, repeat((dict, list)))):
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


def verify_entries(
    data: bytes | memoryview | Any,
    spans: Sequence[tuple[int, int, bytes]],
    where: str,
    location: str,
    numbers: Sequence[int] | None = None,
) -> None:
    """Raise :class:`StoreCorruptedError` unless each ``(offset, length, hash)`` span of ``data`` has that hash.

    Every store checks the entries it reads back with this one function: an
    offset, a length or an entry that lies gives a named error, never another
    message. ``data`` is anything sliceable to bytes (bytes, mmap); ``numbers``
    names the entries in the error (row ids, ordinals), by default their position.
    """
    blake2b = hashlib.blake2b
    with memoryview(data) as view:  # slices without copies; released before an mmap closes
        for number, (offset, length, expected) in enumerate(spans):
            if offset + length > len(view) or blake2b(view[offset:offset + length], digest_size=16).digest() != expected:
                raise StoreCorruptedError(
                    f"{where}: entry {numbers[number] if numbers else number} does not match its content hash "
                    f"({location} was altered or damaged); delete that checkpoint, the others are intact",
                    location=location,
                )


#: Entries per segment: a run of a long list that later checkpoints share while unchanged.
SEGMENT = 512


@dataclass
class Segment:
    """One run of up to :data:`SEGMENT` entries of a long list, as planned for a save.

    ``cached`` is the backend's payload for the run (a segment id, a list of
    entry numbers) when the same run was saved last time; ``hashes`` lists
    its entries' content hashes (also for a cached run).
    """

    key: tuple[Hashable, ...] | None
    size: int
    cached: Any = None
    hashes: list[bytes] = field(default_factory=list)
    keepalive: Sequence[Any] = ()


@dataclass
class ChunkPlan:
    """What a save must store for one long list: its segments and the entries not stored yet."""

    path: Path
    segments: list[Segment]
    new: dict[bytes, bytes]  # content hash -> encoded entry

    @property
    def size(self) -> int:
        """Bytes of the list's entries."""
        return sum(seg.size for seg in self.segments)


class ChunkCache:
    """What one session's last save knew: its segments, and the entries of the runs it re-planned.

    An unchanged run is recognised by the tuple of its entries' keys and costs
    one dict lookup; only runs that changed are looked at entry by entry.
    Keys are an entry's identity and change counter (``Entries``), or for
    plain lists the hash and length of its orjson bytes. Bytes holding
    ``null`` are never trusted (orjson writes NaN as null), nor are entries
    orjson refuses; those are encoded every time.
    """

    def __init__(self, hasher: Callable[[bytes], bytes] = blob_hash) -> None:
        self.segments: dict[tuple[Hashable, ...], tuple[Any, int, Sequence[Any], list[bytes]]] = {}
        self.entries: dict[Hashable, tuple[bytes, int, Any]] = {}
        self.hasher = hasher  # an encrypted store's keyed hash (see nb_sessions.crypto)

    def plan(self, chunk: ListChunk, segment: int = SEGMENT) -> tuple[ChunkPlan, dict[Hashable, tuple[bytes, int, Any]]]:
        """Plan the chunk's segments; also return the entry keys to remember after a commit."""
        items = chunk.items
        keyed = chunk.key is not None
        keys = _keys(chunk) if keyed else None
        value_of = chunk.value if chunk.value is not None else _identity
        where = path_text(chunk.path)
        segments: list[Segment] = []
        new: dict[bytes, bytes] = {}
        remember: dict[Hashable, tuple[bytes, int, Any]] = {}
        for start in range(0, len(items), segment):
            skey: tuple[Hashable, ...] | None
            if keys is not None:
                run_keys = keys[start:start + segment]
                skey = None if any(k is None for k in run_keys) else tuple(run_keys)
            else:
                # A plain list: one orjson call for the whole run says whether it changed.
                skey = _run_key(items[start:start + segment])
                run_keys = []
            hit = self.segments.get(skey) if skey is not None else None
            if hit is not None:
                segments.append(Segment(skey, hit[1], cached=hit[0], keepalive=hit[2], hashes=hit[3]))
                continue
            if keys is None:
                run_keys = _plain_keys(items[start:start + segment])
            hashes: list[bytes] = []
            size = 0
            for i, k in enumerate(run_keys, start):
                known = self.entries.get(k) if k is not None else None
                if known is None:
                    data = codec.dumps(value_of(items[i]), f"{where}[{i}]")
                    known = (self.hasher(data), len(data), items[i] if keyed else None)
                    new[known[0]] = data
                if k is not None:
                    remember[k] = known
                hashes.append(known[0])
                size += known[1]
            keepalive = list(items[start:start + segment]) if keyed else ()
            segments.append(Segment(skey, size, hashes=hashes, keepalive=keepalive))
        return ChunkPlan(chunk.path, segments, new), remember

    def remember(
        self,
        plans: Sequence[ChunkPlan],
        payloads: Sequence[Sequence[Any]],
        entries: dict[Hashable, tuple[bytes, int, Any]],
    ) -> None:
        """After a commit: keep this save's segments (with their payloads) and re-planned entries."""
        self.segments = {
            seg.key: (payload, seg.size, seg.keepalive, seg.hashes)
            for plan, plan_payloads in zip(plans, payloads, strict=True)
            for seg, payload in zip(plan.segments, plan_payloads, strict=True)
            if seg.key is not None
        }
        self.entries = entries


def _identity(value: Any) -> Any:
    return value


def _keys(chunk: ListChunk) -> list[Hashable | None]:
    assert chunk.key is not None
    if chunk.keys is not None:
        return list(chunk.keys())
    return [chunk.key(item) for item in chunk.items]


def _fast_key(value: Any) -> Hashable | None:
    """The hash and length of ``value``'s orjson bytes, or None when those bytes cannot be trusted.

    orjson writes NaN and infinities as ``null``, so bytes holding ``null`` could
    hide a change from None to NaN: they are trusted only once a walk of the
    value finds no such float. Values orjson refuses take the exact path every time.
    """
    try:
        fast = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return None
    if b"null" in fast and not _all_finite(value):
        return None
    return (hash(fast), len(fast))


def _all_finite(value: Any) -> bool:
    """True when ``value`` (plain JSON data) holds no NaN or infinite float; False for anything else."""
    stack = [value]
    pop, push_all = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is dict:
            push_all(item.values())
        elif kind is list or kind is tuple:
            push_all(item)
        elif kind is float:
            if item - item != 0.0:  # NaN and the infinities
                return False
        else:
            return False  # a subclass or another type orjson writes: not looked into
    return True


def _run_key(run: Sequence[Any]) -> tuple[Hashable, ...] | None:
    key = _fast_key(list(run))
    return None if key is None else ("run", key)


def _plain_keys(run: Sequence[Any]) -> list[Hashable | None]:
    return [_fast_key(item) for item in run]


def json_array(parts: Sequence[bytes]) -> bytes:
    """``[part,part,...]`` as JSON bytes, built with one copy of the (possibly 100 MB) whole."""
    if not parts:
        return b"[]"
    if len(parts) == 1:
        return b"[" + parts[0] + b"]"
    return b",".join([b"[" + parts[0], *parts[1:-1], parts[-1] + b"]"])


def assemble(skeleton: dict[str, Any], lists: Sequence[tuple[Path, list[Any]]]) -> dict[str, Any]:
    """Put loaded lists back into the skeleton at their paths (in place) and return it."""
    for path, items in lists:
        parent: Any = skeleton
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = items
    return skeleton
