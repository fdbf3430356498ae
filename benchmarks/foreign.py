"""A faithful stand-in for AgentScope 1.x's own ``Msg`` and ``InMemoryMemory``.

These are plain classes, deliberately *not* nb_sessions ``StateModule``
subclasses: to nb_sessions they are just some ``Stateful`` object it did not
write. Like AgentScope's, the memory's ``state_dict()`` rebuilds every
message's dict on every call (``Msg.to_dict()`` builds a fresh dict that
shares the content list), and ``load_state_dict()`` rebuilds every message
with ``Msg.from_dict`` — whose constructor draws a fresh shortuuid id before
the stored one overwrites it, as AgentScope's does.

State (AgentScope 1.0.21's key order, as in its session files):
``{"_compressed_summary": str, "content": [[msg_dict, marks], ...]}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

__all__ = ["ForeignMemory", "ForeignMsg"]

_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _shortuuid() -> str:
    """What ``shortuuid.uuid()`` does: a random UUID written in base 57, 22 characters."""
    number = uuid.uuid4().int
    out = []
    while number:
        number, digit = divmod(number, 57)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out)).rjust(22, _ALPHABET[0])


class ForeignMsg:
    """AgentScope's ``Msg``: a plain object with a ``to_dict()`` that builds a fresh dict."""

    def __init__(
        self,
        name: str,
        content: str | list[dict[str, Any]],
        role: str,
        metadata: dict[str, Any] | None = None,
        timestamp: str | None = None,
        invocation_id: str | None = None,
    ) -> None:
        self.name = name
        assert isinstance(content, (list, str)), "content must be a str or a list of blocks"
        self.content = content
        assert role in ("user", "assistant", "system"), f"bad role {role!r}"
        self.role = role
        self.metadata = metadata or {}
        self.id = _shortuuid()
        self.timestamp = timestamp or datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        self.invocation_id = invocation_id

    def to_dict(self) -> dict[str, Any]:
        """The wire form; content and metadata are shared, not copied (as in AgentScope)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "content": self.content,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, json_data: Mapping[str, Any]) -> ForeignMsg:
        """Rebuild a message from its wire form."""
        new_obj = cls(
            name=json_data["name"],
            content=json_data["content"],
            role=json_data["role"],
            metadata=json_data.get("metadata", None),
            timestamp=json_data.get("timestamp", None),
            invocation_id=json_data.get("invocation_id", None),
        )
        new_obj.id = json_data["id"]
        return new_obj


class ForeignMemory:
    """AgentScope 1.x's ``InMemoryMemory``: ``(Msg, marks)`` pairs and a compressed summary."""

    def __init__(self) -> None:
        self.content: list[tuple[ForeignMsg, list[str]]] = []
        self._compressed_summary = ""

    @classmethod
    def from_dicts(cls, dicts: Iterable[Mapping[str, Any]]) -> ForeignMemory:
        """A memory holding these messages (wire dicts), no marks."""
        memory = cls()
        memory.extend(dicts)
        return memory

    def extend(self, dicts: Iterable[Mapping[str, Any]]) -> None:
        """Append messages given as wire dicts."""
        self.content.extend((ForeignMsg.from_dict(d), []) for d in dicts)

    def state_dict(self) -> dict[str, Any]:
        """Rebuild the whole state: every message's dict, every call."""
        return {
            "_compressed_summary": self._compressed_summary,
            "content": [[msg.to_dict(), marks] for msg, marks in self.content],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Rebuild every message from the state."""
        content = []
        for item in state_dict["content"]:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                data, marks = item
            else:  # the older layout: bare message dicts
                data, marks = item, []
            content.append((ForeignMsg.from_dict(data), list(marks)))
        self.content = content
        self._compressed_summary = state_dict.get("_compressed_summary", "")
