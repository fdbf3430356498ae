"""Encryption at rest: a per-store data key, AES-256-GCM, keyed content hashes.

A store opened with a key keeps a small *header* (JSON) holding a random
256-bit data key wrapped (AES-GCM) by a key-encryption key derived from the
user's key: 32 raw bytes, their base64 text, or a passphrase (scrypt, with
its salt and parameters in the header). From the data key, HKDF derives an
encryption key (AES-256-GCM, a random 96-bit nonce per value) and a MAC key
(HMAC-SHA256, truncated to 16 bytes) for the content hashes that deduplicate
entries: equal entries still share one row within a store, but their hashes
reveal nothing and cannot be compared across stores.

Every ciphertext carries associated data naming its place (an entry its
keyed hash; a checkpoint's skeleton and metadata the store id, session,
number and creation time), so a ciphertext moved elsewhere fails to open.

Rotating the key (:meth:`Cipher.rewrap`) re-wraps the data key only: the
header is one value, written by one atomic write.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import orjson

from .errors import KeyRequiredError, MissingDependencyError, StoreCorruptedError, WrongKeyError

if TYPE_CHECKING:
    from .stores.base import SessionKey

__all__ = [
    "ENV_KEY", "Cipher", "KeySource", "check_manifest", "key_from_env", "open_checkpoint", "open_metadata",
    "resolve_key", "seal_checkpoint",
]

#: The environment variable a store's key is read from when none is given.
ENV_KEY = "NB_SESSIONS_KEY"
_VERSION = 1
_NONCE = 12
_TAG = 16
#: scrypt parameters for passphrases (about 32 MB and a tenth of a second).
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}

#: What a user may pass as ``key``: raw bytes, base64 text or a passphrase, a key file, or a callable.
KeySource: TypeAlias = "bytes | str | os.PathLike[str] | Callable[[], bytes | str]"


def _aead() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - the extra is part of dev
        raise MissingDependencyError(
            "encrypted stores need the 'cryptography' package: pip install 'nb_sessions[encryption]'"
        ) from None
    return AESGCM


def resolve_key(key: KeySource) -> bytes | str:
    """The key material of ``key``: bytes (32 raw bytes) or text (base64 of 32 bytes, or a passphrase).

    A ``pathlib.Path`` is a key file (its text, stripped); a callable is a key provider.
    """
    if callable(key):
        key = key()
    if isinstance(key, os.PathLike):
        file = Path(key)
        try:
            key = file.read_bytes().strip()
        except OSError as exc:
            raise KeyRequiredError(f"cannot read key file {file}: {exc.strerror}", location=str(file)) from exc
        with contextlib.suppress(UnicodeDecodeError):
            key = key.decode()
    if isinstance(key, (bytes, bytearray)):
        if len(key) != 32:
            raise WrongKeyError(
                f"a raw key must be 32 bytes, got {len(key)}; give 32 random bytes, their base64 text, or a passphrase"
            )
        return bytes(key)
    if isinstance(key, str):
        if not key:
            raise KeyRequiredError("the key is empty; give 32 random bytes, their base64 text, or a passphrase")
        return key
    raise KeyRequiredError(f"a key must be bytes, text, a key file path or a callable, not {type(key).__name__}")


def key_from_env() -> str | None:
    """``NB_SESSIONS_KEY``, or None when unset or empty."""
    return os.environ.get(ENV_KEY) or None


def _raw(material: bytes | str) -> bytes | None:
    """32 raw key bytes (given as bytes or their base64 text), or None for a passphrase."""
    if isinstance(material, bytes):
        return material
    try:
        raw = base64.b64decode(material, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def _hkdf(secret: bytes, info: bytes) -> bytes:
    prk = hmac.digest(b"nb_sessions hkdf salt v1", secret, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def _kek(material: bytes | str, params: dict[str, Any]) -> bytes:
    if params["kdf"] == "raw":
        raw = _raw(material)
        if raw is None:
            raise WrongKeyError("this store's key is 32 raw bytes (or their base64 text), not a passphrase")
        return _hkdf(raw, b"nb_sessions kek v1")
    text = material.decode("latin-1") if isinstance(material, bytes) else material
    return hashlib.scrypt(
        text.encode("utf-8", "surrogatepass"), salt=base64.b64decode(params["salt"]),
        n=int(params["n"]), r=int(params["r"]), p=int(params["p"]), maxmem=2**27, dklen=32,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Cipher:
    """A store's open data key: seal/open values, keyed content hashes, the header to store."""

    def __init__(self, data_key: bytes, store_id: bytes, header: bytes) -> None:
        self.store_id = store_id
        self.header = header
        self._mac_key = _hkdf(data_key, b"nb_sessions mac v1")
        self._aes = _aead()(_hkdf(data_key, b"nb_sessions enc v1"))
        self._data_key = data_key

    # -- the header -------------------------------------------------------------

    @classmethod
    def create(cls, material: bytes | str) -> Cipher:
        """A new random data key and store id, wrapped by ``material``."""
        return cls._wrap(os.urandom(32), os.urandom(16), material)

    @classmethod
    def _wrap(cls, data_key: bytes, store_id: bytes, material: bytes | str) -> Cipher:
        params: dict[str, Any]
        if _raw(material) is not None:
            params = {"kdf": "raw"}
        else:
            params = {"kdf": "scrypt", "salt": _b64(os.urandom(16)), **_SCRYPT}
        nonce = os.urandom(_NONCE)
        wrapped = _aead()(_kek(material, params)).encrypt(nonce, data_key, _header_aad(store_id, params))
        header = orjson.dumps({
            "nb_sessions_encryption": _VERSION, "cipher": "AES-256-GCM", "store": _b64(store_id),
            **params, "nonce": _b64(nonce), "wrapped": _b64(wrapped),
        })
        return cls(data_key, store_id, header)

    @classmethod
    def open_header(cls, header: bytes | str, material: bytes | str, location: str) -> Cipher:
        """Unwrap the data key of ``header`` with ``material``; WrongKeyError when it does not open."""
        try:
            h = orjson.loads(header)
            params = {k: h[k] for k in ("kdf", "salt", "n", "r", "p") if k in h}
            store_id = base64.b64decode(h["store"])
            nonce, wrapped = base64.b64decode(h["nonce"]), base64.b64decode(h["wrapped"])
            if h["nb_sessions_encryption"] != _VERSION or params["kdf"] not in ("raw", "scrypt"):
                raise ValueError("unknown version")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise StoreCorruptedError(
                f"{location}: its encryption header is damaged ({exc}); restore the store from a backup",
                location=location,
            ) from None
        from cryptography.exceptions import InvalidTag

        try:
            data_key = _aead()(_kek(material, params)).decrypt(nonce, wrapped, _header_aad(store_id, params))
        except (InvalidTag, WrongKeyError):
            raise WrongKeyError(
                f"the key given does not open {location} (a wrong key, or a passphrase for a raw key or the "
                "reverse); nothing was changed. Give the key the store was encrypted (or last rekeyed) with",
                location=location,
            ) from None
        return cls(data_key, store_id, bytes(header) if isinstance(header, bytes) else header.encode())

    def rewrap(self, material: bytes | str) -> Cipher:
        """The same data key and store id under a new key (the header to write in one atomic step)."""
        return self._wrap(self._data_key, self.store_id, material)

    # -- values -----------------------------------------------------------------

    def mac(self, data: bytes) -> bytes:
        """The keyed content hash of an entry (16 bytes of HMAC-SHA256)."""
        return hmac.digest(self._mac_key, data, "sha256")[:16]

    def seal(self, data: bytes, aad: bytes) -> bytes:
        """``nonce || ciphertext || tag`` of ``data``, bound to ``aad``."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aes.encrypt(nonce, data, aad)  # type: ignore[no-any-return]

    def open(self, blob: Any, aad: bytes, where: str, location: str) -> bytes:
        """The plaintext of ``blob``; StoreCorruptedError naming ``where`` if it was altered or moved."""
        from cryptography.exceptions import InvalidTag

        if not isinstance(blob, (bytes, bytearray, memoryview)) or len(blob) < _NONCE + _TAG:
            raise StoreCorruptedError(
                f"{where}: an encrypted value is missing or truncated ({location} was altered or damaged); "
                "delete that checkpoint, the others are intact",
                location=location,
            )
        view = blob if isinstance(blob, bytes) else bytes(blob)
        try:
            return self._aes.decrypt(view[:_NONCE], view[_NONCE:], aad)  # type: ignore[no-any-return]
        except InvalidTag:
            raise StoreCorruptedError(
                f"{where}: an encrypted value fails its authentication (altered, damaged, or moved from "
                f"another place in {location}); delete that checkpoint, the others are intact",
                location=location,
            ) from None

    def place(self, *parts: Any) -> bytes:
        """Associated data naming a place: the store id and ``parts``, length-prefixed."""
        out = [self.store_id]
        for part in parts:
            b = part if isinstance(part, bytes) else str(part).encode("utf-8", "surrogatepass")
            out.append(len(b).to_bytes(4, "big") + b)
        return b"".join(out)


# -- a checkpoint's values, shared by the database stores ---------------------------------
# A store seals a checkpoint's skeleton and metadata with seal_checkpoint, opens them
# with open_checkpoint / open_metadata, and keeps per session an authenticated list of
# its checkpoints (sealed with cipher.place("manifest", user_id, session_id)) that
# check_manifest compares with the rows it finds.


def _entry_digest(hashes: Sequence[bytes]) -> bytes:
    return hashlib.sha256(b"".join(hashes)).digest()


def seal_checkpoint(
    cipher: Cipher, key: SessionKey, seq: int, created: str, state: bytes, meta: bytes, hashes: Sequence[bytes]
) -> tuple[bytes, bytes]:
    """A checkpoint's skeleton (bound to its place and its entries in order) and metadata, sealed."""
    place = (key.user_id, key.session_id, seq, created)
    return (
        cipher.seal(state, cipher.place("state", *place, _entry_digest(hashes))),
        cipher.seal(meta, cipher.place("metadata", *place)),
    )


def open_checkpoint(
    cipher: Cipher, key: SessionKey, seq: int, created: Any, state: Any, hashes: Sequence[bytes], where: str,
    location: str,
) -> bytes:
    """The skeleton sealed by :func:`seal_checkpoint`, given the entries' hashes as read, in order."""
    return cipher.open(state, cipher.place("state", key.user_id, key.session_id, seq, created,
                                           _entry_digest(hashes)), where, location)


def open_metadata(cipher: Cipher, key: SessionKey, seq: int, created: Any, meta: Any, where: str,
                   location: str) -> bytes:
    """The metadata sealed by :func:`seal_checkpoint`."""
    return cipher.open(meta, cipher.place("metadata", key.user_id, key.session_id, seq, created), where, location)


def check_manifest(
    listed: set[tuple[int, str]] | None, found: set[tuple[int, str]], key: SessionKey, location: str
) -> None:
    """An encrypted session's rows must be exactly those its manifest lists (no replayed, no removed one)."""
    if listed is None:
        if found:
            raise StoreCorruptedError(
                f"session {key} in {location} has checkpoints but no authenticated manifest (its rows were "
                "inserted or the manifest removed); restore the store from a backup",
                location=location,
            )
        return
    for seq, _ in sorted(found - listed):
        raise StoreCorruptedError(
            f"checkpoint {key}@{seq} in {location} is not in the session's authenticated manifest (a replayed "
            "or inserted row); delete that checkpoint, the others are intact",
            location=location,
        )
    for seq, _ in sorted(listed - found):
        raise StoreCorruptedError(
            f"checkpoint {key}@{seq} in {location} is listed in the session's authenticated manifest but its "
            "row is gone (removed outside nb_sessions, or the session rolled back); restore the store from a backup",
            location=location,
        )


def _header_aad(store_id: bytes, params: dict[str, Any]) -> bytes:
    return b"nb_sessions data key v1\0" + store_id + orjson.dumps(params, option=orjson.OPT_SORT_KEYS)


def open_in_place(
    cipher: Cipher,
    data: memoryview,
    records: Sequence[tuple[int, int, bytes]],
    aad_prefix: bytes,
    where: Callable[[int], str],
    location: str,
    decode: Callable[[bytes], Any] | None = None,
) -> list[Any]:
    """The plaintexts of the sealed values at ``(offset, length, suffix)`` in ``data``, each opened
    with ``aad_prefix + suffix`` as associated data, read in place (a load opens 100,000 from one file).

    ``decode``, if given, turns each plaintext into its value as soon as it is opened (while
    its bytes are still in the CPU's cache). ``where(i)`` names the i-th value in the
    StoreCorruptedError of one that does not open.
    """
    from cryptography.exceptions import InvalidTag

    decrypt = cipher._aes.decrypt
    out: list[Any] = []
    append = out.append
    try:
        if decode is None:
            for offset, length, suffix in records:
                append(decrypt(data[offset:offset + _NONCE], data[offset + _NONCE:offset + length], aad_prefix + suffix))
        else:
            for offset, length, suffix in records:
                append(decode(decrypt(
                    data[offset:offset + _NONCE], data[offset + _NONCE:offset + length], aad_prefix + suffix
                )))
    except (InvalidTag, ValueError, TypeError):
        i = len(out)
        offset, length, suffix = records[i]
        _not_opened(cipher, bytes(data[offset:offset + length]), aad_prefix + suffix, where(i), location)
    return out


def _not_opened(cipher: Cipher, blob: Any, aad: bytes, where: str, location: str) -> NoReturn:
    """The named error of a value that did not open (:meth:`Cipher.open` says why)."""
    cipher.open(blob, aad, where, location)
    raise StoreCorruptedError(f"{where}: an encrypted value does not open", location=location) from None


def open_values(
    cipher: Cipher, values: Iterable[tuple[bytes, bytes]], where: Callable[[int], str], location: str
) -> list[bytes]:
    """The plaintexts of many ``(blob, aad)`` pairs, as :meth:`Cipher.open` gives each (a load opens thousands).

    ``where(i)`` names the i-th value in the StoreCorruptedError of one that does not open.
    """
    from cryptography.exceptions import InvalidTag

    decrypt = cipher._aes.decrypt
    out = []
    for i, (blob, aad) in enumerate(values):
        try:
            out.append(decrypt(blob[:_NONCE], blob[_NONCE:], aad))
        except (InvalidTag, ValueError, TypeError):
            _not_opened(cipher, blob, aad, where(i), location)
    return out
