"""The database stores' shared encryption glue (nb_sessions/stores/_sealed.py), without a database."""

from __future__ import annotations

import asyncio

import pytest

import nb_sessions as nbs
from nb_sessions.crypto import Cipher
from nb_sessions.stores._sealed import open_cipher, resealed_manifest
from nb_sessions.stores.base import SessionKey
from tests.conftest import TEST_KEY


def _open(headers: list[bytes | None], stored: bool) -> Cipher | None:
    """open_cipher over a store whose header reads as ``headers`` in turn, and whose create returns ``stored``."""

    async def read_header() -> bytes | None:
        return headers.pop(0)

    async def create_header(header: bytes) -> bool:
        return stored

    return asyncio.run(open_cipher(TEST_KEY, "the store", read_header, create_header))


def test_a_header_made_meanwhile_by_a_process_that_then_saved_stands() -> None:
    """Another creator's header and first checkpoint landed between our read and our create: no 'plain' error."""
    theirs = Cipher.create(TEST_KEY)
    cipher = _open([None, theirs.header], stored=False)
    assert cipher is not None and cipher.store_id == theirs.store_id


def test_a_plain_store_with_checkpoints_is_refused() -> None:
    with pytest.raises(nbs.KeyRequiredError, match="plain"):
        _open([None, None], stored=False)


def test_the_manifest_names_a_row_it_does_not_list() -> None:
    cipher, key = Cipher.create(TEST_KEY), SessionKey("", "alice")
    sealed = resealed_manifest(cipher, key, None, set(), "the store", added={(1, "t1")})
    sealed = resealed_manifest(cipher, key, sealed, {(1, "t1")}, "the store", added={(2, "t2")})
    with pytest.raises(nbs.StoreCorruptedError, match=r"checkpoint alice@3 .*not in the session's authenticated"):
        resealed_manifest(cipher, key, sealed, {(1, "t1"), (2, "t2"), (3, "t3")}, "the store")
    with pytest.raises(nbs.StoreCorruptedError, match=r"checkpoint alice@2 .*row is gone"):
        resealed_manifest(cipher, key, sealed, {(1, "t1")}, "the store")
    resealed_manifest(cipher, key, sealed, {(1, "t1")}, "the store", gone=[2])  # deleted by this transaction
    with pytest.raises(nbs.StoreCorruptedError, match="fails its authentication"):  # another session's
        resealed_manifest(cipher, SessionKey("", "bob"), sealed, {(1, "t1"), (2, "t2")}, "the store")
