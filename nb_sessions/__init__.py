"""nb_sessions: checkpoint, restore, time-travel and explore AI-agent state from Jupyter.

Compatible with AgentScope 1.x session files and objects. The core never
imports IPython; ``%load_ext nb_sessions`` loads the notebook face lazily.
"""

from __future__ import annotations

from typing import Any

from . import views
from .bundle import copy_sessions, import_bundle, read_bundle, write_bundle
from .diff import SessionDiff, diff
from .errors import (
    CheckpointNotFoundError,
    ConflictError,
    IncompleteSearchWarning,
    InvalidIdError,
    KeyRequiredError,
    MigrationError,
    MissingDependencyError,
    NbSessionsError,
    NothingToLoadError,
    NotSerializableError,
    PlaintextRefusedError,
    ReadOnlyStoreError,
    SessionNotFoundError,
    SessionNotFoundValueError,
    StateError,
    StateMismatchError,
    StoreCorruptedError,
    StoreError,
    WrongKeyError,
)
from .migrate import MigrationReport, migrate
from .sessions import JSONSession, PostgresSession, SQLiteSession
from .state import PydanticState, Stateful, StateModule, as_stateful
from .stores import (
    DEFAULT_STORE,
    BaseStore,
    Checkpoint,
    JSONStore,
    PostgresStore,
    PruneResult,
    SessionInfo,
    SQLiteStore,
    VacuumResult,
    open_store,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_STORE",
    "BaseStore",
    "Checkpoint",
    "CheckpointNotFoundError",
    "ConflictError",
    "IncompleteSearchWarning",
    "InvalidIdError",
    "JSONSession",
    "JSONStore",
    "KeyRequiredError",
    "MigrationError",
    "MigrationReport",
    "MissingDependencyError",
    "NbSessionsError",
    "NotSerializableError",
    "NothingToLoadError",
    "PlaintextRefusedError",
    "PostgresSession",
    "PostgresStore",
    "PruneResult",
    "PydanticState",
    "ReadOnlyStoreError",
    "SQLiteSession",
    "SQLiteStore",
    "SessionDiff",
    "SessionInfo",
    "SessionNotFoundError",
    "SessionNotFoundValueError",
    "SessionPanel",
    "StateError",
    "StateMismatchError",
    "StateModule",
    "Stateful",
    "StoreCorruptedError",
    "StoreError",
    "VacuumResult",
    "WrongKeyError",
    "__version__",
    "as_stateful",
    "copy_sessions",
    "diff",
    "import_bundle",
    "load_ipython_extension",
    "migrate",
    "open_store",
    "read_bundle",
    "unload_ipython_extension",
    "views",
    "write_bundle",
]


_LAZY_MODULES = ("redact", "repair", "search", "chunks", "codec")


def __getattr__(name: str) -> Any:
    # The panel needs ipywidgets (and so IPython): imported only when asked for.
    if name == "SessionPanel":
        from .notebook.widgets import SessionPanel

        return SessionPanel
    if name == "VersionedStorage":  # imports AgentScope 2.x: only when asked for
        from .versioned import VersionedStorage

        return VersionedStorage
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nb_sessions``: register the magics."""
    from .notebook import magics

    magics.load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nb_sessions``: stop autosave and drop the magics' hooks."""
    from .notebook import magics

    magics.unload_ipython_extension(ipython)
