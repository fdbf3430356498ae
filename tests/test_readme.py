"""Every ```python block of README.md runs as written, in order, in a real kernel (nbclient).

The blocks are the cells of one notebook: the magics tour, then the Python
API on the agent and store it made, then the views. Each line is a cell of
its own (every line of these blocks is one statement), so a failing line is
named, and the outputs a reader is promised are checked. A block that cannot
run offline is preceded by ``<!-- not run: REASON -->`` and only compiled.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.test_notebooks import text_of

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- not run: (?P<reason>[^>]*?) -->[ ]*\n)?(?P<indent>[ ]*)```python\n(?P<code>.*?)(?P=indent)```",
    re.S,
)


def readme_blocks(text: str) -> list[tuple[str, str | None]]:
    """``(code, reason not run or None)`` for each python block, in order."""
    blocks = []
    for m in _BLOCK.finditer(text):
        code = "\n".join(line.removeprefix(m["indent"]) for line in m["code"].splitlines())
        blocks.append((code, m["reason"]))
    return blocks


def cells_of(code: str) -> list[str]:
    """One cell per non-blank line."""
    return [line for line in code.splitlines() if line.strip()]


def test_readme_blocks_are_found_and_each_not_run_block_says_why() -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 3
    assert "%load_ext nb_sessions" in blocks[0][0]
    for code, reason in blocks:
        if reason is not None:
            assert reason.strip(), "a block that is not run must say why"
            # still valid Python
            ast.parse(TransformerManager().transform_cell(code))


def test_readme_runs_in_a_real_kernel(tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    nb = nbformat.v4.new_notebook()
    for code, reason in blocks:
        if reason is None:
            nb.cells += [nbformat.v4.new_code_cell(line) for line in cells_of(code)]
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except CellExecutionError as exc:  # name the README line that failed
        pytest.fail(f"a README line fails as written:\n{exc}")

    def out(line: str) -> str:
        """What the README line ``line`` (its comment left out) showed."""
        for cell in nb.cells:
            if cell.source.split("  #")[0].strip() == line:
                return text_of(cell)
        raise AssertionError(f"no README line {line!r}")

    assert "saved alice@1 [first]" in out("%save_session alice --label first")
    assert "saved alice@2 [paris]" in out("%save_session alice --label paris")
    assert "alice@1 → alice@2" in out("%session_diff alice@1 alice@2")
    assert "Paris" in out("%session_search Paris")  # the message was saved before it is searched
    assert "dry run: nothing was changed" in out("%load_session alice@first --dry-run")
    assert "restored agent from alice@1 [first]" in out("%load_session alice@first")
    assert "reclaimed" in out('store.prune("alice", keep_last=10, dry_run=True); store.vacuum()')
    assert "shared between checkpoints" in out("%session_stats")
    assert re.search(r"alice\s+\d+\s+\d+\s+\d+", out("store.stats().sessions"))
    assert (tmp_path / "nb_sessions.db").exists()
