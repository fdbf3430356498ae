"""pandas DataFrames (and two plots) from any source of agent state.

Every view takes ``src`` and an optional ``ref``:

- a live object (a StateModule, an AgentScope agent or memory, a pydantic
  model): its ``state_dict()``, reported under the module name of its class;
- a ``{name: live object}`` mapping: each value's state, under its name;
- a state dict: a full ``{module: state}`` map (a checkpoint's, or an
  AgentScope session file's), or one module's state;
- a :class:`~nb_sessions.stores.Checkpoint`;
- a store plus a reference: ``views.messages(store, "alice@3")``.

Conversations, plan notebooks and task lists are found by walking each
module's state, asking :mod:`nb_sessions.generations`: an AgentScope 1.x
memory (``"content"`` a list of ``[msg, marks]`` pairs, or bare messages in
the older layout), a 1.x plan notebook (``"storage": {"plans": {...}}`` and
``"current_plan"``), or a 2.x ``AgentState`` dump (``context``,
``tasks_context``). The ``path`` column names where one was found, e.g.
``agent.memory``. A view that finds none of what it shows warns with
:class:`NothingToShowWarning`; an empty one that is there does not.

Frames hold only scalars, strings, timestamps and categoricals: dicts and
lists become JSON strings, so editing a frame can never change the agent.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec

import pandas as pd

from .codec import paused_gc
from .generations import (
    CALL_KINDS,
    TOOL_KINDS,
    Conversation,
    ToolCall,
    ToolResult,
    block_text,
    content_blocks,
    conversations,
    display_text,
    find_parts,
    message_text,
    message_time,
    tool_blocks,
    v1,
    v2,
)
from .generations.v1 import notebook_plans
from .state import Stateful, as_stateful
from .state_v2 import is_v2
from .stores.base import BaseStore, Checkpoint

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "STATES",
    "TASK_STATES",
    "NothingToShowWarning",
    "blocks",
    "history",
    "messages",
    "plans",
    "plot_messages",
    "plot_plan",
    "plot_usage",
    "sessions",
    "silenced",
    "subtasks",
    "tasks",
    "tool_calls",
    "usage",
]

#: Plan and subtask states in their natural order (the categorical's order).
STATES: tuple[str, ...] = ("todo", "in_progress", "done", "abandoned")
#: AgentScope 2.x task states in their natural order (the ``tasks`` view's categorical).
TASK_STATES: tuple[str, ...] = v2.TASK_STATES

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_TIME_FORMAT_NO_MS = "%Y-%m-%d %H:%M:%S"
_ERROR_OUTPUT = re.compile(r"\s*\w*Error\b")

# Column kinds: "str" (pandas' default string dtype, NaN for missing), "int",
# "Int64" (nullable), "bool", "time" (datetime64[ns], naive as AgentScope
# writes it), "utc" (datetime64[ns, UTC]), "delta" (timedelta64[ns]),
# "state" (ordered categorical of STATES), "task_state" (ordered categorical of TASK_STATES).
Schema = Sequence[tuple[str, str]]

_SOURCE_COLUMNS: Schema = (
    ("session", "str"),
    ("checkpoint", "Int64"),
    ("module", "str"),
    ("path", "str"),
)

MESSAGE_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("position", "int"),
    ("id", "str"),
    ("name", "str"),
    ("role", "str"),
    ("timestamp", "time"),
    ("text", "str"),
    ("block_types", "str"),
    ("n_tool_calls", "int"),
    ("marks", "str"),
    ("metadata", "str"),
    ("invocation_id", "str"),
    ("generation", "str"),
    ("finished_at", "time"),
    ("input_tokens", "Int64"),
    ("output_tokens", "Int64"),
    ("finished_reason", "str"),
    ("error", "str"),
)

BLOCK_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("position", "int"),
    ("message_id", "str"),
    ("role", "str"),
    ("block_index", "int"),
    ("type", "str"),
    ("text", "str"),
    ("tool_id", "str"),
    ("tool_name", "str"),
    ("tool_input", "str"),
    ("source_type", "str"),
    ("url", "str"),
    ("media_type", "str"),
    ("state", "str"),
)

TOOL_CALL_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("tool_id", "str"),
    ("tool_name", "str"),
    ("call_message_id", "str"),
    ("call_position", "int"),
    ("result_message_id", "str"),
    ("result_position", "Int64"),
    ("input", "str"),
    ("output", "str"),
    ("status", "str"),
    ("dangling", "bool"),
    ("called_at", "time"),
    ("returned_at", "time"),
    ("call_state", "str"),
    ("result_state", "str"),
)

TASK_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("position", "int"),
    ("task_id", "str"),
    ("subject", "str"),
    ("description", "str"),
    ("state", "task_state"),
    ("owner", "str"),
    ("blocks", "str"),
    ("blocked_by", "str"),
    ("created_at", "time"),
    ("metadata", "str"),
)

USAGE_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("position", "int"),
    ("message_id", "str"),
    ("role", "str"),
    ("timestamp", "time"),
    ("input_tokens", "int"),
    ("output_tokens", "int"),
    ("cache_input_tokens", "int"),
    ("cache_creation_input_tokens", "int"),
    ("total_tokens", "int"),
    ("cumulative_input_tokens", "int"),
    ("cumulative_output_tokens", "int"),
    ("cumulative_tokens", "int"),
)

SUBTASK_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("plan_id", "str"),
    ("plan_name", "str"),
    ("plan_state", "state"),
    ("is_current", "bool"),
    ("position", "int"),
    ("name", "str"),
    ("description", "str"),
    ("expected_outcome", "str"),
    ("state", "state"),
    ("created_at", "time"),
    ("finished_at", "time"),
    ("outcome", "str"),
)

PLAN_COLUMNS: Schema = (
    *_SOURCE_COLUMNS,
    ("plan_id", "str"),
    ("name", "str"),
    ("description", "str"),
    ("state", "state"),
    ("is_current", "bool"),
    ("n_subtasks", "int"),
    ("n_done", "int"),
    ("created_at", "time"),
    ("finished_at", "time"),
    ("outcome", "str"),
)

SESSION_COLUMNS: Schema = (
    ("session", "str"),
    ("user_id", "str"),
    ("session_id", "str"),
    ("checkpoints", "int"),
    ("latest", "int"),
    ("created_at", "utc"),
    ("updated_at", "utc"),
    ("labels", "str"),
)

HISTORY_COLUMNS: Schema = (
    ("session", "str"),
    ("seq", "int"),
    ("ref", "str"),
    ("label", "str"),
    ("parent", "Int64"),
    ("created_at", "utc"),
    ("modules", "str"),
    ("size", "int"),
    ("metadata", "str"),
)


# -- finding memories and plan notebooks: the generations layer knows the shapes ---


#: A 1.x memory state / plan notebook state (kept here for callers of the views module).
is_memory = v1.is_memory
is_plan_notebook = v1.is_plan_notebook


def to_json(value: Any) -> str:
    """``value`` as a JSON string (non-JSON values through ``str``), never sharing state."""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError):  # circular structures and the like
        return f"<{type(value).__name__} that is not JSON>"
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"


# -- normalising sources -----------------------------------------------------


@dataclass(frozen=True)
class _Source:
    states: dict[str, Any]
    session: str | None
    seq: int | None


def _is_live(obj: Any) -> bool:
    if isinstance(obj, Stateful) or is_v2(obj):
        return True
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(obj, pydantic.BaseModel)


def resolve(src: Any, ref: Any = None) -> tuple[dict[str, Any], str | None, int | None]:
    """Normalise a view source to ``({module: state}, session, checkpoint seq)``; both None for live or dict sources."""
    source = _resolve(src, ref)
    return source.states, source.session, source.seq


def _resolve(src: Any, ref: Any) -> _Source:
    if isinstance(src, BaseStore):
        if ref is None:
            raise TypeError(
                "a store needs a reference to read: e.g. views.messages(store, 'alice@3') "
                "or views.messages(store, 'alice') for the latest checkpoint"
            )
        cp = src.checkpoint(ref)
        return _Source(src.get_state(cp), cp.session, cp.seq)
    if ref is not None:
        raise TypeError(
            f"ref={ref!r} only applies to a store source, e.g. views.messages(store, {ref!r}); "
            f"got a {type(src).__name__}"
        )
    if isinstance(src, Checkpoint):
        return _Source(src.state(), src.session, src.seq)
    if isinstance(src, Mapping):
        if is_memory(src) or is_plan_notebook(src) or v2.is_agent_state(src):
            return _Source({"state": src}, None, None)
        states = {
            str(name): as_stateful(value, str(name)).state_dict() if _is_live(value) else value
            for name, value in src.items()
        }
        return _Source(states, None, None)
    if _is_live(src):
        state = as_stateful(src).state_dict()
        return _Source({live_module_name(src, state): state}, None, None)
    raise TypeError(
        f"cannot read agent state from a {type(src).__name__}: pass a live object (agent, memory, "
        "plan notebook), a state dict, a Checkpoint, or a store and a reference"
    )


def _parts(source: _Source, kind: str) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """Yield ``(module, path, node)`` for each part of ``kind`` in the source."""
    for module, state in source.states.items():
        for found_kind, path, node in find_parts(state, module):
            if found_kind == kind:
                yield module, path, node


# -- building frames ---------------------------------------------------------


def _frame(
    columns: dict[str, list[Any]], schema: Schema, n: int, source: _Source | None = None
) -> pd.DataFrame:
    """Build the frame once from column lists (all ``n`` long), each with its schema dtype."""
    if source is not None:
        columns["session"] = [source.session] * n
        columns["checkpoint"] = [source.seq] * n
    frame: pd.DataFrame = pd.DataFrame(
        {name: _series(columns[name], kind) for name, kind in schema}
    )
    return frame


def _series(values: list[Any], kind: str) -> pd.Series:
    series: pd.Series
    if kind == "str":
        try:
            series = pd.Series(values, dtype="str")
        except (UnicodeError, ValueError):  # lone surrogates under a pyarrow-backed str dtype
            series = pd.Series([_safe_str(v) for v in values], dtype="str")
    elif kind == "int":
        series = pd.Series(values, dtype="int64")
    elif kind == "Int64":
        series = pd.Series(pd.array(values, dtype="Int64"))
    elif kind == "bool":
        series = pd.Series(values, dtype=bool)
    elif kind == "time":
        series = _parse_times(values)
    elif kind == "utc":
        series = pd.Series(pd.to_datetime(values, utc=True)).astype("datetime64[ns, UTC]")
    elif kind in ("state", "task_state"):
        known = STATES if kind == "state" else TASK_STATES
        extra = sorted({v for v in values if isinstance(v, str) and v not in known})
        series = pd.Series(pd.Categorical(values, categories=[*known, *extra], ordered=True))
    else:
        raise AssertionError(kind)
    return series


def _safe_str(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")
    return value


def _parse_times(values: list[Any]) -> pd.Series:
    """Parse AgentScope timestamps (``YYYY-MM-DD HH:MM:SS.mmm``) to datetime64[ns]; anything else is NaT."""
    raw = pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
    parsed = pd.to_datetime(raw, format=_TIME_FORMAT, errors="coerce").astype("datetime64[ns]")
    for fmt in (_TIME_FORMAT_NO_MS, "ISO8601"):  # AgentScope 2.x writes ISO: 2026-11-29T21:49:46.367180
        retry = parsed.isna() & raw.notna()
        if not retry.any():
            break
        again = pd.to_datetime(raw[retry], format=fmt, errors="coerce")
        if isinstance(again.dtype, pd.DatetimeTZDtype):
            again = again.dt.tz_localize(None)
        parsed[retry] = again.astype("datetime64[ns]")
    in_range = (parsed >= pd.Timestamp.min) & (parsed <= pd.Timestamp.max)
    result: pd.Series = parsed.where(in_range).astype("datetime64[ns]")
    return result


def _columns(schema: Schema) -> dict[str, list[Any]]:
    return {name: [] for name, _ in schema}


# -- saying so when there is nothing to show ---------------------------------


class NothingToShowWarning(UserWarning):
    """A view found none of what it shows in its source (no conversation, no plan notebook, no task list).

    A frame that is empty because the source holds an empty conversation (or
    an empty task list) comes without this warning: the thing was found and
    holds nothing. This warning means the thing itself was not found; its
    message names what the view looked for and, when the source holds the
    other AgentScope generation's shapes, the view that reads them.
    """


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Build views without :class:`NothingToShowWarning` (for callers that show several views at once)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NothingToShowWarning)
        yield


def _nothing(view: str, looked_for: str, source: _Source, hint: str = "") -> None:
    where = f" in {source.session}@{source.seq}" if source.session is not None else ""
    modules = ", ".join(map(repr, source.states)) or "no modules"
    warnings.warn(
        NothingToShowWarning(
            f"views.{view}: found no {looked_for}{where} (modules: {modules}); "
            f"the frame is empty.{(' ' + hint) if hint else ''}"
        ),
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this module: the warning points at the user's line."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


_CONVERSATIONS = "conversation (an AgentScope 1.x memory or a 2.x AgentState context)"


def _conversations(source: _Source, view: str) -> list[Conversation]:
    found = [c for c in conversations(source.states)]
    if not found:
        _nothing(view, _CONVERSATIONS, source)
    return found


# -- message views -----------------------------------------------------------


_P = ParamSpec("_P")


def _bulk(view: Callable[_P, pd.DataFrame]) -> Callable[_P, pd.DataFrame]:
    """Build the frame with the cyclic GC paused (see :func:`nb_sessions.codec.paused_gc`).

    A view of a long memory makes hundreds of thousands of containers (a live
    object's ``state_dict()``, the rows); with the collector on, it scans the
    whole growing heap again and again, which took most of the time: a live
    agent's 100,000-message view went from ~1.3 s to ~0.45 s.
    """

    @functools.wraps(view)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> pd.DataFrame:
        with paused_gc():
            return view(*args, **kwargs)

    return wrapper


def _str_or_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return to_json(value)


def live_module_name(obj: Any, state: Mapping[str, Any]) -> str:
    """The module name rows of a live object passed alone get: ``agent`` for an agent.

    A checkpoint names modules by how they were saved, and agents are saved as
    ``agent`` (``store.save(s, agent=agent)``, ``%save_session s agent``), so
    ``views.messages(agent)`` and ``views.messages(store, ref)`` share paths
    (``agent.memory``) and their frames join. Other objects keep their class
    name; pass a mapping (``views.messages({"bot": bot})``) to choose.
    """
    return "agent" if isinstance(state, Mapping) and "memory" in state else type(obj).__name__


@_bulk
def messages(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per message of every conversation in ``src`` (1.x memories, 2.x agent states).

    ``text`` joins the text blocks (a str content as is); ``block_types`` lists
    the block types in first-seen order (``"text"`` for str content);
    ``n_tool_calls`` counts ``tool_use`` (1.x) and ``tool_call`` (2.x) blocks;
    ``marks`` is the marks joined by commas (``""`` when none, always for
    2.x); ``metadata`` is a JSON string; ``timestamp`` is 1.x's ``timestamp``
    or 2.x's ``created_at`` (NaT when unparseable). 2.x messages also fill
    ``finished_at``, ``input_tokens``/``output_tokens`` (from ``usage``),
    ``finished_reason`` and ``error`` (JSON when not a string); 1.x leaves them
    empty. ``generation`` is ``"1.x"`` or ``"2.x"``. A source with no
    conversation warns (:class:`NothingToShowWarning`).
    """
    source = _resolve(src, ref)
    cols = _columns(MESSAGE_COLUMNS)
    module_c, path_c, pos_c = cols["module"], cols["path"], cols["position"]
    id_c, name_c, role_c, ts_c = cols["id"], cols["name"], cols["role"], cols["timestamp"]
    text_c, types_c, ntool_c = cols["text"], cols["block_types"], cols["n_tool_calls"]
    marks_c, meta_c, inv_c = cols["marks"], cols["metadata"], cols["invocation_id"]
    gen_c, fin_c, in_c, out_c = cols["generation"], cols["finished_at"], cols["input_tokens"], cols["output_tokens"]
    reason_c, err_c = cols["finished_reason"], cols["error"]
    for conv in _conversations(source, "messages"):
        module, path, gen = conv.module, conv.path, conv.generation
        two = gen == v2.GENERATION
        for position, (msg, marks) in enumerate(conv.entries()):
            content = msg.get("content")
            if isinstance(content, list):
                texts: list[str] = []
                types: list[str] = []
                n_tools = 0
                for block in content:
                    if not isinstance(block, (dict, Mapping)):
                        continue
                    btype = block.get("type")
                    if btype == "text":
                        text = block.get("text")
                        if isinstance(text, str):
                            texts.append(text)
                    elif btype in CALL_KINDS:
                        n_tools += 1
                    if isinstance(btype, str) and btype not in types:
                        types.append(btype)
                text_c.append("\n".join(texts) if texts else display_text(content))
                types_c.append(",".join(types))
                ntool_c.append(n_tools)
            else:
                text = message_text(content)
                text_c.append(text)
                types_c.append("text" if text else "")
                ntool_c.append(0)
            module_c.append(module)
            path_c.append(path)
            pos_c.append(position)
            id_c.append(msg.get("id"))
            name_c.append(msg.get("name"))
            role_c.append(msg.get("role"))
            ts_c.append(message_time(msg))
            marks_c.append(",".join(str(m) for m in marks))
            meta = msg.get("metadata")
            meta_c.append("{}" if meta is None or meta == {} else to_json(meta))
            inv_c.append(msg.get("invocation_id"))
            gen_c.append(gen)
            if two:
                used = v2.usage(msg)
                fin_c.append(msg.get("finished_at"))
                in_c.append(used["input_tokens"] if used else None)
                out_c.append(used["output_tokens"] if used else None)
                reason_c.append(_str_or_json(msg.get("finished_reason")))
                err_c.append(_str_or_json(msg.get("error")))
            else:
                fin_c.append(None)
                in_c.append(None)
                out_c.append(None)
                reason_c.append(None)
                err_c.append(None)
    return _frame(cols, MESSAGE_COLUMNS, len(pos_c), source)


@_bulk
def blocks(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per content block of every message (a str content is one ``text`` block).

    ``text`` holds the block's readable text (:func:`nb_sessions.generations.block_text`):
    a text block's text, a thinking block's thinking, a 2.x hint, a tool
    result's output (str or nested blocks), a textual 2.x data block; for a
    tool call it is ``None`` and ``tool_input`` holds the input as JSON (2.x's
    JSON string as stored). ``state`` is a 2.x tool call's or result's state.
    Media and 2.x data blocks give ``source_type`` and ``url`` or ``media_type``.
    """
    source = _resolve(src, ref)
    cols = _columns(BLOCK_COLUMNS)
    for conv in _conversations(source, "blocks"):
        module, path = conv.module, conv.path
        for position, (msg, _marks) in enumerate(conv.entries()):
            for index, block in enumerate(content_blocks(msg)):
                if not isinstance(block, (dict, Mapping)):
                    continue
                btype = block.get("type")
                call = btype in CALL_KINDS
                tool = btype in TOOL_KINDS
                src_info = block.get("source")
                src_map = src_info if isinstance(src_info, Mapping) else {}
                raw_input = block.get("input")
                cols["module"].append(module)
                cols["path"].append(path)
                cols["position"].append(position)
                cols["message_id"].append(msg.get("id"))
                cols["role"].append(msg.get("role"))
                cols["block_index"].append(index)
                cols["type"].append(btype)
                cols["text"].append(None if call else block_text(block))
                cols["tool_id"].append(block.get("id") if tool else None)
                cols["tool_name"].append(block.get("name") if tool else None)
                cols["tool_input"].append(
                    (raw_input if isinstance(raw_input, str) else to_json(raw_input)) if call else None
                )
                cols["source_type"].append(src_map.get("type"))
                cols["url"].append(src_map.get("url"))
                cols["media_type"].append(src_map.get("media_type"))
                state = block.get("state")
                cols["state"].append(state if tool and isinstance(state, str) else None)
    return _frame(cols, BLOCK_COLUMNS, len(cols["position"]), source)


#: A 2.x result's state -> the ``status`` column (1.x results are judged by their text).
_RESULT_STATUS = {"success": "ok", "error": "error", "interrupted": "interrupted",
                  "denied": "denied", "running": "running"}


def _pair(calls: list[ToolCall], results: list[ToolResult]) -> list[ToolResult | None]:
    """For each call, the first result with its id after it (in message, then block order)."""
    by_id: dict[str, list[ToolResult]] = {}
    for r in results:
        by_id.setdefault(r.call_id, []).append(r)
    return [
        next((r for r in by_id.get(c.call_id, ()) if (r.index, r.block) > (c.index, c.block)), None)
        for c in calls
    ]


@_bulk
def tool_calls(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per tool call (1.x ``tool_use``, 2.x ``tool_call``), joined to the first result with its id after it.

    1.x results are separate later messages; 2.x results sit in the call's own
    message. ``status``: ``"missing"`` (and ``dangling`` True) when no result
    follows and the call waits for nobody; ``"waiting"`` (not dangling) for a
    2.x call at ``asking`` (the user's permission) or ``submitted`` (an outside
    executor); for a 2.x result its state (``success`` is ``"ok"``, else
    ``error``, ``interrupted``, ``denied``, ``running``); for a 1.x result
    ``"error"`` when the block has a truthy ``is_error`` or the output text
    begins with a word ending in ``Error`` (``"Error: ..."``,
    ``"FunctionNotFoundError: ..."``, as AgentScope's toolkit writes
    failures), ``"ok"`` otherwise. ``input`` is JSON (2.x's string as stored);
    ``call_state``/``result_state`` are 2.x's raw states.
    """
    source = _resolve(src, ref)
    cols = _columns(TOOL_CALL_COLUMNS)
    for conv in _conversations(source, "tool_calls"):
        entries = [msg for msg, _ in conv.entries()]
        calls, results = tool_blocks(conv)
        for call, match in zip(calls, _pair(calls, results), strict=True):
            msg = entries[call.index]
            block = msg["content"][call.block]
            raw = block.get("input")
            cols["module"].append(conv.module)
            cols["path"].append(conv.path)
            cols["tool_id"].append(call.call_id)
            cols["tool_name"].append(block.get("name"))
            cols["call_message_id"].append(call.message_id)
            cols["call_position"].append(call.index)
            cols["input"].append(raw if isinstance(raw, str) else to_json(raw))
            cols["called_at"].append(block.get("created_at") or message_time(msg))
            cols["call_state"].append(call.state)
            if match is None:
                waiting = call.state in v2.OPEN_CALL_STATES
                cols["result_message_id"].append(None)
                cols["result_position"].append(None)
                cols["output"].append(None)
                cols["status"].append("waiting" if waiting else "missing")
                cols["dangling"].append(not waiting)
                cols["returned_at"].append(None)
                cols["result_state"].append(None)
                continue
            r_msg = entries[match.index]
            r_block = r_msg["content"][match.block]
            output = block_text(r_block) or ""
            if match.state is not None and conv.generation == v2.GENERATION:
                status = _RESULT_STATUS.get(match.state, match.state)
            else:
                failed = bool(r_block.get("is_error")) or _ERROR_OUTPUT.match(output) is not None
                status = "error" if failed else "ok"
            cols["result_message_id"].append(match.message_id)
            cols["result_position"].append(match.index)
            cols["output"].append(output)
            cols["status"].append(status)
            cols["dangling"].append(False)
            cols["returned_at"].append(r_block.get("created_at") or message_time(r_msg))
            cols["result_state"].append(match.state)
    return _frame(cols, TOOL_CALL_COLUMNS, len(cols["tool_id"]), source)


@_bulk
def usage(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per message recording token usage (2.x ``usage``), with running totals per conversation.

    ``total_tokens`` is input + output; the ``cumulative_*`` columns sum them
    over the conversation so far (2.x sums usage per reply: one assistant
    message per reply). A conversation that records no usage at all (every
    1.x memory: 1.x messages carry none) warns, naming it.
    """
    source = _resolve(src, ref)
    cols = _columns(USAGE_COLUMNS)
    found = _conversations(source, "usage")
    bare: list[str] = []
    for conv in found:
        totals = [0, 0]
        rows = 0
        for position, (msg, _) in enumerate(conv.entries()):
            used = v2.usage(msg)
            if used is None:
                continue
            rows += 1
            totals[0] += used["input_tokens"]
            totals[1] += used["output_tokens"]
            cols["module"].append(conv.module)
            cols["path"].append(conv.path)
            cols["position"].append(position)
            cols["message_id"].append(msg.get("id"))
            cols["role"].append(msg.get("role"))
            cols["timestamp"].append(message_time(msg))
            for key in v2.USAGE_FIELDS:
                cols[key].append(used[key])
            cols["total_tokens"].append(used["input_tokens"] + used["output_tokens"])
            cols["cumulative_input_tokens"].append(totals[0])
            cols["cumulative_output_tokens"].append(totals[1])
            cols["cumulative_tokens"].append(totals[0] + totals[1])
        if not rows and any(True for _ in conv.entries()):
            bare.append(f"{conv.path} ({conv.generation})")
    if bare:
        _nothing("usage", "message with token usage", source,
                 f"These conversations record none: {', '.join(bare)}.")
    return _frame(cols, USAGE_COLUMNS, len(cols["position"]), source)


# -- task views (AgentScope 2.x) ---------------------------------------------


@_bulk
def tasks(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per task of every 2.x agent state (``tasks_context.tasks``), in list order.

    ``state`` is an ordered categorical (pending < in_progress < completed);
    ``blocks`` and ``blocked_by`` are task ids joined by commas; ``metadata`` is
    JSON. A source with no 2.x agent state warns, pointing 1.x plan notebooks
    to :func:`subtasks` and :func:`plans`.
    """
    source = _resolve(src, ref)
    cols = _columns(TASK_COLUMNS)
    states = list(_parts(source, "agent_state"))
    if not states:
        notebooks = any(True for _ in _parts(source, "notebook"))
        _nothing("tasks", "AgentScope 2.x agent state (tasks_context)", source,
                 "This source holds 1.x plan notebooks: use views.subtasks or views.plans."
                 if notebooks else "")
    for module, path, state in states:
        for position, task in enumerate(v2.tasks(state)):
            cols["module"].append(module)
            cols["path"].append(path)
            cols["position"].append(position)
            cols["task_id"].append(_str_or_json(task.get("id")))
            cols["subject"].append(_str_or_json(task.get("subject")))
            cols["description"].append(_str_or_json(task.get("description")))
            cols["state"].append(task.get("state"))
            cols["owner"].append(_str_or_json(task.get("owner")))
            for key in ("blocks", "blocked_by"):
                ids = task.get(key)
                cols[key].append(",".join(map(str, ids)) if isinstance(ids, list) else _str_or_json(ids))
            cols["created_at"].append(task.get("created_at"))
            meta = task.get("metadata")
            cols["metadata"].append("{}" if meta is None or meta == {} else to_json(meta))
    return _frame(cols, TASK_COLUMNS, len(cols["position"]), source)


def _notebooks(source: _Source, view: str) -> list[tuple[str, str, Mapping[str, Any]]]:
    found = list(_parts(source, "notebook"))
    if not found:
        agents = any(True for _ in _parts(source, "agent_state"))
        _nothing(view, "plan notebook (AgentScope 1.x PlanNotebook)", source,
                 "This source holds AgentScope 2.x agent states: use views.tasks." if agents else "")
    return found


# -- plan views --------------------------------------------------------------


@_bulk
def subtasks(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per subtask of every stored and current plan; ``duration`` is ``finished_at - created_at``.

    ``state`` and ``plan_state`` are ordered categoricals (todo < in_progress < done < abandoned).
    """
    source = _resolve(src, ref)
    cols = _columns(SUBTASK_COLUMNS)
    for module, path, notebook in _notebooks(source, "subtasks"):
        for pid, plan, current in notebook_plans(notebook):
            for position, task in enumerate(v1.plan_subtasks(plan)):
                cols["module"].append(module)
                cols["path"].append(path)
                cols["plan_id"].append(pid)
                cols["plan_name"].append(plan.get("name"))
                cols["plan_state"].append(plan.get("state"))
                cols["is_current"].append(current)
                cols["position"].append(position)
                for key in (
                    "name",
                    "description",
                    "expected_outcome",
                    "state",
                    "created_at",
                    "finished_at",
                ):
                    cols[key].append(task.get(key))
                cols["outcome"].append(_text_or_json(task.get("outcome")))
    frame = _frame(cols, SUBTASK_COLUMNS, len(cols["position"]), source)
    frame["duration"] = frame["finished_at"] - frame["created_at"]
    return frame


@_bulk
def plans(src: Any, ref: Any = None) -> pd.DataFrame:
    """One row per plan (stored ones, then the current one): state, progress, times and outcome."""
    source = _resolve(src, ref)
    cols = _columns(PLAN_COLUMNS)
    for module, path, notebook in _notebooks(source, "plans"):
        for pid, plan, current in notebook_plans(notebook):
            items = v1.plan_subtasks(plan)
            cols["module"].append(module)
            cols["path"].append(path)
            cols["plan_id"].append(pid)
            for key in ("name", "description", "state", "created_at", "finished_at"):
                cols[key].append(plan.get(key))
            cols["is_current"].append(current)
            cols["n_subtasks"].append(len(items))
            cols["n_done"].append(sum(1 for t in items if t.get("state") == "done"))
            cols["outcome"].append(_text_or_json(plan.get("outcome")))
    frame = _frame(cols, PLAN_COLUMNS, len(cols["plan_id"]), source)
    frame["duration"] = frame["finished_at"] - frame["created_at"]
    return frame


def _text_or_json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return to_json(value)


# -- store views -------------------------------------------------------------


def sessions(store: BaseStore) -> pd.DataFrame:
    """One row per session in ``store``, most recently updated first; times in UTC, labels comma-joined."""
    _require_store(store, "sessions")
    cols = _columns(SESSION_COLUMNS)
    for info in store.sessions():
        cols["session"].append(info.session)
        cols["user_id"].append(info.user_id)
        cols["session_id"].append(info.session_id)
        cols["checkpoints"].append(info.checkpoints)
        cols["latest"].append(info.latest_seq)
        cols["created_at"].append(info.created_at)
        cols["updated_at"].append(info.updated_at)
        cols["labels"].append(",".join(info.labels))
    return _frame(cols, SESSION_COLUMNS, len(cols["session"]))


def history(store: BaseStore, session: str, *, user_id: str | None = None) -> pd.DataFrame:
    """One row per checkpoint of ``session``, oldest first; modules comma-joined, metadata as JSON."""
    _require_store(store, "history")
    cols = _columns(HISTORY_COLUMNS)
    for cp in store.history(session, user_id=user_id):
        cols["session"].append(cp.session)
        cols["seq"].append(cp.seq)
        cols["ref"].append(cp.ref)
        cols["label"].append(cp.label)
        cols["parent"].append(cp.parent)
        cols["created_at"].append(cp.created_at)
        cols["modules"].append(",".join(cp.modules))
        cols["size"].append(cp.size)
        cols["metadata"].append(to_json(dict(cp.metadata)))
    return _frame(cols, HISTORY_COLUMNS, len(cols["seq"]))


def _require_store(store: Any, what: str) -> None:
    if not isinstance(store, BaseStore):
        raise TypeError(
            f"views.{what}() takes a store (nb_sessions.open_store(path)), got {type(store).__name__}"
        )


# -- plots -------------------------------------------------------------------

_STATE_COLOURS = {
    "todo": "#9e9e9e",
    "in_progress": "#1f77b4",
    "done": "#2ca02c",
    "abandoned": "#d62728",
}


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _fig, new_ax = plt.subplots()
    return new_ax


def plot_messages(src: Any, ref: Any = None, ax: Axes | None = None) -> Axes:
    """Step lines of the cumulative number of messages per role over time (over position when untimed)."""
    frame = messages(src, ref)
    axes = _axes(ax)
    timed = bool(len(frame)) and bool(frame["timestamp"].notna().all())
    x_col = "timestamp" if timed else "position"
    if not timed:
        frame = frame.assign(position=range(len(frame)))
    roles = frame["role"].fillna("?")
    for role in sorted(set(roles)):
        sub = frame[roles == role].sort_values(x_col, kind="stable")
        counts = range(1, len(sub) + 1)
        axes.step(list(sub[x_col]), list(counts), where="post", label=f"{role} ({len(sub)})")
    return _label(axes, timed, "messages (cumulative)", "Messages per role", bool(len(frame)))


def plot_usage(src: Any, ref: Any = None, ax: Axes | None = None) -> Axes:
    """Step lines of cumulative input and output tokens per conversation, over time (over position when untimed)."""
    frame = usage(src, ref)
    axes = _axes(ax)
    timed = bool(len(frame)) and bool(frame["timestamp"].notna().all())
    x_col = "timestamp" if timed else "position"
    several = frame["path"].nunique() > 1
    for path, rows in frame.groupby("path", sort=False):
        prefix = f"{path}: " if several else ""
        for column, what in (("cumulative_input_tokens", "input"), ("cumulative_output_tokens", "output")):
            last = int(rows[column].iloc[-1])
            axes.step(list(rows[x_col]), list(rows[column]), where="post", label=f"{prefix}{what} ({last})")
    return _label(axes, timed, "tokens (cumulative)", "Token usage", bool(len(frame)))


def _label(axes: Axes, timed: bool, ylabel: str, title: str, legend: bool) -> Axes:
    axes.set_xlabel("time" if timed else "message")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if legend:
        axes.legend()
    return axes


def plot_plan(
    src: Any, ref: Any = None, ax: Axes | None = None, plan_id: str | None = None
) -> Axes:
    """A timeline of one plan's subtasks: a bar from created_at to finished_at per subtask, coloured by state.

    The plan is ``plan_id``, else the current plan, else the most recently
    created one. Unfinished subtasks run to the latest time known in the plan.
    """
    frame = subtasks(src, ref)
    axes = _axes(ax)
    if plan_id is None and len(frame):
        current = frame[frame["is_current"]]
        if len(current):
            plan_id = str(current["plan_id"].iloc[0])
        else:
            newest = frame.sort_values("created_at", kind="stable", na_position="first")
            plan_id = str(newest["plan_id"].iloc[-1])
    rows = frame[frame["plan_id"] == plan_id] if plan_id is not None else frame.iloc[0:0]
    if plan_id is not None and not len(rows) and plan_id not in set(plans(src, ref)["plan_id"]):
        raise KeyError(f"no plan with id {plan_id!r} in this state")
    times = pd.concat([rows["created_at"], rows["finished_at"]]).dropna()
    end = times.max() if len(times) else pd.NaT
    minimum = pd.Timedelta(seconds=1)
    labels: list[str] = []
    for y, (_, row) in enumerate(rows.iterrows()):
        labels.append(str(row["name"]))
        start = row["created_at"]
        if pd.isna(start):
            continue  # nothing to place on the time axis
        stop = row["finished_at"] if pd.notna(row["finished_at"]) else end
        width = max(stop - start, minimum) if pd.notna(stop) else minimum
        state = str(row["state"])
        axes.barh(y, width, left=start, color=_STATE_COLOURS.get(state, "#8c564b"), label=state)
    axes.set_yticks(range(len(labels)))
    axes.set_yticklabels(labels)
    axes.invert_yaxis()
    name = rows["plan_name"].iloc[0] if len(rows) else "no plan"
    axes.set_title(f"Plan: {name}")
    handles, names = axes.get_legend_handles_labels()
    if handles:
        unique = dict(zip(names, handles, strict=True))
        axes.legend(unique.values(), unique.keys())
    return axes
