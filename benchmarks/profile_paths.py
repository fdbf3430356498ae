"""Where the time and memory of a save and a load go, thread by thread.

    .venv/bin/python -m benchmarks.profile_paths [--n 100000] [--top 25] [--only save,load,...]

cProfile sees only the thread that enabled it, and a sync ``store.save`` runs
on nb_sessions' private loop thread (the JSON store's file work on worker
threads of that loop's default executor, the SQL on aiosqlite's connection
thread). So a profiler is enabled in the calling thread, in the loop thread
(by running ``enable`` there as a coroutine) and in every executor worker
(by giving the loop an executor whose initializer enables one), and their
statistics are merged. Time the loop thread spends waiting for SQLite shows
up as ``select``/``poll``. The memory report traces allocations
(tracemalloc) and snapshots them as the traced total climbs, so the last
snapshot shows what was alive near the peak, by line.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nb_sessions as nbs
from nb_sessions import _loop, views

from .foreign import ForeignMemory
from .workload import Workload, make_agent, message_dict

ROOT = str(Path(__file__).resolve().parent.parent) + os.sep


def _short(filename: str) -> str:
    if filename.startswith(ROOT):
        return filename[len(ROOT):]
    parts = filename.split(os.sep)
    for anchor in ("site-packages", "python3.11", "lib"):
        if anchor in parts:
            return os.sep.join(parts[parts.index(anchor) + 1:])
    return filename


class _Profilers:
    """One cProfile per thread: the caller's, the loop's, and each executor worker's."""

    def __init__(self) -> None:
        self.workers: list[cProfile.Profile] = []
        self.active = False
        loop = _loop._get_loop()
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="nbs-prof", initializer=self._init_worker))

    def _init_worker(self) -> None:
        # Runs in the new worker thread: profile everything it does; cleared before each run.
        profiler = cProfile.Profile()
        self.workers.append(profiler)
        profiler.enable()

    def run(self, fn: Callable[[], Any]) -> tuple[Any, pstats.Stats, float]:
        main, on_loop = cProfile.Profile(), cProfile.Profile()

        async def call(f: Callable[[], None]) -> None:
            f()

        for worker in self.workers:
            worker.clear()
        _loop.run_sync(call(on_loop.enable))
        t0 = time.perf_counter()
        main.enable()
        try:
            result = fn()
        finally:
            main.disable()
            wall = time.perf_counter() - t0
            _loop.run_sync(call(on_loop.disable))
        stats = pstats.Stats(main)
        stats.add(on_loop)
        for worker in self.workers:
            worker.snapshot_stats()  # without disabling it: it belongs to another thread
            if worker.stats:  # type: ignore[attr-defined]
                stats.add(_Snapshot(worker.stats))  # type: ignore[attr-defined]
        return result, stats, wall


class _Snapshot:
    """What pstats.Stats.add accepts: an object with ``create_stats`` and ``stats``."""

    def __init__(self, stats: dict[Any, Any]) -> None:
        self.stats = stats

    def create_stats(self) -> None:
        pass


def _report(title: str, stats: pstats.Stats, wall: float, top: int) -> str:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = [((_short(fn), line, name), tt, ct, nc) for (fn, line, name), (cc, nc, tt, ct, _) in raw.items()]
    out = [f"== {title}: {wall * 1000:.0f} ms wall (under cProfile) =="]
    out.append("  self time (tottime), all code:")
    for (fn, line, name), tt, _, nc in sorted(rows, key=lambda r: -r[1])[:top]:
        out.append(f"    {tt * 1000:8.1f} ms  {nc:>9} calls  {fn}:{line}  {name}")
    out.append("  cumulative time (cumtime), nb_sessions only:")
    ours = [r for r in rows if r[0][0].startswith("nb_sessions")]
    for (fn, line, name), _, ct, nc in sorted(ours, key=lambda r: -r[2])[:top]:
        out.append(f"    {ct * 1000:8.1f} ms  {nc:>9} calls  {fn}:{line}  {name}")
    return "\n".join(out)


_PROFILERS: _Profilers | None = None


def profile(title: str, fn: Callable[[], Any], top: int, repeat: int = 1) -> Any:
    """Run ``fn`` ``repeat`` times under the profilers and print the report."""
    global _PROFILERS
    if _PROFILERS is None:
        _PROFILERS = _Profilers()
    gc.collect()

    def many() -> Any:
        result = None
        for _ in range(repeat):
            result = fn()
        return result

    result, stats, wall = _PROFILERS.run(many)
    print(_report(f"{title} (x{repeat})" if repeat > 1 else title, stats, wall, top), flush=True)
    return result


def memory(title: str, fn: Callable[[], Any], top: int) -> None:
    """Trace ``fn``'s allocations; print the peak and what was alive near it, by line."""
    gc.collect()
    tracemalloc.start(1)
    best: dict[str, Any] = {"current": 0, "snap": None}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            current = tracemalloc.get_traced_memory()[0]
            if current > best["current"] * 1.05 + 1_000_000:
                best["current"] = current
                best["snap"] = tracemalloc.take_snapshot()
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        fn()
    finally:
        stop.set()
        watcher.join()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"== memory: {title}: peak {peak / 1e6:.1f} MB; alive at the largest snapshot "
          f"({best['current'] / 1e6:.1f} MB): ==")
    if best["snap"] is not None:
        for stat in best["snap"].statistics("lineno")[:top]:
            frame = stat.traceback[0]
            print(f"    {stat.size / 1e6:7.1f} MB  {stat.count:8d} blocks  {_short(frame.filename)}:{frame.lineno}")
    print(flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_paths")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--warm", type=int, default=5, help="incremental checkpoints before profiling")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--only", default="", help="comma-separated: save,foreign,load,json,views,older,memory")
    args = parser.parse_args(argv)
    only = set(filter(None, args.only.split(",")))

    def want(name: str) -> bool:
        return not only or name in only

    tmp = Path(tempfile.mkdtemp(prefix="nbs-profile-"))
    print(f"building {args.n:,} messages; stores in {tmp}", file=sys.stderr)
    w = Workload(args.n)
    sql = nbs.open_store(tmp / "p.db")
    js = nbs.open_store(tmp / "json")
    sql.save("s", agent=w.agent)
    if want("json"):
        js.save("s", agent=w.agent)
    for _ in range(args.warm):
        w.advance()
        sql.save("s", agent=w.agent)
        if want("json"):
            js.save("s", agent=w.agent)

    def grow_and_save(store: Any) -> Callable[[], Any]:
        def go() -> Any:
            w.advance()
            return store.save("s", agent=w.agent)
        return go

    if want("save"):
        profile("SQLite incremental save (+10 msgs), own memory", grow_and_save(sql), args.top, repeat=5)
    if want("json"):
        profile("JSON store incremental save (+10 msgs), own memory", grow_and_save(js), args.top, repeat=3)
    if want("load"):
        fresh = make_agent()
        profile("SQLite load latest into a fresh agent, fresh store",
                lambda: nbs.open_store(tmp / "p.db").load("s", agent=fresh), args.top)
        profile("SQLite get_state latest, fresh store", lambda: nbs.open_store(tmp / "p.db").get_state("s"), args.top)
        state = nbs.open_store(tmp / "p.db").get_state("s")
        fresh2 = make_agent()
        profile("agent.load_state_dict(state) alone (both methods pay it)",
                lambda: fresh2.load_state_dict(state["agent"]), args.top)
    if want("json"):
        profile("JSON store get_state latest, fresh store", lambda: nbs.open_store(tmp / "json").get_state("s"), args.top)
    if want("older"):
        profile("SQLite get_state @1, fresh store", lambda: nbs.open_store(tmp / "p.db").get_state("s@1"), args.top)
    if want("views"):
        profile("views.messages(store, latest), fresh store",
                lambda: views.messages(nbs.open_store(tmp / "p.db"), "s"), args.top)
        profile("views.messages(live agent)", lambda: views.messages(w.agent), args.top)
    if want("foreign"):
        fm = ForeignMemory.from_dicts(w.dicts or [])
        fsql = nbs.open_store(tmp / "f.db")
        fsql.save("f", memory=fm)
        nxt = [len(fm.content)]

        def foreign_save() -> Any:
            fm.extend(message_dict(i) for i in range(nxt[0], nxt[0] + 10))
            nxt[0] += 10
            return fsql.save("f", memory=fm)

        foreign_save()
        profile("SQLite incremental save (+10 msgs), foreign memory", foreign_save, args.top, repeat=3)
        profile("foreign memory state_dict() alone", fm.state_dict, args.top, repeat=3)
        fresh_f = ForeignMemory()
        profile("SQLite load latest, foreign memory, fresh store",
                lambda: nbs.open_store(tmp / "f.db").load("f", memory=fresh_f), args.top)
        del fm, fresh_f
    if want("memory"):
        peak_store = nbs.open_store(tmp / "peak.db")
        memory("SQLite first full save", lambda: peak_store.save("s", agent=w.agent), args.top)
        w.advance()
        memory("SQLite incremental save", lambda: peak_store.save("s", agent=w.agent), args.top)
        peak_json = nbs.open_store(tmp / "json-peak")
        memory("JSON store first full save", lambda: peak_json.save("s", agent=w.agent), args.top)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
