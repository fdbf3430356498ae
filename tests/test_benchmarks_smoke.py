"""The benchmark suite runs end to end on a small workload (CI's smoke run; no time is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_run_prints_the_table_and_writes_figures(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out), "--tmp", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    names = [row["figure"] for row in figures["rows"]]
    for expected in ("Save +10 msgs, own memory, SQLite", "Load latest, own memory, SQLite"):
        assert any(name.startswith(expected) for name in names), names
    for row in figures["rows"]:
        assert row["ours"] is None or row["ours"] >= 0
    assert "target" in run.stdout and "ratio" in run.stdout
