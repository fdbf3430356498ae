"""Magics as a first-time user types them: with comments, without arguments, with a typo."""

from __future__ import annotations

from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

from tests.notebook.conftest import ok, run


def test_magic_lines_take_comments_and_name_the_missing_checkpoint(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice box   # the first one")
    result = run(shell, "%session_diff alice@1 alice@2")
    assert not result.success
    assert "cannot diff 'alice@1' with 'alice@2'" in str(result.error_in_exec)


def test_save_session_without_arguments_asks_for_the_session_only(shell: InteractiveShell) -> None:
    result = run(shell, "%save_session")
    message = str(result.error_in_exec)
    assert "needs a session name" in message
    assert "required" not in message


def test_session_stats_shows_where_the_space_goes(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice box")
    ok(shell, "box.value = [1, 2, 3]")
    ok(shell, "%save_session alice box")
    frame = ok(shell, "%session_stats")
    assert list(frame["session"]) == ["alice"] and int(frame["checkpoints"][0]) == 2
    per_cp = ok(shell, "%session_stats --by checkpoints")
    assert list(per_cp["checkpoint"]) == ["alice@1", "alice@2"]


def test_the_panel_follows_the_store_after_each_cell(shell: InteractiveShell) -> None:
    ok(shell, "%save_session alice box")
    ok(shell, "%save_session alice box")
    panel = ok(shell, "panel = %session_panel\npanel")
    assert len(panel._checkpoints.options) == 2
    ok(shell, "box.value = [3]\n%save_session alice box")  # a later cell saves a third
    assert len(panel._checkpoints.options) == 3  # no Refresh click needed
    ok(shell, "%save_session bob box")
    assert [v for _, v in panel._session.options] == ["bob", "alice"]
    panel.close()
    ok(shell, "%save_session alice box")
    assert len(panel._checkpoints.options) == 3  # a closed panel stops following


def test_follow_refreshes_only_when_the_store_moved(tmp_path: Path) -> None:
    import nb_sessions as nbs
    from tests.conftest import Box

    store = nbs.open_store(tmp_path / "s.db")
    store.save("alice", box=Box(1))
    panel = nbs.SessionPanel(store, {"box": Box(1)}, follow=False)
    assert panel.follow() is False  # nothing changed since it was drawn
    nbs.open_store(tmp_path / "s.db").save("alice", box=Box(2))  # another writer
    assert panel.follow() is True
    assert len(panel._checkpoints.options) == 2
    assert panel.follow() is False
