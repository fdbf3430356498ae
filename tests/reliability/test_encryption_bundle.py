"""Encrypted (sealed) bundles: sessions exported and imported without plaintext on disk, tampering named."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nb_sessions as nbs
from nb_sessions import bundle
from tests.conftest import TEST_KEY, Box
from tests.reliability.test_encryption_sqlite import PIECES, SECRET, _forms, _save
from tests.test_bundle import exact
from tests.test_cli import run

OTHER_KEY = "T1RIRVItS0VZLTAxMjM0NTY3ODlhYmNkZWYwMTIzNDU="
LENGTH = struct.Struct(">I")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """4 KB chunks: the bundles below span many, so chunk order and ends are exercised."""
    monkeypatch.setattr(bundle, "CHUNK", 4096)


def _source(tmp_path: Path) -> nbs.BaseStore:
    store = nbs.open_store(tmp_path / "src.db", key=TEST_KEY)
    _save(store)
    return store


def _chunks(path: Path) -> tuple[bytes, list[bytes]]:
    """The header line and the length-prefixed chunks of a sealed bundle."""
    head, _, body = path.read_bytes().partition(b"\n")
    out, at = [], 0
    while at < len(body):
        (n,) = LENGTH.unpack_from(body, at)
        out.append(body[at:at + LENGTH.size + n])
        at += LENGTH.size + n
    return head + b"\n", out


def test_a_sealed_bundle_round_trips_exactly_and_holds_no_plaintext(tmp_path: Path) -> None:
    src = _source(tmp_path)
    out = tmp_path / "team.nbsb"
    assert bundle.write_bundle(src, None, out, key=TEST_KEY) == (2, 3)  # no plaintext=True needed
    data = out.read_bytes()
    for piece in [SECRET, *PIECES, "alice", "Friday"]:
        for form in _forms(piece):
            assert form not in data, f"{piece!r} ({form[:20]!r}) found in the sealed bundle"
    assert len(_chunks(out)[1]) > 10
    assert bundle.is_sealed_bundle(out) and not bundle.is_sealed_bundle(tmp_path / "src.db")
    read = bundle.read_bundle(out, key=TEST_KEY)
    assert read.sealed and read.checkpoints == 3
    for dst in (nbs.open_store(tmp_path / "dst.db", key=OTHER_KEY), nbs.open_store(tmp_path / "dst-json", key=TEST_KEY)):
        bundle.import_bundle(dst, read)
        for session in ("alice", "bob"):
            assert exact(dst, session) == exact(src, session)
    # The plain twin of the same export holds the text: the grep above can fail.
    plain = tmp_path / "plain.json"
    bundle.write_bundle(src, None, plain, plaintext=True)
    assert SECRET.encode() in plain.read_bytes()


def test_a_plain_store_can_be_exported_sealed_too(tmp_path: Path) -> None:
    src = nbs.open_store(tmp_path / "plain.db")
    src.save("s", box=Box([{"n": i, "text": SECRET} for i in range(50)]))
    (tmp_path / "k").write_text(OTHER_KEY)  # a key file
    bundle.write_bundle(src, ["s"], tmp_path / "b", key=tmp_path / "k")
    assert SECRET.encode() not in (tmp_path / "b").read_bytes()
    dst = nbs.open_store(tmp_path / "dst.db", key=TEST_KEY)
    bundle.import_bundle(dst, bundle.read_bundle(tmp_path / "b", key=tmp_path / "k"))
    assert exact(dst, "s") == exact(src, "s")


def test_missing_and_wrong_key_read_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "b"
    bundle.write_bundle(_source(tmp_path), None, out, key=TEST_KEY)
    monkeypatch.delenv("NB_SESSIONS_KEY", raising=False)
    with pytest.raises(nbs.KeyRequiredError, match=r"is an encrypted bundle and no key was given.*--from-key"):
        bundle.read_bundle(out)
    with pytest.raises(nbs.WrongKeyError, match="the key given does not open"):
        bundle.read_bundle(out, key=OTHER_KEY)
    monkeypatch.setenv("NB_SESSIONS_KEY", TEST_KEY)  # the environment's key, as for stores
    assert bundle.read_bundle(out).checkpoints == 3


def test_a_sealed_bundle_goes_into_a_plain_store_only_when_told(tmp_path: Path) -> None:
    out = tmp_path / "b"
    bundle.write_bundle(_source(tmp_path), None, out, key=TEST_KEY)
    plain = nbs.open_store(tmp_path / "plain.db")
    read = bundle.read_bundle(out, key=TEST_KEY)
    with pytest.raises(nbs.PlaintextRefusedError, match=r"encrypted bundle.*plaintext=True"):
        bundle.import_bundle(plain, read)
    assert plain.sessions() == [] and not (tmp_path / "plain.db").exists()
    assert len(bundle.import_bundle(plain, read, plaintext=True)) == 2


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


TAMPER = {
    "a flipped byte in the header line": lambda head, chunks, other: [_flip(head, head.index(b'"header":"') + 30), *chunks],
    "a flipped byte in a chunk": lambda head, chunks, other: [head, *chunks[:3], _flip(chunks[3], 40), *chunks[4:]],
    "a flipped length": lambda head, chunks, other: [head, *chunks[:2], _flip(chunks[2], 3), *chunks[3:]],
    "the last chunk cut short": lambda head, chunks, other: [head, *chunks[:-1], chunks[-1][:-5]],
    "the last chunk dropped": lambda head, chunks, other: [head, *chunks[:-1]],
    "a chunk dropped": lambda head, chunks, other: [head, *chunks[:4], *chunks[5:]],
    "two chunks swapped": lambda head, chunks, other: [head, chunks[0], chunks[2], chunks[1], *chunks[3:]],
    "a chunk from another bundle with the same key": lambda head, chunks, other: [head, *chunks[:2], other[2], *chunks[3:]],
    "bytes appended": lambda head, chunks, other: [head, *chunks, b"\x00\x00\x00\x01x"],
}


@pytest.mark.parametrize("kind", list(TAMPER))
def test_tampering_is_named_and_nothing_is_imported(tmp_path: Path, kind: str) -> None:
    src = _source(tmp_path)
    out, twin = tmp_path / "b", tmp_path / "twin"
    bundle.write_bundle(src, None, out, key=TEST_KEY)
    bundle.write_bundle(src, None, twin, key=TEST_KEY)  # the same sessions, sealed again
    head, chunks = _chunks(out)
    out.write_bytes(b"".join(TAMPER[kind](head, chunks, _chunks(twin)[1])))
    dst = nbs.open_store(tmp_path / "dst.db", key=TEST_KEY)
    with pytest.raises((nbs.StoreCorruptedError, nbs.WrongKeyError)) as err:
        bundle.import_bundle(dst, bundle.read_bundle(out, key=TEST_KEY))
    assert str(out) in str(err.value)
    if "header" not in kind:
        assert "chunk" in str(err.value) and "nothing was imported" in str(err.value)
    assert dst.sessions() == []


def test_the_cli_exports_and_imports_a_sealed_bundle(tmp_path: Path) -> None:
    src = _source(tmp_path)
    key_file = tmp_path / "team.key"
    key_file.write_text(OTHER_KEY)
    os.chmod(key_file, 0o600)
    done = run(tmp_path, "--store", "src.db", "--key", TEST_KEY, "export", "--bundle", "--all",
               "-o", "team.nbsb", "--to-key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    assert "(encrypted bundle v1)" in done.stdout
    assert SECRET.encode() not in (tmp_path / "team.nbsb").read_bytes()
    # Without the bundle's key: a named error (exit 1), nothing imported.
    refused = run(tmp_path, "--store", "new.db", "--key", TEST_KEY, "import", "team.nbsb")
    assert refused.returncode != 0 and "no key was given" in refused.stderr
    assert not (tmp_path / "new.db").exists() or nbs.open_store(tmp_path / "new.db", key=TEST_KEY).sessions() == []
    # Into a plain store: refused unless --plaintext.
    plain = run(tmp_path, "--store", "plain.db", "import", "team.nbsb", "--from-key-file", str(key_file))
    assert plain.returncode != 0 and "--plaintext" in plain.stderr
    done = run(tmp_path, "--store", "new.db", "--key", TEST_KEY, "import", "team.nbsb", "--from-key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    assert "imported 2 session(s), 3 checkpoint(s)" in done.stdout
    dst = nbs.open_store(tmp_path / "new.db", key=TEST_KEY)
    assert exact(dst, "alice") == exact(src, "alice")
    # A single checkpoint is an AgentScope file, which cannot be encrypted: said, not ignored.
    single = run(tmp_path, "--store", "src.db", "--key", TEST_KEY, "export", "alice", "-o", "a.json",
                 "--to-key", OTHER_KEY)
    assert single.returncode != 0 and "cannot be encrypted" in single.stderr


# -- fuzzing: any damage anywhere in the file ---------------------------------------------


@pytest.fixture(scope="module")
def sealed_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[Any]]:
    """One sealed bundle (4 KB chunks) and the exact history of its source."""
    folder = tmp_path_factory.mktemp("sealed")
    src = nbs.open_store(folder / "src.db", key=TEST_KEY)
    src.save("s", box=Box([{"n": i, "text": f"{SECRET} {i}"} for i in range(60)]), label="one")
    src.save("s", box=Box([{"n": i, "text": f"{SECRET} {i}"} for i in range(70)]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle, "CHUNK", 4096)
        bundle.write_bundle(src, None, folder / "b", key=TEST_KEY)
    return (folder / "b").read_bytes(), exact(src, "s")


def _damaged_import(data: bytes, expected: list[Any], folder: Path) -> str:
    """Import damaged bundle bytes: the exact sessions, or a named error with nothing imported."""
    path = folder / "b"
    path.write_bytes(data)
    dst = nbs.open_store(folder / "dst.db", key=TEST_KEY)
    try:
        bundle.import_bundle(dst, bundle.read_bundle(path, key=TEST_KEY))
    except nbs.NbSessionsError:
        assert dst.sessions() == []
        return "named"
    assert exact(dst, "s") == expected  # the damage was in what no reader uses (the "chunk" size field)
    return "exact"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7), cut=st.booleans())
def test_a_flipped_bit_or_a_cut_anywhere_is_named_or_harmless(
    sealed_file: tuple[bytes, list[Any]], tmp_path_factory: pytest.TempPathFactory, where: float, bit: int, cut: bool
) -> None:
    data, expected = sealed_file
    at = int(where * len(data))
    damaged = data[:at] if cut else data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]
    outcome = _damaged_import(damaged, expected, tmp_path_factory.mktemp("case"))
    if cut or at > data.index(b"\n"):  # every byte after the header line is authenticated
        assert outcome == "named"
