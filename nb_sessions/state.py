"""The state model: :class:`StateModule`, the :class:`Stateful` protocol and adapters.

``StateModule`` keeps AgentScope 1.x's wire behaviour (nested modules first in
assignment order, then registered attributes in registration order) and fixes
its quirks: ``strict`` reaches nested modules, a mismatch lists every missing
and unexpected key with its dotted path, and a failed load changes nothing.

Loading is two-phase. ``_nbs_prepare_load`` validates and converts the whole
tree, collecting problems and returning *commit* callables; only when no
problem was found are the commits run, and they are plain assignments that
cannot fail. Objects that are merely :class:`Stateful` (an AgentScope agent,
say) cannot be prepared; :func:`load_modules` snapshots them first and puts
them back if anything fails.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import NotSerializableError, StateError, StateMismatchError, _join, raise_problems

__all__ = [
    "PydanticState",
    "StateModule",
    "Stateful",
    "as_stateful",
    "load_modules",
    "prepare_load",
    "snapshot",
]

Commit = Callable[[], None]
Problems = list[tuple[str, str]]


@runtime_checkable
class Stateful(Protocol):
    """Anything whose state can be saved and restored: AgentScope's own contract."""

    def state_dict(self) -> dict[str, Any]:
        """Return the object's state as JSON-compatible data."""
        ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore the object from a state returned by ``state_dict``."""
        ...


@dataclass(frozen=True)
class _AttrSpec:
    to_json: Callable[[Any], Any] | None
    from_json: Callable[[Any], Any] | None
    expect: type | tuple[type, ...] | None


class StateModule:
    """Base class for objects with a savable state (AgentScope 1.x compatible).

    Assigning a ``StateModule`` to an attribute nests it; ``register_state``
    adds a plain attribute. Subclasses call ``super().__init__()`` first.
    """

    _module_dict: dict[str, StateModule]
    _attribute_dict: dict[str, _AttrSpec]

    def __init__(self) -> None:
        object.__setattr__(self, "_module_dict", {})
        object.__setattr__(self, "_attribute_dict", {})

    def __setattr__(self, key: str, value: Any) -> None:
        if isinstance(value, StateModule):
            if "_module_dict" not in self.__dict__:
                raise AttributeError(
                    f"{type(self).__name__}.{key}: call super().__init__() before assigning "
                    "nested state modules"
                )
            self._module_dict[key] = value
        elif key in self.__dict__.get("_module_dict", ()):
            # Replaced by something that is not a module: it no longer nests.
            del self._module_dict[key]
        super().__setattr__(key, value)

    def __delattr__(self, key: str) -> None:
        self.__dict__.get("_module_dict", {}).pop(key, None)
        self.__dict__.get("_attribute_dict", {}).pop(key, None)
        super().__delattr__(key)

    def register_state(
        self,
        attr_name: str,
        custom_to_json: Callable[[Any], Any] | None = None,
        custom_from_json: Callable[[Any], Any] | None = None,
        *,
        expect: type | tuple[type, ...] | None = None,
    ) -> None:
        """Include attribute ``attr_name`` in the state, optionally converted by the hooks.

        ``expect`` (an nb_sessions extension) names the type(s) a loaded value
        must have; a mismatch is reported with its dotted path.
        """
        if "_attribute_dict" not in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before register_state()"
            )
        value = getattr(self, attr_name)
        if custom_to_json is None:
            from .codec import find_unserializable

            bad = find_unserializable(value, attr_name)
            if bad is not None:
                raise NotSerializableError(
                    bad[0],
                    bad[1],
                    f"register_state('{attr_name}') needs a JSON value or a custom_to_json hook.",
                )
        self._attribute_dict[attr_name] = _AttrSpec(custom_to_json, custom_from_json, expect)

    def state_dict(self) -> dict[str, Any]:
        """Return nested modules' states (assignment order), then registered attributes."""
        state: dict[str, Any] = {}
        for key in self._module_dict:
            attr = getattr(self, key, None)
            if isinstance(attr, StateModule):
                state[key] = attr.state_dict()
        for key, spec in self._attribute_dict.items():
            attr = getattr(self, key)
            state[key] = spec.to_json(attr) if spec.to_json is not None else attr
        return state

    def _nbs_snapshot(self) -> dict[str, Any]:
        """Like :meth:`state_dict`, but nested modules may hand long lists over as ``Entries``.

        Stores call this (through :func:`snapshot`) so that a memory can say
        which messages changed without rebuilding every message's dict.
        """
        state: dict[str, Any] = {}
        for key in self._module_dict:
            attr = getattr(self, key, None)
            if isinstance(attr, StateModule):
                state[key] = snapshot(attr)
        for key, spec in self._attribute_dict.items():
            attr = getattr(self, key)
            state[key] = spec.to_json(attr) if spec.to_json is not None else attr
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Restore from ``state_dict``; on any problem raise and leave the object unchanged.

        With ``strict`` every missing or unexpected key, at any depth, is an error.
        """
        from .codec import paused_gc

        problems: Problems = []
        with paused_gc():
            commits = self._nbs_prepare_load(state_dict, strict, "", problems)
            raise_problems(problems)
            _apply(commits)

    # -- two-phase loading -------------------------------------------------

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: Problems
    ) -> list[Commit]:
        """Validate ``state`` and return the assignments that apply it; add problems instead of raising."""
        if not isinstance(state, Mapping):
            problems.append((path, f"expected a dict (state of {type(self).__name__}), got {_tname(state)}"))
            return []
        commits: list[Commit] = []
        for key, module in self._module_dict.items():
            sub = _join(path, key)
            if key not in state:
                if strict:
                    problems.append((sub, f"missing: the state of nested {type(module).__name__}"))
                continue
            commits += prepare_load(module, state[key], strict, sub, problems)
        for key, spec in self._attribute_dict.items():
            sub = _join(path, key)
            if key not in state:
                if strict:
                    problems.append((sub, "missing: a registered attribute"))
                continue
            value = state[key]
            if spec.from_json is not None:
                try:
                    value = spec.from_json(value)
                except Exception as exc:  # the hook's own error, reported with its place
                    problems.append((sub, f"custom_from_json rejected it: {type(exc).__name__}: {exc}"))
                    continue
            elif spec.expect is not None and not isinstance(value, spec.expect):
                problems.append((sub, f"expected {_expected(spec.expect)}, got {_tname(value)}"))
                continue
            commits.append(_setter(self, key, value))
        if strict:
            known = self._module_dict.keys() | self._attribute_dict.keys()
            for key in state:
                if key not in known:
                    problems.append(
                        (_join(path, str(key)), f"unexpected: {type(self).__name__} has no such state")
                    )
        return commits


class PydanticState:
    """Adapter that saves and restores a pydantic model in place (e.g. AgentScope 2.x ``AgentState``)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        """Dump the model to JSON-compatible data."""
        dumped: dict[str, Any] = self.model.model_dump(mode="json")
        return dumped

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Validate ``state_dict`` against the model class, then update the model in place."""
        problems: Problems = []
        commits = self._nbs_prepare_load(state_dict, strict, "", problems)
        raise_problems(problems)
        _apply(commits)

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: Problems
    ) -> list[Commit]:
        from pydantic import ValidationError

        model = self.model
        cls = type(model)
        if not isinstance(state, Mapping):
            problems.append((path, f"expected a dict (state of {cls.__name__}), got {_tname(state)}"))
            return []
        fields = cls.model_fields
        allows_extra = cls.model_config.get("extra") == "allow"
        data = dict(state)
        if strict and not allows_extra:
            for key in data:
                if key not in fields:
                    problems.append((_join(path, str(key)), f"unexpected: {cls.__name__} has no such field"))
        if not strict:
            current = model.model_dump(mode="json")
            data = {**current, **{k: v for k, v in data.items() if k in fields or allows_extra}}
        try:
            new = cls.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
                problems.append((_join(path, loc.lstrip(".")), err["msg"]))
            return []

        def commit() -> None:
            for name in fields:
                object.__setattr__(model, name, getattr(new, name))
            object.__setattr__(model, "__pydantic_fields_set__", set(new.model_fields_set))
            if allows_extra:
                object.__setattr__(model, "__pydantic_extra__", dict(new.__pydantic_extra__ or {}))

        return [commit]


def as_stateful(obj: Any, name: str = "", *, action: str = "save") -> Stateful:
    """Return ``obj`` if it is Stateful, an adapter for a 2.x Agent/AgentState or a pydantic model, else raise.

    ``action`` ("save" or "load") is what the error says could not be done.
    """
    if isinstance(obj, Stateful):
        return obj
    from .state_v2 import AgentV2State, is_v2

    if is_v2(obj):
        return AgentV2State(obj)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(obj, pydantic.BaseModel):
        return PydanticState(obj)
    raise NotSerializableError(
        name,
        type(obj).__name__,
        "It has no state_dict()/load_state_dict(). Pass a StateModule, an AgentScope object "
        "(a 1.x module or a 2.x Agent), "
        "a pydantic model, or any object with those two methods.",
        action=action,
    )


def load_modules(
    modules: Mapping[str, Any], states: Mapping[str, Any], strict: bool = True
) -> None:
    """Load ``states[name]`` into each ``modules[name]``: all of them, or none.

    Modules that support two-phase loading are validated first; other Stateful
    objects are snapshotted and restored if a later step fails. Problems are
    reported with the module name as the first part of each dotted path.
    With ``strict``, a module the states lack is an error; otherwise it is skipped.
    """
    from .codec import paused_gc

    problems: Problems = []
    commits: list[Commit] = []
    with paused_gc():  # building many message objects: no cycles to find meanwhile
        for name, obj in modules.items():
            target = as_stateful(obj, name, action="load")
            if name not in states:
                if strict:
                    problems.append((name, "missing: the checkpoint holds no state for this module"))
                continue
            _refuse_v2_into_v1(obj, states[name], name)
            commits += prepare_load(target, states[name], strict, name, problems)
        raise_problems(problems)
        _apply(commits)


def _refuse_v2_into_v1(obj: Any, state: Any, name: str) -> None:
    """Refuse an AgentScope 2.x ``AgentState`` dump loaded into an object that is not a 2.x agent."""
    from .generations import v2
    from .state_v2 import is_v2

    if not is_v2(obj) and v2.is_agent_state(state):
        raise StateMismatchError(
            [(name, "AgentScope generation mismatch: the checkpoint holds a 2.x AgentState, "
              f"{type(obj).__name__} is not a 2.x agent. Load it into an agentscope.agent.Agent "
              "(AgentScope 2.x); 1.x objects cannot hold it (nbs.migrate converts 1.x to 2.x, not back).")],
            module=name,
        )


class _ForeignLoad:
    """A commit that calls an object's own ``load_state_dict``: it can fail, so it runs first."""

    def __init__(self, target: Stateful, state: Mapping[str, Any], strict: bool, path: str) -> None:
        self.target, self.state, self.strict, self.path = target, state, strict, path
        self.snapshot: dict[str, Any] | None = None

    def __call__(self) -> None:
        self.snapshot = copy.deepcopy(self.target.state_dict())
        self.target.load_state_dict(self.state, strict=self.strict)

    def undo(self) -> None:
        if self.snapshot is not None:
            self.target.load_state_dict(self.snapshot, strict=False)


def prepare_load(
    target: Any, state: Any, strict: bool, path: str, problems: Problems
) -> list[Commit]:
    """Validate ``state`` for ``target`` and return its commits (see :class:`StateModule`).

    An object whose class overrides ``load_state_dict`` without also providing
    ``_nbs_prepare_load`` loads through its own method, snapshotted first.
    """
    if _two_phase(target):
        result: list[Commit] = target._nbs_prepare_load(state, strict, path, problems)
        return result
    if not isinstance(state, Mapping):
        problems.append((path, f"expected a dict (state of {type(target).__name__}), got {_tname(state)}"))
        return []
    return [_ForeignLoad(target, state, strict, path)]


def snapshot(obj: Any) -> dict[str, Any]:
    """The state a store should save: ``_nbs_snapshot()`` where the class keeps it in step, else ``state_dict()``."""
    if _overrides_in_step(obj, "_nbs_snapshot", "state_dict"):
        result: dict[str, Any] = obj._nbs_snapshot()
        return result
    plain: dict[str, Any] = obj.state_dict()
    return plain


def _two_phase(target: Any) -> bool:
    return _overrides_in_step(target, "_nbs_prepare_load", "load_state_dict")


def _overrides_in_step(target: Any, fast: str, public: str) -> bool:
    """True when ``fast`` is defined by the same class as ``public``, or a subclass of it.

    A subclass that overrides the public method alone must be obeyed: its
    override may change what the fast path would have produced.
    """
    mro = type(target).__mro__
    fast_owner = next((c for c in mro if fast in c.__dict__), None)
    public_owner = next((c for c in mro if public in c.__dict__), None)
    if fast_owner is None or public_owner is None:
        return False
    return mro.index(fast_owner) <= mro.index(public_owner)


def _apply(commits: list[Commit]) -> None:
    """Run the fallible foreign loads first (undoing them all on failure), then the assignments."""
    foreign = [c for c in commits if isinstance(c, _ForeignLoad)]
    done: list[_ForeignLoad] = []
    for load in foreign:
        try:
            done.append(load)
            load()
        except Exception as exc:
            undo_problems = []
            for previous in reversed(done):
                try:
                    previous.undo()
                except Exception as undo_exc:  # keep reporting the load's own failure
                    undo_problems.append((
                        previous.path,
                        f"could not be put back as it was: {type(undo_exc).__name__}: {undo_exc}",
                    ))
            if isinstance(exc, StateError) and not undo_problems:
                raise exc.with_prefix(load.path) from exc
            raise StateError(
                [(load.path, f"{type(load.target).__name__}.load_state_dict failed: {type(exc).__name__}: {exc}"),
                 *undo_problems],
                module=load.path.split(".", 1)[0],
            ) from exc
    for commit in commits:
        if not isinstance(commit, _ForeignLoad):
            commit()


def iter_stateful(namespace: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """Yield ``(name, obj)`` for every public Stateful object, AgentScope 2.x agent or pydantic model in ``namespace``."""
    import types

    from .state_v2 import is_v2

    pydantic = sys.modules.get("pydantic")
    for name, obj in namespace.items():
        if name.startswith("_") or isinstance(obj, (type, types.ModuleType)):
            continue
        if isinstance(obj, Stateful) or is_v2(obj) or (
            pydantic is not None and isinstance(obj, pydantic.BaseModel)
        ):
            yield name, obj


def _setter(obj: object, key: str, value: Any) -> Commit:
    return lambda: setattr(obj, key, value)


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _expected(expect: type | tuple[type, ...]) -> str:
    if isinstance(expect, tuple):
        return " or ".join(_tname_of(t) for t in expect)
    return _tname_of(expect)


def _tname_of(t: type) -> str:
    return "null" if t is type(None) else t.__name__
