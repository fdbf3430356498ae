"""The tutorial notebooks run top to bottom in a real kernel (nbclient), and say what they should.

Each test executes a COPY of a notebook in a temporary folder (the kernel
works there, so the notebook's store is created there too): the committed
notebooks and their store are never touched. nbclient raises
CellExecutionError on the first cell that fails, so a missing magic or a
broken example fails here (nbval would pass a notebook whose magic does not
exist). A few key outputs are checked per notebook, and the committed copies
are checked for being the outputs of one clean run.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = [
    "01_quickstart.ipynb",
    "02_history_and_time_travel.ipynb",
    "03_exploring_with_pandas.ipynb",
    "04_widget_panel.ipynb",
    "05_agentscope_interop.ipynb",
    "06_agentscope_2x.ipynb",
    "07_encryption_at_rest.ipynb",
]
#: "Well under a minute" each, kernel start included.
TIME_LIMIT = 60.0


def execute(name: str, folder: Path) -> tuple[Any, float]:
    """Run a copy of notebook ``name`` in ``folder``; return the executed notebook and the seconds it took."""
    copy = folder / name
    shutil.copyfile(NOTEBOOKS / name, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    )
    started = time.monotonic()
    client.execute()  # raises CellExecutionError if any cell fails
    took = time.monotonic() - started
    nbformat.validate(nb)
    return nb, took


def text_of(cell: Any) -> str:
    """Everything a cell printed or displayed, as plain text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def cell_with(nb: Any, snippet: str) -> Any:
    """The first code cell whose source contains ``snippet``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and snippet in cell.source:
            return cell
    raise AssertionError(f"no code cell contains {snippet!r}")


def output_of(nb: Any, snippet: str) -> str:
    return text_of(cell_with(nb, snippet))


def mime_types(cell: Any) -> set[str]:
    return {mime for out in cell.get("outputs", []) if "data" in out for mime in out.data}


# -- what each notebook must show --------------------------------------------------


def check_quickstart(nb: Any) -> None:
    before = re.search(r"before the restart: (\d+) messages", output_of(nb, "n_before = len("))
    after = re.search(r"after %load_session: (\d+) messages", output_of(nb, "n_after = len("))
    assert before and after
    assert int(before[1]) > 0
    assert int(after[1]) == int(before[1])  # the restored agent has every message back
    assert "after the restart: 0 messages" in output_of(nb, 'print(f"after the restart')
    assert "restored agent from quickstart@1 [before-restart]" in output_of(
        nb, "%load_session quickstart"
    )
    assert "is complete" in output_of(nb, 'await chat("next")\nawait chat("next")')
    history = output_of(nb, "%session_history quickstart")
    assert "before-restart" in history and "plan-done" in history
    # Switching to a team store: the history comes along, new saves go to the new store only.
    assert "copied: ['quickstart@1', 'quickstart@2']" in output_of(nb, "copy_sessions(store, team")
    team_history = output_of(nb, '%config SessionMagics.store = "team.db"')
    assert "before-restart" in team_history and "plan-done" in team_history
    stores = output_of(nb, 'print("team store:')
    assert "team store:     ['quickstart@1', 'quickstart@2', 'quickstart@3']" in stores
    assert "personal store: ['quickstart@1', 'quickstart@2']" in stores


def check_history(nb: Any) -> None:
    assert "trip@~1 -> trip@2" in output_of(nb, '"trip@~1"')
    assert "restored agent from trip@2 [planned]" in output_of(nb, "%load_session trip@planned\n")
    assert "dry run: nothing was changed" in output_of(nb, "--dry-run")
    history = output_of(nb, 'history = nbs.views.history(store, "trip")')
    assert re.search(r"trip@4\s+cancelled\s+2", history)  # the new branch starts at trip@2
    assert "restored agent from trip-b@1" in output_of(nb, 'store.fork("trip@planned", "trip-b")')
    assert "abandoned → done" in output_of(nb, '"trip@cancelled", "trip-b@finished"')
    assert "autosave on:" in output_of(nb, "%autosave_session trip-auto")
    kept = re.search(r"(\d+) messages", output_of(nb, "# changes nothing"))
    assert kept
    assert "0 messages" in output_of(nb, "await agent.memory.clear()")
    undo = output_of(nb, "%load_session trip-auto@~1")
    assert re.search(r"restored agent from trip-auto@\d+ \[cell-\d+\]", undo)
    assert f"{kept[1]} messages" in undo  # the cleared memory is back
    assert "autosave off" in output_of(nb, "%autosave_session --off")
    assert "would remove" in output_of(nb, "store.prune(")


def check_pandas(nb: Any) -> None:
    assert "the agent died mid-call" in output_of(nb, "please crash now")
    calls = output_of(nb, 'calls[["tool_name", "input", "status", "output"]]')
    assert "error" in calls and "missing" in calls
    dangling = output_of(nb, 'dangling = calls[calls["dangling"]]')
    assert "crash" in dangling and "missing" in dangling
    counts = output_of(nb, '"explore@~1", "explore@crashed"')
    assert "explore@~1: 0 dangling tool call(s)" in counts
    assert "explore@crashed: 1 dangling tool call(s)" in counts
    assert "67% of the subtasks are done" in output_of(nb, "progress = ")
    assert "sales figures" in output_of(nb, "%session_search")
    plots = [c for c in nb.cells if "image/png" in mime_types(c)]
    assert len(plots) == 2
    assert output_of(nb, 'frame.loc[0, "text"]').strip() == "hello"  # the agent is untouched


def check_panel(nb: Any) -> None:
    widget = "application/vnd.jupyter.widget-view+json"
    assert widget in mime_types(cell_with(nb, "%session_panel"))
    assert widget in mime_types(cell_with(nb, "panel = SessionPanel(store)"))
    assert "selected checkpoint: panel-demo@2" in output_of(nb, "panel.selected")
    assert "saved panel-demo@3 [from-code]" in output_of(nb, "panel._save.click()")
    restore = output_of(nb, "panel._restore.click()")
    assert "Restore panel-demo@1 into agent?" in restore
    assert "restored agent from panel-demo@1" in restore
    assert "forked panel-demo@1 into panel-demo-b@1" in output_of(nb, "panel._fork.click()")


def check_interop(nb: Any) -> None:
    assert "['alice_support.json', 'bob_support.json']" in output_of(nb, "def agentscope_json_save")
    assert "alice_support" in output_of(nb, "folder = nbs.open_store(as_folder)")
    history = output_of(nb, 'folder.history("support", user_id="alice")')
    assert "alice/support@1" in history and "alice/support@2" in history
    assert "holds: ['friday']" in history
    assert "unchanged: [('alice', 4), ('bob', 4)]" in output_of(nb, "json_array_length")
    assert "alice@1 → alice@2: friday_of_user.memory: +4 messages." in output_of(
        nb, 'nbs.diff(session.store, "alice@1", "alice@2")'
    )
    files = output_of(nb, 'json_session = nbs.JSONSession(save_dir=work / "app_sessions")')
    assert "['.nb_sessions', 'alice.json', 'bob.json']" in files
    assert "alice.json modules: ['friday_of_user']" in files
    bob = output_of(nb, "await main(nbs.SQLiteSession(example_db)")
    # Bob's row in as_session had his first question: the app continued from it.
    assert "weather in Beijing" in bob and "what is 100 - 1" in bob


def check_agentscope2(nb: Any) -> None:
    assert "saved paris@1 [asked]: agent (" in output_of(nb, "%save_session paris --label asked")
    assert "AgentScope reads it: True" in output_of(nb, "saved = store.get_state")
    restored = output_of(nb, "%load_session paris -s $db")
    assert "restored agent from paris@1 [asked]" in restored
    assert "after:  PermissionMode.ACCEPT_EDITS 2 messages" in restored
    assert "the permission engine sees the restored rules: True" in restored
    # the restored allow rule let the second tool call run without asking
    assert "tool results: [('get_weather', 'success'), ('get_weather', 'success')]" in output_of(
        nb, 'await agent.reply(UserMsg("user", "And in Oslo?"))'
    )
    assert "autosave off: 1 checkpoint(s)" in output_of(nb, "%autosave_session --off")
    assert "4 messages; task: pending" in output_of(nb, "%autosave_session --off")
    refused = output_of(nb, 'store.save("old-1x"')
    assert "pydantic alone: 0 messages" in refused and "nbs.migrate" in refused
    assert "the app reads the file: ['Pack for Paris', 'Write postcard']" in output_of(nb, "app_dir = work")


def check_encryption(nb: Any) -> None:
    assert "saved support@1 [reported]: agent" in output_of(nb, "%save_session support --label reported")
    on_disk = output_of(nb, "raw = b\"\".join(")
    for secret in ("'ACC-99812'", "'4471'", "'freeze the card'"):
        assert re.search(re.escape(secret) + r"\s+on disk: False", on_disk), secret
    assert "[('support', 1, 'reported'," in on_disk  # ids, labels and times stay readable
    restored = output_of(nb, "after the restart")
    assert "after the restart: 0 messages" in restored and "restored: 8 messages" in restored
    refused = output_of(nb, 'for key in ("a guess", None)')
    assert "WrongKeyError: the key given does not open" in refused
    assert "KeyRequiredError:" in refused and "unchanged: True" in refused
    assert "SessionMagics.key_file" in output_of(nb, '%config SessionMagics.key_file = ""')
    assert "freeze the card" in output_of(nb, "%session_search freeze")
    rekeyed = output_of(nb, "store.rekey(new_key_file)")
    assert "the old key no longer opens it" in rekeyed and "bank-called" in rekeyed
    copies = output_of(nb, "nbs.copy_sessions(store, other)")
    assert "seq_map={1: 1, 2: 2}" in copies
    assert "PlaintextRefusedError:" in copies and "plain store sessions: []" in copies
    shared = output_of(nb, "nbs.write_bundle(store")
    assert "ACC-99812 in the bundle: False" in shared and "['support@1', 'support@2']" in shared


CHECKS: dict[str, Callable[[Any], None]] = {
    "01_quickstart.ipynb": check_quickstart,
    "02_history_and_time_travel.ipynb": check_history,
    "03_exploring_with_pandas.ipynb": check_pandas,
    "04_widget_panel.ipynb": check_panel,
    "05_agentscope_interop.ipynb": check_interop,
    "06_agentscope_2x.ipynb": check_agentscope2,
    "07_encryption_at_rest.ipynb": check_encryption,
}


# -- tests ---------------------------------------------------------------------------


def test_the_tutorials_are_all_here() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


def _folder_state() -> dict[str, tuple[int, int]]:
    """Size and mtime of the files in notebooks/ (the notebooks and their store)."""
    return {
        str(p.relative_to(NOTEBOOKS)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in NOTEBOOKS.iterdir()
        if p.is_file()
    }


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_a_real_kernel(name: str, tmp_path: Path) -> None:
    untouched = _folder_state()
    nb, took = execute(name, tmp_path)
    assert not [c for c in nb.cells if any(o.output_type == "error" for o in c.get("outputs", []))]
    CHECKS[name](nb)
    assert took < TIME_LIMIT, f"{name} took {took:.1f} s"
    # 05, 06 and 07 work in a temporary folder of their own, removed at their end
    assert (tmp_path / "nb_sessions.db").exists() or name in (
        "05_agentscope_interop.ipynb", "06_agentscope_2x.ipynb", "07_encryption_at_rest.ipynb"
    )
    assert _folder_state() == untouched  # the committed notebooks and their store are as they were


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_holds_one_clean_run(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert not [c for c in code if any(o.output_type == "error" for o in c.outputs)]
    assert not [c for c in code if "Traceback" in text_of(c)]
    CHECKS[name](nb)
