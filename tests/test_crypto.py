"""nb_sessions.crypto: keys, wrapping, sealing, keyed hashes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from nb_sessions.crypto import Cipher, resolve_key
from nb_sessions.errors import KeyRequiredError, StoreCorruptedError, WrongKeyError

RAW = bytes(range(32))


@pytest.mark.parametrize("material", [RAW, base64.b64encode(RAW).decode(), "a passphrase"])
def test_header_opens_with_its_key_only(material: bytes | str) -> None:
    cipher = Cipher.create(material)
    again = Cipher.open_header(cipher.header, material, "here")
    assert again.open(cipher.seal(b"hello", b"place"), b"place", "w", "l") == b"hello"
    assert again.mac(b"x") == cipher.mac(b"x")
    with pytest.raises(WrongKeyError, match="does not open here"):
        Cipher.open_header(cipher.header, "another passphrase", "here")
    assert b"hello" not in cipher.header and (RAW not in cipher.header)


def test_raw_key_and_its_base64_are_the_same_key() -> None:
    cipher = Cipher.create(RAW)
    Cipher.open_header(cipher.header, base64.b64encode(RAW).decode(), "here")


def test_sealed_values_are_bound_to_their_place_and_fresh() -> None:
    cipher = Cipher.create(RAW)
    a, b = cipher.seal(b"same", b"p1"), cipher.seal(b"same", b"p1")
    assert a != b  # random nonces
    with pytest.raises(StoreCorruptedError, match="moved from another place"):
        cipher.open(a, b"p2", "checkpoint alice@2", "store.db")
    flipped = bytearray(a)
    flipped[-1] ^= 1
    with pytest.raises(StoreCorruptedError, match="checkpoint alice@2"):
        cipher.open(bytes(flipped), b"p1", "checkpoint alice@2", "store.db")
    with pytest.raises(StoreCorruptedError, match="truncated"):
        cipher.open(b"short", b"p1", "checkpoint alice@2", "store.db")


def test_keyed_hashes_differ_between_stores() -> None:
    one, two = Cipher.create(RAW), Cipher.create(RAW)
    assert one.mac(b"message") != two.mac(b"message")  # each store has its own data key
    assert len(one.mac(b"message")) == 16


def test_rewrap_keeps_the_data_key() -> None:
    cipher = Cipher.create("old")
    sealed = cipher.seal(b"data", b"p")
    new = cipher.rewrap(RAW)
    opened = Cipher.open_header(new.header, RAW, "here")
    assert opened.open(sealed, b"p", "w", "l") == b"data"
    with pytest.raises(WrongKeyError):
        Cipher.open_header(new.header, "old", "here")


def test_key_sources(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_text(base64.b64encode(RAW).decode() + "\n")
    assert resolve_key(f) == base64.b64encode(RAW).decode()
    assert resolve_key(lambda: RAW) == RAW
    with pytest.raises(WrongKeyError, match="32 bytes"):
        resolve_key(b"short")
    with pytest.raises(KeyRequiredError, match="cannot read key file"):
        resolve_key(tmp_path / "missing")
    with pytest.raises(KeyRequiredError, match="empty"):
        resolve_key("")


def test_damaged_header_is_named() -> None:
    with pytest.raises(StoreCorruptedError, match="encryption header is damaged"):
        Cipher.open_header(b"{}", RAW, "store.db")
