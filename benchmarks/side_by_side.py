"""What the side-by-side benchmarks share: their options, a temporary folder, the ratio table."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parser(prog: str, doc: str, *, checkpoints: int) -> argparse.ArgumentParser:
    """``--n --checkpoints --reps --smoke --out --tmp``, with this benchmark's defaults."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--checkpoints", type=int, default=checkpoints)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="a small run that only shows the benchmark works")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--tmp", type=Path, default=None, help="folder for the stores (default: a temp folder)")
    return p


def run_in_temp(args: argparse.Namespace, prefix: str, run: Callable[[int, int, int, Path], dict[str, Any]]) -> dict[str, Any]:
    """``run(n, checkpoints, reps, folder)`` in a fresh folder removed afterwards (``--smoke`` shrinks N)."""
    if args.smoke:
        args.n, args.checkpoints, args.reps = 200, 4, 2
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=args.tmp))
    try:
        return run(args.n, args.checkpoints, min(args.reps, args.checkpoints - 1), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_table(figures: dict[str, Any], ours: str, theirs: str, labels: tuple[str, str], width: int) -> None:
    """One line per figure: both sides (ms, or MB for disk rows), the ratio, the target and ok/MISSED."""
    print(f"{'figure':{width}} {labels[0]:>12} {labels[1]:>12} {'ratio':>7} {'target':>7}")
    for row in figures["rows"]:
        disk_row = row["figure"].startswith("Disk")
        unit = (lambda v: f"{v / 1e6:9.1f} MB") if disk_row else (lambda v: f"{v * 1e3:9.1f} ms")
        target = row["target"]
        mark = "info" if target is None else "ok" if row["ratio"] <= target else "MISSED"
        shown = "  info" if target is None else f"{target:5.1f}x"
        print(f"{row['figure']:{width}} {unit(row[ours]):>12} {unit(row[theirs]):>12} {row['ratio']:6.2f}x {shown} {mark}")


def write_out(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
