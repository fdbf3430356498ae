"""Class 1 of issue 12: two keys sharing AgentScope's file name never reach each other's data."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from nb_sessions.errors import ConflictError
from nb_sessions.stores.base import SessionKey
from nb_sessions.stores.json_store import JSONStore

OWNER = SessionKey("u", "x_s")  # AgentScope's file: u_x_s.json
OTHER = SessionKey("", "u_x_s")  # the same file name, another session


class _State:
    def __init__(self, value: str) -> None:
        self.value = value

    def state_dict(self) -> dict[str, str]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, str], strict: bool = True) -> None:
        self.value = state["value"]


def _saved(tmp_path: Path) -> JSONStore:
    store = JSONStore(tmp_path)
    store.save(OWNER, m=_State("owner's secret"))
    assert (tmp_path / "u_x_s.json").exists()
    return store


def test_colliding_key_does_not_read_the_owners_file(tmp_path: Path) -> None:
    store = _saved(tmp_path)
    with pytest.raises(LookupError):
        store.history(OTHER.session_id, user_id=OTHER.user_id)
    with pytest.raises(LookupError):
        store.get_state(OTHER)


def test_colliding_key_does_not_delete_the_owners_session(tmp_path: Path) -> None:
    store = _saved(tmp_path)
    with pytest.raises(LookupError):
        store.delete(OTHER)
    assert store.get_state(OWNER)["m"] == {"value": "owner's secret"}
    assert len(store.history(OWNER.session_id, user_id=OWNER.user_id)) == 1


def test_a_colliding_key_cannot_save_and_the_error_names_both(tmp_path: Path) -> None:
    store = _saved(tmp_path)
    with pytest.raises(ConflictError) as err:
        store.save(OTHER, m=_State("other"))
    assert "'u_x_s'" in str(err.value) and "x_s" in str(err.value) and "choose another id" in str(err.value)
    assert store.get_state(OWNER)["m"] == {"value": "owner's secret"}


class _FoldingStore(JSONStore):
    """A JSON store on a simulated macOS file system: names are case-folded and NFD-normalised.

    Every path the store builds goes through ``_name``, so two names the file
    system would take for one reach one file here too, as on APFS/HFS+.
    """

    def _name(self, key: SessionKey) -> str:
        return unicodedata.normalize("NFD", super()._name(key)).casefold()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (SessionKey("", "Report"), SessionKey("", "report")),
        (SessionKey("", "caf\u00e9"), SessionKey("", "cafe\u0301")),  # NFC and NFD spellings
        (SessionKey("Ann", "s"), SessionKey("ann", "s")),
    ],
)
def test_a_folding_file_system_never_merges_two_sessions(
    tmp_path: Path, first: SessionKey, second: SessionKey
) -> None:
    store = _FoldingStore(tmp_path)
    store.save(first, m=_State("first's"))
    with pytest.raises(LookupError):
        store.get_state(second)
    with pytest.raises(LookupError):
        store.history(second.session_id, user_id=second.user_id)
    with pytest.raises(ConflictError):
        store.save(second, m=_State("second's"))
    with pytest.raises(LookupError):
        store.delete(second)
    assert store.get_state(first)["m"] == {"value": "first's"}
    assert [(i.user_id, i.session_id) for i in store.sessions()] == [tuple(first)]
    assert [c.seq for c in store.history(first.session_id, user_id=first.user_id)] == [1]
