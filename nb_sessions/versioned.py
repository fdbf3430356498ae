"""History and rollback for an AgentScope 2.x app, by wrapping its storage in one line.

::

    storage = nbs.VersionedStorage(AsyncSQLAlchemyStorage(url), "history.db")

:class:`VersionedStorage` is an AgentScope 2.x ``StorageBase``: every method
is forwarded to the app's own storage, and every session-state write
(``upsert_session`` with a state or creating a session, and
``update_session_state``) is also saved as a checkpoint of the session
``(user_id, session_id)`` in an nb_sessions store, with the agent id (and,
from ``upsert_session``, the session's config and origin) in its metadata.
:meth:`VersionedStorage.rollback` writes a checkpoint's state back through
the app's storage, recreating the session if it was deleted.

The app's own write always happens first and is the record: a checkpoint
that fails afterwards (history disk full, store unreachable) is logged and
counted, not raised, unless ``on_checkpoint_error="raise"``. A chat turn the
app has already persisted must not fail because its history could not be
kept; ``failures`` and the ``nb_sessions`` logger say that it could not.

Deleting a session (directly, or through the delete-agent/team/schedule/SOP
cascades of the app's storage) leaves its history in the store: that is
what lets :meth:`rollback` bring a deleted session back.

This module imports AgentScope 2.x (``agentscope[service,storage-sql]`` or
``storage-redis``); nothing else in nb_sessions does.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
import os
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from .errors import MissingDependencyError, NbSessionsError, StateError

try:
    from agentscope.app.storage import SessionConfig, SessionRecord, StorageBase
    from agentscope.state import AgentState
except ImportError as exc:
    raise MissingDependencyError(
        f"nbs.VersionedStorage wraps an AgentScope 2.x app's storage, and AgentScope 2.x cannot be "
        f"imported here ({exc}): pip install 'agentscope[service,storage-sql]' (or storage-redis), "
        "Python >= 3.11"
    ) from exc

from .generations import v2
from .stores import DEFAULT_STORE, BaseStore, Checkpoint, open_store
from .stores.base import Ref, SessionKey, validate_label

__all__ = ["FORWARDED", "VersionedStorage"]

log = logging.getLogger("nb_sessions")

#: The module name an agent's ``AgentState`` gets in the checkpoints (as in the read-only sources).
MODULE = "agent"

# The forwarding methods are generated below, which a type checker cannot see: to it the
# base is opaque, so ``VersionedStorage(...)`` is not reported as an abstract class.
_StorageBase: Any = StorageBase


def _public_methods() -> tuple[str, ...]:
    """Every coroutine method ``StorageBase`` declares: its 53 abstract ones and the rest."""
    return tuple(
        sorted(
            name
            for name, value in vars(StorageBase).items()
            if inspect.iscoroutinefunction(value) and not name.startswith("__")
        )
    )


#: The ``StorageBase`` methods a :class:`VersionedStorage` forwards to the app's storage.
FORWARDED = _public_methods()


class VersionedStorage(_StorageBase):  # type: ignore[misc]
    """An AgentScope 2.x storage that also keeps every session state as a checkpoint.

    ``storage`` is the app's own storage (``AsyncSQLAlchemyStorage``,
    ``RedisStorage``, ...); ``store`` an nb_sessions store or its path
    (default ``nb_sessions.db``). ``async with`` enters and leaves the app's
    storage as it would have been.
    """

    def __init__(
        self,
        storage: StorageBase,
        store: BaseStore | str | os.PathLike[str] = DEFAULT_STORE,
        *,
        on_checkpoint_error: Literal["log", "raise"] = "log",
    ) -> None:
        if not isinstance(storage, StorageBase):
            raise TypeError(
                f"VersionedStorage wraps an AgentScope StorageBase, not {type(storage).__name__}"
            )
        if on_checkpoint_error not in ("log", "raise"):
            raise ValueError("on_checkpoint_error is 'log' or 'raise'")
        self.storage = storage
        self.store = open_store(store)
        self.on_checkpoint_error = on_checkpoint_error
        #: Checkpoints that could not be saved since this wrapper was made (the app's writes stood).
        self.failures = 0
        # One state write at a time per session, app write and checkpoint together: two
        # concurrent turns must reach the history in the order they reached the app.
        # Weak: a lock lives while a write holds it, so a long-running app does not collect them.
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def _lock(self, user_id: str, session_id: str) -> asyncio.Lock:
        lock = self._locks.get((user_id, session_id))
        if lock is None:
            lock = self._locks[(user_id, session_id)] = asyncio.Lock()
        return lock

    def __getattr__(self, name: str) -> Any:
        # Backend-specific attributes the app may read (``key_config``, ``key_ttl``, ...).
        if name == "storage":  # not set yet (during __init__ or unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.storage, name)

    async def __aenter__(self) -> VersionedStorage:
        await self.storage.__aenter__()
        return self

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        await self.storage.__aexit__(exc_type, exc_value, traceback)

    # -- the writes that carry state ------------------------------------------------

    async def upsert_session(self, *args: Any, **kwargs: Any) -> SessionRecord:
        """The app's ``upsert_session``, then a checkpoint when it created a session or set a state."""
        bound = _bind("upsert_session", self, args, kwargs)
        if not bound.get("session_id"):  # a new session: nobody else writes it yet
            record = await self.storage.upsert_session(*args, **kwargs)
            await self._checkpoint_record(record, "upsert_session")
            return record
        async with self._lock(bound["user_id"], bound["session_id"]):
            record = await self.storage.upsert_session(*args, **kwargs)
            if bound.get("state") is not None:
                await self._checkpoint_record(record, "upsert_session")
        return record

    async def _checkpoint_record(self, record: SessionRecord, via: str, **meta: Any) -> None:
        meta.update(
            config=record.config.model_dump(mode="json"),
            origin=record.origin.model_dump(mode="json"),
            via=via,
        )
        await self._checkpoint(record.user_id, record.id, record.agent_id, record.state, meta)

    async def update_session_state(self, *args: Any, **kwargs: Any) -> None:
        """The app's ``update_session_state``, then a checkpoint of that state."""
        bound = _bind("update_session_state", self, args, kwargs)
        async with self._lock(bound["user_id"], bound["session_id"]):
            await self.storage.update_session_state(*args, **kwargs)  # KeyError: no checkpoint
            await self._checkpoint(
                bound["user_id"],
                bound["session_id"],
                bound["agent_id"],
                bound["state"],
                {"via": "update_session_state"},
            )

    async def _checkpoint(
        self, user_id: str, session_id: str, agent_id: str, state: AgentState, meta: dict[str, Any]
    ) -> Checkpoint | None:
        try:
            return await self.store.asave(
                SessionKey(user_id, session_id),
                metadata={"agent_id": agent_id, **meta},
                agent=state,
            )
        except Exception as exc:
            self.failures += 1
            if self.on_checkpoint_error == "raise":
                raise
            log.error(
                "nb_sessions: the app saved session %s/%s, but its checkpoint in %s failed (%s: %s); "
                "its history misses this state",
                user_id,
                session_id,
                self.store.location,
                type(exc).__name__,
                exc,
            )
            return None

    # -- history and rollback ----------------------------------------------------------

    async def history(self, user_id: str, session_id: str) -> list[Checkpoint]:
        """The checkpoints of a session, oldest first."""
        return await self.store.ahistory(SessionKey(user_id, session_id))

    async def rollback(self, user_id: str, session_id: str, to: int | str) -> SessionRecord:
        """Write checkpoint ``to`` (a number, a label, or ``"~N"``: N before the latest) back to the app.

        The state goes through the app's own storage (``update_session_state``,
        or ``upsert_session`` with the session's last known config when the
        session was deleted) and is recorded as a new checkpoint whose metadata
        says ``rolled_back_to``. An agent already running keeps its state in
        memory: rebuild it from the storage, as the app does per request.
        """
        key = SessionKey(user_id, session_id)
        cp = await self.store.acheckpoint(_ref(key, to))
        states = await self.store.aget_state(cp)
        state = _agent_state(cp, states)
        agent_id = cp.metadata.get("agent_id")
        if not isinstance(agent_id, str):
            raise StateError(
                [("metadata.agent_id", "missing: not a checkpoint VersionedStorage wrote")],
                module=cp.ref,
            )
        async with self._lock(user_id, session_id):
            existing = await self.storage.get_session(user_id, agent_id, session_id)
            if existing is not None:
                await self.storage.update_session_state(user_id, agent_id, session_id, state)
                await self._checkpoint(
                    user_id,
                    session_id,
                    agent_id,
                    state,
                    {"rolled_back_to": cp.ref, "via": "rollback"},
                )
                record = await self.storage.get_session(user_id, agent_id, session_id)
                assert record is not None  # it existed a moment ago, and nothing here deletes
                return record
            config, origin = await self._last_config(key)
            record = await self.storage.upsert_session(
                user_id, agent_id, config, state=state, session_id=session_id, origin=origin
            )
            await self._checkpoint_record(record, "rollback", rolled_back_to=cp.ref)
            return record

    async def _last_config(self, key: SessionKey) -> tuple[SessionConfig, Any]:
        """The newest config (and origin) a checkpoint of ``key`` recorded: to recreate a deleted session."""
        for cp in reversed(await self.store.ahistory(key)):
            config = cp.metadata.get("config")
            if isinstance(config, dict):
                origin = cp.metadata.get("origin")
                record = SessionRecord.model_validate(
                    {
                        "user_id": key.user_id,
                        "agent_id": "",
                        "config": config,
                        **({"origin": origin} if origin else {}),
                    }
                )
                return record.config, record.origin
        raise NbSessionsError(
            f"session {key} was deleted from the app's storage and none of its checkpoints in "
            f"{self.store.location} recorded its config (only upsert_session records one); "
            "recreate the session in the app, then roll back"
        )


def _bind(
    name: str, self: VersionedStorage, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The arguments of a ``StorageBase.<name>`` call by parameter name, defaults filled in."""
    bound = inspect.signature(getattr(StorageBase, name)).bind(self, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _ref(key: SessionKey, to: int | str) -> Ref:
    if isinstance(to, bool) or not isinstance(to, (int, str)):
        raise TypeError(
            f"rollback(to=...) takes a checkpoint number or label, got {type(to).__name__}"
        )
    if isinstance(to, int):
        return Ref(key, seq=to)
    if to.startswith("~") and to[1:].isdigit():
        return Ref(key, back=int(to[1:]))
    if to.isdigit():
        return Ref(key, seq=int(to))
    return Ref(key, label=validate_label(to))


def _agent_state(cp: Checkpoint, states: dict[str, Any]) -> AgentState:
    """The ``AgentState`` a checkpoint holds; a 1.x or foreign state is refused, not emptied."""
    node = states.get(MODULE)
    if not v2.is_agent_state(node):
        found = "no such module" if node is None else "not an AgentScope 2.x AgentState dump"
        raise StateError([(MODULE, f"{found} in checkpoint {cp.ref}")], module=MODULE)
    return AgentState.model_validate(node)


def _forwarder(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def forward(self: VersionedStorage, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.storage, name)(*args, **kwargs)

    base = getattr(StorageBase, name)
    forward.__name__ = name
    forward.__qualname__ = f"VersionedStorage.{name}"
    forward.__doc__ = f"Forwarded to the app's storage. {inspect.getdoc(base) or ''}".strip()
    forward.__signature__ = inspect.signature(base)  # type: ignore[attr-defined]
    return forward


# Every other StorageBase method, generated from the ABC itself: a method AgentScope adds
# later is forwarded too (``__getattr__`` alone would not satisfy the ABC).
for _name in FORWARDED:
    if _name not in VersionedStorage.__dict__:
        setattr(VersionedStorage, _name, _forwarder(_name))
abc.update_abstractmethods(VersionedStorage)
