"""A writer process for the reliability tests, run as ``python _writer.py MODE ...``
with the repository root on PYTHONPATH (see :func:`tests.reliability._proc.writer_cmd`).

``crash STORE SESSION SIZE TAG API``
    Save deterministic states (see ``_states``) forever. Before each save it
    prints ``begin TAG N``; after the save returns, ``commit SEQ TAG N DIGEST``
    (flushed), so the parent knows exactly what was committed when it sends
    SIGKILL. ``API`` is ``sync`` or ``async``.

``serve``
    A fork server: with everything imported once, read commands from stdin,
    one per line. ``crash OUT STORE SESSION SIZE TAG API`` forks a child that
    runs ``crash`` with its stdout going to the file OUT, and answers
    ``pid N``; ``reap N`` waits for child N (so its pid is really dead, not a
    zombie, when the parent looks at the store) and answers ``reaped N STATUS``.
    Forking saves the interpreter start (over a second here) on each of the
    hundreds of kill -9 trials; the child is a process of its own all the same.

``load STORE SESSION SIZE TAG COUNT GO_FILE``
    Wait for ``GO_FILE`` to exist (so every writer starts at once), then make
    ``COUNT`` saves, printing a commit line after each. Any error is printed
    to stderr and the exit status is 1.

``diskfull STORE HOW``
    Save two checkpoints, run out of space (``HOW``: ``filler`` fills the
    file system, a small tmpfs, leaving 120 KB; ``rlimit`` sets a soft
    RLIMIT_FSIZE just above the store's files, with SIGXFSZ ignored so a
    write past it fails with EFBIG), try a save that does not fit, get the
    space back, let a second store instance save another session, then save
    the same state again with the first instance. Print one JSON report.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg
from tests.reliability._states import Box, digest, live_states, make_modules


def _save(store: nbs.BaseStore, session: str, size: str, tag: str, n: int) -> str:
    modules = make_modules(size, f"{tag}-{n}", n)
    label = f"{tag}-{n}" if n % 5 == 4 else None
    cp = store.save(session, label=label, metadata={"writer": tag, "n": n}, **modules)
    return f"commit {cp.seq} {tag} {n} {digest(live_states(modules))}"


def crash(path: str, session: str, size: str, tag: str, api: str) -> None:
    store = nbs.open_store(path)
    print("ready", flush=True)
    if api == "async":
        asyncio.run(_crash_async(store, session, size, tag))
        return
    n = 0
    while True:
        print(f"begin {tag} {n}", flush=True)
        print(_save(store, session, size, tag, n), flush=True)
        n += 1


async def _crash_async(store: nbs.BaseStore, session: str, size: str, tag: str) -> None:
    n = 0
    while True:
        print(f"begin {tag} {n}", flush=True)
        modules = make_modules(size, f"{tag}-{n}", n)
        label = f"{tag}-{n}" if n % 5 == 4 else None
        cp = await store.asave(session, label=label, metadata={"writer": tag, "n": n}, **modules)
        print(f"commit {cp.seq} {tag} {n} {digest(live_states(modules))}", flush=True)
        n += 1


def load(path: str, session: str, size: str, tag: str, count: int, go_file: str) -> int:
    store = nbs.open_store(path)
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(go_file):
        if time.monotonic() > deadline:
            print("the go file never appeared", file=sys.stderr)
            return 1
        time.sleep(0.002)
    think = random.Random(tag)
    for n in range(count):
        if n:
            # A pause between saves, as a user's cells have: without it, the writer that
            # holds a lock takes it again before the others' polls see it free, and the
            # writers run one after another instead of contending.
            time.sleep(think.uniform(0, 0.02))
        try:
            print(_save(store, session, size, tag, n), flush=True)
        except Exception as exc:
            print(
                f"error {type(exc).__module__}.{type(exc).__name__}: {exc}",
                file=sys.stderr,
                flush=True,
            )
            return 1
    return 0


def _memory(prefix: str, count: int, size: int) -> InMemoryMemory:
    memory = InMemoryMemory()
    memory.content = [
        (
            Msg(
                "user",
                f"{prefix}{i} " + "x" * size,
                "user",
                id=f"{prefix}{i}",
                timestamp="2025-01-01 00:00:00.000",
            ),
            [],
        )
        for i in range(count)
    ]
    return memory


def _error(exc: BaseException) -> dict[str, object]:
    return {
        "type": type(exc).__name__,
        "nb_sessions_error": isinstance(exc, nbs.NbSessionsError),
        "store_error": isinstance(exc, nbs.StoreError),
        "message": str(exc),
    }


def diskfull(path: str, how: str) -> None:
    import resource
    import signal

    folder = Path(path).parent
    store = nbs.open_store(path)
    small = _memory("a", 40, 100)
    store.save("s", memory=small, note=Box("first"))
    store.save("s", memory=small, note=Box("second"))
    big = _memory("a", 40, 100)
    big.content += _memory("b", 40, 5000).content
    report: dict[str, object] = {}
    filler = folder / "filler"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if how == "filler":
        vfs = os.statvfs(folder)
        with open(filler, "wb") as fh:
            fh.write(b"\0" * max(0, vfs.f_bavail * vfs.f_frsize - 120_000))
    else:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        largest = max(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 60_000, hard))
    try:
        cp = store.save("s", memory=big, note=Box("too big"))
        report["full_save"] = {"saved": cp.seq}
    except Exception as exc:
        report["full_save"] = _error(exc)
    finally:
        if how == "filler":
            filler.unlink()
        else:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    report["history_after_full"] = [c.seq for c in store.history("s")]
    other = nbs.open_store(path)  # another writer, meanwhile
    other.save("other", memory=_memory("z", 80, 3000))
    try:
        cp = store.save("s", memory=big, note=Box("retry"))
        got = nbs.open_store(path).get_state(cp)
        report["retry"] = {
            "seq": cp.seq,
            "ids_ok": [m["id"] for m, _ in got["memory"]["content"]]
            == [m.id for m, _ in big.content],
            "note": got["note"]["value"],
        }
    except Exception as exc:
        report["retry"] = _error(exc)
    print(json.dumps(report), flush=True)


def serve() -> int:
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "crash":
            out, *rest = args
            pid = os.fork()
            if pid == 0:  # the child: a writer whose stdout is the file ``out``
                code = 0
                try:
                    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(fd, 1)
                    os.close(fd)
                    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                    crash(*rest)
                except BaseException as exc:
                    print(f"error {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    code = 1
                os._exit(code)
            print(f"pid {pid}", flush=True)
        elif cmd == "reap":
            _, status = os.waitpid(int(args[0]), 0)
            print(f"reaped {args[0]} {os.waitstatus_to_exitcode(status)}", flush=True)
        else:
            print(f"unknown command {cmd!r}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    mode, *args = argv
    if mode == "crash":
        crash(*args)
        return 0
    if mode == "serve":
        return serve()
    if mode == "load":
        path, session, size, tag, count, go_file = args
        return load(path, session, size, tag, int(count), go_file)
    if mode == "diskfull":
        diskfull(*args)
        return 0
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
