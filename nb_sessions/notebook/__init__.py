"""The notebook face of nb_sessions: IPython magics, the session panel and HTML helpers.

``%load_ext nb_sessions`` registers :class:`SessionMagics`; ``SessionPanel``
is imported on first use so loading the extension does not import ipywidgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .magics import SessionMagics, load_ipython_extension, unload_ipython_extension

if TYPE_CHECKING:
    from .widgets import SessionPanel

__all__ = ["SessionMagics", "SessionPanel", "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name == "SessionPanel":
        from .widgets import SessionPanel

        return SessionPanel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
