"""The errors nb_sessions raises: one small family under :class:`NbSessionsError`.

Every message says what went wrong, where (session, checkpoint, module or
dotted path) and what to do about it. The offending value travels on the
exception as attributes, so code can act on it without parsing text.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CheckpointNotFoundError",
    "ConflictError",
    "InvalidIdError",
    "NbSessionsError",
    "NotSerializableError",
    "SessionNotFoundError",
    "SessionNotFoundValueError",
    "StateError",
    "StateMismatchError",
    "StoreCorruptedError",
    "StoreError",
]


class NbSessionsError(Exception):
    """Base class of every error nb_sessions raises."""


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


class NotSerializableError(NbSessionsError, TypeError):
    """A value in a state cannot be written as JSON; ``path`` names it, e.g. ``agent.memory.content[3][0].metadata.when``."""

    def __init__(self, path: str, type_name: str, detail: str = "") -> None:
        self.path = path
        self.type_name = type_name
        hint = detail or (
            "Convert it to str, int, float, bool, None, list or dict before saving "
            "(e.g. datetime -> isoformat()), or register the attribute with custom_to_json."
        )
        super().__init__(f"cannot save {path or '<root>'}: {type_name} is not JSON. {hint}")


class StoreError(NbSessionsError, OSError):
    """The store cannot be read or written (missing, read-only, disk full, locked too long)."""


class StoreCorruptedError(StoreError):
    """A stored checkpoint or file is damaged; ``location`` names the file or row. Other sessions stay readable."""

    def __init__(self, message: str, *, location: str = "") -> None:
        super().__init__(message)
        self.location = location


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path:
        return prefix
    return prefix + path if path.startswith("[") else f"{prefix}.{path}"
