"""The one background event loop behind every synchronous call.

A Jupyter kernel always runs an asyncio loop on its main thread, so
``asyncio.run`` fails there. Sync methods therefore run their coroutine on a
private loop in a daemon thread and wait for it. On KeyboardInterrupt the
task is cancelled and awaited, so an interrupted save commits nothing; if the
interrupt came too late (the commit had already happened) the result is
returned and a warning says so.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="nb_sessions-loop", daemon=True
            )
            thread.start()
            _loop, _thread = loop, thread
        return _loop


class _Outcome:
    """What happened to a task, handed from the loop thread to the caller."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.task: asyncio.Task[Any] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.abandoned = False  # the caller gave up before the task started: never start it


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the private loop and return its result; safe inside a running loop."""
    loop = _get_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError(
            "nb_sessions: a sync method was called from inside one of its own coroutines; "
            "use the async twin (await store.asave(...)) there"
        )
    outcome = _Outcome()

    async def runner() -> None:
        task = asyncio.current_task()
        outcome.task = task
        if outcome.abandoned:
            coro.close()
            outcome.cancelled = True
            outcome.done.set()
            return
        try:
            outcome.result = await coro
        except asyncio.CancelledError:
            outcome.cancelled = True
        except BaseException as exc:
            outcome.error = exc
        finally:
            outcome.done.set()

    try:
        # Inside the try: an interrupt may land while the task is being handed over.
        loop.call_soon_threadsafe(lambda: loop.create_task(runner()))
        _wait(outcome)
    except KeyboardInterrupt:
        outcome.abandoned = True  # if the runner has not started, it will not run the save

        def cancel() -> None:
            if outcome.task is not None:
                outcome.task.cancel()
            else:
                outcome.cancelled = True  # never scheduled (or not yet): nothing ran
                outcome.done.set()

        loop.call_soon_threadsafe(cancel)
        _wait(outcome, ignore_interrupts=True)
        if outcome.cancelled:
            raise
        if outcome.error is None:
            warnings.warn(
                "nb_sessions: the interrupt arrived after the operation had completed; "
                "its result stands",
                RuntimeWarning,
                stacklevel=2,
            )
    if outcome.error is not None:
        raise outcome.error.with_traceback(outcome.error.__traceback__)
    if outcome.cancelled:
        raise asyncio.CancelledError
    return outcome.result  # type: ignore[no-any-return]


def _wait(outcome: _Outcome, ignore_interrupts: bool = False) -> None:
    while True:
        try:
            # A timeout keeps the main thread responsive to Ctrl-C.
            if outcome.done.wait(0.1):
                return
        except KeyboardInterrupt:
            if not ignore_interrupts:
                raise
