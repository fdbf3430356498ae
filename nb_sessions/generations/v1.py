"""AgentScope 1.x state shapes: memories of ``[msg, marks]``, ``tool_use`` blocks, plan notebooks.

A 1.x session is ``{module: state_dict}``. Messages live in memories
(``InMemoryMemory``: ``{"_compressed_summary": str, "content": [[msg, marks], ...]}``;
older files hold ``content: [msg, ...]``), anywhere inside a module's state.
A message's ``content`` is a str or a list of blocks; a tool call is a
``tool_use`` block whose ``input`` is a dict, and its result a ``tool_result``
block in a later (system) message. Plans live in plan notebooks:
``{"storage": {"plans": {id: Plan}}, "current_plan": Plan | null}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "GENERATION",
    "is_memory",
    "is_message",
    "is_plan_notebook",
    "memory_entries",
    "notebook_plans",
]

GENERATION = "1.x"


def is_message(node: Any) -> bool:
    """True if ``node`` looks like a 1.x ``Msg`` dict (``role`` and ``content``)."""
    return isinstance(node, Mapping) and "role" in node and "content" in node


def is_memory(node: Any) -> bool:
    """True if ``node`` is a memory state: a dict whose ``content`` is a list of ``[msg, marks]`` or msgs."""
    if not isinstance(node, Mapping):
        return False
    content = node.get("content")
    if not isinstance(content, list):
        return False
    if not content:
        return "role" not in node  # an empty memory, not a message with an empty block list
    first = content[0]
    if isinstance(first, (list, tuple)):
        return len(first) == 2 and isinstance(first[0], Mapping)
    return isinstance(first, Mapping) and "role" in first


def memory_entries(memory: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], list[Any]]]:
    """Yield ``(message, marks)`` for each entry of a memory state (marks ``[]`` in the older layout)."""
    for entry in memory.get("content") or ():
        # dict before Mapping: isinstance against an ABC is slow over 100k entries.
        if isinstance(entry, (list, tuple)):
            if entry and isinstance(entry[0], (dict, Mapping)):
                marks = entry[1] if len(entry) > 1 else []
                yield entry[0], marks if isinstance(marks, list) else [marks]
        elif isinstance(entry, Mapping):
            yield entry, []


def is_plan_notebook(node: Any) -> bool:
    """True if ``node`` is a PlanNotebook state: ``{"storage": {"plans": {...}}, "current_plan": ...}``."""
    if not isinstance(node, Mapping) or "current_plan" not in node:
        return False
    storage = node.get("storage")
    return isinstance(storage, Mapping) and isinstance(storage.get("plans"), Mapping)


def notebook_plans(notebook: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], bool]]:
    """``(plan_id, plan, is_current)`` for stored plans, then the current one; a current plan also stored appears once."""
    current = notebook.get("current_plan")
    current_id = _plan_id(current, "") if isinstance(current, Mapping) else None
    found: list[tuple[str, Mapping[str, Any], bool]] = []
    storage = notebook.get("storage")
    plans = storage.get("plans") if isinstance(storage, Mapping) else None
    for key, plan in (plans.items() if isinstance(plans, Mapping) else ()):
        if not isinstance(plan, Mapping):
            continue
        pid = _plan_id(plan, str(key))
        if current_id is not None and pid == current_id:
            assert isinstance(current, Mapping)
            found.append((pid, current, True))  # the live version wins over the stored copy
            current_id = None
        else:
            found.append((pid, plan, False))
    if current_id is not None and isinstance(current, Mapping):
        found.append((current_id, current, True))
    return found


def _plan_id(plan: Mapping[str, Any], default: str) -> str:
    pid = plan.get("id")
    return pid if isinstance(pid, str) else default


# -- writing: closing a call (repair) ---------------------------------------------


def entry_message(item: Any) -> Mapping[str, Any] | None:
    """The message of a memory item: a ``[msg, marks]`` pair or a bare message dict."""
    if is_message(item):
        return item  # type: ignore[no-any-return]
    if isinstance(item, (list, tuple)) and len(item) == 2 and is_message(item[0]):
        return item[0]  # type: ignore[no-any-return]
    return None


def _only_results(msg: Mapping[str, Any] | None) -> bool:
    """True for a message holding nothing but ``tool_result`` blocks (1.x's result message)."""
    content = msg.get("content") if msg is not None else None
    return (
        isinstance(content, (list, tuple))
        and bool(content)
        and all(isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content)
    )


def result_slot(content: list[Any], index: int) -> int:
    """Where a new result for the call in ``content[index]`` goes: after that message and the results following it."""
    pos = index + 1
    while pos < len(content) and _only_results(entry_message(content[pos])):
        pos += 1
    return pos


def new_result_message(call_id: str, name: str, text: str, *, when: str, msg_id: str) -> dict[str, Any]:
    """The system message holding an error ``tool_result`` for ``call_id``, as 1.x's ReActAgent writes results."""
    return {
        "id": msg_id,
        "name": "system",
        "role": "system",
        "content": [
            {"type": "tool_result", "id": call_id, "name": name, "output": [{"type": "text", "text": text}]}
        ],
        "metadata": {},
        "timestamp": when,
    }


def entry_like(template: Any, msg: dict[str, Any]) -> Any:
    """``msg`` as a memory item of the same layout as ``template``: bare, or ``[msg, []]``."""
    return msg if is_message(template) else [msg, []]


def plan_subtasks(plan: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """A plan's subtasks (malformed items skipped)."""
    raw = plan.get("subtasks") if plan is not None else None
    return [t for t in raw if isinstance(t, Mapping)] if isinstance(raw, list) else []
