"""An interrupted or cancelled save commits nothing and leaves the objects as they were."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import filelock
import pytest

import nb_sessions as nbs
from nb_sessions.stores.json_store import HIDDEN
from tests.conftest import Box


def hold_write_lock(store: nbs.BaseStore, session: str) -> tuple[object, object]:
    """Take the store's write lock from outside, as another process would."""
    if isinstance(store, nbs.SQLiteStore):
        db = sqlite3.connect(store.path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        return db, lambda: (db.execute("ROLLBACK"), db.close())
    if isinstance(store, nbs.PostgresStore):
        import psycopg

        conn = psycopg.connect(store.url)
        conn.execute(
            "SELECT 1 FROM nbs_sessions WHERE user_id = '' AND session_id = %s FOR UPDATE", (session,)
        )
        return conn, lambda: (conn.rollback(), conn.close())
    lock = filelock.FileLock(Path(store.location) / HIDDEN / ".locks" / f"{session}.lock")
    lock.acquire()
    return lock, lock.release


async def test_cancelled_async_save_commits_nothing(store: nbs.BaseStore) -> None:
    box = Box("first")
    await store.asave("s", box=box)
    _, release = hold_write_lock(store, "s")
    box.value = "second"
    task = asyncio.create_task(store.asave("s", box=box))
    await asyncio.sleep(0.3)  # the save is now waiting for the lock
    task.cancel()
    release()  # type: ignore[operator]
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)  # give a wrongly surviving write the time to land
    assert [c.seq for c in await store.ahistory("s")] == [1]
    assert (await store.aget_state("s")) == {"box": {"value": "first"}}
    assert box.value == "second"
    assert (await store.asave("s", box=box)).seq == 2  # and the store still works


def test_keyboard_interrupt_during_sync_save_commits_nothing(store: nbs.BaseStore) -> None:
    box = Box("first")
    store.save("s", box=box)
    _, release = hold_write_lock(store, "s")
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.save("s", box=Box("second"))
    finally:
        release()  # type: ignore[operator]
        timer.join()
    assert [c.seq for c in store.history("s")] == [1]
    assert store.get_state("s") == {"box": {"value": "first"}}
    assert store.save("s", box=box).seq == 2


def test_sync_call_inside_the_private_loop_is_refused_with_advice(store: nbs.BaseStore) -> None:
    from nb_sessions._loop import run_sync

    async def nested() -> None:
        store.history("s")

    with pytest.raises(RuntimeError, match="use the async twin"):
        run_sync(nested())


@pytest.mark.parametrize("stopped", ["two saves", "a delete"])
def test_writes_stopped_after_their_commit_leave_no_phantom_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped: str
) -> None:
    # A JSON store save (or a delete of the latest checkpoint) commits its index, then
    # rewrites AgentScope's latest file. Killed in between, the old file stays: the index
    # must still know it as ours, even when the next save is stopped at the same place.
    from nb_sessions.stores.json_store import JSONStore

    box = Box("one")
    for value in ("one", "two", "three"):
        box.value = value
        JSONStore(tmp_path).save("s", box=box)
    real = JSONStore._write_latest
    monkeypatch.setattr(JSONStore, "_write_latest", lambda *args: None)  # the kill, after the commit
    if stopped == "two saves":
        for value in ("four", "five"):
            box.value = value
            JSONStore(tmp_path).save("s", box=box)
        expected, seqs = "five", [1, 2, 3, 4, 5, 6]
    else:
        JSONStore(tmp_path).delete("s@3")
        expected, seqs = "two", [1, 2, 4]
    monkeypatch.setattr(JSONStore, "_write_latest", real)
    store = JSONStore(tmp_path)  # what a restarted kernel sees
    assert [cp.ref for cp in store.history("s") if cp.origin] == []
    assert store.get_state("s") == {"box": {"value": expected}}
    box.value = "six"
    store.save("s", box=box)  # the next save rewrites the file, and takes no phantom either
    assert [cp.seq for cp in store.history("s")] == seqs
    assert JSONStore(tmp_path).get_state("s") == {"box": {"value": "six"}}
    assert json.loads((tmp_path / "s.json").read_text()) == {"box": {"value": "six"}}
