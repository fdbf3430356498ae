"""The step from an AgentScope 1.x agent state to a 2.x ``AgentState`` dump (pure data, no I/O).

A 1.x agent's ``state_dict()`` is ``{"memory": InMemoryMemory, "toolkit":
{"active_groups"}, "plan_notebook": PlanNotebook, "name", "_sys_prompt"}``;
2.x keeps one ``AgentState``. What maps:

- memory messages -> ``context``: a str content becomes one ``text`` block;
  ``text``/``thinking`` blocks stay; a ``tool_use`` block becomes a
  ``tool_call`` (its input a JSON string, state ``finished``) and the
  ``tool_result`` of the separate 1.x system message moves into the
  assistant message holding the call (2.x keeps both in one message, and
  refuses results in user or system messages); a system message left empty
  by that move is dropped. Media blocks become ``data`` blocks. Timestamps
  become ISO ``created_at``.
- marks: ``compressed`` messages are left out (2.x compression removes them
  from the context and keeps the summary); ``hint`` messages are left out
  (1.x clears them after use; 2.x has no hint message); other marks have no
  2.x place.
- ``_compressed_summary`` -> ``summary``.
- the current plan's subtasks -> ``tasks_context.tasks`` (ids ``1``, ``2``...
  as 2.x numbers them; todo -> pending, in_progress, done -> completed; the
  1.x fields without a 2.x field kept in each task's ``metadata``);
  abandoned subtasks and plans that are not current have no 2.x place.
- ``toolkit.active_groups`` -> ``tool_context.activated_groups``.

Everything without a 2.x place is listed as a :class:`Leftover`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import v1, v2

__all__ = ["Leftover", "upgrade_agent_state", "upgrade_message_list"]

#: Marks whose messages 2.x has no place for, and why (1.x ReActAgent's own marks).
DROPPED_MARKS = {
    "compressed": "compressed into the summary (2.x keeps only the summary)",
    "hint": "a transient 1.x hint (cleared after use; 2.x has no hint message)",
}
#: 1.x subtask state -> 2.x task state (``abandoned`` has none).
TASK_STATE = {"todo": "pending", "in_progress": "in_progress", "done": "completed"}
_MEDIA = {"image", "audio", "video"}
_ERROR_OUTPUT = re.compile(r"\s*\w*Error\b")
_KNOWN_AGENT_KEYS = {"memory", "toolkit", "plan_notebook"}


@dataclass(frozen=True)
class Leftover:
    """Something of the 1.x state that has no place in 2.x (it is not in the migrated state)."""

    path: str  #: dotted path in the 1.x state, e.g. ``agent.memory.content[3]``
    what: str  #: what it is, e.g. ``mark 'important'``
    why: str  #: why it had no place, or where to put it by hand

    def __str__(self) -> str:
        return f"{self.path}: {self.what} — {self.why}"


def _iso(stamp: Any) -> str | None:
    """1.x ``2026-11-21 08:17:00.723`` -> 2.x ``2026-11-21T08:17:00.723000``."""
    if not isinstance(stamp, str) or not stamp:
        return None
    date, _, time = stamp.partition(" ")
    if not time:
        return stamp
    whole, _, frac = time.partition(".")
    return f"{date}T{whole}.{(frac + '000000')[:6]}"


def _data_block(block: Mapping[str, Any], when: str | None) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, Mapping):
        return None
    kind = str(block.get("type"))
    media = source.get("media_type") if isinstance(source.get("media_type"), str) else f"{kind}/*"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        new_source: dict[str, Any] = {"type": "url", "url": source["url"], "media_type": media}
    elif source.get("type") == "base64" and isinstance(source.get("data"), str):
        new_source = {"type": "base64", "data": source["data"], "media_type": media}
    else:
        return None
    return _stamped({"type": "data", "id": v2.new_id(), "source": new_source}, when)


def _stamped(block: dict[str, Any], when: str | None) -> dict[str, Any]:
    block.setdefault("created_at", when or v2.timestamp_now())
    block.setdefault("finished_at", None)
    return block


def _output(value: Any, when: str | None) -> str | list[dict[str, Any]]:
    """A 1.x tool result's output as 2.x accepts it: a str, or text and data blocks."""
    if isinstance(value, str):
        return value
    out: list[dict[str, Any]] = []
    for block in value if isinstance(value, list) else []:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            out.append(_stamped({"type": "text", "text": block["text"], "id": v2.new_id()}, when))
        elif block.get("type") in _MEDIA:
            data = _data_block(block, when)
            if data is not None:
                out.append(data)
    return out if out or not value else json.dumps(value, ensure_ascii=False, default=str)


def _result_state(block: Mapping[str, Any]) -> str:
    if block.get("is_error"):
        return "error"
    output = block.get("output")
    text = output if isinstance(output, str) else "\n".join(
        b.get("text", "") for b in output or [] if isinstance(b, Mapping) and b.get("type") == "text"
    ) if isinstance(output, list) else ""
    return "error" if _ERROR_OUTPUT.match(text) else "success"


def upgrade_message_list(
    entries: list[tuple[Mapping[str, Any], list[Any]]], path: str
) -> tuple[list[dict[str, Any]], list[Leftover]]:
    """1.x ``(message, marks)`` entries -> 2.x messages, and what had no place."""
    out: list[dict[str, Any]] = []
    left: list[Leftover] = []
    calls: dict[str, dict[str, Any]] = {}  # open 1.x tool_use id -> the 2.x message holding it
    for index, (msg, marks) in enumerate(entries):
        where = f"{path}[{index}]"
        dropped = [str(m) for m in marks if str(m) in DROPPED_MARKS]
        if dropped:
            left.append(Leftover(where, f"message {msg.get('id')!r} marked {dropped[0]!r}",
                                 DROPPED_MARKS[dropped[0]]))
            continue
        for mark in marks:
            left.append(Leftover(where, f"mark {mark!r} of message {msg.get('id')!r}",
                                 "2.x messages carry no marks (the message itself was migrated)"))
        role = msg.get("role") if msg.get("role") in ("user", "assistant", "system") else "user"
        when = _iso(msg.get("timestamp"))
        content = msg.get("content")
        raw_blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        new_blocks: list[dict[str, Any]] = []
        for b_index, block in enumerate(raw_blocks if isinstance(raw_blocks, list) else []):
            if not isinstance(block, Mapping):
                continue
            kind = block.get("type")
            at = f"{where}.content[{b_index}]"
            if kind == "text" and isinstance(block.get("text"), str):
                new_blocks.append(_stamped({"type": "text", "text": block["text"], "id": v2.new_id()}, when))
            elif kind == "thinking" and isinstance(block.get("thinking"), str) and role == "assistant":
                new_blocks.append(_stamped({"type": "thinking", "thinking": block["thinking"],
                                            "id": v2.new_id()}, when))
            elif kind == "tool_use" and role == "assistant" and isinstance(block.get("id"), str):
                raw = block.get("raw_input")
                call = _stamped({"type": "tool_call", "id": block["id"], "name": str(block.get("name", "")),
                                 "input": json.dumps(block.get("input") or {}, ensure_ascii=False, default=str)
                                 if not isinstance(raw, str) or not raw else raw,
                                 "state": "finished", "suggested_rules": []}, when)
                new_blocks.append(call)
                calls[block["id"]] = call
            elif kind == "tool_result" and isinstance(block.get("id"), str):
                opened = calls.pop(block["id"], None)
                holder = next((m for m in reversed(out) if opened is not None and
                               any(b is opened for b in m["content"])), None)
                if holder is None:
                    left.append(Leftover(at, f"tool result {block['id']!r} without a call before it",
                                         "2.x keeps a result in its call's message; none was found"))
                    continue
                holder["content"].append(_stamped({
                    "type": "tool_result", "id": block["id"], "name": str(block.get("name", "")),
                    "output": _output(block.get("output"), when), "state": _result_state(block),
                    "metadata": {},
                }, when))
            elif kind in _MEDIA and role in ("user", "assistant") and _data_block(block, when) is not None:
                new_blocks.append(_data_block(block, when))  # type: ignore[arg-type]
            else:
                left.append(Leftover(at, f"{kind!r} block in a {role} message",
                                     "2.x has no such block there"))
        if not new_blocks and isinstance(raw_blocks, list) and raw_blocks:
            continue  # a 1.x result message, now empty: its results moved to their calls
        metadata = msg.get("metadata")
        meta: dict[str, Any] = dict(metadata) if isinstance(metadata, Mapping) else {}
        if msg.get("invocation_id") is not None:
            meta.setdefault("invocation_id", msg["invocation_id"])
        new = {
            "id": msg.get("id") if isinstance(msg.get("id"), str) else v2.new_id(),
            "name": str(msg.get("name") or role),
            "role": role,
            "content": new_blocks,
            "metadata": meta,
            "created_at": when or v2.timestamp_now(),
            "finished_at": when,
            "usage": None,
            "finished_reason": None,
            "structured_output": None,
            "error": None,
        }
        out.append(new)
    for call_id, call in calls.items():
        call["state"] = "allowed"  # as 2.x leaves a call cut off before its result
        left.append(Leftover(path, f"tool call {call_id!r} ({call['name']}) had no result",
                             "migrated as cut off (state 'allowed'): load with repair=True to close it"))
    return out, left


def _tasks(notebook: Mapping[str, Any], path: str) -> tuple[list[dict[str, Any]], list[Leftover]]:
    tasks: list[dict[str, Any]] = []
    left: list[Leftover] = []
    for pid, plan, current in v1.notebook_plans(notebook):
        name = plan.get("name")
        if not current:
            left.append(Leftover(f"{path}.storage.plans.{pid}", f"plan {name!r} ({plan.get('state')}, not current)",
                                 "2.x keeps one task list, no plan history"))
            continue
        left.append(Leftover(f"{path}.current_plan", f"plan {name!r}: its name, description, expected outcome, "
                             "state and outcome", "2.x has no plan; each task's metadata names it"))
        for position, sub in enumerate(plan.get("subtasks") or []):
            if not isinstance(sub, Mapping):
                continue
            state = TASK_STATE.get(str(sub.get("state")))
            if state is None:
                left.append(Leftover(f"{path}.current_plan.subtasks[{position}]",
                                     f"subtask {sub.get('name')!r} ({sub.get('state')})",
                                     "2.x tasks are pending, in_progress or completed"))
                continue
            tasks.append({
                "subject": str(sub.get("name") or ""),
                "description": str(sub.get("description") or ""),
                "metadata": {"plan": name, "plan_id": pid, "expected_outcome": sub.get("expected_outcome"),
                             "outcome": sub.get("outcome"), "finished_at": _iso(sub.get("finished_at"))},
                "created_at": _iso(sub.get("created_at")) or v2.timestamp_now(),
                "state": state,
                "id": str(len(tasks) + 1),
                "owner": None,
                "blocks": [],
                "blocked_by": [],
            })
    return tasks, left


def upgrade_agent_state(state: Mapping[str, Any], module: str) -> tuple[dict[str, Any], list[Leftover]]:
    """A 1.x agent's (or bare memory's) state -> a 2.x ``AgentState`` dump, and what had no place."""
    left: list[Leftover] = []
    if v1.is_memory(state):
        memory: Mapping[str, Any] = state
        memory_path, rest = module, {}
    else:
        found = state.get("memory")
        memory = found if isinstance(found, Mapping) and v1.is_memory(found) else {"content": []}
        memory_path = f"{module}.memory"
        rest = {k: v for k, v in state.items() if k not in _KNOWN_AGENT_KEYS}
    context, lost = upgrade_message_list(list(v1.memory_entries(memory)), f"{memory_path}.content")
    left += lost
    summary = memory.get("_compressed_summary")
    tasks: list[dict[str, Any]] = []
    notebook = state.get("plan_notebook")
    if v1.is_plan_notebook(notebook):
        tasks, lost = _tasks(notebook, f"{module}.plan_notebook")  # type: ignore[arg-type]
        left += lost
    toolkit = state.get("toolkit")
    groups = toolkit.get("active_groups") if isinstance(toolkit, Mapping) else None
    for key, value in rest.items():
        why = {"name": "2.x keeps the name on the Agent: Agent(name=...)",
               "_sys_prompt": "2.x keeps the system prompt on the Agent: Agent(system_prompt=...)"}.get(
            key, "AgentState has no such field")
        left.append(Leftover(f"{module}.{key}", f"{key} = {json.dumps(value, ensure_ascii=False, default=str)[:60]}",
                             why))
    new = {
        "session_id": v2.new_id(),
        "summary": summary if isinstance(summary, str) else "",
        "context": context,
        "reply_context": {"reply_id": v2.new_id(), "cur_iter": 0, "structured_schema": None, "structured_output": None},
        "permission_context": {"mode": "default", "working_directories": {}, "allow_rules": {},
                               "deny_rules": {}, "ask_rules": {}},
        "tool_context": {"max_cache_files": 100, "max_cache_bytes": 25000.0, "read_file_cache": [],
                         "activated_groups": [str(g) for g in groups] if isinstance(groups, list) else []},
        "tasks_context": {"tasks": tasks},
        "middle_context": {},
    }
    return new, left
