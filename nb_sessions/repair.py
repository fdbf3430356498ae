"""Close tool calls that never got a result, so an agent that crashed mid-call resumes cleanly.

An agent killed (or interrupted) while a tool ran leaves in its memory an
assistant message holding a ``tool_use`` block and no ``tool_result`` with
the same id. Model APIs refuse such a history, so the agent never resumes.

:func:`find_dangling_tool_calls` finds those calls in saved states and
:func:`repair_states` returns *new* states (the input is never changed) in
which each one is closed by an AgentScope-shaped system message::

    {"id": <fresh>, "name": "system", "role": "system",
     "content": [{"type": "tool_result", "id": <tool_use id>, "name": <tool name>,
                  "output": [{"type": "text", "text": "Error: the tool call was interrupted ..."}]}],
     "metadata": {}, "timestamp": "YYYY-MM-DD HH:MM:SS.mmm"}

inserted right after the message holding the call, after the results that
already answer that message (the rest of that turn), so results stay next to
their call. Pure functions over ``{module_name: state}`` dicts: no store, no
live object, no I/O.

AgentScope 2.x keeps a call and its result in the same assistant message,
and a call at ``asking`` or ``submitted`` waits legitimately; a 2.x call cut
off (``pending`` or ``allowed``, no result) is closed as AgentScope 2.x
closes a call it interrupts: the call's state set to ``finished`` and a
``tool_result`` block with state ``interrupted`` and AgentScope's own
interruption text (:data:`nb_sessions.generations.v2.INTERRUPT_TEXT`) as
its output, inserted in that message right after the call (and the results
following it); its metadata says ``{"closed_by": "nb_sessions repair"}``. Where the
conversations are and what their blocks look like is asked of
:mod:`nb_sessions.generations`.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .agent.message import short_id, timestamp_now
from .errors import _join
from .generations import Conversation, conversations, unanswered, v1, v2

__all__ = [
    "REPAIR_METADATA",
    "REPAIR_TEXT",
    "DanglingCall",
    "RepairReport",
    "find_dangling_tool_calls",
    "repair_states",
]

#: Recorded in the metadata of a 2.x result that repair wrote (AgentScope's own text stays as is).
REPAIR_METADATA = {"closed_by": "nb_sessions repair"}

#: The text of the error result that closes a dangling call.
REPAIR_TEXT = (
    "Error: the tool call was interrupted before it returned (closed by nb_sessions repair)"
)


@dataclass(frozen=True)
class DanglingCall:
    """A ``tool_use`` block with no ``tool_result`` after it in its memory."""

    module: str
    """The module (top-level key of the states) holding the memory, e.g. ``agent``."""
    path: str
    """Dotted path of the memory, e.g. ``agent.memory``."""
    index: int
    """Index in the memory's ``content`` of the message holding the call."""
    message_id: str | None
    """That message's id."""
    tool_use_id: str
    """The ``tool_use`` block's id (the result must carry the same)."""
    tool_name: str
    """The tool called."""
    inserted_at: int | None = None
    """Where the closing result went (set by :func:`repair_states`): its index in the
    repaired 1.x ``content``, or in the 2.x message's block list."""
    generation: str = v1.GENERATION
    """The AgentScope generation of the conversation: ``1.x`` or ``2.x``."""
    state: str | None = None
    """A 2.x call's state (``pending`` or ``allowed``: it was cut off)."""

    @property
    def where(self) -> str:
        """``agent.memory.content[5]`` (1.x) or ``agent.context[5]`` (2.x): the message holding the call."""
        key = "context" if self.generation == v2.GENERATION else "content"
        return f"{_join(self.path, key)}[{self.index}]"

    @property
    def result_at(self) -> str:
        """Where the closing result is, once repaired (empty before)."""
        if self.inserted_at is None:
            return ""
        if self.generation == v2.GENERATION:
            return f"{self.where}.content[{self.inserted_at}]"
        return f"{_join(self.path, 'content')}[{self.inserted_at}]"


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_states` closed (or, in a dry run, would close)."""

    calls: tuple[DanglingCall, ...] = ()
    dry_run: bool = False

    def __len__(self) -> int:
        return len(self.calls)

    @property
    def changed(self) -> bool:
        """True when at least one call was (or would be) closed."""
        return bool(self.calls)

    def __str__(self) -> str:
        if not self.calls:
            return "nothing to repair: every tool call has its result"
        verb = "would close" if self.dry_run else "closed"
        lines = [f"{verb} {len(self.calls)} dangling tool call(s) with an error result:"]
        for call in self.calls:
            msg = f", message {call.message_id!r}" if call.message_id is not None else ""
            at = f" -> result at {call.result_at}" if call.result_at else ""
            lines.append(
                f"  {call.where}: {call.tool_name!r} (tool_use id {call.tool_use_id!r}{msg}){at}"
            )
        if self.dry_run:
            lines.append("dry run: nothing was changed")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        if not self.calls:
            return f"<p class='nb-sessions-repair'>{esc(str(self))}</p>"
        verb = "would close" if self.dry_run else "closed"
        head = "".join(
            f"<th style='text-align:left'>{h}</th>"
            for h in ("message", "tool", "tool_use id", "message id", "result at")
        )
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td style='text-align:left'>{esc(v)}</td>"
                for v in (
                    call.where,
                    call.tool_name,
                    call.tool_use_id,
                    call.message_id or "",
                    call.result_at,
                )
            )
            + "</tr>"
            for call in self.calls
        )
        note = "<p>dry run: nothing was changed</p>" if self.dry_run else ""
        return (
            f"<div class='nb-sessions-repair'><p>{verb} {len(self.calls)} dangling tool call(s) "
            f"with an error result</p><table><tr>{head}</tr>{rows}</table>{note}</div>"
        )


# -- finding ----------------------------------------------------------------------


def _dangling_in(conversation: Conversation) -> list[DanglingCall]:
    return [
        DanglingCall(
            conversation.module, conversation.path, call.index, call.message_id, call.call_id, call.name,
            generation=conversation.generation, state=call.state,
        )
        for call in unanswered(conversation)
    ]


def find_dangling_tool_calls(states: Mapping[str, Any]) -> list[DanglingCall]:
    """Every tool call in the conversations of ``states`` that no later ``tool_result`` answers.

    A result answers the earliest open call with its id; calls are listed in
    conversation order. A 2.x call waiting for the user (``asking``) or for an
    outside executor (``submitted``) is not dangling. Malformed items (no id,
    not a dict) are skipped, never raised on.
    """
    out: list[DanglingCall] = []
    for conversation in conversations(states):
        out += _dangling_in(conversation)
    return out


# -- repairing --------------------------------------------------------------------


def _copy(value: Any) -> Any:
    """Deep-copy JSON containers (mappings become dicts, tuples lists); iterative, so depth is no limit."""
    if not isinstance(value, (Mapping, list, tuple)):
        return value
    root: Any = {} if isinstance(value, Mapping) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, Mapping) else enumerate(src)
        for key, item in items:
            child = item
            if isinstance(item, (Mapping, list, tuple)):
                child = {} if isinstance(item, Mapping) else []
                stack.append((item, child))
            if isinstance(dst, dict):
                dst[key] = child
            else:
                dst.append(child)
    return root


def closing_message(
    call: DanglingCall,
    *,
    clock: Callable[[], str] = timestamp_now,
    id_factory: Callable[[], str] = short_id,
) -> dict[str, Any]:
    """The AgentScope 1.x-shaped system message whose ``tool_result`` closes ``call``."""
    return v1.new_result_message(call.tool_use_id, call.tool_name, REPAIR_TEXT, when=clock(), msg_id=id_factory())


def repair_states(
    states: Mapping[str, Any],
    *,
    dry_run: bool = False,
    clock: Callable[[], str] | None = None,
    id_factory: Callable[[], str] | None = None,
) -> tuple[dict[str, Any], RepairReport]:
    """Return ``(new_states, report)``: a copy of ``states`` with every dangling tool call closed.

    ``states`` is never modified; ``new_states`` shares nothing with it. Each
    dangling call gets a system message holding an error ``tool_result`` with
    its id, inserted after the message holding the call and after the results
    already answering that message. ``dry_run`` only changes the report's
    wording ("would close"): the returned states show what a repair produces.
    ``clock`` and ``id_factory`` make the new messages' timestamps and ids
    reproducible (defaults: now, random ids as AgentScope makes them).
    """
    new_states: dict[str, Any] = {str(k): _copy(v) for k, v in states.items()}
    make_time = clock or timestamp_now
    make_id = id_factory or short_id
    closed: list[DanglingCall] = []
    for conversation in conversations(new_states):
        calls = _dangling_in(conversation)
        if not calls:
            continue
        if conversation.generation == v2.GENERATION:
            closed += _close_in_messages(conversation, calls, clock)
            continue
        content: list[Any] = conversation.node["content"]  # a list: _copy made it one
        # Where each closing result goes: after its message and the results answering it.
        slots = [(v1.result_slot(content, call.index), call) for call in calls]
        merged: list[Any] = []
        cursor = 0
        for pos, call in slots:
            merged.extend(content[cursor:pos])
            cursor = pos
            msg = closing_message(call, clock=make_time, id_factory=make_id)
            closed.append(replace(call, inserted_at=len(merged)))
            merged.append(v1.entry_like(content[call.index], msg))
        merged.extend(content[cursor:])
        content[:] = merged
    return new_states, RepairReport(tuple(closed), dry_run=dry_run)


def _close_in_messages(
    conversation: Conversation,
    calls: list[DanglingCall],
    clock: Callable[[], str] | None,
) -> list[DanglingCall]:
    """2.x: each call's interrupted result goes into its own message, after the call and the results following it."""
    make_time = clock or v2.timestamp_now
    messages: list[Any] = conversation.node["context"]
    closed: list[DanglingCall] = []
    for call in calls:
        result = v2.interrupted_result(call.tool_use_id, call.tool_name, when=make_time(), metadata=REPAIR_METADATA)
        pos = v2.close_call(messages[call.index], call.tool_use_id, call.state, result)
        closed.append(replace(call, inserted_at=pos))
    return closed
