"""docs/postgres.md holds true on a real server: its role SQL, its backup commands, its errors.

The SQL is read from the page itself, so the page and these tests cannot drift apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.errors import StoreError

from .. import pg_server as pg_server_module

DOC = Path(__file__).resolve().parents[2] / "docs" / "postgres.md"
PASSWORD = "change-me"  # the page's placeholder (unused by the throwaway server, which trusts)


def doc_sql() -> list[str]:
    """The page's ```sql blocks, in order: roles and database, default privileges, grants on existing tables."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 3, "docs/postgres.md: expected three ```sql blocks (see doc_sql)"
    return blocks


def statements(block: str) -> list[str]:
    return [s.strip() for s in block.split(";") if s.strip()]


class Deployment:
    """The page's roles and database, under names of this test's own (roles are server-wide)."""

    def __init__(self, admin: str) -> None:
        self.admin = admin
        tag = uuid.uuid4().hex[:8]
        self.names = {r: f"{r}_{tag}" for r in ("nbs_owner", "nbs_rw", "nbs_ro")}
        self.database = f"agents_{tag}"

    def sql(self, block: str) -> list[str]:
        out = re.sub(r"\b(nbs_owner|nbs_rw|nbs_ro)\b", lambda m: self.names[m.group(1)], block)
        return statements(re.sub(r"\bDATABASE agents\b", f"DATABASE {self.database}", out))

    def url(self, role: str | None = None, database: str | None = None) -> str:
        """The admin URL, or the one of ``role`` (with the page's password), on ``database``."""
        parts = urlsplit(self.admin)
        netloc = parts.netloc
        if role is not None:
            netloc = f"{self.names[role]}:{PASSWORD}@{netloc.rpartition('@')[2]}"
        return urlunsplit(parts._replace(netloc=netloc, path="/" + (database or self.database)))

    def run(self, block: str, *, in_database: bool = True) -> None:
        with psycopg.connect(self.url() if in_database else self.admin, autocommit=True) as conn:
            for sql in self.sql(block):
                conn.execute(sql)

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            for role in self.names.values():
                conn.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def deployment(pg_server: str) -> Iterator[Deployment]:
    dep = Deployment(pg_server)
    dep.run(doc_sql()[0], in_database=False)  # the roles and the database the owner owns
    try:
        yield dep
    finally:
        dep.drop()


async def memory(texts: list[str]) -> InMemoryMemory:
    mem = InMemoryMemory()
    for i, text in enumerate(texts):
        await mem.add(Msg("user", text, "user", id=f"m{i}"))
    return mem


def table_owners(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename, tableowner FROM pg_tables WHERE tablename LIKE 'nbs\\_%'"
        ).fetchall()
    return dict(rows)


async def test_the_documented_roles_owner_migrates_read_write_saves_read_only_browses(
    deployment: Deployment,
) -> None:
    deployment.run(doc_sql()[1])  # default privileges, before any table exists
    owner = nbs.open_store(deployment.url("nbs_owner"))
    texts = [f"filler {i}" for i in range(30)] + ["the quarterly report", "请用用户的语言回答"]
    mem = await memory(texts)
    await owner.asave("alice", memory=mem)
    owners = table_owners(deployment.url())
    assert set(owners) == {
        "nbs_migrations", "nbs_sessions", "nbs_checkpoints", "nbs_blobs", "nbs_segments", "nbs_meta", "nbs_search"
    }
    assert set(owners.values()) == {deployment.names["nbs_owner"]}
    with psycopg.connect(deployment.url()) as conn:  # the owner may create the trusted extension
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()

    rw = nbs.open_store(deployment.url("nbs_rw"))
    assert "change-me" not in rw.location
    for k, extra in enumerate(("more", "and more", "the last one")):
        texts.append(extra)
        await mem.add(Msg("user", extra, "user", id=f"x{k}"))
        await rw.asave("alice", memory=mem)
    await rw.asave("bob", memory=await memory(["bob's report"]))
    await rw.alabel("alice@2", "reviewed")
    assert await rw.adelete("alice@1") == 1
    await rw.aprune("alice", keep_last=2)
    await rw.avacuum()
    assert set((await rw.asearch("report"))["session"]) == {"alice", "bob"}
    with (
        psycopg.connect(deployment.url("nbs_rw")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("ALTER TABLE nbs_blobs ADD COLUMN nope int")  # no schema changes
    history = [(cp.seq, cp.label) for cp in await rw.ahistory("alice")]
    assert history == [(2, "reviewed"), (3, None), (4, None)]

    ro = nbs.open_store(deployment.url("nbs_ro"))
    assert sorted(s.session_id for s in await ro.asessions()) == ["alice", "bob"]
    target = InMemoryMemory()
    await ro.aload("alice", memory=target)
    assert [m.content for m in await target.get_memory()] == texts
    assert list((await ro.asearch("用户的"))["session"]) == ["alice"]
    assert len(nbs.diff(ro, "alice@2", "alice@4").messages) == 2  # "and more", "the last one"
    writes: dict[str, Any] = {
        "save": lambda: ro.asave("alice", memory=target),
        "label": lambda: ro.alabel("alice@3", "mine"),
        "delete": lambda: ro.adelete("alice@2"),
        "prune": lambda: ro.aprune("alice", keep_last=1),
        "vacuum": ro.avacuum,
    }
    for what, write in writes.items():
        with pytest.raises(StoreError, match="may only read") as err:
            await write()
        assert "nothing was written" in str(err.value), what
    assert [(cp.seq, cp.label) for cp in await owner.ahistory("alice")] == history


def test_grants_on_tables_made_before_the_default_privileges(deployment: Deployment) -> None:
    from ..conftest import Box

    nbs.open_store(deployment.url("nbs_owner")).save("alice", agent=Box([1, 2]))
    rw, ro = nbs.open_store(deployment.url("nbs_rw")), nbs.open_store(deployment.url("nbs_ro"))
    with pytest.raises(StoreError, match="may only read"):  # no grants yet: not even rw may write
        rw.save("alice", agent=Box([3]))
    deployment.run(doc_sql()[2])
    assert rw.save("alice", agent=Box([1, 2, 3])).seq == 2
    assert rw.save("carol", agent=Box([0])).seq == 1  # a new session: the id sequence is granted
    assert ro.get_state("alice")["agent"]["value"] == [1, 2, 3]
    with pytest.raises(StoreError, match="may only read"):
        ro.save("alice", agent=Box([4]))


def test_a_url_to_a_closed_port_is_a_named_error_saying_what_to_do() -> None:
    port = pg_server_module.free_port()  # nothing listens there
    store = nbs.open_store(f"postgresql://alice:{PASSWORD}@127.0.0.1:{port}/agents")
    for call in (store.sessions, lambda: store.history("s"), lambda: store.get_state("s")):
        with pytest.raises(StoreError, match="cannot connect") as err:
            call()
        text = str(err.value)
        assert isinstance(err.value, nbs.NbSessionsError)
        assert f"postgresql://alice@127.0.0.1:{port}/agents" in text  # where, without the password
        assert PASSWORD not in text
        assert "check the server runs and the URL" in text  # what to do


def test_pg_dump_and_pg_restore_of_the_nbs_tables_round_trip_every_checkpoint(
    pg_server: str, pg_url: str, tmp_path: Path
) -> None:
    from ..conftest import Box

    store = nbs.open_store(pg_url)
    for i in range(4):
        store.save(
            "alice", agent=Box([{"role": "user", "content": f"message {j}"} for j in range(i + 40)])
        )
    store.save("bob", None, {"why": "test"}, agent=Box({"plan": "报告"}))
    store.label("alice@2", "reviewed")
    dump = tmp_path / "agents-nbs.dump"
    run = subprocess.run(
        [
            pg_server_module._bin("pg_dump"),
            "--format=custom",
            "--table=nbs_*",
            f"--file={dump}",
            pg_url,
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    restored_url = pg_server_module.fresh_database(pg_server)
    with psycopg.connect(restored_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    run = subprocess.run(
        [pg_server_module._bin("pg_restore"), "--no-owner", f"--dbname={restored_url}", str(dump)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    restored = nbs.open_store(restored_url)

    def everything(s: nbs.BaseStore) -> list[Any]:
        out: list[Any] = []
        for info in sorted(s.sessions(), key=lambda i: i.session_id):
            for cp in s.history(info.session_id):
                out.append(
                    (cp.ref, cp.parent, cp.label, cp.created_at, cp.metadata, s.get_state(cp))
                )
        return out

    assert everything(restored) == everything(store)
    assert len(everything(store)) == 5
    with psycopg.connect(restored_url) as conn:  # the trigram index came back with the extension
        assert conn.execute(
            "SELECT 1 FROM pg_indexes WHERE indexname = 'nbs_search_text_trgm'"
        ).fetchone()
    assert restored.save("alice", agent=Box([1])).seq == 5
    assert restored.save("dave", agent=Box([1])).seq == 1  # the id sequence was restored too


CLIENT = """
import sys, time
from pathlib import Path
import nb_sessions as nbs
from tests.conftest import Box
url, go, who = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
store = nbs.open_store(url)  # opening touches nothing: the first call below migrates
while not go.exists():
    time.sleep(0.01)
print(store.save(who, agent=Box([who] * 50)).ref, flush=True)
"""


def test_clients_starting_together_on_a_new_database_apply_each_migration_once(
    pg_url: str, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENT, pg_url, str(go), f"client{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        for i in range(6)
    ]
    go.touch()  # all of them connect to the empty database at about the same moment
    results = [c.communicate(timeout=120) for c in clients]
    assert [c.returncode for c in clients] == [0] * 6, [err[-2000:] for _, err in results]
    assert sorted(out.strip() for out, _ in results) == [f"client{i}@1" for i in range(6)]
    with psycopg.connect(pg_url) as conn:
        versions = [
            v for (v,) in conn.execute("SELECT version FROM nbs_migrations ORDER BY version")
        ]
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 2


def test_a_role_that_cannot_create_tables_on_an_empty_database_is_told_to_have_the_owner_open_it(
    deployment: Deployment,
) -> None:
    from ..conftest import Box

    deployment.run(doc_sql()[1])  # grants for tables the owner has not made yet
    for role in ("nbs_rw", "nbs_ro"):
        store = nbs.open_store(deployment.url(role))
        for call in (
            store.sessions,
            lambda s=store: s.history("alice"),
            lambda s=store: s.save("alice", agent=Box([1])),
        ):
            with pytest.raises(StoreError, match="has no nb_sessions tables yet") as err:
                call()
            assert "open the store once as the role that owns" in str(err.value), role
            assert deployment.names[role] in str(err.value)
    assert table_owners(deployment.url()) == {}  # nothing was created
    nbs.open_store(deployment.url("nbs_owner")).save("alice", agent=Box([1]))
    assert nbs.open_store(deployment.url("nbs_rw")).save("alice", agent=Box([2])).seq == 2


async def test_a_label_taken_by_another_checkpoint_is_a_conflict_and_other_server_errors_are_named(
    pg_url: str,
) -> None:
    from ..conftest import Box

    store = nbs.open_store(pg_url)
    await store.asave("alice", agent=Box([1]), label="v1")
    await store.asave("alice", agent=Box([2]))
    with pytest.raises(nbs.errors.ConflictError, match="already names another checkpoint"):
        await store.alabel("alice@2", "v1")
    with psycopg.connect(pg_url, autocommit=True) as conn:  # a server error no path expects
        conn.execute("ALTER TABLE nbs_checkpoints RENAME COLUMN size TO size_renamed")
    with pytest.raises(StoreError, match=r"the server refused \(") as err:
        await store.ahistory("alice")
    assert "postgresql://" in str(err.value)


def test_the_documented_roles_on_an_encrypted_store(deployment: Deployment) -> None:
    """The owner creates it with a key; read-write saves and read-only reads and searches with it, never without."""
    import asyncio

    from ..conftest import TEST_KEY

    deployment.run(doc_sql()[1])
    texts = ["the quarterly report"]
    nbs.open_store(deployment.url("nbs_owner"), key=TEST_KEY).save("alice", memory=asyncio.run(memory(texts)))
    rw = nbs.open_store(deployment.url("nbs_rw"), key=TEST_KEY)
    texts.append("more")
    rw.save("alice", memory=asyncio.run(memory(texts)))
    ro = nbs.open_store(deployment.url("nbs_ro"), key=TEST_KEY)
    target = InMemoryMemory()
    ro.load("alice", memory=target)
    assert [m.content for m in asyncio.run(target.get_memory())] == texts
    assert list(ro.search("quarterly")["session"]) == ["alice"]
    with pytest.raises(StoreError, match="may only read"):
        ro.save("alice", memory=target)
    with pytest.raises(nbs.KeyRequiredError, match="encrypted and no key"):
        nbs.open_store(deployment.url("nbs_ro")).history("alice")
    assert [cp.seq for cp in rw.history("alice")] == [1, 2]


def test_a_role_that_cannot_migrate_keeps_a_schema_3_store_plain(deployment: Deployment) -> None:
    """Schema 3 (before encryption) and a read-write role: plain saves go on; a key is refused by name."""
    from ..conftest import TEST_KEY, Box

    deployment.run(doc_sql()[1])
    nbs.open_store(deployment.url("nbs_owner")).save("alice", agent=Box([1]))
    with psycopg.connect(deployment.url("nbs_owner")) as conn:  # back to schema 3, as a store made before it
        conn.execute("ALTER TABLE nbs_meta DROP COLUMN data")
        conn.execute("ALTER TABLE nbs_sessions DROP COLUMN manifest")
        conn.execute("DELETE FROM nbs_migrations WHERE version = 4")
    rw = nbs.open_store(deployment.url("nbs_rw"))
    rw.save("alice", agent=Box([1, 2]))
    assert [cp.seq for cp in rw.history("alice")] == [1, 2] and not rw.encrypted  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="schema version 3; an encrypted store needs 4"):
        nbs.open_store(deployment.url("nbs_rw"), key=TEST_KEY).history("alice")
    with psycopg.connect(deployment.url()) as conn:
        assert conn.execute("SELECT max(version) FROM nbs_migrations").fetchone() == (3,)
