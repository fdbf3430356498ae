"""AgentScope 1.x plans: :class:`SubTask`, :class:`Plan` and the :class:`PlanNotebook`.

PlanNotebook state: ``{"storage": {"plans": {plan_id: Plan}}, "current_plan": Plan | null}``,
with Plan ``{id, name, description, expected_outcome, subtasks, created_at, state,
finished_at, outcome}`` and SubTask ``{name, description, expected_outcome, outcome,
state, created_at, finished_at}``. The notebook's methods are the agent's plan tools:
like AgentScope's they return a text answer for the model rather than raising on
a bad index or state.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import _join
from ..state import Commit, StateModule
from .message import Clock, IdFactory, short_id, timestamp_now

__all__ = [
    "PLAN_STATES",
    "InMemoryPlanStorage",
    "Plan",
    "PlanNotebook",
    "PlanState",
    "SubTask",
    "plan_from_state",
]

PlanState = Literal["todo", "in_progress", "done", "abandoned"]
PLAN_STATES: tuple[str, ...] = ("todo", "in_progress", "done", "abandoned")
_ALLOWED = ", ".join(PLAN_STATES)


class SubTask(BaseModel):
    """One step of a plan."""

    model_config = ConfigDict(validate_assignment=True)

    name: str = Field(description="The subtask name, concise and descriptive (at most 10 words).")
    description: str = Field(description="What to do, with its constraints and target.")
    expected_outcome: str = Field(description="The specific, measurable expected outcome.")
    outcome: str | None = Field(default=None, description="The actual outcome.")
    state: PlanState = Field(default="todo", description="The state of the subtask.")
    created_at: str = Field(default_factory=timestamp_now, description="When it was created.")
    finished_at: str | None = Field(default=None, description="When it was finished.")

    def finish(self, outcome: str, finished_at: str | None = None) -> None:
        """Mark the subtask done with its actual outcome."""
        self.state = "done"
        self.outcome = outcome
        self.finished_at = finished_at or timestamp_now()

    def to_oneline_markdown(self) -> str:
        """Return a one-line checklist item, e.g. ``- [x] Export``."""
        return f"{_ONELINE[self.state]} {self.name}"

    def to_markdown(self, detailed: bool = False) -> str:
        """Return the subtask as a Markdown checklist item, with details if asked."""
        head = f"{_CHECKBOX[self.state]}{self.name}"
        if not detailed:
            return head
        lines = [
            head,
            f"\t- Created At: {self.created_at}",
            f"\t- Description: {self.description}",
            f"\t- Expected Outcome: {self.expected_outcome}",
            f"\t- State: {self.state}",
        ]
        if self.state == "done":
            lines += [f"\t- Finished At: {self.finished_at}", f"\t- Actual Outcome: {self.outcome}"]
        return "\n".join(lines)


_CHECKBOX = {"todo": "- [ ] ", "in_progress": "- [ ] [WIP]", "done": "- [x] ", "abandoned": "- [ ] [Abandoned]"}
_ONELINE = {"todo": "- []", "in_progress": "- [][WIP]", "done": "- [x]", "abandoned": "- [][Abandoned]"}


class Plan(BaseModel):
    """A named goal broken into ordered subtasks."""

    model_config = ConfigDict(validate_assignment=True)

    id: str = Field(default_factory=short_id, description="The plan id.")
    name: str = Field(description="The plan name, concise and descriptive (at most 10 words).")
    description: str = Field(description="What the plan achieves, with its constraints.")
    expected_outcome: str = Field(description="The specific, measurable expected outcome.")
    subtasks: list[SubTask] = Field(description="The ordered subtasks.")
    created_at: str = Field(default_factory=timestamp_now, description="When it was created.")
    state: PlanState = Field(default="todo", description="The state of the plan.")
    finished_at: str | None = Field(default=None, description="When it was finished.")
    outcome: str | None = Field(default=None, description="The actual outcome.")

    def refresh_plan_state(self) -> str:
        """Switch between todo and in_progress from the subtasks (a finished plan stays); return a note if changed."""
        if self.state in ("done", "abandoned"):
            return ""
        busy = any(s.state == "in_progress" for s in self.subtasks)
        if busy and self.state == "todo":
            self.state = "in_progress"
            return "The plan state has been updated to 'in_progress'."
        if not busy and self.state == "in_progress":
            self.state = "todo"
            return "The plan state has been updated to 'todo'."
        return ""

    def finish(self, state: Literal["done", "abandoned"], outcome: str, finished_at: str | None = None) -> None:
        """Close the plan as done (with its outcome) or abandoned (with the reason)."""
        if state not in ("done", "abandoned"):
            raise ValueError(f"a plan finishes as 'done' or 'abandoned', not {state!r}")
        self.state = state
        self.outcome = outcome
        self.finished_at = finished_at or timestamp_now()

    def to_markdown(self, detailed: bool = False) -> str:
        """Return the plan as Markdown: header fields, then the subtask checklist."""
        return "\n".join(
            [
                f"# {self.name}",
                f"**Description**: {self.description}",
                f"**Expected Outcome**: {self.expected_outcome}",
                f"**State**: {self.state}",
                f"**Created At**: {self.created_at}",
                "## Subtasks",
                "\n".join(s.to_markdown(detailed=detailed) for s in self.subtasks),
            ]
        )


# -- validation with dotted paths ---------------------------------------------

_SUBTASK_SHAPE = (
    "{name: str, description: str, expected_outcome: str, outcome: str|null, "
    f"state: {'|'.join(PLAN_STATES)}, created_at: str, finished_at: str|null}}"
)
_PLAN_SHAPE = (
    "{id: str, name: str, description: str, expected_outcome: str, subtasks: [subtask], "
    f"created_at: str, state: {'|'.join(PLAN_STATES)}, finished_at: str|null, outcome: str|null}}"
)
# (key, required, nullable) for the str fields of each model.
_SUBTASK_STR_FIELDS = (
    ("name", True, False),
    ("description", True, False),
    ("expected_outcome", True, False),
    ("outcome", False, True),
    ("created_at", False, False),
    ("finished_at", False, True),
)
_PLAN_STR_FIELDS = (
    ("id", False, False),
    ("name", True, False),
    ("description", True, False),
    ("expected_outcome", True, False),
    ("created_at", False, False),
    ("finished_at", False, True),
    ("outcome", False, True),
)


def _check_fields(
    data: Mapping[str, Any],
    path: str,
    strict: bool,
    problems: list[tuple[str, str]],
    str_fields: tuple[tuple[str, bool, bool], ...],
    known: Sequence[str],
    what: str,
    shape: str,
) -> None:
    for key, required, nullable in str_fields:
        if key not in data:
            if required:
                problems.append((_join(path, key), f"required key '{key}' is absent; a {what} is {shape}"))
            continue
        value = data[key]
        if not (isinstance(value, str) or (nullable and value is None)):
            want = "str or null" if nullable else "str"
            problems.append((_join(path, key), f"expected {want}, got {_tname(value)}"))
    if "state" in data and data["state"] not in PLAN_STATES:
        problems.append((_join(path, "state"), f"unknown {what} state {data['state']!r}; expected one of: {_ALLOWED}"))
    if strict:
        for key in data:
            if key not in known:
                problems.append((_join(path, str(key)), f"unexpected: a {what} has no such field; a {what} is {shape}"))


def plan_from_state(data: Any, path: str, strict: bool, problems: list[tuple[str, str]]) -> Plan | None:
    """Validate a plan's state dict and build the Plan, or add problems and return None."""
    if not isinstance(data, Mapping):
        problems.append((path, f"expected a plan {_PLAN_SHAPE}, got {_tname(data)}"))
        return None
    before = len(problems)
    _check_fields(data, path, strict, problems, _PLAN_STR_FIELDS, list(Plan.model_fields), "plan", _PLAN_SHAPE)
    subtasks = data.get("subtasks")
    if "subtasks" not in data:
        problems.append((_join(path, "subtasks"), f"required key 'subtasks' is absent; a plan is {_PLAN_SHAPE}"))
    elif not isinstance(subtasks, list):
        problems.append((_join(path, "subtasks"), f"expected a list of subtasks, got {_tname(subtasks)}"))
    else:
        for i, sub in enumerate(subtasks):
            where = f"{_join(path, 'subtasks')}[{i}]"
            if not isinstance(sub, Mapping):
                problems.append((where, f"expected a subtask {_SUBTASK_SHAPE}, got {_tname(sub)}"))
                continue
            _check_fields(sub, where, strict, problems, _SUBTASK_STR_FIELDS, list(SubTask.model_fields), "subtask", _SUBTASK_SHAPE)
    if len(problems) > before or not isinstance(subtasks, list):
        return None
    clean = {k: v for k, v in data.items() if k in Plan.model_fields}
    clean["subtasks"] = [{k: v for k, v in s.items() if k in SubTask.model_fields} for s in subtasks]
    return Plan.model_validate(clean)


def _key_path(path: str, key: str) -> str:
    if key and not any(c in key for c in ".[] "):
        return _join(path, key)
    return f"{path}[{key!r}]"


def _dump_plan(plan: Plan | None) -> dict[str, Any] | None:
    return plan.model_dump() if plan is not None else None


# -- storage --------------------------------------------------------------------


class InMemoryPlanStorage(StateModule):
    """Finished and replaced plans by id; state ``{"plans": {plan_id: Plan}}``."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: dict[str, Plan] = {}
        self.register_state(
            "plans", custom_to_json=lambda plans: {k: p.model_dump() for k, p in plans.items()}, expect=dict
        )

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: list[tuple[str, str]]
    ) -> list[Commit]:
        """Convert the stored plans first, so problems carry paths like ``plans.<id>.subtasks[0].state``."""
        if isinstance(state, Mapping) and "plans" in state:
            state = dict(state)
            state["plans"] = _convert_plans(state["plans"], _join(path, "plans"), strict, problems)
        return super()._nbs_prepare_load(state, strict, path, problems)

    async def add_plan(self, plan: Plan, override: bool = True) -> None:
        """Store ``plan`` under its id; with ``override=False`` an existing id is an error."""
        if plan.id in self.plans and not override:
            raise ValueError(f"a plan with id {plan.id!r} is already stored")
        self.plans[plan.id] = plan

    async def delete_plan(self, plan_id: str) -> None:
        """Remove a stored plan (no error if absent)."""
        self.plans.pop(plan_id, None)

    async def get_plans(self) -> list[Plan]:
        """Return every stored plan, oldest first."""
        return list(self.plans.values())

    async def get_plan(self, plan_id: str) -> Plan | None:
        """Return the stored plan with that id, or None."""
        return self.plans.get(plan_id)


def _convert_plans(plans: Any, path: str, strict: bool, problems: list[tuple[str, str]]) -> dict[str, Plan]:
    if not isinstance(plans, Mapping):
        problems.append((path, f"expected a dict of plan id -> plan, got {_tname(plans)}"))
        return {}
    out: dict[str, Plan] = {}
    for key, data in plans.items():
        where = _key_path(path, str(key))
        plan = plan_from_state(data, where, strict, problems)
        if plan is None:
            continue
        if strict and plan.id != key:
            problems.append((_join(where, "id"), f"the plan is stored under {key!r} but its id is {plan.id!r}"))
        out[str(key)] = plan
    return out


# -- the notebook ----------------------------------------------------------------

PlanChangeHook = Callable[["PlanNotebook", "Plan | None"], "Awaitable[None] | None"]


class PlanNotebook(StateModule):
    """The current plan plus a store of historical ones, with AgentScope's plan tools as async methods."""

    description: str = (
        "Plan-related tools: create a plan for a complex task, then follow it subtask by "
        "subtask, revising it when needed and finishing it when done or abandoned."
    )

    def __init__(
        self,
        max_subtasks: int | None = None,
        storage: InMemoryPlanStorage | None = None,
        *,
        clock: Clock | None = None,
        id_factory: IdFactory | None = None,
    ) -> None:
        super().__init__()
        self.max_subtasks = max_subtasks
        self._clock: Clock = clock or timestamp_now
        self._new_id: IdFactory = id_factory or short_id
        self._plan_change_hooks: dict[str, PlanChangeHook] = {}
        self.storage = storage if storage is not None else InMemoryPlanStorage()
        self.current_plan: Plan | None = None
        self.register_state("current_plan", custom_to_json=_dump_plan, expect=(Plan, type(None)))

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: list[tuple[str, str]]
    ) -> list[Commit]:
        """Convert ``current_plan`` first, so problems carry paths like ``current_plan.subtasks[0].state``."""
        if isinstance(state, Mapping) and state.get("current_plan") is not None:
            state = dict(state)
            state["current_plan"] = plan_from_state(state["current_plan"], _join(path, "current_plan"), strict, problems)
        return super()._nbs_prepare_load(state, strict, path, problems)

    # -- tools -------------------------------------------------------------------

    async def create_plan(
        self, name: str, description: str, expected_outcome: str, subtasks: list[SubTask]
    ) -> str:
        """Create a plan from a name and ordered subtasks; it replaces any current plan."""
        if self.max_subtasks is not None and len(subtasks) > self.max_subtasks:
            return f"A plan can have at most {self.max_subtasks} subtasks; got {len(subtasks)}."
        plan_id, created_at = self._new_id(), self._clock()
        plan = Plan(
            id=plan_id,
            name=name,
            description=description,
            expected_outcome=expected_outcome,
            subtasks=[self._subtask(s) for s in subtasks],
            created_at=created_at,
        )
        old = self.current_plan
        if old is None:
            answer = f"Plan '{name}' created successfully."
        else:
            # AgentScope drops the replaced plan; we keep it in storage as abandoned.
            if old.state not in ("done", "abandoned"):
                old.finish("abandoned", f"Replaced by the new plan '{name}'.", self._clock())
            await self.storage.add_plan(old)
            answer = f"The current plan named '{old.name}' is replaced by the newly created plan named '{name}'."
        self.current_plan = plan
        await self._trigger_plan_change_hooks()
        return answer

    async def view_subtasks(self, subtask_idx: list[int]) -> str:
        """Show the details of the subtasks at the given indexes (from 0)."""
        plan = self._require_plan()
        parts = []
        bad = []
        for idx in subtask_idx:
            if 0 <= idx < len(plan.subtasks):
                parts.append(f"Subtask at index {idx}:\n```\n{plan.subtasks[idx].to_markdown(detailed=True)}\n```\n")
            else:
                bad.append(idx)
        if bad:
            parts.append(f"Invalid subtask_idx {bad}. {self._index_range(plan)}")
        return "\n".join(parts)

    async def revise_current_plan(
        self,
        subtask_idx: int,
        action: Literal["add", "revise", "delete"],
        subtask: SubTask | None = None,
    ) -> str:
        """Add a subtask before ``subtask_idx``, or revise or delete the one at it."""
        if action not in ("add", "revise", "delete"):
            return f"Invalid action '{action}'. Must be one of 'add', 'revise', 'delete'."
        if action != "delete" and subtask is None:
            return f"The subtask must be provided when action is '{action}', but got None."
        plan = self._require_plan()
        # Unlike AgentScope, 'add' accepts len(subtasks), i.e. appending at the end.
        limit = len(plan.subtasks) + (1 if action == "add" else 0)
        if not 0 <= subtask_idx < limit:
            return f"Invalid subtask_idx '{subtask_idx}'. {self._index_range(plan, action == 'add')}"
        if action == "delete":
            removed = plan.subtasks.pop(subtask_idx)
            answer = f"Subtask (named '{removed.name}') at index {subtask_idx} is deleted successfully."
        elif action == "add":
            if self.max_subtasks is not None and len(plan.subtasks) >= self.max_subtasks:
                return f"A plan can have at most {self.max_subtasks} subtasks."
            plan.subtasks.insert(subtask_idx, self._subtask(subtask))
            answer = f"New subtask is added successfully at index {subtask_idx}."
        else:
            plan.subtasks[subtask_idx] = self._subtask(subtask)
            answer = f"Subtask at index {subtask_idx} is revised successfully."
        plan.refresh_plan_state()
        await self._trigger_plan_change_hooks()
        return answer

    async def update_subtask_state(
        self, subtask_idx: int, state: Literal["todo", "in_progress", "abandoned"]
    ) -> str:
        """Set a subtask to todo, in_progress or abandoned (use finish_subtask to mark it done)."""
        plan = self._require_plan()
        if not 0 <= subtask_idx < len(plan.subtasks):
            return f"Invalid subtask_idx '{subtask_idx}'. {self._index_range(plan)}"
        if state not in ("todo", "in_progress", "abandoned"):
            return f"Invalid state '{state}'. Must be one of 'todo', 'in_progress', 'abandoned'."
        if state == "in_progress":
            for idx, other in enumerate(plan.subtasks):
                if idx < subtask_idx and other.state not in ("done", "abandoned"):
                    return (
                        f"Subtask (at index {idx}) named '{other.name}' is not done yet. "
                        "You should finish the previous subtasks first."
                    )
                if idx != subtask_idx and other.state == "in_progress":
                    return (
                        f"Subtask (at index {idx}) named '{other.name}' is already 'in_progress'. "
                        "You should finish it first before starting another subtask."
                    )
        plan.subtasks[subtask_idx].state = state
        note = plan.refresh_plan_state()
        await self._trigger_plan_change_hooks()
        answer = f"Subtask at index {subtask_idx}, named '{plan.subtasks[subtask_idx].name}' is marked as '{state}' successfully."
        return f"{answer} {note}" if note else answer

    async def finish_subtask(self, subtask_idx: int, subtask_outcome: str) -> str:
        """Mark a subtask done with its specific outcome and start the next one."""
        plan = self._require_plan()
        if not 0 <= subtask_idx < len(plan.subtasks):
            return f"Invalid subtask_idx '{subtask_idx}'. {self._index_range(plan)}"
        for idx, other in enumerate(plan.subtasks[:subtask_idx]):
            if other.state not in ("done", "abandoned"):
                return (
                    f"Cannot finish subtask at index {subtask_idx} because the previous subtask "
                    f"(at index {idx}) named '{other.name}' is not done yet. "
                    "You should finish the previous subtasks first."
                )
        done = plan.subtasks[subtask_idx]
        done.finish(subtask_outcome, self._clock())
        answer = f"Subtask (at index {subtask_idx}) named '{done.name}' is marked as done successfully."
        nxt = plan.subtasks[subtask_idx + 1] if subtask_idx + 1 < len(plan.subtasks) else None
        if nxt is not None and nxt.state == "todo":
            nxt.state = "in_progress"
            answer += f" The next subtask named '{nxt.name}' is activated."
        plan.refresh_plan_state()
        await self._trigger_plan_change_hooks()
        return answer

    async def finish_plan(self, state: Literal["done", "abandoned"], outcome: str) -> str:
        """Close the current plan as done or abandoned and move it to the historical plans."""
        plan = self.current_plan
        if plan is None:
            return "There is no plan to finish."
        if state not in ("done", "abandoned"):
            return f"Invalid state '{state}'. Must be 'done' or 'abandoned'."
        plan.finish(state, outcome, self._clock())
        await self.storage.add_plan(plan)
        self.current_plan = None
        await self._trigger_plan_change_hooks()
        return f"The current plan is finished successfully as '{state}'."

    async def view_historical_plans(self) -> str:
        """List the historical plans with their ids and states."""
        plans = await self.storage.get_plans()
        if not plans:
            return "There are no historical plans."
        return "\n".join(
            f"Plan named '{p.name}':\n- ID: {p.id}\n- Created at: {p.created_at}\n"
            f"- Description: {p.description}\n- State: {p.state}\n"
            for p in plans
        )

    async def recover_historical_plan(self, plan_id: str) -> str:
        """Make a historical plan current again; the current plan, if any, is stored first."""
        stored = await self.storage.get_plan(plan_id)
        if stored is None:
            return f"Cannot find the plan with ID '{plan_id}'."
        old = self.current_plan
        if old is not None:
            if old.state not in ("done", "abandoned"):
                old.finish("abandoned", f"Interrupted by recovering the plan '{stored.name}'.", self._clock())
            await self.storage.add_plan(old)
        # A copy, so the stored record and the live plan do not alias; reopened unless fully done.
        plan = stored.model_copy(deep=True)
        if any(s.state in ("todo", "in_progress") for s in plan.subtasks):
            plan.state, plan.finished_at, plan.outcome = "todo", None, None
            plan.refresh_plan_state()
        self.current_plan = plan
        await self._trigger_plan_change_hooks()
        replaced = f"The current plan '{old.name}' is replaced by" if old is not None else "Recovered"
        return f"{replaced} the historical plan '{plan.name}' (ID: {plan.id})."

    def list_tools(self) -> list[Callable[..., Awaitable[str]]]:
        """Return the plan tools to register in a Toolkit."""
        return [
            self.create_plan,
            self.view_subtasks,
            self.revise_current_plan,
            self.update_subtask_state,
            self.finish_subtask,
            self.finish_plan,
            self.view_historical_plans,
            self.recover_historical_plan,
        ]

    # -- hooks and helpers ----------------------------------------------------------

    def register_plan_change_hook(self, hook_name: str, hook: PlanChangeHook) -> None:
        """Call ``hook(notebook, current_plan)`` (sync or async) after every plan change."""
        self._plan_change_hooks[hook_name] = hook

    def remove_plan_change_hook(self, hook_name: str) -> None:
        """Remove a hook registered under ``hook_name``."""
        if hook_name not in self._plan_change_hooks:
            raise KeyError(f"no plan change hook named {hook_name!r}")
        del self._plan_change_hooks[hook_name]

    async def _trigger_plan_change_hooks(self) -> None:
        for hook in list(self._plan_change_hooks.values()):
            result = hook(self, self.current_plan)
            if inspect.isawaitable(result):
                await result

    def _require_plan(self) -> Plan:
        if self.current_plan is None:
            raise ValueError("There is no current plan; create one with create_plan() first.")
        return self.current_plan

    def _subtask(self, subtask: SubTask | Mapping[str, Any] | None) -> SubTask:
        if isinstance(subtask, SubTask):
            return subtask
        # Tool calls pass plain dicts; fill created_at from our clock for reproducible demos.
        data = dict(subtask or {})
        data.setdefault("created_at", self._clock())
        return SubTask.model_validate(data)

    @staticmethod
    def _index_range(plan: Plan, allow_end: bool = False) -> str:
        top = len(plan.subtasks) if allow_end else len(plan.subtasks) - 1
        if top < 0:
            return "The plan has no subtasks."
        return f"Must be between 0 and {top}."

    def __repr__(self) -> str:
        current = f"'{self.current_plan.name}' ({self.current_plan.state})" if self.current_plan else "none"
        return f"PlanNotebook(current_plan={current}, historical={len(self.storage.plans)})"


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__
