"""The PostgreSQL store's connection pool: reuse, clean returns, broken connections, fork, exit."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

import nb_sessions as nbs

from ..conftest import Box

ROOT = Path(__file__).resolve().parents[2]


def _backends(url: str) -> list[int]:
    """The pids of the other connections to ``url``'s database (the store's, in these tests)."""
    with psycopg.connect(url, autocommit=True, application_name="nbs-test-probe") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name <> 'nbs-test-probe' AND backend_type = 'client backend' ORDER BY pid"
        ).fetchall()
    return [int(r[0]) for r in rows]


def test_operations_reuse_one_connection(pg_url: str) -> None:
    store = nbs.PostgresStore(pg_url)
    store.save("s", agent=Box(0))
    first = _backends(pg_url)
    for i in range(5):
        store.save("s", agent=Box(i))
        assert store.get_state("s")["agent"]["value"] == i
        store.history("s")
    assert len(first) == 1
    assert _backends(pg_url) == first  # the same backend served every call
    store.close()
    assert _backends(pg_url) == []


async def test_concurrent_calls_stay_within_pool_size(pg_url: str) -> None:
    store = nbs.PostgresStore(pg_url, pool_size=2)
    await store.asave("warm", agent=Box(0))
    seen: set[int] = set()

    async def save(i: int) -> None:
        await store.asave(f"s{i}", agent=Box(i))
        seen.update(await asyncio.to_thread(_backends, pg_url))

    await asyncio.gather(*(save(i) for i in range(12)))
    assert 1 <= len(seen) <= 2
    assert len(await store.asessions()) == 13
    await store.aclose()


async def test_a_connection_comes_back_idle_and_in_the_default_isolation(pg_url: str) -> None:
    store = nbs.PostgresStore(pg_url, pool_size=1)
    await store.asave("s", agent=Box(1))
    await store.aload("s", agent=Box())  # reads in REPEATABLE READ
    await store.ahistory("s")  # reads outside an explicit transaction
    async with store._connect() as conn:
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.isolation_level is None
        assert not conn.autocommit
        cur = await conn.execute("SHOW transaction_isolation")
        assert (await cur.fetchone())[0] == "read committed"
    await store.aclose()


def test_a_killed_backend_is_never_handed_out_again(pg_url: str) -> None:
    store = nbs.PostgresStore(pg_url, retries=0)  # no retry: the pool alone must not give it out
    store.save("s", agent=Box(1))
    killed = _backends(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for pid in killed:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.save("s", agent=Box(2)).seq == 2
    assert store.get_state("s")["agent"]["value"] == 2
    assert not set(_backends(pg_url)) & set(killed)
    store.close()


def test_a_forked_child_opens_its_own_connections(pg_url: str) -> None:
    store = nbs.PostgresStore(pg_url, retries=0)
    store.save("s", agent=Box(0))
    parent = _backends(pg_url)
    pid = os.fork()
    if pid == 0:  # the child: saves through a connection of its own, then exits at once
        try:
            ok = store.save("child", agent=Box(1)).seq == 1
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's connection is intact: no retry allowed, the same backend serves it.
    assert store.save("s", agent=Box(2)).seq == 2
    assert _backends(pg_url) == parent
    assert store.get_state("child")["agent"]["value"] == 1
    store.close()


def test_pools_close_at_exit_without_warnings(pg_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        import nb_sessions as nbs
        from tests.conftest import Box

        store = nbs.PostgresStore({pg_url!r})
        store.save("sync", agent=Box(1))

        async def main():
            await store.asave("own-loop", agent=Box(2))

        asyncio.run(main())
        other = nbs.PostgresStore({pg_url!r})
        other.save("closed", agent=Box(3))
        other.close()
        assert other.history("closed")[0].seq == 1  # a closed store opens a new pool when used
        print(len(store.sessions()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert done.stderr == ""
    assert _backends(pg_url) == []


def test_an_unreachable_server_is_named_on_every_call_as_a_direct_connection_names_it() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = nbs.PostgresStore(
        f"postgresql://postgres@127.0.0.1:{port}/postgres", retries=1, retry_delay=0.01
    )
    for call in (store.sessions, lambda: store.save("s", agent=Box(1)), store.sessions):
        with pytest.raises(
            nbs.StoreError, match=r"(?s)cannot connect .*refused.*check the server runs"
        ):
            call()
    store.close()


def test_after_an_outage_the_store_pools_again() -> None:
    """Down, the store connects directly; back, it uses its pool again, also after the pool gave up."""
    import time

    from .. import pg_server

    if os.environ.get("NB_SESSIONS_TEST_PG_DSN"):
        pytest.fail(
            "this test stops its own server: unset NB_SESSIONS_TEST_PG_DSN for it", pytrace=False
        )
    with pg_server.own_server() as srv:
        url = pg_server.fresh_database(srv.dsn)
        store = nbs.PostgresStore(url, retries=0)
        store.save("s", agent=Box(1))
        (pool,) = store._pools.by_loop.values()
        pool.pool.reconnect_timeout = 0.5  # the pool gives up its background reconnection soon
        srv.stop()
        with pytest.raises(nbs.StoreError, match="cannot connect"):
            store.save("s", agent=Box(2))
        while pool.reconnecting:  # the pool tries again in the background, then gives up
            time.sleep(0.1)
        srv.start()
        assert store.save("s", agent=Box(3)).seq == 2  # a direct connection: the pool had failed
        for i in range(3):
            assert store.save("s", agent=Box(4 + i)).seq == 3 + i
        assert not pool.failing
        assert len(_backends(url)) == 1  # pooled again: one connection, kept open
        store.close()
