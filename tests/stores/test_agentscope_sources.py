"""AgentScope's own server-side storage opened read-only: real 2.0.11 and 1.0.21 writers, real servers.

AgentScope 2.0.11's ``AsyncSQLAlchemyStorage`` (SQLite and PostgreSQL) and
``RedisStorage`` are driven in this process; 1.0.21's ``RedisSession`` runs
in its own venv through ``agentscope_peer.py``. Every read is checked to
write nothing: the SQLite file is byte-compared, PostgreSQL rows keep their
``xmin``, and the Redis keyspace (values and TTLs) is dumped before and after.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

import nb_sessions as nbs
from nb_sessions import bundle, views
from nb_sessions.errors import (
    ReadOnlyStoreError,
    SessionNotFoundError,
    StoreCorruptedError,
    StoreError,
)
from nb_sessions.stores.agentscope_sources import (
    AgentScope1RedisSource,
    AgentScopeRedisSource,
    AgentScopeSQLSource,
    open_source,
)
from tests.agentscope2 import (
    AgentState,
    AsyncSQLAlchemyStorage,
    Msg,
    RedisStorage,
    SessionConfig,
    TextBlock,
)
from tests.conftest import TEST_KEY
from tests.servers import pg_dsn, redis_server, redis_url  # noqa: F401 - fixtures
from tests.stores.test_agentscope_real import agentscope_python, peer_states  # noqa: F401 - fixture

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "agentscope_2.0.11_agent_state.json"


def agent_state(text: str) -> AgentState:
    """A real 2.0.11 ``AgentState`` (the recorded sample) with one more user message holding ``text``."""
    state = AgentState.model_validate_json(SAMPLE.read_text(encoding="utf-8"))
    state.context.append(Msg(name="user", role="user", content=[TextBlock(text=text)]))
    return state


def dumped(state: AgentState) -> dict[str, Any]:
    return json.loads(state.model_dump_json())


async def fill_storage(storage: Any) -> dict[str, Any]:
    """Two users' sessions through the app's own storage; returns ``{(user, id): AgentState}``."""
    config = SessionConfig(workspace_id="ws-1", name="trip planning")
    first = await storage.upsert_session(
        "u1", "agent-a", config, state=agent_state("draft itinerary")
    )
    latest = agent_state("the Kyoto itinerary, final")
    await storage.update_session_state("u1", "agent-a", first.id, latest)
    await storage.upsert_message("u1", first.id, latest.context[-1])
    other_state = agent_state("a different trip to Oslo")
    other = await storage.upsert_session("u2", "agent-b", config, state=other_state)
    return {("u1", first.id): latest, ("u2", other.id): other_state}


def check_reads(store: nbs.BaseStore, expected: dict[Any, AgentState]) -> None:
    """Every read operation, checked against what the app stored."""
    infos = store.sessions()
    assert {(i.user_id, i.session_id) for i in infos} == set(expected)
    assert all(i.checkpoints == 1 and i.latest_seq == 1 for i in infos)
    for (user, sid), state in expected.items():
        ref = f"{user}/{sid}"
        (cp,) = store.history(ref)
        assert cp.seq == 1 and cp.modules == ("agent",)
        assert cp.metadata["agent_id"] in ("agent-a", "agent-b")
        assert store.get_state(ref) == {"agent": dumped(state)}
        assert store.get_state(f"{ref}@1") == store.get_state(f"{ref}@latest")
        # A real AgentState loads back from what the source returns.
        live = AgentState()
        store.load(ref, agent=live)
        assert live.model_dump(mode="json") == state.model_dump(mode="json")
    # The app's message log, kept apart from the state (only u1's turn was logged).
    assert isinstance(store, (AgentScopeSQLSource, AgentScopeRedisSource))
    for (user, sid), state in expected.items():
        logged = store.transcript(f"{user}/{sid}")
        if user == "u1":
            assert [m["id"] for m in logged] == [state.context[-1].id]
            assert logged[0]["content"][0]["text"] == "the Kyoto itinerary, final"
        else:
            assert logged == []
    with pytest.raises(SessionNotFoundError):
        store.transcript("u1/none-such")
    found = store.search("Kyoto")
    assert set(found["user_id"]) == {"u1"}
    (a, b) = sorted(expected)
    changes = nbs.diff(store, f"{a[0]}/{a[1]}", f"{b[0]}/{b[1]}")
    # The two agents' conversations differ message by message (2.x diffs read the context).
    assert not changes.empty and len(changes.messages) > 0


def check_writes_refused(store: nbs.BaseStore, user: str, sid: str) -> None:
    """Every write names the store as read-only and says to copy it."""
    ref = f"{user}/{sid}"
    attempts: list[Callable[[], Any]] = [
        lambda: store.save(ref, agent=AgentState()),
        lambda: store.delete(ref),
        lambda: store.delete(f"{ref}@1"),
        lambda: store.label(f"{ref}@1", "keep"),
        lambda: store.prune(ref, keep_last=1),
        lambda: store.fork(ref, "copy-of-it"),
        lambda: store.vacuum(),
    ]
    for attempt in attempts:
        with pytest.raises(ReadOnlyStoreError, match=r"read-only.*nb-sessions copy") as info:
            attempt()
        assert info.value.location == store.location


# -- SQLite ---------------------------------------------------------------------------


@pytest.fixture
async def app_db(tmp_path: Path) -> tuple[Path, dict[Any, AgentState]]:
    path = tmp_path / "app.db"
    async with AsyncSQLAlchemyStorage(f"sqlite+aiosqlite:///{path}") as storage:
        expected = await fill_storage(storage)
    return path, expected


def files_of(path: Path) -> dict[str, bytes]:
    """The database and any journal beside it, byte for byte."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.glob(path.name + "*"))}


async def test_agentscope_sqlite_database_reads_and_never_changes(
    app_db: tuple[Path, dict[Any, AgentState]],
) -> None:
    path, expected = app_db
    before = files_of(path)
    store = nbs.open_store(f"agentscope+sqlite:///{path}")
    assert isinstance(store, AgentScopeSQLSource)
    await asyncio.to_thread(check_reads, store, expected)
    user, sid = next(iter(expected))
    await asyncio.to_thread(check_writes_refused, store, user, sid)
    assert files_of(path) == before


async def test_opening_an_agentscope_database_by_path_reads_it_in_place(
    app_db: tuple[Path, dict[Any, AgentState]],
) -> None:
    path, expected = app_db
    before = files_of(path)
    store = nbs.open_store(path)
    assert isinstance(store, AgentScopeSQLSource)
    assert {(i.user_id, i.session_id) for i in store.sessions()} == set(expected)
    # SQLiteStore itself refuses it, pointing to the source, and adds no table.
    with pytest.raises(StoreError, match=r"AgentScope 2\.x app database.*agentscope\+sqlite:///"):
        nbs.SQLiteStore(path).sessions()
    with pytest.raises(StoreError, match="never adds"):
        nbs.SQLiteStore(path).save("s", agent=AgentState())
    # A key cannot apply to the app's own file: refused by name, never silently ignored.
    with pytest.raises(nbs.KeyRequiredError, match=r"app\.db is an AgentScope app's own storage.*does not apply"):
        nbs.open_store(path, key=TEST_KEY)
    assert files_of(path) == before


async def test_sqlite_store_never_migrates_another_apps_database(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "inventory.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    before = files_of(path)
    with pytest.raises(
        StoreError, match=r"another application's SQLite database \(tables: items\).*new file"
    ):
        nbs.open_store(path).save("s", agent=AgentState())
    assert files_of(path) == before
    # An empty file is a new store, as before.
    empty = tmp_path / "new.db"
    empty.touch()
    nbs.open_store(empty).save("s", agent=AgentState())
    assert [c.seq for c in nbs.open_store(empty).history("s")] == [1]


async def test_a_missing_session_and_a_missing_database_are_named(
    app_db: tuple[Path, dict[Any, AgentState]], tmp_path: Path
) -> None:
    path, _ = app_db
    store = nbs.open_store(f"agentscope+sqlite:///{path}")
    with pytest.raises(SessionNotFoundError, match="no session 'u1/nope'"):
        await store.ahistory("u1/nope")
    gone = open_source(f"agentscope+sqlite:///{tmp_path / 'absent.db'}")
    with pytest.raises(StoreError, match="no AgentScope database at"):
        await gone.asessions()
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(StoreError, match="unknown AgentScope storage address"):
        nbs.open_store("agentscope+mysql://x/y")


# -- PostgreSQL -------------------------------------------------------------------------


def pg_rows(dsn: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        sessions = conn.execute(
            "SELECT xmin::text, id, updated_at, payload::text FROM sessions ORDER BY id"
        )
        messages = conn.execute(
            "SELECT xmin::text, session_id, msg_id, payload::text FROM messages ORDER BY 2, 3"
        )
        return [*sessions.fetchall(), *messages.fetchall()]


async def test_agentscope_postgresql_database_reads_and_never_changes(pg_dsn: str) -> None:  # noqa: F811
    sa_url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    async with AsyncSQLAlchemyStorage(sa_url) as storage:
        expected = await fill_storage(storage)
    before = await asyncio.to_thread(pg_rows, pg_dsn)
    store = nbs.open_store(pg_dsn.replace("postgresql://", "agentscope+postgresql://", 1))
    assert isinstance(store, AgentScopeSQLSource)
    await asyncio.to_thread(check_reads, store, expected)
    user, sid = next(iter(expected))
    await asyncio.to_thread(check_writes_refused, store, user, sid)
    assert await asyncio.to_thread(pg_rows, pg_dsn) == before


# -- Redis ------------------------------------------------------------------------------


def keyspace(url: str) -> dict[bytes, tuple[bytes, bytes | None, int]]:
    """Every key: its type, its DUMP (value) and its remaining TTL in ms."""
    client = redis.Redis.from_url(url)
    try:
        return {
            key: (client.type(key), client.dump(key), client.pttl(key))  # type: ignore[misc]
            for key in client.scan_iter(count=1000)
        }
    finally:
        client.close()


def shorten_ttls(url: str, ms: int) -> None:
    """Give every expiring key a TTL below the app's: a read that slid it would raise it back."""
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(count=1000):
        if client.pttl(key) > 0:
            client.pexpire(key, ms)
    client.close()


def assert_untouched(before: dict[bytes, Any], after: dict[bytes, Any]) -> None:
    assert set(after) == set(before)
    for key, (kind, value, ttl) in before.items():
        kind2, value2, ttl2 = after[key]
        assert (kind2, value2) == (kind, value), key
        assert (ttl2 < 0) == (ttl < 0) and ttl2 <= ttl, f"{key!r}: TTL went from {ttl} to {ttl2} ms"


async def test_agentscope2_redis_storage_reads_and_never_changes(redis_url: str) -> None:  # noqa: F811
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with RedisStorage(host="127.0.0.1", port=port, key_ttl=3600) as storage:
        expected = await fill_storage(storage)
    shorten_ttls(redis_url, 1_000_000)  # 1000 s, below the app's 3600 s
    before = keyspace(redis_url)
    assert any(ttl > 0 for _, _, ttl in before.values())
    store = nbs.open_store("agentscope+" + redis_url)
    await asyncio.to_thread(check_reads, store, expected)
    user, sid = next(iter(expected))
    await asyncio.to_thread(check_writes_refused, store, user, sid)
    assert_untouched(before, keyspace(redis_url))
    # Session times are the record's local-time stamps, in UTC.
    (cp,) = store.history(f"{user}/{sid}")
    assert cp.created_at.tzinfo is not None and cp.created_at.year > 2000


async def test_agentscope1_redis_session_keys_read_without_sliding_ttls(
    agentscope_python: str,  # noqa: F811 - the fixture imported above
    redis_server: int,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = f"redis://127.0.0.1:{redis_server}/0"
    redis.Redis.from_url(url).flushall()
    written = await asyncio.to_thread(
        peer_states,
        agentscope_python,
        "redis-write",
        str(redis_server),
        "trip:42",
        "--user",
        "u@example.com",
        "--prefix",
        "prod:",
        "--ttl",
        "3600",
    )
    await asyncio.to_thread(
        peer_states,
        agentscope_python,
        "redis-write",
        str(redis_server),
        "other",
        "--prefix",
        "staging:",
    )
    shorten_ttls(url, 1_000_000)
    before = keyspace(url)
    assert b"prod:user_id:u@example.com:session:trip:42:state" in before
    store = nbs.open_store(f"agentscope1+{url}?prefix=prod:")
    assert isinstance(store, AgentScope1RedisSource)
    (info,) = store.sessions()  # the staging: key is another app's
    assert (info.user_id, info.session_id) == ("u@example.com", "trip:42")
    key = nbs.stores.SessionKey("u@example.com", "trip:42")
    assert store.get_state(key) == written
    assert store.history(key)[0].modules == ("agent", "notebook")
    assert len(views.messages(store, key)) == len(written["agent"]["memory"]["content"])
    assert len(store.search("Paris")) > 0 or len(store.search("trip")) > 0
    with pytest.raises(ReadOnlyStoreError):
        store.save(key, agent=AgentState())
    # A snapshot into a store of one's own keeps the ids as they are ('@' and ':' included).
    mine = nbs.open_store(tmp_path / "snapshot.db")
    bundle.copy_sessions(store, mine)
    assert mine.get_state(key) == written
    assert_untouched(before, keyspace(url))


async def test_a_redis_server_that_is_down_is_named() -> None:
    from tests.servers import free_port

    store = nbs.open_store(f"agentscope+redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreError, match="is the Redis server up"):
        await store.asessions()


# -- CLI and copy ----------------------------------------------------------------------


async def test_cli_reads_a_source_and_copies_it_into_a_store(
    app_db: tuple[Path, dict[Any, AgentState]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nb_sessions.cli import main

    path, expected = app_db
    url = f"agentscope+sqlite:///{path}"
    before = files_of(path)
    (user, sid), state = next(iter(sorted(expected.items())))
    ref = f"{user}/{sid}"
    other = next(f"{u}/{s}" for u, s in expected if u != user)
    for argv in (
        ["ls"],
        ["show", ref],
        ["messages", ref],
        ["search", "Kyoto"],
        ["history", ref],
        ["diff", ref, other],
        ["check"],
    ):
        assert await asyncio.to_thread(main, ["--store", url, *argv]) == 0, argv
    out = capsys.readouterr().out
    assert sid in out and "Kyoto" in out and "all readable" in out
    assert await asyncio.to_thread(main, ["--store", url, "prune", "--keep-last", "1"]) == 1
    assert "read-only" in capsys.readouterr().err
    target = tmp_path / "mine.db"
    assert await asyncio.to_thread(main, ["copy", url, str(target)]) == 0
    mine = nbs.open_store(target)
    assert {(i.user_id, i.session_id) for i in mine.sessions()} == set(expected)
    assert mine.get_state(ref) == {"agent": dumped(state)}
    assert mine.history(ref)[0].metadata["agent_id"] == "agent-a"
    # From here on the copy has a history of its own.
    copy_state = copy.deepcopy(state)
    mine.save(ref, agent=copy_state, label="after-copy")
    assert [c.seq for c in mine.history(ref)] == [1, 2]
    assert files_of(path) == before


def test_addresses_follow_sqlalchemys_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_source("agentscope+sqlite+aiosqlite:///data/app.db")
    assert (
        isinstance(relative, AgentScopeSQLSource) and relative.path == tmp_path / "data" / "app.db"
    )
    absolute = open_source("agentscope+sqlite:////srv/app.db")
    assert isinstance(absolute, AgentScopeSQLSource) and absolute.path == Path("/srv/app.db")
    pg = open_source("agentscope+postgresql+asyncpg://app:s3cret@db:5432/prod")
    assert isinstance(pg, AgentScopeSQLSource) and pg.dsn == "postgresql://app:s3cret@db:5432/prod"
    assert "s3cret" not in pg.location and "s3cret" not in repr(pg)
    two = open_source("agentscope+redis://:pw@cache:6380/2")
    assert isinstance(two, AgentScopeRedisSource) and "pw" not in two.location
    one = open_source("agentscope1+redis://cache/0?prefix=a*b:")
    assert isinstance(one, AgentScope1RedisSource)
    assert one._parse_key("a*b:user_id:u:1:session:s:state") == ("u:1", "s")
    assert one._parse_key("axb:user_id:u:session:s:state") is None
    for bad in (
        "agentscope+sqlite://app.db",
        "agentscope1+sqlite:///app.db",
        "agentscope+mysql://h/db",
    ):
        with pytest.raises(StoreError, match="agentscope\\+sqlite:///"):
            open_source(bad)


async def test_damaged_rows_are_named_by_row_and_still_listed(
    app_db: tuple[Path, dict[Any, AgentState]],
) -> None:
    import sqlite3

    path, expected = app_db
    (user, sid), (user2, sid2) = sorted(expected)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sessions SET payload = ? WHERE id = ?", ('{"config": {}}', sid))
        conn.execute("UPDATE sessions SET payload = ? WHERE id = ?", ("not json", sid2))
    store = nbs.open_store(path)
    assert len(store.sessions()) == 2
    with pytest.raises(StoreCorruptedError, match=f"sessions row '{sid}'.*no AgentState"):
        store.get_state(f"{user}/{sid}")
    with pytest.raises(StoreCorruptedError, match=f"sessions row '{sid2}'") as info:
        store.get_state(f"{user2}/{sid2}")
    assert sid2 in info.value.location
