"""The errors nb_sessions raises: one small family under :class:`NbSessionsError`.

Every message says what went wrong, where (session, checkpoint, module or
dotted path) and what to do about it. The offending value travels on the
exception as attributes, so code can act on it without parsing text.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "CheckpointNotFoundError",
    "ConflictError",
    "Hint",
    "IncompleteSearchWarning",
    "InvalidIdError",
    "KeyRequiredError",
    "MigrationError",
    "MissingDependencyError",
    "NbSessionsError",
    "NotSerializableError",
    "NothingToLoadError",
    "PlaintextRefusedError",
    "ReadOnlyStoreError",
    "SessionNotFoundError",
    "SessionNotFoundValueError",
    "StateError",
    "StateMismatchError",
    "StoreCorruptedError",
    "StoreError",
    "WrongKeyError",
]


@dataclass(frozen=True)
class Hint:
    """A next step an error suggests: a store method and its arguments, e.g. ``Hint("history", ("alice",))``.

    The message shows it as a Python call (:attr:`python`); the command line
    shows the same step as a command (:attr:`cli`). ``cli_command`` names the
    command when it differs from the method (``sessions`` is ``ls``).
    """

    method: str
    args: tuple[str, ...] = ()
    cli_command: str = ""

    @property
    def python(self) -> str:
        """The step as a call, e.g. ``store.history('alice')``."""
        return f"store.{self.method}({', '.join(repr(a) for a in self.args)})"

    @property
    def cli(self) -> str:
        """The step as a command, e.g. ```nb-sessions history alice```."""
        words = [self.cli_command or self.method, *self.args]
        return "`nb-sessions " + " ".join(shlex.quote(w) for w in words) + "`"


_E = TypeVar("_E", bound="NbSessionsError")


class NbSessionsError(Exception):
    """Base class of every error nb_sessions raises.

    ``hints`` lists the next steps the message suggests (each written in the
    message as :attr:`Hint.python`), so a front end can show them its own way.
    """

    hints: tuple[Hint, ...] = ()

    def with_hints(self: _E, *hints: Hint) -> _E:
        """Attach ``hints`` (already written in the message as Python calls); return self."""
        self.hints = (*self.hints, *hints)
        return self

    def render(self, style: str = "python") -> str:
        """The message with its hints as Python calls (``"python"``) or as commands (``"cli"``)."""
        text = str(self)
        if style == "cli":
            for hint in self.hints:
                text = text.replace(hint.python, hint.cli)
        return text


class InvalidIdError(NbSessionsError, ValueError):
    """A session id, user id, label or reference is malformed or unsafe."""

    def __init__(self, message: str, *, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class SessionNotFoundError(NbSessionsError, LookupError):
    """The store holds no session of that name."""

    def __init__(self, message: str, *, session: str = "", user_id: str = "") -> None:
        super().__init__(message)
        self.session = session
        self.user_id = user_id


class SessionNotFoundValueError(SessionNotFoundError, ValueError):
    """The AgentScope drop-ins' missing session with ``allow_not_exist=False``: also a ``ValueError``.

    Every AgentScope session raises ``ValueError`` there, so code written for
    AgentScope keeps catching it.
    """


class CheckpointNotFoundError(NbSessionsError, LookupError):
    """The session exists but holds no checkpoint matching the reference."""

    def __init__(self, message: str, *, ref: str = "") -> None:
        super().__init__(message)
        self.ref = ref


class ConflictError(NbSessionsError, ValueError):
    """The operation would break a uniqueness rule (a label already in use, an existing session)."""


class StateError(NbSessionsError, ValueError):
    """A state dict does not have the shape its object expects.

    ``problems`` lists ``(dotted_path, message)`` pairs, every one found, not just the first.
    """

    def __init__(self, problems: Sequence[tuple[str, str]], *, module: str = "") -> None:
        self.problems: list[tuple[str, str]] = list(problems)
        self.module = module
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" in module '{self.module}'" if self.module else ""
        lines = [f"{len(self.problems)} problem(s) loading state{where}:"]
        lines += [f"  {path or '<root>'}: {msg}" for path, msg in self.problems]
        lines.append(self._advice())
        return "\n".join(lines)

    def _advice(self) -> str:
        if any("could not be put back" in message for _, message in self.problems):
            return "Some objects could not be put back as they were: check them before going on."
        return "The object was left unchanged. Fix the state, or load into a matching object."

    def with_prefix(self, prefix: str) -> StateError:
        """Return a copy whose paths start with ``prefix`` (a module name, usually)."""
        fixed = [(_join(prefix, path), msg) for path, msg in self.problems]
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.problems = fixed
        clone.module = prefix.split(".", 1)[0] if prefix else self.module
        clone.args = (clone._render(),)
        return clone


class StateMismatchError(StateError):
    """A strict load found missing or unexpected keys (all reported at once)."""

    def _advice(self) -> str:
        return (
            "The object was left unchanged. Load with strict=False to restore what matches "
            "and keep the rest, or load into an object of the kind that wrote this state."
        )

    @property
    def missing(self) -> list[str]:
        """Dotted paths the object expects but the state lacks."""
        return [p for p, m in self.problems if m.startswith("missing")]

    @property
    def unexpected(self) -> list[str]:
        """Dotted paths the state holds but the object does not know."""
        return [p for p, m in self.problems if m.startswith("unexpected")]


class NothingToLoadError(NbSessionsError, TypeError):
    """``load`` was given no live objects to restore into; the message says what to pass."""


class MissingDependencyError(NbSessionsError, ImportError):
    """An optional package a feature needs is not installed; the message names what to install."""


class MigrationError(StateError):
    """A migration found nothing to migrate: no AgentScope 1.x agent or memory where it looked."""

    def _advice(self) -> str:
        return (
            "Nothing was saved. Name the modules holding a 1.x agent (modules=[...] or --module), "
            "or pick a checkpoint written by AgentScope 1.x."
        )


class NotSerializableError(NbSessionsError, TypeError):
    """A value in a state cannot be written as JSON; ``path`` names it, e.g. ``agent.memory.content[3][0].metadata.when``."""

    def __init__(self, path: str, type_name: str, detail: str = "", *, action: str = "save") -> None:
        self.path = path
        self.type_name = type_name
        hint = detail or (
            "Convert it to str, int, float, bool, None, list or dict before saving "
            "(e.g. datetime -> isoformat()), or register the attribute with custom_to_json."
        )
        what = "cannot hold state" if action == "load" else "is not JSON"
        super().__init__(f"cannot {action} {path or '<root>'}: {type_name} {what}. {hint}")


class StoreError(NbSessionsError, OSError):
    """The store cannot be read or written (missing, read-only, disk full, locked too long)."""


class ReadOnlyStoreError(StoreError):
    """The store is someone else's data (e.g. an AgentScope app's database) that nb_sessions only reads.

    ``location`` names the store; the message says how to get a writable copy.
    """

    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(message)
        self.location = location


class StoreCorruptedError(StoreError):
    """A stored checkpoint or file is damaged; ``location`` names the file or row. Other sessions stay readable."""

    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(message)
        self.location = location


class KeyRequiredError(StoreError):
    """An encrypted store was opened without a key, or a plain store with one; nothing was changed.

    ``location`` names the store; the message says which key to give (or how to copy the
    sessions into a new encrypted store).
    """

    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(message)
        self.location = location


class PlaintextRefusedError(KeyRequiredError):
    """An encrypted store's data would be written in plaintext (an export file, a copy into a plain store).

    Nothing was written. ``location`` names where it would have gone; the
    message says how to allow it (``plaintext=True``, ``--plaintext``) or to
    copy into an encrypted store instead.
    """


class WrongKeyError(StoreError):
    """The key given does not open the encrypted store's data key; nothing was changed."""

    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(message)
        self.location = location


class IncompleteSearchWarning(RuntimeWarning):
    """A search passed over stored pieces it could not read; ``unreadable`` names them.

    The rest of the store still answered. ``nb-sessions check`` (or
    ``store.check()``) says what is damaged and what to do about it.
    """

    def __init__(self, message: str, unreadable: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.unreadable = tuple(unreadable)


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"


def raise_problems(problems: Sequence[tuple[str, str]]) -> None:
    """Raise every problem a load collected at once: a StateMismatchError when all are missing or
    unexpected keys (``strict`` would accept them), a StateError otherwise; nothing when there are none."""
    if not problems:
        return
    mismatch = all(m.startswith(("missing", "unexpected")) for _, m in problems)
    raise (StateMismatchError if mismatch else StateError)(list(problems))
