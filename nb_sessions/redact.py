"""Ready-made redactors: keep secrets out of checkpoints.

A store applies its redactor ``fn(module_name, state) -> state`` to every
module's state before writing it (``open_store(path, redact=fn)``)::

    store = nbs.open_store("agents.db", redact=redact_keys())
    store = nbs.open_store("agents.db", redact=redact_keys(("api_key", "cookie")))

:func:`redact_keys` replaces the value of every dict key with a secret's name,
at any depth (tool inputs, message metadata, nested configs), in a copy:
the state handed in, and so the live objects behind it, are never changed.
A checkpoint holds the replacement instead of the secret; loading it puts
the replacement back into the object, so set secrets again after a load (or
keep them out of the saved state altogether).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_SECRET_KEYS", "KeyRedactor", "redact_keys"]

#: The key names :func:`redact_keys` hides by default.
DEFAULT_SECRET_KEYS: tuple[str, ...] = ("api_key", "authorization", "password", "token", "secret")


def _norm(key: str) -> str:
    return key.casefold().replace("-", "_")


class KeyRedactor:
    """A redactor that replaces the values of secret-named keys; see :func:`redact_keys`."""

    def __init__(self, names: Iterable[str], replacement: Any) -> None:
        if isinstance(names, str):
            names = (names,)
        self.names: tuple[str, ...] = tuple(names)
        for name in self.names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"redact_keys() takes key names (non-empty str), got {name!r}")
        self.replacement = replacement
        self._wanted = frozenset(_norm(n) for n in self.names)

    def is_secret(self, key: Any) -> bool:
        """True when ``key`` names a secret (case and ``-``/``_`` do not matter)."""
        return isinstance(key, str) and _norm(key) in self._wanted

    def __call__(self, module_name: str, state: dict[str, Any]) -> dict[str, Any]:
        """Return a copy of ``state`` with every secret value replaced; ``state`` is not changed."""
        result = self._walk(state)
        if not isinstance(result, dict):  # a module state is a dict; keep whatever else as it came
            return state
        return result

    def _walk(self, value: Any) -> Any:
        """Copy ``value`` (dicts and lists, at any depth: iterative) replacing secret values."""
        if not isinstance(value, (Mapping, list, tuple)):
            return value
        root: Any = {} if isinstance(value, Mapping) else []
        stack: list[tuple[Any, Any]] = [(value, root)]
        while stack:
            src, dst = stack.pop()
            if isinstance(src, Mapping):
                for key, item in src.items():
                    if item is not None and self.is_secret(key):
                        dst[key] = self.replacement
                    else:
                        dst[key] = self._child(item, stack)
            else:
                for item in src:
                    dst.append(self._child(item, stack))
        return root

    @staticmethod
    def _child(item: Any, stack: list[tuple[Any, Any]]) -> Any:
        if isinstance(item, (Mapping, list, tuple)):
            child: Any = {} if isinstance(item, Mapping) else []
            stack.append((item, child))
            return child
        return item

    def __repr__(self) -> str:
        return f"redact_keys({self.names!r}, replacement={self.replacement!r})"


def redact_keys(
    names: Iterable[str] = DEFAULT_SECRET_KEYS, replacement: Any = "[redacted]"
) -> KeyRedactor:
    """A redactor replacing the value of every key named in ``names`` by ``replacement``.

    Keys match whatever their case and whether they use ``-`` or ``_``
    (``Authorization``, ``API-KEY`` and ``api_key`` all match ``api_key``);
    names match whole keys only (``openai_api_key`` needs its own entry).
    A ``None`` value is left as it is: there is no secret in it. Nested dicts
    and lists are walked at any depth; the input is never modified.
    """
    return KeyRedactor(names, replacement)
