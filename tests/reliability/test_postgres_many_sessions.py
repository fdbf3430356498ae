"""Hundreds of sessions saved at once by real processes into one PostgreSQL store.

Each writer process saves its own sessions concurrently (one task per session,
on one event loop, sharing the store's pool), round after round, and prints
every checkpoint the store acknowledged. Two more processes write the same
sessions. Afterwards every session's seqs must run 1..n without a gap, every
acknowledged checkpoint must read back exactly as it was saved, and every state
must name its own session (no save landed in another session's rows).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nb_sessions as nbs
from tests.reliability.conftest import LONG, Figures

ROOT = Path(__file__).resolve().parents[2]

#: Writer processes with their own sessions, sessions each, saves per session.
PROCESSES, SESSIONS, ROUNDS = (16, 100, 5) if LONG else (8, 40, 3)
#: Sessions written by both of the two extra processes.
SHARED = 50 if LONG else 20

WRITER = """
import asyncio, json, sys
import nb_sessions as nbs
from tests.conftest import Box
from tests.reliability.test_postgres_many_sessions import state_for

url, writer, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
sessions = sys.argv[4].split(",")

async def main():
    store = nbs.PostgresStore(url)
    for r in range(rounds):
        async def save(session):
            cp = await store.asave(session, metadata={"writer": writer, "round": r}, agent=Box(state_for(session, writer, r)))
            print(json.dumps([session, cp.seq, writer, r]), flush=True)
        await asyncio.gather(*(save(s) for s in sessions))
    await store.aclose()

asyncio.run(main())
"""


def state_for(session: str, writer: str, rnd: int) -> dict[str, Any]:
    """What ``writer`` saves into ``session`` in round ``rnd``: it names its session in several places."""
    chat = [
        {"role": "system", "content": "You are a helpful assistant."}
    ]  # one entry shared by all
    chat += [{"role": "user", "content": f"{session} turn {t} by {writer}"} for t in range(rnd + 2)]
    return {"session": session, "writer": writer, "round": rnd, "chat": chat}


def _start(url: str, writer: str, sessions: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, writer, str(ROUNDS), ",".join(sessions)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def test_hundreds_of_sessions_from_many_processes_stay_whole_and_apart(
    pg_url: str, figures: Figures
) -> None:
    nbs.PostgresStore(pg_url).sessions()  # the tables, made once before the writers start
    own = {f"w{p}": [f"p{p:02d}-s{i:03d}" for i in range(SESSIONS)] for p in range(PROCESSES)}
    shared = [f"shared-{i:03d}" for i in range(SHARED)]
    procs = {w: _start(pg_url, w, names) for w, names in own.items()}
    procs |= {w: _start(pg_url, w, shared) for w in ("x0", "x1")}
    acked: dict[str, dict[int, tuple[str, int]]] = {}
    for writer, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"writer {writer} failed:\n{err[-3000:]}"
        for line in out.splitlines():
            session, seq, who, rnd = json.loads(line)
            assert who == writer
            assert seq not in acked.setdefault(session, {}), f"{session}@{seq} acknowledged twice"
            acked[session][seq] = (who, rnd)

    store = nbs.PostgresStore(pg_url)
    listed = {info.session_id: info for info in store.sessions()}
    assert set(listed) == {s for names in own.values() for s in names} | set(shared)
    for session, saves in acked.items():
        expected = ROUNDS * (2 if session in shared else 1)
        assert len(saves) == expected, f"{session}: {len(saves)} acknowledged saves"
        history = store.history(session)
        assert [cp.seq for cp in history] == list(range(1, expected + 1)), f"{session}: gaps"
        assert sorted(saves) == [cp.seq for cp in history]
        for cp in history:
            writer, rnd = saves[cp.seq]
            assert (cp.metadata["writer"], cp.metadata["round"]) == (writer, rnd)
            state = store.get_state(cp)["agent"]["value"]
            assert state["session"] == session, (
                f"{session}@{cp.seq} holds {state['session']}'s state"
            )
            assert state == state_for(session, writer, rnd)
        if session not in shared:  # one writer: its rounds in order
            assert [saves[s][1] for s in sorted(saves)] == list(range(ROUNDS))
    figures.record(
        sessions=len(acked), processes=len(procs), checkpoints=sum(map(len, acked.values()))
    )
