"""Encryption at rest, JSON store: no plaintext in any file, no latest file, named errors, tampering found."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.cli import main
from tests.conftest import SAMPLE_FILE, TEST_KEY, Box
from tests.reliability._proc import create_at_once, kill_rekeys
from tests.reliability.test_encryption_sqlite import PIECES, SECRET, _forms, _save

HIDDEN = ".nb_sessions"


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (its path relative to it) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _encrypted(tmp_path: Path, key: str = TEST_KEY) -> tuple[Path, nbs.BaseStore]:
    folder = tmp_path / "enc"
    store = nbs.open_store(folder, key=key)
    for i in range(2):
        msgs = [{"role": "user", "content": f"{SECRET} {i}.{n}"} for n in range(40 + i)]
        store.save("alice", box=Box({"memory": msgs, "note": f"{SECRET} {i}"}))
    store.save("bob", box=Box({"memory": [{"role": "user", "content": f"bob {n}"} for n in range(40)]}))
    return folder, store


def test_no_plaintext_in_any_file(tmp_path: Path) -> None:
    folder = tmp_path / "enc"
    store = nbs.open_store(folder, key=TEST_KEY)
    _save(store)
    store.label("alice@1", "first")
    store.delete("alice@1")
    store.vacuum()
    assert len(store.search("hunter2-quokka")) > 0, "search opens the entries in memory"
    files = _files(folder)
    assert any(name.endswith(".jsonl") for name in files) and any(name.endswith(".idx") for name in files)
    for name, data in files.items():
        for piece in [SECRET, *PIECES]:
            for form in _forms(piece):
                assert form not in data, f"{piece!r} ({form[:20]!r}) found in {name}"
    # The same entries are stored once (a keyed hash deduplicates them), and no latest file is written.
    assert not list(folder.glob("*.json"))
    loaded = Box()
    store.load("alice", box=loaded)
    assert loaded.value["note"] == SECRET and len(loaded.value["memory"]) == 61


def test_plain_store_holds_the_plaintext(tmp_path: Path) -> None:
    """The grep above can fail: the same workload on a plain folder leaves the text in its files."""
    folder = tmp_path / "plain"
    _save(nbs.open_store(folder))
    assert any(SECRET.encode() in data for data in _files(folder).values())


def test_no_latest_file_and_it_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "enc"
    with caplog.at_level(logging.INFO, logger="nb_sessions"):
        nbs.open_store(folder, key=TEST_KEY).save("alice", box=Box({"x": 1}))
    assert "no AgentScope latest file alice.json" in caplog.text
    assert not (folder / "alice.json").exists()
    # An AgentScope file put into an encrypted folder is not part of the store: never read, listed or removed.
    shutil.copy(SAMPLE_FILE, folder / "u42_bob.json")
    store = nbs.open_store(folder, key=TEST_KEY)
    assert [i.session for i in store.sessions()] == ["alice"]
    with pytest.raises(nbs.SessionNotFoundError):
        store.history("u42/bob")
    store.delete("alice")
    assert (folder / "u42_bob.json").exists() and not (folder / "alice.json").exists()


def test_missing_and_wrong_key_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    folder, _ = _encrypted(tmp_path, key="a passphrase")
    before = _files(folder)
    with pytest.raises(nbs.KeyRequiredError, match="encrypted JSON store and no key"):
        nbs.open_store(folder).history("alice")
    with pytest.raises(nbs.KeyRequiredError):
        nbs.open_store(folder).save("alice", box=Box({"x": 1}))
    with pytest.raises(nbs.KeyRequiredError):
        nbs.open_store(folder).sessions()
    with pytest.raises(nbs.WrongKeyError, match="does not open"):
        nbs.open_store(folder, key="another passphrase").history("alice")
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(folder, key=TEST_KEY).save("alice", box=Box({"x": 1}))
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(folder, key=TEST_KEY).rekey("k3")  # type: ignore[attr-defined]
    assert _files(folder) == before
    monkeypatch.setenv("NB_SESSIONS_KEY", "a passphrase")
    assert len(nbs.open_store(folder).history("alice")) == 2  # the key from the environment


@pytest.mark.parametrize("content", ["history", "agentscope-file"])
def test_plain_folder_with_a_key_is_refused(tmp_path: Path, content: str) -> None:
    folder = tmp_path / "plain"
    if content == "history":
        nbs.open_store(folder).save("alice", box=Box({"x": 1}))
    else:  # a folder of AgentScope JSONSession files: their plaintext would stay beside the encrypted store
        folder.mkdir()
        shutil.copy(SAMPLE_FILE, folder / "u42_bob.json")
    before = _files(folder)
    store = nbs.open_store(folder, key=TEST_KEY)
    with pytest.raises(nbs.KeyRequiredError, match=r"plain .*Copy its sessions"):
        store.save("alice", box=Box({"x": 2}))
    with pytest.raises(nbs.KeyRequiredError, match="plain"):
        store.sessions()
    assert _files(folder) == before


def test_two_processes_creating_the_store_end_with_one_header(tmp_path: Path) -> None:
    """Real processes save into one new folder at once; one header results and every save reads back."""
    folder = tmp_path / "enc"
    create_at_once(str(folder), TEST_KEY)
    headers = [p.name for p in (folder / HIDDEN).iterdir() if "encryption" in p.name]
    assert headers == [".encryption.json"]
    store = nbs.open_store(folder, key=TEST_KEY)
    assert sorted(i.session for i in store.sessions()) == ["s0", "s1", "s2", "s3"]
    assert all(store.get_state(f"s{i}") == {"box": {"value": {"n": 2}}} for i in range(4))


# -- tampering ----------------------------------------------------------------------------


def _flip(path: Path, at: float = 0.5) -> None:
    """Flip a bit of the byte at ``at`` (a fraction of the file's length, or, if negative, a byte from its end)."""
    data = bytearray(path.read_bytes())
    data[int(at) if at < 0 else int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def _tamper(folder: Path, kind: str) -> str:
    """Damage the store as ``kind`` says; return what the error must name."""
    alice, bob = folder / HIDDEN / "alice", folder / HIDDEN / "bob"
    if kind == "flip-checkpoint-file":
        _flip(alice / "2.json")
    elif kind == "flip-entry":
        _flip(alice / "entries-1.jsonl", 0.9)
    elif kind == "flip-entry-record":  # a byte of an .idx record's keyed hash
        _flip(alice / "entries-1.idx", -10)  # the last record: offset (8 bytes), length (4), keyed hash (16)
    elif kind == "flip-index":
        _flip(alice / "index.json", 0.7)
        return "session alice"
    elif kind == "swap-checkpoint-files":
        one, two = (alice / "1.json").read_bytes(), (alice / "2.json").read_bytes()
        (alice / "1.json").write_bytes(two)
        (alice / "2.json").write_bytes(one)
    elif kind == "checkpoint-file-from-another-session":
        shutil.copy(bob / "1.json", alice / "2.json")
    elif kind == "swap-entry-records":  # two entries of @2 trade places: each record and entry stays authentic
        raw = bytearray((alice / "entries-1.idx").read_bytes())
        a, b = 40 * 28, 41 * 28  # @1 holds entries 0-39
        raw[a:b], raw[b:b + 28] = raw[b:b + 28], raw[a:b]
        (alice / "entries-1.idx").write_bytes(bytes(raw))
    elif kind == "remove-checkpoint-file":
        (alice / "2.json").unlink()
    else:
        raise AssertionError(kind)
    return "checkpoint alice@2"


KINDS = [
    "flip-checkpoint-file", "flip-entry", "flip-entry-record", "flip-index", "swap-checkpoint-files",
    "checkpoint-file-from-another-session", "swap-entry-records", "remove-checkpoint-file",
]


@pytest.mark.parametrize("kind", KINDS)
def test_tampering_is_a_named_error(tmp_path: Path, kind: str) -> None:
    folder, _ = _encrypted(tmp_path)
    named = _tamper(folder, kind)
    fresh = nbs.open_store(folder, key=TEST_KEY)
    with pytest.raises(nbs.StoreCorruptedError, match=named):
        fresh.load("alice", box=Box())
    assert fresh.get_state("bob")["box"]["value"]["memory"][0] == {"role": "user", "content": "bob 0"}


@pytest.mark.parametrize("kind", KINDS)
def test_check_finds_each_tampering(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = _encrypted(tmp_path)
    named = _tamper(folder, kind).split()[-1]
    capsys.readouterr()
    assert main(["check", "--store", str(folder), "--key", TEST_KEY]) == 3
    out = capsys.readouterr().out
    assert named in out and "bob@" not in out


def test_a_replayed_old_checkpoint_file_is_named(tmp_path: Path) -> None:
    """An authentic file of this session's checkpoint 2, from before the session was deleted and saved again."""
    folder, store = _encrypted(tmp_path)
    old = (folder / HIDDEN / "alice" / "2.json").read_bytes()
    store.delete("alice")
    for i in range(2):
        store.save("alice", box=Box({"n": i}))
    (folder / HIDDEN / "alice" / "2.json").write_bytes(old)
    with pytest.raises(nbs.StoreCorruptedError, match="checkpoint alice@2"):
        nbs.open_store(folder, key=TEST_KEY).load("alice", box=Box())
    # Even with the index's record of the file's hash out of the way, the seal names it.
    store2 = nbs.open_store(folder, key=TEST_KEY)
    store2._verify_file = lambda *args: None  # type: ignore[attr-defined]
    with pytest.raises(nbs.StoreCorruptedError, match=r"checkpoint alice@2: an encrypted value fails"):
        store2.load("alice", box=Box())


def test_a_deleted_checkpoints_file_put_back_stays_deleted(tmp_path: Path) -> None:
    """The sealed index is the session's manifest: a file it does not list is never read as a checkpoint."""
    folder, store = _encrypted(tmp_path)
    store.save("alice", box=Box({"n": 3}))
    old = (folder / HIDDEN / "alice" / "2.json").read_bytes()
    store.delete("alice@2")
    (folder / HIDDEN / "alice" / "2.json").write_bytes(old)
    fresh = nbs.open_store(folder, key=TEST_KEY)
    assert [cp.seq for cp in fresh.history("alice")] == [1, 3]
    with pytest.raises(nbs.CheckpointNotFoundError):
        fresh.get_state("alice@2")


def test_an_index_from_another_session_does_not_open(tmp_path: Path) -> None:
    folder, _ = _encrypted(tmp_path)
    index = json.loads((folder / HIDDEN / "bob" / "index.json").read_text())
    index["session_id"] = "alice"  # bob's sealed index, claiming to be alice's
    (folder / HIDDEN / "alice" / "index.json").write_text(json.dumps(index))
    with pytest.raises(nbs.StoreCorruptedError, match="session alice: its history index"):
        nbs.open_store(folder, key=TEST_KEY).history("alice")


def test_a_damaged_header_is_named(tmp_path: Path) -> None:
    folder, _ = _encrypted(tmp_path)
    header = folder / HIDDEN / ".encryption.json"
    header.write_text(header.read_text()[:-20])
    with pytest.raises(nbs.StoreCorruptedError, match="encryption header is damaged"):
        nbs.open_store(folder, key=TEST_KEY).history("alice")


# -- rekey --------------------------------------------------------------------------------


def test_rekey_rewraps_the_data_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, store = _encrypted(tmp_path, key="old passphrase")
    before = {k: v for k, v in _files(folder).items() if "encryption" not in k}
    store.rekey(TEST_KEY)  # type: ignore[attr-defined]
    assert {k: v for k, v in _files(folder).items() if "encryption" not in k} == before  # the header only
    with pytest.raises(nbs.WrongKeyError):
        nbs.open_store(folder, key="old passphrase").history("alice")
    assert store.get_state("alice")["box"]["value"]["note"] == f"{SECRET} 1"  # the open store goes on
    assert main(["rekey", "--store", str(folder), "--key", TEST_KEY, "--new-key", "via the cli"]) == 0
    assert len(nbs.open_store(folder, key="via the cli").history("alice")) == 2
    with pytest.raises(nbs.KeyRequiredError, match="not encrypted"):
        nbs.open_store(tmp_path / "plain").rekey("x")  # type: ignore[attr-defined]


_REKEY_CHILD = """
import os, signal, sys
import nb_sessions as nbs
folder, old, new, point = sys.argv[1:5]
s = nbs.open_store(folder, key=old)
s.history("alice")  # the header opened: what follows is the rekey itself
real_replace, real_fsync = os.replace, os.fsync

def die(at):
    if point == at:
        os.kill(os.getpid(), signal.SIGKILL)

def fsync(fd):
    die("before-fsync")  # the new header written to its temp file, not yet flushed
    real_fsync(fd)

def replace(a, b):
    die("before-replace")
    real_replace(a, b)
    die("after-replace")  # renamed, the folder not yet flushed

os.fsync, os.replace = fsync, replace
print("ready", flush=True)
s.rekey(new)
die("after-rekey")
"""


@pytest.mark.parametrize("spread", ["points", "timed"])
def test_rekey_killed_at_any_instant_leaves_one_key_working(tmp_path: Path, spread: str) -> None:
    """A real process rekeys and is killed -9 (at named points, or after growing delays); one key opens."""
    folder, _ = _encrypted(tmp_path, key="key one")
    keys = ["key one", "key two"]
    points = ["before-fsync", "before-replace", "after-replace", "after-rekey"] if spread == "points" else [
        f"timed-{step}" for step in range(10)
    ]

    def opens(key: str) -> None:
        store = nbs.open_store(folder, key=key)
        assert [cp.seq for cp in store.history("alice")] == [1, 2]
        assert store.get_state("alice")["box"]["value"]["note"] == f"{SECRET} 1"

    rotated = kill_rekeys(_REKEY_CHILD, str(folder), keys, points, opens, delay=0.04 if spread == "timed" else 0)
    if spread == "points":
        assert rotated == 2, "killed after the replace, the new key opens it (and before, the old)"
    # A save cleans up whatever temp file a killed rekey left.
    nbs.open_store(folder, key=keys[0]).save("alice", box=Box({"x": 1}))
    assert not [p for p in folder.rglob("*") if p.name.endswith(".nbs-tmp")]
    print(f"rekey kill points ({spread}): {len(points)}, rotated: {rotated}")


# -- copies and bundles ---------------------------------------------------------------------


def test_copy_both_ways_and_bundles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = _encrypted(tmp_path)
    plain, again, db = tmp_path / "plain", tmp_path / "again", tmp_path / "again.db"
    assert main(["copy", str(src), str(plain), "--key", TEST_KEY]) != 0  # plaintext needs saying so
    assert not plain.exists()
    assert main(["copy", str(src), str(plain), "--key", TEST_KEY, "--plaintext"]) == 0
    assert SECRET.encode() in (plain / "alice.json").read_bytes()
    assert main(["copy", str(plain), str(again), "--to-key", "pass two"]) == 0
    assert main(["copy", str(src), str(db), "--key", TEST_KEY, "--to-key", "pass three"]) == 0
    for where, key in [(again, "pass two"), (db, "pass three")]:
        box = Box()
        nbs.open_store(where, key=key).load("alice", box=box)
        assert box.value["memory"][0]["content"] == f"{SECRET} 1.0"
    assert all(SECRET.encode() not in data for data in _files(again).values())
    out = tmp_path / "b.json"
    capsys.readouterr()
    assert main(["export", "--bundle", "--all", "-o", str(out), "--store", str(src), "--key", TEST_KEY]) != 0
    assert "plaintext" in capsys.readouterr().err and not out.exists()
    assert main(["export", "--bundle", "--all", "-o", str(out), "--store", str(src), "--key", TEST_KEY,
                 "--plaintext"]) == 0
    into = tmp_path / "into"
    assert main(["import", str(out), "--store", str(into), "--key", "k2"]) == 0
    assert len(nbs.open_store(into, key="k2").history("alice")) == 2
    assert all(SECRET.encode() not in data for data in _files(into).values())


def test_entry_places_are_the_ciphers_places() -> None:
    """The load's shortcut builds exactly the associated data ``Cipher.place`` would."""
    from nb_sessions.crypto import Cipher
    from nb_sessions.stores._json_sealed import entry_places
    from nb_sessions.stores.base import SessionKey

    cipher = Cipher.create(TEST_KEY)
    key = SessionKey("u", "s\u00e9ssion")
    for h in (b"", b"x" * 16, bytes(range(40))):
        assert entry_places(cipher, key)(h) == cipher.place("entry", "u", "s\u00e9ssion", h)


def test_vacuum_compacts_a_sealed_pack_and_stats_count_it(tmp_path: Path) -> None:
    folder = tmp_path / "enc"
    store = nbs.open_store(folder, key=TEST_KEY)
    store.save("alice", box=Box([{"role": "user", "content": f"{SECRET} old {n}"} for n in range(50)]))
    store.save("alice", box=Box([{"role": "user", "content": f"new {n}"} for n in range(50)]))
    store.delete("alice@1")
    assert store.vacuum() > 0
    assert (folder / HIDDEN / "alice" / "entries-2.jsonl").exists()
    assert not (folder / HIDDEN / "alice" / "entries-1.jsonl").exists()
    assert nbs.open_store(folder, key=TEST_KEY).get_state("alice")["box"]["value"][49] == {
        "role": "user", "content": "new 49"}
    assert all(SECRET.encode() not in data for data in _files(folder).values())
    # Space accounting opens the skeletons and counts each sealed entry as stored (50 x ~28 bytes more).
    assert store.stats().modules["own_bytes"].sum() > 50 * (28 + len("new 00"))
    # A damaged entry is not copied into the new generation unnoticed.
    store.save("alice", box=Box([{"role": "user", "content": f"third {n}"} for n in range(50)]))
    store.delete("alice@2")
    _flip(folder / HIDDEN / "alice" / "entries-2.jsonl", 0.99)
    with pytest.raises(nbs.StoreCorruptedError, match="session alice entry"):
        store.vacuum()


@pytest.mark.parametrize("key", [TEST_KEY, None])
def test_a_removed_header_is_named_not_taken_for_a_plain_store(
    tmp_path: Path, key: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    folder, _ = _encrypted(tmp_path)
    (folder / HIDDEN / ".encryption.json").unlink()
    with pytest.raises(nbs.StoreCorruptedError, match=r"is sealed .*encryption.json is missing"):
        nbs.open_store(folder, key=key).history("alice")


def test_a_damaged_index_says_what_to_do(tmp_path: Path) -> None:
    folder, _ = _encrypted(tmp_path)
    _flip(folder / HIDDEN / "alice" / "index.json", 0.7)
    with pytest.raises(nbs.StoreCorruptedError, match=r"fails its authentication .*restore the folder alice"):
        nbs.open_store(folder, key=TEST_KEY).history("alice")
