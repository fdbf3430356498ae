"""VersionedStorage: an AgentScope 2.0.11 app's storage wrapped in one line gains history and rollback.

Driven with the real 2.0.11 ``AsyncSQLAlchemyStorage`` (on SQLite) and
``RedisStorage`` (on a throwaway redis-server).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

import nb_sessions as nbs
from nb_sessions.errors import StateError, StoreError
from nb_sessions.stores import SessionKey
from nb_sessions.versioned import FORWARDED, VersionedStorage
from tests.agentscope2 import (
    AgentState,
    AsyncSQLAlchemyStorage,
    RedisStorage,
    SessionConfig,
    StorageBase,
)
from tests.conftest import Box
from tests.servers import redis_server, redis_url  # noqa: F401 - fixtures
from tests.stores.test_agentscope_sources import agent_state, dumped

CONFIG = SessionConfig(workspace_id="ws-1", name="trip planning")


def test_every_storage_base_method_is_forwarded() -> None:
    abstract = StorageBase.__abstractmethods__
    assert len(abstract) == 53  # AgentScope 2.0.11's count: a new release must be looked at
    assert abstract <= set(FORWARDED)
    assert len(FORWARDED) == 53 + 15 + 1  # + the concrete channel/SOP methods + aclose
    assert not VersionedStorage.__abstractmethods__
    assert nbs.VersionedStorage is VersionedStorage


@pytest.mark.parametrize(
    "name", sorted(set(FORWARDED) - {"upsert_session", "update_session_state"})
)
async def test_a_method_reaches_the_apps_storage_with_its_arguments(
    name: str, tmp_path: Path
) -> None:
    inner = mock.AsyncMock(spec=StorageBase)
    wrapped = VersionedStorage(inner, tmp_path / "history.db")
    getattr(inner, name).return_value = sentinel = object()
    assert await getattr(wrapped, name)("u1", "x", flag=True) is sentinel
    getattr(inner, name).assert_awaited_once_with("u1", "x", flag=True)
    assert not (tmp_path / "history.db").exists()  # nothing but state writes touches the store


async def test_entering_and_leaving_reach_the_apps_storage(tmp_path: Path) -> None:
    inner = mock.AsyncMock(spec=StorageBase)
    async with VersionedStorage(inner, tmp_path / "h.db") as wrapped:
        assert isinstance(wrapped, StorageBase)
        inner.__aenter__.assert_awaited_once()
    inner.__aexit__.assert_awaited_once_with(None, None, None)


async def run_app(storage: StorageBase) -> tuple[str, list[AgentState]]:
    """What an app does across three turns: create the session, then update its state twice."""
    states = [agent_state(f"turn {i}") for i in range(3)]
    record = await storage.upsert_session("u1", "agent-a", CONFIG, state=states[0])
    await storage.update_session_state("u1", "agent-a", record.id, states[1])
    await storage.update_session_state(
        user_id="u1", agent_id="agent-a", session_id=record.id, state=states[2]
    )
    return record.id, states


async def check_history_and_rollback(wrapped: VersionedStorage) -> None:
    sid, states = await run_app(wrapped)
    store, key = wrapped.store, SessionKey("u1", sid)
    history = await wrapped.history("u1", sid)
    assert [c.seq for c in history] == [1, 2, 3]
    assert [c.metadata["via"] for c in history] == [
        "upsert_session",
        "update_session_state",
        "update_session_state",
    ]
    assert history[0].metadata["config"]["name"] == "trip planning"
    for cp, state in zip(history, states, strict=True):
        assert cp.metadata["agent_id"] == "agent-a"
        assert await store.aget_state(cp) == {"agent": dumped(state)}
    # Roll back to the first turn: written through the app's storage, recorded as checkpoint 4.
    record = await wrapped.rollback("u1", sid, 1)
    assert dumped(record.state) == dumped(states[0])
    got = await wrapped.storage.get_session("u1", "agent-a", sid)
    assert got is not None and dumped(got.state) == dumped(states[0])
    latest = (await wrapped.history("u1", sid))[-1]
    assert (latest.seq, latest.metadata["rolled_back_to"]) == (4, f"{key}@1")
    # Deleting the agent cascades to its sessions in the app; the history stays and brings it back.
    assert await wrapped.delete_agent("u1", "agent-a") in (True, False)
    assert await wrapped.get_session("u1", "agent-a", sid) is None
    assert len(await wrapped.history("u1", sid)) == 4
    record = await wrapped.rollback("u1", sid, "~2")  # checkpoint 2
    assert (record.id, record.config.name) == (sid, "trip planning")
    got = await wrapped.get_session("u1", "agent-a", sid)
    assert got is not None and dumped(got.state) == dumped(states[1])


async def test_sqlalchemy_storage_gains_history_and_rollback(tmp_path: Path) -> None:
    app = AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with VersionedStorage(app, tmp_path / "history.db") as wrapped:
        await check_history_and_rollback(wrapped)


async def test_redis_storage_gains_history_and_rollback(redis_url: str, tmp_path: Path) -> None:  # noqa: F811
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    app = RedisStorage(host="127.0.0.1", port=port)
    async with VersionedStorage(app, tmp_path / "h.db") as wrapped:
        assert wrapped.key_config is app.key_config  # backend attributes read through
        await check_history_and_rollback(wrapped)


async def test_a_failed_checkpoint_never_undoes_the_apps_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    (tmp_path / "a-file").write_text("not a folder")
    unreachable = tmp_path / "a-file" / "history.db"  # a store that cannot be made
    async with VersionedStorage(app, unreachable) as wrapped:
        with caplog.at_level(logging.ERROR, logger="nb_sessions"):
            record = await wrapped.upsert_session(
                "u1", "agent-a", CONFIG, state=agent_state("kept")
            )
        assert wrapped.failures == 1
        assert "its checkpoint in" in caplog.text and record.id in caplog.text
        got = await app.get_session("u1", "agent-a", record.id)
        assert got is not None and got.state.context[-1].content[0].text == "kept"
    strict = VersionedStorage(app, unreachable, on_checkpoint_error="raise")
    async with strict:
        with pytest.raises(StoreError, match="is not a folder"):
            await strict.update_session_state("u1", "agent-a", record.id, agent_state("also kept"))
        got = await app.get_session("u1", "agent-a", record.id)
        assert got is not None and got.state.context[-1].content[0].text == "also kept"


async def test_rollback_refuses_a_state_that_is_no_agent_state(tmp_path: Path) -> None:
    app = AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with VersionedStorage(app, tmp_path / "h.db") as wrapped:
        record = await wrapped.upsert_session("u1", "agent-a", CONFIG, state=agent_state("real"))
        before = await app.get_session("u1", "agent-a", record.id)
        # A 1.x-shaped module under the same name would validate into an empty AgentState.
        wrapped.store.save(
            SessionKey("u1", record.id),
            agent=Box({"content": []}),
            metadata={"agent_id": "agent-a"},
        )
        with pytest.raises(StateError, match=r"not an AgentScope 2\.x AgentState"):
            await wrapped.rollback("u1", record.id, 2)
        after = await app.get_session("u1", "agent-a", record.id)
        assert (
            before is not None and after is not None and dumped(after.state) == dumped(before.state)
        )


async def test_concurrent_turns_reach_the_history_in_the_apps_order(tmp_path: Path) -> None:
    app = AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with VersionedStorage(app, tmp_path / "h.db") as wrapped:
        record = await wrapped.upsert_session("u1", "agent-a", CONFIG, state=agent_state("start"))
        turns = [agent_state(f"turn {i}") for i in range(8)]
        await asyncio.gather(
            *(wrapped.update_session_state("u1", "agent-a", record.id, s) for s in turns)
        )
        history = await wrapped.history("u1", record.id)
        assert len(history) == 9
        got = await app.get_session("u1", "agent-a", record.id)
        assert got is not None
        assert await wrapped.store.aget_state(history[-1]) == {"agent": dumped(got.state)}
        assert not wrapped._locks  # no lock outlives the writes that held it


async def test_a_write_the_app_refuses_records_nothing(tmp_path: Path) -> None:
    app = AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with VersionedStorage(app, tmp_path / "h.db") as wrapped:
        with pytest.raises(KeyError):
            await wrapped.update_session_state("u1", "agent-a", "no-such-session", agent_state("x"))
        assert wrapped.store.sessions() == [] and wrapped.failures == 0


def test_without_agentscope_the_wrapper_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['agentscope'] = None\n"
        "import nb_sessions as nbs\n"
        "try:\n    nbs.VersionedStorage\n"
        "except nbs.MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'agentscope[service,storage-sql]'" in out
