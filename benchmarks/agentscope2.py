"""Benchmark an AgentScope 2.x agent's checkpoints against AgentScope 2.x's own way of persisting.

    .venv/bin/python -m benchmarks.agentscope2 [--n 100000] [--checkpoints 100] [--reps 5] [--smoke]

A real 2.x ``Agent`` (a scripted model, no network) holds N ~1 KB messages
in ``agent.state.context`` (user text, assistant replies with thinking, tool
calls and their results in the same message, usage), growing by 10 per
checkpoint. AgentScope 2.x persists an agent by writing
``state.model_dump_json()`` to one file and reads it back with
``AgentState.model_validate_json``: that is the baseline, measured in the
same run on the same agent, interleaved with our saves. Ours: ``store.save(s,
agent=agent)`` (full history kept) and ``store.load(s, agent=agent)`` (strict,
in place) in a SQLiteStore and a JSONStore. Prints the ratios against the
targets (save <= 1.0x, latest load <= 1.3x, disk after all checkpoints
<= 1.5x one snapshot); never fails on a missed target.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nb_sessions as nbs

from . import side_by_side
from .workload import MESSAGES_PER_CHECKPOINT, _cn, _en, _Rng

TARGETS = {"save": 1.0, "load": 1.3, "disk": 1.5}


def message_v2(i: int) -> dict[str, Any]:
    """Message ``i`` in AgentScope 2.x's wire form: a user turn, or a whole assistant reply (~1 KB)."""
    rng = _Rng(i)
    when = f"2026-03-01T09:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}000"
    blk = {"created_at": when, "finished_at": None}
    if i % 2 == 0:
        text = _en(rng, 9) if i % 4 == 0 else _cn(rng, 8)
        return {"id": f"u{i:08d}", "name": "user", "role": "user", "created_at": when, "finished_at": when,
                "content": [{"type": "text", "text": text, "id": f"t{i:08d}", **blk}], "metadata": {}}
    call = f"call_{i:08d}"
    return {
        "id": f"a{i:08d}", "name": "Friday", "role": "assistant", "created_at": when, "finished_at": when,
        "content": [
            {"type": "thinking", "thinking": _en(rng, 3), "id": f"k{i:08d}", **blk},
            {"type": "tool_call", "id": call, "name": "get_weather",
             "input": json.dumps({"city": _en(rng, 1)[:20]}), "state": "finished", **blk},
            {"type": "tool_result", "id": call, "name": "get_weather", "state": "success", "metadata": {},
             "output": [{"type": "text", "text": _en(rng, 2), "id": f"o{i:08d}", **blk}], **blk},
            {"type": "text", "text": _en(rng, 2), "id": f"x{i:08d}", **blk},
        ],
        "metadata": {}, "usage": {"input_tokens": 900 + i % 4000, "output_tokens": 40 + i % 400},
        "finished_reason": "completed",
    }


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    gc.collect(0)
    return time.perf_counter() - t0


def disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def run(n: int, checkpoints: int, reps: int, tmp: Path) -> dict[str, Any]:
    from agentscope.message import Msg
    from agentscope.state import AgentState

    from nb_sessions.agent.v2_scripted import demo_agent

    agent = demo_agent()
    agent.state.context = [Msg.model_validate(message_v2(i)) for i in range(n)]
    size = n
    stores = {"SQLite": nbs.open_store(tmp / "s.db"), "JSON": nbs.JSONStore(tmp / "json")}
    baseline_file = tmp / "agent_state.json"

    def grow() -> None:
        nonlocal size
        agent.state.context.extend(Msg.model_validate(message_v2(i)) for i in range(size, size + MESSAGES_PER_CHECKPOINT))
        size += MESSAGES_PER_CHECKPOINT

    def base_save() -> None:
        baseline_file.write_text(agent.state.model_dump_json(), encoding="utf-8")

    times: dict[str, list[float]] = {k: [] for k in ("base_save", "base_load", *(f"{s}_{o}" for s in stores for o in ("save", "load")))}
    for store in stores.values():
        store.save("bench", agent=agent)  # checkpoint 1: the whole conversation, once
    base_save()
    measured = set(range(checkpoints - reps + 1, checkpoints + 1))
    for cp in range(2, checkpoints + 1):
        grow()
        if cp not in measured:
            for store in stores.values():
                store.save("bench", agent=agent)
            continue
        times["base_save"].append(timed(base_save))
        for name, store in stores.items():
            times[f"{name}_save"].append(timed(lambda s=store: s.save("bench", agent=agent)))  # type: ignore[misc]
    for _ in range(reps):
        target = demo_agent()
        times["base_load"].append(timed(lambda: AgentState.model_validate_json(baseline_file.read_bytes())))
        for name, store in stores.items():
            times[f"{name}_load"].append(timed(lambda s=store, t=target: s.load("bench", agent=t)))  # type: ignore[misc]
        assert target.state.model_dump() == agent.state.model_dump()
    snapshot = baseline_file.stat().st_size
    med = {k: statistics.median(v) for k, v in times.items() if v}
    rows: list[tuple[str, float, float, float | None]] = []
    for name in stores:
        rows.append((f"Save +10 msgs, 2.x agent, {name}", med[f"{name}_save"], med["base_save"], TARGETS["save"]))
        rows.append((f"Load latest, 2.x agent, {name}", med[f"{name}_load"], med["base_load"], TARGETS["load"]))
        if name == "SQLite":
            rows.append((f"Disk after {checkpoints} checkpoints, SQLite", disk(tmp / "s.db"), snapshot, TARGETS["disk"]))
        else:  # the history, and in all (the history plus AgentScope's latest file: one snapshot more)
            hist = disk(tmp / "json" / ".nb_sessions")
            rows.append((f"Disk after {checkpoints} checkpoints, JSON history", hist, snapshot, TARGETS["disk"]))
            rows.append((f"Disk after {checkpoints} checkpoints, JSON in all", disk(tmp / "json"), snapshot, None))
    return {"n": n, "checkpoints": checkpoints, "reps": reps, "messages_at_end": size,
            "rows": [{"figure": f, "ours": o, "baseline": b, "ratio": o / b, "target": t} for f, o, b, t in rows]}


def main(argv: list[str] | None = None) -> int:
    args = side_by_side.parser("python -m benchmarks.agentscope2", __doc__ or "", checkpoints=100).parse_args(argv)
    figures = side_by_side.run_in_temp(args, "nbs-bench2-", run)
    print(f"AgentScope 2.x agent: {args.n} messages, +{MESSAGES_PER_CHECKPOINT} per checkpoint, "
          f"{args.checkpoints} checkpoints, median of {figures['reps']}")
    side_by_side.print_table(figures, "ours", "baseline", ("ours", "agentscope"), 48)
    side_by_side.write_out(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
