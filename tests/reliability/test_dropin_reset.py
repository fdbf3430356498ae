"""Class 8 of the hostile review, one point: deleting ``<session>.json`` resets a drop-in session.

AgentScope's JSONSession then loads nothing (or raises with
``allow_not_exist=False``); nb_sessions' drop-in does the same, while the
history stays in the store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import nb_sessions as nbs
from tests.reliability._states import Box


def test_deleting_the_latest_file_resets_a_drop_in_session_as_agentscope_does(tmp_path: Path) -> None:
    session = nbs.JSONSession(tmp_path)
    asyncio.run(session.save_session_state("s", box=Box("old")))
    (tmp_path / "s.json").unlink()
    box = Box("fresh")
    asyncio.run(session.load_session_state("s", box=box))  # allow_not_exist=True: nothing restored
    assert box.value == "fresh"
    with pytest.raises(LookupError):
        asyncio.run(session.load_session_state("s", allow_not_exist=False, box=box))
    assert box.value == "fresh"
    # The history stays, and the store still loads its last checkpoint by name.
    assert [c.seq for c in session.store.history("s")] == [1]
    assert session.store.get_state("s") == {"box": {"value": "old"}}
    asyncio.run(session.save_session_state("s", box=Box("new")))
    asyncio.run(session.load_session_state("s", box=box))
    assert box.value == "new"
    assert [c.seq for c in session.store.history("s")] == [1, 2]
