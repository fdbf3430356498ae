"""AgentScope 1.x ``Toolkit``: local tool functions in groups, JSON schemas, and tool calls.

State: ``{"active_groups": [group name, ...]}``. The ``basic`` group is always
active and never listed. A strict load rejects group names this toolkit does
not have (AgentScope silently drops them); a non-strict load drops them.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, create_model

from ..errors import _join
from ..state import Commit, StateModule
from .message import TextBlock, ToolResultBlock, ToolUseBlock, validate_block

__all__ = ["RegisteredTool", "ToolGroup", "Toolkit"]

BASIC = "basic"


@dataclass
class ToolGroup:
    """A named set of tools that is switched on and off together."""

    name: str
    description: str
    active: bool = False
    notes: str | None = None


@dataclass
class RegisteredTool:
    """A tool function with its group, preset arguments and JSON schema."""

    name: str
    func: Callable[..., Any]
    group: str
    json_schema: dict[str, Any]
    preset_kwargs: dict[str, Any] = field(default_factory=dict)


class Toolkit(StateModule):
    """Tool functions in groups; only the ``basic`` group and active groups are offered and callable."""

    def __init__(self) -> None:
        super().__init__()
        self.tools: dict[str, RegisteredTool] = {}
        self.groups: dict[str, ToolGroup] = {}

    # -- state -------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"active_groups": [...]}`` (then any state a subclass registers)."""
        return {"active_groups": self.active_groups(), **super().state_dict()}

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: list[tuple[str, str]]
    ) -> list[Commit]:
        """Check ``active_groups`` against the groups this toolkit has."""
        if not isinstance(state, Mapping):
            return super()._nbs_prepare_load(state, strict, path, problems)
        where = _join(path, "active_groups")
        commits: list[Commit] = []
        if "active_groups" not in state:
            if strict:
                problems.append((where, "missing: the list of active tool group names"))
        else:
            names = self._check_active_groups(state["active_groups"], where, strict, problems)
            if names is not None:
                commits.append(lambda: self._set_active(names))
        rest = {k: v for k, v in state.items() if k != "active_groups"}
        return super()._nbs_prepare_load(rest, strict, path, problems) + commits

    def _check_active_groups(
        self, value: Any, path: str, strict: bool, problems: list[tuple[str, str]]
    ) -> set[str] | None:
        if not isinstance(value, list):
            problems.append((path, f"expected a list of tool group names (str), got {_tname(value)}"))
            return None
        names: set[str] = set()
        ok = True
        for i, name in enumerate(value):
            if not isinstance(name, str):
                problems.append((f"{path}[{i}]", f"expected a tool group name (str), got {_tname(name)}"))
                ok = False
            elif name in self.groups:
                names.add(name)
            elif strict:
                known = ", ".join(self.groups) or "none"
                problems.append(
                    (
                        f"{path}[{i}]",
                        f"unknown tool group {name!r} (this toolkit has: {known}); create it with "
                        "create_tool_group() before loading, or load with strict=False to drop it",
                    )
                )
                ok = False
        return names if ok else None

    def _set_active(self, names: set[str]) -> None:
        for group in self.groups.values():
            group.active = group.name in names

    def active_groups(self) -> list[str]:
        """Return the names of the active groups (``basic`` excluded), in creation order."""
        return [g.name for g in self.groups.values() if g.active]

    # -- registration --------------------------------------------------------------

    def register_tool_function(
        self,
        tool_func: Callable[..., Any],
        group_name: str = BASIC,
        preset_kwargs: dict[str, Any] | None = None,
        func_description: str | None = None,
        json_schema: dict[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Register a sync or async function as a tool; its schema comes from its signature and docstring."""
        tool_name = name or getattr(tool_func, "__name__", None)
        if not tool_name:
            raise ValueError("the tool function has no __name__; pass name=...")
        if tool_name in self.tools:
            raise ValueError(f"a tool named {tool_name!r} is already registered; remove it first")
        if group_name != BASIC and group_name not in self.groups:
            raise ValueError(f"no tool group {group_name!r}; create it with create_tool_group() first")
        presets = dict(preset_kwargs or {})
        schema = json_schema or _build_schema(tool_func, tool_name, func_description, presets)
        self.tools[tool_name] = RegisteredTool(tool_name, tool_func, group_name, schema, presets)

    def remove_tool_function(self, tool_name: str) -> None:
        """Unregister a tool (no error if absent)."""
        self.tools.pop(tool_name, None)

    def create_tool_group(
        self, group_name: str, description: str, active: bool = False, notes: str | None = None
    ) -> None:
        """Create an (inactive by default) group of tools."""
        if group_name == BASIC:
            raise ValueError("'basic' is the built-in, always-active group; choose another name")
        if group_name in self.groups:
            raise ValueError(f"a tool group named {group_name!r} already exists")
        self.groups[group_name] = ToolGroup(group_name, description, active, notes)

    def update_tool_groups(self, group_names: list[str], active: bool) -> None:
        """Activate or deactivate the named groups."""
        unknown = [g for g in group_names if g not in self.groups]
        if unknown:
            hint = " ('basic' is always active)" if BASIC in unknown else ""
            raise ValueError(f"unknown tool group(s): {', '.join(map(repr, unknown))}{hint}")
        for name in group_names:
            self.groups[name].active = active

    def remove_tool_groups(self, group_names: str | list[str]) -> None:
        """Remove the named groups and their tools."""
        names = {group_names} if isinstance(group_names, str) else set(group_names)
        if BASIC in names:
            raise ValueError("the 'basic' group cannot be removed")
        self.tools = {n: t for n, t in self.tools.items() if t.group not in names}
        for name in names:
            self.groups.pop(name, None)

    # -- use -------------------------------------------------------------------------

    def _is_active(self, group_name: str) -> bool:
        return group_name == BASIC or (group_name in self.groups and self.groups[group_name].active)

    def get_json_schemas(self) -> list[dict[str, Any]]:
        """Return the JSON schemas of the callable tools (basic and active groups)."""
        return [t.json_schema for t in self.tools.values() if self._is_active(t.group)]

    async def call_tool_function(self, tool_call: ToolUseBlock) -> ToolResultBlock:
        """Run the tool a ``tool_use`` block asks for; any exception becomes an error tool result."""
        name, call_id = tool_call["name"], tool_call["id"]

        def result(output: str | list[Any]) -> ToolResultBlock:
            return ToolResultBlock(type="tool_result", id=call_id, name=name, output=output)

        tool = self.tools.get(name)
        if tool is None:
            return result(_text(f"FunctionNotFoundError: Cannot find the function named {name!r}."))
        if not self._is_active(tool.group):
            return result(
                _text(
                    f"FunctionInactiveError: The function {name!r} is in the inactive group "
                    f"{tool.group!r}. Activate the group first."
                )
            )
        args = tool_call.get("input") or {}
        if not isinstance(args, Mapping):
            return result(_text(f"Error: the tool input must be a JSON object, got {_tname(args)}"))
        try:
            value = tool.func(**{**tool.preset_kwargs, **args})
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # a failed tool is an answer for the model, not a crash of the agent
            return result(_text(f"Error: {type(exc).__name__}: {exc}"))
        return result(_to_output(value))

    def __repr__(self) -> str:
        return f"Toolkit(tools={list(self.tools)}, active_groups={self.active_groups()})"


# -- helpers ---------------------------------------------------------------------------


def _text(text: str) -> list[Any]:
    return [TextBlock(type="text", text=text)]


def _to_output(value: Any) -> list[Any]:
    """Turn a tool's return value into tool_result output blocks."""
    content = getattr(value, "content", None)  # AgentScope's ToolResponse
    if isinstance(content, list) and not isinstance(value, (list, dict)):
        value = content
    if value is None:
        return []
    if isinstance(value, str):
        return _text(value)
    problems: list[tuple[str, str]] = []
    if isinstance(value, dict):
        validate_block(value, "", problems, ("text", "image", "audio", "video"))
        if not problems:
            return [dict(value)]
    elif isinstance(value, list):
        for i, block in enumerate(value):
            validate_block(block, f"[{i}]", problems, ("text", "image", "audio", "video"))
        if not problems:
            return [dict(b) for b in value]
    try:
        return _text(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError):
        return _text(repr(value))


_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns?|Raises|Yields?|Examples?|Notes?)\s*:\s*$")
_ARG = re.compile(r"^\s*\**(?P<name>\w+)\s*(?:\([^)]*\))?\s*:\s*(?P<desc>.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and per-argument descriptions."""
    description: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent = 0
    for line in doc.splitlines():
        head = _SECTION.match(line)
        if head:
            section, current = head.group(1).lower(), None
            continue
        if section is None:
            description.append(line)
        elif section in ("args", "arguments", "parameters") and line.strip():
            indent = len(line) - len(line.lstrip())
            match = _ARG.match(line)
            if match and (current is None or indent <= arg_indent):
                current, arg_indent = match["name"], indent
                args[current] = match["desc"].strip()
            elif current is not None:
                args[current] = f"{args[current]} {line.strip()}".strip()
    return "\n".join(description).strip(), args


def _build_schema(
    func: Callable[..., Any], name: str, description: str | None, presets: Mapping[str, Any]
) -> dict[str, Any]:
    """Build an OpenAI-style function schema from the signature and docstring."""
    doc_description, arg_docs = _parse_docstring(inspect.getdoc(func) or "")
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable annotations: fall back to "any"
        hints = {}
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(func).parameters.items():
        if pname in presets or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), Field(default, description=arg_docs.get(pname)))
    try:
        parameters = create_model(f"{name}_args", **fields).model_json_schema()
    except Exception as exc:
        raise ValueError(
            f"cannot build a JSON schema for tool {name!r} ({type(exc).__name__}: {exc}); pass json_schema=..."
        ) from exc
    _strip_titles(parameters)
    return {
        "type": "function",
        "function": {"name": name, "description": description or doc_description, "parameters": parameters},
    }


def _strip_titles(schema: Any) -> None:
    """Remove pydantic's generated ``title`` keys (noise for a model), keeping properties named title."""
    if isinstance(schema, list):
        for item in schema:
            _strip_titles(item)
        return
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("title"), str):
        del schema["title"]
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for sub in value.values():
                _strip_titles(sub)
        elif key not in ("default", "enum", "const", "examples"):
            _strip_titles(value)


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__
