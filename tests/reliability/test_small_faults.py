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


@pytest.mark.parametrize("long_list", [False, True], ids=["small", "entry-pack"])
def test_a_copied_json_store_has_no_phantom_checkpoints(tmp_path: Path, long_list: bool) -> None:
    """``cp -r`` and ``git clone`` give every file a new mtime and the same bytes."""
    import shutil

    from tests.reliability._states import Box

    folder = tmp_path / "store"
    store = nbs.open_store(folder)
    value = [{"n": i} for i in range(40)] if long_list else {"n": 1}
    for i in range(2):
        store.save("s", box=Box(value), note=Box(i))
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)  # copies content; then every mtime moves, as a clone's does
    for p in copy.rglob("*"):
        os.utime(p, ns=(10**18, 10**18))
    copied = nbs.open_store(copy)
    assert [cp.seq for cp in copied.history("s")] == [1, 2]
    assert copied.get_state("s") == store.get_state("s")
    copied.save("s", box=Box(value), note=Box(2))
    assert [cp.seq for cp in copied.history("s")] == [1, 2, 3]

    # A real edit of the copy's latest file (same size, new content) is still seen.
    latest = copy / "s.json"
    data = latest.read_bytes()
    latest.write_bytes(data.replace(b'"value":2', b'"value":7').replace(b'"value": 2', b'"value": 7'))
    assert latest.read_bytes() != data
    assert [cp.seq for cp in copied.history("s")] == [1, 2, 3, 4]
