"""The session panel driven by ``.click()`` and ``.value``, against a real SQLiteStore."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.agent import Msg, ScriptedAgent
from nb_sessions.notebook.html import esc, frame_html, status_html
from nb_sessions.notebook.widgets import (
    SessionPanel,
    checkpoint_label,
    checkpoint_options,
    confirm_text,
    session_options,
)
from tests.conftest import Box

XSS = ("<script>alert('x')</script>", "<img src=x onerror=alert(1)>")


@pytest.fixture
def store(tmp_path: Path) -> nbs.BaseStore:
    """An empty SQLite store."""
    return nbs.open_store(tmp_path / "panel.db")


@pytest.fixture
def ns() -> dict[str, Any]:
    """A namespace with one Box."""
    return {"box": Box([1, 2])}


def visible(widget: Any) -> bool:
    """Whether the widget is shown."""
    return bool(widget.layout.display != "none")


# -- pure helpers --------------------------------------------------------------------


def test_session_and_checkpoint_options() -> None:
    when = datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone.utc)
    info = nbs.SessionInfo("alice", "", 2, 2, when, when)
    one = nbs.SessionInfo("bob", "u1", 1, 1, when, when)
    assert session_options([info, one]) == [
        ("alice (2 checkpoints)", "alice"),
        ("u1/bob (1 checkpoint)", "u1/bob"),
    ]
    cps = [
        nbs.Checkpoint("alice", 1, when, ("agent",), 100),
        nbs.Checkpoint("alice", 2, when, ("agent", "notebook"), 2048, label="planned"),
    ]
    assert checkpoint_label(cps[1]) == "@2  [planned]  2024-05-01 10:00:00  agent, notebook  2.0 KB"
    assert [v for _, v in checkpoint_options(cps)] == [2, 1]
    assert "Restore alice@2 into agent?" in confirm_text("restore", "alice@2", ["agent"])
    assert "cannot be undone" in confirm_text("delete", "alice@2")


def test_html_helpers_escape_everything() -> None:
    import pandas as pd

    assert esc(XSS[0]) == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert esc(None) == ""
    assert esc(float("nan")) == ""
    assert esc("abcdef", limit=4) == "abc…"
    frame = pd.DataFrame({"text": list(XSS), "role": ["user", "<b>"]})
    out = frame_html(frame, ["role", "text", "missing"])
    assert "<script" not in out
    assert "<img" not in out
    assert "<b>" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    assert out.index(">role<") < out.index(">text<")
    assert "nothing here" in frame_html(frame.iloc[0:0], empty="nothing here")
    assert "showing the last 1 of 2 rows" in frame_html(frame, max_rows=1)
    status = status_html("<script>x</script>", "error")
    assert "<script>" not in status
    assert "nbs-status-error" in status


# -- the panel -----------------------------------------------------------------------


def test_children_have_stable_classes(store: nbs.BaseStore, ns: dict[str, Any]) -> None:
    panel = SessionPanel(store, ns)
    assert "nbs-panel" in panel._dom_classes
    for attr, css in [
        ("_session", "nbs-session"),
        ("_refresh", "nbs-refresh"),
        ("_checkpoints", "nbs-checkpoints"),
        ("_preview", "nbs-preview"),
        ("_diff", "nbs-diff"),
        ("_save_as", "nbs-save-as"),
        ("_label", "nbs-label"),
        ("_save", "nbs-save"),
        ("_restore", "nbs-restore"),
        ("_fork_name", "nbs-fork-name"),
        ("_fork", "nbs-fork"),
        ("_delete", "nbs-delete"),
        ("_confirm", "nbs-confirm"),
        ("_cancel", "nbs-cancel"),
        ("_progress", "nbs-progress"),
        ("_status", "nbs-status"),
    ]:
        assert css in getattr(panel, attr)._dom_classes, attr
    assert not visible(panel._confirm)
    assert not visible(panel._progress)


def test_empty_store_then_save(store: nbs.BaseStore, ns: dict[str, Any]) -> None:
    panel = SessionPanel(store, ns)
    assert panel._session.options == ()
    assert panel.selected is None
    assert "no checkpoint selected" in panel._preview.value
    assert not Path(store.location).exists(), "opening the panel creates no store"
    panel._save.click()
    assert "failed" in panel._status.value
    assert "session name" in panel._status.value
    panel._save_as.value = "alice"
    panel._label.value = "first"
    panel._save.click()
    assert "saved alice@1 [first]: box" in panel._status.value
    assert "nbs-status-ok" in panel._status.value
    assert panel._label.value == ""
    assert [c.label for c in store.history("alice")] == ["first"]
    assert store.checkpoint("alice").metadata["saved_by"] == "SessionPanel"
    assert panel.session == "alice"
    assert panel.selected == "alice@1"
    assert not visible(panel._progress)
    assert not any(b.disabled for b in (panel._save, panel._restore, panel._delete, panel._fork))


def test_browse_and_preview(store: nbs.BaseStore, ns: dict[str, Any]) -> None:
    store.save("alice", box=Box("one"))
    store.save("alice", label="two", box=Box("two"))
    store.save("bob", box=Box("b"))
    panel = SessionPanel(store, ns)
    assert {v for _, v in panel._session.options} == {"alice", "bob"}
    panel._session.value = "alice"
    assert [v for _, v in panel._checkpoints.options] == [2, 1]
    assert panel.selected == "alice@2"
    assert "alice@2" in panel._preview.value
    assert "[two]" in panel._preview.value
    assert panel._save_as.value == "alice"
    panel._checkpoints.value = 1
    assert "<b>alice@1</b>" in panel._preview.value
    assert "would change" in panel._diff.value
    assert "box.value" in panel._diff.value
    ns["box"].value = "one"
    panel._refresh.click()
    assert "already match alice@1" in panel._diff.value
    panel._session.value = "bob"
    assert panel.selected == "bob@1"
    assert panel._save_as.value == "bob"


def test_restore_needs_confirm(store: nbs.BaseStore, ns: dict[str, Any]) -> None:
    store.save("alice", box=ns["box"])
    ns["box"].value = "changed"
    panel = SessionPanel(store, ns)
    panel._restore.click()
    assert ns["box"].value == "changed", "the first click changes nothing"
    assert visible(panel._confirm)
    assert visible(panel._cancel)
    assert "Restore alice@1 into box?" in panel._status.value
    panel._confirm.click()
    assert ns["box"].value == [1, 2]
    assert "restored box from alice@1" in panel._status.value
    assert not visible(panel._confirm)
    assert "already match" in panel._diff.value
    panel._confirm.click()  # nothing pending any more
    assert "nothing to confirm" in panel._status.value
    assert ns["box"].value == [1, 2]


def test_cancel_and_selection_change_drop_the_pending_action(
    store: nbs.BaseStore, ns: dict[str, Any]
) -> None:
    store.save("alice", box=Box("one"))
    store.save("alice", box=Box("two"))
    panel = SessionPanel(store, ns)
    panel._restore.click()
    panel._cancel.click()
    assert not visible(panel._confirm)
    assert "cancelled" in panel._status.value
    panel._delete.click()
    panel._checkpoints.value = 1
    assert not visible(panel._confirm)
    panel._confirm.click()
    assert len(store.history("alice")) == 2
    assert ns["box"].value == [1, 2]


def test_delete_only_after_confirm(store: nbs.BaseStore, ns: dict[str, Any]) -> None:
    store.save("alice", box=Box("one"))
    store.save("alice", box=Box("two"))
    panel = SessionPanel(store, ns)
    panel._checkpoints.value = 1
    panel._delete.click()
    assert [c.seq for c in store.history("alice")] == [1, 2]
    assert "Delete checkpoint alice@1?" in panel._status.value
    panel._confirm.click()
    assert [c.seq for c in store.history("alice")] == [2]
    assert "deleted alice@1" in panel._status.value
    assert [v for _, v in panel._checkpoints.options] == [2]
    panel._delete.click()
    panel._confirm.click()
    assert store.sessions() == []
    assert panel._session.options == ()
    assert panel.selected is None


def test_fork(store: nbs.BaseStore, ns: dict[str, Any]) -> None:
    store.save("alice", label="base", box=Box("one"))
    panel = SessionPanel(store, ns)
    panel._fork.click()
    assert "new session" in panel._status.value
    assert "failed" in panel._status.value
    panel._fork_name.value = "alice-b"
    panel._fork.click()
    assert "forked alice@1 into alice-b@1" in panel._status.value
    assert store.get_state("alice-b") == store.get_state("alice@base")
    assert panel.session == "alice-b"
    assert panel._fork_name.value == ""
    panel._fork_name.value = "alice-b"
    panel._fork.click()
    assert "already exists" in panel._status.value


def test_errors_show_in_the_status_line(store: nbs.BaseStore) -> None:
    store.save("alice", box=Box("saved"))
    ns: dict[str, Any] = {"box": Box("live", child=Box("kid"))}
    panel = SessionPanel(store, ns)
    panel._restore.click()
    panel._confirm.click()
    assert "nbs-status-error" in panel._status.value
    assert "box.child" in panel._status.value
    assert "missing" in panel._status.value
    assert ns["box"].value == "live"
    loose = SessionPanel(store, ns, strict=False)
    loose._restore.click()
    loose._confirm.click()
    assert ns["box"].value == "saved"
    assert ns["box"].child.value == "kid"
    panel._save_as.value = "../evil"
    panel._save.click()
    assert "invalid" in panel._status.value
    nothing = SessionPanel(store, {"other": Box(1)})
    nothing._restore.click()
    assert "no variable here is named like its modules (box)" in nothing._status.value
    assert not visible(nothing._confirm)


def test_save_with_nothing_stateful(store: nbs.BaseStore) -> None:
    panel = SessionPanel(store, {"x": 1})
    panel._save_as.value = "alice"
    panel._save.click()
    assert "no agent or other Stateful object" in panel._status.value
    assert not Path(store.location).exists()


async def test_preview_escapes_message_text(store: nbs.BaseStore) -> None:
    agent = ScriptedAgent("Friday", seed=3)
    for text in XSS:
        await agent.observe(Msg("user", text, "user"))
    await agent(Msg("user", "plan to <b>bold</b>, then <i>tilt</i>", "user"))
    store.save("alice", agent=agent)
    ns: dict[str, Any] = {"agent": agent}
    panel = SessionPanel(store, ns)
    preview = panel._preview.value
    assert "<script" not in preview
    assert "<img" not in preview
    assert "<b>bold" not in preview
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in preview
    assert "&lt;img src=x onerror=alert(1)&gt;" in preview
    assert "Subtasks (2)" in preview
    assert "&lt;b&gt;bold&lt;/b&gt;" in preview
    await agent.observe(Msg("user", "<script>later()</script>", "user"))
    panel._refresh.click()
    diff = panel._diff.value
    assert "<script" not in diff
    assert "&lt;script&gt;later()&lt;/script&gt;" in diff


async def test_restore_an_agent(store: nbs.BaseStore) -> None:
    agent = ScriptedAgent("Friday", seed=3)
    await agent(Msg("user", "hello", "user"))
    store.save("alice", agent=agent)
    saved = agent.state_dict()
    await agent(Msg("user", "what is 6*7", "user"))
    assert agent.state_dict() != saved
    panel = SessionPanel(store, {"agent": agent})
    assert "-2 messages" in panel._diff.value or "removed" in panel._diff.value
    panel._restore.click()
    panel._confirm.click()
    assert agent.state_dict() == saved
