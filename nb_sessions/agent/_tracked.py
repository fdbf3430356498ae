"""Lists and dicts that tell their owner when they change.

A :class:`~nb_sessions.agent.Msg` keeps its content and metadata in these,
so an in-place edit (``msg.content[0]["text"] = ...``) bumps the message's
change counter just like an assignment does. That counter is what lets a
store skip re-encoding the messages that did not change since the last save.
Copies (``copy.copy``, ``copy.deepcopy``, pickling) come out as plain
lists and dicts with no owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, SupportsIndex


class Owner(Protocol):
    """Whoever wants to hear about changes."""

    def _touch(self) -> None: ...


def track(value: Any, owner: Owner) -> Any:
    """Return ``value`` with every nested list and dict copied into a tracked one owned by ``owner``.

    Tuples become lists, as JSON has it. Iterative, so deep nesting is fine.
    """
    return _copy(value, owner)


def plain(value: Any) -> Any:
    """A deep copy made of plain lists and dicts (tuples become lists)."""
    return _copy(value, None)


def _new(like: Any, owner: Owner | None) -> Any:
    if owner is None:
        return {} if isinstance(like, dict) else []
    out: TrackedDict | TrackedList = TrackedDict() if isinstance(like, dict) else TrackedList()
    out._owner = owner
    return out


_MAX_RECURSION = 64


def _copy(value: Any, owner: Owner | None) -> Any:
    if not isinstance(value, (dict, list, tuple)):
        return value
    try:
        return _copy_shallow_nesting(value, owner, 0)
    except _TooDeep:
        return _copy_any_nesting(value, owner)


class _TooDeep(Exception):
    pass


def _copy_shallow_nesting(value: Any, owner: Owner | None, depth: int) -> Any:
    """Recursive copy: the fast way for what messages hold (a few levels)."""
    if depth > _MAX_RECURSION:
        raise _TooDeep
    out = _new(value, owner)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list, tuple)):
                item = _copy_shallow_nesting(item, owner, depth + 1)
            dict.__setitem__(out, key, item)
    else:
        list.extend(out, [
            _copy_shallow_nesting(item, owner, depth + 1) if isinstance(item, (dict, list, tuple)) else item
            for item in value
        ])
    return out


def _copy_any_nesting(value: Any, owner: Owner | None) -> Any:
    """Iterative copy, for data nested deeper than recursion should go."""
    root = _new(value, owner)
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for key, item in items:
            if isinstance(item, (dict, list, tuple)):
                child = _new(item, owner)
                stack.append((item, child))
            else:
                child = item
            if isinstance(dst, dict):
                dict.__setitem__(dst, key, child)
            else:
                list.append(dst, child)
    return root


class TrackedList(list):  # type: ignore[type-arg]
    """A list that calls ``owner._touch()`` on every change."""

    __slots__ = ("_owner",)
    _owner: Owner

    def _changed(self) -> None:
        self._owner._touch()

    def __setitem__(self, index: Any, value: Any) -> None:
        value = [track(v, self._owner) for v in value] if isinstance(index, slice) else track(value, self._owner)
        list.__setitem__(self, index, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        list.__delitem__(self, index)
        self._changed()

    def __iadd__(self, other: Iterable[Any]) -> TrackedList:  # type: ignore[misc]
        self.extend(other)
        return self

    def __imul__(self, n: SupportsIndex) -> TrackedList:
        list.__imul__(self, n)
        self._changed()
        return self

    def append(self, value: Any) -> None:
        list.append(self, track(value, self._owner))
        self._changed()

    def extend(self, values: Iterable[Any]) -> None:
        list.extend(self, [track(v, self._owner) for v in values])
        self._changed()

    def insert(self, index: SupportsIndex, value: Any) -> None:
        list.insert(self, index, track(value, self._owner))
        self._changed()

    def pop(self, index: SupportsIndex = -1) -> Any:
        value = list.pop(self, index)
        self._changed()
        return value

    def remove(self, value: Any) -> None:
        list.remove(self, value)
        self._changed()

    def clear(self) -> None:
        list.clear(self)
        self._changed()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        list.sort(self, *args, **kwargs)
        self._changed()

    def reverse(self) -> None:
        list.reverse(self)
        self._changed()

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return plain(self)  # type: ignore[no-any-return]

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (list, (plain(self),))


class TrackedDict(dict):  # type: ignore[type-arg]
    """A dict that calls ``owner._touch()`` on every change."""

    __slots__ = ("_owner",)
    _owner: Owner

    def _changed(self) -> None:
        self._owner._touch()

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, track(value, self._owner))
        self._changed()

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self._changed()

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[misc]
        self.update(other)
        return self

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, track(value, self._owner))
        self._changed()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            dict.__setitem__(self, key, track(default, self._owner))
            self._changed()
        return dict.__getitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        had = key in self
        value = dict.pop(self, key, *default)
        if had:
            self._changed()
        return value

    def popitem(self) -> tuple[Any, Any]:
        item = dict.popitem(self)
        self._changed()
        return item

    def clear(self) -> None:
        dict.clear(self)
        self._changed()

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return plain(self)  # type: ignore[no-any-return]

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (dict, (plain(self),))
