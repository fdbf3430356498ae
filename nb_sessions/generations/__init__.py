"""What an AgentScope state looks like, one module per generation, and the questions asked of both.

:mod:`.v1` knows 1.x shapes (memories of ``[msg, marks]``, ``tool_use``
blocks, plan notebooks), :mod:`.v2` knows 2.x shapes (an ``AgentState``
dump: ``context``, ``tool_call`` blocks with a JSON-string input, tasks).
Views, search, repair and diff ask this package; nothing else re-derives
shapes. It imports nothing from the rest of nb_sessions, so every layer
above can use it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import v1, v2

__all__ = [
    "CALL_KINDS",
    "TOOL_KINDS",
    "Conversation",
    "ToolCall",
    "ToolResult",
    "block_text",
    "content_blocks",
    "conversations",
    "detect",
    "entry_message",
    "find_parts",
    "message_text",
    "message_time",
    "mismatch_message",
    "module_generation",
    "searchable_text",
    "tool_blocks",
    "v1",
    "v2",
]

def find_parts(state: Any, path: str) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Yield ``(kind, dotted_path, node)`` for every memory, agent state and plan notebook in ``state``, depth first."""
    # An explicit stack, not recursion: a deeply nested custom value must not hit the recursion limit.
    stack: list[tuple[str, Any]] = [(path, state)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, Mapping):
            if v1.is_memory(node):
                yield "memory", where, node
                continue
            if v2.is_agent_state(node):
                yield "agent_state", where, node
                continue
            if v1.is_plan_notebook(node):
                yield "notebook", where, node
                continue
            if v1.is_message(node):
                continue  # a message outside a memory holds no parts
            children = [(f"{where}.{key}" if where else str(key), value) for key, value in node.items()]
        elif isinstance(node, list):
            children = list(zip((f"{where}[{i}]" for i in range(len(node))), node, strict=True))
        else:
            continue
        stack.extend(reversed([c for c in children if isinstance(c[1], (Mapping, list))]))


@dataclass(frozen=True)
class Conversation:
    """A list of messages found in a state: a 1.x memory or a 2.x agent's context."""

    generation: str  #: "1.x" or "2.x"
    module: str
    path: str  #: dotted path of the memory or agent state, e.g. ``agent.memory``
    node: Mapping[str, Any]

    def entries(self) -> Iterator[tuple[Mapping[str, Any], list[Any]]]:
        """``(message, marks)`` in order; 2.x messages have no marks."""
        if self.generation == v1.GENERATION:
            yield from v1.memory_entries(self.node)
        else:
            for msg in v2.context_messages(self.node):
                yield msg, []


def conversations(states: Mapping[str, Any]) -> list[Conversation]:
    """Every conversation in ``{module: state}``, in state order."""
    found: list[Conversation] = []
    for module, state in states.items():
        for kind, path, node in find_parts(state, str(module)):
            if kind == "memory":
                found.append(Conversation(v1.GENERATION, str(module), path, node))
            elif kind == "agent_state":
                found.append(Conversation(v2.GENERATION, str(module), path, node))
    return found


def detect(states: Mapping[str, Any]) -> frozenset[str]:
    """The AgentScope generations whose shapes occur in ``{module: state}`` (empty: neither)."""
    kinds = {kind for module, state in states.items() for kind, _, _ in find_parts(state, str(module))}
    out = set()
    if kinds & {"memory", "notebook"}:
        out.add(v1.GENERATION)
    if "agent_state" in kinds:
        out.add(v2.GENERATION)
    return frozenset(out)


def module_generation(state: Any) -> str | None:
    """The AgentScope generation one module's state was written by: ``"2.x"`` for an ``AgentState`` dump,
    ``"1.x"`` when 1.x shapes (a memory, a plan notebook) are in it, None when neither."""
    if v2.is_agent_state(state):
        return v2.GENERATION
    found = detect({"state": state})
    if v1.GENERATION in found:
        return v1.GENERATION
    return v2.GENERATION if found else None


def mismatch_message(module: str, state_generation: str, object_generation: str, where: str = "") -> str:
    """Why a load is refused: module ``module`` holds a ``state_generation`` state, the object is ``object_generation``.

    One wording for every place that refuses such a load (the store, the
    magics, the CLI); ``where`` names the checkpoint when there is one.
    """
    at = f" of {where}" if where else ""
    if state_generation == v1.GENERATION and object_generation == v2.GENERATION:
        fix = (
            f"Migrate the session first: nbs.migrate(store, {where or 'ref'!r}) (or `nb-sessions migrate`) "
            "saves a 2.x copy as a new checkpoint, then load that."
        )
    else:
        fix = (
            "nb_sessions migrates 1.x to 2.x only (nbs.migrate); load this state into an AgentScope "
            f"{state_generation} object."
        )
    return (
        f"module {module!r}{at} holds an AgentScope {state_generation} state, but the object to load it "
        f"into is an AgentScope {object_generation} object: nothing was loaded. {fix}"
    )


def message_text(content: Any) -> str:
    """The text of a message's content (or a tool result's output): a str as is, else its text blocks joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"]
            for b in content
            if isinstance(b, Mapping) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return "" if content is None else str(content)


#: The block types of a tool call (1.x, 2.x) and of any tool block.
CALL_KINDS = frozenset({"tool_use", "tool_call"})
TOOL_KINDS = CALL_KINDS | {"tool_result"}


def content_blocks(message: Mapping[str, Any]) -> list[Any]:
    """A message's blocks: its list, or a 1.x str content as one ``text`` block."""
    content = message.get("content")
    return content if isinstance(content, list) else [{"type": "text", "text": message_text(content)}]


def block_text(block: Mapping[str, Any]) -> str | None:
    """The readable text a block holds, whatever its kind and generation; None when it holds none.

    ``text``: its text; ``thinking``: the thinking; ``hint`` (2.x): the hint,
    a str or text blocks; ``tool_use``/``tool_call``: the name and input
    (2.x keeps the input as a JSON string, 1.x as a dict); ``tool_result``:
    the output, a str or blocks (nested text and textual data blocks);
    ``data`` (2.x) and media blocks: a textual payload or the block's name.
    """
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return text if isinstance(text, str) else None
    if kind == "thinking":
        text = block.get("thinking")
        return text if isinstance(text, str) else None
    if kind == "hint":
        return _nested_text(block.get("hint"))
    if kind in ("tool_use", "tool_call"):
        raw = block.get("input")
        shown = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        return f"{block.get('name', '')} {shown}".strip()
    if kind == "tool_result":
        return _nested_text(block.get("output"))
    if kind == "data":
        return v2.data_text(block)
    return None


def _nested_text(value: Any) -> str | None:
    """A str as is; a list of blocks as their texts joined by newlines; None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [block_text(b) for b in value if isinstance(b, Mapping)]
        return "\n".join(p for p in parts if p)
    return None


def display_text(content: Any) -> str:
    """:func:`message_text`, or for a message that is only tool calls, ``→ get_weather(city='Paris')``.

    Both generations: a 1.x ``tool_use`` input is a dict, a 2.x ``tool_call``
    input a JSON string. Long values are cut to 20 characters with ``…``.
    """
    text = message_text(content)
    if text or not isinstance(content, list):
        return text
    calls = []
    for block in content:
        if not isinstance(block, Mapping) or block.get("type") not in ("tool_use", "tool_call"):
            continue
        raw = block.get("input")
        if isinstance(raw, str):
            with contextlib.suppress(ValueError):
                raw = json.loads(raw)
        if isinstance(raw, Mapping):
            args = ", ".join(f"{k}={_short_value(v)}" for k, v in raw.items())
        else:
            args = "" if raw is None else _short_value(raw)
        calls.append(f"→ {block.get('name', '?')}({args})")
    return "; ".join(calls)


def _short_value(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 20 else shown[:19] + "…"


def searchable_text(message: Mapping[str, Any]) -> str:
    """The words a message is found by: the text of every block that holds some (both generations)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [block_text(b) for b in content if isinstance(b, Mapping)]
    return "\n".join(p for p in parts if p)


def entry_message(entry: Any) -> Mapping[str, Any] | None:
    """The message of a conversation list item: a 1.x ``[msg, marks]`` entry or a bare 1.x/2.x message; else None."""
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], Mapping):
        entry = entry[0]
    if isinstance(entry, Mapping) and "content" in entry and "role" in entry:
        return entry
    return None


def message_time(message: Mapping[str, Any]) -> Any:
    """When a message was made: 1.x's ``timestamp`` or 2.x's ``created_at`` (raw, as stored)."""
    if "timestamp" in message:
        return message.get("timestamp")
    return message.get("created_at")


@dataclass(frozen=True)
class ToolCall:
    """One tool call in a conversation, in either generation's shape."""

    index: int  #: the message's position in its conversation
    block: int  #: the block's position in that message's content
    message_id: str | None
    call_id: str
    name: str
    input: Any  #: the arguments: a dict when they parse, else the raw value
    raw_input: str | None  #: 2.x's JSON string (or 1.x's ``raw_input``), when there is one
    state: str | None  #: 2.x's call state (``pending``, ``asking``, ``allowed``, ``submitted``, ``finished``)


@dataclass(frozen=True)
class ToolResult:
    """One tool result, answering the call with the same id."""

    index: int
    block: int
    message_id: str | None
    call_id: str
    name: str
    output: Any
    state: str | None  #: 2.x's result state (``success``, ``error``, ``interrupted``, ``denied``, ``running``)


def tool_blocks(conversation: Conversation) -> tuple[list[ToolCall], list[ToolResult]]:
    """Every tool call and tool result of a conversation, in message and block order."""
    call_kind = "tool_use" if conversation.generation == v1.GENERATION else "tool_call"
    calls: list[ToolCall] = []
    results: list[ToolResult] = []
    for index, (msg, _) in enumerate(conversation.entries()):
        content = msg.get("content")
        if not isinstance(content, list):
            continue
        msg_id = msg.get("id") if isinstance(msg.get("id"), str) else None
        for position, block in enumerate(content):
            if not isinstance(block, Mapping) or not isinstance(block.get("id"), str):
                continue
            kind = block.get("type")
            name: str = block["name"] if isinstance(block.get("name"), str) else ""
            state: str | None = block["state"] if isinstance(block.get("state"), str) else None
            if kind == call_kind:
                raw = block.get("input") if conversation.generation == v2.GENERATION else block.get("raw_input")
                calls.append(
                    ToolCall(index, position, msg_id, block["id"], name, _arguments(block.get("input")),
                             raw if isinstance(raw, str) else None, state)
                )
            elif kind == "tool_result":
                results.append(ToolResult(index, position, msg_id, block["id"], name, block.get("output"), state))
    return calls, results


def unanswered(conversation: Conversation) -> list[ToolCall]:
    """Calls no later result answers and that wait for nobody: a process died between call and result.

    A result answers the earliest open call with its id. A 2.x call at
    ``asking`` or ``submitted`` waits legitimately and is not listed.
    """
    calls, results = tool_blocks(conversation)
    events: list[ToolCall | ToolResult] = [*calls, *results]
    pending: dict[str, list[ToolCall]] = {}
    for item in sorted(events, key=lambda e: (e.index, e.block)):
        if isinstance(item, ToolCall):
            pending.setdefault(item.call_id, []).append(item)
        elif pending.get(item.call_id):
            pending[item.call_id].pop(0)
    left = {id(c) for waiting in pending.values() for c in waiting}
    return [c for c in calls if id(c) in left and c.state not in v2.OPEN_CALL_STATES]


def _arguments(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


#: The key under which each generation keeps a conversation's message list.
_MESSAGE_LIST_KEYS = ("content", "context")


def conversation_path(list_path: Sequence[str | int]) -> tuple[str | int, ...]:
    """The path of the conversation a message list belongs to: ``agent.memory.content`` -> ``agent.memory``.

    A 1.x memory keeps its messages under ``content``, a 2.x agent state under
    ``context``; a list under any other key is its own owner.
    """
    path = tuple(list_path)
    return path[:-1] if path and path[-1] in _MESSAGE_LIST_KEYS else path
