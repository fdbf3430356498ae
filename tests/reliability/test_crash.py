"""kill -9 a writer at random moments during saves: nothing committed is ever lost.

After every kill the store opens without manual repair; every checkpoint whose
save had returned loads equal to what was saved; the save the writer was in
the middle of is either absent or present and complete; and once the store
has been written again no temp file is left.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.errors import SessionNotFoundError
from nb_sessions.stores._fs import TEMP_SUFFIX
from tests.reliability._proc import Commit, ForkServer, commits, in_flight
from tests.reliability._states import SIZES, Box, digest, expected_states
from tests.reliability.conftest import Figures

SESSION = "s"
#: Metadata sources of a checkpoint the JSON store made from its latest file, taken for a
#: foreign (AgentScope) write. The writers here never write that file themselves, so such a
#: checkpoint is a phantom: the store mistook its own file for someone else's (a kill once
#: landed between the rename of the latest file and stamping its mtime).
FOREIGN_SOURCES = ("json-file", "imported")
# The longest random delay between "ready" and SIGKILL: a few dozen saves at most.
MAX_DELAY = {"small": 0.15, "large": 0.6}


def store_path(area: Path, kind: str) -> Path:
    return area / ("store.db" if kind == "sqlite" else "store")


def check_files(area: Path, kind: str) -> None:
    """Only the store's own files exist, and no temp file is left."""
    if kind == "sqlite":
        assert set(os.listdir(area)) <= {"store.db", "store.db-wal", "store.db-shm"}, os.listdir(
            area
        )
        with sqlite3.connect(area / "store.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.close()
    else:
        assert os.listdir(area) == ["store"]
        leftovers = [p for p in (area / "store").rglob("*") if p.name.endswith(TEMP_SUFFIX)]
        assert leftovers == [], leftovers


class Ledger:
    """Every checkpoint known to be committed, by seq, and what each trial found."""

    def __init__(self, size: str) -> None:
        self.size = size
        self.known: dict[int, Commit] = {}
        self.completed_in_flight = 0
        self.absent_in_flight = 0
        self.killed_mid_save = 0

    def expected(self, c: Commit) -> dict[str, Any]:
        return expected_states(self.size, f"{c.tag}-{c.n}", c.n)

    def verify(self, path: Path, lines: list[str]) -> None:
        store = nbs.open_store(path)  # a fresh instance: what a restarted kernel sees
        try:
            history = store.history(SESSION)
        except SessionNotFoundError:
            history = []
        seqs = [c.seq for c in history]
        assert seqs == sorted(set(seqs)), f"sequence numbers not unique and ordered: {seqs}"
        new = commits(lines)
        for c in new:
            assert c.seq not in self.known, f"seq {c.seq} committed twice"
            self.known[c.seq] = c
        lost = sorted(set(self.known) - set(seqs))
        assert lost == [], f"committed checkpoints lost after kill -9: {lost}"
        by_seq = {c.seq: c for c in history}
        phantoms = [
            (cp.ref, dict(cp.metadata))
            for cp in history
            if cp.origin in FOREIGN_SOURCES
        ]
        assert phantoms == [], f"the store took its own latest file for a foreign write: {phantoms}"
        extra = [s for s in seqs if s not in self.known]
        flight = in_flight(lines)
        if flight is not None:
            self.killed_mid_save += 1
        if extra:
            assert flight is not None and len(extra) == 1, (
                f"checkpoints nobody committed: {extra} (in flight: {flight}); "
                f"history: {[(c.seq, dict(c.metadata)) for c in history]}"
            )
            (seq,) = extra
            assert seq == max(seqs), "in-flight save is not the last"
            tag, n = flight
            got = store.get_state(f"{SESSION}@{seq}")
            done = Commit(seq, tag, n, digest(got))
            assert got == self.expected(done), (
                f"half-written checkpoint {SESSION}@{seq} is incomplete"
            )
            self.known[seq] = done
            self.completed_in_flight += 1
        elif flight is not None:
            self.absent_in_flight += 1
        for seq, c in self.known.items():
            meta = by_seq[seq].metadata
            assert (meta.get("writer"), meta.get("n")) == (c.tag, c.n), (
                f"{SESSION}@{seq} is another save"
            )
        for c in new:
            got = store.get_state(f"{SESSION}@{c.seq}")
            assert digest(got) == c.digest
            assert got == self.expected(c)
        # Written once more: JSONStore clears dead writers' temp files when it first writes.
        store.save("probe", box=Box(len(self.known)))

    def verify_all(self, path: Path) -> None:
        store = nbs.open_store(path)
        for c in self.known.values():
            assert store.get_state(f"{SESSION}@{c.seq}") == self.expected(c)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["sqlite", "json", "json-encrypted"])
@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_kill_9_during_saves_loses_nothing(
    version: str, kind: str, size: str, tmp_path: Path, figures: Figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    trials = (
        (10 if size == "small" else 5) if version == "short" else 60
    )  # 240 kills in the long run
    rng = random.Random(f"{kind}-{size}-{version}")
    area = tmp_path / "area"
    area.mkdir()
    path = store_path(area, kind)
    if kind == "json-encrypted":  # the writers and the checks open it by its path: the key from the environment
        from tests.conftest import TEST_KEY

        monkeypatch.setenv("NB_SESSIONS_KEY", TEST_KEY)
        nbs.open_store(path, key=TEST_KEY).save("probe", box=Box(0))
    ledger = Ledger(size)
    server = ForkServer()
    try:
        for trial in range(trials):
            api = "async" if trial % 3 == 2 else "sync"
            writer = server.start(
                tmp_path / f"out{trial}.txt", path, SESSION, size, f"t{trial}", api
            )
            writer.wait_lines("ready", 1)
            # One kill in ten lands at once (opening the store, the first save); the rest at random.
            delay = 0.0 if rng.random() < 0.1 else rng.uniform(0, MAX_DELAY[size])
            if delay:
                writer.wait_lines("begin", 1)
            time.sleep(delay)
            code = writer.kill()
            assert code == -9, f"writer ended by itself ({code}): {writer.lines[-3:]}"
            ledger.verify(path, writer.lines)
            check_files(area, kind)
    finally:
        server.close()
    ledger.verify_all(path)
    if kind == "json-encrypted":
        assert nbs.open_store(path).encrypted and not (path / f"{SESSION}.json").exists()  # type: ignore[attr-defined]
    figures.record(
        f"{kind}, {size}",
        trials=trials,
        killed_mid_save=ledger.killed_mid_save,
        checkpoints_committed=len(ledger.known) - ledger.completed_in_flight,
        half_written_found_complete=ledger.completed_in_flight,
        half_written_absent=ledger.absent_in_flight,
        lost=0,
        temp_files_left=0,
        phantom_checkpoints=0,
    )


@pytest.mark.parametrize("moment", ["before-rename", "after-rename"])
def test_death_around_the_latest_file_rename_adds_no_checkpoint(
    moment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last step of a JSON save, where a kill -9 once made a phantom checkpoint, hit on purpose.

    The index has committed; the process "dies" just before the latest file is renamed into
    place (its temp file already stamped with the recorded mtime), or just after. Either way
    the store must recognise the latest file as its own (stale or current), never as a
    foreign write: history shows exactly the checkpoints saved, and the next save adds one.
    """

    class Died(BaseException):
        pass

    store = nbs.open_store(tmp_path / "store")
    store.save(SESSION, box=Box(1))
    latest = tmp_path / "store" / f"{SESSION}.json"
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if Path(dst) == latest:
            if moment == "before-rename":
                raise Died
            real_replace(src, dst, *args, **kwargs)
            raise Died
        real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Died):
        store.save(SESSION, box=Box(2))
    monkeypatch.undo()
    for leftover in (tmp_path / "store").glob(f"*{TEMP_SUFFIX}"):
        leftover.unlink()  # what a dead writer leaves; the next writer would clear it
    fresh = nbs.open_store(tmp_path / "store")
    history = fresh.history(SESSION)
    assert [(c.seq, c.origin) for c in history] == [(1, None), (2, None)]
    assert fresh.get_state(f"{SESSION}@2") == {"box": {"value": 2}}
    assert fresh.get_state(SESSION) == {"box": {"value": 2}}
    fresh.save(SESSION, box=Box(3))
    assert [c.seq for c in fresh.history(SESSION)] == [1, 2, 3]
    assert [fresh.get_state(f"{SESSION}@{n}") for n in (1, 2, 3)] == [
        {"box": {"value": n}} for n in (1, 2, 3)
    ]
