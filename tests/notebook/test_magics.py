"""The magics through a real InteractiveShell, run from inside a running event loop (as in a kernel)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import nb_sessions as nbs
from nb_sessions.diff import SessionDiff
from nb_sessions.notebook.magics import SessionMagics
from nb_sessions.notebook.widgets import SessionPanel

from .conftest import make_shell, ok, run


def usage_error(shell: InteractiveShell, code: str) -> str:
    """Run a cell that must fail with exactly UsageError; return its message."""
    result = run(shell, code)
    assert not result.success
    err = result.error_in_exec or result.error_before_exec
    assert type(err) is UsageError, f"expected UsageError, got {type(err).__name__}: {err}"
    return str(err)


def magics(shell: InteractiveShell) -> SessionMagics:
    """The registered SessionMagics instance."""
    found = shell.magics_manager.registry["SessionMagics"]
    assert isinstance(found, SessionMagics)
    return found


def store(shell: InteractiveShell, path: str = "nb_sessions.db") -> nbs.BaseStore:
    """A separate handle on a store in the shell's working folder."""
    return nbs.open_store(Path.cwd() / path)


# -- loading, help -------------------------------------------------------------------


async def test_magics_run_inside_a_running_loop(shell: InteractiveShell) -> None:
    asyncio.get_running_loop()  # the premise: a loop is running, as in ipykernel
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        asyncio.run(coro)
    coro.close()
    cp = ok(shell, "%save_session alice")
    assert isinstance(cp, nbs.Checkpoint)
    assert cp.ref == "alice@1"


async def test_every_magic_is_registered_with_argparse_help(shell: InteractiveShell) -> None:
    line = shell.magics_manager.magics["line"]
    for name in (
        "save_session",
        "load_session",
        "sessions",
        "session_history",
        "session_diff",
        "session_panel",
        "session_search",
        "autosave_session",
    ):
        assert name in line
        doc = line[name].__doc__
        assert f"%{name}" in doc, name
        assert "--store" in doc, name
    assert "--label" in line["save_session"].__doc__
    assert "--no-strict" in line["load_session"].__doc__
    assert "--dry-run" in line["load_session"].__doc__
    assert "--off" in line["autosave_session"].__doc__


async def test_bad_option_is_a_usage_error(shell: InteractiveShell) -> None:
    usage_error(shell, "%save_session alice --bogus")
    usage_error(shell, "%load_session")


# -- save ----------------------------------------------------------------------------


async def test_save_prints_one_line_and_returns_the_checkpoint(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    ok(shell, "cp = %save_session alice --label first")
    cp = shell.user_ns["cp"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].startswith("saved alice@1 [first]: box (")
    assert " s to " in out[0]
    assert out[0].endswith("nb_sessions.db")
    assert cp.label == "first"
    assert cp.modules == ("box",)
    html = cp._repr_html_()
    assert html.startswith("<table")
    assert "alice@1" in html
    assert store(shell).get_state("alice@first") == {"box": {"value": [1, 2]}}


async def test_save_records_notebook_path_and_cell_number(shell: InteractiveShell) -> None:
    ok(shell, "__session__ = '/home/me/work/agents.ipynb'")
    result = run(shell, "cp = %save_session alice")
    assert result.success
    meta = shell.user_ns["cp"].metadata
    assert meta["notebook"] == "/home/me/work/agents.ipynb"
    assert meta["cell"] == result.execution_count
    assert meta["saved_by"] == "%save_session"


async def test_save_notebook_path_from_environment(
    shell: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/srv/nb/demo.ipynb")
    cp = ok(shell, "%save_session alice")
    assert cp.metadata["notebook"] == "/srv/nb/demo.ipynb"


async def test_save_without_names_takes_public_stateful_objects_only(
    shell: InteractiveShell,
) -> None:
    ok(
        shell,
        "import json\nfrom nb_sessions.state import StateModule\n"
        "_hidden = Box('secret')\nother = Box({'a': 1})\nnumber = 3",
    )
    cp = ok(shell, "%save_session alice")
    assert cp.modules == ("box", "other")
    assert store(shell).get_state("alice") == {
        "box": {"value": [1, 2]},
        "other": {"value": {"a": 1}},
    }


async def test_save_named_objects_only(shell: InteractiveShell) -> None:
    ok(shell, "other = Box('x')")
    cp = ok(shell, "%save_session alice other")
    assert cp.modules == ("other",)


async def test_save_mistakes_are_usage_errors(shell: InteractiveShell) -> None:
    msg = usage_error(shell, "%save_session alice nothere")
    assert "'nothere'" in msg
    assert "no variable" in msg
    msg = usage_error(shell, "%save_session alice@3")
    assert "not a checkpoint" in msg
    msg = usage_error(shell, "%save_session ../evil")
    assert "invalid session id '../evil'" in msg
    assert "contains '/'" in msg
    ok(shell, "n = 5")
    msg = usage_error(shell, "%save_session alice n")
    assert "cannot save" in msg
    assert "state_dict" in msg
    ok(shell, "%save_session alice --label dup")
    msg = usage_error(shell, "%save_session alice --label dup")
    assert "already" in msg


async def test_save_with_nothing_stateful(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sh = make_shell(tmp_path, monkeypatch)
    try:
        ok(sh, "%load_ext nb_sessions")
        msg = usage_error(sh, "%save_session alice")
        assert "no agent or other Stateful object" in msg
        assert not (tmp_path / "nb_sessions.db").exists()
    finally:
        InteractiveShell.clear_instance()


# -- load ----------------------------------------------------------------------------


async def test_save_mutate_load_restores(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "box.value.append(3)\nsame = box")
    assert shell.user_ns["box"].value == [1, 2, 3]
    capsys.readouterr()
    assert ok(shell, "%load_session alice") is None
    out = capsys.readouterr().out
    assert "restored box from alice@1" in out
    assert shell.user_ns["box"].value == [1, 2]
    assert shell.user_ns["same"] is shell.user_ns["box"], "restored in place, not replaced"


async def test_load_by_label_and_number(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice --label start")
    ok(shell, "box.value = 'second'")
    ok(shell, "%save_session alice")
    ok(shell, "box.value = 'third'")
    ok(shell, "%load_session alice@start")
    assert shell.user_ns["box"].value == [1, 2]
    ok(shell, "%load_session alice@2")
    assert shell.user_ns["box"].value == "second"
    ok(shell, "%load_session alice@~1")
    assert shell.user_ns["box"].value == [1, 2]


async def test_load_mistakes_are_usage_errors(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice")
    msg = usage_error(shell, "%load_session bob")
    assert "no session 'bob'" in msg
    assert "%sessions" in msg
    msg = usage_error(shell, "%load_session alice@9")
    assert "no checkpoint" in msg
    assert "%session_history alice" in msg
    msg = usage_error(shell, "%load_session alice@")
    assert "ends with '@'" in msg
    msg = usage_error(shell, "%load_session alice nothere")
    assert "'nothere'" in msg
    assert "no variable" in msg


async def test_load_strict_mismatch_is_a_usage_error_and_changes_nothing(
    shell: InteractiveShell,
) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "box = Box('new', child=Box('kid'))")
    msg = usage_error(shell, "%load_session alice")
    assert "box.child" in msg
    assert "missing" in msg
    assert "--no-strict" in msg
    assert shell.user_ns["box"].value == "new"
    ok(shell, "%load_session alice --no-strict")
    assert shell.user_ns["box"].value == [1, 2]
    assert shell.user_ns["box"].child.value == "kid"


async def test_config_strict_false_applies(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "box = Box('new', child=Box('kid'))")
    ok(shell, "%config SessionMagics.strict = False")
    assert magics(shell).strict is False
    usage_error(shell, "%load_session alice --strict")
    assert shell.user_ns["box"].value == "new"
    ok(shell, "%load_session alice")
    assert shell.user_ns["box"].value == [1, 2]


async def test_load_names_modules_it_cannot_match(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "other = Box('o')")
    ok(shell, "%save_session alice")
    ok(shell, "del other\nbox.value = None")
    capsys.readouterr()
    ok(shell, "%load_session alice")
    out = capsys.readouterr().out
    assert "restored box from alice@1" in out
    assert "not restored: other" in out
    assert shell.user_ns["box"].value == [1, 2]


async def test_load_named_object_without_state(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "extra = Box('e')\nbox.value = 0")
    msg = usage_error(shell, "%load_session alice box extra")
    assert "no state for 'extra'" in msg
    assert "--no-strict" in msg
    assert shell.user_ns["box"].value == 0
    capsys.readouterr()
    ok(shell, "%load_session alice box extra --no-strict")
    out = capsys.readouterr().out
    assert "not restored: extra" in out
    assert shell.user_ns["box"].value == [1, 2]
    assert shell.user_ns["extra"].value == "e"


async def test_load_with_no_matching_object(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "del box")
    msg = usage_error(shell, "%load_session alice")
    assert "none of its modules (box)" in msg


async def test_dry_run_changes_nothing_and_shows_the_changes(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "box.value = 'changed'")
    capsys.readouterr()
    result = ok(shell, "%load_session alice --dry-run")
    out = capsys.readouterr().out
    assert isinstance(result, SessionDiff)
    assert not result.empty
    assert "nothing was changed" in out
    assert "live → alice@1" in out
    assert list(result.keys["path"]) == ["box.value"]
    assert shell.user_ns["box"].value == "changed"
    assert len(store(shell).history("alice")) == 1


async def test_dry_run_reports_a_load_that_would_fail(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "box = Box('new', child=Box('kid'))")
    capsys.readouterr()
    ok(shell, "%load_session alice -n")
    out = capsys.readouterr().out
    assert "the load would fail" in out
    assert "box.child" in out
    assert shell.user_ns["box"].value == "new"


async def test_dry_run_when_nothing_differs(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%save_session alice")
    capsys.readouterr()
    result = ok(shell, "%load_session alice --dry-run")
    assert result.empty
    assert "already match" in capsys.readouterr().out


# -- store, config, pyproject ----------------------------------------------------------


async def test_store_option_on_every_magic(shell: InteractiveShell, tmp_path: Path) -> None:
    ok(shell, "%save_session alice --store other.db")
    ok(shell, "%save_session bob --store json_store")
    assert not (tmp_path / "nb_sessions.db").exists()
    assert [c.seq for c in nbs.open_store(tmp_path / "other.db").history("alice")] == [1]
    assert isinstance(nbs.open_store(tmp_path / "json_store"), nbs.JSONStore)
    assert (tmp_path / "json_store" / "bob.json").exists()
    ok(shell, "box.value = 'x'")
    ok(shell, "%load_session bob --store json_store")
    assert shell.user_ns["box"].value == [1, 2]
    frame = ok(shell, "%sessions --store other.db")
    assert list(frame["session"]) == ["alice"]
    frame = ok(shell, "%session_history alice -s other.db")
    assert list(frame["seq"]) == [1]
    assert isinstance(ok(shell, "%session_diff alice --live --store other.db"), SessionDiff)
    panel = ok(shell, "%session_panel --store other.db")
    assert panel.store.location == str(tmp_path / "other.db")
    usage_error(shell, "%load_session alice --store json_store")
    for magic in ("load_session alice", "session_history alice", "session_diff alice@1"):
        msg = usage_error(shell, f"%{magic} --store typo.db")
        assert "there is no store at" in msg
    assert not (tmp_path / "typo.db").exists()


async def test_config_store(shell: InteractiveShell, tmp_path: Path) -> None:
    ok(shell, "%config SessionMagics.store = 'configured.db'")
    assert ok(shell, "%config SessionMagics.store") == "configured.db"
    ok(shell, "%save_session alice")
    assert (tmp_path / "configured.db").exists()
    assert not (tmp_path / "nb_sessions.db").exists()


async def test_config_store_takes_a_postgresql_url(shell: InteractiveShell, pg_url: str) -> None:
    import nb_sessions as nbs

    ok(shell, f"%config SessionMagics.store = {pg_url!r}")
    ok(shell, "%save_session alice")
    assert [c.seq for c in nbs.open_store(pg_url).history("alice")] == [1]
    ok(shell, "%load_session alice")


async def test_autosave_label_prefix_is_validated(shell: InteractiveShell) -> None:
    m = magics(shell)
    ok(shell, "%config SessionMagics.autosave_label_prefix = 'step-'")
    assert m.autosave_label_prefix == "step-"
    run(shell, "%config SessionMagics.autosave_label_prefix = ''")
    assert m.autosave_label_prefix == "step-", "an empty prefix would make all-digit labels"


async def test_pyproject_settings_are_read_at_load_ext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.nb_sessions]\nstore = "data/agents.db"\nstrict = false\n'
        'autosave-label-prefix = "run-"\n',
        encoding="utf-8",
    )
    sh = make_shell(tmp_path, monkeypatch)
    try:
        ok(sh, "%load_ext nb_sessions")
        m = magics(sh)
        assert m.store == str(tmp_path / "data" / "agents.db")
        assert m.strict is False
        assert m.autosave_label_prefix == "run-"
        ok(sh, "from tests.conftest import Box\nbox = Box(1)")
        ok(sh, "%save_session alice")
        assert (tmp_path / "data" / "agents.db").exists()
        ok(sh, "%config SessionMagics.strict = True")  # %config after load wins
        assert m.strict is True
    finally:
        InteractiveShell.clear_instance()


async def test_explicit_ipython_config_wins_over_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.nb_sessions]\nstore = "from_file.db"\nstrict = false\ncolour = "blue"\n',
        encoding="utf-8",
    )
    cfg = Config()
    cfg.SessionMagics.store = "from_config.db"
    sh = make_shell(tmp_path, monkeypatch, cfg)
    try:
        ok(sh, "%load_ext nb_sessions")
        m = magics(sh)
        assert m.store == "from_config.db"
        assert m.strict is False  # not set by config: the file applies
        assert "unknown setting [tool.nb_sessions] 'colour'" in capsys.readouterr().err
    finally:
        InteractiveShell.clear_instance()


async def test_config_before_load_ext_wins_over_pyproject(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.nb_sessions]\nstore = "file.db"\n', encoding="utf-8"
    )
    sh = make_shell(tmp_path, monkeypatch)
    try:
        ok(sh, "%config SessionMagics.store = 'early.db'")
        ok(sh, "%load_ext nb_sessions")
        assert ok(sh, "%config SessionMagics.store") == "early.db"
    finally:
        InteractiveShell.clear_instance()


async def test_broken_pyproject_does_not_break_load_ext(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.nb_sessions\nstore = 1", encoding="utf-8")
    sh = make_shell(tmp_path, monkeypatch)
    try:
        ok(sh, "%load_ext nb_sessions")
        assert magics(sh).store == nbs.DEFAULT_STORE
        assert "cannot read it" in capsys.readouterr().err
    finally:
        InteractiveShell.clear_instance()


# -- listing and diffs ---------------------------------------------------------------


async def test_sessions_history_and_diff(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert ok(shell, "%sessions") is None
    assert "no store at" in capsys.readouterr().out
    ok(shell, "%save_session alice --label one")
    ok(shell, "box.value = [1, 2, 3]")
    ok(shell, "%save_session alice")
    ok(shell, "%save_session bob")
    frame = ok(shell, "%sessions")
    assert sorted(frame["session"]) == ["alice", "bob"]
    hist = ok(shell, "%session_history alice")
    assert list(hist["seq"]) == [1, 2]
    assert hist["label"].iloc[0] == "one"
    usage_error(shell, "%session_history nobody")
    d = ok(shell, "%session_diff alice@1 alice@2")
    assert isinstance(d, SessionDiff)
    assert d.label_a == "alice@1"
    assert d.label_b == "alice@2"
    assert list(d.keys["path"]) == ["box.value"]
    d = ok(shell, "%session_diff alice@2")  # against its parent
    assert d.label_a == "alice@1"
    ok(shell, "box.value = 'live'")
    d = ok(shell, "%session_diff alice@one --live")
    assert d.label_b == "live"
    assert d.keys["after"].iloc[0] == '"live"'
    usage_error(shell, "%session_diff alice@1 alice@2 --live")
    usage_error(shell, "%session_diff alice@7")


async def test_session_panel_magic_returns_a_panel(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice")
    panel = ok(shell, "%session_panel")
    assert isinstance(panel, SessionPanel)
    assert panel.namespace is shell.user_ns
    assert panel.session == "alice"
    assert panel.selected == "alice@1"


# -- autosave ------------------------------------------------------------------------


async def test_autosave_one_checkpoint_per_changing_cell(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%autosave_session alice")
    assert "autosave on" in capsys.readouterr().out
    hist = store(shell).history("alice")
    assert [c.label for c in hist] == [f"cell-{hist[0].metadata['cell']}"], (
        "baseline of the enabling cell"
    )
    r1 = run(shell, "box.value.append(3)")
    run(shell, "x = 1")  # no state change
    run(shell, "box.value == [1, 2, 3]")  # no state change
    r2 = run(shell, "box.value = 'b'")
    run(shell, "box.value = 'b'")  # same value again: no change
    labels = [c.label for c in store(shell).history("alice")]
    assert labels[1:] == [f"cell-{r1.execution_count}", f"cell-{r2.execution_count}"]
    assert store(shell).get_state(f"alice@cell-{r1.execution_count}") == {
        "box": {"value": [1, 2, 3]}
    }
    meta = store(shell).checkpoint("alice").metadata
    assert meta["saved_by"] == "%autosave_session"
    assert meta["cell"] == r2.execution_count
    ok(shell, "%autosave_session --off")
    run(shell, "box.value = 'after off'")
    assert len(store(shell).history("alice")) == 3


async def test_autosave_skips_its_own_cell_when_nothing_changed(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "%autosave_session alice")
    assert len(store(shell).history("alice")) == 1
    ok(shell, "y = 2")
    assert len(store(shell).history("alice")) == 1
    r = run(shell, "box.value = 9")
    assert [c.label for c in store(shell).history("alice")] == [None, f"cell-{r.execution_count}"]


async def test_autosave_undo_a_cell(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice")
    ok(shell, "%autosave_session alice box")
    r1 = run(shell, "box.value = 'good'")
    run(shell, "box.value = 'bad'")
    ok(shell, f"%load_session alice@cell-{r1.execution_count}")
    assert shell.user_ns["box"].value == "good"
    latest = store(shell).checkpoint("alice")
    assert latest.parent is not None
    assert store(shell).history("alice")[latest.parent - 1].label == f"cell-{r1.execution_count}"


async def test_autosave_picks_a_unique_label(shell: InteractiveShell) -> None:
    count = shell.execution_count
    ok(shell, f"%save_session alice --label cell-{count + 2}")
    ok(shell, "%autosave_session alice")
    r = run(shell, "box.value = 'new'")
    assert r.execution_count == count + 2
    assert store(shell).checkpoint("alice").label == f"cell-{count + 2}-2"


async def test_autosave_failure_warns_and_never_breaks_the_cell(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(shell, "%autosave_session alice")
    capsys.readouterr()
    result = run(shell, "import datetime\nbox.value = datetime.date(2024, 1, 1)\nafter = 1")
    assert result.success
    assert shell.user_ns["after"] == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("nb_sessions autosave: could not save alice after cell ")
    assert "date" in err[0]
    r = run(shell, "box.value = 'fine again'")
    assert r.success
    assert store(shell).checkpoint("alice").label == f"cell-{r.execution_count}"


async def test_autosave_status_and_mistakes(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    ok(shell, "%autosave_session")
    assert "autosave is off" in capsys.readouterr().out
    usage_error(shell, "%autosave_session alice@2")
    usage_error(shell, "%autosave_session alice nothere")
    ok(shell, "%autosave_session --off")
    assert "was not on" in capsys.readouterr().out
    ok(shell, "%autosave_session alice box")
    ok(shell, "%autosave_session")
    assert "autosave on: alice" in capsys.readouterr().out


async def test_manual_save_does_not_make_autosave_duplicate(shell: InteractiveShell) -> None:
    ok(shell, "%autosave_session alice")
    run(shell, "box.value = 'x'\n%save_session alice --label manual")
    assert [c.label for c in store(shell).history("alice")][1:] == ["manual"]


async def test_manual_save_of_fewer_objects_does_not_silence_autosave(
    shell: InteractiveShell,
) -> None:
    ok(shell, "other = Box('o')")
    ok(shell, "%autosave_session alice")
    r = run(shell, "box.value = 'x'\nother.value = 'y'\n%save_session alice box --label partial")
    labels = [c.label for c in store(shell).history("alice")]
    assert labels[1:] == ["partial", f"cell-{r.execution_count}"]
    assert store(shell).get_state("alice")["other"] == {"value": "y"}


async def test_unload_ext_unregisters_the_hook(shell: InteractiveShell) -> None:
    m = magics(shell)
    ok(shell, "%autosave_session alice")
    assert m._after_cell in shell.events.callbacks["post_run_cell"]
    ok(shell, "%unload_ext nb_sessions")
    assert m._after_cell not in shell.events.callbacks["post_run_cell"]
    before = len(store(shell).history("alice"))
    run(shell, "box.value = 'unloaded'")
    assert len(store(shell).history("alice")) == before
    ok(shell, "%load_ext nb_sessions")  # loads again cleanly


# -- with real agents ----------------------------------------------------------------


async def test_agent_round_trip_and_dry_run(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(
        shell,
        "from nb_sessions.agent import Msg, ScriptedAgent\nfrom nb_sessions._loop import run_sync\n"
        "agent = ScriptedAgent('Friday', seed=7)\n"
        "run_sync(agent(Msg('user', 'hello', 'user')))",
    )
    cp = ok(shell, "%save_session alice agent")
    n_before = len(shell.user_ns["agent"].memory.content)
    ok(shell, "run_sync(agent(Msg('user', 'plan to buy milk, cook dinner, wash up', 'user')))")
    n_after = len(shell.user_ns["agent"].memory.content)
    assert n_after > n_before
    capsys.readouterr()
    d = ok(shell, "%load_session alice --dry-run")
    out = capsys.readouterr().out
    assert f"-{n_after - n_before} messages" in out
    assert f"agent.memory: {n_after} → {n_before} messages" in out
    assert "plan" in out
    assert "removed" in out
    assert (d.messages["change"] == "removed").sum() == n_after - n_before
    assert len(shell.user_ns["agent"].memory.content) == n_after
    ok(shell, f"%load_session {cp.ref}")
    agent = shell.user_ns["agent"]
    assert len(agent.memory.content) == n_before
    assert agent.plan_notebook.current_plan is None
    assert store(shell).get_state(cp.ref)["agent"] == agent.state_dict()


async def test_agent_autosave_each_turn(shell: InteractiveShell) -> None:
    ok(
        shell,
        "from nb_sessions.agent import Msg, ScriptedAgent\nfrom nb_sessions._loop import run_sync\n"
        "agent = ScriptedAgent('Friday', seed=7)\ndel box",
    )
    ok(shell, "%autosave_session alice agent")
    turns = [
        run(shell, f"run_sync(agent(Msg('user', {t!r}, 'user')))") for t in ("hello", "what is 6*7")
    ]
    run(shell, "agent.name")
    hist = store(shell).history("alice")
    assert [c.label for c in hist] == [c.label for c in hist[:1]] + [
        f"cell-{t.execution_count}" for t in turns
    ]
    ok(shell, f"%load_session alice@cell-{turns[0].execution_count}")
    texts = [m.get_text_content() for m, _ in shell.user_ns["agent"].memory.content]
    assert not any("42" in (t or "") for t in texts)


async def test_session_search_finds_messages(shell: InteractiveShell) -> None:
    ok(shell, "from nb_sessions.agent import InMemoryMemory, Msg")
    ok(shell, "memory = InMemoryMemory()")
    ok(shell, "memory.content.append((Msg('user', 'where is the 季度报告 draft?', 'user', id='q1'), []))")
    ok(shell, "%save_session alice memory")
    df = ok(shell, "%session_search 季度报告")
    assert df["message_id"].tolist() == ["q1"] and df["checkpoints"].tolist() == ["1"]
    assert ok(shell, "%session_search nothing like this --session alice").empty
    assert "no session 'ghost'" in usage_error(shell, "%session_search draft --session ghost")


async def test_load_session_repair_closes_dangling_tool_calls(shell: InteractiveShell) -> None:
    ok(shell, "from nb_sessions.agent import InMemoryMemory, Msg")
    ok(shell, "memory = InMemoryMemory()")
    ok(
        shell,
        "memory.content.append((Msg('Friday', [{'type': 'tool_use', 'id': 'call-1', 'name': 'crash', 'input': {}}],"
        " 'assistant', id='a1'), []))",
    )
    ok(shell, "%save_session broken memory")
    ok(shell, "%load_session broken memory --repair --dry-run")
    assert ok(shell, "len(memory.content)") == 1  # the dry run changed nothing
    ok(shell, "%load_session broken memory --repair")
    content = ok(shell, "[m.to_dict() for m, _ in memory.content]")
    assert len(content) == 2
    result = content[1]["content"][0]
    assert (result["type"], result["id"]) == ("tool_result", "call-1")
    assert len(store(shell).get_state("broken")["memory"]["content"]) == 1  # the checkpoint is unchanged


# -- encryption at rest -----------------------------------------------------------


def test_a_key_file_setting_encrypts_what_the_magics_save(shell: InteractiveShell, tmp_path: Path) -> None:
    import base64
    import os

    (tmp_path / "k.key").write_text(base64.b64encode(os.urandom(32)).decode())
    ok(shell, '%config SessionMagics.key_file = "k.key"')
    ok(shell, 'box.value = ["a very private remark"]')
    ok(shell, "%save_session alice --label first")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("nb_sessions.db*"))
    assert raw and b"very private" not in raw
    with pytest.raises(nbs.KeyRequiredError):
        nbs.open_store(tmp_path / "nb_sessions.db").history("alice")
    assert nbs.open_store(tmp_path / "nb_sessions.db", key=tmp_path / "k.key").get_state("alice") == {
        "box": {"value": ["a very private remark"]}
    }
    ok(shell, "box.value = []")
    ok(shell, "%load_session alice")
    assert ok(shell, "box.value") == ["a very private remark"]
    # Another key file: a named error that changes nothing, shown as one line.
    (tmp_path / "other.key").write_text(base64.b64encode(os.urandom(32)).decode())
    ok(shell, '%config SessionMagics.key_file = "other.key"')
    before = {p.name: p.read_bytes() for p in tmp_path.glob("nb_sessions.db*")}
    wrong = usage_error(shell, "%save_session alice")
    assert "the key given does not open" in wrong and "nothing was changed" in wrong
    assert "SessionMagics.key_file" in wrong
    ok(shell, '%config SessionMagics.key_file = ""')  # no key: the encrypted store is refused by name
    missing = usage_error(shell, "%session_history alice")
    assert "is encrypted and no key was given" in missing and "SessionMagics.key_file" in missing
    after = {p.name: p.read_bytes() for p in tmp_path.glob("nb_sessions.db*") if p.name in before}
    assert after.keys() == before.keys() and after["nb_sessions.db"] == before["nb_sessions.db"]


async def test_key_file_in_pyproject_is_resolved_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "team.key").write_text("a passphrase only the team knows")
    (tmp_path / "pyproject.toml").write_text('[tool.nb_sessions]\nkey-file = "keys/team.key"\n', encoding="utf-8")
    sh = make_shell(tmp_path, monkeypatch)
    try:
        ok(sh, "%load_ext nb_sessions")
        assert magics(sh).key_file == str(tmp_path / "keys" / "team.key")
        ok(sh, "from tests.conftest import Box\nbox = Box(1)")
        ok(sh, "%save_session alice")
        assert nbs.open_store(tmp_path / "nb_sessions.db", key="a passphrase only the team knows").encrypted
    finally:
        InteractiveShell.clear_instance()
