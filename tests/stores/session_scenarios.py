"""AgentScope 1.0.21's own session tests, as scenarios both sides can run.

Mirrors ``tests/session_test.py`` and the ``SessionBase`` behaviours of
``tests/tablestore_session_test.py`` of AgentScope v1.0.21. This file imports
neither nb_sessions nor AgentScope: :func:`run_all` is given a session factory
and a ``StateModule`` base class, so ``test_agentscope_session_suite.py`` runs
it on our drop-ins and, in AgentScope's own venv, on ``agentscope.session.JSONSession``.
Each scenario returns an outcome (states, exception kind, files written) to compare.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

NAME, PROMPT = "Friday", "A helpful assistant."


def _agent_class(base: type) -> Any:
    class Agent(base):  # type: ignore[valid-type,misc]
        """AgentScope's test ``MyAgent``: two registered attributes and a nested module."""

        def __init__(self) -> None:
            super().__init__()
            self.name = NAME
            self.sys_prompt = PROMPT
            self.register_state("name")
            self.register_state("sys_prompt")

    return Agent


def _error(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return "ValueError" if isinstance(exc, ValueError) else type(exc).__name__


async def _scenarios(session: Any, base: type) -> dict[str, Any]:
    agent_class = _agent_class(base)
    out: dict[str, Any] = {}

    def look(*agents: Any) -> list[Any]:
        return [[a.name, a.sys_prompt] for a in agents]

    # session_test.test_session_base: save two modules, change them, load: both restored.
    a1, a2 = agent_class(), agent_class()
    a2.name = "Bob"
    await session.save_session_state(session_id="user_1", agent1=a1, agent2=a2)
    a1.name, a2.sys_prompt = "Changed", "Changed prompt"
    await session.load_session_state(session_id="user_1", agent1=a1, agent2=a2)
    out["round_trip"] = look(a1, a2)

    # tablestore test_save_and_load_session_state: the same with a user id.
    a = agent_class()
    await session.save_session_state(session_id="sess_1", user_id="user_1", agent=a)
    a.name = "Changed"
    await session.load_session_state(session_id="sess_1", user_id="user_1", agent=a)
    out["round_trip_user"] = look(a)

    # test_load_before_save_session_not_exist: allow_not_exist=True loads nothing, raises nothing.
    a = agent_class()
    a.name = "Untouched"
    err: BaseException | None = None
    try:
        await session.load_session_state(
            session_id="nonexistent", user_id="user_1", allow_not_exist=True, agent=a
        )
    except Exception as exc:
        err = exc
    out["missing_allowed"] = [_error(err), look(a)]

    # test_load_before_save_raises_when_not_allowed: a ValueError, the module untouched.
    err = None
    try:
        await session.load_session_state(
            session_id="nonexistent", user_id="user_1", allow_not_exist=False, agent=a
        )
    except Exception as exc:
        err = exc
    out["missing_refused"] = [_error(err), look(a)]

    # test_lifecycle_load_save_load: load (missing), save, change, load.
    a = agent_class()
    await session.load_session_state(session_id="life", user_id="user_1", agent=a)
    before = look(a)
    await session.save_session_state(session_id="life", user_id="user_1", agent=a)
    a.name, a.sys_prompt = "Mutated", "Mutated prompt"
    await session.load_session_state(session_id="life", user_id="user_1", agent=a)
    out["lifecycle"] = [before, look(a)]

    # test_save_overwrites_previous_state: the second save is what loads.
    a = agent_class()
    await session.save_session_state(session_id="over", user_id="user_1", agent=a)
    a.name, a.sys_prompt = "UpdatedName", "Updated prompt"
    await session.save_session_state(session_id="over", user_id="user_1", agent=a)
    a.name = a.sys_prompt = "Garbage"
    await session.load_session_state(session_id="over", user_id="user_1", agent=a)
    out["overwrite"] = look(a)

    # test_load_partial_modules: load one of two saved modules; a module the
    # session holds no state for (JSONSession's ``if name in states``) is left alone.
    a1, a2, extra = agent_class(), agent_class(), agent_class()
    a1.name, a2.name = "Agent1", "Agent2"
    await session.save_session_state(session_id="part", user_id="user_1", agent1=a1, agent2=a2)
    loaded = agent_class()
    extra.name = "Extra"
    await session.load_session_state(
        session_id="part", user_id="user_1", agent1=loaded, extra=extra
    )
    out["partial"] = look(loaded, extra)
    return out


def run_all(make_session: Callable[[], Any], base: type) -> dict[str, Any]:
    """Run every scenario on a fresh session; the outcomes as JSON-able data."""
    return asyncio.run(_scenarios(make_session(), base))


def json_files(folder: str) -> dict[str, Any]:
    """The ``*.json`` files at the top of ``folder`` (what JSONSession writes), parsed."""
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                found[name] = json.load(f)
    return found
