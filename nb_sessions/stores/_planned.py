"""The write planning the database stores share: a save costs what changed.

A database store keeps each distinct entry of a long list once (a row with
an integer id, its content hash and its bytes), packs runs of entry ids into
shared segments (a row with an id, the hash of the packed ids and the ids),
and gives each checkpoint the segment ids of its lists. This module holds
everything of that which does not depend on the database:

- :class:`SessionCaches` / :class:`SessionCache`: what this process knows of
  each session's last save (:class:`~nb_sessions.chunks.ChunkCache`), valid
  for one garbage-collection generation. A store reads the generation inside
  its write transaction (under a lock that garbage collection also takes)
  and calls :meth:`SessionCache.fresh`; a stale cache is dropped and the
  save planned again, because the segment ids it remembers may be gone.
- :func:`store_plans`: plan -> rows, through the four primitives of a
  :class:`PlanRows` (insert entries / segments, ids by hash) that each
  backend implements in its own SQL.
- :func:`pack_ids` / :func:`segment_ids`: the packed form of a segment.
- :func:`verified_array`: the entries read back, checked against their
  content hashes and joined into one JSON array to decode at once.
- :func:`chunk_refs`: a checkpoint's list references, checked.

The entry bytes pass through two functions only, :func:`stored_entry` on
the way into a row and :func:`loaded_entry` on the way back, and entries are
addressed by :func:`entry_hash` of their plain encoding: the places an
encoding at rest hooks in.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from .. import codec
from ..chunks import (
    ChunkCache,
    ChunkPlan,
    ListChunk,
    blob_hash,
    json_array,
    path_text,
    verify_entries,
)
from ..errors import StoreCorruptedError
from .base import SessionKey

__all__ = [
    "PlanRows",
    "SessionCache",
    "SessionCaches",
    "chunk_refs",
    "entry_hash",
    "loaded_entry",
    "pack_ids",
    "segment_ids",
    "store_plans",
    "stored_entry",
    "verified_array",
]

#: The content address of an encoded entry (and of a packed segment).
entry_hash = blob_hash


def stored_entry(data: bytes) -> bytes:
    """The bytes a row keeps for the encoded entry ``data`` (today: ``data`` itself)."""
    return data


def loaded_entry(stored: bytes) -> bytes:
    """The encoded entry a row's bytes ``stored`` hold (the inverse of :func:`stored_entry`)."""
    return stored


class SessionCache:
    """What this process knows of a session's stored lists, valid for one GC generation."""

    def __init__(self, hasher: Callable[[bytes], bytes] | None = None) -> None:
        self.generation = -1
        # An encrypted store's entries are hashed with its keyed hash (see nb_sessions.crypto).
        self.chunks = ChunkCache(hasher) if hasher is not None else ChunkCache()
        #: Row ids of the entries of the runs the last save re-planned (its last runs, in practice):
        #: the next save re-plans them again and finds their ids here instead of asking the database.
        self.entry_ids: dict[bytes, int] = {}

    def plan(self, chunks: Sequence[ListChunk]) -> tuple[list[ChunkPlan], dict[Hashable, Any]]:
        """Plan a save's lists; return the plans and the entry keys to remember after its commit."""
        remembered: dict[Hashable, Any] = {}
        plans: list[ChunkPlan] = []
        with codec.paused_gc():
            for chunk in chunks:
                plan, entries = self.chunks.plan(chunk)
                plans.append(plan)
                remembered.update(entries)
        return plans, remembered

    def fresh(self, generation: int) -> bool:
        """Inside the write transaction: False if garbage was collected since this cache was filled."""
        if self.generation not in (-1, generation):
            return False
        self.generation = generation
        return True

    def remember(
        self,
        plans: Sequence[ChunkPlan],
        payloads: Sequence[Sequence[Any]],
        entries: dict[Hashable, Any],
    ) -> None:
        """After the commit: the next save of the session reuses these segments and entry ids."""
        self.chunks.remember(plans, payloads, entries)
        ids = self.entry_ids
        self.entry_ids = {
            h: ids[h]
            for plan in plans
            for seg in plan.segments
            if seg.cached is None
            for h in seg.hashes
            if h in ids
        }


class SessionCaches:
    """A store's :class:`SessionCache` per session."""

    def __init__(self) -> None:
        self._by_key: dict[SessionKey, SessionCache] = {}

    def get(self, key: SessionKey, hasher: Callable[[bytes], bytes] | None = None) -> SessionCache:
        cache = self._by_key.get(key)
        if cache is None:
            cache = self._by_key[key] = SessionCache(hasher)
        return cache

    def drop(self, key: SessionKey) -> None:
        """Forget a session's cache (after a failed or stale save)."""
        self._by_key.pop(key, None)


class PlanRows(Protocol):
    """The SQL a backend supplies for :func:`store_plans` (all inside its write transaction).

    Inserts ignore rows whose hash is already stored. Rows come in the order
    of the lists, so new ids ascend in message order (SQLite reads such a run
    in one query); a backend whose writers run concurrently sorts them by
    hash first, so that they lock rows in one order.
    """

    async def insert_entries(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        """Insert ``(hash, stored bytes)`` entry rows."""

    async def entry_ids(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """The ids of the entries with these hashes."""

    async def insert_segments(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        """Insert ``(hash, packed ids)`` segment rows."""

    async def segment_ids(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """The ids of the segments with these hashes."""


def pack_ids(ids: Sequence[int]) -> bytes:
    """A segment's entry ids as stored (8-byte integers)."""
    return array("q", ids).tobytes()


async def store_plans(
    rows: PlanRows, plans: Sequence[ChunkPlan], known: dict[bytes, int] | None = None
) -> list[list[int]]:
    """Insert the planned new entries and changed segments; return each plan's segment ids.

    ``known`` (a :attr:`SessionCache.entry_ids`) gives ids found before and
    receives those found now; a caller that fails or rolls back drops the cache.
    """
    new = {h: data for plan in plans for h, data in plan.new.items()}
    if new:
        await rows.insert_entries([(h, stored_entry(data)) for h, data in new.items()])
    entry_ids = {} if known is None else known
    wanted = sorted(
        {h for plan in plans for seg in plan.segments if seg.cached is None for h in seg.hashes}
        - entry_ids.keys()
    )
    if wanted:
        entry_ids.update(await rows.entry_ids(wanted))
    packed: dict[bytes, bytes] = {}
    seg_hashes: list[list[bytes | None]] = []
    for plan in plans:
        row: list[bytes | None] = []
        for seg in plan.segments:
            if seg.cached is not None:
                row.append(None)
                continue
            data = pack_ids([entry_ids[h] for h in seg.hashes])
            h = entry_hash(data)
            packed[h] = data
            row.append(h)
        seg_hashes.append(row)
    if packed:
        await rows.insert_segments(list(packed.items()))
    seg_ids = await rows.segment_ids(sorted(packed)) if packed else {}
    return [
        [seg.cached if h is None else seg_ids[h] for seg, h in zip(plan.segments, row, strict=True)]
        for plan, row in zip(plans, seg_hashes, strict=True)
    ]


def chunk_rows(plans: Sequence[ChunkPlan], payloads: Sequence[Sequence[int]]) -> list[list[Any]]:
    """A checkpoint's list references: ``[[path, [segment id, ...]], ...]``."""
    return [[list(plan.path), list(ids)] for plan, ids in zip(plans, payloads, strict=True)]


def segment_ids(
    packed: Any, seg_id: Any, where: str, location: str, seg_hash: Any = None
) -> array[int]:
    """A segment's entry ids; a value nb_sessions did not write (or, given ``seg_hash``, one that does
    not match it) is a named error."""
    if not isinstance(packed, bytes) or len(packed) % 8:
        raise StoreCorruptedError(
            f"{where}: row {seg_id} of nbs_segments is not a list of entry ids (edited by hand or damaged); "
            "delete the checkpoints that use it, or restore the database from a backup",
            location=location,
        )
    if seg_hash is not None and entry_hash(packed) != seg_hash:
        raise StoreCorruptedError(
            f"{where}: segment {seg_id} does not match its content hash (table nbs_segments was altered "
            "or damaged); delete that checkpoint, the others are intact",
            location=location,
        )
    return array("q", packed)


def verified_array(
    rows: Sequence[tuple[Any, Any]], ids: Sequence[int], where: str, location: str
) -> tuple[bytes, bool]:
    """Entries ``(stored bytes, hash)`` as one JSON array, each checked against its hash.

    Returns the array and whether an entry was written by codec's exact path
    (it starts with a space), so the caller knows whether to decode trusted.
    ``ids`` name the entries in an error.
    """
    parts = [loaded_entry(data if isinstance(data, bytes) else bytes(data)) for data, _ in rows]
    body = json_array(parts)
    spans, at = [], 1  # after "["
    for data, (_, h) in zip(parts, rows, strict=True):
        spans.append((at, len(data), bytes(h) if h is not None else b""))
        at += len(data) + 1
    verify_entries(body, spans, where, location, ids)
    return body, any(p[:1] == b" " for p in parts)


def chunk_refs(text: Any, where: str) -> list[tuple[Any, list[int]]]:
    """A checkpoint's ``chunks`` value as ``[(path, [segment id, ...]), ...]``; anything else is a named error."""
    rows = codec.loads(text, where)
    try:
        refs = [(path, list(seg_ids)) for path, seg_ids in rows]
    except (TypeError, ValueError):
        refs = None
    if refs is None or not all(isinstance(p, list) and all(map(_is_int, ids)) for p, ids in refs):
        raise StoreCorruptedError(
            f"{where}: its list references (nbs_checkpoints.chunks) are damaged; delete that checkpoint, "
            "or restore the database from a backup",
            location=where,
        )
    return refs


def live_segments(rows: Iterable[Sequence[Any]], location: str) -> set[int]:
    """The segment ids checkpoints ``(seq, chunks)`` refer to, for garbage collection.

    A garbled reference stops the sweep (a named error): its segments cannot be told apart.
    """
    live: set[int] = set()
    for seq, text in rows:
        for _, seg_ids in chunk_refs(text, f"{location}: the checkpoint row with seq {seq!r}"):
            live.update(seg_ids)
    return live


def live_entries(segments: Mapping[int, Any], location: str) -> set[int]:
    """The entry ids the segments ``{id: packed}`` hold; a garbled segment stops the sweep."""
    live: set[int] = set()
    for seg_id, packed in segments.items():
        live.update(segment_ids(packed, seg_id, location, location))
    return live


def list_where(where: str, path: Any) -> str:
    """``where`` of a checkpoint, narrowed to one of its lists."""
    return f"{where} ({path_text(tuple(path))})"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
