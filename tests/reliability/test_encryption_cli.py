"""Encryption at rest from the command line: --key, rekey, copy both ways, plaintext exports, check."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.cli import main
from tests.conftest import TEST_KEY, Box

SECRET = "the vault code is 0451-swordfish"


def _encrypted(tmp_path: Path, key: str = TEST_KEY) -> Path:
    path = tmp_path / "enc.db"
    store = nbs.open_store(path, key=key)
    msgs = [{"role": "user", "content": f"{SECRET} {i}"} for i in range(40)]
    store.save("alice", box=Box({"memory": msgs}))
    store.save("alice", box=Box({"memory": [*msgs, {"role": "user", "content": "more"}]}))
    return path


def test_cli_key_from_option_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    path = _encrypted(tmp_path)
    assert main(["history", "alice", "--store", str(path)]) != 0
    assert "encrypted and no key" in capsys.readouterr().err
    assert main(["history", "alice", "--store", str(path), "--key", TEST_KEY]) == 0
    keyfile = tmp_path / "key.txt"
    keyfile.write_text(TEST_KEY + "\n")
    assert main(["history", "alice", "--store", str(path), "--key-file", str(keyfile)]) == 0
    monkeypatch.setenv("NB_SESSIONS_KEY", TEST_KEY)
    assert main(["history", "alice", "--store", str(path)]) == 0


def test_cli_rekey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _encrypted(tmp_path)
    assert main(["rekey", "--store", str(path), "--key", TEST_KEY, "--new-key", "a new passphrase"]) == 0
    assert main(["history", "alice", "--store", str(path), "--key", TEST_KEY]) != 0
    assert "does not open" in capsys.readouterr().err
    assert len(nbs.open_store(path, key="a new passphrase").history("alice")) == 2


def test_copy_both_ways(tmp_path: Path) -> None:
    src = _encrypted(tmp_path)
    plain, again = tmp_path / "plain.db", tmp_path / "again.db"
    assert main(["copy", str(src), str(plain), "--key", TEST_KEY]) != 0  # plaintext needs saying so
    assert main(["copy", str(src), str(plain), "--key", TEST_KEY, "--plaintext"]) == 0
    wal = Path(f"{plain}-wal")
    assert SECRET.encode() in plain.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert main(["copy", str(plain), str(again), "--to-key", "pass two"]) == 0
    box = Box()
    nbs.open_store(again, key="pass two").load("alice", box=box)
    assert box.value["memory"][0]["content"] == f"{SECRET} 0"
    assert not nbs.open_store(plain).encrypted  # type: ignore[attr-defined]


def test_export_from_an_encrypted_store_needs_plaintext(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _encrypted(tmp_path)
    out = tmp_path / "b.json"
    assert main(["export", "--bundle", "--all", "-o", str(out), "--store", str(path), "--key", TEST_KEY]) != 0
    assert "plaintext" in capsys.readouterr().err and not out.exists()
    assert main(["export", "--bundle", "--all", "-o", str(out), "--store", str(path), "--key", TEST_KEY,
                 "--plaintext"]) == 0
    into = tmp_path / "into.db"
    assert main(["import", str(out), "--store", str(into), "--key", "k2"]) == 0
    assert len(nbs.open_store(into, key="k2").history("alice")) == 2


@pytest.mark.parametrize("kind", ["flip", "swap", "replay", "remove"])
def test_check_finds_each_tampering(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _encrypted(tmp_path)
    with sqlite3.connect(path) as db:
        if kind == "flip":
            (data,) = db.execute("SELECT metadata FROM nbs_checkpoints WHERE seq = 2").fetchone()
            b = bytearray(data)
            b[-1] ^= 0x80
            db.execute("UPDATE nbs_checkpoints SET state = ? WHERE seq = 2", (bytes(b),))
        elif kind == "swap":
            db.execute("UPDATE nbs_blobs SET id = -1 WHERE id = 1")
            db.execute("UPDATE nbs_blobs SET id = 1 WHERE id = 2")
            db.execute("UPDATE nbs_blobs SET id = 2 WHERE id = -1")
        elif kind == "remove":  # the latest checkpoint taken away: the session's manifest still lists it
            db.execute("DELETE FROM nbs_checkpoints WHERE seq = 2")
        else:
            db.execute("UPDATE nbs_checkpoints SET state = (SELECT state FROM nbs_checkpoints WHERE seq = 1) "
                       "WHERE seq = 2")
    assert main(["check", "--store", str(path), "--key", TEST_KEY]) == 3
    assert "alice@2" in capsys.readouterr().out
