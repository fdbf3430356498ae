"""Class 3 of the hostile review: behaviour is never decided by data a caller can write.

Where a store reads a checkpoint from (its own history, AgentScope's latest
file, AgentScope's ``as_session`` table) is ``Checkpoint.origin``, set by the
store alone; ``metadata`` is the caller's and only ever stored and returned.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.bundle import copy_sessions
from tests.reliability._states import Box

INTERNAL_WORDS = ["json-file", "imported", "as_session"]


@pytest.mark.parametrize("kind", ["sqlite", "json"])
@pytest.mark.parametrize("word", INTERNAL_WORDS)
def test_a_caller_writing_an_internal_word_into_metadata_changes_nothing(
    tmp_path: Path, kind: str, word: str
) -> None:
    store = nbs.open_store(tmp_path / ("s.db" if kind == "sqlite" else "s"))
    store.save("a", box=Box(1), metadata={"source": word, "origin": word})
    store.save("a", box=Box(2))
    first = store.checkpoint("a@1")
    assert first.origin is None
    assert {k: first.metadata[k] for k in ("source", "origin")} == {"source": word, "origin": word}
    assert store.get_state("a@1") == {"box": {"value": 1}}
    assert store.get_state("a@2") == {"box": {"value": 2}}
    # Deleting and labelling treat it as the store's own checkpoint.
    store.label("a@1", "one")
    assert store.get_state("a@one") == {"box": {"value": 1}}
    assert store.delete("a@1") == 1
    assert [cp.seq for cp in store.history("a")] == [2]


def _agentscope_folder(folder: Path) -> None:
    folder.mkdir()
    for name, value in (("x", 1), ("u_y", 2)):
        (folder / f"{name}.json").write_text(json.dumps({"box": {"value": value}}), encoding="utf-8")


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_copying_agentscope_files_then_saving_keeps_each_checkpoint_its_own_state(tmp_path: Path, kind: str) -> None:
    src_folder = tmp_path / "agentscope"
    _agentscope_folder(src_folder)
    src = nbs.open_store(src_folder)
    assert {cp.origin for s in src.sessions() for cp in src.history(s.session)} == {"json-file"}
    dst = nbs.open_store(tmp_path / ("dst.db" if kind == "sqlite" else "dst"))
    copy_sessions(src, dst)
    for session, value in (("x", 1), ("u_y", 2)):
        copied = dst.checkpoint(f"{session}@1")
        assert copied.origin is None, "a copy is the destination's own checkpoint"
        dst.save(session, box=Box(value + 10))
        assert dst.get_state(f"{session}@1") == {"box": {"value": value}}
        assert dst.get_state(f"{session}@2") == {"box": {"value": value + 10}}


def test_an_agentscope_table_row_is_read_only_by_origin_not_metadata(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE as_session(session_id TEXT PRIMARY KEY, session_data JSON, created_at, updated_at)"
        )
        db.execute("INSERT INTO as_session VALUES ('legacy', ?, NULL, NULL)", (json.dumps({"box": {"value": 7}}),))
    store = nbs.open_store(path)
    legacy = store.checkpoint("legacy")
    assert legacy.origin == "as_session"
    assert "source" not in legacy.metadata
    assert store.get_state("legacy") == {"box": {"value": 7}}
    # A checkpoint of our own whose metadata names the table is still ours to delete.
    store.save("mine", box=Box(1), metadata={"source": "as_session"})
    assert store.delete("mine") == 1
