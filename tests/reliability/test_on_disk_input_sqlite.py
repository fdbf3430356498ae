"""Class 5 of issue 12, SQLite part: the database file and its schema are input, not trusted."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.stores.base import SessionKey
from tests.conftest import Box


def test_a_dangling_symlink_as_the_database_creates_nothing_elsewhere(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "victim.db"
    target.parent.mkdir()
    link = tmp_path / "store.db"
    link.symlink_to(target)
    with pytest.raises(nbs.StoreError, match="symbolic link"):
        nbs.SQLiteStore(link).save("s", box=Box(1))
    assert not target.exists()


def test_a_symlink_to_a_real_database_is_refused_too(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    nbs.SQLiteStore(real).save("s", box=Box(1))
    link = tmp_path / "link.db"
    link.symlink_to(real)
    with pytest.raises(nbs.StoreError, match="symbolic link"):
        nbs.SQLiteStore(link).load("s", box=Box(None))


def test_a_new_database_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    old = os.umask(0)
    try:
        nbs.SQLiteStore(path).save("s", box=Box(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("when", ["before open", "after open"])
def test_a_planted_trigger_is_refused_by_name_and_never_runs(tmp_path: Path, when: str) -> None:
    path = tmp_path / "s.db"
    store = nbs.SQLiteStore(path)
    store.save("s", box=Box("first"))
    if when == "before open":
        store = nbs.SQLiteStore(path)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER evil AFTER INSERT ON nbs_checkpoints BEGIN "
            "UPDATE nbs_checkpoints SET label = 'pwned' WHERE id = new.id; END"
        )
    with pytest.raises(nbs.StoreCorruptedError, match=r"trigger 'evil'.*DROP TRIGGER"):
        store.save("s", box=Box("second"))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM nbs_checkpoints").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM nbs_checkpoints WHERE label = 'pwned'").fetchone()[0] == 0


def test_a_planted_view_on_our_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    nbs.SQLiteStore(path).save("s", box=Box(1))
    with sqlite3.connect(path) as db:
        db.execute("CREATE VIEW nbs_peek AS SELECT * FROM nbs_checkpoints")
    with pytest.raises(nbs.StoreCorruptedError, match="view 'nbs_peek'"):
        nbs.SQLiteStore(path).save("s", box=Box(2))


@pytest.mark.parametrize("key", ["gc_generation", "store_uid", "fts_indexed_upto"])
@pytest.mark.parametrize("value", ["'abc'", "1.5", "x'00'", "NULL"])
def test_crafted_meta_values_are_a_named_error(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "s.db"
    nbs.SQLiteStore(path).save("s", box=Box([{"role": "user", "content": "hello world"}]))
    with sqlite3.connect(path) as db:
        if value == "NULL":  # the schema itself refuses it: nothing to read back
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(f"UPDATE nbs_meta SET value = {value} WHERE key = ?", (key,))
            return
        db.execute(f"UPDATE nbs_meta SET value = {value} WHERE key = ?", (key,))
    store = nbs.SQLiteStore(path)
    def use() -> None:  # the first operation that reads the value raises
        store.save("s", box=Box([{"role": "user", "content": "hello again"}]))
        store.load("s", box=Box(None))
        store.search("hello")

    with pytest.raises(nbs.StoreCorruptedError, match=f"nbs_meta value '{key}'"):
        use()


def test_a_checkpoint_row_with_a_garbled_seq_is_a_named_error(tmp_path: Path) -> None:
    """Found by the long fuzzer run: seq='' reached pandas as a bare ValueError."""
    path = tmp_path / "s.db"
    store = nbs.SQLiteStore(path)
    store.save("s", box=Box(1))
    store.save("s", box=Box(2))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE nbs_checkpoints SET seq = '' WHERE seq = 1")
    with pytest.raises(nbs.StoreCorruptedError, match=r"nbs_checkpoints holds seq=''"):
        store.history("s")


def test_a_session_row_holding_no_valid_id_is_not_listed(tmp_path: Path) -> None:
    """Found by the long fuzzer run: a hand-set session_id '/etc/passwd' was listed as a session."""
    path = tmp_path / "s.db"
    store = nbs.SQLiteStore(path)
    store.save("s", box=Box(1))
    store.save("t", box=Box(2))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE nbs_sessions SET session_id = '/etc/passwd' WHERE session_id = 't'")
    with pytest.warns(RuntimeWarning, match="no session"):
        keys = [info.key for info in store.sessions()]
    assert keys == [SessionKey("", "s")]


def test_a_garbled_segment_row_stops_the_sweep_and_frees_nothing(tmp_path: Path) -> None:
    """Found by the long fuzzer run: array('q', ...) raised bare errors; a sweep must not guess."""
    path = tmp_path / "s.db"
    store = nbs.SQLiteStore(path)
    store.save("s", box=Box([{"n": i} for i in range(40)]))
    store.save("s", box=Box([{"n": i} for i in range(41)]))
    store.save("t", box=Box([{"m": i} for i in range(40)]))
    with sqlite3.connect(path) as db:
        before = db.execute("SELECT count(*) FROM nbs_blobs").fetchone()[0]
        db.execute("UPDATE nbs_segments SET blobs = '../x' WHERE id = (SELECT min(id) FROM nbs_segments)")
    with pytest.raises(nbs.StoreCorruptedError, match="nbs_segments"):
        store.delete("t")  # a delete sweeps what no checkpoint uses any more
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM nbs_blobs").fetchone()[0] == before
