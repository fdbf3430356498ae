"""Class 1 of issue 12: two keys sharing AgentScope's file name never reach each other's data."""

from __future__ import annotations

from pathlib import Path

import pytest

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
