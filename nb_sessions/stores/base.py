"""What every checkpoint store shares: references, checkpoints, and the sync + async API.

A backend implements a handful of async primitives on already-validated keys
(``_write``, ``_read``, ``_history``, ``_sessions``, ``_delete``,
``_set_label``, ``_vacuum``). ``_write`` numbers and stamps a new checkpoint
itself, or, given ``at`` (an :class:`At`), writes it at the seq, time and
parent an exact copy keeps from its source. Everything users call lives here, once: the
reference grammar, id validation, turning live objects into states and back
(all or nothing), prune policy, fork, and the sync twins that run on the
private loop.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import html
import re
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Union

from .. import codec
from .._loop import run_sync
from ..chunks import materialize
from ..errors import (
    CheckpointNotFoundError,
    ConflictError,
    Hint,
    IncompleteSearchWarning,
    InvalidIdError,
    NbSessionsError,
    NothingToLoadError,
    SessionNotFoundError,
)
from ..state import Stateful, as_stateful, load_modules, snapshot
from .space import human_size

if TYPE_CHECKING:
    import pandas as pd

    from ..repair import RepairReport
    from ..search import Hit
    from .space import SessionSpace, StoreStats

__all__ = [
    "BaseStore",
    "Checkpoint",
    "PruneResult",
    "Ref",
    "SessionInfo",
    "SessionKey",
    "parse_ref",
    "validate_id",
    "validate_label",
]

MAX_ID_LENGTH = 200
MAX_LABEL_LENGTH = 100
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")
_FORBIDDEN_LABEL = re.compile(r"[\x00-\x1f\x7f@]")

RefLike = Union[str, "Checkpoint", "Ref", "SessionKey"]
Redactor = Callable[[str, dict[str, Any]], dict[str, Any]]


def _package_version() -> str:
    from .. import __version__

    return __version__


class SessionKey(NamedTuple):
    """A session's identity: AgentScope keys sessions by ``(user_id, session_id)``."""

    user_id: str
    session_id: str

    def __str__(self) -> str:
        """The session as written in references; an ``@`` in an id is written ``\\@``.

        ``parse_ref(str(key)).key == key`` for every valid key: ``team@example.com``
        comes out as ``team\\@example.com``, never as checkpoint ``example.com`` of ``team``.
        """
        sid = quote_id(self.session_id)
        return f"{quote_id(self.user_id)}/{sid}" if self.user_id else sid


def quote_id(value: str) -> str:
    """Write an id for a reference: ``@`` (which separates the checkpoint) becomes ``\\@``."""
    return value.replace("@", "\\@")


def _split_ref(ref: str) -> tuple[str, str, str]:
    """Split a reference at its first ``@`` that is not escaped as ``\\@``."""
    i = 0
    while True:
        i = ref.find("@", i)
        if i < 0:
            return ref, "", ""
        if i == 0 or ref[i - 1] != "\\":
            return ref[:i], "@", ref[i + 1:]
        i += 1


def _unquote_id(value: str, what: str) -> str:
    """The id a reference names: ``\\@`` stands for ``@`` (ids hold no backslash otherwise)."""
    if "\\@" not in value:
        return validate_id(value, what)
    return validate_id(value.replace("\\@", "@"), what, literal=True)


@dataclass(frozen=True)
class Ref:
    """A parsed reference: a session and, optionally, which checkpoint of it."""

    key: SessionKey
    seq: int | None = None  # exact checkpoint number
    label: str | None = None  # a label
    back: int = 0  # ``~N``: N checkpoints before the latest

    @property
    def is_latest(self) -> bool:
        """True when no particular checkpoint was named."""
        return self.seq is None and self.label is None and self.back == 0

    def __str__(self) -> str:
        if self.seq is not None:
            return f"{self.key}@{self.seq}"
        if self.label is not None:
            return f"{self.key}@{self.label}"
        if self.back:
            return f"{self.key}@~{self.back}"
        return str(self.key)


def validate_id(value: Any, what: str = "session id", *, literal: bool = False) -> str:
    """Return ``value`` if it is a safe id; raise :class:`InvalidIdError` saying why otherwise.

    ``@`` separates a session from a checkpoint in references, so ids parsed
    from a reference cannot hold one; ``literal`` ids (AgentScope's session
    and user ids, e.g. an e-mail address) may.
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a str, got {type(value).__name__}", value=value)
    if what == "user id" and value == "":
        return value
    problem = None
    if not value:
        problem = "it is empty"
    elif len(value) > MAX_ID_LENGTH:
        problem = f"it is {len(value)} characters long (at most {MAX_ID_LENGTH})"
    elif value in (".", ".."):
        problem = "it is a path component ('.' or '..')"
    elif _FORBIDDEN.search(value):
        problem = "it contains '/', '\\' or a control character"
    elif "@" in value and not literal:
        problem = "'@' separates a session from a checkpoint in references (pass a SessionKey for such ids)"
    elif value != value.strip():
        problem = "it starts or ends with white space"
    elif value.startswith("."):
        problem = "it starts with '.' (reserved for the store's own files)"
    elif not _is_text(value):
        problem = "it holds a lone surrogate (half of an emoji?), which no store can keep in a name or a file name"
    if problem:
        raise InvalidIdError(
            f"invalid {what} {value!r}: {problem}. Use letters, digits, '-', '_' and '.' "
            "(no path separators or control characters).",
            value=value,
        )
    return value


def _is_text(value: str) -> bool:
    """True when ``value`` is valid Unicode text (encodes as UTF-8: no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_label(value: Any) -> str:
    """Return ``value`` if it can be a checkpoint label; raise :class:`InvalidIdError` otherwise."""
    if not isinstance(value, str):
        raise InvalidIdError(f"label must be a str, got {type(value).__name__}", value=value)
    problem = None
    if not value.strip():
        problem = "it is empty"
    elif len(value) > MAX_LABEL_LENGTH:
        problem = f"it is {len(value)} characters long (at most {MAX_LABEL_LENGTH})"
    elif value.isdigit() or value.startswith("~") or value == "latest":
        problem = "digits, '~N' and 'latest' are reserved for checkpoint numbers"
    elif _FORBIDDEN_LABEL.search(value):
        problem = "it contains '@' or a control character"
    elif value != value.strip():
        problem = "it starts or ends with white space"
    if problem:
        raise InvalidIdError(f"invalid label {value!r}: {problem}", value=value)
    return value


def parse_ref(ref: Any, user_id: str | None = None) -> Ref:
    """Parse ``session``, ``session@3``, ``session@label``, ``session@~1`` or ``user/session@...``.

    ``user_id`` given as an argument wins over one written in the reference.
    """
    if isinstance(ref, Ref):
        if user_id is not None and user_id != ref.key.user_id:
            return Ref(SessionKey(validate_id(user_id, "user id", literal=True), ref.key.session_id), ref.seq, ref.label, ref.back)
        return ref
    if isinstance(ref, Checkpoint):
        return Ref(SessionKey(ref.user_id, ref.session_id), seq=ref.seq)
    if isinstance(ref, SessionKey):
        key = SessionKey(
            validate_id(ref.user_id if user_id is None else user_id, "user id", literal=True),
            validate_id(ref.session_id, literal=True),
        )
        return Ref(key)
    if not isinstance(ref, str):
        raise InvalidIdError(
            f"a reference must be a str like 'alice' or 'alice@3', got {type(ref).__name__}", value=ref
        )
    head, sep, tail = _split_ref(ref)
    uid, slash, sid = head.rpartition("/")
    if not slash:
        uid = ""
    elif not uid:
        raise InvalidIdError(
            f"reference {ref!r} has an empty user before '/': write 'user/session', or just 'session'",
            value=ref,
        )
    if user_id is not None:
        if slash and _unquote_id(uid, "user id") != user_id:
            raise InvalidIdError(
                f"reference {ref!r} names user {uid!r} but user_id={user_id!r} was given", value=ref
            )
        key = SessionKey(validate_id(user_id, "user id", literal=True), _unquote_id(sid, "session id"))
    else:
        if uid in (".", "..") or uid.startswith(("../", "./")) or "/.." in uid:
            # '../x' is a path, not user '..' and session 'x': name what was meant
            validate_id(head, "session id")
        key = SessionKey(_unquote_id(uid, "user id"), _unquote_id(sid, "session id"))
    if not sep or tail == "latest":
        return Ref(key)
    if not tail:
        raise InvalidIdError(f"reference {ref!r} ends with '@': name a checkpoint, e.g. {sid}@1", value=ref)
    if _is_number(tail):
        return Ref(key, seq=int(tail))
    if tail.startswith("~") and _is_number(tail[1:]):
        return Ref(key, back=int(tail[1:]))
    if tail.isdigit() or (tail.startswith("~") and tail[1:].isdigit()):
        raise InvalidIdError(
            f"reference {ref!r}: checkpoint numbers are ASCII digits, at most 18 of them", value=ref
        )
    return Ref(key, label=validate_label(tail))


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


class _InSession:
    """What a checkpoint and a session summary share: the session they belong to."""

    session_id: str
    user_id: str

    @property
    def key(self) -> SessionKey:
        """The session's ``(user_id, session_id)``."""
        return SessionKey(self.user_id, self.session_id)

    @property
    def session(self) -> str:
        """The session as written in references (``user/session`` when there is a user)."""
        return str(self.key)


@dataclass(frozen=True)
class Checkpoint(_InSession):
    """One immutable saved state of a session."""

    session_id: str
    seq: int
    created_at: datetime
    modules: tuple[str, ...]
    size: int
    user_id: str = ""
    parent: int | None = None
    label: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    store: BaseStore | None = field(default=None, compare=False, repr=False)
    #: Set by the store, never from ``metadata`` (which is the caller's): where a checkpoint
    #: that is not one of the store's own lives, e.g. an AgentScope file or table row.
    origin: str | None = field(default=None, compare=False, repr=False)
    #: After ``load(..., repair=True)``: what was closed (the stored checkpoint is unchanged).
    repair: RepairReport | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """The exact reference of this checkpoint, e.g. ``alice@3``."""
        return f"{self.key}@{self.seq}"

    def state(self) -> dict[str, Any]:
        """The saved ``{module: state_dict}`` (read from the store)."""
        if self.store is None:
            raise NbSessionsError(f"checkpoint {self.ref} is not attached to a store")
        return self.store.get_state(self)

    def __repr__(self) -> str:
        label = f", label={self.label!r}" if self.label else ""
        return f"<Checkpoint {self.ref}{label} modules={list(self.modules)} size={self.size}>"

    def describe(self) -> str:
        """One line: reference, label, modules, size, time."""
        label = f" [{self.label}]" if self.label else ""
        return (
            f"{self.ref}{label}: {', '.join(self.modules) or 'no modules'}, "
            f"{human_size(self.size)}, {self.created_at:%Y-%m-%d %H:%M:%S} UTC"
        )

    def _repr_html_(self) -> str:
        rows = [
            ("checkpoint", self.ref),
            ("label", self.label or ""),
            ("parent", "" if self.parent is None else f"{self.key}@{self.parent}"),
            ("created (UTC)", f"{self.created_at:%Y-%m-%d %H:%M:%S}"),
            ("modules", ", ".join(self.modules)),
            ("size", human_size(self.size)),
        ]
        rows += [(f"metadata.{k}", str(v)) for k, v in self.metadata.items()]
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table class='nb-sessions-checkpoint'>{body}</table>"


@dataclass(frozen=True)
class SessionInfo(_InSession):
    """A session and a summary of its history."""

    session_id: str
    user_id: str
    checkpoints: int
    latest_seq: int
    created_at: datetime
    updated_at: datetime
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or, in a dry run, would remove) and what it kept."""

    removed: tuple[Checkpoint, ...]
    kept: tuple[Checkpoint, ...]
    dry_run: bool
    #: In a dry run, the bytes removing them would free (pieces other checkpoints use stay);
    #: the space returns to the file system after vacuum(). None after a real prune.
    bytes_reclaimed: int | None = None

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        refs = ", ".join(c.ref for c in self.removed) or "nothing"
        freed = "" if self.bytes_reclaimed is None else f", freeing {human_size(self.bytes_reclaimed)}"
        return f"{verb} {len(self.removed)} checkpoint(s): {refs}{freed}; kept {len(self.kept)}"


class VacuumResult(int):
    """What :meth:`BaseStore.vacuum` reclaimed: an int of bytes, so ``vacuum() > 0`` still works.

    ``bytes_before`` and ``bytes_after`` are the store's size on disk around
    the vacuum (0 where the store cannot tell); ``str()`` is a sentence.
    """

    bytes_before: int
    bytes_after: int
    location: str

    def __new__(cls, reclaimed: int, *, bytes_before: int = 0, bytes_after: int = 0, location: str = "") -> VacuumResult:
        self = super().__new__(cls, max(0, reclaimed))
        self.bytes_before = bytes_before
        self.bytes_after = bytes_after
        self.location = location
        return self

    @property
    def reclaimed(self) -> int:
        """Bytes given back to the file system."""
        return int(self)

    def __str__(self) -> str:
        where = f" in {self.location}" if self.location else ""
        if not self.bytes_before:
            return f"reclaimed {human_size(int(self))}{where}"
        return (
            f"reclaimed {human_size(int(self))}{where}: "
            f"{human_size(self.bytes_before)} before, {human_size(self.bytes_after)} after"
        )

    def __repr__(self) -> str:
        return f"<VacuumResult {self}>"


class At(NamedTuple):
    """Where an exact copy writes a checkpoint: its source's seq, time and parent, kept as they are.

    The store writes the checkpoint under ``seq`` (refusing a number the
    session has already reached, see :meth:`seq_after`) and numbers the
    session's next checkpoint past it; ``parent`` is kept even when that
    checkpoint is not in the session (pruned in the source).
    """

    seq: int
    created_at: datetime
    parent: int | None

    def seq_after(self, key: SessionKey, next_seq: int, location: str) -> int:
        """``seq``, when the session (whose next number is ``next_seq``) has not reached it; else ConflictError."""
        if self.seq < next_seq:
            raise ConflictError(
                f"cannot write {key}@{self.seq} in {location}: session {key} there has numbered its "
                f"checkpoints up to {next_seq - 1} already. An exact copy writes a session oldest first "
                "into a destination that does not have it: delete it there first, or copy into another store"
            )
        return self.seq


def _checked_at(at: At) -> At:
    """``at`` with its time in UTC; InvalidIdError for a seq, time or parent no checkpoint can have."""
    seq, created_at, parent = at
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise InvalidIdError(f"a checkpoint number must be a positive int, got {seq!r}", value=seq)
    if parent is not None and (not isinstance(parent, int) or isinstance(parent, bool) or parent < 1):
        raise InvalidIdError(f"checkpoint {seq}: parent must be a positive int or None, got {parent!r}", value=parent)
    if not isinstance(created_at, datetime) or created_at.utcoffset() is None:
        raise InvalidIdError(
            f"checkpoint {seq}: created_at must be a datetime with a time zone, got {created_at!r}",
            value=created_at,
        )
    return At(seq, created_at.astimezone(timezone.utc), parent)


class BaseStore:
    """The checkpoint store API; backends fill in the async primitives.

    Every public method has an async twin with an ``a`` prefix. Sync methods
    may be called inside a running event loop (a Jupyter kernel's).
    """

    #: A function ``(module_name, state) -> state`` applied before writing (strip secrets).
    redact: Redactor | None = None

    def __init__(self, *, redact: Redactor | None = None) -> None:
        self.redact = redact
        # The checkpoint last loaded into live objects, per session: the parent of the next save.
        self._parents: dict[SessionKey, int] = {}

    # -- backend primitives ------------------------------------------------

    async def _write(
        self,
        key: SessionKey,
        states: dict[str, Any],
        label: str | None,
        metadata: dict[str, Any],
        parent: int | None,
        *,
        at: At | None = None,
    ) -> Checkpoint:
        """Write a new checkpoint: the session's next seq now (``parent`` a hint), or exactly ``at``.

        Without ``at`` the store picks the next seq and the current time, and
        a ``parent`` no longer in the session becomes its latest checkpoint.
        With ``at`` it writes ``at.seq``, ``at.created_at`` and ``at.parent``
        as given (``at.seq_after`` refuses a seq the session has reached),
        in the same transaction that moves the session's next seq past it.
        """
        raise NotImplementedError

    async def _read(self, cp: Checkpoint) -> dict[str, Any]:
        raise NotImplementedError

    async def _verify(self, cp: Checkpoint) -> dict[str, Any]:
        """Read ``cp`` as ``nb-sessions check`` does: every stored piece of it, and any faster
        copy a load would read instead (a store that keeps one checks both)."""
        return await self._read(cp)

    async def _history(self, key: SessionKey) -> list[Checkpoint]:
        """Checkpoints of ``key`` oldest first; raise SessionNotFoundError if none."""
        raise NotImplementedError

    async def _sessions(self) -> list[SessionInfo]:
        raise NotImplementedError

    async def _delete(self, key: SessionKey, seqs: Sequence[int] | None) -> int:
        """Delete those checkpoints (all, and the session, when ``seqs`` is None)."""
        raise NotImplementedError

    async def _set_label(self, key: SessionKey, seq: int, label: str | None) -> None:
        raise NotImplementedError

    async def _vacuum(self) -> int:
        """Give unused space back to the file system; return bytes reclaimed."""
        return 0

    @property
    def location(self) -> str:
        """Where the store lives (a path)."""
        raise NotImplementedError

    def _read_only(self, cp: Checkpoint) -> bool:
        """True for checkpoints the store may show but never change (prune skips them)."""
        return False

    # -- async API ---------------------------------------------------------

    async def asave(
        self,
        session: str | SessionKey,
        /,
        label: Any = None,
        metadata: Any = None,
        *,
        user_id: Any = None,
        **modules: Any,
    ) -> Checkpoint:
        """Save the state of ``modules`` as a new checkpoint of ``session``.

        ``session`` is positional, so a module may have any name: ``self``,
        ``session``, ``ref``. A ``label=``, ``metadata=`` or ``user_id=`` whose
        value is a stateful object (``state_dict``/``load_state_dict``, or a
        pydantic model) is a module of that name.
        """
        label, metadata, user_id = _options(modules, label=label, metadata=metadata, user_id=user_id)
        return await self._asave(session, label, metadata, user_id, modules)

    async def _asave(
        self,
        session: str | SessionKey,
        label: Any,
        metadata: Any,
        user_id: Any,
        modules: Mapping[str, Any],
        *,
        at: At | None = None,
    ) -> Checkpoint:
        """:meth:`asave` with the modules apart from the options (bundles and copies use it).

        ``at``: an exact copy's checkpoint, written at its source's seq, time and
        parent, with ``metadata`` kept as given (no ``nb_sessions_version`` stamped).
        """
        ref = parse_ref(session, user_id)
        if not ref.is_latest:
            raise InvalidIdError(
                f"save() takes a session, not a checkpoint: use {str(ref.key)!r} "
                f"(the new checkpoint gets the next number)",
                value=session,
            )
        if not modules:
            raise TypeError(
                f"save({str(ref.key)!r}) needs at least one module, e.g. store.save({str(ref.key)!r}, agent=agent)"
            )
        if label is not None:
            validate_label(label)
        if metadata is not None and not isinstance(metadata, Mapping):
            from ..errors import NotSerializableError

            raise NotSerializableError(
                "metadata", type(metadata).__name__, "metadata must be a dict of JSON values (or None)."
            )
        if at is not None:
            at = _checked_at(at)
        meta = dict(metadata or {}) if at is not None else {**dict(metadata or {}), "nb_sessions_version": _package_version()}
        bad = codec.find_unserializable(meta, "metadata")
        if bad is not None:
            from ..errors import NotSerializableError

            raise NotSerializableError(*bad)
        states: dict[str, Any] = {}
        with codec.paused_gc():  # a long memory's state_dict() builds many containers, no cycles
            for name, obj in modules.items():
                state = snapshot(as_stateful(obj, name))
                if self.redact is not None:
                    # A private copy: a redactor that edits in place must not strip the live agent.
                    state = self.redact(name, copy.deepcopy(materialize({name: state})[name]))
                states[name] = state
        if at is not None:
            return await self._write(ref.key, states, label, meta, at.parent, at=at)
        return await self._write(ref.key, states, label, meta, self._parents.get(ref.key))

    async def aload(
        self,
        ref: RefLike,
        /,
        strict: Any = True,
        allow_not_exist: Any = False,
        *,
        user_id: Any = None,
        repair: Any = False,
        **modules: Any,
    ) -> Checkpoint | None:
        """Restore ``modules`` from a checkpoint: all of them or, on any error, none.

        With ``strict`` a module missing from the checkpoint, or a key missing or
        unexpected at any depth, is an error. Returns the checkpoint loaded, or
        None when the session does not exist and ``allow_not_exist`` is set.
        With ``repair``, tool calls left without a result (an agent stopped
        between a call and its result never resumes cleanly) are closed with an
        error result in what is loaded; ``checkpoint.repair`` reports them. The
        stored checkpoint is not changed: save again to keep the repair.
        ``ref`` is positional and an option given a stateful object is a module
        of that name, as in :meth:`asave`.
        """
        strict, allow_not_exist, user_id, repair = _options(
            modules, strict=strict, allow_not_exist=allow_not_exist, user_id=user_id, repair=repair
        )
        parsed = parse_ref(ref, user_id)
        if not modules:
            raise NothingToLoadError(
                f"load({str(ref)!r}) got no objects to restore into: pass them by module name, "
                f"e.g. store.load({str(ref)!r}, agent=agent) (store.checkpoint({str(ref)!r}).modules "
                "lists the names; store.get_state() reads the states without live objects)",
            )
        try:
            cp = await self._resolve(parsed)
        except SessionNotFoundError:
            if allow_not_exist:
                return None
            raise
        states = await self._read(cp)
        report = None
        if repair:
            from ..repair import repair_states

            states, report = repair_states(states)
        load_modules(modules, states, strict=strict)
        self._parents[cp.key] = cp.seq
        return dataclasses.replace(cp, repair=report) if report is not None else cp

    async def aget_state(self, ref: RefLike, *, user_id: str | None = None) -> dict[str, Any]:
        """Return the saved ``{module: state_dict}`` of a checkpoint; no live objects needed."""
        cp = await self._resolve(parse_ref(ref, user_id))
        return await self._read(cp)

    async def acheckpoint(self, ref: RefLike, *, user_id: str | None = None) -> Checkpoint:
        """Return the checkpoint a reference names (without its state)."""
        return await self._resolve(parse_ref(ref, user_id))

    async def asessions(self) -> list[SessionInfo]:
        """Every session in the store, most recently updated first."""
        infos = await self._sessions()
        return sorted(infos, key=lambda i: i.updated_at, reverse=True)

    async def ahistory(self, session: str | SessionKey, *, user_id: str | None = None) -> list[Checkpoint]:
        """The checkpoints of ``session``, oldest first."""
        return await self._history_near(parse_ref(session, user_id).key)

    async def afork(
        self,
        ref: RefLike,
        new_session: str,
        label: str | None = None,
        *,
        user_id: str | None = None,
    ) -> Checkpoint:
        """Start ``new_session`` from the state at ``ref``; its first checkpoint remembers the origin."""
        source = await self._resolve(parse_ref(ref, user_id))
        target = parse_ref(new_session, source.user_id if user_id is None else user_id)
        if not target.is_latest:
            raise InvalidIdError(f"fork() takes a new session name, not a checkpoint: {new_session!r}")
        try:
            await self._history(target.key)
        except SessionNotFoundError:
            pass
        else:
            from ..errors import ConflictError

            raise ConflictError(
                f"cannot fork into {target.key}: that session already exists. "
                "Choose a new name, or delete it first."
            )
        states = await self._read(source)
        meta = {"forked_from": source.ref, "nb_sessions_version": _package_version()}
        return await self._write(target.key, states, label, meta, None)

    async def adelete(self, ref: RefLike, *, user_id: str | None = None) -> int:
        """Delete a whole session (``alice``) or one checkpoint (``alice@3``); return how many went."""
        parsed = parse_ref(ref, user_id)
        if parsed.is_latest and not isinstance(ref, Checkpoint):
            await self._history_near(parsed.key)  # raises if there is no such session
            self._parents.pop(parsed.key, None)
            return await self._delete(parsed.key, None)
        cp = await self._resolve(parsed)
        if self._parents.get(cp.key) == cp.seq:
            del self._parents[cp.key]
        return await self._delete(cp.key, [cp.seq])

    async def alabel(self, ref: RefLike, text: str | None, *, user_id: str | None = None) -> Checkpoint:
        """Give the checkpoint a label (unique in its session); ``None`` removes it."""
        cp = await self._resolve(parse_ref(ref, user_id))
        if text is not None:
            validate_label(text)
        await self._set_label(cp.key, cp.seq, text)
        return await self._resolve(Ref(cp.key, seq=cp.seq))

    async def aprune(
        self,
        session: str | SessionKey,
        keep_last: int | None = None,
        keep_labeled: bool = True,
        older_than: timedelta | datetime | None = None,
        dry_run: bool = False,
        *,
        user_id: str | None = None,
    ) -> PruneResult:
        """Remove old checkpoints of ``session``; the latest is always kept.

        A checkpoint goes when it is outside the ``keep_last`` newest (if given)
        and older than ``older_than`` (if given), unless it is labelled and
        ``keep_labeled`` is set.
        """
        key = parse_ref(session, user_id).key
        if keep_last is None and older_than is None:
            raise TypeError("prune() needs keep_last=N and/or older_than=... to know what to remove")
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1: the latest checkpoint is always kept")
        history = await self._history_near(key)
        cutoff = None
        if older_than is not None:
            cutoff = (
                datetime.now(timezone.utc) - older_than
                if isinstance(older_than, timedelta)
                else older_than.astimezone(timezone.utc)
            )
        newest = {c.seq for c in history[-(keep_last or 1):]}
        removed: list[Checkpoint] = []
        kept: list[Checkpoint] = []
        for cp in history:
            protected = (
                self._read_only(cp)
                or cp.seq in newest
                or (keep_labeled and cp.label is not None)
                or (cutoff is not None and cp.created_at >= cutoff)
                or (keep_last is None and cp is history[-1])
            )
            (kept if protected else removed).append(cp)
        if removed and not dry_run:
            await self._delete(key, [c.seq for c in removed])
        freed = None
        if dry_run:
            from .space import reclaimable

            others = [await self._space(info.key) for info in await self._sessions() if info.key != key]
            freed = reclaimable(await self._space(key), [c.seq for c in removed], others)
        return PruneResult(tuple(removed), tuple(kept), dry_run, freed)

    async def astats(self) -> StoreStats:
        """Where the space goes: bytes per session, module and checkpoint (see :class:`~.space.StoreStats`)."""
        from .space import store_stats

        spaces = [await self._space(info.key) for info in await self.asessions()]
        return store_stats(spaces, disk_bytes=await self._disk_bytes(), location=self.location)

    async def _space(self, key: SessionKey) -> SessionSpace:
        """Backend hook: what each checkpoint of ``key`` holds on disk (see :mod:`.space`).

        The default knows no sharing: each checkpoint owns its logical size.
        A store that deduplicates reports its pieces so they are counted once.
        """
        from .space import CheckpointSpace, SessionSpace

        history = await self._history(key)
        return SessionSpace(key, [CheckpointSpace(cp, {"*": cp.size}) for cp in history])

    async def asearch(
        self, text: str, session: str | SessionKey | None = None, *, user_id: str | None = None
    ) -> pd.DataFrame:
        """Messages containing ``text`` (case-insensitive) across sessions and checkpoints.

        One row per distinct message: session, the checkpoints holding it,
        message id, role, name and a snippet. ``session`` limits the search.
        """
        from .. import search

        if not isinstance(text, str) or not text.strip():
            raise InvalidIdError("search() needs some text to look for", value=text)
        if session is not None:
            keys = [parse_ref(session, user_id).key]
            await self._history_near(keys[0])  # raises SessionNotFoundError with advice
        else:
            keys = [info.key for info in await self.asessions()]
        with search.collect_unreadable() as unreadable:
            hits = await self._search(text.strip(), keys)
        found = search.frame(hits, text.strip())
        if unreadable:
            places = list(dict.fromkeys(unreadable))
            shown = ", ".join(places[:5]) + (f" and {len(places) - 5} more" if len(places) > 5 else "")
            found.attrs["unreadable"] = places
            warnings.warn(
                IncompleteSearchWarning(
                    f"nb_sessions: search of {self.location} could not read {shown}; the results leave "
                    f"them out. See what is damaged with: nb-sessions --store {self.location} check",
                    places,
                ),
                stacklevel=3,
            )
        return found

    async def _search(self, text: str, keys: list[SessionKey]) -> list[Hit]:
        """Find matching messages by reading every checkpoint (stores may do better)."""
        from ..search import Hit, scan_state, unless_unreadable

        hits: list[Hit] = []
        for key in keys:
            for cp in await self._history(key):
                with unless_unreadable(cp.ref):  # `check` reports it; a search still answers from the rest
                    state = await self._read(cp)
                    hits += [Hit(key.session_id, key.user_id, cp.seq, p, m) for p, m in scan_state(state, text)]
        return hits

    async def avacuum(self) -> VacuumResult:
        """Reclaim disk space left by deleted checkpoints; return what was reclaimed.

        The result is an int (bytes reclaimed, as before) that also carries the
        store's size before and after and prints as a sentence.
        """
        before = await self._disk_bytes()
        reclaimed = await self._vacuum()
        after = await self._disk_bytes()
        return VacuumResult(reclaimed, bytes_before=before, bytes_after=after, location=self.location)

    async def _disk_bytes(self) -> int:
        """Bytes the store takes on disk now (files, WAL included); 0 where unknown."""
        return 0

    # -- sync twins ----------------------------------------------------------

    def save(
        self,
        session: str | SessionKey,
        /,
        label: Any = None,
        metadata: Any = None,
        *,
        user_id: Any = None,
        **modules: Any,
    ) -> Checkpoint:
        """Save the state of ``modules`` as a new checkpoint of ``session``; see :meth:`asave`."""
        return run_sync(self.asave(session, label, metadata, user_id=user_id, **modules))

    def load(
        self,
        ref: RefLike,
        /,
        strict: Any = True,
        allow_not_exist: Any = False,
        *,
        user_id: Any = None,
        repair: Any = False,
        **modules: Any,
    ) -> Checkpoint | None:
        """Restore ``modules`` from a checkpoint (all or none); see :meth:`aload`."""
        return run_sync(
            self.aload(ref, strict, allow_not_exist, user_id=user_id, repair=repair, **modules)
        )

    def get_state(self, ref: RefLike, *, user_id: str | None = None) -> dict[str, Any]:
        """Return the saved ``{module: state_dict}`` of a checkpoint."""
        return run_sync(self.aget_state(ref, user_id=user_id))

    def checkpoint(self, ref: RefLike, *, user_id: str | None = None) -> Checkpoint:
        """Return the checkpoint a reference names."""
        return run_sync(self.acheckpoint(ref, user_id=user_id))

    def sessions(self) -> list[SessionInfo]:
        """Every session in the store, most recently updated first."""
        return run_sync(self.asessions())

    def history(self, session: str | SessionKey, *, user_id: str | None = None) -> list[Checkpoint]:
        """The checkpoints of ``session``, oldest first."""
        return run_sync(self.ahistory(session, user_id=user_id))

    def fork(
        self, ref: RefLike, new_session: str, label: str | None = None, *, user_id: str | None = None
    ) -> Checkpoint:
        """Start ``new_session`` from the state at ``ref``."""
        return run_sync(self.afork(ref, new_session, label, user_id=user_id))

    def delete(self, ref: RefLike, *, user_id: str | None = None) -> int:
        """Delete a session or one checkpoint; return how many checkpoints went."""
        return run_sync(self.adelete(ref, user_id=user_id))

    def label(self, ref: RefLike, text: str | None, *, user_id: str | None = None) -> Checkpoint:
        """Label a checkpoint (``None`` removes the label)."""
        return run_sync(self.alabel(ref, text, user_id=user_id))

    def prune(
        self,
        session: str | SessionKey,
        keep_last: int | None = None,
        keep_labeled: bool = True,
        older_than: timedelta | datetime | None = None,
        dry_run: bool = False,
        *,
        user_id: str | None = None,
    ) -> PruneResult:
        """Remove old checkpoints; see :meth:`aprune`."""
        return run_sync(
            self.aprune(session, keep_last, keep_labeled, older_than, dry_run, user_id=user_id)
        )

    def stats(self) -> StoreStats:
        """Where the space goes; ``.sessions``, ``.modules``, ``.checkpoints`` are DataFrames."""
        return run_sync(self.astats())

    def vacuum(self) -> VacuumResult:
        """Reclaim disk space; return what was reclaimed (an int of bytes, with details)."""
        return run_sync(self.avacuum())

    def search(
        self, text: str, session: str | SessionKey | None = None, *, user_id: str | None = None
    ) -> pd.DataFrame:
        """Messages containing ``text`` across sessions and checkpoints; see :meth:`asearch`."""
        return run_sync(self.asearch(text, session, user_id=user_id))

    # -- helpers -------------------------------------------------------------

    async def _resolve(self, ref: Ref) -> Checkpoint:
        history = await self._history_near(ref.key)
        if ref.seq is not None:
            found = next((c for c in history if c.seq == ref.seq), None)
        elif ref.label is not None:
            found = next((c for c in history if c.label == ref.label), None)
        elif ref.back >= len(history):
            found = None
        else:
            found = history[-1 - ref.back]
        if found is None:
            have = ", ".join(f"@{c.seq}" + (f" ({c.label})" if c.label else "") for c in history[-8:])
            hint = Hint("history", (str(ref.key),))
            close = difflib.get_close_matches(ref.label or "", [c.label for c in history if c.label], n=1)
            maybe = f" Did you mean {ref.key!s}@{close[0]}?" if close else ""
            raise CheckpointNotFoundError(
                f"session {ref.key} has no checkpoint {str(ref)!r}; it has {len(history)}: "
                f"{have}{' …' if len(history) > 8 else ''}.{maybe} See {hint.python}.",
                ref=str(ref),
            ).with_hints(hint)
        return found

    def _not_found(self, key: SessionKey) -> SessionNotFoundError:
        return SessionNotFoundError(
            f"no session {str(key)!r} in {self.location}; store.sessions() lists those it has",
            session=key.session_id,
            user_id=key.user_id,
        ).with_hints(Hint("sessions", cli_command="ls"))

    async def _history_near(self, key: SessionKey) -> list[Checkpoint]:
        """:meth:`_history`; a missing session's error suggests the closest session name."""
        try:
            return await self._history(key)
        except SessionNotFoundError as error:
            try:
                names = [str(info.key) for info in await self._sessions()]
            except NbSessionsError:
                raise error from None  # the suggestion is a courtesy; the error stands without it
            close = difflib.get_close_matches(str(key), names, n=1)
            if close and "Did you mean" not in str(error):
                error.args = (f"{error.args[0]}. Did you mean {close[0]!r}?",)
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


def is_module(value: Any) -> bool:
    """True for what a store saves as a module: a stateful object or a pydantic model."""
    if isinstance(value, Stateful):
        return True
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def _options(
    modules: dict[str, Any], defaults: Mapping[str, Any] | None = None, /, **options: Any
) -> tuple[Any, ...]:
    """The options' values, in order; one given a module moves into ``modules`` under its name.

    So a module may be called ``label``, ``metadata``, ``strict``, ``user_id``...
    (the option then takes its default, from ``defaults`` or the store API's).
    """
    values = []
    for name, value in options.items():
        if is_module(value):
            modules[name] = value
            value = (defaults or _OPTION_DEFAULTS)[name]
        values.append(value)
    return tuple(values)


_OPTION_DEFAULTS: dict[str, Any] = {
    "label": None,
    "metadata": None,
    "user_id": None,
    "strict": True,
    "allow_not_exist": False,
    "repair": False,
}


def utcnow() -> datetime:
    """The current time in UTC, to the microsecond."""
    return datetime.now(timezone.utc)
