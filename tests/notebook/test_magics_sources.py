"""The magics on an AgentScope app's own storage, addressed by URL (read-only)."""

from __future__ import annotations

from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

from tests.agentscope2 import AgentState, AsyncSQLAlchemyStorage
from tests.stores.test_agentscope_sources import dumped, fill_storage

from .conftest import ok
from .test_magics import usage_error


async def test_magics_read_an_agentscope_database_by_url(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    path = tmp_path / "app.db"
    async with AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{path}") as storage:
        expected = await fill_storage(storage)
    before = path.read_bytes()
    (user, sid), state = sorted(expected.items())[0]
    url = f"agentscope+sqlite:///{path}"
    frame = ok(shell, f"%sessions --store {url}")
    assert set(frame["session"]) == {f"{u}/{s}" for u, s in expected}
    ok(shell, "from agentscope.state import AgentState; agent = AgentState()")
    ok(shell, f"%load_session {user}/{sid} agent --store {url}")
    live = shell.user_ns["agent"]
    assert isinstance(live, AgentState) and dumped(live) == dumped(state)
    assert "read-only" in usage_error(shell, f"%save_session {user}/{sid} agent --store {url}")
    ok(shell, f"%config SessionMagics.store = '{url}'")
    assert len(ok(shell, f"%session_history {user}/{sid}")) == 1
    assert path.read_bytes() == before
