"""Full-text search across sessions and checkpoints, Chinese and short queries included."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.search import SEARCH_COLUMNS
from tests.conftest import TEST_KEY, Box


async def memory_with(texts: list[str]) -> InMemoryMemory:
    mem = InMemoryMemory()
    for i, text in enumerate(texts):
        await mem.add(Msg("user" if i % 2 else "Friday", text, "user" if i % 2 else "assistant", id=f"m{i}"))
    return mem


async def test_search_finds_messages_across_sessions_and_checkpoints(store: nbs.BaseStore) -> None:
    filler = [f"filler message {i}" for i in range(40)]  # long enough to be stored entry by entry
    mem = await memory_with([*filler, "The Q2 report shows revenue +12%", "请用用户的语言回答"])
    await store.asave("alice", memory=mem)
    await mem.add(Msg("user", "another REPORT, later", "user", id="late"))
    await store.asave("alice", memory=mem)
    await store.asave("bob", memory=await memory_with(["short chat about the report"]))

    df = await store.asearch("report")
    assert set(df["message_id"]) == {"m40", "late", "m0"}
    row = df[df["message_id"] == "m40"].iloc[0]
    assert (row["session"], row["checkpoints"], row["first_seq"], row["last_seq"]) == ("alice", "1-2", 1, 2)
    assert row["path"] == "memory" and "Q2 report" in row["snippet"]
    assert df[df["message_id"] == "late"].iloc[0]["checkpoints"] == "2"
    assert list(df.columns) == list(SEARCH_COLUMNS)

    assert list((await store.asearch("用户的"))["message_id"]) == ["m41"]  # trigram, Chinese
    assert list((await store.asearch("用户"))["message_id"]) == ["m41"]  # two characters: scanned
    assert list((await store.asearch("Q2"))["message_id"]) == ["m40"]
    assert set((await store.asearch("report", session="bob"))["session"]) == {"bob"}
    assert (await store.asearch("nowhere to be found")).empty


async def test_search_sees_in_place_edits_and_forgets_deleted_checkpoints(store: nbs.BaseStore) -> None:
    mem = await memory_with([f"line {i}" for i in range(40)])
    await store.asave("s", memory=mem)
    assert len(await store.asearch("line 7")) == 1
    (await mem.get_memory())[7].content = "rewritten text"
    await store.asave("s", memory=mem)
    assert (await store.asearch("rewritten"))["checkpoints"].tolist() == ["2"]
    assert (await store.asearch("line 7"))["checkpoints"].tolist() == ["1"]
    await store.adelete("s@1")
    assert (await store.asearch("line 7")).empty
    assert len(await store.asearch("rewritten")) == 1


def test_sync_search_and_plain_states(store: nbs.BaseStore) -> None:
    box = Box({"memory": {"content": [[{"id": "x", "name": "n", "role": "user", "content": "needle here"}, []]]}})
    store.save("s", box=box)
    df = store.search("NEEDLE")
    assert df["path"].tolist() == ["box.value.memory"] and df["role"].tolist() == ["user"]


async def test_search_finds_agentscope_2x_messages_short_and_long_contexts(store: nbs.BaseStore) -> None:
    import copy
    import json
    from pathlib import Path

    sample = json.loads((Path(__file__).parent.parent / "data" / "agentscope_2.0.11_agent_state.json").read_text())
    await store.asave("two", agent=Box(sample))
    long_state = copy.deepcopy(sample)
    filler = copy.deepcopy(sample["context"][0])
    for i in range(40):  # long enough to be stored entry by entry
        long_state["context"].insert(0, {**filler, "id": f"f{i}", "content": [{**filler["content"][0], "text": f"filler {i}"}]})
    await store.asave("two-long", agent=Box(long_state))

    for query in ("Sunny, 21C", "get_weather", "paris"):
        df = await store.asearch(query)
        assert set(df["session"]) == {"two", "two-long"}, query
        assert set(df["path"]) == {"agent.value"}
    reply = (await store.asearch("sunny")).iloc[0]
    assert reply["message_id"] == "025e8ae05c9e4b909a7c122bf925125b"
    hint = await store.asearch("current-time>2026-11-29")
    assert set(hint["message_id"]) == {"025e8ae05c9e4b909a7c122bf925125b"}, "a hint is text the model read"


async def test_search_finds_2x_text_in_every_block_kind_that_holds_text(store: nbs.BaseStore) -> None:
    import base64
    import json
    from pathlib import Path

    sample = json.loads((Path(__file__).parent.parent / "data" / "agentscope_2.0.11_agent_state.json").read_text())
    reply = sample["context"][1]
    note = base64.b64encode(b"quarterly figures attached").decode()
    reply["content"] += [
        {"type": "hint", "hint": [{"type": "text", "text": "listed hint words"}], "id": "h2"},
        {"type": "tool_call", "id": "c9", "name": "lookup", "input": '{"term": "zebra crossing"}', "state": "finished"},
        {"type": "tool_result", "id": "c9", "name": "lookup", "output": "plain string output", "state": "success"},
        {"type": "tool_result", "id": "c8", "name": "lookup",
         "output": [{"type": "text", "text": "nested block output"}], "state": "success"},
        {"type": "data", "id": "d1", "name": "report.txt",
         "source": {"type": "base64", "media_type": "text/plain", "data": note}},
    ]
    await store.asave("kinds", agent=Box(sample))
    for query in ("listed hint", "zebra crossing", "plain string", "nested block", "quarterly figures",
                  "report.txt", "user wants weather"):
        df = await store.asearch(query)
        assert df["message_id"].tolist() == [reply["id"]], query


def _damage_first_skeleton(store: nbs.BaseStore) -> None:
    """Make s@1's stored skeleton unparseable, by hand, in the store's own files or tables."""
    location = store.location
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location) as conn:
            conn.execute(
                "UPDATE nbs_checkpoints SET state = %s WHERE seq = 1 AND session = "
                "(SELECT id FROM nbs_sessions WHERE session_id = 's')",
                (b"{not json",),
            )
    elif location.endswith(".db"):
        import sqlite3

        with sqlite3.connect(location) as db:
            db.execute("UPDATE nbs_checkpoints SET state = ? WHERE seq = 1", (b"{not json",))
    else:
        (Path(location) / ".nb_sessions" / "s" / "1.json").write_bytes(b"{not json")


@pytest.mark.parametrize(
    "kind", ["sqlite", "json", "postgres", "sqlite-encrypted", "json-encrypted", "postgres-encrypted"]
)
async def test_a_search_says_which_checkpoints_it_could_not_read(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # (An encrypted store's damaged skeleton no longer opens: the same outcome, by another path.)
    key = TEST_KEY if kind.endswith("-encrypted") else None
    if kind.startswith("postgres"):
        store = nbs.open_store(request.getfixturevalue("pg_url"), key=key)
    else:
        store = nbs.open_store(tmp_path / ("s.db" if kind.startswith("sqlite") else "store"), key=key)
    await store.asave("s", memory=await memory_with(["apple pie"]))  # short: kept in the skeleton
    await store.asave("s", memory=await memory_with(["apple tart"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact store answers without a warning
        assert len(await store.asearch("apple")) == 2
    _damage_first_skeleton(store)

    with pytest.warns(nbs.IncompleteSearchWarning, match=r"could not read s@1.*check") as caught:
        found = await store.asearch("apple")
    # The rest still answers (s@1's list entries are intact: its message may still be found).
    assert found[found["snippet"].str.contains("tart")]["checkpoints"].tolist() == ["2"]
    assert found.attrs["unreadable"] == ["s@1"]
    assert caught[0].message.unreadable == ("s@1",)  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_encrypted_search_opens_each_distinct_entry_once_and_finds_what_a_plain_store_finds(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from nb_sessions.crypto import Cipher

    if kind == "postgres":
        from tests import pg_server

        server = request.getfixturevalue("pg_server")
        sealed = nbs.open_store(pg_server.fresh_database(server), key=TEST_KEY)
        plain = nbs.open_store(pg_server.fresh_database(server))
    else:
        sealed = nbs.open_store(tmp_path / "sealed.db", key=TEST_KEY)
        plain = nbs.open_store(tmp_path / "plain.db")
    mem = InMemoryMemory()
    for i in range(20):  # 20 checkpoints sharing their earlier messages: 40 + 3 * 20 distinct entries
        for j in range(40 if i == 0 else 3):
            n = f"{i}-{j}"
            text = "early bird" if n == "0-5" else ("请用用户的语言" if n == "7-1" else f"filler {n}")
            asyncio.run(mem.add(Msg("user", text, "user", id=f"m{n}")))
        for store in (sealed, plain):
            store.save("s", memory=mem, label=f"round {i}")
    opened = 0
    real_open = Cipher.open

    def counting(self: Cipher, *args: object, **kwargs: object) -> bytes:
        nonlocal opened
        opened += 1
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Cipher, "open", counting)
    found = sealed.search("early bird")
    entries = 40 + 3 * 19
    # Each distinct entry once, plus per checkpoint its skeleton (and its metadata and the manifest, listing it).
    assert opened <= entries + 4 * 20, opened
    monkeypatch.setattr(Cipher, "open", real_open)
    for query in ("early bird", "用户", "filler 3-1", "fill"):
        ours, theirs = sealed.search(query), plain.search(query)
        assert ours.drop(columns="snippet").equals(theirs.drop(columns="snippet")), query
    assert list(found["checkpoints"]) == ["1-20"]
