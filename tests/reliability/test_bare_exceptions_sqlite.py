"""Class 6 of issue 12, SQLite part: lone surrogates (half an emoji) never end in a bare exception."""

from __future__ import annotations

from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg
from tests.conftest import Box

HALF = "cut \ud83d here"  # the first half of a streamed emoji


async def test_a_message_with_a_lone_surrogate_leaves_search_working(tmp_path: Path) -> None:
    mem = InMemoryMemory()
    filler = [Msg("user", f"filler {i}", "user", id=f"f{i}") for i in range(40)]  # a long list: stored by entry
    for msg in [*filler, Msg("user", HALF, "user", id="half"), Msg("user", "hello world", "user", id="hi")]:
        await mem.add(msg)
    store = nbs.SQLiteStore(tmp_path / "s.db")
    await store.asave("s", memory=mem)
    assert len(await store.asearch("hello")) == 1
    assert len(await store.asearch("cut")) == 1
    assert len(await store.asearch(HALF)) == 1  # the query itself may hold one
    await store.asearch("\ud83d")  # too short for the index: a scan of the raw bytes; no bare error
    assert len(await store.asearch("\udc00x")) == 0
    messages = {m["id"]: m for m, _ in (await store.aget_state("s"))["memory"]["content"]}
    assert messages["half"]["content"] == HALF


def test_metadata_with_a_lone_surrogate_round_trips(tmp_path: Path) -> None:
    store = nbs.SQLiteStore(tmp_path / "s.db")
    store.save("s", box=Box(1), metadata={"note": HALF, HALF: 1})
    metadata = nbs.SQLiteStore(tmp_path / "s.db").history("s")[-1].metadata
    assert (metadata["note"], metadata[HALF]) == (HALF, 1)


@pytest.mark.parametrize("where", ["session", "user", "label"])
def test_ids_and_labels_with_a_lone_surrogate_are_a_named_error(tmp_path: Path, where: str) -> None:
    store = nbs.SQLiteStore(tmp_path / "s.db")
    store.save("ok", box=Box(1))
    save = {
        "session": lambda: store.save("a\ud83d", box=Box(1)),
        "user": lambda: store.save("s", box=Box(1), user_id="u\ud83d"),
        "label": lambda: store.save("s", box=Box(1), label="l\ud83d"),
    }[where]
    read = {
        "session": lambda: store.history("a\ud83d"),
        "user": lambda: store.history("s", user_id="u\ud83d"),
        "label": lambda: store.load("ok@l\ud83d"),
    }[where]
    with pytest.raises(nbs.NbSessionsError):
        save()
    with pytest.raises(nbs.NbSessionsError):
        read()
    assert len(store.search("x\ud83d")) == 0


@pytest.mark.parametrize("value", [b"\xff\x00", "x", 0, -3, 2.5, None])
def test_a_garbled_next_seq_refuses_the_save_by_name_and_writes_nothing(tmp_path: Path, value: object) -> None:
    """Found by the hostile-store fuzzer (seed 59): ``int(b'\\xff\\x00')`` escaped as a bare ValueError."""
    import sqlite3 as _sqlite3

    from nb_sessions.errors import StoreCorruptedError

    path = tmp_path / "s.db"
    store = nbs.open_store(path)
    store.save("a", box=Box(1))
    db = _sqlite3.connect(path)
    try:
        if value is None:  # the schema itself refuses it
            with pytest.raises(_sqlite3.IntegrityError):
                db.execute("UPDATE nbs_sessions SET next_seq = ?", (value,))
            return
        db.execute("UPDATE nbs_sessions SET next_seq = ?", (value,))
        db.commit()
    finally:
        db.close()
    with pytest.raises(StoreCorruptedError, match="next_seq"):
        nbs.open_store(path).save("a", box=Box(2))
    assert [cp.seq for cp in nbs.open_store(path).history("a")] == [1]
