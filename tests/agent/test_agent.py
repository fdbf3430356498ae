"""Agent and ScriptedAgent: the sample file, AgentScope-shaped memory, determinism, crashes."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from nb_sessions.agent import (
    Agent,
    InMemoryMemory,
    Msg,
    PlanNotebook,
    ScriptedAgent,
    SimulatedCrash,
    Toolkit,
    calculator,
    get_weather,
    safe_eval,
)
from nb_sessions.errors import StateError, StateMismatchError

from ._helpers import assert_load_fails, dumps, load_sample


class EchoAgent(Agent):
    """The smallest concrete agent."""

    async def reply(self, msg: Msg | list[Msg] | None = None) -> Msg:
        await self.memory.add(msg)
        text = msg.get_text_content() if isinstance(msg, Msg) else ""
        out = Msg(self.name, f"echo: {text}", "assistant")
        await self.memory.add(out)
        return out


def user(text: str, n: int) -> Msg:
    return Msg("Bob", text, "user", id=f"user-msg-{n:04d}", timestamp="2026-01-01 10:00:00.000")


async def converse(agent: ScriptedAgent, *texts: str) -> list[Msg]:
    return [await agent(user(t, i)) for i, t in enumerate(texts)]


# -- the AgentScope sample ----------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: ScriptedAgent("Friday"), lambda: EchoAgent("Friday", plan_notebook=PlanNotebook())])
def test_sample_agent_loads_strictly_and_saves_identically(make: Any) -> None:
    state = load_sample()["agent"]
    original = dumps(state)
    agent = make()
    agent.load_state_dict(state, strict=True)
    assert agent.state_dict() == state
    assert dumps(agent.state_dict()) == original
    assert dumps(state) == original, "loading must not modify its input"
    assert list(agent.state_dict()) == ["memory", "toolkit", "plan_notebook", "name", "_sys_prompt"]
    assert agent.sys_prompt.endswith("请用用户的语言回答。")
    first = agent.memory.content[0][0]
    assert isinstance(first, Msg)
    assert first.id == "P7ZverNMj6MCGkUkAgMkuB"


def test_sample_notebook_entry_round_trips() -> None:
    state = load_sample()["notebook"]
    nb = PlanNotebook()
    nb.load_state_dict(state, strict=True)
    assert json.dumps(nb.state_dict(), ensure_ascii=False) == json.dumps(state, ensure_ascii=False)


def test_agent_without_notebook_has_no_such_key_and_rejects_one() -> None:
    agent = EchoAgent("Friday", "prompt")
    assert list(agent.state_dict()) == ["memory", "toolkit", "name", "_sys_prompt"]
    err = assert_load_fails(agent, load_sample()["agent"], "plan_notebook", "unexpected")
    assert isinstance(err, StateMismatchError)
    agent.load_state_dict(load_sample()["agent"], strict=False)
    assert agent.name == "Friday"
    assert len(agent.memory.content) == 2


async def test_bad_nested_state_reports_full_path_and_changes_nothing() -> None:
    agent = ScriptedAgent("Friday", seed=3)
    await converse(agent, "hello")
    state = copy.deepcopy(load_sample()["agent"])
    state["memory"]["content"][1][0]["role"] = "robot"
    state["plan_notebook"]["storage"]["plans"]["MwpaNAuc8dViCcfeY3Xbuj"]["subtasks"][0]["state"] = "later"
    state["name"] = 7
    err = assert_load_fails(agent, state, "memory.content[1][0].role", "user, assistant, system")
    paths = {p for p, _ in err.problems}
    assert "plan_notebook.storage.plans.MwpaNAuc8dViCcfeY3Xbuj.subtasks[0].state" in paths
    assert "name" in paths
    assert agent.name == "Friday"
    assert len(agent.memory.content) == 2


async def test_echo_agent_call_and_observe() -> None:
    agent = EchoAgent("E")
    reply = await agent(Msg("u", "ping", "user"))
    await agent.observe(Msg("other", "fyi", "assistant"))
    assert reply.get_text_content() == "echo: ping"
    assert [m.get_text_content() for m, _ in agent.memory.content] == ["ping", "echo: ping", "fyi"]


# -- the scripted agent -------------------------------------------------------------------


async def test_tool_calls_are_recorded_in_agentscope_shape() -> None:
    agent = ScriptedAgent("Friday", seed=1)
    reply = await agent(user("What is (2 + 3) * 4?", 0))
    assert reply.get_text_content() == "(2 + 3) * 4 = 20"
    msgs = [m for m, _ in agent.memory.content]
    assert [(m.role, m.name) for m in msgs] == [("user", "Bob"), ("assistant", "Friday"), ("system", "system"), ("assistant", "Friday")]
    kinds = [[b["type"] for b in m.get_content_blocks()] for m in msgs]
    assert kinds == [["text"], ["thinking", "tool_use"], ["tool_result"], ["thinking", "text"]]
    use = msgs[1].get_content_blocks("tool_use")[0]
    result = msgs[2].get_content_blocks("tool_result")[0]
    assert use["id"] == result["id"]
    assert use["name"] == result["name"] == "calculator"
    assert use["input"] == {"expression": "(2 + 3) * 4"}
    assert result["output"] == [{"type": "text", "text": "20"}]
    assert reply == msgs[3]


def _pairs(agent: ScriptedAgent) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    uses, results = [], []
    for m, _ in agent.memory.content:
        uses += [(b["id"], b["name"]) for b in m.get_content_blocks("tool_use")]
        results += [(b["id"], b["name"]) for b in m.get_content_blocks("tool_result")]
    return uses, results


async def test_conversation_with_plan_weather_and_errors() -> None:
    agent = ScriptedAgent("Friday", seed=2)
    replies = await converse(
        agent,
        "Hello!",
        "weather in Zürich",
        "plan: draft the report, review it, send it",
        "next",
        "done: reviewed by Alice",
        "calculate 1/0",
        "next",
        "something else entirely",
    )
    text = [r.get_text_content() or "" for r in replies]
    assert text[0].startswith("Hello Bob! I'm Friday.")
    assert text[1].startswith("The weather in Zürich: ")
    assert "# Draft the report, review it, send it" in text[2]
    assert "- [ ] [WIP]Draft the report" in text[2]
    assert text[3] == "Done with 'Draft the report'. Next up: 'Review it'."
    assert "ZeroDivisionError" in text[5]
    assert text[6] == "The plan 'Draft the report, review it, send it' is complete."
    assert text[7].startswith('I heard: "something else entirely"')
    uses, results = _pairs(agent)
    assert uses == results
    assert [name for _, name in uses] == [
        "get_weather", "create_plan", "update_subtask_state", "finish_subtask", "finish_subtask",
        "calculator", "finish_subtask", "finish_plan",
    ]
    assert len({i for i, _ in uses}) == len(uses)
    nb = agent.plan_notebook
    assert nb is not None
    assert nb.current_plan is None
    (plan,) = nb.storage.plans.values()
    assert plan.state == "done"
    assert [s.outcome for s in plan.subtasks] == ["Draft the report: completed.", "reviewed by Alice", "Send it: completed."]
    for m, _ in agent.memory.content:
        if m.role == "assistant":
            assert m.get_content_blocks()[0]["type"] == "thinking"


async def test_plan_advances_one_subtask_per_next() -> None:
    agent = ScriptedAgent("Friday", seed=5)
    await converse(agent, "plan to migrate the CRM")
    nb = agent.plan_notebook
    assert nb is not None
    assert nb.current_plan is not None
    plan = nb.current_plan
    assert len(plan.subtasks) == 3
    assert [s.state for s in plan.subtasks] == ["in_progress", "todo", "todo"]
    assert plan.state == "in_progress"
    await agent(user("next", 10))
    assert [s.state for s in plan.subtasks] == ["done", "in_progress", "todo"]
    reply = await agent(user("cancel the plan: budget cut", 11))
    assert reply.get_text_content() == "I abandoned the plan 'Migrate the CRM'."
    assert nb.current_plan is None
    assert plan.state == "abandoned"
    assert plan.outcome == "budget cut"
    reply = await agent(user("next", 12))
    assert "no active plan" in (reply.get_text_content() or "")


async def test_same_seed_same_state() -> None:
    script = ("hi", "what is 6*7", "plan a, b", "next", "weather in 東京")
    a, b = ScriptedAgent(seed=9), ScriptedAgent(seed=9)
    await converse(a, *script)
    await converse(b, *script)
    assert dumps(a.state_dict()) == dumps(b.state_dict())
    c = ScriptedAgent(seed=10)
    await converse(c, *script)
    assert dumps(a.state_dict()) != dumps(c.state_dict())
    timestamps = [m.timestamp for m, _ in a.memory.content if m.role != "user"]
    assert timestamps == sorted(timestamps)
    assert timestamps[0].startswith("2025-01-01 09:00:")


async def test_state_survives_a_reload_into_a_fresh_agent() -> None:
    agent = ScriptedAgent(seed=4)
    await converse(agent, "plan x, y, z", "next", "what is 2**10")
    state = agent.state_dict()
    fresh = ScriptedAgent()
    fresh.load_state_dict(json.loads(json.dumps(state)))
    assert dumps(fresh.state_dict()) == dumps(state)
    await fresh(user("next", 50))
    nb = fresh.plan_notebook
    assert nb is not None
    assert nb.current_plan is not None
    assert [s.state for s in nb.current_plan.subtasks] == ["done", "done", "in_progress"]


async def test_crash_leaves_a_dangling_tool_use() -> None:
    agent = ScriptedAgent(seed=6)
    await converse(agent, "hello")
    with pytest.raises(SimulatedCrash):
        await agent(user("please crash now", 1))
    last = agent.memory.content[-1][0]
    assert last.role == "assistant"
    (use,) = last.get_content_blocks("tool_use")
    assert use["name"] == "crash"
    uses, results = _pairs(agent)
    assert [i for i, _ in uses] == [use["id"]]
    assert results == []
    # The dangling state saves and loads like any other.
    state = agent.state_dict()
    other = ScriptedAgent()
    other.load_state_dict(state)
    assert dumps(other.state_dict()) == dumps(state)


async def test_custom_rules_and_shared_toolkit() -> None:
    async def shout(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
        return await agent.respond(match["word"].upper())

    kit = Toolkit()
    agent = ScriptedAgent("A", rules=[(r"say (?P<word>\w+)", shout)], toolkit=kit, with_plan_notebook=False)
    ScriptedAgent("B", toolkit=kit, with_plan_notebook=False)  # registering twice is harmless
    assert (await agent(user("say hi", 0))).get_text_content() == "HI"
    assert "I heard" in ((await agent(user("no rule", 1))).get_text_content() or "")
    assert "plan_notebook" not in agent.state_dict()
    assert {"calculator", "get_weather", "crash"} <= set(kit.tools)
    reply = await ScriptedAgent(with_plan_notebook=False)(user("plan something", 2))
    assert "no plan notebook" in (reply.get_text_content() or "")


def test_agent_parts_can_be_supplied() -> None:
    memory, nb = InMemoryMemory(), PlanNotebook()
    agent = ScriptedAgent("Z", "custom prompt", memory=memory, plan_notebook=nb)
    assert agent.memory is memory
    assert agent.plan_notebook is nb
    assert agent.state_dict()["_sys_prompt"] == "custom prompt"
    assert "create_plan" in agent.toolkit.tools


# -- the offline tools -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "value"),
    [("1 + 2 * 3", "7"), ("(1 + 2) * 3", "9"), ("7 / 2", "3.5"), ("7 // 2", "3"), ("-2 ** 2", "-4"), ("10 % 4", "2"), ("0.1 + 0.2", "0.30000000000000004"), ("2 ** 100", str(2**100)), ("6 / 3", "2")],
)
def test_calculator(expr: str, value: str) -> None:
    assert calculator(expr) == value


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('echo hi')", "x + 1", "[1, 2]", "2 ** 100000", "1 if 1 else 2", "True + 1", "'a' * 3", "1" * 300],
)
def test_calculator_refuses_anything_but_arithmetic(expr: str) -> None:
    with pytest.raises((ValueError, SyntaxError)):
        safe_eval(expr)


def test_weather_is_deterministic() -> None:
    assert get_weather("Paris") == get_weather("  paris ").replace("paris", "Paris")
    assert get_weather("Paris") != get_weather("Tokyo")
    assert re.match(r"^Paris: [a-z ]+, -?\d+°C, humidity \d+%$", get_weather("Paris"))
    with pytest.raises(ValueError, match="must not be empty"):
        get_weather("  ")


def test_state_error_is_raised_for_a_non_dict_agent_state() -> None:
    agent = ScriptedAgent()
    with pytest.raises(StateError, match="expected a dict"):
        agent.load_state_dict([])  # type: ignore[arg-type]
