"""What changed between two states of a session: messages, plans and every other key.

``diff(store, "alice@2", "alice@5")`` compares two checkpoints;
``diff(store, "alice@2", agent=agent)`` a checkpoint with live objects;
``diff(cp_a, cp_b)`` two Checkpoint objects; ``diff(state_a, state_b)`` two
``{module: state}`` dicts. The result is a :class:`SessionDiff`: three
DataFrames, a one-paragraph summary and an HTML view.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .generations import find_parts, message_text
from .generations.v1 import memory_entries, notebook_plans
from .state import as_stateful
from .stores.base import BaseStore, Checkpoint
from .views import _is_live, to_json

__all__ = ["SessionDiff", "diff", "diff_states"]

MESSAGE_DIFF_COLUMNS = (
    "module",
    "path",
    "change",
    "id",
    "role",
    "name",
    "text_before",
    "text_after",
    "marks_before",
    "marks_after",
)
SUBTASK_DIFF_COLUMNS = (
    "module",
    "path",
    "plan_id",
    "plan_name",
    "subtask",
    "position",
    "change",
    "state_before",
    "state_after",
)
KEY_DIFF_COLUMNS = ("module", "path", "change", "before", "after")

#: Longest JSON repr kept in the ``keys`` frame; longer values end with "…".
MAX_REPR = 200


@dataclass(frozen=True, eq=False)
class SessionDiff:
    """The differences between two session states, ``label_a`` (before) and ``label_b`` (after).

    ``messages``: one row per message added, removed, changed or whose marks
    changed, matched by message id within each memory. ``subtasks``: plans
    added, removed or whose state changed (``subtask == ""``) and subtasks
    added, removed or whose state changed. ``keys``: every other changed key by
    dotted path, values as short JSON; a module on one side only is a row here.
    """

    messages: pd.DataFrame
    subtasks: pd.DataFrame
    keys: pd.DataFrame
    label_a: str = "a"
    label_b: str = "b"

    @property
    def empty(self) -> bool:
        """True when the two states hold the same data."""
        return self.messages.empty and self.subtasks.empty and self.keys.empty

    def summary(self) -> str:
        """One paragraph: message counts per memory, plan and subtask changes, other keys."""
        head = f"{self.label_a} → {self.label_b}"
        if self.empty:
            return f"{head}: no differences."
        parts = [*self._message_parts(), *self._plan_parts(), *self._key_parts()]
        return f"{head}: " + "; ".join(parts) + "."

    def _message_parts(self) -> Iterator[str]:
        frame = self.messages
        for path in dict.fromkeys(frame["path"]):
            counts = frame.loc[frame["path"] == path, "change"].value_counts()
            bits = []
            if counts.get("added", 0):
                bits.append(f"+{_plural(int(counts['added']), 'message')}")
            if counts.get("removed", 0):
                bits.append(f"-{_plural(int(counts['removed']), 'message')}")
            if counts.get("changed", 0):
                bits.append(f"{int(counts['changed'])} changed")
            if counts.get("marks changed", 0):
                bits.append(f"{int(counts['marks changed'])} with marks changed")
            yield f"{path}: " + ", ".join(bits)

    def _plan_parts(self) -> Iterator[str]:
        frame = self.subtasks
        several = frame["path"].nunique() > 1
        for (path, plan_id), rows in frame.groupby(["path", "plan_id"], sort=False):
            name = rows["plan_name"].iloc[-1]
            title = f"plan {_quote(name if isinstance(name, str) else plan_id)}"
            if several:
                title = f"{path}: {title}"
            bits = []
            plan_rows = rows[rows["subtask"] == ""]
            task_rows = rows[rows["subtask"] != ""]
            for row in plan_rows.itertuples(index=False):
                if row.change == "added":
                    bits.append(
                        f"added ({_state(row.state_after)}, {_plural(len(task_rows), 'subtask')})"
                    )
                elif row.change == "removed":
                    bits.append(f"removed (was {_state(row.state_before)})")
                else:
                    bits.append(f"{_state(row.state_before)} → {_state(row.state_after)}")
            if not (len(plan_rows) and plan_rows["change"].iloc[0] in ("added", "removed")):
                if len(task_rows) > 4:
                    bits.append(f"{len(task_rows)} subtasks changed")
                else:
                    for row in task_rows.itertuples(index=False):
                        what = f"subtask {_quote(row.subtask)}"
                        if row.change == "added":
                            bits.append(f"{what} added ({_state(row.state_after)})")
                        elif row.change == "removed":
                            bits.append(f"{what} removed")
                        else:
                            bits.append(
                                f"{what} {_state(row.state_before)} → {_state(row.state_after)}"
                            )
            sep = " " if bits and not bits[0].startswith("subtask") else ": "
            yield title + sep + ", ".join(bits)

    def _key_parts(self) -> Iterator[str]:
        frame = self.keys
        is_module = frame["path"] == frame["module"]
        for row in frame[is_module].itertuples(index=False):
            yield f"module {_quote(row.module)} {row.change}"
        others = frame.loc[~is_module, "path"].tolist()
        if others:
            shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
            noun = "other key" if len(others) == 1 else "other keys"
            yield f"{len(others)} {noun} changed ({shown})"

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return (
            f"<SessionDiff {self.label_a} → {self.label_b}: {len(self.messages)} message rows, "
            f"{len(self.subtasks)} plan rows, {len(self.keys)} key rows>"
        )

    def _repr_html_(self) -> str:
        parts = [
            "<div class='nb-sessions-diff'>",
            f"<p>{html.escape(self.summary())}</p>",
        ]
        for title, frame in (
            ("Messages", self.messages),
            ("Plans", self.subtasks),
            ("Other keys", self.keys),
        ):
            if frame.empty:
                continue
            parts.append(f"<h4>{title}</h4>")
            shown = frame.astype(object).where(frame.notna(), "")  # <NA> and NaN as blank cells
            parts.append(shown.to_html(index=False, escape=True, notebook=False))
        parts.append("</div>")
        return "\n".join(parts)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _quote(value: Any) -> str:
    return f"'{value}'"


def _state(value: Any) -> str:
    return value if isinstance(value, str) else "?"


# -- comparing states ----------------------------------------------------------


def _kind(value: Any) -> type:
    """The JSON kind of a value: subclasses of dict and list (a live Msg's tracked content) count as such."""
    kind = type(value)
    if kind is not dict and isinstance(value, dict):
        return dict
    if kind is not list and isinstance(value, list):
        return list
    return kind


def _same(a: Any, b: Any) -> bool:
    """Deep equality that tells 1 from True and 1.0, and treats NaN as equal to NaN."""
    if a is b:
        return True
    kind = _kind(a)
    if kind is not _kind(b):
        return False
    if kind is str or kind is int:
        return bool(a == b)
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        # Loops, not all(): one stack frame per level of nesting, not two.
        for key, value in a.items():  # noqa: SIM110
            if key not in b or not _same(value, b[key]):
                return False
        return True
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return False
        for x, y in zip(a, b, strict=True):  # noqa: SIM110
            if not _same(x, y):
                return False
        return True
    if kind is float:
        return bool(a == b) or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _msg_keys(entries: list[tuple[Mapping[str, Any], list[Any]]]) -> list[str]:
    """A key per entry: its id, with ``#n`` for repeats; ``@pos`` for messages without an id."""
    seen: dict[str, int] = {}
    keys = []
    for pos, (msg, _marks) in enumerate(entries):
        mid = msg.get("id")
        base = str(mid) if isinstance(mid, (str, int)) else f"@{pos}"
        n = seen.get(base, 0)
        seen[base] = n + 1
        keys.append(base if n == 0 else f"{base}#{n}")
    return keys


def _marks_text(marks: list[Any] | None) -> str | None:
    return None if marks is None else ",".join(str(m) for m in marks)


def _diff_memory(
    module: str,
    path: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    rows: dict[str, list[Any]],
) -> None:
    old = list(memory_entries(before)) if before is not None else []
    new = list(memory_entries(after)) if after is not None else []
    old_map = dict(zip(_msg_keys(old), old, strict=True))
    new_map = dict(zip(_msg_keys(new), new, strict=True))

    def add(change: str, b: Any, a: Any) -> None:
        msg = (a or b)[0]
        rows["module"].append(module)
        rows["path"].append(path)
        rows["change"].append(change)
        rows["id"].append(msg.get("id"))
        rows["role"].append(msg.get("role"))
        rows["name"].append(msg.get("name"))
        rows["text_before"].append(None if b is None else message_text(b[0].get("content")))
        rows["text_after"].append(None if a is None else message_text(a[0].get("content")))
        rows["marks_before"].append(None if b is None else _marks_text(b[1]))
        rows["marks_after"].append(None if a is None else _marks_text(a[1]))

    for key, entry in old_map.items():
        other = new_map.get(key)
        if other is None:
            add("removed", entry, None)
        elif not _same(entry[0], other[0]):
            add("changed", entry, other)
        elif not _same(list(entry[1]), list(other[1])):
            add("marks changed", entry, other)
    for key, entry in new_map.items():
        if key not in old_map:
            add("added", None, entry)


def _subtask_keys(tasks: list[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, int] = {}
    keys = []
    for task in tasks:
        base = str(task.get("name"))
        n = seen.get(base, 0)
        seen[base] = n + 1
        keys.append(base if n == 0 else f"{base}#{n}")
    return keys


def _tasks(plan: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    raw = plan.get("subtasks") if plan is not None else None
    return [t for t in raw if isinstance(t, Mapping)] if isinstance(raw, list) else []


def _diff_notebook(
    module: str,
    path: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    rows: dict[str, list[Any]],
) -> None:
    old = {pid: plan for pid, plan, _ in notebook_plans(before)} if before is not None else {}
    new = {pid: plan for pid, plan, _ in notebook_plans(after)} if after is not None else {}

    def add(
        pid: str,
        plan: Mapping[str, Any],
        subtask: str,
        position: int | None,
        change: str,
        state_b: Any,
        state_a: Any,
    ) -> None:
        rows["module"].append(module)
        rows["path"].append(path)
        rows["plan_id"].append(pid)
        rows["plan_name"].append(plan.get("name"))
        rows["subtask"].append(subtask)
        rows["position"].append(position)
        rows["change"].append(change)
        rows["state_before"].append(state_b)
        rows["state_after"].append(state_a)

    for pid in [*old, *(p for p in new if p not in old)]:
        p_old, p_new = old.get(pid), new.get(pid)
        if p_old is None or p_new is None:
            plan = p_new if p_new is not None else p_old
            assert plan is not None
            change = "added" if p_old is None else "removed"
            state = plan.get("state")
            add(
                pid,
                plan,
                "",
                None,
                change,
                None if p_old is None else state,
                state if p_old is None else None,
            )
            for pos, task in enumerate(_tasks(plan)):
                st = task.get("state")
                add(
                    pid,
                    plan,
                    str(task.get("name")),
                    pos,
                    change,
                    None if p_old is None else st,
                    st if p_old is None else None,
                )
            continue
        if not _same(p_old.get("state"), p_new.get("state")):
            add(pid, p_new, "", None, "changed", p_old.get("state"), p_new.get("state"))
        t_old, t_new = _tasks(p_old), _tasks(p_new)
        old_tasks = {
            k: (i, t) for i, (k, t) in enumerate(zip(_subtask_keys(t_old), t_old, strict=True))
        }
        new_tasks = {
            k: (i, t) for i, (k, t) in enumerate(zip(_subtask_keys(t_new), t_new, strict=True))
        }
        for key, (pos, task) in old_tasks.items():
            match = new_tasks.get(key)
            if match is None:
                add(pid, p_new, str(task.get("name")), pos, "removed", task.get("state"), None)
            elif not _same(task.get("state"), match[1].get("state")):
                add(
                    pid,
                    p_new,
                    str(task.get("name")),
                    match[0],
                    "changed",
                    task.get("state"),
                    match[1].get("state"),
                )
        for key, (pos, task) in new_tasks.items():
            if key not in old_tasks:
                add(pid, p_new, str(task.get("name")), pos, "added", None, task.get("state"))


def _short(value: Any) -> str:
    text = to_json(value)
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 1] + "…"


@dataclass
class _KeyWalk:
    """What the key walk of one module needs: where memories and notebooks are, and the rows."""

    module: str
    parts: set[str]  # paths of memories and notebooks (their changes have their own frames)
    skip: set[str]  # memory content, plan storage and current plan paths
    rows: dict[str, list[Any]]

    def __post_init__(self) -> None:
        # Every ancestor path of a part: a key that appears holding a memory is walked, not dumped.
        self.containers = {p[:i] for p in self.parts for i, c in enumerate(p) if c in ".["}

    def compare(self, path: str, before: Any, after: Any) -> None:
        """Add a row per changed value under ``path``: dicts by key, equal-length lists by index."""
        if path in self.skip:
            return
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            for key in [*before, *(k for k in after if k not in before)]:
                sub = f"{path}.{key}"
                if key in before and key in after:
                    self.compare(sub, before[key], after[key])
                elif key in before:
                    self.one_sided(sub, before[key], "removed")
                else:
                    self.one_sided(sub, after[key], "added")
            return
        if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
            for i, (b, a) in enumerate(zip(before, after, strict=True)):
                self.compare(f"{path}[{i}]", b, a)
            return
        if not _same(before, after):
            _key_row(self.rows, self.module, path, "changed", _short(before), _short(after))

    def one_sided(self, path: str, value: Any, change: str) -> None:
        """A key present on one side only: one row, or its parts' siblings when it holds memories."""
        if path in self.skip or path in self.parts:
            return
        if path in self.containers and isinstance(value, Mapping):
            for key, item in value.items():
                self.one_sided(f"{path}.{key}", item, change)
        elif path in self.containers and isinstance(value, list):
            for i, item in enumerate(value):
                self.one_sided(f"{path}[{i}]", item, change)
        elif change == "added":
            _key_row(self.rows, self.module, path, change, None, _short(value))
        else:
            _key_row(self.rows, self.module, path, change, _short(value), None)


def _key_row(
    rows: dict[str, list[Any]],
    module: str,
    path: str,
    change: str,
    before: str | None,
    after: str | None,
) -> None:
    rows["module"].append(module)
    rows["path"].append(path)
    rows["change"].append(change)
    rows["before"].append(before)
    rows["after"].append(after)


def diff_states(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    label_a: str = "a",
    label_b: str = "b",
) -> SessionDiff:
    """Compare two ``{module_name: state_dict}`` maps."""
    msg_rows: dict[str, list[Any]] = {c: [] for c in MESSAGE_DIFF_COLUMNS}
    plan_rows: dict[str, list[Any]] = {c: [] for c in SUBTASK_DIFF_COLUMNS}
    key_rows: dict[str, list[Any]] = {c: [] for c in KEY_DIFF_COLUMNS}
    for module in [*before, *(m for m in after if m not in before)]:
        name = str(module)
        if module not in after:
            _key_row(key_rows, name, name, "removed", _short(before[module]), None)
            continue
        if module not in before:
            _key_row(key_rows, name, name, "added", None, _short(after[module]))
            continue
        b_state, a_state = before[module], after[module]
        try:
            if _same(b_state, a_state):
                continue
        except RecursionError:
            pass  # compared below, as far as the nesting allows
        b_parts = {(kind, path): node for kind, path, node in find_parts(b_state, name)}
        a_parts = {(kind, path): node for kind, path, node in find_parts(a_state, name)}
        # Memory content and plan storage are reported in their own frames, not as keys;
        # nor is a whole memory or notebook that appears or disappears.
        parts = {path for _, path in (*b_parts, *a_parts)}
        skip: set[str] = set()
        for kind, path in [*b_parts, *(k for k in a_parts if k not in b_parts)]:
            b_node, a_node = b_parts.get((kind, path)), a_parts.get((kind, path))
            if kind == "memory":
                skip.add(f"{path}.content")
                _diff_memory(name, path, b_node, a_node, msg_rows)
            else:
                skip.update((f"{path}.storage", f"{path}.current_plan"))
                _diff_notebook(name, path, b_node, a_node, plan_rows)
        try:
            _KeyWalk(name, parts, skip, key_rows).compare(name, b_state, a_state)
        except RecursionError:
            deep = "<nested too deeply to compare>"
            _key_row(key_rows, name, name, "changed", deep, deep)
    return SessionDiff(
        messages=_frame(msg_rows),
        subtasks=_frame(plan_rows, ints=("position",)),
        keys=_frame(key_rows),
        label_a=label_a,
        label_b=label_b,
    )


def _frame(rows: dict[str, list[Any]], ints: tuple[str, ...] = ()) -> pd.DataFrame:
    """Columns of strings (JSON for anything else), plus nullable-int ``ints``."""
    data = {}
    for name, values in rows.items():
        if name in ints:
            data[name] = pd.Series(pd.array(values, dtype="Int64"))
        else:
            data[name] = pd.Series(
                [v if v is None or isinstance(v, str) else _short(v) for v in values], dtype="str"
            )
    frame: pd.DataFrame = pd.DataFrame(data)
    return frame


# -- the public entry ----------------------------------------------------------


def diff(source: Any, ref_a: Any = None, ref_b: Any = None, /, **live_modules: Any) -> SessionDiff:
    """Compare two states of a session; see the forms below.

    - ``diff(store, "alice@2", "alice@5")``: two checkpoints of a store.
    - ``diff(store, "alice@5")``: a checkpoint against the one before it (its parent).
    - ``diff(store, "alice@2", agent=agent, notebook=nb)``: a checkpoint against
      live objects given as keyword modules; only the modules named are compared.
    - ``diff(cp_a, cp_b)``: two :class:`Checkpoint` objects; ``diff(cp, agent=agent)``.
    - ``diff(state_a, state_b)``: two ``{module: state}`` dicts (or
      ``{module: live object}`` mappings); ``diff(state_a, agent=agent)``.

    The first side is "before", the second "after".
    """
    if isinstance(source, BaseStore):
        if ref_a is None:
            raise TypeError(
                "diff(store, ...) needs a checkpoint, e.g. diff(store, 'alice@2', 'alice@5')"
            )
        if ref_b is not None:
            if live_modules:
                raise TypeError(
                    "give a second checkpoint or live modules to compare with, not both"
                )
            cp_a, cp_b = source.checkpoint(ref_a), source.checkpoint(ref_b)
            return diff_states(
                source.get_state(cp_a), source.get_state(cp_b), label_a=cp_a.ref, label_b=cp_b.ref
            )
        cp = source.checkpoint(ref_a)
        if live_modules:
            return _against_live(source.get_state(cp), cp.ref, live_modules)
        previous = _previous(source, cp)
        if previous is None:
            return diff_states({}, source.get_state(cp), label_a="(nothing)", label_b=cp.ref)
        return diff_states(
            source.get_state(previous), source.get_state(cp), label_a=previous.ref, label_b=cp.ref
        )
    if ref_b is not None:
        raise TypeError(
            "a third positional argument only applies to a store: diff(store, 'alice@2', 'alice@5')"
        )
    state_a, label_a = _side(source, "a")
    if ref_a is not None:
        if live_modules:
            raise TypeError("give a second state or live modules to compare with, not both")
        state_b, label_b = _side(ref_a, "b")
        return diff_states(state_a, state_b, label_a=label_a, label_b=label_b)
    if live_modules:
        return _against_live(state_a, label_a, live_modules)
    raise TypeError(
        "diff() needs two things to compare: diff(store, 'alice@2', 'alice@5'), "
        "diff(cp_a, cp_b), diff(state_a, state_b) or diff(store, 'alice@2', agent=agent)"
    )


def _against_live(state: Mapping[str, Any], label: str, live: Mapping[str, Any]) -> SessionDiff:
    after = {name: as_stateful(obj, name).state_dict() for name, obj in live.items()}
    before = {name: state[name] for name in live if name in state}
    return diff_states(before, after, label_a=label, label_b="live")


def _side(value: Any, default_label: str) -> tuple[Mapping[str, Any], str]:
    if isinstance(value, Checkpoint):
        return value.state(), value.ref
    if isinstance(value, Mapping):
        if any(_is_live(v) for v in value.values()):
            states = {
                str(k): as_stateful(v, str(k)).state_dict() if _is_live(v) else v
                for k, v in value.items()
            }
            return states, "live"
        return value, default_label
    if isinstance(value, str):
        raise TypeError(
            f"{value!r} looks like a reference: pass the store first, diff(store, {value!r}, ...)"
        )
    raise TypeError(
        f"cannot compare a {type(value).__name__}: pass live objects as keywords, "
        "e.g. diff(store, 'alice@2', agent=agent), or a Checkpoint or a {module: state} dict"
    )


def _previous(store: BaseStore, cp: Checkpoint) -> Checkpoint | None:
    """The checkpoint ``cp`` was made after: its parent if it still exists, else the one before it."""
    history = store.history(cp.key)
    by_seq = {c.seq: c for c in history}
    if cp.parent is not None and cp.parent in by_seq:
        return by_seq[cp.parent]
    earlier = [c for c in history if c.seq < cp.seq]
    return earlier[-1] if earlier else None
