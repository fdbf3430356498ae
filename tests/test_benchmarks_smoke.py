"""The benchmark suite runs end to end on a small workload (CI's smoke run; no time is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(
    module: str, tmp_path: Path, *extra: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``python -m module --smoke``; return the run and the figures it wrote."""
    out = tmp_path / "figures.json"
    run = subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--out", str(out), "--tmp", str(tmp_path), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run, json.loads(out.read_text(encoding="utf-8"))


def test_benchmark_smoke_run_prints_the_table_and_writes_figures(tmp_path: Path) -> None:
    run, figures = smoke("benchmarks", tmp_path)
    names = [row["figure"] for row in figures["rows"]]
    for expected in ("Save +10 msgs, own memory, SQLite", "Load latest, own memory, SQLite"):
        assert any(name.startswith(expected) for name in names), names
    for row in figures["rows"]:
        assert row["ours"] is None or row["ours"] >= 0
    assert "target" in run.stdout and "ratio" in run.stdout


def test_agentscope2_benchmark_smoke_run_prints_ratios(tmp_path: Path) -> None:
    run, figures = smoke("benchmarks.agentscope2", tmp_path)
    names = [row["figure"] for row in figures["rows"]]
    for expected in ("Save +10 msgs, 2.x agent, SQLite", "Load latest, 2.x agent, JSON", "Disk after 4 checkpoints, SQLite"):
        assert expected in names, names
    assert "agentscope" in run.stdout and "ratio" in run.stdout


def test_postgres_benchmark_smoke_run_prints_ratios_and_verdicts(tmp_path: Path, pg_server: str) -> None:
    run, figures = smoke("benchmarks.postgres", tmp_path, "--dsn", pg_server)
    names = [row["figure"] for row in figures["rows"]]
    for expected in (
        "Save +10 msgs (vs LangGraph aput)",
        "Bytes after 4 checkpoints (vs LangGraph)",
        "Throughput, 4 writer processes (vs LangGraph)",
        "Load latest (vs SQLiteStore)",
    ):
        assert expected in names, names
    verdicts = {row["figure"]: row["verdict"] for row in figures["rows"]}
    assert {verdicts[n] for n in names[:1] + names[2:4]} <= {"PASS", "FAIL"}, verdicts
    for row in figures["rows"]:
        assert row["ours"] > 0 and row["baseline"] > 0, row
    assert "LangGraph" in run.stdout and "ratio" in run.stdout


@pytest.mark.parametrize("kind", ["sqlite", "json", "postgres"])
def test_encryption_benchmark_smoke_run_prints_ratios(tmp_path: Path, kind: str) -> None:
    run, figures = smoke("benchmarks.encryption", tmp_path, "--store", kind)
    assert figures["store"] == kind
    names = [row["figure"] for row in figures["rows"]]
    for expected in ("Save +10 msgs", "Load latest", "Search one word, whole session history"):
        assert expected in names, names
    assert all(row["encrypted"] > 0 and row["plain"] > 0 for row in figures["rows"])
    assert "encrypted" in run.stdout and "ratio" in run.stdout
