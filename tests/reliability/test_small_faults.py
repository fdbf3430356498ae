"""Class 7 of the hostile review: smaller faults."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import nb_sessions as nbs
from tests.reliability._states import Box


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_missing_parent_folders_of_a_new_json_store_are_owner_only(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = nbs.open_store(tmp_path / "a" / "b" / "store")
        store.save("s", box=Box(1))
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "store"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert store.get_state("s") == {"box": {"value": 1}}
