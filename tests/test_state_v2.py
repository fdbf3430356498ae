"""AgentScope 2.x agents are first-class stateful objects: saved as AgentState dumps, restored in place."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

try:
    import agentscope  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra installs it
    pytest.fail(
        "AgentScope 2.x tests need agentscope==2.0.11: pip install -e '.[dev]'", pytrace=False
    )

from agentscope.message import UserMsg
from agentscope.permission import PermissionBehavior, PermissionMode, PermissionRule
from agentscope.state import AgentState, Task

import nb_sessions as nbs
from nb_sessions.agent.v2_scripted import demo_agent
from nb_sessions.errors import StateError, StateMismatchError
from nb_sessions.state import iter_stateful, load_modules

SAMPLE = Path(__file__).parent / "data" / "agentscope_2.0.11_agent_state.json"
V1_SAMPLE = Path(__file__).parent / "data" / "agentscope_1.0.21_u42_bob.json"


def talked_agent() -> Any:
    """An agent after one real reply with a tool call that ran (allowed by a rule)."""
    agent = demo_agent([[("tool", "get_weather", {"city": "Paris"})], "It is sunny in Paris."])
    agent.state.permission_context.allow_rules["get_weather"] = [
        PermissionRule(
            tool_name="get_weather",
            rule_content=None,
            behavior=PermissionBehavior.ALLOW,
            source="userSettings",
        )
    ]
    asyncio.run(agent.reply(UserMsg("user", "Weather in Paris?")))
    return agent


def nested_ids(state: AgentState) -> set[int]:
    return {id(v) for v in state.__dict__.values() if not isinstance(v, (str, int, type(None)))}


def points_at(agent: Any, ids: set[int]) -> list[str]:
    """Attributes of the agent or its own objects that hold one of ``ids``."""
    found = []
    for owner_name, owner in [("agent", agent), *vars(agent).items()]:
        for key, value in getattr(owner, "__dict__", {}).items():
            if id(value) in ids:
                found.append(f"{owner_name}.{key}")
    return found


def test_save_stores_agentscopes_own_wire_format(tmp_path: Path) -> None:
    agent = talked_agent()
    store = nbs.open_store(tmp_path / "s.db")
    store.save("a", agent=agent)
    saved = store.get_state("a")["agent"]
    assert saved == json.loads(agent.state.model_dump_json())
    assert AgentState.model_validate(saved).model_dump() == agent.state.model_dump()


def test_restore_is_in_place_and_coherent(tmp_path: Path) -> None:
    agent = talked_agent()
    agent.state.tool_context.activated_groups = ["weather"]
    agent.state.tasks_context.tasks.append(
        Task(subject="Pack", description="umbrella", metadata={})
    )
    store = nbs.open_store(tmp_path / "s.db")
    store.save("a", agent=agent)
    want = agent.state.model_dump(mode="json")
    state_obj = agent.state

    # change everything, including the cached permission context
    agent.state.permission_context.mode = PermissionMode.DONT_ASK
    agent.state.permission_context.allow_rules.clear()
    agent.state.tool_context.activated_groups = []
    agent.state.tasks_context.tasks.clear()
    agent.state.context.clear()
    old = nested_ids(agent.state)

    store.load("a", agent=agent)
    assert agent.state is state_obj  # in place: references to agent.state stay valid
    assert agent.state.model_dump(mode="json") == want
    assert agent._engine.context is agent.state.permission_context
    assert agent._engine.context.mode is PermissionMode.DEFAULT
    assert "get_weather" in agent._engine.context.allow_rules
    assert agent.state.tool_context.activated_groups == ["weather"]
    assert [t.subject for t in agent.state.tasks_context.tasks] == ["Pack"]
    assert points_at(agent, old) == []


def test_restored_agent_continues_with_a_tool_call(tmp_path: Path) -> None:
    agent = talked_agent()
    store = nbs.open_store(tmp_path / "s.db")
    store.save("a", agent=agent)
    fresh = demo_agent([[("tool", "get_weather", {"city": "Oslo"})], "Sunny in Oslo too."])
    store.load("a", agent=fresh)
    n = len(fresh.state.context)
    asyncio.run(fresh.reply(UserMsg("user", "And Oslo?")))
    results = [b for m in fresh.state.context[n:] for b in m.content if b.type == "tool_result"]
    # the allow rule came back with the state: the tool ran without asking
    assert [r.state for r in results] == ["success"]
    assert "Oslo" in json.dumps(results[0].model_dump(mode="json")["output"])


def test_awaiting_tool_calls_and_reply_context_come_back(tmp_path: Path) -> None:
    agent = demo_agent([[("tool", "get_weather", {"city": "Rome"})]])  # default mode: it asks
    asyncio.run(agent.reply(UserMsg("user", "Rome?")))
    awaiting = [c.id for c in agent.state.get_awaiting_tool_calls(agent.name)]
    assert awaiting
    reply = agent.state.reply_context.model_dump(mode="json")
    store = nbs.open_store(tmp_path / "s.db")
    store.save("a", agent=agent)
    fresh = demo_agent()
    store.load("a", agent=fresh)
    assert [c.id for c in fresh.state.get_awaiting_tool_calls(fresh.name)] == awaiting
    assert fresh.state.reply_context.model_dump(mode="json") == reply


def test_strict_names_unknown_and_missing_fields_by_path(tmp_path: Path) -> None:
    agent = talked_agent()
    state = agent.state.model_dump(mode="json")
    state["context"][0]["bogus"] = 1
    del state["summary"]
    before = agent.state.model_dump(mode="json")
    with pytest.raises(StateMismatchError) as err:
        load_modules({"agent": agent}, {"agent": state})
    assert "agent.context[0].bogus" in err.value.unexpected
    assert "agent.summary" in err.value.missing
    assert agent.state.model_dump(mode="json") == before
    load_modules({"agent": agent}, {"agent": state}, strict=False)  # non-strict: what fits


def test_validation_failure_is_a_state_mismatch_naming_the_path() -> None:
    agent = talked_agent()
    state = agent.state.model_dump(mode="json")
    state["tasks_context"]["tasks"] = [{"subject": "no description"}]
    before = agent.state.model_dump(mode="json")
    with pytest.raises(StateMismatchError) as err:
        load_modules({"agent": agent}, {"agent": state})
    assert any(p.startswith("agent.tasks_context.tasks[0]") for p, _ in err.value.problems)
    assert agent.state.model_dump(mode="json") == before


class Exploding:
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Any, strict: bool = True) -> None:
        raise RuntimeError("disk on fire")


def test_a_late_failure_leaves_the_agent_exactly_as_it_was() -> None:
    agent = talked_agent()
    saved = agent.state.model_dump(mode="json")
    agent.state.permission_context.mode = PermissionMode.DONT_ASK
    before, state_obj, engine_ctx = (
        agent.state.model_dump(mode="json"),
        agent.state,
        agent._engine.context,
    )
    with pytest.raises(StateError):
        load_modules({"agent": agent, "zz": Exploding()}, {"agent": saved, "zz": {}})
    assert agent.state is state_obj and agent._engine.context is engine_ctx
    assert agent.state.model_dump(mode="json") == before


def test_generation_mix_ups_are_refused_naming_both() -> None:
    agent = talked_agent()
    v1 = json.loads(V1_SAMPLE.read_text(encoding="utf-8"))
    module = next(iter(v1.values()))
    assert AgentState.model_validate(module).context == []  # what pydantic alone would do
    for strict in (True, False):
        with pytest.raises(StateMismatchError, match=r"1\.x.*2\.x.*nbs\.migrate"):
            load_modules({"agent": agent}, {"agent": module}, strict=strict)
    with pytest.raises(StateMismatchError, match=r"2\.x AgentState.*not a 2\.x agent"):
        load_modules(
            {"agent": nbs.agent.InMemoryMemory()}, {"agent": agent.state.model_dump(mode="json")}
        )


def test_discovery_and_live_views_see_2x_agents() -> None:
    agent = talked_agent()
    assert dict(iter_stateful({"agent": agent, "x": 1})) == {"agent": agent}
    states, _, _ = nbs.views.resolve(agent)  # views read a live 2.x agent as its AgentState dump
    assert states == {"Agent": agent.state.model_dump(mode="json")}


def test_save_sees_in_place_changes_of_a_message(tmp_path: Path) -> None:
    agent = talked_agent()
    store = nbs.open_store(tmp_path / "s.db")
    store.save("a", agent=agent)
    block = next(b for m in agent.state.context for b in m.content if b.type == "tool_call")
    block.state = "asking"  # an in-place change of one block
    agent.state.context[0].metadata["note"] = "edited"  # and of a plain dict inside a message
    store.save("a", agent=agent)
    assert store.get_state("a")["agent"] == agent.state.model_dump(mode="json")


def test_sample_file_round_trips_through_an_agent(tmp_path: Path) -> None:
    sample = json.loads(SAMPLE.read_text(encoding="utf-8"))
    agent = demo_agent()
    load_modules({"agent": agent}, {"agent": sample})
    assert agent.state.model_dump(mode="json") == AgentState.model_validate(sample).model_dump(
        mode="json"
    )


def test_a_bare_agentstate_file_is_a_session_that_stays_agentscope_readable(tmp_path: Path) -> None:
    agent = talked_agent()
    (tmp_path / "friday.json").write_text(agent.state.model_dump_json(), encoding="utf-8")
    store = nbs.JSONStore(tmp_path)
    [first] = store.history("friday")
    assert first.modules == ("agent",)
    fresh = demo_agent([[("tool", "get_weather", {"city": "Oslo"})], "Sunny in Oslo."])
    store.load("friday", agent=fresh)  # strict: every field came back
    assert fresh.state.model_dump(mode="json") == agent.state.model_dump(mode="json")
    for _ in range(2):  # past CHUNK_MIN entries too: the latest file is assembled from the pack
        asyncio.run(fresh.reply(UserMsg("user", "And Oslo?")))
        store.save("friday", agent=fresh)
    for i in range(40):
        fresh.state.context.append(fresh.state.context[-1].model_copy(update={"id": f"m{i}"}))
    store.save("friday", agent=fresh)
    assert [cp.seq for cp in store.history("friday")] == [1, 2, 3, 4]
    latest = (tmp_path / "friday.json").read_text(encoding="utf-8")
    assert AgentState.model_validate_json(latest).model_dump() == fresh.state.model_dump()
    assert json.loads(latest) == json.loads(fresh.state.model_dump_json())
    assert store.get_state("friday@1") == {"agent": agent.state.model_dump(mode="json")}
    with pytest.raises(nbs.StoreError, match="bare AgentScope AgentState"):
        store.save("friday", other=fresh)
    assert len(store.history("friday")) == 4


def test_drop_in_sessions_save_and_load_a_2x_agent(tmp_path: Path) -> None:
    agent = talked_agent()

    async def app() -> Any:
        session = nbs.JSONSession(save_dir=tmp_path)
        await session.save_session_state("s1", user_id="u", agent=agent)
        fresh = demo_agent()
        await session.load_session_state("s1", user_id="u", agent=fresh)
        return fresh

    fresh = asyncio.run(app())
    assert fresh.state.model_dump(mode="json") == agent.state.model_dump(mode="json")
    assert fresh._engine.context is fresh.state.permission_context
    assert json.loads((tmp_path / "u_s1.json").read_text(encoding="utf-8")) == {
        "agent": json.loads(agent.state.model_dump_json())
    }


def test_the_panel_and_magics_discovery_find_2x_agents() -> None:
    from nb_sessions.notebook._helpers import live_states, pick_modules

    agent = talked_agent()
    found, missing = pick_modules({"agent": agent, "n": 3})
    assert found == {"agent": agent} and missing == []
    assert live_states(found) == {"agent": agent.state.model_dump(mode="json")}
