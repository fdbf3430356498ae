"""Encryption at rest, PostgreSQL: no plaintext in any table, dump or data file; named key errors; tampering found.

Real servers (tests/pg_server.py), real processes for the concurrent creators and the killed rekeys.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

import nb_sessions as nbs
from nb_sessions.cli import main
from nb_sessions.stores.base import SessionKey
from nb_sessions.stores.pg_store import _facts
from nb_sessions.stores.row_hash import row_hash
from tests import pg_server
from tests.conftest import TEST_KEY, Box
from tests.reliability._proc import create_at_once, kill_rekeys
from tests.reliability.test_encryption_sqlite import PIECES, SECRET, _forms, _save


def _tables(url: str) -> dict[str, list[str]]:
    """Every row of every nbs_* table, all columns as text (bytea as its hex form), sorted."""
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'nbs%' ORDER BY 1"
        )]
        return {n: sorted(r[0] for r in conn.execute(f"SELECT t::text FROM {n} t")) for n in names}


def _dump(url: str) -> bytes:
    """``pg_dump`` of the whole database (plain SQL)."""
    done = subprocess.run([pg_server._bin("pg_dump"), "--no-owner", url], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def _leaks(data: bytes) -> list[str]:
    """The secret pieces found in ``data`` in any of their forms (raw, hex, base64, UTF-16)."""
    return [piece for piece in [SECRET, *PIECES] for form in _forms(piece) if form in data]


def _text(tables: dict[str, list[str]]) -> bytes:
    return "\n".join(f"{n}: {row}" for n, rows in tables.items() for row in rows).encode()


def test_no_plaintext_in_tables_dump_or_data_files(tmp_path: Path) -> None:
    """Every nbs_* table, pg_dump, and the server's own files (heap, WAL) after a checkpoint."""
    with pg_server.own_server() as srv:
        store = nbs.open_store(srv.dsn, key=TEST_KEY)
        _save(store)  # it searches too: an index, if one were filled, would hold plaintext
        store.label("alice@1", "first")
        store.delete("alice@2")
        assert len(store.search("hunter2-quokka")) > 0, "search finds the decrypted entries"
        assert store.get_state("bob")["agent"]  # and every checkpoint reads back
        tables = _tables(srv.dsn)
        assert tables["nbs_search"] == [], "an encrypted store never fills the search index"
        assert tables["nbs_blobs"] and tables["nbs_checkpoints"]
        assert _leaks(_text(tables)) == []
        assert _leaks(_dump(srv.dsn)) == []
        with psycopg.connect(srv.dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        files = [p for p in srv.data.rglob("*") if p.is_file()]
        assert len(files) > 100
        for path in files:
            assert _leaks(path.read_bytes()) == [], path


def test_plain_store_holds_the_plaintext(pg_url: str) -> None:
    """The checks above can fail: the same workload on a plain store leaves the text in tables and dump."""
    _save(nbs.open_store(pg_url))
    tables = _tables(pg_url)
    assert tables["nbs_search"], "a plain store's search index is filled"
    assert _leaks(_text(tables)) and _leaks(_dump(pg_url))


def test_missing_and_wrong_key_change_nothing(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    _save(nbs.open_store(pg_url, key="a passphrase"))
    before = _tables(pg_url)
    with pytest.raises(nbs.KeyRequiredError, match="encrypted and no key"):
        nbs.open_store(pg_url).history("alice")
    with pytest.raises(nbs.KeyRequiredError, match="encrypted and no key"):
        nbs.open_store(pg_url).save("alice", box=Box({"x": 1}))
    with pytest.raises(nbs.WrongKeyError, match="does not open"):
        nbs.open_store(pg_url, key="another passphrase").history("alice")
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(pg_url, key=TEST_KEY).save("alice", box=Box({"x": 1}))
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(pg_url, key=TEST_KEY).search("hunter2")
    assert _tables(pg_url) == before
    monkeypatch.setenv("NB_SESSIONS_KEY", "a passphrase")
    store = nbs.open_store(pg_url)
    assert store.encrypted  # type: ignore[attr-defined]
    assert len(store.history("alice")) == 2  # the key from the environment


def test_plain_store_with_a_key_is_refused(pg_url: str) -> None:
    plain = nbs.open_store(pg_url)
    plain.save("alice", box=Box({"x": 1}))
    assert not plain.encrypted  # type: ignore[attr-defined]
    before = _tables(pg_url)
    with pytest.raises(nbs.KeyRequiredError, match=r"plain .*Copy its sessions"):
        nbs.open_store(pg_url, key=TEST_KEY).history("alice")
    with pytest.raises(nbs.KeyRequiredError, match=r"plain .*Copy its sessions"):
        nbs.open_store(pg_url, key=TEST_KEY).save("alice", box=Box({"x": 2}))
    assert _tables(pg_url) == before


def test_a_plain_client_cannot_save_into_a_store_encrypted_since_it_opened(pg_url: str) -> None:
    plain = nbs.open_store(pg_url)
    assert not plain.encrypted  # type: ignore[attr-defined]  (opened: an empty, plain database)
    nbs.open_store(pg_url, key=TEST_KEY).save("alice", box=Box({"x": SECRET}))
    with pytest.raises(nbs.KeyRequiredError, match="encrypted by another client"):
        plain.save("bob", box=Box({"x": SECRET}))
    assert _leaks(_text(_tables(pg_url))) == []


@pytest.mark.parametrize("key", [TEST_KEY, None], ids=["with-key", "without-key"])
def test_a_removed_header_is_named_not_taken_for_a_plain_store(
    pg_url: str, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    _save(nbs.open_store(pg_url, key=TEST_KEY))
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM nbs_meta WHERE key = 'encryption'")
    before = _tables(pg_url)
    with pytest.raises(nbs.StoreCorruptedError, match=r"encryption header .* is gone"):
        nbs.open_store(pg_url, key=key).history("alice")
    assert _tables(pg_url) == before


def test_two_processes_creating_the_store_end_with_one_header(pg_url: str) -> None:
    """Real processes open one new database with the same key and save at once; every save reads back."""
    create_at_once(pg_url, TEST_KEY)
    assert len([r for r in _tables(pg_url)["nbs_meta"] if r.startswith("(encryption,")]) == 1
    store = nbs.open_store(pg_url, key=TEST_KEY)
    assert sorted(i.session for i in store.sessions()) == ["s0", "s1", "s2", "s3"]
    assert all(store.get_state(f"s{i}") == {"box": {"value": {"n": 2}}} for i in range(4))


def test_search_opens_each_distinct_entry_once(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = nbs.open_store(pg_url, key=TEST_KEY)
    msgs = [{"role": "user", "content": f"line {i} {'needle' if i % 10 == 0 else ''}"} for i in range(50)]
    for n in range(3):  # each checkpoint holds the same 50 entries (and a few more)
        store.save("alice", box=Box([*msgs, {"role": "user", "content": f"extra {n}"}]))
    plain = nbs.open_store(tmp_path / "plain.db")
    for n in range(3):
        plain.save("alice", box=Box([*msgs, {"role": "user", "content": f"extra {n}"}]))
    assert len(store.search("needle")) == len(plain.search("needle")) == 5  # one row per message, @1-3
    opened: list[bytes] = []
    cipher = store._cipher  # type: ignore[attr-defined]
    real = cipher.open

    def counting(blob: Any, aad: bytes, where: str, location: str) -> bytes:
        if len(aad) == 16:  # an entry (its keyed hash); skeletons carry a longer place
            opened.append(aad)
        return real(blob, aad, where, location)  # type: ignore[no-any-return]

    monkeypatch.setattr(cipher, "open", counting)
    assert len(store.search("needle")) == 5
    assert len(opened) == len(set(opened)) == 53


# -- tampering ----------------------------------------------------------------------------------


def _encrypted(url: str, key: str = TEST_KEY) -> nbs.BaseStore:
    store = nbs.open_store(url, key=key)
    for i in range(3):
        msgs = [{"role": "user", "content": f"{SECRET} {i}.{n}"} for n in range(40 + i)]
        store.save("alice", box=Box({"memory": msgs, "note": f"{SECRET} {i}"}), metadata={"run": i})
    store.save("bob", box=Box({"memory": [{"role": "user", "content": f"bob {n}"} for n in range(40)]}))
    return store


_ROW = (
    "SELECT c.uid, c.seq, c.parent, c.created_at, c.label, c.metadata, c.modules, c.size, c.state, c.chunks "
    "FROM nbs_checkpoints c JOIN nbs_sessions s ON s.id = c.session WHERE s.session_id = 'alice' AND c.seq = %s"
)


def _rehash(conn: psycopg.Connection[Any], seq: int) -> None:
    """Give alice@seq's row the hash of what it now holds (anyone can: the row hash is not keyed)."""
    row = conn.execute(_ROW, (seq,)).fetchone()
    assert row is not None
    digest = row_hash(SessionKey("", "alice"), *_facts(*row))
    conn.execute("UPDATE nbs_checkpoints SET hash = %s WHERE uid = %s", (digest, row[0]))


def _tamper(url: str, kind: str, store: nbs.BaseStore) -> str:
    """Damage alice@3 (or its neighbours) as ``kind`` says; return what the error must name."""
    with psycopg.connect(url) as conn:
        if kind == "flip-entry":  # a byte of an entry only alice@3 holds (bob's 40 were stored after it)
            row = conn.execute("SELECT id, data FROM nbs_blobs WHERE id = (SELECT max(id) - 40 FROM nbs_blobs)")
            blob_id, data = row.fetchone() or (0, b"")
            flipped = bytearray(data)
            flipped[20] ^= 1
            conn.execute("UPDATE nbs_blobs SET data = %s WHERE id = %s", (bytes(flipped), blob_id))
        elif kind in ("flip-state", "flip-metadata"):  # then the row hash made to match again
            column = kind.split("-")[1]
            data = bytearray(conn.execute(_ROW.replace("SELECT c.uid,", f"SELECT c.{column}, c.uid,"), (3,))
                             .fetchone()[0])  # type: ignore[index]
            data[len(data) // 2] ^= 1
            conn.execute(
                f"UPDATE nbs_checkpoints SET {column} = %s WHERE seq = 3 AND session = "
                "(SELECT id FROM nbs_sessions WHERE session_id = 'alice')",
                (bytes(data),),
            )
            _rehash(conn, 3)
        elif kind == "swap-rows":  # the contents of @2 and @3 trade places, each row hash recomputed
            conn.execute(
                "UPDATE nbs_checkpoints c SET metadata = o.metadata, state = o.state, chunks = o.chunks, "
                "size = o.size FROM nbs_checkpoints o WHERE c.session = o.session AND "
                "c.session = (SELECT id FROM nbs_sessions WHERE session_id = 'alice') AND "
                "((c.seq = 2 AND o.seq = 3) OR (c.seq = 3 AND o.seq = 2))"
            )
            _rehash(conn, 2)
            _rehash(conn, 3)
        elif kind == "replayed-row":  # an authentic row of @3, put back after @3 was deleted
            cols = "session, seq, uid, parent, created_at, label, metadata, modules, size, state, chunks, hash"
            old = conn.execute(
                f"SELECT {cols} FROM nbs_checkpoints WHERE seq = 3 AND session = "
                "(SELECT id FROM nbs_sessions WHERE session_id = 'alice')"
            ).fetchone()
            assert old is not None
            conn.commit()
            store.delete("alice@3")
            conn.execute(f"INSERT INTO nbs_checkpoints ({cols}) VALUES ({', '.join(['%s'] * 12)})", old)
        elif kind == "removed-row":
            conn.execute(
                "DELETE FROM nbs_checkpoints WHERE seq = 3 AND session = "
                "(SELECT id FROM nbs_sessions WHERE session_id = 'alice')"
            )
        else:
            raise AssertionError(kind)
    return "checkpoint alice@3"


KINDS = ["flip-entry", "flip-state", "flip-metadata", "swap-rows", "replayed-row", "removed-row"]


@pytest.mark.parametrize("kind", KINDS)
def test_tampering_is_a_named_error(pg_url: str, kind: str) -> None:
    store = _encrypted(pg_url)
    named = _tamper(pg_url, kind, store)
    fresh = nbs.open_store(pg_url, key=TEST_KEY)
    if kind == "flip-metadata":  # history flags it (as for SQLite); its state is intact
        assert [cp.metadata.get("corrupted") for cp in fresh.history("alice")] == [None, None, True]
    else:
        with pytest.raises(nbs.StoreCorruptedError, match=named):
            fresh.get_state("alice@3") if kind != "removed-row" else fresh.history("alice")
    assert fresh.get_state("bob")["box"]["value"]["memory"][0] == {"role": "user", "content": "bob 0"}


@pytest.mark.parametrize("kind", KINDS)
def test_check_finds_each_tampering(pg_url: str, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = _encrypted(pg_url)
    named = _tamper(pg_url, kind, store).split()[-1]
    capsys.readouterr()
    assert main(["check", "--store", pg_url, "--key", TEST_KEY]) == 3
    out = capsys.readouterr().out
    assert named in out and "bob@" not in out


def test_an_intact_store_checks_clean(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The control of the two tests above: untouched, the same store checks clean."""
    store = _encrypted(pg_url)
    store.delete("alice@2")
    assert main(["check", "--store", pg_url, "--key", TEST_KEY]) == 0
    assert [cp.seq for cp in store.history("alice")] == [1, 3]


# -- rekey ----------------------------------------------------------------------------------------


def test_rekey_rewraps_the_data_key(pg_url: str) -> None:
    store = _encrypted(pg_url, key="old passphrase")
    before = {n: rows for n, rows in _tables(pg_url).items() if n != "nbs_meta"}
    store.rekey(TEST_KEY)  # type: ignore[attr-defined]
    assert {n: rows for n, rows in _tables(pg_url).items() if n != "nbs_meta"} == before  # the header only
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(pg_url, key="old passphrase").history("alice")
    assert store.get_state("alice")["box"]["value"]["note"] == f"{SECRET} 2"  # the open store goes on
    assert main(["rekey", "--store", pg_url, "--key", TEST_KEY, "--new-key", "via the cli"]) == 0
    assert len(nbs.open_store(pg_url, key="via the cli").history("alice")) == 3


def test_rekey_of_a_plain_store_is_refused(pg_url: str) -> None:
    store = nbs.open_store(pg_url)
    store.save("alice", box=Box({"x": 1}))
    with pytest.raises(nbs.KeyRequiredError, match="not encrypted"):
        store.rekey("x")  # type: ignore[attr-defined]


_REKEY_CHILD = """
import os, signal, sys
import psycopg
import nb_sessions as nbs
url, old, new, point = sys.argv[1:5]
s = nbs.open_store(url, key=old)
s.history("alice")  # the header opened: what follows is the rekey itself

def die(at):
    if point == at:
        os.kill(os.getpid(), signal.SIGKILL)

real_execute, real_commit = psycopg.AsyncConnection.execute, psycopg.AsyncConnection.commit

async def execute(self, query, *args, **kwargs):
    rekeying = str(query).startswith("UPDATE nbs_meta SET data")
    if rekeying:
        die("before-update")
    cur = await real_execute(self, query, *args, **kwargs)
    if rekeying:
        die("after-update")  # the new header written, its transaction not committed
    return cur

psycopg.AsyncConnection.execute = execute
print("ready", flush=True)
s.rekey(new)
die("after-rekey")
"""


@pytest.mark.parametrize("spread", ["points", "timed"])
def test_rekey_killed_at_any_instant_leaves_one_key_working(pg_url: str, spread: str) -> None:
    """A real process rekeys and is killed -9 (at named points, or after growing delays); one key opens all."""
    _encrypted(pg_url, key="key one")
    keys = ["key one", "key two"]
    points = ["before-update", "after-update", "after-rekey"] if spread == "points" else [
        f"timed-{step}" for step in range(8)
    ]

    def opens(key: str) -> None:
        store = nbs.open_store(pg_url, key=key)
        assert [cp.seq for cp in store.history("alice")] == [1, 2, 3]  # nothing lost
        assert store.get_state("alice")["box"]["value"]["note"] == f"{SECRET} 2"

    rotated = kill_rekeys(_REKEY_CHILD, pg_url, keys, points, opens, delay=0.01 if spread == "timed" else 0)
    if spread == "points":
        assert rotated == 1, "killed after the commit, the new key opens it (and before, the old)"
    nbs.open_store(pg_url, key=keys[0]).save("alice", box=Box({"x": 1}))  # and it takes saves
    print(f"rekey kill points ({spread}): {len(points)}, rotated: {rotated}")


def test_postgres_session_drop_in_with_a_key(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    asyncio.run(nbs.PostgresSession(pg_url, key=TEST_KEY).save_session_state("alice", box=Box({"note": SECRET})))
    back = Box()
    asyncio.run(nbs.PostgresSession(pg_url, key=TEST_KEY).load_session_state("alice", box=back))
    assert back.value == {"note": SECRET}
    with pytest.raises(nbs.KeyRequiredError):
        asyncio.run(nbs.PostgresSession(pg_url).load_session_state("alice", box=Box()))
    assert _leaks(_text(_tables(pg_url))) == []
