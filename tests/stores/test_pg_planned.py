"""PostgresStore's write path: the SQLite store's planning (entries once, shared segments), its schema
migration from the first layout, and garbage collection beside concurrent saves (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

import nb_sessions as nbs
from nb_sessions import codec
from nb_sessions.chunks import blob_hash
from nb_sessions.stores import pg_store

from .. import pg_server
from ..conftest import Box

ROOT = Path(__file__).resolve().parents[2]


def msgs(n: int, word: str = "message") -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{word} {j:04d}"} for j in range(n)]


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        blobs = conn.execute("SELECT count(*) FROM nbs_blobs").fetchone()
        segments = conn.execute("SELECT count(*) FROM nbs_segments").fetchone()
    assert blobs is not None and segments is not None
    return int(blobs[0]), int(segments[0])


def test_a_save_stores_only_what_changed_and_refers_to_segments_by_id(pg_url: str) -> None:
    store = nbs.open_store(pg_url)
    store.save("s", agent=Box(msgs(1500)))
    blobs, segments = counts(pg_url)
    assert (blobs, segments) == (1500, 3)  # 512 + 512 + 476
    store.save("s", agent=Box(msgs(1510)))
    assert counts(pg_url) == (1510, 4)  # ten new entries; the last segment anew, the others shared
    store.save("t", agent=Box(msgs(1510)))  # another session holding the same list stores nothing
    assert counts(pg_url) == (1510, 4)
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT chunks FROM nbs_checkpoints ORDER BY session, seq").fetchall()
    refs = [codec.loads(bytes(r[0])) for r in rows]
    ((path, first),) = refs[0]
    assert path == ["agent", "value"] and len(set(first)) == 3  # segment ids, not entry hashes
    assert refs[1][0][1][:2] == first[:2] and refs[1][0][1][2] not in first and refs[2] == refs[1]
    assert store.get_state("s")["agent"]["value"] == msgs(1510)
    assert store.get_state("t@1")["agent"]["value"] == msgs(1510)


def old_layout(url: str) -> None:
    """A store as the first PostgreSQL schema (migrations 1 and 2) wrote it: entries by hash,
    each checkpoint listing the hex hashes of its entries."""
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in pg_store._MIGRATIONS[:2]:
            assert isinstance(sql, str)
            conn.execute(sql)
        conn.execute(
            "CREATE TABLE nbs_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL)"
        )
        conn.execute("INSERT INTO nbs_migrations VALUES (1, now()), (2, now())")
        row = conn.execute(
            "INSERT INTO nbs_sessions (user_id, session_id, created_at, updated_at, next_seq) "
            "VALUES ('', 'old', now(), now(), 3) RETURNING id"
        ).fetchone()
        assert row is not None
        for seq, n in ((1, 600), (2, 610)):
            hashes = []
            for value in msgs(n):
                data = codec.dumps(value)
                conn.execute(
                    "INSERT INTO nbs_entries (hash, data, text) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (blob_hash(data), data, value["content"]),
                )
                hashes.append(blob_hash(data).hex())
            conn.execute(
                "INSERT INTO nbs_checkpoints (session, seq, uid, parent, created_at, label, metadata, modules, "
                "size, state, chunks) VALUES (%s, %s, gen_random_uuid(), %s, now() + %s * interval '1 s', "
                "%s, %s, %s, %s, %s, %s)",
                (
                    row[0],
                    seq,
                    seq - 1 or None,
                    seq,
                    "first" if seq == 1 else None,
                    codec.dumps({"i": seq}),
                    ["agent"],
                    1000,
                    codec.dumps({"agent": {"value": []}}),
                    codec.dumps([[["agent", "value"], hashes]]),
                ),
            )


def test_a_store_of_the_first_schema_is_converted_and_loads_as_before(pg_url: str) -> None:
    old_layout(pg_url)
    store = nbs.open_store(pg_url)
    history = store.history("old")
    assert [(cp.seq, cp.parent, cp.label, cp.metadata) for cp in history] == [
        (1, None, "first", {"i": 1}),
        (2, 1, None, {"i": 2}),
    ]
    assert store.get_state("old@1")["agent"]["value"] == msgs(600)
    assert store.get_state("old@2")["agent"]["value"] == msgs(610)
    assert list(store.search("message 0605")["session"]) == ["old"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('nbs_entries')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM nbs_migrations").fetchone() == (
            len(pg_store._MIGRATIONS),
        )
    assert store.save("old", agent=Box(msgs(620))).seq == 3
    assert counts(pg_url) == (620, 4)  # the converted entries and the first segment are reused
    store.delete("old@1")
    store.delete("old@2")
    store.vacuum()
    assert store.get_state("old")["agent"]["value"] == msgs(620)
    store.label("old@3", "kept")
    assert store.history("old")[0].label == "kept"


WRITER = """
import sys
import nb_sessions as nbs
from tests.conftest import Box
url, n = sys.argv[1], int(sys.argv[2])
store = nbs.open_store(url)
for i in range(n):
    cp = store.save("w", None, {"i": i}, agent=Box([{"role": "user", "content": f"m {j}"} for j in range(600 + i)]))
    print(cp.seq, flush=True)
"""

COLLECTOR = """
import sys
import nb_sessions as nbs
url, n = sys.argv[1], int(sys.argv[2])
store = nbs.open_store(url)
for _ in range(n):
    try:
        store.delete("w")  # every checkpoint of the session: its segments are garbage now
    except nbs.SessionNotFoundError:
        pass
    store.vacuum()
"""


def _run(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def test_vacuum_in_another_process_never_drops_a_segment_a_concurrent_save_reuses(
    pg_url: str,
) -> None:
    nbs.open_store(pg_url).sessions()  # the schema, before two processes race to make it
    writer, collector = _run(WRITER, pg_url, "40"), _run(COLLECTOR, pg_url, "60")
    out, _ = writer.communicate(timeout=300)
    collector.communicate(timeout=300)
    assert writer.returncode == 0 and collector.returncode == 0
    assert len(out.split()) == 40
    store = nbs.open_store(pg_url)
    left = store.history("w") if "w" in {i.session_id for i in store.sessions()} else []
    for cp in left:  # whatever survived the deletes loads whole: no segment or entry went missing
        assert len(store.get_state(cp)["agent"]["value"]) == 600 + cp.metadata["i"]
    last = store.save(
        "w", None, {"i": 40}, agent=Box([{"role": "user", "content": f"m {j}"} for j in range(640)])
    )
    assert len(store.get_state(last)["agent"]["value"]) == 640


def search_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM nbs_search").fetchone()
    assert row is not None
    return int(row[0])


def test_the_search_index_is_filled_by_searches_not_saves_and_a_reader_scans_the_rest(
    pg_url: str,
) -> None:
    store = nbs.open_store(pg_url)
    store.save("s", agent=Box(msgs(40)))
    assert search_rows(pg_url) == 0  # a save pays nothing for search
    assert list(store.search("message 0007")["session"]) == ["s"]
    assert search_rows(pg_url) == 40
    store.save("s", agent=Box(msgs(40) + msgs(2, "報告")))
    url = pg_server.reader_url(pg_url)
    reader = nbs.open_store(url)
    assert set(reader.search("報告 0001")["session"]) == {"s"}  # not indexed yet: scanned
    assert search_rows(pg_url) == 40  # a read-only role cannot index, and did not
    assert set(store.search("報告")["session"]) == {"s"}
    assert search_rows(pg_url) == 42
    store.delete("s")
    store.vacuum()
    assert search_rows(pg_url) == 0  # with the entries they index


def test_a_role_that_may_not_migrate_a_store_of_the_first_schema_gets_a_named_error(
    pg_url: str,
) -> None:
    old_layout(pg_url)
    url = pg_server.reader_url(pg_url)
    reader = nbs.open_store(url)
    with pytest.raises(
        nbs.StoreError, match=r"schema version 2; .* Open the store once as the role that owns"
    ):
        reader.sessions()
    assert [cp.seq for cp in nbs.open_store(pg_url).history("old")] == [
        1,
        2,
    ]  # the owner converts it
    with psycopg.connect(pg_url, autocommit=True) as conn:  # and grants on the new tables
        conn.execute(
            f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {url.partition('://')[2].partition('@')[0]}"
        )
    assert [i.session_id for i in reader.sessions()] == ["old"]
    assert reader.get_state("old@2")["agent"]["value"] == msgs(610)
