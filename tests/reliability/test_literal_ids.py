"""Class 2 of issue 12: ids holding '@' are keys, never parsed again as references.

Next to ``a@b`` (a literal AgentScope id) lives session ``a`` whose checkpoint
is labelled ``b``: every store-wide operation must keep them apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions import bundle
from nb_sessions.cli import main
from nb_sessions.stores.base import BaseStore, SessionKey, parse_ref

MAIL = SessionKey("", "a@b")  # literal: session id 'a@b'
USER_MAIL = SessionKey("u@x", "s@y")  # user id and session id hold '@'
PLAIN = SessionKey("", "a")  # its checkpoint is labelled 'b': 'a@b' as a reference


class _State:
    def __init__(self, value: str = "") -> None:
        self.value = value

    def state_dict(self) -> dict[str, str]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, str], strict: bool = True) -> None:
        self.value = state["value"]


@pytest.fixture(params=["json", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BaseStore:
    path = tmp_path / ("src" if request.param == "json" else "src.db")
    s = nbs.open_store(path)
    s.save(PLAIN, label="b", m=_State("plain one"))
    s.save(PLAIN, m=_State("plain two"))
    s.save(MAIL, m=_State("mail one"))
    s.save(MAIL, m=_State("mail two"))
    s.save(USER_MAIL, m=_State("user mail"))
    return s


def _values(store: BaseStore, key: SessionKey) -> list[str]:
    return [store.get_state(cp)["m"]["value"] for cp in store.history(key)]


def _all(store: BaseStore) -> dict[SessionKey, list[str]]:
    return {info.key: _values(store, info.key) for info in store.sessions()}


EXPECTED = {
    PLAIN: ["plain one", "plain two"],
    MAIL: ["mail one", "mail two"],
    USER_MAIL: ["user mail"],
}


def test_the_reference_form_of_a_key_round_trips() -> None:
    for key in (MAIL, USER_MAIL, PLAIN):
        assert parse_ref(str(key)).key == key
        ref = parse_ref(f"{key}@2")
        assert (ref.key, ref.seq) == (key, 2)
    assert str(MAIL) == "a\\@b"
    assert parse_ref("a@b").key == PLAIN  # unescaped, '@' still names a checkpoint


def test_checkpoint_refs_and_session_names_name_their_own_session(store: BaseStore) -> None:
    for info in store.sessions():
        assert store.history(info.session)[-1].key == info.key
        for cp in store.history(info.key):
            assert store.checkpoint(cp.ref).key == info.key
            assert store.get_state(cp.ref) == store.get_state(cp)


def test_export_all_then_import_keeps_sessions_apart(store: BaseStore, tmp_path: Path) -> None:
    out = tmp_path / "all.nbsb"
    assert main(["--store", store.location, "export", "--bundle", "-o", str(out), "--all"]) == 0
    assert main(["--store", str(tmp_path / "dst"), "import", str(out)]) == 0
    assert _all(nbs.open_store(tmp_path / "dst")) == EXPECTED


def test_export_and_import_one_session_by_its_escaped_name(store: BaseStore, tmp_path: Path) -> None:
    out = tmp_path / "mail.nbsb"
    assert main(["--store", store.location, "export", "--bundle", "-o", str(out), "a\\@b"]) == 0
    assert main(["--store", str(tmp_path / "dst"), "import", str(out), "a\\@b"]) == 0
    assert _all(nbs.open_store(tmp_path / "dst")) == {MAIL: EXPECTED[MAIL]}


def test_copy_all_keeps_sessions_apart(store: BaseStore, tmp_path: Path) -> None:
    dst = nbs.open_store(tmp_path / "copy.db")
    bundle.copy_sessions(store, dst)
    assert _all(dst) == EXPECTED
    assert main(["copy", store.location, str(tmp_path / "copy2")]) == 0
    assert _all(nbs.open_store(tmp_path / "copy2")) == EXPECTED


def test_check_counts_every_checkpoint_once(store: BaseStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", store.location, "--json", "check"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["sessions"], report["checkpoints"]) == (3, 5)
    assert main(["--store", store.location, "--json", "check", "a\\@b"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["sessions"], report["checkpoints"]) == (1, 2)


def test_prune_all_prunes_each_session_itself(store: BaseStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--store", store.location, "--json", "prune", "--keep-last", "1", "--drop-labeled"]) == 0
    removed = {r["session"]: r["removed"] for r in json.loads(capsys.readouterr().out)}
    assert removed == {"a": ["a@1"], "a\\@b": ["a\\@b@1"], "u\\@x/s\\@y": []}
    assert _all(store) == {PLAIN: ["plain two"], MAIL: ["mail two"], USER_MAIL: ["user mail"]}


def test_diff_against_the_previous_checkpoint_stays_in_the_session(store: BaseStore) -> None:
    d = nbs.diff(store, store.history(MAIL)[-1])
    assert (d.label_a, d.label_b) == ("a\\@b@1", "a\\@b@2")
    assert "plain" not in d.summary()


def test_panel_and_autosave_names_round_trip(store: BaseStore) -> None:
    # What the panel and the magics keep between calls is a session's reference string.
    for info in store.sessions():
        assert parse_ref(info.session).key == info.key
        assert _values(store, parse_ref(info.session).key) == EXPECTED[info.key]


# -- the magics and the panel ----------------------------------------------------------------


def _magic_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from tests.notebook.conftest import make_shell, ok

    sh = make_shell(tmp_path, monkeypatch)
    ok(sh, "%load_ext nb_sessions")
    ok(sh, "from tests.conftest import Box\nbox = Box('plain one')")
    return sh


def test_the_magics_never_cross_a_literal_id_and_its_look_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from tests.notebook.conftest import ok

    sh = _magic_shell(tmp_path, monkeypatch)
    try:
        ok(sh, "%save_session a box --label b")
        ok(sh, "box.value = 'mail one'")
        ok(sh, "%save_session a\\@b box")
        ok(sh, "box.value = 'mail two'")
        ok(sh, "%save_session a\\@b box")
        ok(sh, "%load_session a\\@b@1")
        assert sh.user_ns["box"].value == "mail one"
        ok(sh, "%load_session a@b")  # checkpoint 'b' of session 'a'
        assert sh.user_ns["box"].value == "plain one"
        ok(sh, "%load_session a\\@b")
        assert sh.user_ns["box"].value == "mail two"
        history = ok(sh, "%session_history a\\@b")
        assert len(history) == 2
        d = ok(sh, "%session_diff a\\@b@1 a\\@b@2")
        assert (d.label_a, d.label_b) == ("a\\@b@1", "a\\@b@2")
        ok(sh, "%autosave_session a\\@b box")
        ok(sh, "box.value = 'autosaved'")
        ok(sh, "%autosave_session off")
        store = nbs.open_store(tmp_path / "nb_sessions.db")
        def boxes(key: SessionKey) -> list[Any]:
            return [store.get_state(cp)["box"] for cp in store.history(key)]

        assert len(boxes(PLAIN)) == 1
        assert len(boxes(MAIL)) == 3
        assert "autosaved" in repr(boxes(MAIL)[-1])
    finally:
        sh.run_line_magic("unload_ext", "nb_sessions")
        InteractiveShell.clear_instance()


def test_the_panel_shows_the_selected_sessions_own_history(store: BaseStore) -> None:
    from nb_sessions.notebook.widgets import SessionPanel

    panel = SessionPanel(store, namespace={})
    for info in store.sessions():
        panel.refresh(info.session)
        assert panel.session == info.session
        seqs = [seq for _, seq in panel._checkpoints.options]
        assert sorted(seqs) == [cp.seq for cp in store.history(info.key)]
        assert panel.selected is not None
        assert store.checkpoint(panel.selected).key == info.key
