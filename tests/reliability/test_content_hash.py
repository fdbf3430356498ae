"""Class 5 of the hostile review, both stores: every entry read back is checked against its content hash.

A byte changed inside a stored entry, or an entry index whose offsets and
lengths lie, gives a StoreCorruptedError naming the file or table, and
``check`` reports the checkpoint; it never returns another message.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.cli import check_store
from nb_sessions.errors import StoreCorruptedError
from tests.reliability._states import Box

RECORD = struct.Struct("<QI16s")


def _saved(path: Path) -> nbs.BaseStore:
    store = nbs.open_store(path)
    store.save("s", box=Box([{"n": i, "text": f"message {i:03d}"} for i in range(40)]))
    store.save("s", box=Box([{"n": i, "text": f"message {i:03d}"} for i in range(41)]))
    return store


def _damaged(store: nbs.BaseStore, refs: tuple[str, ...] = ("s@1",)) -> None:
    with pytest.raises(StoreCorruptedError) as err:
        store.get_state("s@1")
    assert "hash" in str(err.value) or "does not match" in str(err.value)
    _, _, problems = check_store(nbs.open_store(store.location))
    assert [p.ref for p in problems] == list(refs)


def test_json_a_changed_byte_inside_an_entry_is_caught(tmp_path: Path) -> None:
    store = _saved(tmp_path / "store")
    pack = tmp_path / "store" / ".nb_sessions" / "s" / "entries-1.jsonl"
    pack.write_bytes(pack.read_bytes().replace(b"message 007", b"message 008", 1))
    # s@2 shares the entry: a load of it reads AgentScope's latest file (intact), `check` reads
    # its history and names it too.
    _damaged(store, ("s@1", "s@2"))
    assert store.get_state("s@2")["box"]["value"][7]["text"] == "message 007"


@pytest.mark.parametrize("lie", ["swap", "shift"])
def test_json_lying_offsets_and_lengths_are_caught(tmp_path: Path, lie: str) -> None:
    store = _saved(tmp_path / "store")
    idx = tmp_path / "store" / ".nb_sessions" / "s" / "entries-1.idx"
    raw = bytearray(idx.read_bytes())
    records = [list(RECORD.unpack_from(raw, i * RECORD.size)) for i in range(len(raw) // RECORD.size)]
    if lie == "swap":  # two entries of equal length trade places: the JSON stays valid
        records[3][:2], records[4][:2] = records[4][:2], records[3][:2]
    else:  # one entry claims one byte less: the array would still parse with another message
        records[5][1] -= 1
    idx.write_bytes(b"".join(RECORD.pack(*r) for r in records))
    _damaged(store, ("s@1", "s@2"))


def test_sqlite_a_changed_entry_is_caught(tmp_path: Path) -> None:
    store = _saved(tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as db:
        (blob_id, data), *_ = db.execute("SELECT id, data FROM nbs_blobs WHERE CAST(data AS TEXT) LIKE '%message 007%'")
        db.execute("UPDATE nbs_blobs SET data = ? WHERE id = ?", (data.replace(b"007", b"008"), blob_id))
    _damaged(store, ("s@1", "s@2"))  # the entry is shared: both checkpoints are damaged


@pytest.mark.parametrize("order", ["appended", "reversed"])
def test_sqlite_swapped_entries_are_caught(tmp_path: Path, order: str) -> None:
    store = _saved(tmp_path / "s.db")
    if order == "reversed":  # ids in no ascending run: the row-by-row read path
        store.save("s", box=Box([{"n": i, "text": f"message {i:03d}"} for i in reversed(range(41))]))
    with sqlite3.connect(tmp_path / "s.db") as db:
        rows = db.execute("SELECT id, data FROM nbs_blobs ORDER BY id LIMIT 2").fetchall()
        # Swap the data of two entries: each row still holds a valid message, at the wrong place.
        db.execute("UPDATE nbs_blobs SET data = ? WHERE id = ?", (rows[1][1], rows[0][0]))
        db.execute("UPDATE nbs_blobs SET data = ? WHERE id = ?", (rows[0][1], rows[1][0]))
    _damaged(store, ("s@1", "s@2", "s@3") if order == "reversed" else ("s@1", "s@2"))
