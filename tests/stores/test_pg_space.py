"""Where a PostgreSQL store's space goes: the same accounting as the file stores, disk bytes from the server."""

from __future__ import annotations

import json
from pathlib import Path

import nb_sessions as nbs
from nb_sessions.agent import Msg, ScriptedAgent
from tests.test_cli import run as cli


async def test_ten_more_messages_cost_about_their_bytes_not_the_conversation(pg_url: str) -> None:
    store = nbs.open_store(pg_url)
    agent = ScriptedAgent("Friday")
    for i in range(200):
        await agent.memory.add(Msg("user", f"message {i} " + "x" * 500, "user"))
    await store.asave("alice", agent=agent)
    first = await store.astats()
    for i in range(10):
        await agent.memory.add(Msg("user", f"more {i} " + "y" * 500, "user"))
    await store.asave("alice", agent=agent)
    second = await store.astats()
    grown = second.total_bytes - first.total_bytes
    assert first.total_bytes > 200 * 500  # the conversation is counted
    assert 10 * 500 < grown < 40 * 500  # the second checkpoint costs its ten messages, not all 210
    rows = second.checkpoints.set_index("checkpoint")
    assert rows.loc["alice@2", "shared_bytes"] > 190 * 500  # the first 200 messages, shared with alice@1


async def test_disk_bytes_come_from_the_server_and_vacuum_reports_them(pg_url: str) -> None:
    store = nbs.open_store(pg_url)
    empty = (await store.astats()).disk_bytes
    assert empty > 0  # the tables and indexes exist once the store is opened for writing
    agent = ScriptedAgent("Friday")
    for i in range(300):
        await agent.memory.add(Msg("user", f"message {i} " + "z" * 1000, "user"))
    await store.asave("alice", agent=agent)
    full = (await store.astats()).disk_bytes
    assert full > empty + 300 * 500  # TOAST compresses; the growth is still there
    await store.adelete("alice")
    result = await store.avacuum()
    assert result > 300 * 1000  # the logical bytes of the entries nothing refers to any more
    assert result.bytes_before is not None and result.bytes_before >= full - 8192 * 8
    assert (await store.astats()).total_bytes == 0


async def test_du_on_a_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    store = nbs.open_store(pg_url)
    agent = ScriptedAgent("Friday")
    await agent(Msg("user", "weather in Paris", "user"))
    store.save("alice", agent=agent)
    await agent(Msg("user", "what is 6*7", "user"))
    store.save("alice", agent=agent)
    table = cli(tmp_path, "--store", pg_url, "du")
    assert table.returncode == 0, table.stderr
    assert "alice" in table.stdout and "shared between checkpoints" in table.stdout
    data = json.loads(cli(tmp_path, "--store", pg_url, "du", "--json").stdout)
    assert data["disk_bytes"] > 0 and data["shared_bytes"] > 0
    assert len(data["checkpoints"]) == 2
