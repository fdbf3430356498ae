"""Migrate an AgentScope 1.x session to 2.x: a new checkpoint holding 2.x ``AgentState`` dumps.

``nbs.migrate(store, "alice")`` reads the latest checkpoint of ``alice`` (or
the one named, ``"alice@3"``), turns each module holding a 1.x agent (or a
bare 1.x memory) into an ``AgentState`` dump as ``agent.state.model_dump()``
writes it, and saves the result as a new checkpoint of the same session
(``to="bob"`` saves it as a new session instead). The 1.x checkpoints stay
as they were. Modules holding no 1.x agent are copied unchanged. The
returned :class:`MigrationReport` lists whatever had no 2.x place.

:func:`migrate_states` does the same on ``{module: state}`` dicts, with no
store. The shapes on both sides are :mod:`nb_sessions.generations`'.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import MigrationError
from .generations import v1, v2
from .generations.upgrade import Leftover, upgrade_agent_state

if TYPE_CHECKING:
    from .stores.base import BaseStore, Checkpoint

__all__ = ["Leftover", "MigrationError", "MigrationReport", "migrate", "migrate_states"]


@dataclass(frozen=True)
class MigrationReport:
    """What a 1.x -> 2.x migration did: the modules migrated and kept, and what had no 2.x place."""

    migrated: tuple[str, ...]  #: modules turned into 2.x ``AgentState`` dumps
    kept: tuple[str, ...]  #: modules copied unchanged (no 1.x agent in them)
    leftovers: tuple[Leftover, ...] = ()  #: what is not in the 2.x state
    source: str = ""  #: the 1.x checkpoint read, e.g. ``alice@3``
    checkpoint: Checkpoint | None = field(default=None, compare=False)  #: the 2.x checkpoint saved

    def __str__(self) -> str:
        target = f" -> {self.checkpoint.ref}" if self.checkpoint is not None else ""
        head = f"migrated {self.source or 'states'}{target} from AgentScope 1.x to 2.x"
        lines = [f"{head}: {', '.join(self.migrated)} now AgentState"]
        if self.kept:
            lines.append(f"kept unchanged: {', '.join(self.kept)}")
        if self.leftovers:
            lines.append(f"{len(self.leftovers)} thing(s) had no 2.x place:")
            lines += [f"  {item}" for item in self.leftovers]
        else:
            lines.append("everything had a 2.x place")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        esc = html.escape
        first = str(self).split("\n", 1)[0]
        head = f"<p>{esc(first)}</p>"
        if self.kept:
            head += f"<p>kept unchanged: {esc(', '.join(self.kept))}</p>"
        if not self.leftovers:
            return f"<div class='nb-sessions-migrate'>{head}<p>everything had a 2.x place</p></div>"
        rows = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{esc(v)}</td>" for v in (i.path, i.what, i.why)) + "</tr>"
            for i in self.leftovers
        )
        table = (
            "<table><tr><th style='text-align:left'>where (1.x)</th><th style='text-align:left'>what</th>"
            f"<th style='text-align:left'>why</th></tr>{rows}</table>"
        )
        return (
            f"<div class='nb-sessions-migrate'>{head}<p>{len(self.leftovers)} thing(s) had no 2.x place:</p>"
            f"{table}</div>"
        )


def _is_agent(state: Any) -> bool:
    return isinstance(state, Mapping) and (v1.is_memory(state) or v1.is_memory(state.get("memory")))


def migrate_states(
    states: Mapping[str, Any], *, modules: list[str] | None = None
) -> tuple[dict[str, Any], MigrationReport]:
    """``(new_states, report)``: ``states`` with each 1.x agent module (or those named) as a 2.x ``AgentState`` dump.

    ``states`` is never changed (the new states share its unmigrated modules).
    Raises :class:`~nb_sessions.errors.MigrationError` when no module (or a
    named one) holds a 1.x agent or memory.
    """
    names = list(modules) if modules is not None else [m for m, s in states.items() if _is_agent(s)]
    wrong = [m for m in names if not _is_agent(states.get(m))]
    if not names or wrong:
        raise _nothing_to_migrate(states, wrong)
    out: dict[str, Any] = {}
    leftovers: list[Leftover] = []
    kept: list[str] = []
    for module, state in states.items():
        if module in names:
            out[module], lost = upgrade_agent_state(state, module)
            leftovers += lost
        else:
            out[module] = state
            kept.append(module)
            if any(kind == "notebook" for kind, _, _ in _parts(state, module)):
                leftovers.append(Leftover(module, "a 1.x plan notebook outside an agent",
                                          "kept unchanged in its 1.x shape; 2.x tasks live in an AgentState"))
    return out, MigrationReport(tuple(names), tuple(kept), tuple(leftovers))


def _parts(state: Any, module: str) -> Any:
    from .generations import find_parts

    return find_parts(state, module)


def _nothing_to_migrate(states: Mapping[str, Any], wrong: list[str] | None, where: str = "") -> MigrationError:
    from .generations import detect

    if wrong:
        return MigrationError([
            (m, "holds no AgentScope 1.x agent or memory"
                + (" (it is already an AgentScope 2.x state)" if v2.is_agent_state(states.get(m)) else ""))
            for m in wrong
        ])
    found = detect(states)
    gen = f" (it holds AgentScope {', '.join(sorted(found))} state)" if found else ""
    return MigrationError([("", f"no module of {where or 'the state'} holds an AgentScope 1.x agent or memory{gen}")])


class _Frozen:
    """A state dict saved as is (the store saves objects with a ``state_dict()``)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def state_dict(self) -> Any:
        return self._state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        raise TypeError("a migrated state is saved, never loaded into")


def migrate(
    store: BaseStore,
    ref: Any,
    *,
    to: str | None = None,
    modules: list[str] | None = None,
    label: str | None = None,
    user_id: str | None = None,
) -> MigrationReport:
    """Save a 2.x copy of the 1.x checkpoint ``ref`` as a new checkpoint; the 1.x ones stay.

    The new checkpoint goes to the same session, or to the new session ``to``
    (refused if it exists). Its metadata records ``migrated_from`` (the 1.x
    checkpoint's reference) and ``agentscope_generation: "2.x"``. Returns the
    report; ``report.checkpoint`` is the new checkpoint.
    """
    from .errors import ConflictError, SessionNotFoundError

    cp = store.checkpoint(ref, user_id=user_id)
    states = store.get_state(cp)
    try:
        new_states, report = migrate_states(states, modules=modules)
    except MigrationError as err:
        raise _nothing_to_migrate(states, [p for p, _ in err.problems if p], cp.ref) from None
    target = cp.session if to is None else to
    if to is not None:
        try:
            store.history(to, user_id=cp.user_id)
        except SessionNotFoundError:
            pass
        else:
            raise ConflictError(f"cannot migrate into {to!r}: that session exists. Choose a new name.")
    meta = {"migrated_from": cp.ref, "agentscope_generation": v2.GENERATION}
    saved = store.save(target, label, meta, user_id=cp.user_id,
                       **{name: _Frozen(state) for name, state in new_states.items()})
    return MigrationReport(report.migrated, report.kept, report.leftovers, cp.ref, saved)
