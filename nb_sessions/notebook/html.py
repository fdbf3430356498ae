"""Small HTML builders for the notebook face; every piece of text they show is escaped.

Message text is data from a model or a user: it may hold ``<script>`` or
``<img onerror=...>``. Nothing here puts such text into markup unescaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..stores import Checkpoint
from ._helpers import human_size

__all__ = ["checkpoint_header_html", "esc", "frame_html", "preview_html", "status_html"]

#: Columns shown in the preview, in this order, when the frame has them.
MESSAGE_COLUMNS = ("path", "position", "role", "name", "text", "timestamp")
SUBTASK_COLUMNS = ("path", "plan_name", "position", "name", "state", "outcome")
_STATUS_COLORS = {"ok": "#1a7f37", "error": "#cf222e", "info": "#57606a", "working": "#9a6700"}


def esc(value: Any, limit: int | None = None) -> str:
    """``value`` as escaped text; None and NaN become empty; long text is cut to ``limit`` characters."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if isinstance(value, pd.Timestamp):
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]  # milliseconds, as messages keep them
    else:
        text = str(value)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(text, quote=True)


def frame_html(
    frame: pd.DataFrame,
    columns: Sequence[str] = (),
    *,
    max_rows: int = 50,
    max_chars: int = 240,
    css_class: str = "",
    empty: str = "nothing",
) -> str:
    """A DataFrame as an HTML table of escaped cells: the given columns it has (else all), the last rows."""
    if frame.empty:
        return f"<p class='{esc(css_class)}'><i>{esc(empty)}</i></p>"
    cols = [c for c in columns if c in frame.columns] or [str(c) for c in frame.columns]
    shown = frame.tail(max_rows) if len(frame) > max_rows else frame
    head = "".join(f"<th style='text-align:left'>{esc(c)}</th>" for c in cols)
    rows = []
    for record in shown[cols].itertuples(index=False, name=None):
        cells = "".join(
            f"<td style='text-align:left;vertical-align:top;white-space:pre-wrap'>{esc(v, max_chars)}</td>"
            for v in record
        )
        rows.append(f"<tr>{cells}</tr>")
    more = (
        f"<p><i>showing the last {max_rows} of {len(frame)} rows</i></p>"
        if len(frame) > max_rows
        else ""
    )
    return f"{more}<table class='{esc(css_class)}'><tr>{head}</tr>{''.join(rows)}</table>"


def checkpoint_header_html(cp: Checkpoint) -> str:
    """One escaped line about a checkpoint: reference, label, modules, size, time."""
    label = f" <b>[{esc(cp.label)}]</b>" if cp.label else ""
    return (
        f"<p><b>{esc(cp.ref)}</b>{label}: {esc(', '.join(cp.modules))}, {esc(human_size(cp.size))}, "
        f"{esc(f'{cp.created_at:%Y-%m-%d %H:%M:%S}')} UTC</p>"
    )


def preview_html(cp: Checkpoint, states: Mapping[str, Any], max_rows: int = 50) -> str:
    """The messages and subtasks held by a checkpoint's states, as escaped HTML."""
    from .. import views

    with views.silenced():
        messages = views.messages(dict(states))
        subtasks = views.subtasks(dict(states))
    return (
        checkpoint_header_html(cp)
        + f"<h4>Messages ({len(messages)})</h4>"
        + frame_html(
            messages,
            MESSAGE_COLUMNS,
            max_rows=max_rows,
            css_class="nbs-messages",
            empty="no messages",
        )
        + f"<h4>Subtasks ({len(subtasks)})</h4>"
        + frame_html(
            subtasks,
            SUBTASK_COLUMNS,
            max_rows=max_rows,
            css_class="nbs-subtasks",
            empty="no subtasks",
        )
    )


def status_html(text: str, kind: str = "info") -> str:
    """A one-line status message, escaped, coloured by ``kind``: ok, error, info or working."""
    color = _STATUS_COLORS.get(kind, _STATUS_COLORS["info"])
    return f"<span class='nbs-status-{esc(kind)}' style='color:{color};white-space:pre-wrap'>{esc(text)}</span>"
