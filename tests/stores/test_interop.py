"""Existing AgentScope data opens as it is, and what nb_sessions writes AgentScope reads."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.errors import ConflictError
from tests.conftest import SAMPLE_FILE, Box


class Raw(nbs.StateModule):
    """Holds a whole module state verbatim (to load any AgentScope module without its class)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        self.state = dict(state_dict)


def agentscope_json_session_bytes(states: dict[str, Any]) -> str:
    """What AgentScope 1.0.21's JSONSession writes for the same states."""
    return json.dumps(states, ensure_ascii=False)


def test_a_folder_of_agentscope_files_is_a_json_store(tmp_path: Path, sample_state: dict[str, Any]) -> None:
    shutil.copy(SAMPLE_FILE, tmp_path / SAMPLE_FILE.name)
    store = nbs.open_store(tmp_path)
    [info] = store.sessions()
    assert (info.session, info.checkpoints) == ("agentscope_1.0.21_u42_bob", 1)
    [cp] = store.history(info.session)
    assert cp.modules == ("agent", "notebook", "custom")
    assert store.get_state(info.session) == sample_state
    modules = {"agent": Raw(), "notebook": Raw(), "custom": Raw()}
    store.load(info.session, **modules)
    assert modules["custom"].state["user_name"] == "Bob"


def test_first_save_keeps_the_agentscope_file_in_the_history(tmp_path: Path, sample_state: dict[str, Any]) -> None:
    (tmp_path / "bob.json").write_text(json.dumps(sample_state, ensure_ascii=False), encoding="utf-8")
    store = nbs.JSONStore(tmp_path)
    cp = store.save("bob", custom=Box("new"))
    assert (cp.seq, cp.parent) == (2, 1)
    assert store.get_state("bob@1") == sample_state
    assert json.loads((tmp_path / "bob.json").read_text(encoding="utf-8")) == {"custom": {"value": "new"}}


def test_a_file_rewritten_by_agentscope_becomes_a_checkpoint(tmp_path: Path) -> None:
    store = nbs.JSONStore(tmp_path)
    store.save("s", box=Box(1))
    (tmp_path / "s.json").write_text(json.dumps({"box": {"value": "by agentscope"}}), encoding="utf-8")
    history = store.history("s")
    assert [c.seq for c in history] == [1, 2]
    assert store.get_state("s") == {"box": {"value": "by agentscope"}}
    store.save("s", box=Box(3))
    assert [c.seq for c in store.history("s")] == [1, 2, 3]
    assert store.get_state("s@2") == {"box": {"value": "by agentscope"}}


@pytest.mark.parametrize("user_id", ["", "u42"])
async def test_json_session_writes_what_agentscope_writes(tmp_path: Path, user_id: str, sample_state: dict[str, Any]) -> None:
    modules = {name: Raw() for name in sample_state}
    for name, module in modules.items():
        module.state = sample_state[name]
    session = nbs.JSONSession(save_dir=tmp_path)
    await session.save_session_state("bob", user_id=user_id, **modules)
    name = f"{user_id}_bob.json" if user_id else "bob.json"
    written = (tmp_path / name).read_bytes().decode("utf-8", "surrogatepass")
    assert json.loads(written) == json.loads(agentscope_json_session_bytes(sample_state))
    assert list(json.loads(written)) == list(sample_state)
    assert "请用用户的语言回答" in written  # ensure_ascii=False, as AgentScope writes
    fresh = {name: Raw() for name in sample_state}
    await session.load_session_state("bob", user_id=user_id, **fresh)
    assert {n: m.state for n, m in fresh.items()} == sample_state
    missing = Raw()
    await session.load_session_state("nobody", user_id=user_id, agent=missing)
    assert missing.state == {}
    with pytest.raises(nbs.SessionNotFoundError):
        await session.load_session_state("nobody", allow_not_exist=False, agent=missing)


async def test_sqlite_session_is_a_drop_in(tmp_path: Path) -> None:
    session = nbs.SQLiteSession(tmp_path / "app.db")
    box = Box("hello")
    await session.save_session_state("alice", user_id="u1", box=box)
    box.value = "changed"
    await session.save_session_state("alice", user_id="u1", box=box)
    restored = Box()
    await session.load_session_state("alice", user_id="u1", box=restored, absent=Box("kept"))
    assert restored.value == "changed"
    assert len(session.store.history("u1/alice")) == 2


def make_as_session_db(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    """A database as AgentScope's SQLite session example creates it."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE as_session (session_id TEXT PRIMARY KEY, session_data JSON, "
            "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
        for sid, state in rows.items():
            db.execute(
                "INSERT INTO as_session (session_id, session_data) VALUES (?, ?)",
                (sid, json.dumps(state, ensure_ascii=False)),
            )
    db.close()


def test_an_as_session_database_opens_as_it_is(tmp_path: Path, sample_state: dict[str, Any]) -> None:
    path = tmp_path / "session.db"
    make_as_session_db(path, {"bob": sample_state, "carol": {"box": {"value": 1}}})
    before = sqlite3.connect(path).execute("SELECT * FROM as_session ORDER BY session_id").fetchall()
    store = nbs.open_store(path)
    assert {i.session: i.checkpoints for i in store.sessions()} == {"bob": 1, "carol": 1}
    assert store.get_state("bob") == sample_state
    box = Box()
    store.load("carol", box=box)
    assert box.value == 1
    cp = store.save("carol", box=Box(2))
    assert (cp.seq, cp.parent) == (2, 1)
    assert [c.seq for c in store.history("carol")] == [1, 2]
    assert store.get_state("carol@1") == {"box": {"value": 1}}
    with pytest.raises(ConflictError, match="never modifies"):
        store.delete("carol@1")
    assert store.prune("carol", keep_last=1, keep_labeled=False).removed == ()
    after = sqlite3.connect(path).execute("SELECT * FROM as_session ORDER BY session_id").fetchall()
    assert after == before


async def test_drop_in_ids_are_literal_like_agentscope(tmp_path: Path) -> None:
    session = nbs.JSONSession(tmp_path)
    await session.save_session_state("chat@work", user_id="bob@example.com", box=Box("hi"))
    assert (tmp_path / "bob@example.com_chat@work.json").exists()
    restored = Box()
    await session.load_session_state("chat@work", user_id="bob@example.com", box=restored)
    assert restored.value == "hi"
    with pytest.raises(nbs.InvalidIdError):
        await session.load_session_state("../escape", box=restored)  # even with allow_not_exist
    loose = Box()
    await session.save_session_state("extra", box=Box("x"), other=Box("y"))
    (tmp_path / "extra.json").write_text('{"box": {"value": "x", "unknown": 1}}', encoding="utf-8")
    with pytest.raises(nbs.StateMismatchError):
        await session.load_session_state("extra", box=loose)
    await session.load_session_state("extra", box=loose, strict=False)
    assert loose.value == "x"
