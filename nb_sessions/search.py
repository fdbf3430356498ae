"""Full-text search over the messages of stored checkpoints.

Stores find candidate messages their own way (SQLite through an FTS5
trigram index built on first use, the JSON store by scanning); this module
holds what they share: which text of a message is searchable, how a match is
confirmed (case-insensitive substring, so Chinese and two-letter queries
work too), snippets, and the result frame, one row per distinct message
with the checkpoints it appears in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import generations
from .errors import NbSessionsError, StoreCorruptedError

__all__ = [
    "SEARCH_COLUMNS",
    "Hit",
    "collect_unreadable",
    "entry_message",
    "frame",
    "matches",
    "scan_state",
    "searchable_text",
    "unless_unreadable",
]

SEARCH_COLUMNS = (
    "session", "user_id", "checkpoints", "first_seq", "last_seq", "path",
    "message_id", "role", "name", "snippet",
)


@dataclass(frozen=True)
class Hit:
    """One message matching the query, in one checkpoint."""

    session_id: str
    user_id: str
    seq: int
    path: str
    message: Mapping[str, Any]


#: The places one search could not read (set by :func:`collect_unreadable`, filled by the stores).
_unreadable: ContextVar[list[str] | None] = ContextVar("nb_sessions_search_unreadable", default=None)


@contextlib.contextmanager
def collect_unreadable() -> Iterator[list[str]]:
    """Around one search: the list of places (checkpoints, stored entries) it had to pass over."""
    found: list[str] = []
    token = _unreadable.set(found)
    try:
        yield found
    finally:
        _unreadable.reset(token)


@contextlib.contextmanager
def unless_unreadable(where: str) -> Iterator[None]:
    """Pass over one damaged or unreadable piece of a search (``where`` names it); the rest still answers.

    The piece is recorded for :func:`collect_unreadable`: the search result says
    what it could not read instead of silently leaving it out.
    """
    try:
        yield
    except (StoreCorruptedError, OSError) as exc:
        if isinstance(exc, NbSessionsError) and not isinstance(exc, StoreCorruptedError):
            raise  # a store that is unreachable or refuses: the whole search fails, by name
        found = _unreadable.get()
        if found is not None:
            found.append(where)


def searchable_text(message: Mapping[str, Any]) -> str:
    """The words a message is found by: its text, thinking, tool inputs and tool results (1.x or 2.x)."""
    return generations.searchable_text(message)


def entry_message(entry: Any) -> Mapping[str, Any] | None:
    """The message of a stored list item: a 1.x ``[msg, marks]`` entry, a bare 1.x or 2.x message."""
    return generations.entry_message(entry)


def matches(text: str, query: str) -> bool:
    """Case-insensitive substring match."""
    return query.casefold() in text.casefold()


def scan_state(state: Mapping[str, Any], query: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield ``(conversation_path, message)`` for every message of ``{module: state}`` matching ``query``."""
    for conversation in generations.conversations(state):
        for msg, _ in conversation.entries():
            if matches(searchable_text(msg), query):
                yield conversation.path, msg


def snippet(text: str, query: str, width: int = 60) -> str:
    """The text around the first match, with ellipses where it was cut."""
    flat = " ".join(text.split())
    at = flat.casefold().find(query.casefold())
    if at < 0:
        return flat[: 2 * width]
    start, end = max(0, at - width), min(len(flat), at + len(query) + width)
    return ("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else "")


def frame(hits: Iterable[Hit], query: str) -> pd.DataFrame:
    """One row per distinct message (same session, id and text), with the checkpoints holding it."""
    groups: dict[tuple[str, str, str, str, str], tuple[Hit, list[int]]] = {}
    for hit in hits:
        text = searchable_text(hit.message)
        key = (hit.user_id, hit.session_id, hit.path, str(hit.message.get("id", "")), text)
        if key in groups:
            groups[key][1].append(hit.seq)
        else:
            groups[key] = (hit, [hit.seq])
    rows = []
    for (_, _, _, _, text), (hit, seqs) in groups.items():
        seqs = sorted(set(seqs))
        rows.append({
            "session": f"{hit.user_id}/{hit.session_id}" if hit.user_id else hit.session_id,
            "user_id": hit.user_id,
            "checkpoints": _ranges(seqs),
            "first_seq": seqs[0],
            "last_seq": seqs[-1],
            "path": hit.path,
            "message_id": str(hit.message.get("id", "")),
            "role": str(hit.message.get("role", "")),
            "name": str(hit.message.get("name", "")),
            "snippet": snippet(text, query),
        })
    df = pd.DataFrame(rows, columns=list(SEARCH_COLUMNS))
    if not rows:
        df = df.astype({"first_seq": "int64", "last_seq": "int64"})
    ordered = df.sort_values(["session", "last_seq"], ascending=[True, False], kind="stable")
    result: pd.DataFrame = ordered.reset_index(drop=True)
    return result


def _ranges(seqs: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    out: list[str] = []
    start = prev = seqs[0]
    for s in [*seqs[1:], None]:
        if s is not None and s == prev + 1:
            prev = s
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if s is not None:
            start = prev = s
    return ", ".join(out)
