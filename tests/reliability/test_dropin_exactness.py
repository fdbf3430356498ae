"""Class 8 of issue 12: the AgentScope drop-ins behave as AgentScope 1.0.21 does.

AgentScope's ``SessionBase.load_session_state(session_id, user_id="",
allow_not_exist=True, **state_modules_mapping)`` raises ``ValueError`` for a
missing session, has no ``strict`` keyword (a module may be called that), and
its classes hand out plain dicts and lists from ``state_dict()``/``to_dict()``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg, PlanNotebook, ScriptedAgent, Toolkit


class _Box:
    def __init__(self, value: Any = None) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        self.value = state["value"]


def _sessions(tmp_path: Path) -> list[nbs.JSONSession | nbs.SQLiteSession]:
    return [nbs.JSONSession(tmp_path / "json"), nbs.SQLiteSession(tmp_path / "s.db")]


def test_missing_session_without_allow_not_exist_is_a_value_error_and_ours(tmp_path: Path) -> None:
    for session in _sessions(tmp_path):
        with pytest.raises(ValueError) as info:
            asyncio.run(session.load_session_state("nobody", allow_not_exist=False, box=_Box()))
        assert isinstance(info.value, nbs.NbSessionsError)
        assert isinstance(info.value, nbs.SessionNotFoundError)
        assert "nobody" in str(info.value)
        asyncio.run(session.load_session_state("nobody", box=_Box()))  # allowed by default


def test_a_module_named_strict_is_saved_and_loaded(tmp_path: Path) -> None:
    for session in _sessions(tmp_path):
        asyncio.run(session.save_session_state("s", strict=_Box("strict's own"), other=_Box(1)))
        strict, other = _Box(), _Box()
        asyncio.run(session.load_session_state("s", strict=strict, other=other))
        assert (strict.value, other.value) == ("strict's own", 1)
        # The nb_sessions keyword still works when given a bool.
        lax = _Box()
        asyncio.run(session.load_session_state("s", strict=False, other=lax))
        assert lax.value == 1


def _exact_plain(value: Any, path: str = "") -> list[str]:
    """Dotted paths of every container that is not exactly a dict or list."""
    bad = []
    if isinstance(value, dict):
        if type(value) is not dict:
            bad.append(f"{path}: {type(value).__name__}")
        for k, v in value.items():
            bad += _exact_plain(v, f"{path}.{k}")
    elif isinstance(value, list):
        if type(value) is not list:
            bad.append(f"{path}: {type(value).__name__}")
        for i, v in enumerate(value):
            bad += _exact_plain(v, f"{path}[{i}]")
    return bad


async def _talked() -> ScriptedAgent:
    agent = ScriptedAgent("Friday")
    await agent(Msg("user", "what is 6*7", "user"))
    await agent(Msg("user", "plan to visit Paris", "user"))
    return agent


def _objects() -> dict[str, Any]:
    agent = asyncio.run(_talked())
    msg = Msg("user", [{"type": "text", "text": "hi"}], "user", metadata={"tags": ["a"]})
    memory = InMemoryMemory()
    asyncio.run(memory.add(msg))
    return {
        "msg": msg.to_dict(),
        "memory": memory.state_dict(),
        "agent": agent.state_dict(),
        "plan": (agent.plan_notebook if hasattr(agent, "plan_notebook") else PlanNotebook()).state_dict(),
        "toolkit": (agent.toolkit if hasattr(agent, "toolkit") else Toolkit()).state_dict(),
    }


def test_state_dicts_are_plain_dicts_and_lists() -> None:
    for name, state in _objects().items():
        assert _exact_plain(state) == [], name
        yaml.safe_dump(state)  # refuses dict and list subclasses


def test_state_dicts_do_not_alias_live_state() -> None:
    msg = Msg("user", [{"type": "text", "text": "hi"}], "user", metadata={"tags": ["a"]})
    memory = InMemoryMemory()
    asyncio.run(memory.add(msg))
    rev = msg.rev
    out = msg.to_dict()
    out["content"][0]["text"] = "changed"
    out["metadata"]["tags"].append("b")
    state = memory.state_dict()
    state["content"][0][0]["content"][0]["text"] = "changed too"
    assert msg.content[0]["text"] == "hi"
    assert msg.metadata == {"tags": ["a"]}
    assert msg.rev == rev


def test_saves_after_handing_out_state_still_see_in_place_edits(tmp_path: Path) -> None:
    # The fast save path keeps tracking live edits: handing out plain copies must not break it.
    store = nbs.open_store(tmp_path / "s.db")
    agent = asyncio.run(_talked())
    store.save("s", agent=agent)
    agent.state_dict()
    last = agent.memory.content[-1][0]
    assert isinstance(last.content, list)
    last.content[-1]["text"] = "edited in place"
    store.save("s", agent=agent)
    saved = store.get_state("s")["agent"]["memory"]["content"][-1][0]["content"][-1]["text"]
    assert saved == "edited in place"
