"""An encrypted JSONStore folder: its header file, and its sealed indexes, checkpoint files and entries.

A folder opened with a key keeps the header of :class:`~nb_sessions.crypto.Cipher`
(the wrapped data key and its parameters) in ``.nb_sessions/.encryption.json``,
made once (written whole, then linked into place, so two processes creating it
at once end with one) and replaced whole by a rekey. Every other file of the
history is sealed (AES-256-GCM); the associated data, which starts with the
store id, binds each value to its place:

===================================  ===============================================================
file                                 sealed value [associated data]
===================================  ===============================================================
``<name>/index.json``                the history index: checkpoints, labels, metadata, entry ranges
                                     [``index``, user id, session id]; around it a JSON envelope
                                     holding the ids in the clear (to list sessions without the key)
``<name>/<seq>.json``                the checkpoint's skeleton [``state``, user id, session id, seq,
                                     creation time, digest of its entries' keyed hashes in order]
``<name>/entries-<gen>.jsonl``       each list entry [``entry``, user id, session id, keyed hash];
                                     the ``.idx`` records hold the keyed hash, never a content hash
===================================  ===============================================================

The sealed index is the session's manifest: it lists every checkpoint with the
hash of its file, so a removed file, a file from another checkpoint, session or
an earlier life of the session is a :class:`StoreCorruptedError` naming the
checkpoint. AgentScope's latest file is not written (AgentScope could not read
it encrypted); a file AgentScope writes into the folder is not part of the store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from .. import codec
from ..crypto import Cipher, open_checkpoint, open_in_place, seal_checkpoint
from ..errors import StoreCorruptedError
from ._fs import TEMP_SUFFIX, fsync_dir, read_regular
from ._pack import EntryPack, Ranges, check_ranges, from_ranges
from .base import SessionKey

__all__ = [
    "HEADER", "check_entry", "create_header", "entry_places", "envelope_ids", "headerless", "is_sealed_index",
    "open_entries",
    "open_index", "open_state", "read_file", "seal_entries", "seal_index", "seal_state", "sealed_lists",
]

#: The header's file name inside the store's ``.nb_sessions`` folder (ids never start with ".").
HEADER = ".encryption.json"
_ENVELOPE = "nb_sessions_sealed"


def create_header(path: Path, header: bytes) -> None:
    """Make the header file unless one exists; another process may win, then its header stands."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never replaces: the first header made is the store's
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: create it exclusively instead
            with contextlib.suppress(FileExistsError):
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(out, "wb") as fh:
                    fh.write(header)
                    fh.flush()
                    os.fsync(fh.fileno())
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


# -- the index ------------------------------------------------------------------------


def seal_index(cipher: Cipher, key: SessionKey, index: dict[str, Any]) -> bytes:
    """The bytes of an encrypted session's ``index.json``: its ids in the clear, the index sealed."""
    sealed = cipher.seal(codec.dumps(index), cipher.place("index", key.user_id, key.session_id))
    return codec.dumps({
        _ENVELOPE: 1, "user_id": key.user_id, "session_id": key.session_id,
        "data": base64.b64encode(sealed).decode(),
    })


def is_sealed_index(parsed: Any) -> bool:
    """True when a parsed ``index.json`` is the envelope of a sealed one."""
    return isinstance(parsed, dict) and parsed.get(_ENVELOPE) == 1


def envelope_ids(parsed: Any) -> tuple[Any, Any]:
    """The (user id, session id) an envelope claims (checked when the index is opened)."""
    return parsed.get("user_id", ""), parsed.get("session_id")


def open_index(cipher: Cipher, key: SessionKey, parsed: Any, path: Path) -> Any:
    """The index inside an envelope, opened for ``key``; StoreCorruptedError if altered or moved."""
    where = f"session {key}: its history index"
    if not is_sealed_index(parsed):
        raise StoreCorruptedError(
            f"{where} {path} is not sealed, in an encrypted store (written without the key, or edited); "
            "move that session's folder away, the other sessions are intact",
            location=str(path),
        )
    try:
        blob = base64.b64decode(parsed["data"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        blob = b""
    try:
        plain = cipher.open(blob, cipher.place("index", key.user_id, key.session_id), where, str(path))
    except StoreCorruptedError:
        raise StoreCorruptedError(
            f"{where} {path} fails its authentication (altered, damaged, or another session's index); "
            f"restore the folder {path.parent.name} from a backup, or move it away to drop this session; "
            "the other sessions are intact",
            location=str(path),
        ) from None
    return codec.loads(plain, str(path), trusted=True)


def headerless(path: Path, header: Path) -> StoreCorruptedError:
    """The error for a sealed index in a folder whose header is gone."""
    return StoreCorruptedError(
        f"{path} is sealed (an encrypted store) but {header} is missing: the header holding the store's "
        "wrapped key was removed; restore it from a backup, nothing else opens these sessions",
        location=str(header),
    )


# -- checkpoint files and entries ----------------------------------------------------------


def seal_state(cipher: Cipher, key: SessionKey, seq: int, created: str, state: bytes, hashes: Sequence[bytes]) -> bytes:
    """A checkpoint's skeleton file, bound to its place and to its entries in order."""
    return seal_checkpoint(cipher, key, seq, created, state, b"", hashes)[0]


def open_state(
    cipher: Cipher, key: SessionKey, entry: dict[str, Any], data: bytes, hashes: Sequence[bytes], path: Path
) -> bytes:
    """The skeleton sealed by :func:`seal_state`, given its entries' keyed hashes as read."""
    seq = entry["seq"]
    return open_checkpoint(cipher, key, seq, entry["created_at"], data, hashes, f"checkpoint {key}@{seq}", str(path))


def _keyed_prefix(cipher: Cipher, key: SessionKey) -> bytes:
    """What ``cipher.place("entry", user id, session id, h)`` starts with for a 16-byte keyed hash ``h``."""
    return cipher.place("entry", key.user_id, key.session_id) + (16).to_bytes(4, "big")


def entry_places(cipher: Cipher, key: SessionKey) -> Callable[[bytes], bytes]:
    """``h -> cipher.place("entry", user id, session id, h)``, the common prefix built once (10,000 entries a load)."""
    keyed = _keyed_prefix(cipher, key)  # every keyed hash is 16 bytes
    return lambda h: keyed + h if len(h) == 16 else cipher.place("entry", key.user_id, key.session_id, h)


def seal_entries(cipher: Cipher, key: SessionKey, blobs: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``(keyed hash, sealed entry)`` for the pack, from ``(keyed hash, entry)``."""
    place, seal = entry_places(cipher, key), cipher.seal
    return [(h, seal(data, place(h))) for h, data in blobs]


def open_entries(
    cipher: Cipher,
    key: SessionKey,
    pack: EntryPack,
    ranges: Ranges,
    where: str,
    hashes: list[bytes],
    decode: Callable[[bytes], Any] | None = None,
) -> list[Any]:
    """The entries of ``ranges``, opened in place (and each decoded, given ``decode``); their keyed
    hashes are appended to ``hashes`` in order."""
    keyed = _keyed_prefix(cipher, key)  # the .idx records hold 16-byte hashes
    with pack.located_runs(ranges, where) as (data, records):
        hashes += [h for _, _, h in records]
        ordinals = from_ranges(ranges)
        return open_in_place(
            cipher, data, records, keyed, lambda i: f"{where} entry {ordinals[i]}", str(pack.data_path), decode
        )


def _entry_decoder(where: str) -> Callable[[bytes], Any]:
    """One opened entry's JSON value: orjson for what the codec wrote by its fast path, the codec
    itself for an entry it wrote by its exact path (which starts with a space)."""
    loads = orjson.loads

    def decode(part: bytes) -> Any:
        if part[:1] != b" ":
            try:
                return loads(part)
            except orjson.JSONDecodeError:
                pass
        return codec.loads(part, where)

    return decode


def check_entry(cipher: Cipher, key: SessionKey, pack: EntryPack) -> Callable[[bytes, bytes, int], None]:
    """A check for :meth:`EntryPack.compact`: each entry kept must open."""

    place = entry_places(cipher, key)

    def check(data: bytes, h: bytes, n: int) -> None:
        cipher.open(data, place(h), f"session {key} entry {n}", str(pack.data_path))

    return check


def sealed_lists(
    cipher: Cipher, key: SessionKey, pack: EntryPack, chunks: Any, where: str, hashes: list[bytes]
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Each long list of a checkpoint (its path and decoded entries), opened from the pack."""
    for p, ranges in chunks or ():
        decode = _entry_decoder(f"{where} ({p})")
        with codec.paused_gc():  # 100,000 new containers would start many collections
            values = open_entries(cipher, key, pack, check_ranges(ranges), where, hashes, decode)
        yield tuple(p), values


def read_file(path: Path, ref: str) -> bytes:
    """A checkpoint file's bytes; a missing one is named."""
    try:
        return read_regular(path)
    except FileNotFoundError:
        raise StoreCorruptedError(
            f"checkpoint {ref}: its file {path} is missing (removed outside nb_sessions); delete the "
            f"checkpoint (store.delete({ref!r})) or restore the file from a backup",
            location=str(path),
        ) from None
