"""AgentScope 2.x state shapes: one pydantic ``AgentState`` per agent.

``AgentState.model_dump()`` is ``{"session_id", "summary", "context": [Msg],
"reply_context", "permission_context", "tool_context", "tasks_context":
{"tasks": [Task]}, "middle_context"}``. A 2.x ``Msg`` always holds a list of
blocks and carries ``created_at``/``finished_at`` (ISO), ``usage``,
``finished_reason`` and ``error``. A tool call is a ``tool_call`` block whose
``input`` is a JSON *string* and which has a ``state``; its ``tool_result``
sits in the same assistant message. A call at ``asking`` (waiting for the
user) or ``submitted`` (run elsewhere) is legitimately open; only a call at
``allowed`` or ``pending`` with no result was cut off by a dead process.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = [
    "AGENT_STATE_FIELDS",
    "GENERATION",
    "LEGACY_KEYS",
    "OPEN_CALL_STATES",
    "TASK_STATES",
    "V1_MARKERS",
    "context_messages",
    "foreign_generation",
    "is_agent",
    "is_agent_state",
    "is_agent_state_model",
    "is_message",
    "tasks",
]

GENERATION = "2.x"

#: The fields of ``agentscope.state.AgentState`` (2.0.11).
AGENT_STATE_FIELDS = (
    "session_id",
    "summary",
    "context",
    "reply_context",
    "permission_context",
    "tool_context",
    "tasks_context",
    "middle_context",
)
#: The fields only a 2.x state has (a 1.x memory has ``content``, never these).
_MARKERS = frozenset(AGENT_STATE_FIELDS) - {"session_id", "summary", "context"}

#: Tool-call states that legitimately wait for someone else (not dangling).
OPEN_CALL_STATES = frozenset({"asking", "submitted"})
#: A task's states, in order.
TASK_STATES = ("pending", "in_progress", "completed")


def is_message(node: Any) -> bool:
    """True if ``node`` looks like a 2.x ``Msg`` dict: a role and a list of blocks."""
    return isinstance(node, Mapping) and "role" in node and isinstance(node.get("content"), list)


def is_agent_state(node: Any) -> bool:
    """True if ``node`` is an ``AgentState`` dump: ``context`` a list of messages, and a 2.x-only field."""
    if not isinstance(node, Mapping) or not isinstance(node.get("context"), list):
        return False
    if not any(name in node for name in _MARKERS):
        return False
    return all(type(m) is dict or is_message(m) for m in node["context"])


def context_messages(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The messages of an ``AgentState`` dump, in order (malformed items skipped)."""
    return [m for m in state.get("context") or () if isinstance(m, Mapping)]


def tasks(state: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tasks of an ``AgentState`` dump (``tasks_context.tasks``), malformed items skipped."""
    ctx = state.get("tasks_context")
    items = ctx.get("tasks") if isinstance(ctx, Mapping) else None
    return [t for t in items or () if isinstance(t, Mapping)] if isinstance(items, list) else []


def new_id() -> str:
    """A fresh id as 2.x makes them (32 hex digits)."""
    return uuid.uuid4().hex


def timestamp_now() -> str:
    """The current local time as 2.x writes it (ISO, with a ``T``)."""
    return datetime.now().isoformat()


# -- reading messages and blocks (views, search, diff) ----------------------------

#: What AgentScope 2.x writes into the result of a call it closes as interrupted
#: (``Agent`` on a ``UserInterruptEvent``: call state ``finished``, result
#: state ``interrupted``, this text as a plain-string output).
INTERRUPT_TEXT = "<system-reminder>The tool call has been interrupted by the user.</system-reminder>"

#: The token counters of a 2.x ``Usage``, in AgentScope's order.
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_input_tokens", "cache_creation_input_tokens")


def data_text(block: Mapping[str, Any]) -> str | None:
    """The text of a ``data`` block: a base64 ``text/*`` payload decoded, else its name (None when neither)."""
    source = block.get("source")
    name = block.get("name") if isinstance(block.get("name"), str) else None
    if isinstance(source, Mapping) and source.get("type") == "base64":
        media = source.get("media_type")
        raw = source.get("data")
        if isinstance(media, str) and media.startswith("text/") and isinstance(raw, str):
            try:
                text = base64.b64decode(raw, validate=True).decode("utf-8")
            except (ValueError, UnicodeError):
                return name
            return f"{name}\n{text}" if name else text
    return name


def usage(message: Mapping[str, Any]) -> dict[str, int] | None:
    """A message's token counts (``USAGE_FIELDS``, missing ones 0), or None when it records none."""
    raw = message.get("usage")
    if not isinstance(raw, Mapping):
        return None
    return {k: v if isinstance(v, int) and not isinstance(v, bool) else 0 for k in USAGE_FIELDS
            for v in (raw.get(k),)}


def interrupted_result(
    call_id: str, name: str, *, when: str, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``tool_result`` block AgentScope 2.x writes for a call it closes as interrupted."""
    return {
        "type": "tool_result",
        "id": call_id,
        "name": name,
        "output": INTERRUPT_TEXT,
        "state": "interrupted",
        "metadata": dict(metadata or {}),
        "created_at": when,
        "finished_at": None,
    }


def close_call(
    message: Mapping[str, Any], call_id: str, call_state: str | None, result: dict[str, Any]
) -> int:
    """Close the call ``call_id`` (at ``call_state``) of ``message`` in place with ``result``; return where it went.

    The call's state becomes ``finished``; the result goes right after the call
    and the results following it, in the same message (2.x keeps both there).
    """
    blocks: list[Any] = message["content"]
    at = next(
        i for i, b in enumerate(blocks)
        if isinstance(b, dict) and b.get("id") == call_id and b.get("type") == "tool_call"
        and b.get("state") == call_state
    )
    blocks[at]["state"] = "finished"
    pos = at + 1
    while pos < len(blocks) and isinstance(blocks[pos], dict) and blocks[pos].get("type") == "tool_result":
        pos += 1
    blocks.insert(pos, result)
    return pos


# -- recognising live 2.x objects (for the state adapter; no agentscope import) --

#: Fields of a 1.x agent or memory state that no 2.x ``AgentState`` has.
V1_MARKERS = frozenset(
    {"memory", "content", "_compressed_summary", "_sys_prompt", "plan_notebook", "toolkit"}
)
#: Keys older 2.x files hold at the top level (``AgentState`` moves them into ``reply_context``).
LEGACY_KEYS = frozenset({"reply_id", "cur_iter"})


def is_agent_state_model(obj: Any) -> bool:
    """True if ``obj`` is an ``agentscope.state.AgentState`` instance (or a subclass), recognised without importing agentscope."""
    return any(
        c.__name__ == "AgentState" and c.__module__.startswith("agentscope.")
        for c in type(obj).__mro__
    )


def is_agent(obj: Any) -> bool:
    """True if ``obj`` is a 2.x agent: an object whose ``state`` attribute is an ``AgentState``."""
    if isinstance(obj, type):
        return False
    try:
        state = obj.__dict__.get("state")
    except AttributeError:
        return False
    return state is not None and is_agent_state_model(state)


def foreign_generation(state: Mapping[str, Any]) -> str | None:
    """Why ``state`` cannot be a 2.x ``AgentState`` dump (a 1.x state, or none of its fields), or None."""
    keys = set(state)
    if keys & set(AGENT_STATE_FIELDS) or keys & LEGACY_KEYS:
        if keys & V1_MARKERS and "context" not in keys:
            return "a 1.x state (it holds " + ", ".join(sorted(keys & V1_MARKERS)) + ")"
        return None
    if keys & V1_MARKERS:
        return "a 1.x state (it holds " + ", ".join(sorted(keys & V1_MARKERS)) + ")"
    if not keys:
        return None
    return "not an AgentState (none of its fields: " + ", ".join(sorted(map(str, keys))[:6]) + ")"
