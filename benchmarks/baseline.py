"""The baseline: AgentScope 1.x's whole-file session method.

One file per session holds ``{module: state_dict()}`` written with
``json.dumps(state, ensure_ascii=False)``; restoring reads it with
``json.loads`` and calls each module's ``load_state_dict``. Every save
rewrites the whole history; there is no checkpoint history at all.

This is what AgentScope 1.0.21's JSONSession does (``json.dumps`` written
through aiofiles); like it, the baseline neither writes atomically nor
fsyncs (nb_sessions' stores do both, and pay for it in these figures).
Earlier AgentScope releases streamed with ``json.dump(state, file)``, which runs
the pure-Python encoder and is slower still; :meth:`save_stream` does that,
for reference only.
Each call returns the time of each step, so a report can say where the
whole-file method spends its time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Steps", "WholeFileSessions"]


@dataclass
class Steps:
    """Seconds per step of one save or load, and bytes written or read."""

    steps: dict[str, float] = field(default_factory=dict)
    size: int = 0

    @property
    def total(self) -> float:
        """All steps together."""
        return sum(self.steps.values())


class WholeFileSessions:
    """AgentScope's JSONSession, synchronous: ``<folder>/<session_id>.json``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, session_id: str) -> Path:
        """The session's file."""
        return self.folder / f"{session_id}.json"

    def save(self, session_id: str, **modules: Any) -> Steps:
        """``json.dumps`` every module's ``state_dict()`` into the session's one file."""
        out = Steps()
        t0 = time.perf_counter()
        states = {name: module.state_dict() for name, module in modules.items()}
        t1 = time.perf_counter()
        text = json.dumps(states, ensure_ascii=False)
        t2 = time.perf_counter()
        with open(self.path(session_id), "w", encoding="utf-8", errors="surrogatepass") as file:
            file.write(text)
        t3 = time.perf_counter()
        out.steps = {"state_dict": t1 - t0, "json.dumps": t2 - t1, "write": t3 - t2}
        out.size = self.path(session_id).stat().st_size
        return out

    def save_stream(self, session_id: str, **modules: Any) -> Steps:
        """What earlier AgentScope releases ran: ``json.dump(states, file, ensure_ascii=False)``."""
        out = Steps()
        t0 = time.perf_counter()
        states = {name: module.state_dict() for name, module in modules.items()}
        t1 = time.perf_counter()
        with open(self.path(session_id), "w", encoding="utf-8", errors="surrogatepass") as file:
            json.dump(states, file, ensure_ascii=False)
        t2 = time.perf_counter()
        out.steps = {"state_dict": t1 - t0, "json.dump+write": t2 - t1}
        out.size = self.path(session_id).stat().st_size
        return out

    def read(self, session_id: str) -> tuple[dict[str, Any], Steps]:
        """Read and decode the session's file (no objects involved)."""
        out = Steps()
        t0 = time.perf_counter()
        with open(self.path(session_id), encoding="utf-8", errors="surrogatepass") as file:
            text = file.read()
        t1 = time.perf_counter()
        states = json.loads(text)
        t2 = time.perf_counter()
        out.steps = {"read": t1 - t0, "json.loads": t2 - t1}
        out.size = len(text)
        return states, out

    def load(self, session_id: str, **modules: Any) -> Steps:
        """Restore each module from the session's file with its own ``load_state_dict``."""
        states, out = self.read(session_id)
        t0 = time.perf_counter()
        for name, module in modules.items():
            if name in states:
                module.load_state_dict(states[name])
        out.steps["load_state_dict"] = time.perf_counter() - t0
        return out
