"""``nbs.PostgresSession``: AgentScope's ``SessionBase`` API over a team's PostgreSQL database."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.stores import SessionKey

from ..conftest import Box


def test_two_machines_share_a_session_through_the_database(pg_url: str) -> None:
    laptop, server = nbs.PostgresSession(pg_url), nbs.PostgresSession(pg_url)
    memory = InMemoryMemory()
    asyncio.run(memory.add(Msg("user", "hello from the laptop", "user")))
    asyncio.run(laptop.save_session_state("chat", user_id="ann", memory=memory))

    # Another process (a second machine, as far as the database can tell) continues it.
    script = textwrap.dedent(
        f"""
        import asyncio
        import nb_sessions as nbs
        from nb_sessions.agent import InMemoryMemory, Msg

        async def main():
            session = nbs.PostgresSession({pg_url!r})
            memory = InMemoryMemory()
            await session.load_session_state("chat", user_id="ann", memory=memory)
            await memory.add(Msg("assistant", "hello from the server", "assistant"))
            await session.save_session_state("chat", user_id="ann", memory=memory)

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    restored = InMemoryMemory()
    asyncio.run(server.load_session_state("chat", user_id="ann", memory=restored))
    texts = [m.get_text_content() for m in asyncio.run(restored.get_memory())]
    assert texts == ["hello from the laptop", "hello from the server"]
    # Every save is a checkpoint, numbered without gaps whichever machine wrote it.
    assert [c.seq for c in laptop.store.history(SessionKey("ann", "chat"))] == [1, 2]


def test_missing_session_is_skipped_or_a_value_error_as_in_agentscope(pg_url: str) -> None:
    session = nbs.PostgresSession(pg_url)
    box = Box("untouched")
    asyncio.run(session.load_session_state("nobody", box=box))
    assert box.value == "untouched"
    with pytest.raises(ValueError) as info:
        asyncio.run(session.load_session_state("nobody", allow_not_exist=False, box=box))
    assert isinstance(info.value, nbs.SessionNotFoundError)
    assert "nobody" in str(info.value)
    assert box.value == "untouched"


def test_the_url_is_kept_and_its_password_is_not_shown(pg_url: str) -> None:
    session = nbs.PostgresSession(pg_url)
    assert session.url == pg_url
    assert isinstance(session.store, nbs.PostgresStore)
    other = nbs.PostgresSession("postgresql://someone:s3cret@127.0.0.1:5432/team")
    assert "s3cret" not in other.store.location and "s3cret" not in repr(other.store)
