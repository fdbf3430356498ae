"""The session panel: one composite ipywidgets class over the plain store API.

``SessionPanel(store, namespace)`` lets a person pick a session, browse its
checkpoints, preview their messages and subtasks, diff one against the live
objects, and save, restore, fork or delete. Restore and delete wait for a
Confirm click. The pure helpers beside the class build option lists and text
and need no widget to test.

Child widgets are private attributes; tests and browser tests find them by
attribute or by CSS class:

==================  ====================  ==========================================
attribute           CSS class             what
==================  ====================  ==========================================
``_session``        ``nbs-session``       Dropdown of sessions (value: ``alice``)
``_refresh``        ``nbs-refresh``       Button: reread the store and the live objects
``_checkpoints``    ``nbs-checkpoints``   Select of checkpoints, newest first (value: seq)
``_preview``        ``nbs-preview``       HTML: messages and subtasks of the selection
``_diff``           ``nbs-diff``          HTML: what a restore would change in the live objects
``_save_as``        ``nbs-save-as``       Text: session to save into
``_label``          ``nbs-label``         Text: label of the next save
``_save``           ``nbs-save``          Button: save every Stateful object of the namespace
``_restore``        ``nbs-restore``       Button: restore the selection (asks to confirm)
``_fork_name``      ``nbs-fork-name``     Text: name of the new session
``_fork``           ``nbs-fork``          Button: fork the selection into that session
``_delete``         ``nbs-delete``        Button: delete the selected checkpoint (asks to confirm)
``_confirm``        ``nbs-confirm``       Button, shown while an action waits: do it
``_cancel``         ``nbs-cancel``        Button, shown while an action waits: don't
``_progress``       ``nbs-progress``      IntProgress, shown while an operation runs
``_status``         ``nbs-status``        HTML: the outcome of the last action
==================  ====================  ==========================================
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import ipywidgets as widgets

from ..stores import DEFAULT_STORE, BaseStore, Checkpoint, SessionInfo, open_store
from ._helpers import (
    human_size,
    live_states,
    notebook_path,
    one_line,
    pick_modules,
    plan_restore,
    store_exists,
)
from .html import esc, preview_html, status_html

__all__ = [
    "SessionPanel",
    "checkpoint_label",
    "checkpoint_options",
    "confirm_text",
    "session_options",
]


def session_options(infos: Sequence[SessionInfo]) -> list[tuple[str, str]]:
    """Dropdown options ``(text, session)`` for sessions, in the order given."""
    return [
        (f"{i.session} ({i.checkpoints} checkpoint{'s' if i.checkpoints != 1 else ''})", i.session)
        for i in infos
    ]


def checkpoint_label(cp: Checkpoint) -> str:
    """One line for a checkpoint: ``@3  planned  2024-05-01 10:00:00  agent, notebook  1.2 KB``."""
    label = f"  [{cp.label}]" if cp.label else ""
    return (
        f"@{cp.seq}{label}  {cp.created_at:%Y-%m-%d %H:%M:%S}  "
        f"{', '.join(cp.modules)}  {human_size(cp.size)}"
    )


def checkpoint_options(history: Sequence[Checkpoint]) -> list[tuple[str, int]]:
    """Select options ``(text, seq)``, newest first."""
    return [(checkpoint_label(cp), cp.seq) for cp in reversed(history)]


def confirm_text(action: str, ref: str, modules: Sequence[str] = ()) -> str:
    """What Confirm will do, said before it is done."""
    if action == "restore":
        return (
            f"Restore {ref} into {', '.join(modules)}? Their current state will be overwritten. "
            "Click Confirm to go ahead, or Cancel."
        )
    return f"Delete checkpoint {ref}? This cannot be undone. Click Confirm to go ahead, or Cancel."


def _classed(widget: widgets.DOMWidget, css: str) -> Any:
    widget.add_class(css)
    return widget


def _show(widget: widgets.DOMWidget, visible: bool) -> None:
    widget.layout.display = "" if visible else "none"


def _marker_of(infos: Sequence[SessionInfo]) -> tuple[Any, ...]:
    return tuple((str(i.key), i.checkpoints, i.latest_seq, i.updated_at, tuple(i.labels)) for i in infos)


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def _user_namespace() -> dict[str, Any]:
    shell = _shell()
    return shell.user_ns if shell is not None else {}


class SessionPanel(widgets.VBox):  # type: ignore[misc]
    """Browse, preview, diff, save, restore, fork and delete checkpoints of a store."""

    def __init__(
        self,
        store: BaseStore | str | os.PathLike[str] | None = None,
        namespace: dict[str, Any] | None = None,
        *,
        strict: bool = True,
        follow: bool = True,
        **kwargs: Any,
    ) -> None:
        self.store = open_store(DEFAULT_STORE if store is None else store)
        self._marker: Any = None  # what the store looked like at the last refresh
        self._shell: Any = None  # the shell whose post_run_cell event calls follow()
        self.namespace = _user_namespace() if namespace is None else namespace
        self.strict = strict
        self._pending: tuple[str, str, tuple[str, ...]] | None = None  # (action, ref, modules)
        self._quiet = False  # set while the panel itself changes options

        self._session = _classed(widgets.Dropdown(description="Session", options=[]), "nbs-session")
        self._refresh = _classed(
            widgets.Button(description="Refresh", icon="refresh"), "nbs-refresh"
        )
        self._checkpoints = _classed(
            widgets.Select(
                options=[], rows=8, layout=widgets.Layout(width="auto", min_width="28em")
            ),
            "nbs-checkpoints",
        )
        self._preview = _classed(widgets.HTML(), "nbs-preview")
        self._diff = _classed(widgets.HTML(), "nbs-diff")
        self._tabs = widgets.Tab(
            children=[self._preview, self._diff], layout=widgets.Layout(flex="1")
        )
        self._tabs.titles = ("Preview", "Diff vs live")
        self._save_as = _classed(
            widgets.Text(description="Save as", placeholder="session name"), "nbs-save-as"
        )
        self._label = _classed(
            widgets.Text(description="Label", placeholder="optional label"), "nbs-label"
        )
        self._save = _classed(
            widgets.Button(description="Save", icon="save", button_style="primary"), "nbs-save"
        )
        self._restore = _classed(
            widgets.Button(description="Restore", icon="undo", button_style="warning"),
            "nbs-restore",
        )
        self._fork_name = _classed(widgets.Text(placeholder="new session name"), "nbs-fork-name")
        self._fork = _classed(widgets.Button(description="Fork", icon="code-fork"), "nbs-fork")
        self._delete = _classed(
            widgets.Button(description="Delete", icon="trash", button_style="danger"), "nbs-delete"
        )
        self._confirm = _classed(
            widgets.Button(description="Confirm", button_style="danger"), "nbs-confirm"
        )
        self._cancel = _classed(widgets.Button(description="Cancel"), "nbs-cancel")
        self._progress = _classed(
            widgets.IntProgress(value=0, min=0, max=1, description="working…", bar_style="info"),
            "nbs-progress",
        )
        self._status = _classed(widgets.HTML(), "nbs-status")
        self._actions = (self._refresh, self._save, self._restore, self._fork, self._delete)
        _show(self._confirm, False)
        _show(self._cancel, False)
        _show(self._progress, False)

        self._session.observe(self._on_session, names="value")
        self._checkpoints.observe(self._on_checkpoint, names="value")
        self._refresh.on_click(lambda _: self._run("refreshing", self.refresh))
        self._save.on_click(lambda _: self._run("saving", self._do_save))
        self._restore.on_click(lambda _: self._ask("restore"))
        self._delete.on_click(lambda _: self._ask("delete"))
        self._fork.on_click(lambda _: self._run("forking", self._do_fork))
        self._confirm.on_click(lambda _: self._run("working", self._do_confirm))
        self._cancel.on_click(lambda _: self._cancel_pending("cancelled"))

        super().__init__(
            children=[
                widgets.HBox([self._session, self._refresh]),
                widgets.HBox([self._checkpoints, self._tabs]),
                widgets.HBox([self._save_as, self._label, self._save]),
                widgets.HBox([self._restore, self._fork_name, self._fork, self._delete]),
                widgets.HBox([self._confirm, self._cancel]),
                self._progress,
                self._status,
            ],
            **kwargs,
        )
        self.add_class("nbs-panel")
        self._run("loading", self.refresh, done=None)
        if follow:
            shell = _shell()
            if shell is not None:
                shell.events.register("post_run_cell", self._after_cell)
                self._shell = shell

    # -- public --------------------------------------------------------------------

    @property
    def session(self) -> str | None:
        """The selected session."""
        value: str | None = self._session.value
        return value

    @property
    def selected(self) -> str | None:
        """The reference of the selected checkpoint, e.g. ``alice@3``."""
        if self.session is None or self._checkpoints.value is None:
            return None
        return f"{self.session}@{self._checkpoints.value}"

    def follow(self) -> bool:
        """Refresh if the store changed since the last refresh (another cell saved, say); return whether it did.

        Called after every cell when the panel lives in an IPython shell (its
        ``post_run_cell`` event), so the panel follows the store by itself.
        """
        if self._pending is not None or self._store_marker() == self._marker:
            return False  # unchanged, or a confirmation is waiting: leave the view alone
        self._run("refreshing", self.refresh, done=None)
        return True

    def close(self) -> None:
        """Stop following the store, then close the widgets."""
        self._stop_following()
        super().close()

    def _stop_following(self) -> None:
        if self._shell is not None:
            with contextlib.suppress(ValueError):
                self._shell.events.unregister("post_run_cell", self._after_cell)
            self._shell = None

    def _after_cell(self, result: Any = None) -> None:
        with contextlib.suppress(Exception):  # a panel must never fail the user's cell
            self.follow()

    def _store_marker(self) -> Any:
        """A cheap summary that moves whenever a checkpoint is saved, deleted or labelled."""
        return _marker_of(self.store.sessions() if store_exists(self.store) else [])

    def refresh(self, session: str | None = None, seq: int | None = None) -> None:
        """Reread the sessions (keep or switch the selection) and redraw the preview and diff."""
        infos = self.store.sessions() if store_exists(self.store) else []
        self._marker = _marker_of(infos)
        options = session_options(infos)
        wanted = session if session is not None else self.session
        if seq is None and wanted == self.session:
            seq = self._checkpoints.value  # keep the selection when it still exists
        values = [v for _, v in options]
        with self._quietly():
            self._session.options = options
            self._session.value = wanted if wanted in values else (values[0] if values else None)
        if not self._save_as.value and self.session:
            self._save_as.value = self.session
        self._load_history(seq)

    # -- events --------------------------------------------------------------------

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        quiet, self._quiet = self._quiet, True
        try:
            yield
        finally:
            self._quiet = quiet

    def _on_session(self, change: Mapping[str, Any]) -> None:
        if self._quiet:
            return
        if change["new"]:
            self._save_as.value = change["new"]
        self._run("loading", self._load_history, done=None)

    def _on_checkpoint(self, change: Mapping[str, Any]) -> None:
        if self._quiet:
            return
        self._run("loading", self._show_selected, done=None)

    def _load_history(self, seq: int | None = None) -> None:
        history = self.store.history(self.session) if self.session else []
        options = checkpoint_options(history)
        seqs = [s for _, s in options]
        with self._quietly():
            self._checkpoints.options = options
            self._checkpoints.value = seq if seq in seqs else (seqs[0] if seqs else None)
        self._show_selected()

    def _show_selected(self) -> None:
        self._cancel_pending(None)
        ref = self.selected
        if ref is None:
            self._preview.value = "<p><i>no checkpoint selected: save one with Save</i></p>"
            self._diff.value = ""
            return
        cp = self.store.checkpoint(ref)
        states = self.store.get_state(cp)
        self._preview.value = preview_html(cp, states)
        self._diff.value = self._diff_html(cp, states)

    def _diff_html(self, cp: Checkpoint, states: Mapping[str, Any]) -> str:
        from ..diff import diff_states

        plan = plan_restore(self.namespace, cp.modules)
        notes = "".join(f"<p><i>{esc(n)}</i></p>" for n in plan.notes(cp.ref))
        if not plan.modules:
            return f"<p><i>no live object has the name of a module in {esc(cp.ref)}</i></p>{notes}"
        result = diff_states(
            live_states(plan.modules),
            {n: states[n] for n in plan.modules},
            label_a="live",
            label_b=cp.ref,
        )
        if result.empty:
            return f"<p>the live objects already match {esc(cp.ref)}</p>{notes}"
        return f"<p>restoring {esc(cp.ref)} would change:</p>{result._repr_html_()}{notes}"

    # -- actions -------------------------------------------------------------------

    def _run(self, doing: str, action: Callable[[], str | None], done: str | None = "") -> None:
        """Run ``action`` with buttons disabled and progress shown; report its outcome in the status line."""
        for button in self._actions:
            button.disabled = True
        self._progress.value = 0
        _show(self._progress, True)
        if done is not None:
            self._status.value = status_html(f"{doing}…", "working")
        try:
            message = action()
        except Exception as exc:  # shown to the person, never lost in the widget log
            self._status.value = status_html(f"{doing} failed: {one_line(exc)}", "error")
        else:
            if message:
                self._status.value = status_html(message, "ok")
            elif done is not None:
                self._status.value = status_html(done or "done", "ok")
        finally:
            self._progress.value = 1
            _show(self._progress, False)
            for button in self._actions:
                button.disabled = False

    def _do_save(self) -> str:
        session = self._save_as.value.strip() or self.session
        if not session:
            raise ValueError("type a session name in 'Save as' first")
        modules, _ = pick_modules(self.namespace)
        if not modules:
            raise ValueError("there is no agent or other Stateful object in the notebook to save")
        meta: dict[str, Any] = {"saved_by": "SessionPanel"}
        path = notebook_path(self.namespace)
        if path:
            meta["notebook"] = path
        cp = self.store.save(
            session, label=self._label.value.strip() or None, metadata=meta, **modules
        )
        self._label.value = ""
        self.refresh(cp.session, cp.seq)
        return f"saved {cp.ref}{f' [{cp.label}]' if cp.label else ''}: {', '.join(cp.modules)} ({human_size(cp.size)})"

    def _ask(self, action: str) -> None:
        ref = self.selected
        if ref is None:
            self._status.value = status_html(f"select a checkpoint to {action} first", "error")
            return
        modules: tuple[str, ...] = ()
        if action == "restore":
            try:
                cp = self.store.checkpoint(ref)
            except Exception as exc:
                self._status.value = status_html(f"cannot restore {ref}: {one_line(exc)}", "error")
                return
            plan = plan_restore(self.namespace, cp.modules)
            if not plan.modules:
                self._status.value = status_html(
                    f"cannot restore {ref}: no variable here is named like its modules "
                    f"({', '.join(cp.modules)}); create them first",
                    "error",
                )
                return
            modules = tuple(plan.modules)
        self._pending = (action, ref, modules)
        self._confirm.description = f"Confirm {action}"
        _show(self._confirm, True)
        _show(self._cancel, True)
        self._status.value = status_html(confirm_text(action, ref, modules), "info")

    def _cancel_pending(self, message: str | None) -> None:
        self._pending = None
        _show(self._confirm, False)
        _show(self._cancel, False)
        if message:
            self._status.value = status_html(message, "info")

    def _do_confirm(self) -> str:
        pending = self._pending
        self._cancel_pending(None)
        if pending is None:
            raise ValueError("nothing to confirm: click Restore or Delete first")
        action, ref, _ = pending
        if action == "restore":
            cp = self.store.checkpoint(ref)
            plan = plan_restore(self.namespace, cp.modules)
            self.store.load(cp, strict=self.strict, **plan.modules)
            self._show_selected()
            notes = "; ".join(plan.notes(cp.ref))
            return f"restored {', '.join(plan.modules)} from {cp.ref}" + (
                f" ({notes})" if notes else ""
            )
        count = self.store.delete(ref)
        self.refresh()
        return f"deleted {ref}" if count == 1 else f"deleted {count} checkpoints ({ref})"

    def _do_fork(self) -> str:
        ref = self.selected
        if ref is None:
            raise ValueError("select a checkpoint to fork first")
        name = self._fork_name.value.strip()
        if not name:
            raise ValueError("type the new session's name beside Fork first")
        cp = self.store.fork(ref, name)
        self._fork_name.value = ""
        self._save_as.value = cp.session
        self.refresh(cp.session, cp.seq)
        return f"forked {ref} into {cp.ref}"
