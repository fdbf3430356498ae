"""Class 4 of issue 12: a read returns exactly one checkpoint, whatever other processes do (both stores).

Reader processes load checkpoints while churn processes save, delete, prune and
vacuum the same session. Every saved state describes itself: its skeleton and
each of its messages carry the checkpoint's tag, so a read that combined two
checkpoints (the skeleton of one, the messages of another) is seen at once.
The only other allowed outcome is CheckpointNotFoundError ("deleted meanwhile"),
or SessionNotFoundError once the whole session is gone. A checkpoint no process
saved (a *phantom*: the JSON store taking its own latest file for a foreign
write) counts as a failure too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._proc import REPO, child_env
from .conftest import LONG

_COMMON = r'''
import asyncio, json, os, random, sys, time
import nb_sessions as nbs
from nb_sessions.stores import sqlite_store
from tests.conftest import Box

sqlite_store._PIECE = 64  # many pieces: the prefetch thread runs on every read

def state(tag, n):
    # Lists of the same length: checkpoints differ only by their tag.
    return dict(meta=Box({"tag": tag}), box=Box([{"tag": tag, "i": i} for i in range(n)]))
'''

_CHURN = _COMMON + r'''
async def main(path, seconds, n, seed):
    rnd = random.Random(seed)
    store = nbs.open_store(path)
    end = time.monotonic() + seconds
    ops = 0
    while time.monotonic() < end:
        tag = f"{seed}-{ops}"
        await store.asave("s", **state(tag, n))
        ops += 1
        roll = rnd.random()
        try:
            if roll < 0.45:
                hist = await store.ahistory("s")
                if len(hist) > 1:
                    await store.adelete(f"s@{hist[0].seq}")
            elif roll < 0.65:
                await store.aprune("s", keep_last=1)
            elif roll < 0.72:
                await store.avacuum()
            elif roll < 0.80:
                await store.adelete("s")  # the whole session: its numbers start at 1 again
        except (nbs.CheckpointNotFoundError, nbs.SessionNotFoundError):
            pass
    print(json.dumps({"ops": ops}))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
'''

_READER = _COMMON + r'''
async def main(path, seconds):
    store = nbs.open_store(path)
    end = time.monotonic() + seconds
    reads = mixed = gone = phantom = 0
    errors = []
    while time.monotonic() < end:
        try:
            hist = await store.ahistory("s")
        except nbs.SessionNotFoundError:
            continue
        phantom += sum(cp.origin is not None for cp in hist)
        for cp in hist[-2:]:
            try:
                got = await store.aget_state(cp)
            except (nbs.CheckpointNotFoundError, nbs.SessionNotFoundError):
                gone += 1
                continue
            except nbs.NbSessionsError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            reads += 1
            tag = got["meta"]["value"]["tag"]
            tags = {m["tag"] for m in got["box"]["value"]}
            if tags != {tag} or cp.metadata.get("x", tag) != tag:
                mixed += 1
    print(json.dumps({"reads": reads, "mixed": mixed, "gone": gone, "phantom": phantom, "errors": errors[:5],
                      "error_count": len(errors)}))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
'''


def _run(tmp_path: Path, kind: str, seconds: float, readers: int, churners: int, n: int) -> dict[str, int]:
    path = tmp_path / ("s.db" if kind == "sqlite" else "store")
    env = child_env()
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHURN, str(path), str(seconds), str(n), str(seed)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seed in range(churners)
    ]
    time.sleep(0.5)  # let the first saves create the store
    procs += [
        subprocess.Popen([sys.executable, "-c", _READER, str(path), str(seconds)],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(readers)
    ]
    total = {"ops": 0, "reads": 0, "mixed": 0, "gone": 0, "phantom": 0, "error_count": 0}
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert not result.get("errors"), result["errors"]
        for k in total:
            total[k] += result.get(k, 0)
    return total


def _check(total: dict[str, int], figures: object) -> None:
    figures.record(  # type: ignore[attr-defined]
        trials=total["reads"] + total["gone"], reads=total["reads"], deleted_meanwhile=total["gone"],
        churn_operations=total["ops"], mixed_reads=total["mixed"], phantom_checkpoints=total["phantom"],
        other_errors=total["error_count"],
    )
    assert total["reads"] > 50
    assert total["mixed"] == 0, total
    assert total["phantom"] == 0, total
    assert total["error_count"] == 0


@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_readers_against_save_delete_prune_vacuum_never_mix_checkpoints(
    tmp_path: Path, figures: object, kind: str
) -> None:
    _check(_run(tmp_path, kind, seconds=8.0, readers=2, churners=2, n=400), figures)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "json"])
def test_readers_against_churn_never_mix_checkpoints_long(tmp_path: Path, figures: object, kind: str) -> None:
    assert LONG
    _check(_run(tmp_path, kind, seconds=90.0, readers=3, churners=2, n=2000), figures)
