"""Reliability suite plumbing: the short/long switch and the figures every test reports.

The short versions always run. The long versions carry the ``slow`` marker and
run only with ``--long`` (``make test ARGS="--long"``) or ``NB_SESSIONS_LONG=1`` in
the environment::

    .venv/bin/pytest tests/reliability -m slow --long

Every test records its figures (trials, checkpoints written, lost: 0, ...)
through the ``figures`` fixture: they are printed by the test and listed
together at the end of the run by :func:`pytest_terminal_summary`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

#: True when the long versions run (``--long`` or ``NB_SESSIONS_LONG=1``). Test modules read it
#: when they are imported, and this conftest is imported before pytest parses its options,
#: so the command line is looked at directly (the option itself is declared in tests/conftest.py).
LONG = (
    os.environ.get("NB_SESSIONS_LONG", "").strip().lower() in ("1", "true", "yes", "on")
    or "--long" in sys.argv[1:]
)

_COLLECTED: list[Figure] = []


@dataclass
class Figure:
    """One test's figures: a name and ordered ``key=value`` numbers."""

    test: str
    values: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        body = ", ".join(f"{k}: {v}" for k, v in self.values.items())
        return f"{self.test}: {body}"


class Figures:
    """What the ``figures`` fixture hands a test: ``figures.record(trials=..., lost=0)``."""

    def __init__(self, test: str) -> None:
        self.test = test

    def record(self, label: str | None = None, **values: Any) -> Figure:
        """Record (and print) figures; ``label`` tells apart several records of one test."""
        name = self.test if label is None else f"{self.test} [{label}]"
        fig = Figure(name, dict(values))
        _COLLECTED.append(fig)
        print(f"FIGURE {fig.line()}")
        return fig


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Record this test's figures for the end-of-run summary."""
    return Figures(request.node.nodeid.split("::", 1)[-1])


@pytest.fixture(autouse=True)
def _long_only(request: pytest.FixtureRequest) -> None:
    """Skip the ``slow`` (long) versions unless NB_SESSIONS_LONG=1."""
    if request.node.get_closest_marker("slow") is not None and not LONG:
        pytest.skip("long version: run with --long (or NB_SESSIONS_LONG=1)")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List every figure recorded during the run."""
    if not _COLLECTED:
        return
    mode = "long" if LONG else "short (NB_SESSIONS_LONG=1 for the long versions)"
    terminalreporter.section(f"nb_sessions reliability figures — {mode}")
    for fig in _COLLECTED:
        terminalreporter.write_line(fig.line())
