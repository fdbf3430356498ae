"""Deduplicated checkpoints lose nothing: every checkpoint loads equal to what was saved."""

from __future__ import annotations

import copy
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg, ScriptedAgent
from tests.conftest import Box


def blob_count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM nbs_blobs").fetchone()[0])


async def talk(agent: ScriptedAgent, turns: int, start: int = 0) -> None:
    prompts = ["hello", "what is 6*7", "weather in Paris", "plan ship it: build, test, release", "next"]
    for i in range(start, start + turns):
        await agent(Msg("user", f"{prompts[i % len(prompts)]} #{i}", "user"))


async def test_every_checkpoint_of_a_growing_conversation_loads_as_saved(store: nbs.BaseStore) -> None:
    agent = ScriptedAgent("Friday", seed=7)
    expected: dict[int, dict[str, Any]] = {}
    for round_ in range(12):
        await talk(agent, 3, start=round_ * 3)
        cp = await store.asave("chat", agent=agent)
        expected[cp.seq] = copy.deepcopy(agent.state_dict())
    for seq, state in expected.items():
        assert await store.aget_state(f"chat@{seq}") == {"agent": state}, seq
    fresh = ScriptedAgent("Friday")
    await store.aload("chat@5", agent=fresh)
    assert fresh.state_dict() == expected[5]


async def test_in_place_edits_of_stored_messages_reach_the_next_checkpoint(store: nbs.BaseStore) -> None:
    agent = ScriptedAgent("Friday", seed=1)
    await talk(agent, 12)  # long enough for the memory to be stored entry by entry
    first = await store.asave("s", agent=agent)
    before = copy.deepcopy(agent.state_dict())
    msgs = await agent.memory.get_memory()
    _, block = next(
        (m, b) for m in msgs if isinstance(m.content, list) for b in m.content if b.get("type") == "text"
    )
    block["text"] = "edited in place"
    msgs[1].metadata["note"] = {"deep": [1]}
    msgs[2].metadata.setdefault("tags", []).append("x")
    await agent.memory.update_messages_mark("important", msg_ids=[msgs[3].id])
    msgs[4].content = "reassigned"
    second = await store.asave("s", agent=agent)
    assert await store.aget_state(second.ref) == {"agent": agent.state_dict()}
    assert await store.aget_state(first.ref) == {"agent": before}
    saved = (await store.aget_state(second.ref))["agent"]["memory"]["content"]
    assert "edited in place" in str(saved)
    assert saved[1][0]["metadata"] == {"note": {"deep": [1]}}
    assert saved[3][1] == ["important"]


class PlainMemory:
    """A memory nb_sessions did not write: state_dict() rebuilds every message dict."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"content": [[dict(m), []] for m in self.messages]}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        self.messages = [dict(entry[0]) for entry in state["content"]]


async def test_foreign_objects_are_deduplicated_and_changes_detected(store: nbs.BaseStore) -> None:
    mem = PlainMemory()
    mem.messages = [{"id": str(i), "text": f"m{i}", "score": None, "n": i} for i in range(100)]
    a = await store.asave("f", memory=mem)
    mem.messages[10]["text"] = "changed"
    mem.messages[20]["score"] = math.nan  # orjson would write null for NaN, as for the None before
    mem.messages[30]["n"] = 2**70
    mem.messages.append({"id": "new", "text": "new", "score": 1.5, "n": 0})
    b = await store.asave("f", memory=mem)
    got = (await store.aget_state(b.ref))["memory"]["content"]
    assert got[10][0]["text"] == "changed"
    assert math.isnan(got[20][0]["score"])
    assert got[30][0]["n"] == 2**70 and got[100][0]["id"] == "new"
    old = (await store.aget_state(a.ref))["memory"]["content"]
    assert old[10][0]["text"] == "m10" and old[20][0]["score"] is None and len(old) == 100


async def test_entries_are_stored_once_and_garbage_is_collected(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = nbs.SQLiteStore(path)
    box = Box([{"i": i} for i in range(100)])
    for i in range(5):
        box.value.append({"i": 100 + i})
        await store.asave("s", box=box)
    assert blob_count(path) == 105  # not 5 x ~100
    await store.afork("s@2", "t")
    assert blob_count(path) == 105
    await store.adelete("s")
    assert blob_count(path) == 102  # what the fork (s@2) still uses
    assert (await store.aget_state("t"))["box"]["value"] == [{"i": i} for i in range(102)]
    await store.adelete("t")
    assert blob_count(path) == 0


async def test_a_stale_cache_after_another_writer_collected_garbage(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    writer, cleaner = nbs.SQLiteStore(path), nbs.SQLiteStore(path)
    box = Box([{"i": i} for i in range(50)])
    await writer.asave("s", box=box)
    await cleaner.adelete("s")  # removes the entries the writer remembers
    box.value.append({"i": 50})
    cp = await writer.asave("s", box=box)
    assert (await cleaner.aget_state(cp.ref))["box"]["value"] == box.value


@pytest.mark.parametrize("n", [0, 1, 31, 32, 511, 512, 513, 1100])
async def test_list_lengths_around_the_chunk_and_segment_sizes(store: nbs.BaseStore, n: int) -> None:
    box = Box([[i, {"x": "é" * (i % 3)}] for i in range(n)])
    await store.asave("s", box=box)
    box.value = box.value[: n // 2]
    await store.asave("s", box=box)
    assert (await store.aget_state("s@1"))["box"]["value"] == [[i, {"x": "é" * (i % 3)}] for i in range(n)]
    assert (await store.aget_state("s@2"))["box"]["value"] == box.value


async def test_memory_snapshot_matches_state_dict() -> None:
    from nb_sessions.chunks import materialize
    from nb_sessions.state import snapshot

    agent = ScriptedAgent("Friday", seed=3)
    await talk(agent, 5)
    assert materialize({"a": snapshot(agent)}) == {"a": agent.state_dict()}
    assert isinstance(snapshot(agent.memory)["content"], type(snapshot(InMemoryMemory())["content"]))


def pack_lines(folder: Path, stem: str) -> int:
    packs = sorted((folder / ".nb_sessions" / stem).glob("entries-*.jsonl"))
    return sum(len(p.read_bytes().splitlines()) for p in packs)


async def test_json_store_keeps_each_entry_once_and_the_latest_file_whole(tmp_path: Path) -> None:
    import json

    store = nbs.JSONStore(tmp_path)
    box = Box([{"i": i, "t": "é"} for i in range(100)])
    for i in range(5):
        box.value.append({"i": 100 + i})
        await store.asave("s", box=box)
    assert pack_lines(tmp_path, "s") == 105
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8")) == {"box": {"value": box.value}}
    assert (await store.aget_state("s@2"))["box"]["value"] == box.value[:102]
    await store.adelete("s@5")  # the latest file is rebuilt from the history
    assert json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))["box"]["value"] == box.value[:104]
    assert await store.aprune("s", keep_last=1, keep_labeled=False)
    assert pack_lines(tmp_path, "s") == 105  # entries stay until vacuum
    assert await store.avacuum() > 0
    assert pack_lines(tmp_path, "s") == 104
    assert (await store.aget_state("s"))["box"]["value"] == box.value[:104]
    box.value.append({"i": "after vacuum"})
    await nbs.JSONStore(tmp_path).asave("s", box=box)  # a fresh process sees the new generation
    assert (await store.aget_state("s"))["box"]["value"] == box.value


async def test_json_store_cuts_off_what_a_killed_save_appended(tmp_path: Path) -> None:
    store = nbs.JSONStore(tmp_path)
    box = Box([{"i": i} for i in range(40)])
    await store.asave("s", box=box)
    [pack] = (tmp_path / ".nb_sessions" / "s").glob("entries-*.jsonl")
    with open(pack, "ab") as fh:
        fh.write(b'{"half written')  # as if killed mid-append, before the index was committed
    box.value.append({"i": 40})
    cp = await nbs.JSONStore(tmp_path).asave("s", box=box)
    assert (await store.aget_state(cp.ref))["box"]["value"] == box.value
    assert (await store.aget_state("s@1"))["box"]["value"] == box.value[:40]
    assert b"half written" not in pack.read_bytes()


async def test_in_place_edits_of_loaded_messages_reach_the_next_checkpoint(store: nbs.BaseStore) -> None:
    agent = ScriptedAgent("Friday", seed=4)
    await talk(agent, 12)
    await store.asave("s", agent=agent)
    fresh = ScriptedAgent("Friday")
    await store.aload("s", agent=fresh)  # messages built straight from the stored JSON
    await store.asave("s", agent=fresh)
    msgs = await fresh.memory.get_memory()
    msgs[0].content = [{"type": "text", "text": "assigned"}] if isinstance(msgs[0].content, str) else msgs[0].content
    msgs[0].content[0]["text"] = "edited after a load"
    msgs[5].metadata["k"] = "v"
    cp = await store.asave("s", agent=fresh)
    saved = (await store.aget_state(cp.ref))["agent"]["memory"]["content"]
    assert saved[0][0]["content"][0]["text"] == "edited after a load"
    assert saved[5][0]["metadata"] == {"k": "v"}
    assert saved == fresh.state_dict()["memory"]["content"]


async def test_edits_anywhere_in_a_long_memory_reach_the_next_checkpoint(store: nbs.BaseStore) -> None:
    mem = InMemoryMemory()
    mem.content.extend((Msg("u", [{"type": "text", "text": f"m{i}"}], "user", id=f"id{i}"), []) for i in range(1300))
    await store.asave("s", memory=mem)
    expected = [copy.deepcopy(mem.state_dict())]
    for index in (0, 600, 1299):  # first, middle and last segment
        mem.content[index][0].content[0]["text"] = f"edited {index}"
        await store.asave("s", memory=mem)
        expected.append(copy.deepcopy(mem.state_dict()))
    mem.content.insert(3, (Msg("u", "inserted", "user", id="new"), []))  # shifts every run after it
    await store.asave("s", memory=mem)
    expected.append(copy.deepcopy(mem.state_dict()))
    for seq, state in enumerate(expected, start=1):
        assert await store.aget_state(f"s@{seq}") == {"memory": state}, seq


async def test_edits_anywhere_in_a_long_foreign_list_reach_the_next_checkpoint(store: nbs.BaseStore) -> None:
    mem = PlainMemory()
    mem.messages = [{"id": str(i), "text": f"m{i}"} for i in range(1300)]
    await store.asave("s", memory=mem)
    mem.messages[700]["text"] = "edited"
    mem.messages[1299]["extra"] = [1, 2]
    cp = await store.asave("s", memory=mem)
    assert (await store.aget_state(cp.ref)) == {"memory": mem.state_dict()}
    assert (await store.aget_state("s@1"))["memory"]["content"][700][0]["text"] == "m700"


async def test_long_lists_read_in_pieces_come_back_whole_and_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nb_sessions.stores import sqlite_store

    monkeypatch.setattr(sqlite_store, "_PIECE", 100)  # 1,300 entries: 13 pieces, decoded overlapping
    store = nbs.SQLiteStore(tmp_path / "s.db")
    box = Box([{"i": i, "nan": math.nan if i == 777 else 0.5} for i in range(1300)])
    await store.asave("s", box=box)
    got = (await nbs.SQLiteStore(tmp_path / "s.db").aget_state("s"))["box"]["value"]
    assert [g["i"] for g in got] == list(range(1300))
    assert math.isnan(got[777]["nan"]) and got[778]["nan"] == 0.5


async def test_reordered_and_repeated_entries_come_back_in_list_order(store: nbs.BaseStore) -> None:
    # Stored entries keep their first ids; a reordered list refers to them out of id order
    # ([0, 2, 1, 3, ...] spans a gapless range), which must not read as an ascending run.
    items = [{"i": i} for i in range(600)]
    box = Box(items)
    await store.asave("s", box=box)
    box.value = [items[0], items[2], items[1], *items[3:]]
    await store.asave("s", box=box)
    box.value = [items[5]] * 3 + items[:597]
    await store.asave("s", box=box)
    fresh = nbs.open_store(store.location)
    assert (await fresh.aget_state("s@2"))["box"]["value"] == [items[0], items[2], items[1], *items[3:]]
    assert (await fresh.aget_state("s@3"))["box"]["value"] == [items[5]] * 3 + items[:597]
    assert (await fresh.aget_state("s@1"))["box"]["value"] == items


async def test_a_run_too_big_for_one_sqlite_value_is_read_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nb_sessions.stores import sqlite_store

    if not hasattr(sqlite3.Connection, "setlimit"):
        pytest.skip("sqlite3.Connection.setlimit needs Python 3.11")
    path = tmp_path / "s.db"
    box = Box([{"i": i, "pad": "x" * 200} for i in range(1000)])
    await nbs.SQLiteStore(path).asave("s", box=box)
    real_connect, real_queries = sqlite3.connect, sqlite_store._id_queries
    row_reads = 0

    def small_limit(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        # One piece's array (~215 kB) no longer fits in one value on this connection.
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 50_000)
        return conn

    def counting(table: str, column: str, ids: Any) -> Any:
        nonlocal row_reads
        row_reads += table == "nbs_blobs"
        return real_queries(table, column, ids)

    monkeypatch.setattr(sqlite_store.sqlite3, "connect", small_limit)
    monkeypatch.setattr(sqlite_store, "_id_queries", counting)
    assert (await nbs.SQLiteStore(path).aget_state("s"))["box"]["value"] == box.value
    assert row_reads >= 1


async def test_a_long_list_is_read_in_pieces_within_one_snapshot_that_checks_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nb_sessions.stores import sqlite_store

    monkeypatch.setattr(sqlite_store, "_PIECE", 64)  # 700 entries: 11 pieces through the queue
    path = tmp_path / "s.db"
    box = Box([{"i": i} for i in range(700)])
    store = nbs.SQLiteStore(path)
    await store.asave("s", box=box)
    box.value[100] = {"edited": True}  # one piece is no longer an ascending run of ids
    await store.asave("s", box=box)
    assert (await nbs.SQLiteStore(path).aget_state("s@1"))["box"]["value"] == [{"i": i} for i in range(700)]
    assert (await nbs.SQLiteStore(path).aget_state("s@2"))["box"]["value"] == box.value
    # The read's one connection sees another store made at the path since: it refuses to read.
    monkeypatch.setattr(store, "_uid", -1)
    with pytest.raises(nbs.StoreError, match="deleted while open"):
        await store.aget_state("s@1")


async def test_a_damaged_entry_read_by_the_second_connection_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await nbs.SQLiteStore(path).asave("s", box=Box([{"i": i} for i in range(3000)]))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE nbs_blobs SET data = ? WHERE id = 2500", (b"{not json",))
    with pytest.raises(nbs.StoreCorruptedError, match=r"box\.value"):
        await nbs.SQLiteStore(path).aget_state("s")
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM nbs_blobs WHERE id = 2600")
    with pytest.raises(nbs.StoreCorruptedError, match=r"entry 2600 of box\.value is missing"):
        await nbs.SQLiteStore(path).aget_state("s")
