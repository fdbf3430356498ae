"""Class 5 of the hostile review, JSON store: special files and symlinks planted in the store.

A FIFO (which would block a reader forever), ``/dev/zero`` behind a symlink
(which would eat memory), or any symlink where a store file belongs is
refused with a StoreCorruptedError naming the path, before a byte is read.
Each case runs under a deadline: a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.errors import NbSessionsError, StoreError
from tests.reliability._states import Box


@pytest.fixture
def deadline() -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise TimeoutError("the store hung on a planted file")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(10)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _store(tmp_path: Path) -> tuple[nbs.BaseStore, Path]:
    folder = tmp_path / "store"
    store = nbs.open_store(folder)
    store.save("s", box=Box([{"n": i} for i in range(40)]))  # long enough for the entry pack
    store.save("s", box=Box([{"n": i} for i in range(41)]))
    return store, folder


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _outside_link(path: Path) -> None:
    outside = path.parent.parent.parent / f"outside-{path.name}"
    if outside.parent.name == "store":
        outside = outside.parent.parent / outside.name
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)


PLANTS: dict[str, Callable[[Path], None]] = {"fifo": _fifo, "dev-zero": _dev_zero, "link-outside": _outside_link}
TARGETS = ["s.json", ".nb_sessions/s/index.json", ".nb_sessions/s/1.json"]


@pytest.mark.usefixtures("deadline")
@pytest.mark.parametrize("plant", sorted(PLANTS))
@pytest.mark.parametrize("target", TARGETS)
def test_a_special_file_or_symlink_in_the_store_is_refused_by_name(tmp_path: Path, plant: str, target: str) -> None:
    _, folder = _store(tmp_path)
    path = folder / target
    PLANTS[plant](path)
    fresh = nbs.open_store(folder)
    named: list[NbSessionsError] = []
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always", nbs.IncompleteSearchWarning)
        for op in (
            lambda: fresh.sessions(),
            lambda: fresh.history("s"),
            lambda: fresh.get_state("s@1"),
            lambda: fresh.get_state("s"),
            lambda: fresh.search("n"),
        ):
            try:
                op()
            except NbSessionsError as exc:
                named.append(exc)
    # A search that still answers says what it passed over.
    assert all("s@1" in str(w.message) for w in warned if w.category is nbs.IncompleteSearchWarning)
    assert named, f"a {plant} at {target} went unnoticed"
    store_errors = [e for e in named if isinstance(e, StoreError)]
    assert store_errors and all(str(path) in str(e) for e in store_errors), [str(e) for e in named]


@pytest.mark.parametrize("long_list", [False, True], ids=["whole-file", "skeleton"])
def test_a_hand_edited_checkpoint_file_is_refused_and_check_finds_it(
    tmp_path: Path, long_list: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Still valid JSON, still the right shape: only the content hash in index.json tells."""
    from nb_sessions import cli

    folder = tmp_path / "store"
    store = nbs.open_store(folder)
    value = [{"n": i} for i in range(40)] if long_list else {"n": 1}
    store.save("s", box=Box(value), note=Box("first"))
    store.save("s", box=Box(value), note=Box("second"))
    first = folder / ".nb_sessions" / "s" / "1.json"
    edited = first.read_bytes().replace(b'"first"', b'"forged"')
    assert edited != first.read_bytes()
    first.write_bytes(edited)

    with pytest.raises(nbs.StoreCorruptedError, match=r"s@1.*1\.json.*content hash") as info:
        store.get_state("s@1")
    assert info.value.location == str(first)
    assert store.get_state("s@2")["note"] == {"value": "second"}  # the other checkpoint is intact

    assert cli.main(["--store", str(folder), "check"]) == 3
    out = capsys.readouterr().out
    assert "s@1" in out and "1 problem" in out


def _snapshot_outside(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "store" not in p.parts}


@pytest.mark.usefixtures("deadline")
@pytest.mark.parametrize(
    "crafted", ["../victim", "{tmp}/victim", "{tmp}/made/new", "a/../../victim"]
)
def test_an_index_naming_a_path_as_its_session_id_reaches_nothing_outside(
    tmp_path: Path, crafted: str
) -> None:
    crafted = crafted.format(tmp=tmp_path)
    store, folder = _store(tmp_path)
    (tmp_path / "victim.json").write_text('{"box": {"value": "secret"}}')
    index_path = folder / ".nb_sessions" / "s" / "index.json"
    index = json.loads(index_path.read_text())
    index["session_id"] = crafted
    index_path.write_text(json.dumps(index))
    before = _snapshot_outside(tmp_path)
    names = {info.session_id for info in nbs.open_store(folder)._sessions_sync()}  # type: ignore[attr-defined]
    assert crafted not in names
    assert "victim" not in names
    assert all("secret" not in str(hit) for hit in store.search("secret").itertuples())
    store.vacuum()
    assert _snapshot_outside(tmp_path) == before


@pytest.mark.usefixtures("deadline")
@pytest.mark.parametrize("field", ["count", "bytes"])
def test_a_huge_pack_count_in_the_index_is_a_named_error_not_memory_error(
    tmp_path: Path, field: str
) -> None:
    _, folder = _store(tmp_path)
    index_path = folder / ".nb_sessions" / "s" / "index.json"
    index = json.loads(index_path.read_text())
    index["pack"][field] = 10**12
    index_path.write_text(json.dumps(index))
    (folder / "s.json").unlink()  # make the load go through the pack
    fresh = nbs.open_store(folder)
    with pytest.raises(StoreError) as err:
        fresh.get_state("s@1")
    assert "entries" in str(err.value) or "pack" in str(err.value)


@pytest.mark.usefixtures("deadline")
@pytest.mark.parametrize("link", [".nb_sessions/s", ".nb_sessions"])
def test_a_symlinked_history_folder_makes_a_save_refuse(tmp_path: Path, link: str) -> None:
    _, folder = _store(tmp_path)
    planted = folder / link
    outside = tmp_path / "outside"
    planted.rename(outside)
    planted.symlink_to(outside)
    before = {p.name: p.stat().st_mtime_ns for p in outside.rglob("*")}
    with pytest.raises(NbSessionsError) as err:
        nbs.open_store(folder).save("s", box=Box("new"))
    assert "symlink" in str(err.value)
    assert {p.name: p.stat().st_mtime_ns for p in outside.rglob("*")} == before


@pytest.mark.parametrize("plant", ["folder", "symlink"])
def test_something_planted_where_a_lock_file_belongs_is_a_named_error(tmp_path: Path, plant: str) -> None:
    """Found by the long fuzzer run: filelock's bare OSError came out of save/vacuum."""
    store, folder = _store(tmp_path)
    lock = folder / ".nb_sessions" / ".locks" / "s.lock"
    with contextlib.suppress(FileNotFoundError):
        lock.unlink()
    if plant == "folder":
        lock.mkdir()
    else:
        lock.symlink_to("/dev/zero")
    with pytest.raises(nbs.StoreCorruptedError, match=r"s\.lock is not a lock file") as info:
        store.save("s", box=Box([{"n": 0}]))
    assert info.value.location == str(lock)
    assert [cp.seq for cp in store.history("s")] == [1, 2]  # nothing was lost or added
