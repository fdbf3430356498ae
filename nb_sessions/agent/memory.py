"""AgentScope 1.x ``InMemoryMemory``: messages with marks, plus a compressed summary.

State: ``{"_compressed_summary": str, "content": [[msg_dict, [mark, ...]], ...]}``.
Older AgentScope files hold ``content: [msg_dict, ...]``; those load with no marks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..chunks import Entries
from ..errors import _join
from ..state import Commit, StateModule
from .message import Msg, _quick_msg

__all__ = ["InMemoryMemory"]

_PAIR_SHAPE = "[message, [mark, ...]] (or a bare message dict, the older layout)"


class InMemoryMemory(StateModule):
    """A list of ``(Msg, marks)`` pairs with AgentScope 1.0.21's async API."""

    def __init__(self) -> None:
        super().__init__()
        self._compressed_summary: str = ""
        self.content: list[tuple[Msg, list[str]]] = []
        self.register_state("_compressed_summary", expect=str)
        self.register_state("content", custom_to_json=self._content_to_json, expect=list)

    @staticmethod
    def _content_to_json(content: list[tuple[Msg, list[str]]]) -> list[list[Any]]:
        return [[msg.to_dict(), list(marks)] for msg, marks in content]

    def _nbs_snapshot(self) -> dict[str, Any]:
        """The state with ``content`` as :class:`~nb_sessions.chunks.Entries`: unchanged messages cost no encoding."""
        content = self.content
        return {
            "_compressed_summary": self._compressed_summary,
            "content": Entries(
                content,
                _entry_key,
                _entry_value,
                keys=lambda: [(id(m), m._rev, tuple(k)) for m, k in content],  # _entry_key, inlined
            ),
        }

    # -- two-phase loading ---------------------------------------------------

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: list[tuple[str, str]]
    ) -> list[Commit]:
        """Convert and validate messages before the generic checks; paths like ``content[3][0].role``."""
        if isinstance(state, Mapping):
            state = dict(state)
            if "content" in state:
                converted = _convert_content(state["content"], _join(path, "content"), problems)
                # On failure the problems are recorded and nothing commits; [] avoids a second report.
                state["content"] = converted if converted is not None else []
            if strict and "_compressed_summary" not in state:
                # Files written before AgentScope added compression have no summary.
                state = {"_compressed_summary": "", **state}
        return super()._nbs_prepare_load(state, strict, path, problems)

    # -- AgentScope API --------------------------------------------------------

    async def add(
        self,
        memories: Msg | list[Msg] | None,
        marks: str | list[str] | None = None,
        allow_duplicates: bool = False,
    ) -> None:
        """Append copies of the message(s) with ``marks``; ids already present are skipped unless allowed."""
        if memories is None:
            return
        if isinstance(memories, Msg):
            memories = [memories]
        mark_list = _check_marks(marks, "marks")
        for msg in memories:
            if not isinstance(msg, Msg):
                raise TypeError(f"memory.add() takes Msg objects, got {type(msg).__name__}")
        seen = set() if allow_duplicates else {m.id for m, _ in self.content}
        for msg in memories:
            if not allow_duplicates:
                if msg.id in seen:
                    continue
                seen.add(msg.id)
            self.content.append((msg.copy(), list(mark_list)))

    async def delete(self, msg_ids: list[str]) -> int:
        """Remove the messages with these ids; return how many were removed."""
        ids = set(msg_ids)
        before = len(self.content)
        self.content = [(m, k) for m, k in self.content if m.id not in ids]
        return before - len(self.content)

    async def delete_by_mark(self, mark: str | list[str]) -> int:
        """Remove the messages carrying any of the mark(s); return how many were removed."""
        wanted = set(_check_marks(mark, "mark"))
        before = len(self.content)
        self.content = [(m, k) for m, k in self.content if wanted.isdisjoint(k)]
        return before - len(self.content)

    async def get_memory(
        self,
        mark: str | None = None,
        exclude_mark: str | None = None,
        prepend_summary: bool = True,
    ) -> list[Msg]:
        """Return the messages (filtered by mark), preceded by the summary as a user message if any."""
        for name, value in (("mark", mark), ("exclude_mark", exclude_mark)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
        msgs = [
            m
            for m, marks in self.content
            if (mark is None or mark in marks) and (exclude_mark is None or exclude_mark not in marks)
        ]
        if prepend_summary and self._compressed_summary:
            # AgentScope's shape: a fresh user message named "user" carrying the summary.
            return [Msg("user", self._compressed_summary, "user"), *msgs]
        return msgs

    async def size(self) -> int:
        """Return the number of stored messages (the summary not counted)."""
        return len(self.content)

    async def clear(self) -> None:
        """Remove every message (the compressed summary is kept, as in AgentScope)."""
        self.content.clear()

    async def update_messages_mark(
        self,
        new_mark: str | None,
        old_mark: str | None = None,
        msg_ids: list[str] | None = None,
    ) -> int:
        """Add, replace (``old_mark`` -> ``new_mark``) or remove (``new_mark=None``) marks; return how many changed."""
        ids = set(msg_ids) if msg_ids is not None else None
        updated = 0
        for msg, marks in self.content:
            if ids is not None and msg.id not in ids:
                continue
            if old_mark is not None and old_mark not in marks:
                continue
            if new_mark is None:
                if old_mark is not None:
                    marks.remove(old_mark)
                    updated += 1
                continue
            if old_mark is not None:
                marks.remove(old_mark)
            if new_mark not in marks:
                marks.append(new_mark)
                updated += 1
        return updated

    async def update_compressed_summary(self, summary: str) -> None:
        """Replace the compressed summary of older, removed messages."""
        if not isinstance(summary, str):
            raise TypeError(f"summary must be a str, got {type(summary).__name__}")
        self._compressed_summary = summary

    def __repr__(self) -> str:
        return f"InMemoryMemory({len(self.content)} messages, summary={len(self._compressed_summary)} chars)"


def _entry_key(entry: tuple[Msg, list[str]]) -> tuple[int, int, tuple[str, ...]]:
    # The message's identity and change counter, and its marks, say whether its JSON changed.
    msg, marks = entry
    return id(msg), msg._rev, tuple(marks)


def _entry_value(entry: tuple[Msg, list[str]]) -> list[Any]:
    msg, marks = entry
    return [msg._wire(), list(marks)]  # encoded at once, never handed out: no copy needed


def _check_marks(marks: str | list[str] | None, what: str) -> list[str]:
    if marks is None:
        return []
    if isinstance(marks, str):
        return [marks]
    if isinstance(marks, list) and all(isinstance(m, str) for m in marks):
        return list(marks)
    raise TypeError(f"{what} must be a str, a list of str, or None; got {marks!r}")


def _convert_content(
    content: Any, path: str, problems: list[tuple[str, str]]
) -> list[tuple[Msg, list[str]]] | None:
    if not isinstance(content, list):
        problems.append((path, f"expected a list of {_PAIR_SHAPE}, got {_tname(content)}"))
        return None
    before = len(problems)
    out: list[tuple[Msg, list[str]]] = []
    for i, item in enumerate(content):
        # The common case, checked and built the quick way: [plain message, list of str marks].
        if type(item) is list and len(item) == 2:
            marks = item[1]
            if type(marks) is list and (not marks or all(type(m) is str for m in marks)):
                msg = _quick_msg(item[0])
                if msg is not None:
                    out.append((msg, list(marks)))
                    continue
        where = f"{path}[{i}]"
        if isinstance(item, Mapping):
            msg, marks = Msg.from_dict_checked(item, where, problems), []
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            msg = Msg.from_dict_checked(item[0], f"{where}[0]", problems)
            marks = _convert_marks(item[1], f"{where}[1]", problems)
        else:
            problems.append((where, f"expected {_PAIR_SHAPE}, got {_describe(item)}"))
            continue
        if msg is not None:
            out.append((msg, marks))
    return out if len(problems) == before else None


def _convert_marks(marks: Any, path: str, problems: list[tuple[str, str]]) -> list[str]:
    if not isinstance(marks, list):
        problems.append((path, f"expected a list of str marks, got {_tname(marks)}"))
        return []
    for j, mark in enumerate(marks):
        if not isinstance(mark, str):
            problems.append((f"{path}[{j}]", f"expected a str mark, got {_tname(mark)}"))
    return list(marks)


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    return _tname(value)


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__
