"""The content hash of a checkpoint's own record, shared by the database stores.

A checkpoint row holds the skeleton of the state, the references to its long
lists, and the facts around them (owner, number, parent, time, label,
metadata, module names, size). The entries of the long lists carry their own
hashes (:func:`nb_sessions.chunks.verify_entries`); this module covers the
row, so one flipped byte or a hand edit of any of its values is a named error
instead of another checkpoint.

The hash has two halves, so a listing can check a row without reading its
state: ``hash[:16]`` is the digest of the content (skeleton and list
references), ``hash[16:]`` the digest of the facts *and* the first half.
:func:`verify_facts` needs only the facts and the stored hash;
:func:`verify_row` checks both halves. The label is among the facts, so a
store that relabels a checkpoint computes the hash anew (after checking the
old one, so a damaged row is never re-sealed).

Values are hashed as the store reads them back: ``None``, an ``int``, or text
and bytes (the same characters as text or as UTF-8 bytes hash alike). A store
whose column types change the bytes (PostgreSQL's ``jsonb`` reorders keys)
must hash the form it stores, e.g. the JSON text it writes and reads back.

Usage, for a store writing a row::

    digest = row_hash(key, seq, parent, created_at, label, metadata, modules, size, state, chunks)

and reading one::

    verify_row(stored, key, seq, parent, created_at, label, metadata, modules, size, state, chunks,
               where="checkpoint u/s@3 in /path/store.db", location="/path/store.db")
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import StoreCorruptedError
from .base import SessionKey

__all__ = ["ROW_HASH_SIZE", "content_hash", "key_hash", "relabelled", "row_hash", "verify_facts", "verify_row"]

#: Bytes of a row hash: 16 for the content, 16 for the facts and the content digest.
ROW_HASH_SIZE = 32
_HALF = ROW_HASH_SIZE // 2
_DOMAIN = b"nb_sessions checkpoint row v1\0"


def _field(value: Any) -> bytes:
    """One value, typed and length-prefixed: no two sequences of values encode alike."""
    if value is None:
        body = b"n"
    elif isinstance(value, bool):
        body = b"?" + (b"1" if value else b"0")
    elif isinstance(value, int):
        body = b"i" + str(value).encode()
    elif isinstance(value, str):
        body = b"b" + value.encode("utf-8", "surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        body = b"b" + bytes(value)
    else:  # a float or anything else a hand edit can put in a column: hashed, never equal to ours
        body = b"?" + type(value).__name__.encode() + b":" + repr(value).encode("utf-8", "backslashreplace")
    return len(body).to_bytes(8, "big") + body


def _digest(*values: Any) -> bytes:
    h = hashlib.blake2b(_DOMAIN, digest_size=_HALF)
    for value in values:
        h.update(_field(value))
    return h.digest()


def key_hash(key: SessionKey) -> bytes:
    """16 bytes over a session's ids, for a store's row of the session itself."""
    return _digest("session", key.user_id, key.session_id)


def content_hash(state: Any, chunks: Any) -> bytes:
    """The first half: digest of the skeleton and the list references, as stored."""
    return _digest("content", state, chunks)


def _facts_hash(
    content: bytes, key: SessionKey, seq: Any, parent: Any, created_at: Any, label: Any,
    metadata: Any, modules: Any, size: Any,
) -> bytes:
    return _digest("facts", key.user_id, key.session_id, seq, parent, created_at, label, metadata, modules, size, content)


def row_hash(
    key: SessionKey, seq: int, parent: int | None, created_at: str, label: str | None,
    metadata: bytes | str, modules: bytes | str, size: int, state: bytes | str, chunks: bytes | str | None,
) -> bytes:
    """The :data:`ROW_HASH_SIZE` bytes to store with a new checkpoint row."""
    content = content_hash(state, chunks)
    return content + _facts_hash(content, key, seq, parent, created_at, label, metadata, modules, size)


def relabelled(
    stored: Any, key: SessionKey, seq: int, parent: Any, created_at: Any, label: Any,
    metadata: Any, modules: Any, size: Any, *, new_label: str | None, where: str, location: str,
) -> bytes:
    """The hash of a row after its label becomes ``new_label`` (the old facts are checked first)."""
    verify_facts(stored, key, seq, parent, created_at, label, metadata, modules, size, where=where, location=location)
    content = bytes(stored[:_HALF])
    return content + _facts_hash(content, key, seq, parent, created_at, new_label, metadata, modules, size)


def _refuse(where: str, location: str, what: str) -> StoreCorruptedError:
    return StoreCorruptedError(
        f"{where}: {what} (the row was edited by hand or damaged); delete that checkpoint, "
        "the others are intact, or restore the store from a backup",
        location=location,
    )


def verify_facts(
    stored: Any, key: SessionKey, seq: Any, parent: Any, created_at: Any, label: Any,
    metadata: Any, modules: Any, size: Any, *, where: str, location: str,
) -> None:
    """Raise :class:`StoreCorruptedError` unless ``stored`` is a row hash whose second half fits these facts."""
    if not isinstance(stored, bytes) or len(stored) != ROW_HASH_SIZE:
        shown = "missing" if stored is None else f"{type(stored).__name__} of {len(stored) if isinstance(stored, (bytes, str)) else '?'}"
        raise _refuse(where, location, f"its row hash is {shown}, not the {ROW_HASH_SIZE} bytes nb_sessions writes")
    if _facts_hash(stored[:_HALF], key, seq, parent, created_at, label, metadata, modules, size) != stored[_HALF:]:
        raise _refuse(
            where, location,
            "its number, parent, time, label, metadata, module names, size or owner do not match the row's hash",
        )


def verify_row(
    stored: Any, key: SessionKey, seq: Any, parent: Any, created_at: Any, label: Any,
    metadata: Any, modules: Any, size: Any, state: Any, chunks: Any, *, where: str, location: str,
) -> None:
    """Raise :class:`StoreCorruptedError` unless the whole row (facts and content) matches ``stored``."""
    verify_facts(stored, key, seq, parent, created_at, label, metadata, modules, size, where=where, location=location)
    if content_hash(state, chunks) != stored[:_HALF]:
        raise _refuse(where, location, "its skeleton or list references do not match the row's hash")
