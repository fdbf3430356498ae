"""Drop-ins for AgentScope 1.x's ``SessionBase``: the same signatures, with history behind them.

An AgentScope app can swap ``agentscope.session.JSONSession`` for
:class:`JSONSession` unchanged: the same ``{session_id}.json`` /
``{user_id}_{session_id}.json`` files come out (AgentScope reads them), and
every save is also a checkpoint you can list, diff and go back to.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .crypto import KeySource
from .errors import SessionNotFoundError, SessionNotFoundValueError
from .state import load_modules
from .stores.base import BaseStore, SessionKey, _options, validate_id
from .stores.json_store import JSONStore
from .stores.pg_store import PostgresStore
from .stores.sqlite_store import SQLiteStore

__all__ = ["JSONSession", "PostgresSession", "SQLiteSession", "StoreSession"]

log = logging.getLogger("nb_sessions")


class StoreSession:
    """``SessionBase``'s API over any nb_sessions store (``self.store``)."""

    store: BaseStore

    def _was_reset(self, key: SessionKey) -> bool:
        return False

    async def save_session_state(
        self, /, session_id: str, user_id: Any = "", **state_modules_mapping: Any
    ) -> None:
        """Save the modules' states as a new checkpoint of the session.

        A module may be called ``self``; a ``user_id=`` given a stateful object
        is a module of that name (the user id stays ``""``).
        """
        (user_id,) = _options(state_modules_mapping, _DEFAULTS, user_id=user_id)
        await self.store.asave(_key(session_id, user_id), **state_modules_mapping)

    async def load_session_state(
        self,
        /,
        session_id: str,
        user_id: Any = "",
        allow_not_exist: Any = True,
        *,
        strict: Any = True,
        **state_modules_mapping: Any,
    ) -> None:
        """Load the latest checkpoint into the modules it holds a state for (AgentScope's rule).

        Ids are taken literally, as AgentScope does (``team@example.com`` is a
        session id, not a reference). Unlike AgentScope, a failure leaves every
        module as it was, and ``strict`` (an nb_sessions keyword) also refuses
        keys the objects do not know; pass ``strict=False`` to ignore them.
        A ``strict=`` (or ``user_id=``, ``allow_not_exist=``) given a stateful
        object is a module of that name, as AgentScope (which has no ``strict``)
        takes it; ``self`` is a module name like any other. With
        ``allow_not_exist=False`` a missing session raises
        :class:`~nb_sessions.errors.SessionNotFoundValueError`, a ``ValueError``
        as in AgentScope.
        """
        user_id, allow_not_exist, strict = _options(
            state_modules_mapping, _DEFAULTS, user_id=user_id, allow_not_exist=allow_not_exist, strict=strict
        )
        key = _key(session_id, user_id)  # an invalid id raises, whatever allow_not_exist says
        try:
            if self._was_reset(key):
                raise self.store._not_found(key)
            states = await self.store.aget_state(key)
        except SessionNotFoundError as exc:
            if allow_not_exist:
                # AgentScope's sessions say so at INFO too (on its own "as" logger).
                log.info("Session %s does not exist. Skip loading session state.", key)
                return
            raise SessionNotFoundValueError(
                f"{exc} (allow_not_exist=False; pass allow_not_exist=True to skip a missing session)",
                session=exc.session,
                user_id=exc.user_id,
            ) from exc
        present = {n: m for n, m in state_modules_mapping.items() if n in states}
        load_modules(present, states, strict=strict)


class JSONSession(StoreSession):
    """Drop-in for ``agentscope.session.JSONSession``: files in ``save_dir``, history beside them.

    As in AgentScope, deleting ``<session>.json`` resets the session: the next
    load finds nothing there (the history stays, for ``store.history``).
    """

    store: JSONStore

    def __init__(self, save_dir: str | os.PathLike[str] = "./") -> None:
        self.save_dir = str(save_dir)
        self.store = JSONStore(save_dir)

    def _was_reset(self, key: SessionKey) -> bool:
        # Deleting <session>.json resets the session in AgentScope; its history stays in the store.
        return self.store.was_reset(key)


class SQLiteSession(StoreSession):
    """The same API over an SQLite file (AgentScope's ``as_session`` rows load too).

    ``key`` opens (or creates) the file encrypted at rest; an encrypted file opened
    without one takes ``NB_SESSIONS_KEY``. :class:`JSONSession` keeps AgentScope's
    plaintext latest file, which an encrypted JSON folder does not write, so it has
    no encrypted form (``open_store(folder, key=...)`` gives an encrypted JSONStore).
    """

    def __init__(self, sqlite_path: str | os.PathLike[str] = "nb_sessions.db", *, key: KeySource | None = None) -> None:
        self.sqlite_path = str(sqlite_path)
        self.store = SQLiteStore(sqlite_path, key=key)


class PostgresSession(StoreSession):
    """The same API over a PostgreSQL database shared by a team (``postgresql://...``).

    Every process and machine that opens the same URL sees the same sessions;
    saves from several writers get gap-free checkpoint numbers. See
    docs/postgres.md for roles, backups and what happens when the server is
    unreachable.
    """

    store: PostgresStore

    def __init__(self, url: str, *, key: KeySource | None = None) -> None:
        self.url = url
        self.store = PostgresStore(url, key=key)


#: AgentScope's defaults, taken by an option whose keyword carried a module.
_DEFAULTS = {"user_id": "", "allow_not_exist": True, "strict": True}


def _key(session_id: str, user_id: str) -> SessionKey:
    return SessionKey(
        validate_id(user_id, "user id", literal=True), validate_id(session_id, literal=True)
    )
