"""PostgreSQL store under many clients: real processes against a real server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

import nb_sessions as nbs
from nb_sessions.errors import StoreError
from nb_sessions.stores import SessionKey

ROOT = Path(__file__).resolve().parents[2]

WRITER = """
import sys
import nb_sessions as nbs
from tests.conftest import Box
url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = nbs.open_store(url)
for i in range(n):
    cp = store.save("shared", None, {"who": who, "i": i}, agent=Box([{"role": "user", "content": f"{who} {j}"} for j in range(i + 20)]))
    print(cp.seq, flush=True)
"""


def _writer(url: str, who: str, n: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, who, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_writers_in_many_processes_get_gap_free_seqs_and_lose_nothing(pg_url: str) -> None:
    procs = [_writer(pg_url, f"w{k}", 8) for k in range(4)]
    acked = set()
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        acked |= {int(line) for line in out.split()}
    store = nbs.open_store(pg_url)
    seqs = [cp.seq for cp in store.history("shared")]
    assert seqs == list(range(1, 33))
    assert acked == set(seqs)
    for cp in store.history("shared"):
        state = store.get_state(cp)
        assert len(state["agent"]["value"]) == cp.metadata["i"] + 20


def test_a_writer_killed_mid_run_commits_nothing_half_done(pg_url: str) -> None:
    victim = _writer(pg_url, "victim", 1000)
    assert victim.stdout is not None
    acked = [int(victim.stdout.readline()) for _ in range(3)]
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    survivor = _writer(pg_url, "survivor", 3)
    survivor.communicate(timeout=120)
    assert survivor.returncode == 0
    store = nbs.open_store(pg_url)
    history = store.history("shared")
    seqs = [cp.seq for cp in history]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap where the killed save was
    assert set(acked) <= set(seqs)
    for cp in history:  # every committed checkpoint is whole
        assert len(store.get_state(cp)["agent"]["value"]) == cp.metadata["i"] + 20


def test_a_retried_save_with_the_same_checkpoint_id_commits_once(pg_url: str) -> None:
    store = nbs.open_store(pg_url)
    assert isinstance(store, nbs.PostgresStore)
    uid = uuid.uuid4()
    key = SessionKey("", "retry")

    async def save() -> nbs.Checkpoint:
        return await store._write(key, {"agent": {"value": 1}}, None, {}, None, uid=uid)

    first = asyncio.run(save())
    again = asyncio.run(save())  # as after a connection lost before the reply
    assert (again.seq, again.created_at) == (first.seq, first.created_at)
    assert [cp.seq for cp in store.history("retry")] == [1]


def test_a_read_only_role_browses_and_gets_a_named_error_on_write(pg_url: str) -> None:
    from ..conftest import Box

    store = nbs.open_store(pg_url)
    store.save("alice", None, {}, agent=Box([1, 2]))
    role = "reader_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    head, _, tail = pg_url.partition("://")
    reader = nbs.open_store(f"{head}://{role}@{tail.partition('@')[2]}")
    assert [i.session_id for i in reader.sessions()] == ["alice"]
    assert reader.get_state("alice")["agent"]["value"] == [1, 2]
    with pytest.raises(StoreError, match="may only read"):
        reader.save("alice", None, {}, agent=Box([3]))
    assert [cp.seq for cp in store.history("alice")] == [1]


def test_a_server_restart_mid_run_loses_nothing_acknowledged(tmp_path: Path) -> None:
    from .. import pg_server

    if os.environ.get("NB_SESSIONS_TEST_PG_DSN"):
        pytest.fail(
            "this test restarts its own server: unset NB_SESSIONS_TEST_PG_DSN for it", pytrace=False
        )
    from ..conftest import Box

    with pg_server.own_server() as srv:
        url = pg_server.fresh_database(srv.dsn)
        store = nbs.open_store(url)
        for i in range(3):
            store.save("s", None, {}, agent=Box(i))
        srv.stop()
        with pytest.raises(StoreError, match="cannot connect"):
            store.save("s", None, {}, agent=Box(99))  # a named error; nothing committed
        srv.start()
        for i in range(3, 5):
            store.save("s", None, {}, agent=Box(i))
        assert [store.get_state(cp)["agent"]["value"] for cp in store.history("s")] == [
            0,
            1,
            2,
            3,
            4,
        ]


def test_without_psycopg_a_postgres_url_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import nb_sessions as nbs\n"
        "try:\n    nbs.open_store('postgresql://nobody@127.0.0.1:1/x')\n"
        "except nbs.StoreError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "pip install 'nb_sessions[postgres]'" in done.stdout


def test_a_save_whose_connection_is_killed_mid_transaction_is_retried_under_its_id_once(
    pg_url: str,
) -> None:
    import threading
    import time

    from ..conftest import Box

    store = nbs.PostgresStore(pg_url, retry_delay=0.05)
    store.save("s", None, {}, agent=Box(0))
    result: dict[str, object] = {}
    with psycopg.connect(pg_url) as holder:  # holds the session row: the save waits on it
        holder.execute("SELECT 1 FROM nbs_sessions WHERE session_id = 's' FOR UPDATE")
        saver = threading.Thread(
            target=lambda: result.update(cp=store.save("s", None, {}, agent=Box(1)))
        )
        saver.start()
        with psycopg.connect(pg_url, autocommit=True) as killer:
            pid = None
            deadline = time.monotonic() + 60
            while pid is None:  # the save's backend, waiting on the row lock mid-transaction
                assert time.monotonic() < deadline, "the save never waited on the session row"
                row = killer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND query LIKE '%%nbs_sessions%%' "
                    "AND pid <> %s",
                    (holder.info.backend_pid,),
                ).fetchone()
                pid = row[0] if row else None
                time.sleep(0.01)
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        holder.rollback()  # the retry may now take the lock
    saver.join(60)
    cp = result["cp"]
    assert isinstance(cp, nbs.Checkpoint)
    assert cp.seq == 2
    assert [c.seq for c in store.history("s")] == [1, 2]  # exactly one checkpoint for the save
    assert store.get_state("s")["agent"]["value"] == 1


def test_a_save_to_a_server_gone_for_good_is_a_named_error_saying_nothing_committed(
    tmp_path: Path,
) -> None:
    from .. import pg_server
    from ..conftest import Box

    with pg_server.own_server() as srv:
        url = pg_server.fresh_database(srv.dsn)
        store = nbs.PostgresStore(url, retries=2, retry_delay=0.01)
        store.save("s", None, {}, agent=Box(0))
        srv.stop()
        with pytest.raises(StoreError, match="after 3 attempts") as err:
            store.save("s", None, {}, agent=Box(1))
        assert "was not committed" in str(err.value)
        assert "check the server runs" in str(err.value)
        with pytest.raises(StoreError, match="after 3 attempts"):
            store.history("s")  # reads retry too
        srv.start()
        assert [c.seq for c in store.history("s")] == [1]  # nothing half-written
        assert store.save("s", None, {}, agent=Box(2)).seq == 2
