"""Plain helpers shared by the magics and the panel: no IPython, no widgets, easy to test.

They choose which live objects a save or a restore touches, fingerprint
states for autosave, pick unique labels, find the notebook's path and read
``[tool.nb_sessions]`` from a ``pyproject.toml``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import NbSessionsError
from ..state import as_stateful, iter_stateful, load_modules
from ..stores import BaseStore
from ..stores.space import human_size

__all__ = [
    "SETTINGS",
    "RestorePlan",
    "check_load",
    "fingerprint",
    "human_size",
    "live_states",
    "message_counts",
    "notebook_path",
    "one_line",
    "pick_modules",
    "plan_restore",
    "read_pyproject",
    "store_exists",
    "unique_label",
]

#: The settings ``[tool.nb_sessions]`` may hold, and the type each must have.
SETTINGS: dict[str, type] = {"store": str, "strict": bool, "autosave_label_prefix": str, "key_file": str}


def pick_modules(
    namespace: Mapping[str, Any], names: Sequence[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Return ``({name: object}, [names not in the namespace])``; no names means every Stateful object."""
    if not names:
        return dict(iter_stateful(namespace)), []
    found = {n: namespace[n] for n in dict.fromkeys(names) if n in namespace}
    return found, [n for n in dict.fromkeys(names) if n not in namespace]


@dataclass(frozen=True)
class RestorePlan:
    """What a restore would touch: objects to load into, and the names it must skip."""

    modules: dict[str, Any]
    #: Modules of the checkpoint with no object of that name in the namespace.
    no_object: tuple[str, ...] = ()
    #: Named objects (present in the namespace) the checkpoint holds no state for.
    no_state: tuple[str, ...] = ()
    #: Names asked for that are not in the namespace at all.
    missing: tuple[str, ...] = ()

    def notes(self, ref: str) -> list[str]:
        """One line per skipped name, saying why."""
        lines = [
            f"not restored: {n} (the checkpoint has it, but no variable {n!r} exists here)"
            for n in self.no_object
        ]
        lines += [f"not restored: {n} ({ref} holds no state for it)" for n in self.no_state]
        return lines


def plan_restore(
    namespace: Mapping[str, Any], saved: Sequence[str], names: Sequence[str] = ()
) -> RestorePlan:
    """Match checkpoint modules ``saved`` to live objects; no names means every module that has an object."""
    if names:
        wanted = list(dict.fromkeys(names))
        missing = tuple(n for n in wanted if n not in namespace)
        present = [n for n in wanted if n in namespace]
        return RestorePlan(
            modules={n: namespace[n] for n in present if n in saved},
            no_state=tuple(n for n in present if n not in saved),
            missing=missing,
        )
    return RestorePlan(
        modules={n: namespace[n] for n in saved if n in namespace},
        no_object=tuple(n for n in saved if n not in namespace),
    )


def live_states(modules: Mapping[str, Any]) -> dict[str, Any]:
    """The current ``{name: state_dict}`` of live objects."""
    return {name: as_stateful(obj, name).state_dict() for name, obj in modules.items()}


def check_load(modules: Mapping[str, Any], states: Mapping[str, Any], strict: bool) -> str | None:
    """Try the load on deep copies; return why a real load would fail, or None (also when copying fails)."""
    try:
        copies = copy.deepcopy(dict(modules))
    except Exception:  # objects that cannot be copied: the check is skipped, nothing is harmed
        return None
    try:
        load_modules(copies, {n: states[n] for n in copies if n in states}, strict=strict)
    except NbSessionsError as exc:
        return str(exc)
    return None


def _refuse(value: Any) -> Any:
    raise TypeError


def fingerprint(states: Mapping[str, Any]) -> str:
    """A short hash of ``{name: state}``, independent of dict key order."""
    try:
        data = orjson.dumps(states, default=_refuse, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # big ints, lone surrogates, deep nesting
        data = json.dumps(states, sort_keys=True, ensure_ascii=False, default=repr).encode(
            "utf-8", "surrogatepass"
        )
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def unique_label(wanted: str, taken: Iterable[str | None]) -> str:
    """``wanted`` if free, else ``wanted-2``, ``wanted-3``…"""
    used = {t for t in taken if t}
    if wanted not in used:
        return wanted
    n = 2
    while f"{wanted}-{n}" in used:
        n += 1
    return f"{wanted}-{n}"


def notebook_path(namespace: Mapping[str, Any]) -> str | None:
    """The notebook's path where the kernel knows it (Jupyter's ``__session__``, VS Code, env)."""
    for key in ("__session__", "__vsc_ipynb_file__"):
        value = namespace.get(key)
        if isinstance(value, str) and value:
            return value
    return os.environ.get("JPY_SESSION_NAME") or None


def store_exists(store: BaseStore) -> bool:
    """True when the store's file or folder exists (listing a missing one would create it).

    A store behind a URL (a server, an AgentScope app's storage) is never created by
    reading: it says itself, with a named error, when it cannot be reached.
    """
    return "://" in store.location or Path(store.location).exists()


def one_line(exc: BaseException) -> str:
    """An exception as one line: ``Type: message`` with newlines folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_pyproject(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """Read ``[tool.nb_sessions]`` from ``folder/pyproject.toml``: ``(settings, warnings)``.

    Unknown keys and values of the wrong type are left out with a warning; a
    relative ``store`` or ``key_file`` is made absolute against ``folder``. No file, no table: ``({}, [])``.
    """
    path = Path(folder) / "pyproject.toml"
    if not path.is_file():
        return {}, []
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return {}, [f"{path}: cannot read it ({one_line(exc)}); its [tool.nb_sessions] is ignored"]
    table = data.get("tool", {}).get("nb_sessions", {})
    if not isinstance(table, dict):
        return {}, [f"{path}: [tool.nb_sessions] must be a table; ignored"]
    settings: dict[str, Any] = {}
    warnings: list[str] = []
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        kind = SETTINGS.get(key)
        if kind is None:
            warnings.append(
                f"{path}: unknown setting [tool.nb_sessions] {raw_key!r} ignored "
                f"(known: {', '.join(SETTINGS)})"
            )
        elif not isinstance(value, kind):
            warnings.append(
                f"{path}: [tool.nb_sessions] {raw_key} must be a {kind.__name__}, "
                f"got {type(value).__name__}; ignored"
            )
        else:
            if key in ("store", "key_file") and isinstance(value, str) and value and "://" not in value:
                given = Path(value).expanduser()
                value = str(given if given.is_absolute() else path.parent / given)
            settings[key] = value
    return settings, warnings


def message_counts(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``agent.memory: 14 → 4 messages`` for each memory whose message count differs."""
    from .. import views

    with views.silenced():
        old = views.messages(dict(before))["path"].value_counts()
        new = views.messages(dict(after))["path"].value_counts()
    lines = []
    for path in dict.fromkeys([*old.index, *new.index]):
        a, b = int(old.get(path, 0)), int(new.get(path, 0))
        if a != b:
            lines.append(f"{path}: {a} → {b} messages")
    return lines
