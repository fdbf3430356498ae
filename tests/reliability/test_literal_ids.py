"""Class 2 of the hostile review: ids are literal, and store-wide operations pass keys.

AgentScope takes session and user ids literally, and e-mail addresses are common
ids. A session ``a@b`` sits here next to a session ``a`` that has a checkpoint
labelled ``b``: parsed again as a reference, ``a@b`` would be that checkpoint.
Every store-wide operation must keep them apart.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions import bundle, cli
from nb_sessions.stores.base import SessionKey
from tests.reliability._states import Box

LITERAL = SessionKey("", "a@b")
USER = SessionKey("me@example.org", "chat")
PLAIN = SessionKey("", "a")


def _store(tmp_path: Path, kind: str) -> nbs.BaseStore:
    store = nbs.open_store(tmp_path / ("s.db" if kind == "sqlite" else "js"))
    store.save(PLAIN, note=Box("a-1"))
    store.save(PLAIN, label="b", note=Box("a-2, labelled b"))
    store.save(PLAIN, note=Box("a-3"))
    for i in range(3):
        store.save(LITERAL, note=Box(f"a@b-{i + 1}"))
    store.save(USER, note=Box("user chat"))
    return store


def _notes(store: nbs.BaseStore, key: SessionKey) -> list[str]:
    return [store.get_state(cp)["note"]["value"] for cp in store.history(key)]


def _cli(store: nbs.BaseStore, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["--store", store.location, *args])
    return code, out.getvalue()


@pytest.fixture(params=["sqlite", "json"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> nbs.BaseStore:
    return _store(tmp_path, request.param)


def test_export_all_and_import_keep_every_session_apart(store: nbs.BaseStore, tmp_path: Path) -> None:
    code, _ = _cli(store, "export", "--bundle", "--all", "-o", str(tmp_path / "all.json"))
    assert code == 0
    fresh = nbs.open_store(tmp_path / "fresh.db")
    bundle.import_bundle(fresh, bundle.read_bundle(tmp_path / "all.json"))
    for key in (PLAIN, LITERAL, USER):
        assert _notes(fresh, key) == _notes(store, key), key


def test_copy_keeps_every_session_apart(store: nbs.BaseStore, tmp_path: Path) -> None:
    fresh = nbs.open_store(tmp_path / "copy")
    bundle.copy_sessions(store, fresh)
    assert {s.key for s in fresh.sessions()} == {PLAIN, LITERAL, USER}
    for key in (PLAIN, LITERAL, USER):
        assert _notes(fresh, key) == _notes(store, key), key


def test_check_counts_each_session_once(store: nbs.BaseStore) -> None:
    code, out = _cli(store, "--json", "check")
    assert code == 0, out
    report = json.loads(out)
    assert (report["sessions"], report["checkpoints"], report["problems"]) == (3, 7, [])


def test_prune_of_every_session_prunes_each_by_its_key(store: nbs.BaseStore) -> None:
    code, out = _cli(store, "--json", "prune", "--keep-last", "1", "--drop-labeled")
    assert code == 0, out
    assert [cp.seq for cp in store.history(LITERAL)] == [3]
    assert [cp.seq for cp in store.history(PLAIN)] == [3]  # not spared or hit through "a@b"
    assert _notes(store, LITERAL) == ["a@b-3"]
    assert _notes(store, USER) == ["user chat"]


def test_diff_of_a_literal_session_compares_its_own_checkpoints(store: nbs.BaseStore) -> None:
    last = store.history(LITERAL)[-1]
    d = nbs.diff(store, last)  # against the checkpoint before it, found by key
    assert "@2" in d.label_a and "@3" in d.label_b
    changed = d.keys.to_string()
    assert "a@b-2" in changed and "a@b-3" in changed
    assert "a-2" not in changed.replace("a@b-2", "") and "labelled b" not in changed
