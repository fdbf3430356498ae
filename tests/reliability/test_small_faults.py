"""Class 7 of the hostile review: smaller faults."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.stores.base import SessionKey
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


class _CountingSeqs(list[int]):
    """A list of seqs that counts how often the store walks it."""

    walks = 0

    def __iter__(self) -> Iterator[int]:
        type(self).walks += 1
        return super().__iter__()


def test_json_prune_walks_the_doomed_checkpoints_a_constant_number_of_times(tmp_path: Path) -> None:
    store = nbs.JSONStore(tmp_path / "store")
    for i in range(60):
        store.save("s", box=Box(i))
    doomed = _CountingSeqs(range(1, 51))
    _CountingSeqs.walks = 0
    assert asyncio.run(store._delete(SessionKey("", "s"), doomed)) == 50
    # Linear: the list is walked a fixed number of times, not once per checkpoint of the session.
    assert _CountingSeqs.walks <= 2, _CountingSeqs.walks
    assert [c.seq for c in store.history("s")] == list(range(51, 61))


@pytest.mark.parametrize("long", [False, True])
def test_copying_a_json_store_adds_no_phantom_checkpoint(tmp_path: Path, long: bool) -> None:
    value: object = [{"n": i} for i in range(40)] if long else "v"
    store = nbs.JSONStore(tmp_path / "store")
    store.save("s", box=Box(value))
    store.save("s", box=Box(value if not long else [*value, {"n": 40}]))  # type: ignore[list-item]
    shutil.copytree(tmp_path / "store", tmp_path / "copy", copy_function=shutil.copy)  # as cp -r: new mtimes
    for file in (tmp_path / "copy").rglob("*.json"):
        os.utime(file, ns=(1, 1))
    copy = nbs.JSONStore(tmp_path / "copy")
    assert [c.seq for c in copy.history("s")] == [1, 2]
    copy.save("s", box=Box("next"))
    assert [c.seq for c in copy.history("s")] == [1, 2, 3]
    # A file of the same size but other content is still a write from outside.
    latest = tmp_path / "copy" / "s.json"
    latest.write_bytes(latest.read_bytes().replace(b"next", b"NEXT"))
    assert [c.seq for c in copy.history("s")] == [1, 2, 3, 4]


def test_redaction_applies_to_a_file_agentscope_wrote_when_the_history_adopts_it(tmp_path: Path) -> None:
    from nb_sessions.redact import redact_keys

    store = nbs.JSONStore(tmp_path, redact=redact_keys())
    store.save("s", box=Box({"api_key": "sk-ours", "n": 1}))
    # AgentScope's own JSONSession rewrites the latest file, secret and all.
    (tmp_path / "s.json").write_text('{"box": {"value": {"api_key": "sk-agentscope", "n": 2}}}')
    store.save("s", box=Box({"api_key": "sk-later", "n": 3}))  # adopts the file into the history
    history = b"".join(p.read_bytes() for p in (tmp_path / ".nb_sessions").rglob("*") if p.is_file())
    assert b"sk-agentscope" not in history
    assert b"sk-ours" not in history and b"sk-later" not in history
    assert store.get_state("s@2") == {"box": {"value": {"api_key": "[redacted]", "n": 2}}}
