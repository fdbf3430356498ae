"""What the 10,000-case SQLite run of the hostile-store fuzzer found, each as a test.

The row hashes (test_row_hash_sqlite.py) cover the edited session ids the run
found; these are the others: bytes that are not UTF-8 in the schema, and
numbers where a checkpoint keeps JSON text.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.errors import StoreCorruptedError
from tests.reliability._states import Box
from tests.reliability.test_row_hash_sqlite import _memory


def _store(path: Path) -> nbs.BaseStore:
    """Session s: @1..@3, 40..42 messages ('message 000', ...); session t: @1 and @2, no list."""
    store = nbs.open_store(path)
    for n in range(3):
        store.save("s", memory=_memory(n))
    store.save("t", box=Box({"tag": "other"}))
    store.save("t", box=Box({"tag": "other"}))
    return store


def _edit(path: Path, sql: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        assert db.execute(sql).rowcount == 1


def test_a_schema_byte_that_is_not_utf8_is_a_named_error(tmp_path: Path) -> None:
    """Seed 3190 ('flip byte 2525', op copy): a bare UnicodeDecodeError from open_store's sniffing."""
    path = tmp_path / "s.db"
    _store(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    data = bytearray(path.read_bytes())
    # The table's name in its sqlite_master record (type, name, ...): SQLite's error message quotes it.
    at = data.index(b"tablenbs_sessionsnbs_sessions") + len("tablenbs_s")
    data[at] = 0xE2  # a lead byte followed by ASCII: not UTF-8
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptedError, match="not UTF-8") as err:
        nbs.open_store(path).sessions()
    assert str(path) in str(err.value)


def test_a_number_where_a_skeleton_belongs_does_not_break_search(tmp_path: Path) -> None:
    """Seed 4167 (state=1.5, op search): a bare TypeError from the JSON decoder."""
    path = tmp_path / "s.db"
    store = _store(path)
    _edit(path, "UPDATE nbs_checkpoints SET state = 1.5 WHERE seq = 2 AND session = "
                "(SELECT id FROM nbs_sessions WHERE session_id = 's')")
    with pytest.warns(nbs.IncompleteSearchWarning, match="s@2"):
        hits = store.search("message 040")  # in @2 and @3; @2's damaged skeleton is skipped, its list is not
    assert (list(hits["message_id"]), list(hits["first_seq"]), list(hits["last_seq"])) == (["m40"], [2], [3])
    with pytest.raises(StoreCorruptedError, match="s@2"):
        store.get_state("s@2")


@pytest.mark.parametrize("value", ["1.5", "4611686018427387904", "'[[\"box\", \"x\"]]'"])
def test_a_garbled_list_reference_stops_delete_and_prune_by_name(tmp_path: Path, value: str) -> None:
    """Seeds 5537 and 7118 (chunks=1.5 / 2**62, ops prune / delete): a bare TypeError from the sweep."""
    path = tmp_path / "s.db"
    store = _store(path)
    _edit(path, f"UPDATE nbs_checkpoints SET chunks = {value} WHERE seq = 2 AND session = "
                "(SELECT id FROM nbs_sessions WHERE session_id = 's')")
    with pytest.raises(StoreCorruptedError, match="list references") as err:
        store.delete("t")
    assert str(path) in str(err.value)
    with pytest.raises(StoreCorruptedError, match="list references"):
        store.prune("t", keep_last=1)
    # Nothing went: the sweep stopped first, and the transaction with it.
    assert [cp.seq for cp in store.history("t")] == [1, 2]
    assert [cp.seq for cp in store.history("s")] == [1, 2, 3]
    assert store.get_state("s@3")["memory"]["content"][-1][0]["content"] == "message 041"
