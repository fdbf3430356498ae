"""A real IPython shell with ``%load_ext nb_sessions``, working in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from traitlets.config import Config


def make_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: Config | None = None
) -> InteractiveShell:
    """A fresh InteractiveShell (history in memory) working in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / ".ipython"))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    cfg = Config() if config is None else config
    cfg.HistoryManager.hist_file = ":memory:"
    InteractiveShell.clear_instance()
    return InteractiveShell.instance(config=cfg)


def run(shell: InteractiveShell, code: str) -> ExecutionResult:
    """Run one cell as a notebook would (stored in history, so it gets an execution count)."""
    result: ExecutionResult = shell.run_cell(code, store_history=True)  # type: ignore[no-untyped-call]
    return result


def ok(shell: InteractiveShell, code: str) -> Any:
    """Run a cell that must succeed; return its value."""
    result = run(shell, code)
    err = result.error_before_exec or result.error_in_exec
    assert result.success, f"cell failed: {code!r}: {type(err).__name__}: {err}"
    return result.result


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """A shell with the extension loaded and ``box`` (a Box holding ``[1, 2]``) in its namespace."""
    sh = make_shell(tmp_path, monkeypatch)
    ok(sh, "%load_ext nb_sessions")
    ok(sh, "from tests.conftest import Box\nbox = Box([1, 2])")
    yield sh
    sh.run_line_magic("unload_ext", "nb_sessions")
    InteractiveShell.clear_instance()
