"""Benchmark the PostgreSQL store against LangGraph's AsyncPostgresSaver on the same server, in one run.

    .venv/bin/python -m benchmarks.postgres [--n 100000] [--checkpoints 100] [--reps 5]
        [--writers 16] [--writer-n 10000] [--writer-checkpoints 10] [--dsn URL] [--smoke]
    .venv/bin/python -m benchmarks.postgres --pooling [--sessions 300 --writers 16 --rounds 5]

One session (the workload of ``workload.py``: an AgentScope-shaped agent
whose memory holds N ~1 KB messages, and a plan notebook) is saved as
checkpoint 1, then grows by 10 messages per checkpoint up to
``--checkpoints``. Each checkpoint is written, interleaved in the same
process, to

- nb_sessions' ``PostgresStore`` (``await store.asave(session, agent=agent)``),
- LangGraph's ``AsyncPostgresSaver`` as a LangGraph app uses it: the
  messages live in a ``messages`` channel and the plan in a ``plan`` channel,
  and each checkpoint is one ``aput`` whose ``new_versions`` names only the
  channels that changed, so that its blob dedup by channel version works as
  designed (the plan's blob is written again only when the plan changes; the
  messages' blob, the whole list, at every checkpoint, as LangGraph's
  ``add_messages`` channel does),
- nb_sessions' ``SQLiteStore`` (for the latency beside SQLite).

Each side has its own fresh database on the same throwaway server (started
like the tests' ``tests/pg_server.py``, or the server of ``--dsn`` /
``NB_SESSIONS_TEST_PG_DSN``). Figures: the median incremental save of the
last ``--reps`` checkpoints against ``aput``; the bytes the tables of each
side take after the last checkpoint (``pg_total_relation_size``: heap, TOAST
and indexes); and the throughput of ``--writers`` concurrent writer
*processes*, each on its own session of ``--writer-n`` messages, doing
``--writer-checkpoints`` checkpoints of +10 messages for each side in turn.
Prints a table with PASS/FAIL per target; never fails on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import nb_sessions as nbs

from .workload import MESSAGES_PER_CHECKPOINT, Workload, make_agent, make_notebook

#: ours / LangGraph's: save time at most 1/10, bytes at most 1/20; throughput ours / theirs at least 2.
TARGETS = {"save": ("<=", 0.1), "bytes": ("<=", 0.05), "throughput": (">=", 2.0)}
SESSION = "bench"
OUR_TABLES = "nbs\\_%"
THEIR_TABLES = "checkpoint%"


def _langgraph() -> Any:
    try:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        sys.exit(
            "benchmarks.postgres needs LangGraph's saver: pip install -e '.[dev]' "
            "(it pins langgraph-checkpoint-postgres)"
        )
    return AsyncPostgresSaver


class LangGraphThread:
    """One LangGraph thread whose state is the workload's messages and plan, put as a graph step would."""

    def __init__(self, saver: Any, thread_id: str, workload: Workload) -> None:
        self.saver = saver
        self.workload = workload
        self.config: dict[str, Any] = {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ""}
        }
        self.versions: dict[str, str] = {}
        self.plan: Any = None
        self.step = -1

    def prepare(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """The next checkpoint, its metadata and the versions of the channels that changed."""
        from langgraph.checkpoint.base import empty_checkpoint

        assert self.workload.dicts is not None
        self.step += 1
        plan = self.workload.notebook.state_dict()
        changed = {"messages": self.workload.dicts}  # add_messages: a new list value at each step
        if plan != self.plan:
            changed["plan"] = plan
            self.plan = plan
        new_versions = {
            ch: self.saver.get_next_version(self.versions.get(ch), None) for ch in changed
        }
        self.versions.update(new_versions)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": self.workload.dicts, "plan": self.plan}
        checkpoint["channel_versions"] = dict(self.versions)
        checkpoint["versions_seen"] = {"agent": dict(self.versions)}
        checkpoint["updated_channels"] = sorted(changed)
        metadata = {"source": "loop", "step": self.step, "parents": {}}
        return checkpoint, metadata, new_versions

    async def put(self, prepared: tuple[dict[str, Any], dict[str, Any], dict[str, str]]) -> None:
        checkpoint, metadata, new_versions = prepared
        self.config = await self.saver.aput(self.config, checkpoint, metadata, new_versions)

    async def load(self) -> Any:
        latest = {"configurable": {**self.config["configurable"]}}
        latest["configurable"].pop("checkpoint_id", None)
        return await self.saver.aget_tuple(latest)


async def atimed(fn: Callable[[], Awaitable[Any]]) -> float:
    """Seconds ``fn()`` takes, after a full collection (so no earlier garbage is charged to it)."""
    gc.collect()
    t0 = time.perf_counter()
    await fn()
    gc.collect(0)
    return time.perf_counter() - t0


async def table_bytes(url: str, pattern: str) -> dict[str, tuple[int, int]]:
    """``pg_total_relation_size`` (heap, TOAST, indexes) and ``pg_indexes_size`` of each public table
    whose name is LIKE ``pattern``."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE %s",
            (pattern,),
        )
        return {name: (int(size), int(index)) for name, size, index in await cur.fetchall()}


def disk(path: Path) -> int:
    """A SQLite store's bytes: the file and its -wal/-shm."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


async def single(
    n: int, checkpoints: int, reps: int, ours_url: str, theirs_url: str, tmp: Path
) -> dict[str, Any]:
    """One growing session on the three backends, interleaved; medians of the last ``reps``."""
    saver_cls = _langgraph()
    wl = Workload(n)
    pg = nbs.open_store(ours_url)
    lite = nbs.open_store(tmp / "s.db")
    times: dict[str, list[float]] = {
        k: [] for k in ("pg_save", "lg_put", "lite_save", "pg_load", "lg_get", "lite_load")
    }
    async with saver_cls.from_conn_string(theirs_url) as saver:
        await saver.setup()
        lg = LangGraphThread(saver, SESSION, wl)
        measured = set(range(checkpoints - reps + 1, checkpoints + 1))
        for cp in range(1, checkpoints + 1):
            if cp > 1:
                wl.advance()
            prepared = lg.prepare()
            steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("lg_put", partial(lg.put, prepared)),
                ("pg_save", lambda: pg.asave(SESSION, agent=wl.agent)),
                ("lite_save", lambda: lite.asave(SESSION, agent=wl.agent)),
            ]
            if cp not in measured:
                for _, step in steps:
                    await step()
                continue
            k = cp % len(steps)  # rotate who goes first, so drift hits every side alike
            for name, step in steps[k:] + steps[:k]:
                times[name].append(await atimed(step))
        for _ in range(reps):
            target_pg, target_lite = (
                make_agent(notebook=make_notebook()),
                make_agent(notebook=make_notebook()),
            )
            times["lg_get"].append(await atimed(lg.load))
            for name, store, target in (
                ("pg_load", pg, target_pg),
                ("lite_load", lite, target_lite),
            ):
                times[name].append(await atimed(partial(store.aload, SESSION, agent=target)))
        loaded = await lg.load()
        assert len(loaded.checkpoint["channel_values"]["messages"]) == wl.n
        assert target_pg.state_dict() == wl.agent.state_dict() == target_lite.state_dict()
    med = {k: statistics.median(v) for k, v in times.items()}
    ours, theirs = (
        await table_bytes(ours_url, OUR_TABLES),
        await table_bytes(theirs_url, THEIR_TABLES),
    )
    return {
        "messages_at_end": wl.n,
        "times": times,
        "median": med,
        "bytes": {
            "ours": sum(total for total, _ in ours.values()),
            "theirs": sum(total for total, _ in theirs.values()),
            "sqlite": disk(tmp / "s.db"),
        },
        "bytes_by_table": {"ours": ours, "theirs": theirs},
    }


# -- concurrent writers: one process each --------------------------------------------


def _writer(
    index: int, ours_url: str, theirs_url: str, n: int, checkpoints: int, barrier: Any, out: Any
) -> None:
    out.put((index, asyncio.run(_awriter(index, ours_url, theirs_url, n, checkpoints, barrier))))


async def _awriter(
    index: int, ours_url: str, theirs_url: str, n: int, checkpoints: int, barrier: Any
) -> dict[str, Any]:
    """Checkpoint 1 untimed, wait for every writer, then ``checkpoints`` saves of +10 messages; per side."""
    session = f"writer{index:02d}"
    spans: dict[str, tuple[float, float]] = {}
    wl = Workload(n)
    store = nbs.open_store(ours_url)
    await store.asave(session, agent=wl.agent)
    barrier.wait()
    t0 = time.monotonic()
    for _ in range(checkpoints):
        wl.advance()
        await store.asave(session, agent=wl.agent)
    spans["ours"] = (t0, time.monotonic())
    wl = Workload(n)  # the same session afresh for the other side
    async with _langgraph().from_conn_string(theirs_url) as saver:
        lg = LangGraphThread(saver, session, wl)
        await lg.put(lg.prepare())
        barrier.wait()
        t0 = time.monotonic()
        for _ in range(checkpoints):
            wl.advance()
            await lg.put(lg.prepare())
        spans["theirs"] = (t0, time.monotonic())
    return spans


def in_processes(
    count: int, target: Callable[..., None], args_of: Callable[[int], tuple[Any, ...]]
) -> list[Any]:
    """What ``count`` spawned processes put on their queue: each runs ``target(*args_of(i), barrier, out)``."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(count)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier, out)) for i in range(count)]
    for p in procs:
        p.start()
    try:
        return [out.get(timeout=3600) for _ in procs]
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()


def concurrent(
    writers: int, n: int, checkpoints: int, ours_url: str, theirs_url: str
) -> dict[str, Any]:
    """Checkpoints per second of ``writers`` processes on ``writers`` sessions, ours then LangGraph's."""
    results = in_processes(writers, _writer, lambda i: (i, ours_url, theirs_url, n, checkpoints))
    figures: dict[str, Any] = {}
    for side in ("ours", "theirs"):
        spans = [r[side] for _, r in results]
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        figures[side] = {"wall_s": wall, "per_s": writers * checkpoints / wall}
    return figures


# -- pooled connections against one connection per operation ------------------------


class _ConnectionPerOperation:
    """Stands in for a store's pools: every operation opens its own connection and closes it."""

    def __init__(self, store: nbs.PostgresStore) -> None:
        self.store = store

    async def get(self, store: nbs.PostgresStore) -> _ConnectionPerOperation:
        return self

    async def checkout(self, location: str) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self.store.url, connect_timeout=self.store.connect_timeout
        )

    async def checkin(self, conn: Any) -> None:
        await conn.close()


async def pooling(url: str, reps: int) -> dict[str, Any]:
    """Median small save and small load, pooled and with one connection per operation, interleaved."""
    from tests.conftest import Box

    pooled = nbs.PostgresStore(url)
    direct = nbs.PostgresStore(url)
    direct._pools = _ConnectionPerOperation(direct)  # type: ignore[assignment]
    times: dict[str, list[float]] = {
        k: [] for k in ("pooled_save", "direct_save", "pooled_load", "direct_load")
    }
    value = [{"role": "user", "content": "a small message"}] * 4
    for store in (pooled, direct):  # warm up: migrations checked, a connection in the pool
        await store.asave("small", agent=Box(value))
    for i in range(reps):
        sides = [("pooled", pooled), ("direct", direct)]
        for name, store in sides if i % 2 else sides[::-1]:
            times[f"{name}_save"].append(
                await atimed(partial(store.asave, "small", agent=Box([*value, i])))
            )
            times[f"{name}_load"].append(await atimed(partial(store.aload, "small", agent=Box())))
    await pooled.aclose()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "rows": [
            {
                "figure": f"Small {what}",
                "pooled": med[f"pooled_{op}"],
                "direct": med[f"direct_{op}"],
                "ratio": med[f"pooled_{op}"] / med[f"direct_{op}"],
                "target": None,
            }
            for op, what in (("save", "save (asave)"), ("load", "load (aload)"))
        ],
        "times": times,
    }


# -- many sessions: processes saving small checkpoints concurrently -------------------


def _session_writer(
    index: int, url: str, sessions: list[str], rounds: int, barrier: Any, out: Any
) -> None:
    out.put(asyncio.run(_asession_writer(url, sessions, rounds, barrier)))


async def _asession_writer(
    url: str, sessions: list[str], rounds: int, barrier: Any
) -> tuple[float, float, list[float]]:
    """Each of ``sessions`` as its own task: ``rounds`` saves of a growing small chat; save latencies."""
    from tests.conftest import Box

    store = nbs.PostgresStore(url)
    await store.asave("warm-" + sessions[0], agent=Box(0))
    barrier.wait()
    latencies: list[float] = []

    async def run(session: str) -> None:
        chat: list[dict[str, str]] = []
        for r in range(rounds):
            chat = [*chat, {"role": "user", "content": f"{session} turn {r}"}]
            t0 = time.perf_counter()
            await store.asave(session, agent=Box(chat))
            latencies.append(time.perf_counter() - t0)

    t0 = time.monotonic()
    await asyncio.gather(*(run(s) for s in sessions))
    end = time.monotonic()
    await store.aclose()
    return t0, end, latencies


def many_sessions(url: str, sessions: int, writers: int, rounds: int) -> dict[str, Any]:
    """Checkpoints per second and save latency percentiles of ``writers`` processes on ``sessions`` sessions."""
    names = [f"s{i:04d}" for i in range(sessions)]
    results = in_processes(writers, _session_writer, lambda i: (i, url, names[i::writers], rounds))
    latencies = sorted(x for _, _, lat in results for x in lat)
    wall = max(end for _, end, _ in results) - min(start for start, _, _ in results)
    return {
        "checkpoints": len(latencies),
        "wall_s": wall,
        "per_s": len(latencies) / wall,
        "p50_s": latencies[len(latencies) // 2],
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def small_runs(args: argparse.Namespace) -> int:
    """``--pooling`` and ``--sessions``: the connection pool's figures, on a fresh database."""
    from .side_by_side import print_table

    started = time.perf_counter()
    with databases(args.dsn) as (url, _):
        if args.pooling:
            figures = asyncio.run(pooling(url, 20 if args.smoke else 200))
            print(
                f"PostgreSQL connections: median of {len(figures['times']['pooled_save'])}, interleaved"
            )
            print_table(figures, "pooled", "direct", ("pooled", "per-op conn"), 24)
        if args.sessions:
            rounds = 2 if args.smoke else args.rounds
            got = many_sessions(url, args.sessions, args.writers, rounds)
            print(
                f"PostgreSQL, {args.sessions} sessions x {rounds} saves from {args.writers} writer processes "
                f"(pool of 4 each): {got['checkpoints']} checkpoints in {got['wall_s']:.1f} s = "
                f"{got['per_s']:.0f} checkpoints/s; save latency p50 {got['p50_s'] * 1e3:.1f} ms, "
                f"p99 {got['p99_s'] * 1e3:.1f} ms"
            )
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


# -- the run -----------------------------------------------------------------------


@contextlib.contextmanager
def databases(dsn: str | None) -> Iterator[tuple[str, str]]:
    """Two fresh databases (ours, LangGraph's) on the server of ``dsn``, or on a throwaway server."""
    from tests import pg_server

    if dsn:
        os.environ["NB_SESSIONS_TEST_PG_DSN"] = dsn
    with pg_server.server() as server:
        urls = (pg_server.fresh_database(server), pg_server.fresh_database(server))
        try:
            yield urls
        finally:
            import psycopg

            with psycopg.connect(server, autocommit=True) as conn:
                for url in urls:
                    conn.execute(f"DROP DATABASE IF EXISTS {url.rpartition('/')[2]} WITH (FORCE)")


def rows(
    single_: dict[str, Any], conc: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    med, size = single_["median"], single_["bytes"]
    out: list[tuple[str, float, float, str | None, str]] = [
        ("Save +10 msgs (vs LangGraph aput)", med["pg_save"], med["lg_put"], "save", "s"),
        ("Load latest (vs LangGraph aget_tuple)", med["pg_load"], med["lg_get"], None, "s"),
        (
            f"Bytes after {args.checkpoints} checkpoints (vs LangGraph)",
            size["ours"],
            size["theirs"],
            "bytes",
            "B",
        ),
        (
            f"Throughput, {args.writers} writer processes (vs LangGraph)",
            conc["ours"]["per_s"],
            conc["theirs"]["per_s"],
            "throughput",
            "/s",
        ),
        ("Save +10 msgs (vs SQLiteStore)", med["pg_save"], med["lite_save"], None, "s"),
        ("Load latest (vs SQLiteStore)", med["pg_load"], med["lite_load"], None, "s"),
        (
            f"Bytes after {args.checkpoints} checkpoints (vs SQLiteStore)",
            size["ours"],
            size["sqlite"],
            None,
            "B",
        ),
    ]
    result = []
    for figure, ours, base, target, unit in out:
        ratio = ours / base if base else float("nan")
        verdict = "info"
        if target is not None:
            op, bound = TARGETS[target]
            verdict = "PASS" if (ratio <= bound if op == "<=" else ratio >= bound) else "FAIL"
        result.append(
            {
                "figure": figure,
                "ours": ours,
                "baseline": base,
                "unit": unit,
                "ratio": ratio,
                "target": None if target is None else " ".join(map(str, TARGETS[target])),
                "verdict": verdict,
            }
        )
    return result


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1e3:9.1f} ms"
    if unit == "B":
        return f"{value / 1e6:9.2f} MB"
    return f"{value:8.1f} cp/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.postgres", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--n", type=int, default=100_000, help="messages at checkpoint 1 of the single session"
    )
    parser.add_argument(
        "--checkpoints",
        type=int,
        default=100,
        help="checkpoints of the single session (+10 messages each)",
    )
    parser.add_argument(
        "--reps",
        type=int,
        default=5,
        help="last checkpoints (and loads) measured; the median is shown",
    )
    parser.add_argument(
        "--writers", type=int, default=16, help="concurrent writer processes, one session each"
    )
    parser.add_argument(
        "--writer-n",
        type=int,
        default=10_000,
        help="messages at checkpoint 1 of each writer's session",
    )
    parser.add_argument(
        "--writer-checkpoints", type=int, default=10, help="timed checkpoints per writer and side"
    )
    parser.add_argument(
        "--dsn",
        default=None,
        help="a server to use (default: NB_SESSIONS_TEST_PG_DSN, else a throwaway one)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a small run that only shows the benchmark works (CI)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="folder for the SQLite store (default: a temp folder)",
    )
    parser.add_argument(
        "--pooling",
        action="store_true",
        help="only: a small save and load, pooled against one connection per operation",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="only: this many sessions saved concurrently by --writers processes (checkpoints/s, p50/p99)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="saves per session with --sessions")
    args = parser.parse_args(argv)
    if args.pooling or args.sessions:
        return small_runs(args)
    if args.smoke:
        args.n, args.checkpoints, args.reps = 200, 4, 2
        args.writers, args.writer_n, args.writer_checkpoints = 4, 100, 2
    args.reps = max(1, min(args.reps, args.checkpoints - 1))
    _langgraph()
    tmp = Path(tempfile.mkdtemp(prefix="nbs-bench-pg-", dir=args.tmp))
    started = time.perf_counter()
    try:
        with databases(args.dsn) as (ours_url, theirs_url):
            single_ = asyncio.run(
                single(args.n, args.checkpoints, args.reps, ours_url, theirs_url, tmp)
            )
            conc = concurrent(
                args.writers, args.writer_n, args.writer_checkpoints, ours_url, theirs_url
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = rows(single_, conc, args)
    print(
        f"PostgreSQL: {args.n} messages, +{MESSAGES_PER_CHECKPOINT} per checkpoint, {args.checkpoints} "
        f"checkpoints, median of {args.reps}; {args.writers} writer processes x {args.writer_checkpoints} "
        f"checkpoints on sessions of {args.writer_n} messages; {time.perf_counter() - started:.0f} s"
    )
    print(f"{'figure':52} {'nb_sessions':>13} {'baseline':>13} {'ratio':>8} {'target':>7}")
    for row in table:
        target = row["target"] or ""
        print(
            f"{row['figure']:52} {_fmt(row['ours'], row['unit']):>13} {_fmt(row['baseline'], row['unit']):>13} "
            f"{row['ratio']:7.3f}x {target:>7} {row['verdict']}"
        )
    for side, name in (("ours", "nb_sessions"), ("theirs", "LangGraph")):
        parts = sorted(single_["bytes_by_table"][side].items(), key=lambda kv: -kv[1][0])
        print(
            f"{name} tables (of which indexes): "
            + ", ".join(f"{t} {b / 1e6:.2f} MB ({i / 1e6:.2f})" for t, (b, i) in parts)
        )
    if args.out:
        figures = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "rows": table,
            "single": single_,
            "concurrent": conc,
        }
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
