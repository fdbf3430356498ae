"""The ``nb-sessions`` command: list, inspect, diff, search, export, import, copy, prune and check stores.

Every command parses its arguments, calls the public API (``open_store``,
the store methods, :mod:`~nb_sessions.views`, :func:`~nb_sessions.diff`,
:mod:`~nb_sessions.bundle`) and prints the result: a table for people, or
JSON with ``--json``. No storage logic lives here.

The store is ``--store PATH``, else ``$NB_SESSIONS_STORE``, else
``nb_sessions.db`` in the current folder. Exit codes: 0 ok, 1 not found (or
another nb_sessions error), 2 usage, 3 corrupted, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, bundle, codec
from ._loop import run_sync
from .errors import (
    CheckpointNotFoundError,
    InvalidIdError,
    NbSessionsError,
    SessionNotFoundError,
    StoreCorruptedError,
    StoreError,
)
from .stores import (
    DEFAULT_STORE,
    BaseStore,
    Checkpoint,
    SessionKey,
    SQLiteStore,
    open_store,
    parse_ref,
)
from .stores.space import human_size

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "ENV_STORE",
    "EXIT_CORRUPTED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "Problem",
    "Progress",
    "UsageError",
    "build_parser",
    "check_store",
    "exit_code",
    "main",
    "parse_duration",
    "render_table",
    "summarize",
]

#: The environment variable naming the store when ``--store`` is not given.
ENV_STORE = "NB_SESSIONS_STORE"

EXIT_OK = 0
EXIT_NOT_FOUND = 1  # also any other nb_sessions error
EXIT_USAGE = 2
EXIT_CORRUPTED = 3
EXIT_INTERRUPTED = 130

#: Longest cell shown in a table unless ``--wide``.
MAX_CELL = 60
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see (exit 2)."""


# -- progress ----------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal.

    Nothing is drawn during the first ``delay`` seconds (short work shows
    nothing), at most every ``interval`` seconds after that, and the line is
    erased on :meth:`close`.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        delay: float = 0.5,
        interval: float = 0.1,
        width: int = 24,
    ) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _isatty(self.stream)
        self.delay, self.interval, self.width = delay, interval, width
        self._start = time.monotonic()
        self._last = -math.inf
        self._drawn = False

    def update(self, done: int, total: int, note: str = "") -> None:
        """Report ``done`` of ``total`` items; ``note`` names the current one."""
        if not self.enabled:
            return
        now = time.monotonic()
        final = total > 0 and done >= total
        if now - self._start < self.delay or (now - self._last < self.interval and not final):
            return
        self._last = now
        filled = self.width * done // total if total > 0 else 0
        bar = "#" * filled + "." * (self.width - filled)
        text = f"\r{self.label} [{bar}] {done}/{total}"
        if note:
            text += f" {_clean(note)[:40]}"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (if one was drawn)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


# -- output ------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Text safe for a terminal: control characters escaped, lone surrogates as ``\\udc80``."""
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal (wide East Asian characters take two)."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _shorten(text: str, limit: int) -> str:
    if _width(text) <= limit:
        return text
    out, used = [], 0
    for ch in text:
        w = _width(ch)
        if used + w > limit - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return False
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError, ImportError):
        return False


def _cell(value: Any, wide: bool) -> str:
    """One table cell: blanks for missing values, times to the second, one line, shortened."""
    if _is_missing(value):
        text = ""
    elif isinstance(value, datetime):
        text = f"{value:%Y-%m-%d %H:%M:%S}"
    elif isinstance(value, timedelta):
        text = str(timedelta(seconds=round(value.total_seconds())))
    elif isinstance(value, (dict, list, tuple)):
        text = _dumps(_plain(value))
    else:
        text = str(value)
    text = _clean(" ↵ ".join(text.splitlines()) if "\n" in text or "\r" in text else text)
    return text if wide else _shorten(text, MAX_CELL)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, wide: bool = False) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned."""
    cells = [[_cell(v, wide) for v in row] for row in rows]
    numeric = [
        bool(rows) and all(
            _is_missing(row[i]) or (isinstance(row[i], (int, float)) and not isinstance(row[i], bool))
            for row in rows
        )
        for i in range(len(headers))
    ]
    widths = [max([_width(h), *(_width(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for value, w, right in zip(values, widths, numeric, strict=True):
            pad = " " * (w - _width(value))
            parts.append(pad + value if right else value + pad)
        return "  ".join(parts).rstrip()

    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _plain(value: Any) -> Any:
    """A JSON-ready copy: times as ISO strings, durations in seconds, missing and non-finite as null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _is_missing(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _plain(item())
    if hasattr(value, "total_seconds"):
        return float(value.total_seconds())
    return str(value)


def _dumps(value: Any) -> str:
    """JSON text that every parser reads: non-ASCII kept, lone surrogates as \\u escapes."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return text


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-ready row dicts (every column)."""
    columns = [str(c) for c in frame.columns]
    return [
        {c: _plain(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


@dataclass
class _Ctx:
    """What every command needs: the parsed arguments and where to write."""

    args: argparse.Namespace
    out: TextIO
    err: TextIO

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def wide(self) -> bool:
        return bool(getattr(self.args, "wide", False))

    def write(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
        except UnicodeEncodeError:
            encoding = getattr(self.out, "encoding", None) or "ascii"
            self.out.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")

    def emit_json(self, value: Any) -> None:
        self.write(_dumps(_plain(value)))

    def table(self, frame: pd.DataFrame, columns: Sequence[str] | None = None, empty: str = "") -> None:
        chosen = list(columns) if columns is not None else [str(c) for c in frame.columns]
        if frame.empty and empty:
            self.write(empty)
            return
        rows = list(frame[chosen].itertuples(index=False, name=None))
        self.write(render_table(chosen, rows, wide=self.wide))

    def progress(self, label: str) -> Progress:
        return Progress(label, stream=self.err)

    def store(
        self,
        path: str | None = None,
        *,
        must_exist: bool = True,
        key: str | None = None,
        key_file: str | None = None,
        own_key: bool = False,
    ) -> BaseStore:
        """Open the store: ``path``, else ``--store``, else ``$NB_SESSIONS_STORE``, else ``nb_sessions.db``.

        Its key: ``key``/``key_file`` when given (or ``own_key``), else ``--key``/``--key-file``; an
        encrypted store opened without one takes ``$NB_SESSIONS_KEY``.
        """
        chosen = path or getattr(self.args, "store", None) or os.environ.get(ENV_STORE) or DEFAULT_STORE
        if must_exist and "://" not in chosen and not Path(chosen).exists():
            raise StoreError(
                f"no store at {chosen}: pass --store PATH (a .db file, a JSON folder or a postgresql:// URL) "
                f"or set {ENV_STORE}"
            )
        if "://" not in chosen:
            refuse_non_store(Path(chosen))
        if key is None and key_file is None and not own_key:
            key, key_file = getattr(self.args, "key", None), getattr(self.args, "key_file", None)
        return open_store(chosen, key=Path(key_file) if key_file else key)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def refuse_non_store(path: Path) -> None:
    """Raise UsageError (exit 2) saying what ``path`` is when it is neither a store nor AgentScope's files.

    A store is an SQLite database (``.db``/``.sqlite``/``.sqlite3``) or a
    folder of session files (AgentScope's ``*.json``, nb_sessions' history).
    A path that does not exist yet is left to the command (imports create it).
    """
    if not path.exists():
        return
    kinds = "an nb_sessions store is a .db/.sqlite file or a folder of session files"
    if path.is_dir():
        if (path / ".nb_sessions").is_dir() or any(path.glob("*.json")):
            return
        found = "an empty folder" if not any(path.iterdir()) else "a folder with no session files (*.json)"
        raise UsageError(f"{path} is not a store: found {found}; {kinds}")
    if path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
        try:
            with path.open("rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        if head == _SQLITE_MAGIC or not head:  # an empty file is a database not yet written
            return
        raise UsageError(f"{path} is not a store: found a file that is not an SQLite database; {kinds}")
    hint = f" (to add an AgentScope session file to a store: nb-sessions import {path})" if path.suffix.lower() == ".json" else ""
    raise UsageError(f"{path} is not a store: found a plain file, not a folder or database; {kinds}{hint}")


def _frame_columns(ctx: _Ctx, frame: pd.DataFrame, default: Sequence[str]) -> list[str]:
    """The columns a table shows: ``--columns`` if given (checked), else ``default``."""
    asked = getattr(ctx.args, "columns", None)
    if not asked:
        return [c for c in default if c in frame.columns]
    wanted = [c.strip() for c in asked.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in frame.columns]
    if unknown:
        raise UsageError(
            f"unknown column(s) {', '.join(unknown)}; choose from {', '.join(map(str, frame.columns))}"
        )
    return wanted


def _time(value: datetime | None) -> str:
    return "" if value is None else f"{value.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


# -- commands: reading -----------------------------------------------------------


def cmd_ls(ctx: _Ctx) -> int:
    """List the sessions of a store."""
    store = ctx.store(ctx.args.path)
    infos = store.sessions()
    if ctx.json:
        ctx.emit_json([
            {
                "session": i.session, "user_id": i.user_id, "session_id": i.session_id,
                "checkpoints": i.checkpoints, "latest": i.latest_seq,
                "created_at": i.created_at, "updated_at": i.updated_at, "labels": list(i.labels),
            }
            for i in infos
        ])
        return EXIT_OK
    if not infos:
        ctx.write(f"no sessions in {store.location}")
        return EXIT_OK
    rows = [
        (i.session, i.checkpoints, i.latest_seq, i.updated_at, ", ".join(i.labels)) for i in infos
    ]
    ctx.write(render_table(["session", "checkpoints", "latest", "updated (UTC)", "labels"], rows, wide=ctx.wide))
    return EXIT_OK


def _counts(values: Iterator[Any] | Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        key = "" if _is_missing(v) else str(v)
        out[key] = out.get(key, 0) + 1
    return out


def summarize(store: BaseStore, cp: Checkpoint) -> dict[str, Any]:
    """What ``show`` reports about a checkpoint: where it sits, its modules, message and plan counts."""
    from . import views

    state = store.get_state(cp)
    history = store.history(cp.key)
    with views.silenced():  # a summary shows what there is; absent parts are simply not listed
        msgs = views.messages(state)
        calls = views.tool_calls(state)
        plans = views.plans(state)
        tasks = views.subtasks(state)
    current = plans[plans["is_current"]]
    return {
        "ref": cp.ref,
        "session": cp.session,
        "seq": cp.seq,
        "label": cp.label,
        "parent": None if cp.parent is None else f"{cp.key}@{cp.parent}",
        "created_at": cp.created_at,
        "size": cp.size,
        "modules": list(state),
        "metadata": dict(cp.metadata),
        "session_checkpoints": len(history),
        "session_latest": history[-1].seq,
        "messages": {
            "total": len(msgs),
            "by_path": _counts(msgs["path"]),
            "by_role": _counts(msgs["role"]),
        },
        "tool_calls": {"total": len(calls), "dangling": int(calls["dangling"].sum())},
        "plans": {
            "total": len(plans),
            "by_state": _counts(plans["state"]),
            "current": None if current.empty else {
                "plan_id": current["plan_id"].iloc[0],
                "name": current["name"].iloc[0],
                "state": current["state"].iloc[0],
            },
        },
        "subtasks": {"total": len(tasks), "by_state": _counts(tasks["state"])},
    }


def _join_counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k or '?'} {v}" for k, v in counts.items())


def cmd_show(ctx: _Ctx) -> int:
    """Summarise one checkpoint."""
    store = ctx.store()
    cp = store.checkpoint(ctx.args.ref)
    info = summarize(store, cp)
    if ctx.json:
        ctx.emit_json(info)
        return EXIT_OK
    m, p, t, c = info["messages"], info["plans"], info["subtasks"], info["tool_calls"]
    current = p["current"]
    rows: list[tuple[str, Any]] = [
        ("checkpoint", cp.ref + (f" [{cp.label}]" if cp.label else "")),
        ("session", f"{cp.session} ({info['session_checkpoints']} checkpoints, latest @{info['session_latest']})"),
        ("parent", info["parent"] or "none"),
        ("created", _time(cp.created_at)),
        ("size", human_size(cp.size)),
        ("modules", ", ".join(info["modules"])),
    ]
    rows += [(f"metadata.{k}", _cell(v, ctx.wide)) for k, v in info["metadata"].items()]
    rows += [
        ("messages", f"{m['total']}" + (
            f" ({'; '.join(f'{k}: {v}' for k, v in m['by_path'].items())}; {_join_counts(m['by_role'])})"
            if m["total"] else ""
        )),
        ("tool calls", f"{c['total']} ({c['dangling']} dangling)"),
        ("plans", f"{p['total']}" + (f" ({_join_counts(p['by_state'])})" if p["total"] else "") + (
            f"; current: {current['name']!r} ({current['state']})" if current else ""
        )),
        ("subtasks", f"{t['total']}" + (f" ({_join_counts(t['by_state'])})" if t["total"] else "")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        ctx.write(f"{key.ljust(width)}  {_cell(value, wide=True)}")
    return EXIT_OK


def cmd_history(ctx: _Ctx) -> int:
    """List the checkpoints of a session, oldest first."""
    store = ctx.store()
    history = store.history(ctx.args.session)
    if ctx.json:
        ctx.emit_json([
            {
                "ref": cp.ref, "session": cp.session, "seq": cp.seq, "label": cp.label,
                "parent": cp.parent, "created_at": cp.created_at, "modules": list(cp.modules),
                "size": cp.size, "metadata": dict(cp.metadata),
            }
            for cp in history
        ])
        return EXIT_OK
    rows = [
        (cp.seq, cp.label, cp.parent, cp.created_at, ", ".join(cp.modules), cp.size, dict(cp.metadata))
        for cp in history
    ]
    ctx.write(render_table(
        ["seq", "label", "parent", "created (UTC)", "modules", "size", "metadata"], rows, wide=ctx.wide
    ))
    return EXIT_OK


_MESSAGE_COLUMNS = ("position", "role", "name", "timestamp", "n_tool_calls", "text")
_SUBTASK_COLUMNS = ("plan_name", "position", "name", "state", "created_at", "finished_at", "outcome")
_SEARCH_COLUMNS = ("session", "checkpoints", "role", "name", "snippet")


def _view(ctx: _Ctx, frame: pd.DataFrame, default: Sequence[str], empty: str) -> int:
    if ctx.json:
        ctx.emit_json(_records(frame))
        return EXIT_OK
    columns = _frame_columns(ctx, frame, default)
    if "path" not in columns and not getattr(ctx.args, "columns", None) and frame["path"].nunique() > 1:
        columns.insert(0, "path")
    ctx.table(frame, columns, empty)
    return EXIT_OK


def cmd_messages(ctx: _Ctx) -> int:
    """The messages of a checkpoint (``views.messages``)."""
    from . import views

    store = ctx.store()
    frame = views.messages(store, ctx.args.ref)
    return _view(ctx, frame, _MESSAGE_COLUMNS, "no messages")


def cmd_subtasks(ctx: _Ctx) -> int:
    """The plan subtasks of a checkpoint (``views.subtasks``)."""
    from . import views

    store = ctx.store()
    frame = views.subtasks(store, ctx.args.ref)
    return _view(ctx, frame, _SUBTASK_COLUMNS, "no plans")


def cmd_diff(ctx: _Ctx) -> int:
    """What changed between two checkpoints (or one and its parent)."""
    from .diff import diff

    store = ctx.store()
    result = diff(store, ctx.args.a, ctx.args.b) if ctx.args.b else diff(store, ctx.args.a)
    if ctx.json:
        ctx.emit_json({
            "a": result.label_a, "b": result.label_b, "empty": result.empty,
            "summary": result.summary(), "messages": _records(result.messages),
            "subtasks": _records(result.subtasks), "keys": _records(result.keys),
            "tasks": _records(result.tasks),
        })
        return EXIT_OK
    ctx.write(_clean(result.summary()))
    for title, frame in (("messages", result.messages), ("tasks", result.tasks), ("plans", result.subtasks),
                         ("other keys", result.keys)):
        if frame.empty:
            continue
        ctx.write(f"\n{title}:")
        ctx.table(frame)
    return EXIT_OK


def cmd_search(ctx: _Ctx) -> int:
    """Find checkpoints whose messages hold some text (``store.search``)."""
    store = ctx.store()
    search: Callable[..., pd.DataFrame] | None = getattr(store, "search", None)
    if search is None:
        raise NbSessionsError(
            f"{type(store).__name__} cannot search in this version of nb_sessions (no store.search)"
        )
    frame = search(ctx.args.text, session=ctx.args.session)
    if ctx.json:
        ctx.emit_json(_records(frame))
        return EXIT_OK
    default = [c for c in _SEARCH_COLUMNS if c in frame.columns] or [str(c) for c in frame.columns]
    ctx.table(frame, _frame_columns(ctx, frame, default), "no matches")
    return EXIT_OK


# -- commands: moving data -------------------------------------------------------


def cmd_migrate(ctx: _Ctx) -> int:
    """Save a 2.x copy of a 1.x checkpoint as a new checkpoint (``nbs.migrate``); the 1.x ones stay."""
    from .migrate import migrate

    store = ctx.store()
    report = migrate(store, ctx.args.ref, to=ctx.args.to, modules=ctx.args.module or None,
                     label=ctx.args.label)
    if ctx.json:
        assert report.checkpoint is not None
        ctx.emit_json({
            "source": report.source, "checkpoint": report.checkpoint.ref,
            "migrated": list(report.migrated), "kept": list(report.kept),
            "leftovers": [{"path": i.path, "what": i.what, "why": i.why} for i in report.leftovers],
        })
        return EXIT_OK
    ctx.write(_clean_lines(str(report)))
    return EXIT_OK


def cmd_rekey(ctx: _Ctx) -> int:
    """Re-wrap an encrypted store's data key with a new key (one atomic write)."""
    args = ctx.args
    store = ctx.store()
    rekey = getattr(store, "rekey", None)
    if rekey is None:
        raise UsageError(f"{store.location} is not a store kind that can be rekeyed")
    new = Path(args.new_key_file) if args.new_key_file else args.new_key or os.environ.get("NB_SESSIONS_NEW_KEY")
    if not new:
        raise UsageError("give the new key: --new-key TEXT, --new-key-file PATH or $NB_SESSIONS_NEW_KEY")
    rekey(new)
    if ctx.json:
        ctx.emit_json({"rekeyed": store.location})
    else:
        ctx.write(f"rekeyed {store.location}: open it with the new key from now on")
    return EXIT_OK


def cmd_export(ctx: _Ctx) -> int:
    """Write a checkpoint as an AgentScope session file, or whole sessions as a bundle."""
    args = ctx.args
    store = ctx.store()
    to_stdout = args.output == "-"
    target: Any = sys.stdout.buffer if to_stdout else args.output
    if not to_stdout and not Path(args.output).absolute().parent.is_dir():
        raise UsageError(
            f"cannot write {args.output}: folder {Path(args.output).parent} does not exist; create it first"
        )
    if not args.bundle:
        if args.all or len(args.refs) != 1:
            raise UsageError(
                "export without --bundle writes one checkpoint: give exactly one REF "
                "(or add --bundle to export whole sessions)"
            )
        if args.to_key or args.to_key_file:
            raise UsageError(
                "an AgentScope session file cannot be encrypted (AgentScope reads it as plain JSON); "
                "add --bundle to write an encrypted bundle"
            )
        cp = bundle.write_state(store, args.refs[0], target, plaintext=args.plaintext)
        report: dict[str, Any] = {"format": "agentscope", "ref": cp.ref, "modules": list(cp.modules)}
        summary = f"exported {cp.ref} ({', '.join(cp.modules)}) to {args.output} (AgentScope JSONSession format)"
    else:
        if args.all == bool(args.refs):
            raise UsageError("export --bundle needs session names or --all (not both)")
        with ctx.progress("export") as bar:
            n_sessions, n_checkpoints = bundle.write_bundle(
                store, None if args.all else args.refs, target, progress=bar.update, plaintext=args.plaintext,
                key=Path(args.to_key_file) if args.to_key_file else args.to_key,
            )
        sealed = bool(args.to_key or args.to_key_file)
        report = {"format": bundle.SEALED_FORMAT if sealed else bundle.FORMAT, "version": bundle.VERSION,
                  "sessions": n_sessions, "checkpoints": n_checkpoints}
        kind = "encrypted bundle" if sealed else "bundle"
        summary = (f"exported {n_sessions} session(s), {n_checkpoints} checkpoint(s) to {args.output} "
                   f"({kind} v{bundle.VERSION})")
    if not to_stdout:
        report["file"] = str(Path(args.output).absolute())
        if ctx.json:
            ctx.emit_json(report)
        else:
            ctx.write(_clean(summary))
    return EXIT_OK


def cmd_import(ctx: _Ctx) -> int:
    """Import a bundle (history kept) or an AgentScope session file (one new checkpoint)."""
    args = ctx.args
    path = Path(args.file)
    sealed = bundle.is_sealed_bundle(path)
    data = None if sealed else codec.loads(path.read_bytes(), str(path))
    store = ctx.store(must_exist=False)
    if sealed or bundle.is_bundle(data):
        if args.label is not None:
            raise UsageError("--label applies to an AgentScope session file, not to a bundle")
        key = Path(args.from_key_file) if args.from_key_file else args.from_key
        parsed = bundle.read_bundle(path, data, key=key)
        rename = None if args.rename is None else parse_ref(args.rename).key
        with ctx.progress("import") as bar:
            copied = bundle.import_bundle(
                store, parsed, args.sessions or None, progress=bar.update, rename=rename, plaintext=args.plaintext
            )
        return _report_copies(ctx, copied, "imported")
    if len(args.sessions) > 1:
        raise UsageError("an AgentScope session file holds one session: name at most one SESSION")
    if args.rename is not None and args.sessions:
        raise UsageError("an AgentScope session file holds one session: give SESSION or --as, not both")
    session = args.rename or (args.sessions[0] if args.sessions else path.stem)
    try:
        parse_ref(session)
    except InvalidIdError as exc:
        raise UsageError(f"{exc} Name the session: nb-sessions import {args.file} SESSION") from None
    cp = bundle.import_state_file(store, path, session, data, label=args.label)
    if ctx.json:
        ctx.emit_json({"imported": [{"source": str(path), "target": cp.session, "checkpoints": [cp.ref]}]})
    else:
        ctx.write(_clean(f"imported {path} as {cp.ref} ({', '.join(cp.modules)}) into {store.location}"))
    return EXIT_OK


def _report_copies(ctx: _Ctx, copied: Sequence[bundle.Copied], verb: str) -> int:
    if ctx.json:
        ctx.emit_json({verb: [
            {"source": c.source, "target": c.target, "checkpoints": [cp.ref for cp in c.checkpoints],
             "seq_map": {str(k): v for k, v in c.seq_map.items()}}
            for c in copied
        ]})
        return EXIT_OK
    if not copied:
        ctx.write(f"{verb} nothing: no sessions")
        return EXIT_OK
    rows = [(c.target, len(c.checkpoints), ", ".join(cp.label for cp in c.checkpoints if cp.label)) for c in copied]
    ctx.write(render_table(["session", "checkpoints", "labels"], rows, wide=ctx.wide))
    total = sum(len(c.checkpoints) for c in copied)
    ctx.write(f"{verb} {len(copied)} session(s), {total} checkpoint(s)")
    return EXIT_OK


def cmd_copy(ctx: _Ctx) -> int:
    """Copy sessions, with their history, from one store to another."""
    args = ctx.args
    src = ctx.store(args.src)
    dst = ctx.store(args.dst, must_exist=False, key=args.to_key, key_file=args.to_key_file, own_key=True)
    with ctx.progress("copy") as bar:
        copied = bundle.copy_sessions(
            src, dst, args.sessions or None, progress=bar.update, plaintext=args.plaintext
        )
    return _report_copies(ctx, copied, "copied")


# -- commands: maintenance -------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` -> a timedelta (argparse type)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m, 12h, 7d or 2w")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _session_keys(store: BaseStore, names: Sequence[str]) -> list[SessionKey]:
    """The named sessions' keys (each checked to exist), or every session's key in the store.

    Keys, never their text: an id may hold ``@`` (AgentScope takes ids literally), and
    ``a@b`` parsed again would be checkpoint ``b`` of session ``a``.
    """
    if not names:
        return [info.key for info in sorted(store.sessions(), key=lambda i: (i.user_id, i.session_id))]
    keys = []
    for name in names:
        ref = parse_ref(name)
        if not ref.is_latest:
            raise UsageError(f"{name!r} names a checkpoint; give a session, e.g. {str(ref.key)!r}")
        store.history(ref.key)  # raises SessionNotFoundError
        keys.append(ref.key)
    return list(dict.fromkeys(keys))


def cmd_prune(ctx: _Ctx) -> int:
    """Remove old checkpoints (the latest of each session, and labelled ones, are kept)."""
    args = ctx.args
    if args.keep_last is None and args.older_than is None:
        raise UsageError("prune needs --keep-last N and/or --older-than DURATION to know what to remove")
    store = ctx.store()
    keys = _session_keys(store, args.sessions)
    results = [
        store.prune(key, keep_last=args.keep_last, keep_labeled=not args.drop_labeled,
                    older_than=args.older_than, dry_run=args.dry_run)
        for key in keys
    ]
    names = [str(key) for key in keys]
    if ctx.json:
        ctx.emit_json([
            {"session": str(name), "dry_run": r.dry_run,
             "removed": [c.ref for c in r.removed], "kept": [c.ref for c in r.kept],
             "bytes_reclaimed": r.bytes_reclaimed}
            for name, r in zip(names, results, strict=True)
        ])
        return EXIT_OK
    rows = [
        (str(name), len(r.removed), len(r.kept), ", ".join(c.ref for c in r.removed))
        for name, r in zip(names, results, strict=True)
    ]
    ctx.write(render_table(
        ["session", "would remove" if args.dry_run else "removed", "kept",
         "checkpoints to remove" if args.dry_run else "checkpoints removed"], rows, wide=ctx.wide
    ))
    total = sum(len(r.removed) for r in results)
    freed = sum(r.bytes_reclaimed or 0 for r in results)
    ctx.write(f"{'would remove' if args.dry_run else 'removed'} {total} checkpoint(s)"
              + (f", freeing {human_size(freed)} (dry run: nothing changed)" if args.dry_run
                 else "; run vacuum to give the space back"))
    return EXIT_OK


def cmd_du(ctx: _Ctx) -> int:
    """Where the space goes: bytes per session (or per module/checkpoint), shared bytes apart."""
    stats = ctx.store().stats()
    if ctx.json:
        ctx.emit_json(stats.to_json())
        return EXIT_OK
    frame = {"sessions": stats.sessions, "modules": stats.modules, "checkpoints": stats.checkpoints}[ctx.args.by]
    shown = frame.assign(own=frame["own_bytes"].map(human_size), shared=frame["shared_bytes"].map(human_size))
    columns = [c for c in shown.columns if c not in ("own_bytes", "shared_bytes")]
    ctx.table(shown, columns, "no sessions")
    ctx.write(
        f"{human_size(stats.total_bytes)} of checkpoints ({human_size(stats.shared_bytes)} shared between "
        f"checkpoints, counted once), {human_size(stats.disk_bytes)} on disk in {stats.location}"
    )
    return EXIT_OK


def cmd_delete(ctx: _Ctx) -> int:
    """Delete a whole session (``alice``) or one checkpoint (``alice@3``), after confirmation."""
    args = ctx.args
    store = ctx.store()
    ref = parse_ref(args.ref)
    target: Any
    if ref.is_latest:
        target = ref.key
        what = f"session {ref.key} and its {len(store.history(ref.key))} checkpoint(s)"
    else:
        target = store.checkpoint(ref)
        what = f"checkpoint {target.ref}"
    if not args.yes:
        if not (_isatty(sys.stdin) and _isatty(ctx.err)):
            raise UsageError(f"delete would remove {what} from {store.location}: add --yes to confirm")
        ctx.err.write(f"delete {what} from {store.location}? [y/N] ")
        ctx.err.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            ctx.write("nothing deleted")
            return EXIT_OK
    removed = store.delete(target)
    if ctx.json:
        ctx.emit_json({"deleted": str(args.ref), "checkpoints": removed, "store": store.location})
    else:
        ctx.write(f"deleted {what} ({removed} checkpoint(s)); run vacuum to give the space back")
    return EXIT_OK


def cmd_vacuum(ctx: _Ctx) -> int:
    """Give the space of deleted checkpoints back to the file system."""
    store = ctx.store()
    result = store.vacuum()
    if ctx.json:
        ctx.emit_json(
            {
                "store": store.location,
                "reclaimed": int(result),
                "bytes_before": getattr(result, "bytes_before", None),
                "bytes_after": getattr(result, "bytes_after", None),
            }
        )
    else:
        ctx.write(str(result))
    return EXIT_OK


@dataclass(frozen=True)
class Problem:
    """A checkpoint (or session) that cannot be read back."""

    ref: str
    error: str
    message: str
    location: str = ""


def check_store(
    store: BaseStore,
    sessions: Sequence[str] = (),
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[int, int, list[Problem]]:
    """Read back every checkpoint of ``sessions`` (all by default); return ``(sessions, checkpoints, problems)``."""
    problems: list[Problem] = []
    histories: list[list[Checkpoint]] = []
    for key in _session_keys(store, sessions):
        try:
            histories.append(store.history(key))
        except (StoreError, LookupError) as exc:
            problems.append(_problem(str(key), exc))
    total = sum(len(h) for h in histories)
    done = 0
    for history in histories:
        for cp in history:
            try:
                state = run_sync(store._verify(cp))
            except NbSessionsError as exc:
                problems.append(_problem(cp.ref, exc))
            else:
                if cp.metadata.get("corrupted"):
                    problems.append(Problem(cp.ref, "StoreCorruptedError", "its metadata cannot be read"))
                elif cp.modules and set(cp.modules) != set(state):
                    problems.append(Problem(
                        cp.ref, "StoreCorruptedError",
                        f"it lists modules {list(cp.modules)} but holds states for {list(state)}",
                    ))
            done += 1
            if progress is not None:
                progress(done, total, cp.ref)
    return len(histories), total, problems


def _problem(ref: str, exc: Exception) -> Problem:
    return Problem(ref, type(exc).__name__, " ".join(str(exc).split()), str(getattr(exc, "location", "") or ""))


def cmd_check(ctx: _Ctx) -> int:
    """Read back every checkpoint and report the ones that are damaged (exit 3 if any)."""
    store = ctx.store()
    with ctx.progress("check") as bar:
        n_sessions, n_checkpoints, problems = check_store(store, ctx.args.sessions, bar.update)
    # SQLite rows written before row hashes (schema 5) read fine but are not protected by one.
    unhashed, protected = (sum(map(len, store.unhashed().values())) if isinstance(store, SQLiteStore) else 0), 0
    if ctx.args.protect and unhashed and not problems and isinstance(store, SQLiteStore):
        protected = store.hash_unhashed()
        unhashed -= protected
    if ctx.json:
        ctx.emit_json({
            "store": store.location, "ok": not problems, "sessions": n_sessions,
            "checkpoints": n_checkpoints,
            "problems": [{"ref": p.ref, "error": p.error, "message": p.message, "location": p.location}
                         for p in problems],
            "unhashed": unhashed, "protected": protected,
        })
    else:
        if problems:
            rows = [(p.ref, p.error, p.message) for p in problems]
            ctx.write(render_table(["checkpoint", "error", "message"], rows, wide=True))
        verdict = f"{len(problems)} problem(s)" if problems else "all readable"
        ctx.write(f"checked {n_checkpoints} checkpoint(s) in {n_sessions} session(s) of {store.location}: {verdict}")
        if protected:
            ctx.write(f"added the row hash of {protected} checkpoint(s) written before row hashes")
        if unhashed:
            ctx.write(
                f"{unhashed} checkpoint(s) were written before row hashes: a hand edit of their row is not "
                "caught; once no problem is left, `nb-sessions check --protect` adds their hashes"
            )
    return EXIT_CORRUPTED if problems else EXIT_OK


# -- the parser --------------------------------------------------------------------


def _common(suppress: bool) -> argparse.ArgumentParser:
    """``--store``, ``--json`` and ``--wide``, accepted before or after the command."""
    default: Any = argparse.SUPPRESS if suppress else None
    flag: Any = argparse.SUPPRESS if suppress else False
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", metavar="PATH", default=default,
        help=f"the store: a .db/.sqlite file or a JSON folder (default: ${ENV_STORE}, else {DEFAULT_STORE})",
    )
    common.add_argument(
        "--key", metavar="KEY", default=default,
        help="the key of an encrypted store: base64 of 32 bytes or a passphrase (default: $NB_SESSIONS_KEY; "
             "prefer the variable or --key-file, a command line is visible to other users)",
    )
    common.add_argument("--key-file", metavar="PATH", default=default, help="read the store's key from this file")
    common.add_argument("--json", action="store_true", default=flag, help="print JSON for scripts")
    common.add_argument("--wide", action="store_true", default=flag, help="do not shorten table cells")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``nb-sessions`` argument parser, one subcommand per command."""
    parser = argparse.ArgumentParser(
        prog="nb-sessions",
        description="Inspect and manage nb_sessions checkpoint stores.",
        epilog="Exit codes: 0 ok, 1 not found, 2 usage, 3 corrupted. Docs: docs/cli.md",
        parents=[_common(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"nb-sessions {__version__}")
    common = [_common(suppress=True)]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[[_Ctx], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    ref_help = "a checkpoint: alice (latest), alice@3, alice@label, alice@~1, user/alice@3"
    p = command("ls", cmd_ls, "list the sessions of a store")
    p.add_argument("path", nargs="?", metavar="STORE", help="the store (overrides --store)")
    p = command("show", cmd_show, "summarise a checkpoint: modules, message and plan counts")
    p.add_argument("ref", metavar="REF", help=ref_help)
    p = command("history", cmd_history, "list the checkpoints of a session")
    p.add_argument("session", metavar="SESSION", help="a session, e.g. alice or user/alice")
    for name, func, what in (("messages", cmd_messages, "the messages"), ("subtasks", cmd_subtasks, "the plan subtasks")):
        p = command(name, func, f"{what} of a checkpoint as a table")
        p.add_argument("ref", metavar="REF", help=ref_help)
        p.add_argument("--columns", metavar="A,B", help="the columns to show (--json prints them all)")
    p = command("diff", cmd_diff, "what changed between two checkpoints (or one and its parent)")
    p.add_argument("a", metavar="A", help="the checkpoint before")
    p.add_argument("b", metavar="B", nargs="?", help="the checkpoint after (default: A against its parent)")
    p = command("search", cmd_search, "find checkpoints whose messages contain TEXT")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--session", help="search this session only")
    p.add_argument("--columns", metavar="A,B", help="the columns to show")
    p = command("export", cmd_export, "write a checkpoint (AgentScope format) or sessions (--bundle) to a file")
    p.add_argument("refs", nargs="*", metavar="REF", help="a checkpoint; with --bundle, sessions")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write ('-' for stdout)")
    p.add_argument("--bundle", action="store_true", help="write whole sessions with history and checksums")
    p.add_argument("--all", action="store_true", help="with --bundle: every session of the store")
    p.add_argument("--plaintext", action="store_true", help="allow writing a plaintext file from an encrypted store")
    p.add_argument("--to-key", metavar="KEY", help="with --bundle: encrypt the bundle with this key")
    p.add_argument("--to-key-file", metavar="PATH", help="with --bundle: encrypt the bundle with the key in this file")
    p = command("import", cmd_import, "import a bundle, or an AgentScope session file as a new checkpoint")
    p.add_argument("file", metavar="FILE")
    p.add_argument("sessions", nargs="*", metavar="SESSION",
                   help="bundle: the sessions to import (default all); AgentScope file: the session to "
                        "save it as (default: the file name)")
    p.add_argument("--label", help="label the checkpoint made from an AgentScope file")
    p.add_argument("--as", dest="rename", metavar="NEW",
                   help="import the one session under the name NEW (e.g. when the store has one of that name)")
    p.add_argument("--from-key", metavar="KEY", help="the key of an encrypted bundle (default: $NB_SESSIONS_KEY)")
    p.add_argument("--from-key-file", metavar="PATH", help="the key file of an encrypted bundle")
    p.add_argument("--plaintext", action="store_true",
                   help="allow importing an encrypted bundle into a plain store")
    p = command("migrate", cmd_migrate,
                "save an AgentScope 2.x copy of a 1.x checkpoint as a new checkpoint (the 1.x ones stay)")
    p.add_argument("ref", metavar="REF", help=ref_help)
    p.add_argument("--to", metavar="SESSION", help="save it as this new session (default: the same session)")
    p.add_argument("--module", action="append", metavar="NAME",
                   help="migrate this module (repeat; default: every module holding a 1.x agent)")
    p.add_argument("--label", help="label the new checkpoint")
    p = command("copy", cmd_copy, "copy sessions with their history from one store to another")
    p.add_argument("src", metavar="SRC_STORE")
    p.add_argument("dst", metavar="DST_STORE")
    p.add_argument("sessions", nargs="*", metavar="SESSION", help="default: every session")
    p.add_argument("--to-key", metavar="KEY", help="encrypt DST_STORE with this key (a new store)")
    p.add_argument("--to-key-file", metavar="PATH", help="encrypt DST_STORE with the key in this file")
    p.add_argument("--plaintext", action="store_true", help="allow copying an encrypted store into a plain one")
    p = command("prune", cmd_prune, "remove old checkpoints (the latest and labelled ones are kept)")
    p.add_argument("sessions", nargs="*", metavar="SESSION", help="default: every session")
    p.add_argument("--keep-last", type=_positive, metavar="N", help="keep the N newest checkpoints")
    p.add_argument("--older-than", type=parse_duration, metavar="DURATION",
                   help="remove only checkpoints older than this: 90s, 30m, 12h, 7d, 2w")
    p.add_argument("--drop-labeled", action="store_true", help="labelled checkpoints may go too")
    p.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")
    p = command("du", cmd_du, "where the space goes: bytes per session, module or checkpoint")
    p.add_argument("--by", choices=("sessions", "modules", "checkpoints"), default="sessions",
                   help="one row per session (default), per module of each session, or per checkpoint")
    p = command("delete", cmd_delete, "delete a session or one checkpoint (asks first; --yes to skip)")
    p.add_argument("ref", metavar="REF", help="a session (all its checkpoints) or one checkpoint, e.g. alice@3")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    command("vacuum", cmd_vacuum, "give the space of deleted checkpoints back to the disk")
    p = command("check", cmd_check, "read back every checkpoint and report damaged ones (exit 3)")
    p.add_argument("sessions", nargs="*", metavar="SESSION", help="default: every session")
    p.add_argument("--protect", action="store_true",
                   help="when nothing is damaged, hash the rows of checkpoints written before row hashes (SQLite)")
    p = command("rekey", cmd_rekey, "re-wrap an encrypted store's data key with a new key (old key: --key)")
    p.add_argument("--new-key", metavar="KEY", help="the new key (default: $NB_SESSIONS_NEW_KEY)")
    p.add_argument("--new-key-file", metavar="PATH", help="read the new key from this file")
    return parser


# -- the entry point ---------------------------------------------------------------

_NOT_FOUND = (SessionNotFoundError, CheckpointNotFoundError, FileNotFoundError)


def exit_code(exc: BaseException) -> int:
    """The exit code an error means: 1 not found, 2 usage, 3 corrupted, 1 any other."""
    if isinstance(exc, (UsageError, InvalidIdError)):
        return EXIT_USAGE
    if isinstance(exc, StoreCorruptedError):
        return EXIT_CORRUPTED
    return EXIT_NOT_FOUND


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nb-sessions`` with ``argv`` (default: the command line); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    ctx = _Ctx(args, sys.stdout, sys.stderr)
    try:
        code: int = args.func(ctx)
        return code
    except BrokenPipeError:
        # The reader went away (``nb-sessions messages alice | head``): not an error.
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        ctx.err.write("nb-sessions: interrupted\n")
        return EXIT_INTERRUPTED
    except (NbSessionsError, UsageError, OSError) as exc:
        code = exit_code(exc)
        _report_error(ctx, exc, code)
        return code


def _report_error(ctx: _Ctx, exc: BaseException, code: int) -> None:
    if isinstance(exc, OSError) and not isinstance(exc, NbSessionsError) and exc.filename is not None:
        message = f"{exc.strerror or exc}: {exc.filename}"
    elif isinstance(exc, NbSessionsError):
        message = exc.render("cli")  # its advice as commands, not Python calls
    else:
        message = str(exc)
    if ctx.json:
        ctx.err.write(_dumps({"error": type(exc).__name__, "message": message, "exit_code": code}) + "\n")
        return
    hint = f" (see: nb-sessions {ctx.args.command} --help)" if code == EXIT_USAGE else ""
    ctx.err.write(f"nb-sessions {ctx.args.command}: error: {_clean_lines(message)}{hint}\n")


def _clean_lines(text: str) -> str:
    return "\n".join(_clean(line) for line in text.splitlines())


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
