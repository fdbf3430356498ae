"""Plan, SubTask and PlanNotebook: AgentScope semantics, state and validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from nb_sessions.agent import InMemoryPlanStorage, Plan, PlanNotebook, SeededIds, StepClock, SubTask
from nb_sessions.errors import StateError, StateMismatchError

from ._helpers import assert_load_fails, dumps, load_sample


def subtasks(*names: str) -> list[SubTask]:
    return [SubTask(name=n, description=f"Do {n}.", expected_outcome=f"{n} done.", created_at="t0") for n in names]


def state_of(plan: Plan) -> str:
    """Read the state through a call, so the type checker does not narrow it between mutations."""
    return plan.state


def notebook() -> PlanNotebook:
    return PlanNotebook(clock=StepClock(), id_factory=SeededIds(1))


def test_model_keys_match_the_wire_format() -> None:
    plan = Plan(name="P", description="d", expected_outcome="e", subtasks=subtasks("a"))
    assert list(plan.model_dump()) == [
        "id", "name", "description", "expected_outcome", "subtasks", "created_at", "state", "finished_at", "outcome",
    ]
    assert list(plan.model_dump()["subtasks"][0]) == [
        "name", "description", "expected_outcome", "outcome", "state", "created_at", "finished_at",
    ]
    assert len(plan.id) == 22


def test_state_is_validated_on_assignment() -> None:
    sub = subtasks("a")[0]
    with pytest.raises(ValidationError):
        sub.state = "finished"  # type: ignore[assignment]
    assert sub.state == "todo"


def test_refresh_plan_state_follows_agentscope() -> None:
    plan = Plan(name="P", description="d", expected_outcome="e", subtasks=subtasks("a", "b"))
    assert plan.refresh_plan_state() == ""
    plan.subtasks[0].state = "in_progress"
    assert "in_progress" in plan.refresh_plan_state()
    assert state_of(plan) == "in_progress"
    plan.subtasks[0].finish("ok", "t1")
    assert "'todo'" in plan.refresh_plan_state()
    assert state_of(plan) == "todo"
    plan.finish("abandoned", "no longer needed", "t2")
    plan.subtasks[1].state = "in_progress"
    assert plan.refresh_plan_state() == ""
    assert (plan.state, plan.outcome, plan.finished_at) == ("abandoned", "no longer needed", "t2")
    with pytest.raises(ValueError, match="'done' or 'abandoned'"):
        plan.finish("todo", "x")  # type: ignore[arg-type]


def test_markdown() -> None:
    plan = Plan(name="Ship", description="Ship it.", expected_outcome="Shipped.", subtasks=subtasks("build", "test"), created_at="t0")
    plan.subtasks[0].finish("binary", "t1")
    plan.subtasks[1].state = "in_progress"
    text = plan.to_markdown()
    assert text.splitlines()[:6] == [
        "# Ship", "**Description**: Ship it.", "**Expected Outcome**: Shipped.", "**State**: todo",
        "**Created At**: t0", "## Subtasks",
    ]
    assert "- [x] build" in text
    assert "- [ ] [WIP]test" in text
    detailed = plan.to_markdown(detailed=True)
    assert "\t- Actual Outcome: binary" in detailed
    assert "\t- Finished At: t1" in detailed
    assert plan.subtasks[0].to_oneline_markdown() == "- [x] build"


async def test_notebook_flow_advances_and_archives() -> None:
    nb = notebook()
    answer = await nb.create_plan("Report", "Write the Q2 report.", "A sent report.", subtasks("draft", "review", "send"))
    assert "created successfully" in answer
    plan = nb.current_plan
    assert plan is not None
    assert plan.created_at == "2025-01-01 09:00:00.000"
    assert "marked as 'in_progress'" in await nb.update_subtask_state(0, "in_progress")
    assert plan.state == "in_progress"
    assert "not done yet" in await nb.update_subtask_state(2, "in_progress")
    assert "activated" in await nb.finish_subtask(0, "draft.md")
    assert [s.state for s in plan.subtasks] == ["done", "in_progress", "todo"]
    assert plan.subtasks[0].outcome == "draft.md"
    assert plan.subtasks[0].finished_at is not None
    assert "not done yet" in await nb.finish_subtask(2, "too early")
    assert "already 'in_progress'" in await nb.update_subtask_state(0, "in_progress")
    assert plan.subtasks[0].state == "done"
    await nb.finish_subtask(1, "reviewed")
    await nb.finish_subtask(2, "sent")
    assert "finished successfully as 'done'" in await nb.finish_plan("done", "Report sent.")
    assert nb.current_plan is None
    assert list(nb.storage.plans) == [plan.id]
    stored = nb.storage.plans[plan.id]
    assert (stored.state, stored.outcome) == ("done", "Report sent.")
    assert await nb.finish_plan("done", "again") == "There is no plan to finish."
    assert plan.id in await nb.view_historical_plans()


async def test_invalid_requests_answer_in_text() -> None:
    nb = notebook()
    with pytest.raises(ValueError, match="create_plan"):
        await nb.finish_subtask(0, "x")
    await nb.create_plan("P", "d", "e", subtasks("a"))
    assert "Invalid subtask_idx '5'" in await nb.finish_subtask(5, "x")
    assert "Invalid state" in await nb.update_subtask_state(0, "done")  # type: ignore[arg-type]
    assert "Invalid action" in await nb.revise_current_plan(0, "move")  # type: ignore[arg-type]
    assert "must be provided" in await nb.revise_current_plan(0, "add")
    assert "Invalid state" in await nb.finish_plan("todo", "x")  # type: ignore[arg-type]
    assert "Invalid subtask_idx [3]" in await nb.view_subtasks([0, 3])


async def test_revise_add_revise_delete() -> None:
    nb = notebook()
    await nb.create_plan("P", "d", "e", subtasks("a", "b"))
    plan = nb.current_plan
    assert plan is not None
    extra = subtasks("c")[0]
    assert "added" in await nb.revise_current_plan(2, "add", extra)  # appending is allowed
    assert [s.name for s in plan.subtasks] == ["a", "b", "c"]
    assert "revised" in await nb.revise_current_plan(0, "revise", subtasks("A")[0])
    assert "deleted" in await nb.revise_current_plan(1, "delete")
    assert [s.name for s in plan.subtasks] == ["A", "c"]
    assert "Invalid subtask_idx" in await nb.revise_current_plan(3, "add", extra)


async def test_max_subtasks() -> None:
    nb = PlanNotebook(max_subtasks=2)
    assert "at most 2" in await nb.create_plan("P", "d", "e", subtasks("a", "b", "c"))
    assert nb.current_plan is None


async def test_replacing_and_recovering_plans_keeps_history() -> None:
    nb = notebook()
    await nb.create_plan("First", "d", "e", subtasks("a", "b"))
    first = nb.current_plan
    assert first is not None
    assert "replaced" in await nb.create_plan("Second", "d", "e", subtasks("x"))
    assert nb.storage.plans[first.id].state == "abandoned"
    answer = await nb.recover_historical_plan(first.id)
    assert "First" in answer
    current = nb.current_plan
    assert current is not None
    assert current.id == first.id
    assert current.state == "todo"
    assert current.outcome is None
    assert current is not nb.storage.plans[first.id]
    assert len(nb.storage.plans) == 2  # "Second" was archived when First came back
    assert "Cannot find" in await nb.recover_historical_plan("nope")


async def test_hooks_are_called_on_change() -> None:
    nb = notebook()
    seen: list[str | None] = []
    nb.register_plan_change_hook("log", lambda _nb, plan: seen.append(plan.name if plan else None))

    async def async_hook(_nb: PlanNotebook, plan: Plan | None) -> None:
        seen.append("async")

    nb.register_plan_change_hook("a", async_hook)
    await nb.create_plan("P", "d", "e", subtasks("a"))
    await nb.finish_plan("abandoned", "stop")
    assert seen == ["P", "async", None, "async"]
    nb.remove_plan_change_hook("log")
    with pytest.raises(KeyError):
        nb.remove_plan_change_hook("log")


def test_sample_notebook_round_trip() -> None:
    state = load_sample()["notebook"]
    nb = PlanNotebook()
    nb.load_state_dict(state, strict=True)
    assert dumps(nb.state_dict()) == dumps(state)
    plan = nb.storage.plans["MwpaNAuc8dViCcfeY3Xbuj"]
    assert plan.state == "abandoned"
    assert plan.subtasks[0].name == "Export"


async def test_state_with_current_plan_round_trips() -> None:
    nb = notebook()
    await nb.create_plan("P", "d", "e", subtasks("a", "b"))
    await nb.update_subtask_state(0, "in_progress")
    state = nb.state_dict()
    assert list(state) == ["storage", "current_plan"]
    other = PlanNotebook()
    other.load_state_dict(copy.deepcopy(state))
    assert dumps(other.state_dict()) == dumps(state)
    assert other.current_plan is not None
    assert other.current_plan.subtasks[0].state == "in_progress"


def _sample_with(edit: Any) -> dict[str, Any]:
    state: dict[str, Any] = copy.deepcopy(load_sample()["notebook"])
    edit(state)
    return state


PID = "MwpaNAuc8dViCcfeY3Xbuj"


def _plan(state: dict[str, Any]) -> dict[str, Any]:
    plan: dict[str, Any] = state["storage"]["plans"][PID]
    return plan


@pytest.mark.parametrize(
    ("edit", "path", "fragments"),
    [
        (
            lambda s: _plan(s)["subtasks"][0].update(state="finished"),
            f"storage.plans.{PID}.subtasks[0].state",
            ("unknown subtask state 'finished'", "todo, in_progress, done, abandoned"),
        ),
        (lambda s: _plan(s).update(state="paused"), f"storage.plans.{PID}.state", ("unknown plan state 'paused'",)),
        (lambda s: _plan(s).pop("name"), f"storage.plans.{PID}.name", ("required key 'name' is absent", "subtasks: [subtask]")),
        (lambda s: _plan(s).update(outcome=5), f"storage.plans.{PID}.outcome", ("expected str or null, got int",)),
        (lambda s: _plan(s).update(subtasks={}), f"storage.plans.{PID}.subtasks", ("expected a list of subtasks",)),
        (lambda s: _plan(s)["subtasks"].append("x"), f"storage.plans.{PID}.subtasks[1]", ("expected a subtask",)),
        (lambda s: _plan(s)["subtasks"][0].pop("description"), f"storage.plans.{PID}.subtasks[0].description", ("required key",)),
        (lambda s: _plan(s).update(id="other"), f"storage.plans.{PID}.id", ("stored under",)),
        (lambda s: s["storage"].update(plans=[]), "storage.plans", ("expected a dict of plan id -> plan",)),
        (lambda s: s.update(current_plan=[]), "current_plan", ("expected a plan",)),
        (
            lambda s: s.update(current_plan={**_plan(s), "subtasks": [{**_plan(s)["subtasks"][0], "state": "deprecated"}]}),
            "current_plan.subtasks[0].state",
            ("'deprecated'", "todo, in_progress, done, abandoned"),
        ),
    ],
)
async def test_bad_states_name_the_path_and_change_nothing(edit: Any, path: str, fragments: tuple[str, ...]) -> None:
    nb = notebook()
    await nb.create_plan("Keep", "d", "e", subtasks("a"))
    assert_load_fails(nb, _sample_with(edit), path, *fragments)
    assert nb.current_plan is not None
    assert nb.current_plan.name == "Keep"
    assert nb.storage.plans == {}


async def test_unexpected_plan_fields_strict_and_lenient() -> None:
    state = _sample_with(lambda s: _plan(s).update(priority="high"))
    nb = notebook()
    err = assert_load_fails(nb, state, f"storage.plans.{PID}.priority", "unexpected")
    assert isinstance(err, StateMismatchError)
    nb.load_state_dict(state, strict=False)
    assert "priority" not in nb.state_dict()["storage"]["plans"][PID]


def test_storage_alone_validates_too() -> None:
    storage = InMemoryPlanStorage()
    with pytest.raises(StateError) as info:
        storage.load_state_dict({"plans": {"a": {"name": 1}}})
    paths = {p for p, _ in info.value.problems}
    assert {"plans.a.name", "plans.a.description", "plans.a.subtasks"} <= paths
    assert storage.plans == {}
