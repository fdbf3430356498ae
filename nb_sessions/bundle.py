"""Bundles and copies: whole session histories moved between stores and files.

A bundle is one JSON object holding every checkpoint of one or more sessions::

    {"format": "nb_sessions-bundle", "version": 1,
     "created_at": "...", "nb_sessions_version": "0.1.0",
     "sessions": [{"user_id": "", "session_id": "alice", "checkpoints": [
         {"seq": 1, "parent": null, "created_at": "...", "label": "planned",
          "metadata": {...}, "modules": ["agent"], "sha256": "...", "state": {...}}]}]}

It is written with :mod:`nb_sessions.codec`, so NaN, integers beyond 64 bits
and lone surrogates come back exactly, one checkpoint per line, streamed (a
checkpoint's state is in memory only while it is written). ``sha256`` is the
hex digest of the state's canonical JSON (:func:`canonical_json`); every
digest is checked before an import writes anything.

Copies are exact. :func:`copy_sessions` and :func:`import_bundle` write
each session oldest first through the stores' one write path, told where
each checkpoint goes (:class:`~nb_sessions.stores.base.At`): the copy keeps
every checkpoint's ``seq`` (gaps left by ``prune`` or ``delete`` included),
``created_at``, ``parent`` (even one pruned in the source), ``label``,
module order, ``metadata`` (as it is: nothing is added, not even this
version's ``nb_sessions_version``) and state (which a destination opened
with a ``redact`` hook redacts, as on every write), so ``history()`` of
source and copy compare equal field by field but for ``size``, which is how
many bytes the destination stores (its own layout). A store refuses a seq its session
has already reached (:class:`~nb_sessions.errors.ConflictError`) and numbers
the session's next checkpoint past the last one copied: after a source
deleted its latest checkpoint, the next save of the source and of the copy
may take different numbers.

Where a checkpoint came from is the copy's own record (:class:`Copied`),
not the checkpoint's metadata. Copies made before copies were exact were
renumbered and re-stamped and carry ``original_seq``,
``original_created_at``, ``copied_from`` (and ``bundle`` or
``original_parent``) in their metadata; those are metadata like any other,
read as before and kept as they are by later copies.

A bundle written with a key (``write_bundle(..., key=...)``, ``nb-sessions
export --bundle --to-key-file``) is *sealed*: one plain header line (the
:data:`SEALED_FORMAT` marker and the wrapped random data key, as an encrypted
store's header holds it), then the bundle's bytes in AES-256-GCM chunks of
:data:`CHUNK` bytes, each bound to the bundle, its number and whether it is
the last, so a flipped byte, a dropped, reordered or truncated chunk, or a
chunk from another bundle is a :class:`StoreCorruptedError` naming the file and
the chunk, found before anything is imported. Nothing of the sessions is
readable without the key. :func:`read_bundle` opens it with ``key`` (or
``NB_SESSIONS_KEY``); :func:`import_bundle` puts a sealed bundle's sessions
into a plain store only with ``plaintext=True``.

A session already in the destination is refused before anything is
written; a session that fails midway (an error, Ctrl-C) is deleted from the
destination again. A process killed outright cannot clean up: the partial
session stays, and copying again refuses it by name until it is deleted.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import secrets
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import orjson

from . import codec
from ._loop import run_sync
from .crypto import KeySource
from .errors import (
    ConflictError,
    Hint,
    InvalidIdError,
    NbSessionsError,
    PlaintextRefusedError,
    SessionNotFoundError,
    StoreCorruptedError,
)
from .stores.base import At, BaseStore, Checkpoint, SessionKey, _InSession, parse_ref, validate_id

__all__ = [
    "CHUNK",
    "FORMAT",
    "SEALED_FORMAT",
    "VERSION",
    "Bundle",
    "BundleCheckpoint",
    "BundleSession",
    "Copied",
    "ProgressCallback",
    "canonical_json",
    "copy_sessions",
    "import_bundle",
    "import_state_file",
    "is_bundle",
    "is_sealed_bundle",
    "read_bundle",
    "state_digest",
    "write_bundle",
    "write_state",
]

#: The ``format`` marker of a bundle file.
FORMAT = "nb_sessions-bundle"
#: The bundle schema version this nb_sessions writes and the newest it reads.
VERSION = 1
#: The ``format`` marker of a sealed (encrypted) bundle's header line.
SEALED_FORMAT = "nb_sessions-sealed-bundle"
#: The plaintext bytes per sealed chunk of a sealed bundle.
CHUNK = 1 << 20
_LENGTH = struct.Struct(">I")  # each sealed chunk's length, before it

#: ``progress(done, total, note)``: called after each checkpoint is handled.
ProgressCallback = Callable[[int, int, str], None]

def canonical_json(value: Any) -> bytes:
    """The canonical bytes behind a checksum: keys sorted, no spaces, UTF-8 with lone surrogates passed through.

    Exactly ``json.dumps(value, sort_keys=True, ensure_ascii=False,
    separators=(",", ":"), allow_nan=True).encode("utf-8", "surrogatepass")``.
    """
    try:
        text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    except RecursionError:
        from .errors import NotSerializableError

        raise NotSerializableError(
            "", "deeply nested data", "It is nested deeper than a bundle can hold; flatten it."
        ) from None
    return text.encode("utf-8", "surrogatepass")


def state_digest(state: Mapping[str, Any]) -> str:
    """The hex SHA-256 of a state's :func:`canonical_json` (equal states, equal digests; NaN equals NaN)."""
    return hashlib.sha256(canonical_json(state)).hexdigest()


# -- the bundle model ------------------------------------------------------------


@dataclass(frozen=True)
class BundleCheckpoint:
    """One checkpoint as a bundle holds it: its place in the history, and its state."""

    seq: int
    parent: int | None
    created_at: str
    label: str | None
    metadata: Mapping[str, Any]
    modules: tuple[str, ...]
    sha256: str
    state: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class BundleSession(_InSession):
    """A session and its checkpoints, oldest first."""

    user_id: str
    session_id: str
    checkpoints: tuple[BundleCheckpoint, ...]


@dataclass(frozen=True)
class Bundle:
    """A bundle read (and verified) from a file."""

    sessions: tuple[BundleSession, ...]
    version: int = VERSION
    path: str = ""
    created_at: str | None = None
    #: Read from a sealed (encrypted) bundle.
    sealed: bool = False

    @property
    def checkpoints(self) -> int:
        """How many checkpoints the bundle holds in all."""
        return sum(len(s.checkpoints) for s in self.sessions)


@dataclass(frozen=True)
class Copied:
    """One session copied into a store: where it came from and the checkpoints written."""

    source: str
    target: str
    checkpoints: tuple[Checkpoint, ...]
    #: Source seq -> seq in the destination (the same number: copies are exact).
    seq_map: Mapping[int, int]


# -- writing ----------------------------------------------------------------------


def write_state(
    store: BaseStore, ref: str, path: str | os.PathLike[str] | IO[bytes], *, plaintext: bool = False
) -> Checkpoint:
    """Write one checkpoint's state as an AgentScope JSONSession file (``{module: state}``, codec bytes).

    From an encrypted store only with ``plaintext=True``: the file is not encrypted.
    """
    _refuse_plaintext(store, plaintext)
    cp = store.checkpoint(ref)
    data = codec.dumps(store.get_state(cp))
    with _output(path) as out:
        out.write(data)
    return cp


def write_bundle(
    store: BaseStore,
    sessions: Sequence[str | SessionKey] | None,
    path: str | os.PathLike[str] | IO[bytes],
    *,
    progress: ProgressCallback | None = None,
    plaintext: bool = False,
    key: KeySource | None = None,
) -> tuple[int, int]:
    """Write whole sessions (all of the store's when ``sessions`` is None) as a bundle; return ``(sessions, checkpoints)``.

    A file is replaced atomically: an interrupted export leaves no half bundle.
    With ``key`` the bundle is sealed (encrypted, see the module docstring);
    without, it is plain JSON, written from an encrypted store only with
    ``plaintext=True``.
    """
    from . import __version__

    if key is None:
        _refuse_plaintext(store, plaintext)
    else:
        from .crypto import Cipher, resolve_key

        cipher = Cipher.create(resolve_key(key))  # a new data key per bundle

    histories = _histories(store, sessions)
    total = sum(len(h) for _, h in histories)
    header = codec.dumps({
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "nb_sessions_version": __version__,
    })
    done = 0
    with _output(path) as raw_out:
        out: IO[bytes] | _SealedWriter = raw_out if key is None else _SealedWriter(raw_out, cipher)
        out.write(header[:-1] + b',"sessions":[\n')
        for i, (skey, history) in enumerate(histories):
            head = codec.dumps({"user_id": skey.user_id, "session_id": skey.session_id})
            out.write((b",\n" if i else b"") + head[:-1] + b',"checkpoints":[\n')
            for j, cp in enumerate(history):
                state = store.get_state(cp)
                record = {
                    "seq": cp.seq,
                    "parent": cp.parent,
                    "created_at": cp.created_at.isoformat(),
                    "label": cp.label,
                    "metadata": dict(cp.metadata),
                    "modules": list(state),
                    "sha256": state_digest(state),
                    "state": state,
                }
                out.write((b",\n" if j else b"") + codec.dumps(record, cp.ref))
                done += 1
                if progress is not None:
                    progress(done, total, cp.ref)
            out.write(b"]}")
        out.write(b"\n]}\n")
        if isinstance(out, _SealedWriter):
            out.finish()
    return len(histories), total


class _SealedWriter:
    """Writes a sealed bundle to ``out``: the header line, then the bytes given, in sealed chunks."""

    def __init__(self, out: IO[bytes], cipher: Any, chunk: int | None = None) -> None:
        self._out, self._cipher, self._chunk = out, cipher, chunk or CHUNK
        self._buffer = bytearray()
        self._index = 0
        out.write(orjson.dumps({
            "format": SEALED_FORMAT, "version": VERSION, "chunk": self._chunk,
            "header": base64.b64encode(cipher.header).decode(),
        }) + b"\n")

    def write(self, data: bytes) -> int:
        buffer, chunk = self._buffer, self._chunk
        buffer += data
        done = 0
        with memoryview(buffer) as view:  # (a record may be a 100 MB state: no copy of the rest per chunk)
            while len(buffer) - done > chunk:  # (the last chunk is written by finish, marked last)
                self._seal(bytes(view[done:done + chunk]), last=False)
                done += chunk
        del buffer[:done]
        return len(data)

    def finish(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()

    def _seal(self, data: bytes, *, last: bool) -> None:
        sealed = self._cipher.seal(data, self._cipher.place("bundle", self._index, int(last)))
        self._out.write(_LENGTH.pack(len(sealed)) + sealed)
        self._index += 1


def _refuse_plaintext(store: BaseStore, plaintext: bool, into: BaseStore | None = None) -> None:
    """Refuse to write an encrypted store's data in plaintext (a file, or ``into`` a plain store) unless told to."""
    if plaintext or not getattr(store, "encrypted", False):
        return
    if into is None:
        raise PlaintextRefusedError(
            f"{store.location} is encrypted and an export file is plaintext: pass plaintext=True "
            "(nb-sessions export --plaintext) to write it anyway, or copy the sessions into another "
            "encrypted store (copy_sessions / nb-sessions copy --to-key)",
            location=store.location,
        )
    if not getattr(into, "encrypted", False):
        raise PlaintextRefusedError(
            f"{store.location} is encrypted and {into.location} is not: copying would store the "
            "sessions there in plaintext. Open the destination with a key to copy them encrypted "
            "(nb-sessions copy --to-key/--to-key-file), or pass plaintext=True (nb-sessions copy "
            "--plaintext) to copy them into a plain store anyway",
            location=into.location,
        )


@contextlib.contextmanager
def _output(target: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    """A binary stream to write to: a given stream as is, or a temp file renamed over ``target`` on success."""
    if not isinstance(target, (str, os.PathLike)):
        yield target
        target.flush()
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _histories(store: BaseStore, sessions: Sequence[str | SessionKey] | None) -> list[tuple[SessionKey, list[Checkpoint]]]:
    """``(key, history)`` for the named sessions (each once, in order), or every session of the store."""
    if sessions is None:
        keys = [info.key for info in sorted(store.sessions(), key=lambda i: (i.user_id, i.session_id))]
    else:
        keys = list(dict.fromkeys(_session_key(s) for s in sessions))
    return [(key, store.history(key)) for key in keys]  # the key: its ids may hold "@"


def _session_key(session: str | SessionKey) -> SessionKey:
    ref = parse_ref(session)
    if not ref.is_latest:
        from .errors import InvalidIdError

        raise InvalidIdError(
            f"{session!r} names a checkpoint; bundles and copies take whole sessions: use {str(ref.key)!r}",
            value=session,
        )
    return ref.key


# -- reading ----------------------------------------------------------------------


def is_bundle(data: Any) -> bool:
    """True when parsed JSON is a bundle (has the bundle ``format`` marker)."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def is_sealed_bundle(path: str | os.PathLike[str]) -> bool:
    """True when the file at ``path`` starts with a sealed bundle's header line."""
    try:
        with open(path, "rb") as f:
            first = f.readline(64 * 1024)
    except OSError:
        return False
    return _sealed_header(first) is not None


def _sealed_header(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b"{"):
        return None
    try:
        head = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return head if isinstance(head, dict) and head.get("format") == SEALED_FORMAT else None


def _open_sealed(raw: bytes, where: str, key: KeySource | None) -> bytes:
    """The plain bundle inside a sealed one, every chunk authenticated (nothing is trusted before)."""
    from .crypto import ENV_KEY, Cipher, key_from_env, resolve_key
    from .errors import KeyRequiredError

    first, _, body = raw.partition(b"\n")
    head = _sealed_header(first + b"\n")
    assert head is not None
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION or version < 1:
        raise NbSessionsError(
            f"{where} is a sealed bundle of version {version!r}; this nb_sessions reads up to version "
            f"{VERSION}. Upgrade nb_sessions to import it."
        )
    material = resolve_key(key) if key is not None else key_from_env()
    if material is None:
        raise KeyRequiredError(
            f"{where} is an encrypted bundle and no key was given; nothing was read. Pass key=... to "
            f"read_bundle, set {ENV_KEY}, or give --from-key/--from-key-file to nb-sessions import",
            location=where,
        )
    try:
        header = base64.b64decode(head["header"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        header = b""
    cipher = Cipher.open_header(header, material, where)
    parts: list[bytes] = []
    at, index = 0, 0
    while True:
        length = _LENGTH.unpack_from(body, at)[0] if at + _LENGTH.size <= len(body) else -1
        blob = body[at + _LENGTH.size:at + _LENGTH.size + length]
        if length < 0 or len(blob) < length:
            raise StoreCorruptedError(
                f"{where}: the encrypted bundle ends inside chunk {index} (truncated); nothing was imported. "
                "Copy or export the bundle again",
                location=where,
            )
        at += _LENGTH.size + length
        last = at == len(body)  # sealed as the last or not: a cut or an append makes it fail
        try:
            parts.append(cipher.open(blob, cipher.place("bundle", index, int(last)), "", where))
        except StoreCorruptedError:
            raise StoreCorruptedError(
                f"{where}: chunk {index} of the encrypted bundle fails its authentication (altered, damaged, "
                "out of order, cut short, appended to, or from another bundle); nothing was imported. Copy or "
                "export the bundle again",
                location=where,
            ) from None
        if last:
            return b"".join(parts)
        index += 1


def read_bundle(path: str | os.PathLike[str], data: Any = None, *, key: KeySource | None = None) -> Bundle:
    """Read a bundle file (a sealed one with ``key``, else ``NB_SESSIONS_KEY``) and verify its version
    and every checksum.

    Raises :class:`StoreCorruptedError` naming the file and checkpoint (or the
    sealed chunk) when a record is malformed, altered or a state does not match
    its ``sha256``, :class:`KeyRequiredError` / :class:`WrongKeyError` for a
    sealed bundle without its key, and :class:`NbSessionsError` when the
    bundle is newer than this nb_sessions. ``data`` is the already parsed
    file (a plain bundle), if the caller has it.
    """
    where = str(path)
    sealed = False
    if data is None:
        raw = Path(path).read_bytes()
        if _sealed_header(raw.partition(b"\n")[0]) is not None:
            raw, sealed = _open_sealed(raw, where, key), True
        data = codec.loads(raw, where)
    if not is_bundle(data):
        raise StoreCorruptedError(
            f"{where} is not an nb_sessions bundle (no \"format\": {FORMAT!r}); "
            "export one with: nb-sessions export SESSION --bundle -o FILE",
            location=where,
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreCorruptedError(f"{where}: bundle version {version!r} is not a positive integer", location=where)
    if version > VERSION:
        raise NbSessionsError(
            f"{where} is a version {version} bundle; this nb_sessions reads up to version {VERSION}. "
            "Upgrade nb_sessions to import it."
        )
    raw_sessions = data.get("sessions")
    if not isinstance(raw_sessions, list):
        raise StoreCorruptedError(f"{where}: \"sessions\" is not a list", location=where)
    sessions = [_read_session(raw, f"{where}: sessions[{i}]") for i, raw in enumerate(raw_sessions)]
    keys = [s.key for s in sessions]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise StoreCorruptedError(f"{where}: session {dup} appears twice", location=where)
    created = data.get("created_at")
    return Bundle(tuple(sessions), version, where, created if isinstance(created, str) else None, sealed)


def _read_session(raw: Any, where: str) -> BundleSession:
    if not isinstance(raw, dict) or not isinstance(raw.get("checkpoints"), list):
        raise StoreCorruptedError(f"{where} is not a session record", location=where)
    user_id, session_id = raw.get("user_id", ""), raw.get("session_id")
    try:
        key = SessionKey(validate_id(user_id, "user id", literal=True), validate_id(session_id, literal=True))
    except NbSessionsError as exc:
        raise StoreCorruptedError(f"{where}: {exc}", location=where) from None
    checkpoints: list[BundleCheckpoint] = []
    seen: set[int] = set()
    for j, item in enumerate(raw["checkpoints"]):
        cp = _read_checkpoint(item, key, f"{where}.checkpoints[{j}]")
        if cp.seq in seen or (checkpoints and cp.seq < checkpoints[-1].seq):
            raise StoreCorruptedError(
                f"{where}: checkpoint {key}@{cp.seq} is out of order or repeated", location=where
            )
        seen.add(cp.seq)
        checkpoints.append(cp)
    if not checkpoints:
        raise StoreCorruptedError(f"{where}: session {key} has no checkpoints", location=where)
    return BundleSession(key.user_id, key.session_id, tuple(checkpoints))


def _read_checkpoint(item: Any, key: SessionKey, where: str) -> BundleCheckpoint:
    def bad(what: str) -> StoreCorruptedError:
        ref = f"{key}@{item.get('seq')}" if isinstance(item, dict) else str(key)
        return StoreCorruptedError(f"checkpoint {ref} ({where}): {what}", location=f"{where} ({ref})")

    if not isinstance(item, dict):
        raise bad("not a checkpoint record")
    seq, parent, state = item.get("seq"), item.get("parent"), item.get("state")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise bad(f"seq {seq!r} is not a positive integer")
    if parent is not None and not _is_int(parent):
        raise bad(f"parent {parent!r} is not an integer")
    if not isinstance(state, dict):
        raise bad("its state is not an object of module states")
    label, metadata, created = item.get("label"), item.get("metadata", {}), item.get("created_at")
    if label is not None and not isinstance(label, str):
        raise bad("label is not a string")
    if not isinstance(metadata, dict):
        raise bad("metadata is not an object")
    if not isinstance(created, str) or _time(created) is None:
        raise bad(f"created_at {created!r} is not an ISO 8601 time")
    expected = item.get("sha256")
    try:
        actual = state_digest(state)
    except NbSessionsError as exc:
        raise bad(f"its state cannot be checked: {exc}") from None
    if expected != actual:
        raise bad(
            f"checksum mismatch (sha256 {actual[:12]}…, expected {str(expected)[:12]}…): the state "
            "was changed or damaged after export; export it again"
        )
    return BundleCheckpoint(
        seq=seq, parent=parent, created_at=created, label=label, metadata=metadata,
        modules=tuple(state), sha256=actual, state=state,
    )


def _time(text: str) -> datetime | None:
    """A bundle's ``created_at`` as a UTC datetime (one without a zone is UTC); None if it is no ISO 8601 time."""
    try:
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except (TypeError, ValueError):
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _bundle_entry(key: SessionKey, c: BundleCheckpoint, where: str) -> _Entry:
    ref = f"{key}@{c.seq}"
    created = _time(c.created_at)
    if created is None:
        raise StoreCorruptedError(f"checkpoint {ref} ({where}): created_at {c.created_at!r} is not an ISO 8601 time",
                                  location=where)
    return _Entry(c.seq, c.parent, created, c.label, c.metadata, ref, functools.partial(_given, c.state))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- replaying history into a store -----------------------------------------------


class _Holder:
    """A stand-in module: hands a stored state to ``store.save``."""

    def __init__(self, state: Any = None) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = self.state
        return result

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        self.state = state_dict


def _holders(states: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _Holder(state) for name, state in states.items()}


@dataclass(frozen=True)
class _Entry:
    """A checkpoint to copy; ``read()`` returns its state (lazily, for copies)."""

    seq: int
    parent: int | None
    created_at: datetime
    label: str | None
    metadata: Mapping[str, Any]
    ref: str
    read: Callable[[], Mapping[str, Any]]


def _replay(
    dst: BaseStore,
    key: SessionKey,
    entries: Sequence[_Entry],
    source: str,
    tick: Callable[[str], None],
) -> Copied:
    """Write ``entries`` oldest first, exactly, as a new session ``key`` of ``dst``; delete it on failure."""
    written: list[Checkpoint] = []
    try:
        for entry in entries:
            state = entry.read()
            if not state:
                raise NbSessionsError(
                    f"{entry.ref} holds no modules; a store cannot keep an empty checkpoint"
                )
            # Past the options: a module may be called 'label' or 'metadata'. The key itself,
            # never re-parsed: ids may hold '@'.
            at = At(entry.seq, entry.created_at, entry.parent)
            cp = run_sync(dst._asave(key, entry.label, dict(entry.metadata), None, _holders(state), at=at))
            written.append(cp)
            tick(entry.ref)
    except BaseException:
        if written:
            with contextlib.suppress(NbSessionsError):
                dst.delete(key)
        raise
    return Copied(source, str(key), tuple(written), {cp.seq: cp.seq for cp in written})


def _given(state: Mapping[str, Any]) -> Mapping[str, Any]:
    return state


def _refuse_existing(dst: BaseStore, keys: Sequence[SessionKey]) -> None:
    """Raise ConflictError naming the sessions ``dst`` already has, before anything is written."""
    clash = []
    for key in keys:
        try:
            dst.history(key)
        except SessionNotFoundError:
            continue
        clash.append(str(key))
    if clash:
        hint = Hint("delete", (clash[0],))
        raise ConflictError(
            f"{dst.location} already has session(s) {', '.join(clash)}; copies never merge "
            f"histories. Delete them there first ({hint.python}), give the copy another "
            "name, or copy into another store."
        ).with_hints(hint)


def _counter(total: int, progress: ProgressCallback | None) -> Callable[[str], None]:
    done = 0

    def tick(note: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, note)

    return tick


def copy_sessions(
    src: BaseStore,
    dst: BaseStore,
    sessions: Sequence[str | SessionKey] | None = None,
    *,
    progress: ProgressCallback | None = None,
    plaintext: bool = False,
) -> list[Copied]:
    """Copy whole sessions (every one of ``src`` when ``sessions`` is None) exactly: see the module docstring.

    Sessions that already exist in ``dst`` are refused before anything is
    written; a session that fails midway is removed from ``dst`` again. From
    an encrypted store into a plain one only with ``plaintext=True``
    (:class:`~nb_sessions.errors.PlaintextRefusedError` otherwise).
    """
    if Path(src.location).resolve() == Path(dst.location).resolve():
        raise InvalidIdError(f"source and destination are the same store ({src.location})")
    _refuse_plaintext(src, plaintext, into=dst)
    histories = _histories(src, sessions)
    _refuse_existing(dst, [key for key, _ in histories])
    tick = _counter(sum(len(h) for _, h in histories), progress)
    out = []
    for key, history in histories:
        entries = [
            _Entry(cp.seq, cp.parent, cp.created_at, cp.label, cp.metadata, cp.ref,
                   functools.partial(src.get_state, cp))
            for cp in history
        ]
        out.append(_replay(dst, key, entries, f"{src.location}#{key}", tick))
    return out


def import_bundle(
    dst: BaseStore,
    bundle: Bundle,
    sessions: Sequence[str | SessionKey] | None = None,
    *,
    progress: ProgressCallback | None = None,
    rename: SessionKey | None = None,
    plaintext: bool = False,
) -> list[Copied]:
    """Copy a verified bundle's sessions (or only ``sessions``) into ``dst`` exactly, as :func:`copy_sessions` does.

    ``rename`` imports the one chosen session under that key instead of its own.
    A sealed bundle goes into a plain store only with ``plaintext=True``.
    """
    if bundle.sealed and not plaintext and not getattr(dst, "encrypted", False):
        raise PlaintextRefusedError(
            f"{bundle.path} is an encrypted bundle and {dst.location} is not encrypted: importing would store "
            "its sessions there in plaintext; nothing was imported. Import into a store opened with a key, or "
            "pass plaintext=True (nb-sessions import --plaintext) to import them into a plain store anyway",
            location=dst.location,
        )
    chosen = list(bundle.sessions)
    if sessions is not None:
        wanted = list(dict.fromkeys(_session_key(s) for s in sessions))
        have = {s.key: s for s in bundle.sessions}
        missing = [str(k) for k in wanted if k not in have]
        if missing:
            raise SessionNotFoundError(
                f"{bundle.path} holds no session {', '.join(missing)}; it has "
                f"{', '.join(s.session for s in bundle.sessions) or 'none'}",
                session=missing[0],
            )
        chosen = [have[k] for k in wanted]
    if rename is not None:
        if len(chosen) != 1:
            raise InvalidIdError(
                f"a new name fits one session, but {len(chosen)} are chosen "
                f"({', '.join(s.session for s in chosen)}): name the one to import",
                value=str(rename),
            )
        chosen = [dataclasses.replace(chosen[0], user_id=rename.user_id, session_id=rename.session_id)]
    _refuse_existing(dst, [s.key for s in chosen])
    tick = _counter(sum(len(s.checkpoints) for s in chosen), progress)
    out = []
    for s in chosen:
        entries = [_bundle_entry(s.key, c, bundle.path) for c in s.checkpoints]
        out.append(_replay(dst, s.key, entries, f"{bundle.path}#{s.key}", tick))
    return out


def import_state_file(
    dst: BaseStore, path: str | os.PathLike[str], session: str, data: Any = None, *, label: str | None = None
) -> Checkpoint:
    """Save an AgentScope JSONSession file (``{module: state}``) as a new checkpoint of ``session``.

    The session may already exist: the file becomes its next checkpoint.
    ``data`` is the already parsed file, if the caller has it.
    """
    where = str(path)
    if data is None:
        data = codec.loads(Path(path).read_bytes(), where)
    if not isinstance(data, dict) or not data:
        raise StoreCorruptedError(
            f"{where} is neither a bundle nor an AgentScope session file (a JSON object of module states)",
            location=where,
        )
    meta = {"imported_from": Path(path).name}
    return run_sync(dst._asave(session, label, meta, None, _holders(data)))
