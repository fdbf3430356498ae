"""Adapter for AgentScope 2.x: an ``Agent`` (or a bare ``AgentState``) saved and restored in place.

A 2.x agent keeps its whole state in ``agent.state``, a pydantic ``AgentState``;
its module state is AgentScope's own wire format, ``agent.state.model_dump(mode="json")``
(what ``model_dump_json`` writes). Restoring validates the whole state with
AgentScope's own model first, then assigns the fields of the *same*
``AgentState`` object and re-points every object of the agent that held one of
the old nested models (the permission engine keeps ``state.permission_context``)
to the new one, so the agent acts as the restored state says. Nothing here
imports agentscope: objects are recognised by :mod:`.generations.v2`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from typing import Any

import orjson

from .chunks import Entries
from .errors import StateMismatchError, _join, raise_problems
from .generations import v2

__all__ = ["AgentV2State", "is_v2"]

_SCALARS = (str, int, float, bool, type(None))


def is_v2(obj: Any) -> bool:
    """True for a 2.x agent or a bare ``AgentState``."""
    return v2.is_agent(obj) or v2.is_agent_state_model(obj)


class AgentV2State:
    """Save and restore a 2.x ``Agent`` (or an ``AgentState``) in place, all or nothing."""

    def __init__(self, obj: Any) -> None:
        self.agent = obj if v2.is_agent(obj) else None
        self.target = obj

    @property
    def model(self) -> Any:
        """The live ``AgentState``."""
        return self.agent.state if self.agent is not None else self.target

    def state_dict(self) -> dict[str, Any]:
        """The ``AgentState`` as ``model_dump(mode="json")`` gives it (AgentScope's wire format)."""
        dumped: dict[str, Any] = self.model.model_dump(mode="json")
        return dumped

    def _nbs_snapshot(self) -> dict[str, Any]:
        """Like :meth:`state_dict`, with ``context`` as :class:`~nb_sessions.chunks.Entries` keyed cheaply."""
        model = self.model
        rest = model.model_dump(mode="json", exclude={"context"})
        context = list(model.context)
        state: dict[str, Any] = {}
        for name in type(model).model_fields:
            if name == "context":
                state[name] = Entries(
                    context,
                    _message_key,
                    _message_value,
                    keys=lambda: [_message_key(m) for m in context],
                )
            elif name in rest:
                state[name] = rest[name]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Validate ``state_dict`` with ``AgentState``, then restore in place; on any problem raise and change nothing."""
        problems: list[tuple[str, str]] = []
        commits = self._nbs_prepare_load(state_dict, strict, "", problems)
        raise_problems(problems)
        for commit in commits:  # plain assignments: nothing here can fail half way
            commit()

    def _nbs_prepare_load(
        self, state: Any, strict: bool, path: str, problems: list[tuple[str, str]]
    ) -> list[Any]:
        from pydantic import ValidationError

        model = self.model
        cls = type(model)
        if not isinstance(state, Mapping):
            problems.append(
                (
                    path,
                    f"expected a dict (an AgentScope 2.x AgentState), got {type(state).__name__}",
                )
            )
            return []
        foreign = v2.foreign_generation(state)
        if foreign is not None:
            raise StateMismatchError(
                [
                    (
                        path or "<state>",
                        f"AgentScope generation mismatch: the checkpoint holds {foreign}, "
                        "the object is an AgentScope 2.x agent (AgentState). Convert the 1.x session with "
                        "nbs.migrate(...) (or `nb-sessions migrate`) and load the migrated checkpoint.",
                    )
                ],
                module=path.split(".", 1)[0],
            )
        data = dict(state)
        if not strict:
            current = model.model_dump(mode="json")
            data = {**current, **data}
        try:
            new = cls.model_validate(data)
        except ValidationError as exc:  # AgentState's own verdict: the state does not fit, by path
            raise StateMismatchError(
                [
                    (
                        _join(
                            path,
                            "".join(
                                f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]
                            ).lstrip("."),
                        ),
                        f"invalid: {err['msg']}",
                    )
                    for err in exc.errors()
                ],
                module=path.split(".", 1)[0],
            ) from None
        if strict:
            _compare(_without_legacy(data), new.model_dump(mode="json"), path, problems)
            if problems:
                return []
        agent = self.agent

        def commit() -> None:
            old = {name: model.__dict__.get(name) for name in cls.model_fields}
            for name in cls.model_fields:
                object.__setattr__(model, name, getattr(new, name))
            object.__setattr__(model, "__pydantic_fields_set__", set(new.model_fields_set))
            if cls.model_config.get("extra") == "allow":
                object.__setattr__(model, "__pydantic_extra__", dict(new.__pydantic_extra__ or {}))
            if agent is not None:
                _repoint(
                    agent,
                    model,
                    {
                        id(v): model.__dict__[k]
                        for k, v in old.items()
                        if not isinstance(v, _SCALARS)
                    },
                )

        return [commit]


def _repoint(agent: Any, state: Any, replace: dict[int, Any]) -> None:
    """Point every attribute of the agent's own objects that held an old nested model at its replacement."""
    seen: set[int] = {id(state)}
    for holder in [agent, *vars(agent).values()]:
        if id(holder) in seen or isinstance(holder, _SCALARS) or not hasattr(holder, "__dict__"):
            continue
        seen.add(id(holder))
        for key, value in list(vars(holder).items()):
            new = replace.get(id(value))
            if new is not None:
                setattr(holder, key, new)


def _without_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with older 2.x top-level ``reply_id``/``cur_iter`` moved into ``reply_context`` (as AgentState does)."""
    if not data.keys() & v2.LEGACY_KEYS:
        return data
    data = dict(data)
    reply = dict(data.get("reply_context") or {})
    for key in v2.LEGACY_KEYS:
        if key in data:
            reply.setdefault(key, data.pop(key))
    data["reply_context"] = reply
    return data


def _compare(given: Any, kept: Any, path: str, problems: list[tuple[str, str]]) -> None:
    """Report keys ``given`` has that validation dropped (unexpected) and keys it lacks (missing), by dotted path."""
    stack = [(given, kept, path)]
    while stack:
        a, b, where = stack.pop()
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in a:
                if key not in b:
                    problems.append(
                        (_join(where, str(key)), "unexpected: AgentState has no such field here")
                    )
                elif isinstance(a[key], (Mapping, list)):
                    stack.append((a[key], b[key], _join(where, str(key))))
            for key in b:
                if key not in a:
                    problems.append((_join(where, str(key)), "missing: AgentState has this field"))
        elif isinstance(a, list) and isinstance(b, list):
            stack.extend(
                (x, y, f"{where}[{i}]")
                for i, (x, y) in enumerate(zip(a, b, strict=False))
                if isinstance(x, (Mapping, list))
            )


def _message_value(msg: Any) -> Any:
    return msg.model_dump(mode="json")


def _message_key(msg: Any) -> Hashable | None:
    """A key that changes whenever the message's JSON would: its identity and the hash of a raw encoding.

    orjson encodes the message's ``__dict__`` in one call, descending into
    blocks and usage (pydantic models, through :func:`_raw`), which costs a
    fraction of ``model_dump``; an edit anywhere in the message changes the
    bytes. As for plain lists (:func:`nb_sessions.chunks._fast_key`), orjson
    writes NaN as ``null``: a float changing between NaN and None is the one
    edit this key cannot see. A value orjson refuses gives None (encoded every save).
    """
    try:
        raw = orjson.dumps(msg.__dict__, default=_raw)
    except (orjson.JSONEncodeError, TypeError):
        return None
    return (id(msg), hash(raw), len(raw))


def _raw(value: Any) -> Any:
    """orjson's fallback: a pydantic model as its class name and fields, an enum as its value."""
    fields = getattr(value, "__dict__", None)
    if fields is not None and hasattr(type(value), "__pydantic_fields__"):
        extra = getattr(value, "__pydantic_extra__", None)
        return [type(value).__qualname__, fields, extra] if extra else [type(value).__qualname__, fields]
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(type(value).__name__)
