"""Disk full, a read-only store, a store deleted while open: a clear error, and nothing earlier lost.

Disk full is real: a small tmpfs when this process may mount one (root),
and always a soft RLIMIT_FSIZE in a writer process (SIGXFSZ ignored, so a
write past the limit fails with EFBIG, as a quota would). Read-only is
``chmod`` for a normal user; root ignores modes, so there ``chattr +i`` or a
read-only bind mount is used instead, and the test is skipped, saying why,
only when none works.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.stores._fs import TEMP_SUFFIX
from tests.reliability._proc import REPO, child_env, writer_cmd
from tests.reliability._states import Box, make_modules
from tests.reliability.conftest import Figures

KINDS = ["sqlite", "json"]


def store_name(kind: str) -> str:
    return "store.db" if kind == "sqlite" else "store"


def all_files(area: Path) -> dict[str, int]:
    """Every path under ``area`` with its mode bits."""
    return {str(p.relative_to(area)): stat.S_IMODE(p.lstat().st_mode) for p in area.rglob("*")}


# -- disk full -------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size``; skip when this process may not mount one."""
    where = Path(tempfile.mkdtemp(prefix="nbs-tmpfs-"))
    if os.geteuid() != 0 or shutil.which("mount") is None:
        where.rmdir()
        pytest.skip("mounting a tmpfs needs root; the rlimit variant covers disk full")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip()}); the rlimit variant covers disk full"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


_SCENARIOS: dict[tuple[str, str], dict[str, Any]] = {}


def run_disk_full(kind: str, how: str, base: Path) -> dict[str, Any]:
    """Run the writer's disk-full scenario once per (store, method); return its report plus what the parent saw."""
    if (kind, how) in _SCENARIOS:
        return _SCENARIOS[(kind, how)]
    with contextlib.ExitStack() as stack:
        if how == "tmpfs":
            area = stack.enter_context(tmpfs("4m")) / "area"
        else:
            area = base / f"{kind}-{how}"
        area.mkdir()
        path = area / store_name(kind)
        done = subprocess.run(
            writer_cmd("diskfull", path, "filler" if how == "tmpfs" else "rlimit"),
            cwd=REPO,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        report["path"] = str(path)
        store = nbs.open_store(path)  # a fresh process's view of what is on disk
        earlier = []
        for seq, note in ((1, "first"), (2, "second")):
            try:
                state = store.get_state(f"s@{seq}")
                earlier.append(
                    state["note"]["value"] == note and len(state["memory"]["content"]) == 40
                )
            except nbs.NbSessionsError as exc:
                earlier.append(f"{type(exc).__name__}: {exc}")
        report["earlier_ok"] = earlier
        report["temp_files"] = [p.name for p in area.rglob(f"*{TEMP_SUFFIX}")]
        report["files"] = sorted(all_files(area))
        if kind == "sqlite":
            db = sqlite3.connect(path)
            try:
                report["integrity"] = db.execute("PRAGMA integrity_check").fetchone()[0]
            finally:
                db.close()
    _SCENARIOS[(kind, how)] = report
    return report


HOWS = ["tmpfs", "rlimit"]
CASES = [(kind, how) for kind in KINDS for how in HOWS]


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_disk_full_save_fails_with_a_clear_error(
    kind: str, how: str, tmp_path_factory: pytest.TempPathFactory, figures: Figures
) -> None:
    """A StoreError naming the store; "the disk is full" whenever the system said so.

    SQLite itself reports a write past the file-size limit (EFBIG, as a quota's
    EDQUOT) as "disk I/O error", not as a full disk: that case is only held to
    naming the store.
    """
    report = run_disk_full(kind, how, tmp_path_factory.mktemp("full"))
    error = report["full_save"]
    assert "saved" not in error, "a save bigger than the free space succeeded?"
    assert error["store_error"], f"not a StoreError: {error}"
    assert store_name(kind) in error["message"], (
        f"the message does not name the store: {error['message']}"
    )
    words = error["message"].replace(report["path"], "<store>")
    if not (kind == "sqlite" and how == "rlimit"):
        assert "disk is full" in words, f"the message does not say the disk is full: {words}"
    figures.record(f"{kind}, {how}", error=f"{error['type']}: {words[:100]}")


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_disk_full_commits_nothing_and_earlier_checkpoints_load(
    kind: str, how: str, tmp_path_factory: pytest.TempPathFactory, figures: Figures
) -> None:
    report = run_disk_full(kind, how, tmp_path_factory.mktemp("full"))
    assert report["history_after_full"] == [1, 2], "the failed save left a checkpoint behind"
    assert report["earlier_ok"] == [True, True], report["earlier_ok"]
    assert report["temp_files"] == []
    if kind == "sqlite":
        assert report["integrity"] == "ok"
        assert set(report["files"]) <= {"store.db", "store.db-wal", "store.db-shm"}
    figures.record(f"{kind}, {how}", earlier_checkpoints=2, lost=0, temp_files_left=0)


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_after_disk_full_the_next_save_holds_what_was_saved(
    kind: str, how: str, tmp_path_factory: pytest.TempPathFactory, figures: Figures
) -> None:
    """Space comes back, another writer saves meanwhile, the same store object saves again.

    (Found silently corrupting SQLite checkpoints while the entry store was being
    reworked: a COMMIT that failed left the rolled-back rows' ids in the writer's
    cache. For JSON, a short write to the entry pack was once committed as complete
    under the file-size limit. Kept as regression tests.)
    """
    report = run_disk_full(kind, how, tmp_path_factory.mktemp("full"))
    retry = report["retry"]
    assert "seq" in retry, f"saving again failed: {retry}"
    assert retry["ids_ok"], "the checkpoint saved after the disk-full error holds other messages"
    assert retry["note"] == "retry"
    figures.record(f"{kind}, {how}", saved_again=True, wrong_messages=0)


# -- read-only -------------------------------------------------------------------------


def _writable(folder: Path) -> bool:
    probe = folder / ".nbs-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only(area: Path) -> Iterator[str]:
    """Make ``area`` and everything in it read-only; yield the mechanism used; undo on exit."""
    paths = [area, *area.rglob("*")]
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in paths}

    def run(*cmd: str) -> bool:
        return subprocess.run(list(cmd), capture_output=True).returncode == 0

    def chmod_back() -> None:
        for p, m in modes.items():
            p.chmod(m)

    def chattr_back() -> None:
        run("chattr", "-i", *map(str, paths))

    def unmount() -> None:
        run("umount", str(area))

    undo: Callable[[], None] | None = None
    mechanism = ""
    if os.geteuid() != 0:
        for p in reversed(paths):
            p.chmod(0o500 if p.is_dir() else 0o400)
        mechanism, undo = "chmod 0o500/0o400", chmod_back
    elif shutil.which("chattr"):
        if run("chattr", "+i", *map(str, paths)) and not _writable(area):
            mechanism, undo = "chattr +i (root ignores chmod)", chattr_back
        else:
            chattr_back()
    bindable = undo is None and os.geteuid() == 0 and shutil.which("mount")
    if bindable and run("mount", "--bind", str(area), str(area)):
        if run("mount", "-o", "remount,bind,ro", str(area)) and not _writable(area):
            mechanism, undo = "read-only bind mount (root ignores chmod)", unmount
        else:
            unmount()
    if undo is None:
        pytest.skip(
            "running as root with neither chattr nor bind mounts: cannot make a folder read-only"
        )
    assert not _writable(area), f"{mechanism} did not make the folder read-only"
    try:
        yield mechanism
    finally:
        undo()


def saved_store(tmp_path: Path, kind: str) -> tuple[Path, Path, nbs.BaseStore]:
    area = tmp_path / "area"
    area.mkdir()
    path = area / store_name(kind)
    store = nbs.open_store(path)
    for n in range(3):
        store.save("s", **make_modules("small", f"ro-{n}", n))
    store.save("t", box=Box("other session"))
    return area, path, store


def expected_small(n: int) -> dict[str, Any]:
    from tests.reliability._states import expected_states

    return expected_states("small", f"ro-{n}", n)


#: Which store object meets the read-only store: a fresh one (opened once it is read-only,
#: as a new kernel would) or the one that wrote it (open while it became read-only).
INSTANCES = ["fresh", "writer"]


def read_only_params() -> list[Any]:
    return [
        pytest.param(kind, instance)
        for kind in KINDS
        for instance in INSTANCES
    ]


@pytest.mark.parametrize(("kind", "instance"), read_only_params())
def test_read_only_store_still_reads_every_checkpoint(
    kind: str, instance: str, tmp_path: Path, figures: Figures
) -> None:
    area, path, store = saved_store(tmp_path, kind)
    before = all_files(area)
    with read_only(area) as mechanism:
        reader = store if instance == "writer" else nbs.open_store(path)
        assert [c.seq for c in reader.history("s")] == [1, 2, 3]
        for n in range(3):
            assert reader.get_state(f"s@{n + 1}") == expected_small(n)
        assert {i.session for i in reader.sessions()} == {"s", "t"}
        assert all_files(area) == before
    figures.record(f"{kind}, {instance}", mechanism=mechanism, checkpoints_read=3, lost=0)


@pytest.mark.parametrize(("kind", "instance"), read_only_params())
def test_read_only_store_save_fails_with_a_clear_error(
    kind: str, instance: str, tmp_path: Path
) -> None:
    area, path, store = saved_store(tmp_path, kind)
    before = all_files(area)
    with read_only(area):
        writer = store if instance == "writer" else nbs.open_store(path)
        with pytest.raises(nbs.StoreError) as err:
            writer.save("s", box=Box("nope"))
        message = str(err.value)
        assert store_name(kind) in message
        words = message.replace(str(writer.location), "<store>").lower()
        assert any(w in words for w in ("read-only", "readonly")), message
        assert all_files(area) == before
        assert [c.seq for c in writer.history("s")] == [1, 2, 3]


# -- deleted while open ----------------------------------------------------------------


def delete_everything(area: Path) -> None:
    for p in list(area.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


@pytest.mark.parametrize("kind", KINDS)
def test_store_deleted_while_open_reads_say_so(kind: str, tmp_path: Path) -> None:
    area, path, store = saved_store(tmp_path, kind)
    delete_everything(area)
    for call in (
        lambda: store.get_state("s@1"),
        lambda: store.history("s"),
        lambda: store.get_state("t"),
    ):
        with pytest.raises(nbs.NbSessionsError) as err:
            call()
        message = str(err.value)
        assert store_name(kind) in message
        words = message.replace(str(path), "<store>")  # the test's folder name says "deleted"
        assert any(w in words for w in ("no session", "deleted", "does not exist", "missing")), (
            message
        )
    assert list(area.iterdir()) == [], "reading a deleted store created files"


def test_a_deleted_sqlite_store_says_so_on_every_later_call(tmp_path: Path) -> None:
    """The database file went with its checkpoints: that store object says so, and creates nothing.

    (It once recreated the file empty, mode 0644, and failed with "no such table".)
    A new ``open_store`` on the path starts a new store there.
    """
    area, path, store = saved_store(tmp_path, "sqlite")
    delete_everything(area)
    calls: list[Callable[[], Any]] = [
        lambda: store.save("s", box=Box("again")),
        lambda: store.save("new", box=Box("again")),
        lambda: store.history("s"),
        lambda: store.get_state("s@1"),
        store.sessions,
        lambda: store.delete("s"),
    ]
    for call in calls:
        with pytest.raises(nbs.StoreError, match="was deleted while open"):
            call()
    assert list(area.iterdir()) == [], "the deleted store came back"
    fresh = nbs.open_store(path)
    cp = fresh.save("s", box=Box("again"))
    assert cp.seq == 1 and [c.seq for c in fresh.history("s")] == [1]
    assert nbs.open_store(path).get_state(cp) == {"box": {"value": "again"}}
    loose = {name: oct(mode) for name, mode in all_files(area).items() if mode & 0o077}
    assert loose == {}, f"files readable by others: {loose}"


def test_saving_into_a_deleted_json_store_recreates_it_owner_only(tmp_path: Path) -> None:
    area, path, store = saved_store(tmp_path, "json")
    delete_everything(area)
    cp = store.save("s", box=Box("again"))
    assert cp.seq == 1 and [c.seq for c in store.history("s")] == [1]
    assert nbs.open_store(path).get_state(cp) == {"box": {"value": "again"}}
    modes = all_files(area)
    assert modes, "nothing was written"
    # store/.nb_sessions itself: see test_privacy.test_json_store_hidden_folder_is_owner_only
    loose = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode & 0o077 and name != "store/.nb_sessions"
    }
    assert loose == {}, f"files readable by others: {loose}"


def test_a_store_object_whose_file_was_deleted_never_writes_into_a_new_store_there(
    tmp_path: Path,
) -> None:
    from tests.reliability._writer import _memory

    area = tmp_path / "area"
    area.mkdir()
    path = area / "store.db"
    old = nbs.open_store(path)
    mine = _memory("a", 40, 100)
    old.save("s", memory=mine, note=Box(1))
    delete_everything(area)
    nbs.open_store(path).save("other", memory=_memory("z", 80, 3000))  # a new store there
    try:
        cp = old.save("s", memory=mine, note=Box(2))
    except nbs.StoreError as exc:
        refused: nbs.StoreError | None = exc
    else:
        refused = None
    if refused is not None:
        assert "was deleted while open" in str(refused), refused
        return
    got = nbs.open_store(path).get_state(cp)
    ids = [m["id"] for m, _ in got["memory"]["content"]]
    assert ids == [m.id for m, _ in mine.content], (
        f"the deleted store's object saved {cp.ref} into the new store, holding another "
        f"session's messages: {ids[:3]}..."
    )
    pytest.fail(f"the deleted store's object saved {cp.ref} into the new store at {path}")


@pytest.mark.parametrize("how", ["store.delete", "folder-removed"])
def test_a_json_session_deleted_and_saved_again_elsewhere_is_not_mixed_up(
    how: str, tmp_path: Path
) -> None:
    from tests.reliability._writer import _memory

    path = tmp_path / "store"
    mine = _memory("a", 40, 100)
    a = nbs.open_store(path)
    a.save("s", memory=mine, note=Box(1))
    b = nbs.open_store(path)
    if how == "store.delete":
        b.delete("s")
    else:
        shutil.rmtree(path)
    b.save("s", memory=_memory("b", 40, 100), note=Box(1))  # as many entries, as many bytes
    cp = a.save("s", memory=mine, note=Box(2))
    got = nbs.open_store(path).get_state(cp)
    ids = [m["id"] for m, _ in got["memory"]["content"]]
    assert ids == [m.id for m, _ in mine.content], (
        f"{cp.ref} holds the other writer's messages: {ids[:3]}..."
    )
