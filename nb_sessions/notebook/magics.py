"""IPython magics: ``%load_ext nb_sessions``, then ``%save_session``, ``%load_session`` and friends.

Each magic parses its line and calls the plain API (stores, views, diff).
A user mistake raises exactly :class:`~IPython.core.error.UsageError`, which
IPython shows as one clean line without a traceback.

Settings, most specific first:

1. ``%config SessionMagics.store = "..."`` after ``%load_ext`` (sets the trait, always wins);
2. IPython configuration present when the extension loads (``c.SessionMagics.store`` in a
   profile's ``ipython_config.py``, ``--SessionMagics.store=...`` on the command line, or a
   ``%config SessionMagics.store = ...`` run before ``%load_ext``);
3. ``[tool.nb_sessions]`` in ``pyproject.toml`` of the kernel's working folder, read at
   ``%load_ext`` time (``store = "agents.db"``, ``strict = false``, ``autosave_label_prefix``);
4. the defaults: ``nb_sessions.db`` beside the notebook, strict loads, labels ``cell-N``.

A relative ``store`` is resolved against the working folder when a magic runs
(one in ``pyproject.toml`` against the file's folder).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from IPython.core import magic_arguments as _margs
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class
from IPython.core.magic import line_magic as _line_magic
from traitlets import Bool, TraitError, Unicode, validate

from ..errors import (
    CheckpointNotFoundError,
    ConflictError,
    KeyRequiredError,
    NbSessionsError,
    SessionNotFoundError,
    StateMismatchError,
    WrongKeyError,
)
from ..stores import DEFAULT_STORE, BaseStore, Checkpoint, open_store, parse_ref
from ..stores.base import validate_label
from ._helpers import (
    check_load,
    fingerprint,
    human_size,
    live_states,
    message_counts,
    notebook_path,
    one_line,
    pick_modules,
    plan_restore,
    read_pyproject,
    store_exists,
    unique_label,
)

if TYPE_CHECKING:
    from IPython.core.interactiveshell import ExecutionResult, InteractiveShell

    from ..diff import SessionDiff
    from .widgets import SessionPanel

__all__ = ["SessionMagics", "load_ipython_extension", "unload_ipython_extension"]

F = TypeVar("F", bound=Callable[..., Any])


def line_magic(func: F) -> F:
    """IPython's ``@line_magic``, typed."""
    return cast(F, _line_magic(func))


def magic_arguments() -> Callable[[F], F]:
    """IPython's ``@magic_arguments()``, typed: ``%magic?`` shows the argparse help."""
    deco: Callable[[F], F] = _margs.magic_arguments()  # type: ignore[no-untyped-call]
    return deco


def argument(*flags: str, **kwargs: Any) -> Callable[[F], F]:
    """IPython's ``@argument(...)``, typed."""
    deco: Callable[[F], F] = _margs.argument(*flags, **kwargs)  # type: ignore[no-untyped-call]
    return deco


def parse_argstring(magic: Callable[..., Any], line: str) -> argparse.Namespace:
    """Parse a magic's line with its argparse parser; a bad line raises UsageError.

    A ``#`` that starts a word outside quotes begins a comment, as in a shell:
    ``%save_session alice  # the first try`` saves into ``alice``.
    """
    line = strip_comment(line)
    args: argparse.Namespace = _margs.parse_argstring(magic, line)  # type: ignore[no-untyped-call]
    return args


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` starting a word, outside quotes)."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


_STORE_HELP = "the store to use: a .db/.sqlite file or a JSON folder (default: SessionMagics.store)"


@contextlib.contextmanager
def _user_errors(action: str) -> Iterator[None]:
    """Turn any NbSessionsError into a UsageError that starts with what was being done."""
    try:
        yield
    except NbSessionsError as exc:
        hint = ""
        if isinstance(exc, StateMismatchError):
            hint = (
                "\nWith %load_session, add --no-strict to restore what matches and keep the rest."
            )
        elif isinstance(exc, SessionNotFoundError):
            hint = "\n%sessions lists the sessions of this store; --store PATH picks another store."
        elif isinstance(exc, CheckpointNotFoundError) and exc.ref:
            hint = f"\n%session_history {parse_ref(exc.ref).key} lists its checkpoints."
        elif isinstance(exc, (KeyRequiredError, WrongKeyError)):
            hint = '\nIn a notebook: %config SessionMagics.key_file = "path/to/your.key" gives the magics the key.'
        raise UsageError(f"{action}: {exc}{hint}") from None


@dataclass
class _Autosave:
    """An active ``%autosave_session``: where it saves, what, and the last state saved."""

    session: str
    names: tuple[str, ...]
    store: BaseStore
    last: str | None = None
    saved: int = 0


@magics_class
class SessionMagics(Magics):
    """Save, restore, browse and diff checkpoints of agents from notebook cells."""

    store = Unicode(
        DEFAULT_STORE,
        help="Where checkpoints live: a .db/.sqlite/.sqlite3 file (SQLite) or a folder (JSON files). "
        "Relative paths are resolved against the kernel's working folder (the notebook's, in Jupyter).",
    ).tag(config=True)
    strict = Bool(
        True,
        help="Refuse a restore when the checkpoint and the live objects do not match key for key "
        "(%load_session --no-strict overrides it for one call).",
    ).tag(config=True)
    autosave_label_prefix = Unicode(
        "cell-", help="Autosave labels are this prefix followed by the cell's execution count."
    ).tag(config=True)
    key_file = Unicode(
        "",
        help="A key file (32 random bytes as base64 text, or a passphrase): the stores the magics "
        "open are encrypted at rest with its key, and a new one is created encrypted. Keep it "
        "outside the store's folder, readable by you only. Empty: no key given (an encrypted "
        "store then takes NB_SESSIONS_KEY).",
    ).tag(config=True)

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._stores: dict[tuple[str, Path | None], BaseStore] = {}
        self._autosave: _Autosave | None = None
        self._hooked = False

    @validate("autosave_label_prefix")
    def _check_prefix(self, proposal: Any) -> str:
        prefix: str = proposal["value"]
        try:
            validate_label(f"{prefix}1")
        except NbSessionsError as exc:
            raise TraitError(
                f"autosave_label_prefix {prefix!r} makes invalid labels: {exc}"
            ) from None
        return prefix

    # -- plumbing ----------------------------------------------------------------

    @property
    def _ns(self) -> dict[str, Any]:
        assert self.shell is not None
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    def open_store(self, path: str | None = None) -> BaseStore:
        """The store at ``path`` (default: the ``store`` setting), one instance per resolved path."""
        chosen = str(path or self.store)
        p = Path(chosen).expanduser()
        # A URL (a database server, an AgentScope app's storage) is its own key, not a path.
        key = chosen if "://" in chosen else str(p if p.is_absolute() else Path.cwd() / p)
        key_file = None
        if self.key_file:
            given = Path(self.key_file).expanduser()
            key_file = given if given.is_absolute() else Path.cwd() / given
        cached = (key, key_file)
        if cached not in self._stores:
            # One instance per path (and key), so a save after a load records the loaded checkpoint as parent.
            self._stores[cached] = open_store(key, key=key_file)
        return self._stores[cached]

    def _existing_store(self, path: str | None, action: str) -> BaseStore:
        """The store to read from; a UsageError when it does not exist (reading must not create one)."""
        store = self.open_store(path)
        if not store_exists(store):
            raise UsageError(
                f"{action}: there is no store at {store.location}. Check --store or "
                "%config SessionMagics.store; %save_session creates a store."
            )
        return store

    def apply_pyproject(self, folder: str | Path | None = None) -> dict[str, Any]:
        """Apply ``[tool.nb_sessions]`` of ``folder/pyproject.toml`` unless set by IPython config; return what was applied."""
        settings, warnings = read_pyproject(folder or Path.cwd())
        for warning in warnings:
            print(f"nb_sessions: {warning}", file=sys.stderr)
        explicit = self.config.get(type(self).__name__, {})
        applied = {}
        for key, value in settings.items():
            if key in explicit:
                continue
            try:
                setattr(self, key, value)
            except TraitError as exc:
                print(
                    f"nb_sessions: pyproject.toml [tool.nb_sessions] {key}: {exc}", file=sys.stderr
                )
                continue
            applied[key] = value
        return applied

    def _cell_number(self) -> int | None:
        shell = self.shell
        if shell is None:
            return None
        # IPython 9 bumps execution_count before the cell runs; prompt_count is the cell's number in all versions.
        count = getattr(getattr(shell, "displayhook", None), "prompt_count", None)
        return count if isinstance(count, int) else None

    def _metadata(self, via: str, cell: int | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"saved_by": via}
        path = notebook_path(self._ns)
        if path:
            meta["notebook"] = path
        cell = self._cell_number() if cell is None else cell
        if cell is not None:
            meta["cell"] = cell
        return meta

    def _live(self, names: Sequence[str], action: str) -> dict[str, Any]:
        modules, missing = pick_modules(self._ns, names)
        if missing:
            raise UsageError(
                f"{action}: no variable named {', '.join(map(repr, missing))} in the notebook. "
                "Check the spelling, or run the cell that creates it first."
            )
        if not modules:
            raise UsageError(
                f"{action}: there is no agent or other Stateful object in the notebook to save. "
                "Create one first, or name the objects to save, e.g. %save_session alice agent"
            )
        return modules

    # -- magics ------------------------------------------------------------------

    @line_magic
    @magic_arguments()
    @argument("ref", help="the session to save into, e.g. alice or user42/alice")
    @argument(
        "names",
        nargs="*",
        help="variables to save (default: every Stateful object in the namespace, "
        "skipping modules, classes and _private names)",
    )
    @argument(
        "-l", "--label", default=None, help="a label for the new checkpoint, unique in its session"
    )
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def save_session(self, line: str) -> Checkpoint:
        """Save agents (any Stateful objects) as a new checkpoint of a session; return it."""
        if not strip_comment(line).strip():  # argparse would call the optional names required too
            raise UsageError(
                "%save_session needs a session name, e.g. %save_session alice "
                "(then, optionally, the variables to save: %save_session alice agent)"
            )
        args = parse_argstring(self.save_session, line)
        action = f"cannot save {args.ref!r}"
        modules = self._live(args.names, action)
        store = self.open_store(args.store)
        started = time.perf_counter()
        with _user_errors(action):
            cp = store.save(
                args.ref, label=args.label, metadata=self._metadata("%save_session"), **modules
            )
        took = time.perf_counter() - started
        label = f" [{cp.label}]" if cp.label else ""
        print(
            f"saved {cp.ref}{label}: {', '.join(cp.modules)} ({human_size(cp.size)}) "
            f"in {took:.2f} s to {_shown(store)}"
        )
        auto = self._autosave
        if (
            auto is not None
            and auto.store is store
            and parse_ref(args.ref).key == parse_ref(auto.session).key
        ):
            # Only spares autosave a duplicate checkpoint; must never fail the save itself.
            with contextlib.suppress(Exception):
                watched = self._autosave_modules(auto)
                if set(watched) == set(modules):
                    auto.last = fingerprint(live_states(watched))
        return cp

    @line_magic
    @magic_arguments()
    @argument(
        "ref",
        help="a checkpoint: alice (latest), alice@3 (number), alice@planned (label), alice@~1",
    )
    @argument(
        "names",
        nargs="*",
        help="variables to restore (default: every module of the checkpoint with a variable of that name)",
    )
    @argument(
        "--no-strict",
        dest="strict",
        action="store_false",
        default=None,
        help="restore what matches and keep the rest (default: SessionMagics.strict)",
    )
    @argument(
        "--strict",
        dest="strict",
        action="store_true",
        default=None,
        help="refuse any mismatch, whatever SessionMagics.strict says",
    )
    @argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="change nothing; show what a restore would change",
    )
    @argument(
        "--repair",
        action="store_true",
        help="close tool calls left without a result with an error result (report them)",
    )
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def load_session(self, line: str) -> SessionDiff | None:
        """Restore live objects from a checkpoint, all or nothing; --dry-run shows the changes instead."""
        args = parse_argstring(self.load_session, line)
        strict = self.strict if args.strict is None else args.strict
        action = f"cannot load {args.ref!r}"
        store = self._existing_store(args.store, action)
        with _user_errors(action):
            cp = store.checkpoint(args.ref)
        plan = plan_restore(self._ns, cp.modules, args.names)
        if plan.missing:
            raise UsageError(
                f"{action}: no variable named {', '.join(map(repr, plan.missing))} in the notebook. "
                f"Create the object first (e.g. the same agent class), then load into it."
            )
        if plan.no_state and strict:
            raise UsageError(
                f"{action}: {cp.ref} holds no state for {', '.join(map(repr, plan.no_state))} "
                f"(it holds {', '.join(cp.modules) or 'nothing'}). Name only modules it holds, "
                "or add --no-strict to skip the others."
            )
        if not plan.modules:
            raise UsageError(
                f"{action}: none of its modules ({', '.join(cp.modules)}) has a variable of that name "
                "in the notebook. Create the objects under those names first, then load."
            )
        notes = plan.notes(cp.ref)
        if args.dry_run:
            return self._dry_run(store, cp, plan.modules, strict, notes, args.repair)
        with _user_errors(action):
            loaded = store.load(cp, strict=strict, repair=args.repair, **plan.modules)
        label = f" [{cp.label}]" if cp.label else ""
        print(
            f"restored {', '.join(plan.modules)} from {cp.ref}{label} "
            f"(saved {cp.created_at:%Y-%m-%d %H:%M:%S} UTC)"
        )
        if loaded is not None and loaded.repair is not None:
            print(loaded.repair)
            if loaded.repair.changed:
                print(f"the checkpoint itself is unchanged: %save_session {cp.session} keeps the repair")
        for note in notes:
            print(note)
        return None

    def _dry_run(
        self,
        store: BaseStore,
        cp: Checkpoint,
        modules: Mapping[str, Any],
        strict: bool,
        notes: list[str],
        repair: bool = False,
    ) -> SessionDiff:
        from ..diff import diff_states

        action = f"cannot preview {cp.ref}"
        with _user_errors(action):
            saved = store.get_state(cp)
            live = live_states(modules)
        if repair:
            from ..repair import repair_states

            saved, report = repair_states(saved, dry_run=True)
            print(report)
        chosen = {n: saved[n] for n in modules}
        result = diff_states(live, chosen, label_a="live", label_b=cp.ref)
        print(
            f"dry run: nothing was changed. Loading {cp.ref} into {', '.join(modules)} would change:"
        )
        if result.empty:
            print("nothing: the live objects already match it")
        else:
            for line in message_counts(live, chosen):
                print(line)
            print(result.summary())
        for note in notes:
            print(note)
        problem = check_load(modules, chosen, strict)
        if problem:
            print(f"and the load would fail: {problem}")
        return result

    @line_magic
    @magic_arguments()
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def sessions(self, line: str) -> Any:
        """List the sessions in the store as a DataFrame."""
        args = parse_argstring(self.sessions, line)
        store = self.open_store(args.store)
        if not store_exists(store):
            print(f"no store at {store.location} yet: %save_session creates it")
            return None
        from .. import views

        with _user_errors("cannot list sessions"):
            return views.sessions(store)

    @line_magic
    @magic_arguments()
    @argument("ref", help="a session, e.g. alice")
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def session_history(self, line: str) -> Any:
        """List the checkpoints of a session as a DataFrame (oldest first)."""
        args = parse_argstring(self.session_history, line)
        action = f"cannot show the history of {args.ref!r}"
        store = self._existing_store(args.store, action)
        from .. import views

        with _user_errors(action):
            session = str(parse_ref(args.ref).key)
            return views.history(store, session)

    @line_magic
    @magic_arguments()
    @argument(
        "--by",
        choices=("sessions", "modules", "checkpoints"),
        default="sessions",
        help="one row per session (default), per module of each session, or per checkpoint",
    )
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def session_stats(self, line: str) -> Any:
        """Where the store's space goes, as a DataFrame (bytes own to each row, and shared ones apart)."""
        args = parse_argstring(self.session_stats, line)
        action = "cannot measure the store"
        store = self._existing_store(args.store, action)
        with _user_errors(action):
            stats = store.stats()
        print(str(stats).splitlines()[0])
        return getattr(stats, args.by)

    @line_magic
    @magic_arguments()
    @argument("text", nargs="+", help="the words to look for (case-insensitive; Chinese works too)")
    @argument("--session", default=None, help="search only this session, e.g. alice")
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def session_search(self, line: str) -> Any:
        """Find messages containing TEXT across sessions and checkpoints, as a DataFrame."""
        args = parse_argstring(self.session_search, line)
        text = " ".join(args.text)
        action = f"cannot search for {text!r}"
        store = self._existing_store(args.store, action)
        with _user_errors(action):
            return store.search(text, session=args.session)

    @line_magic
    @magic_arguments()
    @argument("ref_a", help="the checkpoint before, e.g. alice@2")
    @argument(
        "ref_b",
        nargs="?",
        default=None,
        help="the checkpoint after, e.g. alice@5 (default: REF_A's parent, the checkpoint it was made after)",
    )
    @argument(
        "--live",
        action="store_true",
        help="compare REF_A with the live objects of the same names instead of another checkpoint",
    )
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def session_diff(self, line: str) -> SessionDiff:
        """Show what changed between two checkpoints, a checkpoint and its parent, or a checkpoint and the live objects."""
        args = parse_argstring(self.session_diff, line)
        action = f"cannot diff {args.ref_a!r}" + (f" with {args.ref_b!r}" if args.ref_b else "")
        if args.live and args.ref_b is not None:
            raise UsageError(f"{action}: give REF_B or --live, not both")
        store = self._existing_store(args.store, action)
        from ..diff import diff

        with _user_errors(action):
            if not args.live:
                return diff(store, args.ref_a, args.ref_b)
            cp = store.checkpoint(args.ref_a)
            live = plan_restore(self._ns, cp.modules).modules
            if not live:
                raise UsageError(
                    f"{action} with the live objects: none of its modules ({', '.join(cp.modules)}) "
                    "has a variable of that name here. Compare two checkpoints instead, e.g. "
                    f"%session_diff {cp.ref} {cp.session}"
                )
            return diff(store, cp, **live)

    @line_magic
    @magic_arguments()
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def session_panel(self, line: str) -> SessionPanel:
        """Return (and so, as a cell's last line, display) a panel to browse, diff, save, restore, fork and delete."""
        args = parse_argstring(self.session_panel, line)
        from .widgets import SessionPanel

        return SessionPanel(self.open_store(args.store), namespace=self._ns, strict=self.strict)

    @line_magic
    @magic_arguments()
    @argument("ref", nargs="?", default=None, help="the session to autosave into, e.g. alice")
    @argument(
        "names",
        nargs="*",
        help="variables to watch (default: every Stateful object, looked up each cell)",
    )
    @argument("--off", action="store_true", help="stop autosaving")
    @argument("-s", "--store", default=None, help=_STORE_HELP)
    def autosave_session(self, line: str) -> None:
        """Save a checkpoint after every cell that changed the state, labelled cell-N; --off stops."""
        args = parse_argstring(self.autosave_session, line)
        if args.off:
            auto, self._autosave = self._autosave, None
            self._unhook()
            if auto is None:
                print("autosave was not on")
            else:
                print(f"autosave off: {auto.saved} checkpoint(s) of {auto.session} were saved")
            return
        if args.ref is None:
            auto = self._autosave
            print(
                "autosave is off; start it with %autosave_session SESSION"
                if auto is None
                else f"autosave on: {auto.session} in {_shown(auto.store)} "
                f"({', '.join(auto.names) or 'every Stateful object'}); {auto.saved} saved so far"
            )
            return
        action = f"cannot autosave into {args.ref!r}"
        with _user_errors(action):
            ref = parse_ref(args.ref)
        if not ref.is_latest:
            raise UsageError(
                f"{action}: autosave needs a session, not a checkpoint; use %autosave_session {ref.key}"
            )
        store = self.open_store(args.store)
        auto = _Autosave(str(ref.key), tuple(args.names), store)
        modules, missing = pick_modules(self._ns, auto.names)
        if missing:
            raise UsageError(
                f"{action}: no variable named {', '.join(map(repr, missing))} in the notebook. "
                "Check the spelling, or run the cell that creates it first."
            )
        auto.last = self._saved_fingerprint(auto)
        self._autosave = auto
        self._hook()
        watched = (
            ", ".join(modules)
            if auto.names
            else "any Stateful object (" + (", ".join(modules) or "none yet") + ")"
        )
        print(
            f"autosave on: after each cell that changes {watched}, a checkpoint of "
            f"{auto.session} labelled {self.autosave_label_prefix}N in {_shown(store)}. "
            "Stop with %autosave_session --off"
        )

    # -- autosave ----------------------------------------------------------------

    def _autosave_modules(self, auto: _Autosave) -> dict[str, Any]:
        modules, missing = pick_modules(self._ns, auto.names)
        if missing:
            raise NbSessionsError(f"no variable named {', '.join(map(repr, missing))} any more")
        return modules

    def _saved_fingerprint(self, auto: _Autosave) -> str | None:
        """The fingerprint of the session's latest checkpoint, or None when there is none to compare."""
        if not store_exists(auto.store):
            return None
        try:
            return fingerprint(auto.store.get_state(auto.session))
        except NbSessionsError:
            return None

    def _hook(self) -> None:
        if not self._hooked and self.shell is not None:
            self.shell.events.register("post_run_cell", self._after_cell)
            self._hooked = True

    def _unhook(self) -> None:
        if self._hooked and self.shell is not None:
            self.shell.events.unregister("post_run_cell", self._after_cell)
        self._hooked = False

    def _after_cell(self, result: ExecutionResult | None = None) -> None:
        """``post_run_cell``: checkpoint when the watched state changed; never raises."""
        auto = self._autosave
        if auto is None:
            return
        cell = getattr(result, "execution_count", None)
        if not isinstance(cell, int):
            cell = self._cell_number()
        try:
            self._autosave_now(auto, cell)
        except Exception as exc:  # the user's cell must never break because of autosave
            where = f" after cell {cell}" if cell is not None else ""
            print(
                f"nb_sessions autosave: could not save {auto.session}{where}: {one_line(exc)} "
                "(autosave stays on; %autosave_session --off stops it)",
                file=sys.stderr,
            )

    def _autosave_now(self, auto: _Autosave, cell: int | None) -> Checkpoint | None:
        modules = self._autosave_modules(auto)
        if not modules:
            return None
        states = live_states(modules)
        mark = fingerprint(states)
        if mark == auto.last:
            return None
        wanted = f"{self.autosave_label_prefix}{cell if cell is not None else 'x'}"
        meta = self._metadata("%autosave_session", cell)
        for _attempt in range(5):
            taken: list[str | None] = []
            if store_exists(auto.store):
                with contextlib.suppress(NbSessionsError):
                    taken = [c.label for c in auto.store.history(auto.session)]
            try:
                cp = auto.store.save(
                    auto.session, label=unique_label(wanted, taken), metadata=meta, **modules
                )
            except ConflictError:  # another kernel took the label meanwhile: pick again
                continue
            auto.last = mark
            auto.saved += 1
            return cp
        raise ConflictError(f"could not find a free label like {wanted!r} in {auto.session}")


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register :class:`SessionMagics` and apply ``[tool.nb_sessions]`` from ``./pyproject.toml``."""
    magics = SessionMagics(ipython)
    magics.apply_pyproject()
    ipython.register_magics(magics)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Stop autosave and unregister its ``post_run_cell`` hook."""
    magics = ipython.magics_manager.registry.get(SessionMagics.__name__)
    if isinstance(magics, SessionMagics):
        magics._autosave = None
        magics._unhook()


def _shown(store: BaseStore) -> str:
    """The store's path as a person would write it: relative to the working folder when inside it."""
    path = Path(store.location)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
