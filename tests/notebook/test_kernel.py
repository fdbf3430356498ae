"""The magics in a real ipykernel, driven by nbclient: a running loop, top-level await, real outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

import nb_sessions as nbs


def execute(tmp_path: Path, *cells: str | tuple[str, list[str]]) -> Any:
    """Run the cells in a fresh python3 kernel working in ``tmp_path``; return the executed notebook."""
    nb = new_notebook()  # type: ignore[no-untyped-call]
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        nb.cells.append(new_code_cell(source, metadata={"tags": tags}))  # type: ignore[no-untyped-call]
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    nbformat.validate(nb)
    return nb


def text_of(cell: Any) -> str:
    """Everything a cell printed (streams and plain-text results)."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_python3_kernel_is_this_interpreter(tmp_path: Path) -> None:
    spec = KernelSpecManager().get_kernel_spec("python3")
    # jupyter_client replaces a bare "python" in argv with sys.executable: no manual install needed.
    assert spec.argv[0] in ("python", sys.executable)
    nb = execute(tmp_path, "import sys, nb_sessions\nprint(sys.executable)")
    assert Path(text_of(nb.cells[0]).strip()) == Path(sys.executable)


def test_save_mutate_load_in_a_real_kernel(tmp_path: Path) -> None:
    nb = execute(
        tmp_path,
        "%load_ext nb_sessions",
        "import asyncio\nasyncio.get_running_loop()  # the kernel's loop is running\n"
        "from nb_sessions.agent import Msg, ScriptedAgent\n"
        "agent = ScriptedAgent('Friday', seed=1)\n"
        "await agent(Msg('user', 'hello', 'user'))\n"
        "saved_state = agent.state_dict()\nn_saved = len(agent.memory.content)",
        "cp = %save_session alice --label greeted\ncp",
        "await agent(Msg('user', 'plan to shop, cook, eat', 'user'))\n"
        "assert agent.plan_notebook.current_plan is not None\nassert len(agent.memory.content) > n_saved",
        "%load_session alice --dry-run",
        "assert agent.plan_notebook.current_plan is not None",
        "%load_session alice@greeted",
        "assert agent.state_dict() == saved_state\nassert agent.plan_notebook.current_plan is None\nprint('restored OK')",
        ("%load_session nobody", ["raises-exception"]),
        "%sessions",
        "%session_panel",
    )
    cells = nb.cells
    assert text_of(cells[2]).startswith("saved alice@1 [greeted]: agent (")
    assert "text/html" in cells[2].outputs[-1].data
    assert "nb-sessions-checkpoint" in cells[2].outputs[-1].data["text/html"]
    dry = text_of(cells[4])
    assert "dry run: nothing was changed" in dry
    assert "live → alice@1" in dry
    assert "messages" in dry
    assert "text/html" in cells[4].outputs[-1].data
    assert "restored agent from alice@1 [greeted]" in text_of(cells[6])
    assert "restored OK" in text_of(cells[7])
    # ipykernel shows a UsageError as one clean stderr line, never a traceback.
    assert [o.output_type for o in cells[8].outputs] == ["stream"]
    assert cells[8].outputs[0].name == "stderr"
    assert (
        cells[8].outputs[0].text.startswith("UsageError: cannot load 'nobody': no session 'nobody'")
    )
    assert "Traceback" not in cells[8].outputs[0].text
    assert "alice" in text_of(cells[9])
    assert "application/vnd.jupyter.widget-view+json" in cells[10].outputs[-1].data
    store = nbs.open_store(tmp_path / "nb_sessions.db")
    cp = store.checkpoint("alice@greeted")
    assert cp.metadata["cell"] == cells[2].execution_count


def test_autosave_in_a_real_kernel(tmp_path: Path) -> None:
    nb = execute(
        tmp_path,
        "%load_ext nb_sessions",
        "from nb_sessions.agent import Msg, ScriptedAgent\nagent = ScriptedAgent('Friday', seed=2)",
        "%autosave_session bob agent",
        "await agent(Msg('user', 'hello', 'user'))",
        "x = 1",
        "agent.name",
        "await agent(Msg('user', 'what is 6*7', 'user'))",
        "%autosave_session --off",
        "await agent(Msg('user', 'weather in Paris', 'user'))",
    )
    counts = [c.execution_count for c in nb.cells]
    store = nbs.open_store(tmp_path / "nb_sessions.db")
    labels = [c.label for c in store.history("bob")]
    assert labels == [f"cell-{counts[2]}", f"cell-{counts[3]}", f"cell-{counts[6]}"]
    assert "autosave off: 3 checkpoint(s)" in text_of(nb.cells[7])
    states = store.get_state(f"bob@cell-{counts[6]}")
    texts = str(states["agent"]["memory"]["content"])
    assert "6*7" in texts
    assert "Paris" not in texts


def test_pyproject_in_a_real_kernel(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.nb_sessions]\nstore = "kernel_store"\n', encoding="utf-8"
    )
    nb = execute(
        tmp_path,
        "%load_ext nb_sessions",
        "%config SessionMagics.store",
        "from nb_sessions.agent import ScriptedAgent\nagent = ScriptedAgent('Friday', seed=2)",
        "%save_session carol",
    )
    assert str(tmp_path / "kernel_store") in text_of(nb.cells[1])
    assert (tmp_path / "kernel_store" / "carol.json").exists()
