"""What encryption at rest costs: the same session in a plain and an encrypted store, one run.

    .venv/bin/python -m benchmarks.encryption [--store sqlite|json|postgres] [--n 100000] [--checkpoints 20]
                                              [--reps 5] [--smoke] [--out FILE]

``--store`` picks the kind: SQLite files (the default), JSON folders, or two
databases on a throwaway PostgreSQL server (started as the tests do, see
``tests/pg_server.py``; ``NB_SESSIONS_TEST_PG_DSN`` names an existing one). A
plain JSON folder loads the latest checkpoint from AgentScope's latest file;
an encrypted one writes no such file and opens its sealed history instead.
PostgreSQL's disk figure is ``pg_total_relation_size`` of the ``nbs_*`` tables.

The workload of ``workload.py`` (an agent whose memory holds N ~1 KB
messages) is saved as checkpoint 1 into both stores, then grows by 10
messages per checkpoint; saves and loads alternate between the two stores so
noise hits both alike. Search looks for one word of a late message (the
plain store through its FTS index, the encrypted one by decrypting and
scanning in memory). Every time is the median of several repetitions; the
table gives encrypted/plain ratios against the targets (1.3x for save and
load; search has none). Never fails on a missed target.
"""

from __future__ import annotations

import asyncio
import functools
import statistics
import sys
from pathlib import Path
from typing import Any

import nb_sessions as nbs
from benchmarks import side_by_side
from benchmarks.agentscope2 import disk, timed
from benchmarks.workload import Workload, make_agent

TARGETS = {"save": 1.3, "load": 1.3, "first": 1.3, "search": None}
#: A fixed raw key (base64), so runs are comparable; the key's kind does not change the per-value cost.
KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def run(n: int, checkpoints: int, reps: int, tmp: Path, kind: str = "sqlite") -> dict[str, Any]:
    if kind == "postgres":
        from benchmarks.postgres import databases

        with databases(None) as (plain, encrypted):
            return _run(n, checkpoints, reps, kind, {"plain": plain, "encrypted": encrypted})
    suffix = ".db" if kind == "sqlite" else ""
    return _run(n, checkpoints, reps, kind, {"plain": tmp / f"plain{suffix}", "encrypted": tmp / f"enc{suffix}"})


def _size(location: Path | str) -> int:
    """A store's bytes: its file(s) or folder, or its nbs_* tables (with TOAST and indexes)."""
    if isinstance(location, Path):
        return disk(location)
    from benchmarks.postgres import table_bytes

    return sum(size for size, _ in asyncio.run(table_bytes(location, "nbs%")).values())


def _settle(location: Path | str) -> None:
    """Before a timed first save on PostgreSQL: a CHECKPOINT, so the server has flushed what came before."""
    if isinstance(location, Path):
        return
    import psycopg

    with psycopg.connect(location, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def _run(n: int, checkpoints: int, reps: int, kind: str, paths: dict[str, Path | str]) -> dict[str, Any]:
    work = Workload(n, keep_dicts=False)
    stores = {"plain": nbs.open_store(paths["plain"]), "encrypted": nbs.open_store(paths["encrypted"], key=KEY)}
    times: dict[str, list[float]] = {f"{s}_{o}": [] for s in stores for o in ("first", "save", "load", "search")}
    for name, store in stores.items():
        # One sample each: start both from a quiet server (a first save writes ~100 MB of WAL, and
        # the next one would otherwise pay for flushing it).
        _settle(paths["plain"])
        times[f"{name}_first"].append(timed(lambda s=store: s.save("bench", agent=work.agent)))  # type: ignore[misc]
    measured = set(range(checkpoints - reps + 1, checkpoints + 1))
    for cp in range(2, checkpoints + 1):
        work.grow()
        for name, store in stores.items():
            t = timed(lambda s=store: s.save("bench", agent=work.agent))  # type: ignore[misc]
            if cp in measured:
                times[f"{name}_save"].append(t)
    word = "Friday"
    for _ in range(reps):
        for name, store in stores.items():
            target = make_agent()
            times[f"{name}_load"].append(timed(lambda s=store, a=target: s.load("bench", agent=a)))  # type: ignore[misc]
            assert len(target.memory.content) == work.n
    for _ in range(max(1, reps // 2)):
        for name, store in stores.items():
            times[f"{name}_search"].append(timed(lambda s=store: s.search(word, session="bench")))  # type: ignore[misc]
    med = {k: statistics.median(v) for k, v in times.items() if v}
    rows = [
        ("Save checkpoint 1 (whole conversation)", "first"),
        ("Save +10 msgs", "save"),
        ("Load latest", "load"),
        ("Search one word, whole session history", "search"),
    ]
    out = [
        {"figure": f, "encrypted": med[f"encrypted_{k}"], "plain": med[f"plain_{k}"],
         "ratio": med[f"encrypted_{k}"] / med[f"plain_{k}"], "target": TARGETS[k]}
        for f, k in rows
    ]
    sizes = {name: _size(path) for name, path in paths.items()}
    out.append({"figure": f"Disk after {checkpoints} checkpoints", "encrypted": sizes["encrypted"],
                "plain": sizes["plain"], "ratio": sizes["encrypted"] / sizes["plain"], "target": None})
    return {"store": kind, "n": n, "checkpoints": checkpoints, "reps": reps, "messages_at_end": work.n, "rows": out}


def main(argv: list[str] | None = None) -> int:
    p = side_by_side.parser("python -m benchmarks.encryption", __doc__ or "", checkpoints=20)
    p.add_argument(
        "--store", choices=("sqlite", "json", "postgres"), default="sqlite",
        help="SQLite files, JSON folders, or PostgreSQL databases",
    )
    args = p.parse_args(argv)
    figures = side_by_side.run_in_temp(args, "nbs-bench-enc-", functools.partial(run, kind=args.store))
    name = {"sqlite": "SQLite", "json": "JSON store", "postgres": "PostgreSQL"}[args.store]
    print(f"Encryption at rest, {name}: {args.n} messages, +10 per checkpoint, {args.checkpoints} checkpoints, "
          f"median of {figures['reps']}")
    side_by_side.print_table(figures, "encrypted", "plain", ("encrypted", "plain"), 42)
    side_by_side.write_out(args, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
