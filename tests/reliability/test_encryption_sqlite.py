"""Encryption at rest, SQLite: no plaintext on disk, named errors for wrong or missing keys, tampering found."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.agent import Msg, ScriptedAgent
from tests.conftest import TEST_KEY, Box

SECRET = "customer Zanzibar-7731 card 4111-1111-1111-1111 said the password is hunter2-quokka"
PIECES = ["Zanzibar-7731", "4111-1111", "hunter2-quokka", "password is"]


def _forms(text: str) -> list[bytes]:
    raw = text.encode()
    return [raw, raw.hex().encode(), base64.b64encode(raw), text.encode("utf-16-le")]


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def _save(store: nbs.BaseStore, n: int = 60) -> None:
    msgs = [{"role": "user", "content": f"{SECRET} #{i}"} for i in range(n)]
    store.save("alice", box=Box({"memory": msgs, "note": SECRET}), metadata={"why": SECRET})
    store.save("alice", box=Box({"memory": [*msgs, {"role": "x", "content": SECRET}], "note": SECRET}))
    agent = ScriptedAgent("Friday", seed=2)
    for i in range(40):
        asyncio.run(agent(Msg("user", f"{SECRET} {i}", "user")))
    store.save("bob", agent=agent)
    store.search("hunter2")  # an FTS index, if one were built, would hold plaintext


def test_no_plaintext_in_any_file(tmp_path: Path) -> None:
    path = tmp_path / "enc.db"
    store = nbs.open_store(path, key=TEST_KEY)
    _save(store)
    hits = store.search("hunter2-quokka")
    assert len(hits) > 0, "search on an encrypted store finds the decrypted entries"
    # While the store is open the WAL may hold pages; grep it as well as the main file.
    files = _files(path)
    assert any(name.endswith("-wal") for name in files) or len(files) == 1
    for name, data in files.items():
        for piece in [SECRET, *PIECES]:
            for form in _forms(piece):
                assert form not in data, f"{piece!r} ({form[:20]!r}) found in {name}"
    loaded = Box()
    store.load("alice", box=loaded)
    assert loaded.value["note"] == SECRET and len(loaded.value["memory"]) == 61


def test_plain_store_holds_the_plaintext(tmp_path: Path) -> None:
    """The grep above can fail: the same workload on a plain store leaves the text on disk."""
    path = tmp_path / "plain.db"
    _save(nbs.open_store(path))
    assert any(SECRET.encode() in data for data in _files(path).values())


def test_missing_and_wrong_key_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    path = tmp_path / "enc.db"
    _save(nbs.open_store(path, key="a passphrase"))
    before = _files(path)
    with pytest.raises(nbs.KeyRequiredError, match="encrypted and no key"):
        nbs.open_store(path).history("alice")
    with pytest.raises(nbs.WrongKeyError, match="does not open"):
        nbs.open_store(path, key="another passphrase").history("alice")
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(path, key=TEST_KEY).save("alice", box=Box({"x": 1}))
    assert _files(path) == before
    monkeypatch.setenv("NB_SESSIONS_KEY", "a passphrase")
    assert len(nbs.open_store(path).history("alice")) == 2  # the key from the environment


def test_plain_store_with_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    nbs.open_store(path).save("alice", box=Box({"x": 1}))
    with pytest.raises(nbs.KeyRequiredError, match=r"plain .*Copy its sessions"):
        nbs.open_store(path, key=TEST_KEY).history("alice")


def _tamper(path: Path, sql: str) -> None:
    with sqlite3.connect(path) as db:
        if sql == "FLIP":
            (data,) = db.execute("SELECT data FROM nbs_blobs WHERE id = 3").fetchone()
            flipped = bytearray(data)
            flipped[20] ^= 1
            db.execute("UPDATE nbs_blobs SET data = ? WHERE id = 3", (bytes(flipped),))
        else:
            db.execute(sql)


@pytest.mark.parametrize(
    "sql",
    [
        # a flipped byte in an entry's ciphertext
        "FLIP",
        # two entries swapped wholesale (ciphertext and keyed hash)
        "UPDATE nbs_blobs SET id = CASE id WHEN 2 THEN -1 WHEN 3 THEN 2 ELSE id END WHERE id IN (2, 3)",
        # the first checkpoint's skeleton replayed into the second (its row hash recomputable by anyone)
        "UPDATE nbs_checkpoints SET state = (SELECT state FROM nbs_checkpoints WHERE seq = 1) WHERE seq = 2",
    ],
    ids=["flipped-byte", "swapped-entries", "replayed-skeleton"],
)
def test_tampering_is_a_named_error(tmp_path: Path, sql: str) -> None:
    path = tmp_path / "enc.db"
    store = nbs.open_store(path, key=TEST_KEY)
    _save(store)
    _tamper(path, sql)
    if "-1" in sql:
        _tamper(path, "UPDATE nbs_blobs SET id = 3 WHERE id = -1")
    fresh = nbs.open_store(path, key=TEST_KEY)
    with pytest.raises(nbs.StoreCorruptedError, match="checkpoint alice@2"):
        fresh.load("alice", box=Box())


def test_rekey_rewraps_the_data_key(tmp_path: Path) -> None:
    path = tmp_path / "enc.db"
    store = nbs.open_store(path, key="old passphrase")
    _save(store)
    assert isinstance(store, nbs.SQLiteStore)
    store.rekey(TEST_KEY)
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(path, key="old passphrase").history("alice")
    loaded = Box()
    nbs.open_store(path, key=TEST_KEY).load("alice", box=loaded)
    assert loaded.value["note"] == SECRET


def test_rekey_killed_at_any_instant_leaves_one_key_working(tmp_path: Path) -> None:
    """A real process rekeys and is killed -9 after a growing delay; the store opens with one of the keys."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "enc.db"
    _save(nbs.open_store(path, key="key one"))
    code = (
        "import sys, nb_sessions as nbs\n"
        "s = nbs.open_store(sys.argv[1], key=sys.argv[2])\n"
        "print('ready', flush=True)\n"
        "s.rekey(sys.argv[3])\n"
    )
    keys = ["key one", "key two"]
    for step in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path), keys[0], keys[1]],
            stdout=subprocess.PIPE, env={**os.environ},
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(step * 0.003)  # kill points spread over the rekey (not a timed assertion)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        opened = []
        for k in keys:
            try:
                nbs.open_store(path, key=k).history("alice")
                opened.append(k)
            except nbs.WrongKeyError:
                pass
        assert len(opened) == 1, f"kill point {step}: the store opens with {opened}"
        if opened[0] == keys[1]:
            keys.reverse()  # rotate back next time


def test_replayed_deleted_checkpoint_is_named(tmp_path: Path) -> None:
    """An authentic old row put back after its checkpoint was deleted: the session's manifest refuses it."""
    path = tmp_path / "enc.db"
    store = nbs.open_store(path, key=TEST_KEY)
    for i in range(3):
        store.save("alice", box=Box({"n": i, "text": SECRET}))
    with sqlite3.connect(path) as db:
        old = db.execute("SELECT * FROM nbs_checkpoints WHERE seq = 2").fetchone()
    store.delete("alice@2")
    assert [cp.seq for cp in store.history("alice")] == [1, 3]
    with sqlite3.connect(path) as db:
        db.execute(f"INSERT INTO nbs_checkpoints VALUES ({','.join('?' * len(old))})", old)
    with pytest.raises(nbs.StoreCorruptedError, match=r"checkpoint alice@2 .*not in the session's authenticated"):
        nbs.open_store(path, key=TEST_KEY).load("alice", box=Box())


def test_rolled_back_latest_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "enc.db"
    store = nbs.open_store(path, key=TEST_KEY)
    for i in range(3):
        store.save("alice", box=Box({"n": i}))
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM nbs_checkpoints WHERE seq = 3")
    with pytest.raises(nbs.StoreCorruptedError, match=r"checkpoint alice@3 .*row is gone"):
        nbs.open_store(path, key=TEST_KEY).load("alice", box=Box())


def test_an_edited_entry_out_of_order_loads(tmp_path: Path) -> None:
    """A list whose ids are not one run (an entry edited in place, stored later) reads back whole."""
    store = nbs.open_store(tmp_path / "enc.db", key=TEST_KEY)
    msgs = [{"role": "user", "content": f"line {i}"} for i in range(40)]
    store.save("s", box=Box(msgs))
    msgs[7] = {"role": "user", "content": "rewritten"}
    store.save("s", box=Box(msgs))
    box = Box()
    store.load("s", box=box)
    assert box.value == msgs


def test_sqlite_session_drop_in_over_an_encrypted_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    path = tmp_path / "enc.db"
    session = nbs.SQLiteSession(path, key=TEST_KEY)
    asyncio.run(session.save_session_state("alice", box=Box({"note": SECRET})))
    back = Box()
    asyncio.run(nbs.SQLiteSession(path, key=TEST_KEY).load_session_state("alice", box=back))
    assert back.value == {"note": SECRET}
    with pytest.raises(nbs.KeyRequiredError):
        asyncio.run(nbs.SQLiteSession(path).load_session_state("alice", box=Box()))
    assert SECRET.encode() not in b"".join(_files(path).values())


def test_an_agentscope_source_with_a_key_is_refused_not_ignored() -> None:
    with pytest.raises(nbs.KeyRequiredError, match="read-only as it is: a key does not apply"):
        nbs.open_store("agentscope+redis://127.0.0.1:1/0", key=TEST_KEY)
