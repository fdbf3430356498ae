"""PostgreSQL: a checkpoint's own row and every entry it uses are protected by hashes.

As ``test_row_hash_sqlite.py`` does for SQLite: each covered column of a row
of ``nbs_checkpoints`` is edited by hand on a real server; loading that
checkpoint, the views and a relabel refuse it by name, its history row is
flagged, and the others stay readable. An entry of ``nbs_blobs`` edited by
hand is refused by its content hash, naming the checkpoint.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

import nb_sessions as nbs
from nb_sessions import views
from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.errors import StoreCorruptedError
from tests.reliability._states import Box


def _memory(n: int) -> InMemoryMemory:
    mem = InMemoryMemory()
    mem.content = [(Msg("user", f"message {i:03d}", "user", id=f"m{i}"), []) for i in range(40 + n)]
    return mem


def _store(url: str) -> nbs.BaseStore:
    """Session s with checkpoints @1..@3 (@2 labelled 'mid', its note 'NOTE-2'); session t with one."""
    store = nbs.open_store(url)
    for n in range(3):
        store.save(
            "s",
            label="mid" if n == 1 else None,
            metadata={"run": n},
            memory=_memory(n),
            note=Box({"tag": f"NOTE-{n + 1}"}),
        )
    store.save("t", note=Box({"tag": "other"}))
    return store


def _sql(url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(sql, params or None).rowcount == 1, sql


ROW = "seq = 2 AND session = (SELECT id FROM nbs_sessions WHERE session_id = 's')"
S1 = "seq = 1 AND session = (SELECT id FROM nbs_sessions WHERE session_id = 's')"

# column -> (SQL that changes it to another plausible value, the reference the row answers to then)
EDITS: dict[str, tuple[str, str]] = {
    "state": (
        "UPDATE nbs_checkpoints SET state = convert_to(replace(convert_from(state, 'UTF8'), 'NOTE-2', 'NOTE-9'), "
        f"'UTF8') WHERE {ROW}",
        "s@2",
    ),
    "chunks": (
        f"UPDATE nbs_checkpoints SET chunks = (SELECT chunks FROM nbs_checkpoints WHERE {S1}) WHERE {ROW}",
        "s@2",
    ),
    "metadata": (
        f"UPDATE nbs_checkpoints SET metadata = convert_to('{{\"run\":7}}', 'UTF8') WHERE {ROW}",
        "s@2",
    ),
    "modules": (f"UPDATE nbs_checkpoints SET modules = ARRAY['note', 'memory'] WHERE {ROW}", "s@2"),
    "created_at": (
        f"UPDATE nbs_checkpoints SET created_at = '2001-01-01T00:00:00+00:00' WHERE {ROW}",
        "s@2",
    ),
    "seq": (f"UPDATE nbs_checkpoints SET seq = 7 WHERE {ROW}", "s@7"),
    "parent": (f"UPDATE nbs_checkpoints SET parent = 3 WHERE {ROW}", "s@2"),
    "size": (f"UPDATE nbs_checkpoints SET size = size + 1 WHERE {ROW}", "s@2"),
    "label": (f"UPDATE nbs_checkpoints SET label = 'end' WHERE {ROW}", "s@2"),
    "session": (
        f"UPDATE nbs_checkpoints SET session = (SELECT id FROM nbs_sessions WHERE session_id = 't') WHERE {ROW}",
        "t@2",
    ),
}


def _refused(exc: BaseException, store: nbs.BaseStore, ref: str, what: str = "hash") -> None:
    text = str(exc)
    assert isinstance(exc, StoreCorruptedError), repr(exc)
    assert store.location in text and ref in text and what in text, text
    assert "delete" in text or "restore" in text, text


@pytest.mark.parametrize("column", sorted(EDITS))
def test_a_hand_edited_checkpoint_column_is_refused(pg_url: str, column: str) -> None:
    store = _store(pg_url)
    sql, ref = EDITS[column]
    _sql(pg_url, sql)
    store = nbs.open_store(pg_url)

    with pytest.raises(StoreCorruptedError) as err:
        store.load(ref, memory=InMemoryMemory(), note=Box())
    _refused(err.value, store, ref)
    with pytest.raises(StoreCorruptedError) as err:
        views.messages(store, ref)
    _refused(err.value, store, ref)
    listed = {row["ref"]: row for _, row in views.history(store, ref.split("@")[0]).iterrows()}
    if column not in ("state", "chunks"):  # the facts half of the hash, checked by a listing
        assert json.loads(listed[ref]["metadata"]) == {"corrupted": True}
        assert "end" not in {r["label"] for r in listed.values()}
        with pytest.raises(StoreCorruptedError) as err:  # a damaged row is never re-sealed
            store.label(ref, "sealed")
        _refused(err.value, store, ref)

    assert store.get_state("s@1")["note"]["value"]["tag"] == "NOTE-1"
    assert store.get_state("s@3")["note"]["value"]["tag"] == "NOTE-3"
    store.delete(ref)
    assert {cp.ref for cp in store.history("s")} >= {"s@1", "s@3"}


def test_a_relabel_computes_the_hash_anew(pg_url: str) -> None:
    store = _store(pg_url)
    store.label("s@3", "end")
    store.label("s@2", None)
    again = nbs.open_store(pg_url)
    assert [(cp.seq, cp.label) for cp in again.history("s")] == [(1, None), (2, None), (3, "end")]
    assert again.get_state("s@end")["note"]["value"]["tag"] == "NOTE-3"
    assert again.get_state("s@2")["note"]["value"]["tag"] == "NOTE-2"


def test_a_hand_edited_entry_is_refused_by_its_content_hash_naming_the_checkpoint(
    pg_url: str,
) -> None:
    store = _store(pg_url)
    with psycopg.connect(
        pg_url, autocommit=True
    ) as conn:  # the entry of @2 and that of @3 (other times)
        conn.execute(
            "UPDATE nbs_blobs SET data = convert_to(replace(convert_from(data, 'UTF8'), 'message 040', "
            "'message 099'), 'UTF8') WHERE convert_from(data, 'UTF8') LIKE '%message 040%'"
        )
    store = nbs.open_store(pg_url)
    assert len(store.get_state("s@1")["memory"]["content"]) == 40  # holds no message 040
    for ref in ("s@2", "s@3"):
        with pytest.raises(StoreCorruptedError) as err:
            store.get_state(ref)
        _refused(err.value, store, f"checkpoint {ref}", "content hash")


def test_a_hand_edited_session_row_is_not_listed_and_not_written_to(pg_url: str) -> None:
    store = _store(pg_url)
    _sql(pg_url, "UPDATE nbs_sessions SET session_id = 'u' WHERE session_id = 't'")
    store = nbs.open_store(pg_url)
    with pytest.warns(RuntimeWarning, match="no session"):
        assert [i.session_id for i in store.sessions()] == ["s"]
    with pytest.raises(StoreCorruptedError, match="does not match its hash"):
        store.save("u", note=Box({"tag": "x"}))
