"""An encrypted database store's glue around :mod:`..crypto`, shared by SQLite and PostgreSQL (no SQL here).

Each database keeps the header of :class:`~nb_sessions.crypto.Cipher` as the
``encryption`` row of its ``nbs_meta`` table, made once (the first writer's
stands), and per session a sealed *manifest*: the ``(seq, created_at)`` of
every checkpoint, resealed inside each save and delete and compared with the
rows found on reading, so a replayed, inserted or removed checkpoint row is
named. The stores run the SQL; this module decides what it means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from .. import codec
from ..chunks import json_array, path_text
from ..crypto import ENV_KEY, Cipher, check_manifest, key_from_env, open_values
from ..errors import KeyRequiredError, StoreCorruptedError
from .base import SessionKey

__all__ = [
    "HEADER_KEY", "Row", "check_rows", "not_encrypted", "open_cipher", "open_entries", "open_manifest", "resealed_manifest",
]

#: The ``nbs_meta`` key of the header (the wrapped data key and its parameters).
HEADER_KEY = "encryption"
#: A checkpoint as the manifest lists it: its seq and its creation time (UTC ISO text).
Row = tuple[int, str]


async def open_cipher(
    key: bytes | str | None,
    location: str,
    read_header: Callable[[], Awaitable[bytes | None]],
    create_header: Callable[[bytes], Awaitable[bool]],
) -> Cipher | None:
    """The store's cipher: its header opened with ``key`` (or ``NB_SESSIONS_KEY``); None for a plain store.

    A store without a header opened with a key gets one through ``create_header``
    (which stores it unless a header exists, and returns False when the store
    already holds plain checkpoints); the header is then read again, so of two
    processes creating it at once, both use the one stored first.
    """
    header = await read_header()
    created = None
    if header is None:
        if key is None:
            return None
        created = Cipher.create(key)
        stored = await create_header(created.header)
        header = await read_header()
        if not stored and header is None:  # (a header made meanwhile, by a process that then saved, stands)
            raise KeyRequiredError(
                f"{location} is a plain (unencrypted) store and a key was given; nb_sessions does not encrypt "
                "a store in place. Copy its sessions into a new encrypted store: "
                f"nb-sessions copy {location} NEW --to-key ... (or store.copy_sessions), then remove the plain one",
                location=location,
            )
        if header is None:
            raise StoreCorruptedError(
                f"{location}: the encryption header just written cannot be read back; check the store's storage",
                location=location,
            )
    if created is not None and bytes(header) == created.header:
        return created  # ours stood: no second key derivation
    material = key if key is not None else key_from_env()
    if material is None:
        raise KeyRequiredError(
            f"{location} is encrypted and no key was given; nothing was changed. Pass key=... to open_store, "
            f"set {ENV_KEY}, or give --key to nb-sessions",
            location=location,
        )
    return Cipher.open_header(bytes(header), material, location)


def not_encrypted(location: str) -> KeyRequiredError:
    """The error of a rekey asked of a plain store."""
    return KeyRequiredError(
        f"{location} is not encrypted; copy its sessions into a new store opened with key=... instead",
        location=location,
    )


def open_entries(
    cipher: Cipher,
    ids: Sequence[int],
    rows: Mapping[int, tuple[Any, Any]],
    where: str,
    path: Any,
    location: str,
    hashes: list[bytes],
) -> tuple[bytes, bool]:
    """Entries ``ids`` (``rows``: id -> (sealed data, keyed hash)) as one JSON array, each opened in order.

    Each is opened with its keyed hash as associated data: GCM then proves the pair
    was written together by the key's holder, so the hash is not recomputed. The
    hashes are appended to ``hashes``, in order, for the skeleton's check
    (:func:`~nb_sessions.crypto.open_checkpoint`). The second value says whether
    an entry was written by the exact path (it then starts with a space).
    """
    sealed: list[tuple[bytes, bytes]] = []
    append, add_hash = sealed.append, hashes.append
    for i in ids:
        got = rows.get(i)
        if got is None:
            raise StoreCorruptedError(
                f"{where}: entry {i} is missing; delete that checkpoint, the others are intact", location=location
            )
        data, h = got
        if not isinstance(h, bytes):
            h = bytes(h) if isinstance(h, (bytearray, memoryview)) else b""
        append((bytes(data) if not isinstance(data, bytes) else data, h))
        add_hash(h)
    label = f"{where} ({path_text(tuple(path))})"  # built only for an entry that does not open
    parts = open_values(cipher, sealed, lambda n: f"{label} entry {ids[n]}", location)
    return json_array(parts), any(p[:1] == b" " for p in parts)


def _place(cipher: Cipher, key: SessionKey) -> bytes:
    return cipher.place("manifest", key.user_id, key.session_id)


def open_manifest(cipher: Cipher, key: SessionKey, sealed: Any, location: str) -> set[Row] | None:
    """The session's authenticated ``(seq, created_at)`` list; None when it has none (no checkpoint yet)."""
    if sealed is None:
        return None
    plain = cipher.open(sealed, _place(cipher, key), f"session {key}: its manifest of checkpoints", location)
    try:
        return {(int(seq), str(created)) for seq, created in codec.loads(plain)}
    except (TypeError, ValueError) as exc:  # authentic yet not a list of pairs: never written by nb_sessions
        raise StoreCorruptedError(
            f"session {key} in {location}: its manifest of checkpoints does not read ({exc}); restore the "
            "store from a backup",
            location=location,
        ) from None


def check_rows(cipher: Cipher, key: SessionKey, sealed: Any, found: Collection[Row], location: str) -> None:
    """On reading: the session's rows must be exactly those its manifest lists."""
    check_manifest(open_manifest(cipher, key, sealed, location), set(found), key, location)


def resealed_manifest(
    cipher: Cipher,
    key: SessionKey,
    sealed: Any,
    found: Collection[Row],
    location: str,
    *,
    gone: Collection[int] = (),
    added: Collection[Row] = (),
) -> bytes:
    """Inside a write's transaction: the new sealed manifest, after checking the rows against the old one.

    ``found`` are the session's rows as the transaction sees them, apart from
    ``added`` (being saved); ``gone`` are the seqs it deleted.
    """
    listed = open_manifest(cipher, key, sealed, location)
    if listed is not None:
        listed = {r for r in listed if r[0] not in gone}
    rows = set(found)
    check_manifest(listed if listed is not None or rows else set(), rows, key, location)
    return cipher.seal(codec.dumps(sorted(rows | set(added))), _place(cipher, key))
