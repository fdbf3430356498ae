"""Writer processes for the reliability tests: start, read their lines, kill, and parse what they said."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).resolve().parent / "_writer.py"


def child_env() -> dict[str, str]:
    """The environment of a writer: this one, with the repository root first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("NB_SESSIONS_LONG", None)
    return env


def writer_cmd(*args: object) -> list[str]:
    """The command line that runs ``_writer.py`` with the venv's interpreter."""
    return [sys.executable, str(WRITER), *map(str, args)]


def spawn_writer(*args: object, **pipes: Any) -> subprocess.Popen[str]:
    """Start ``_writer.py args...`` from the repository root, line-buffered text on the given pipes."""
    return subprocess.Popen(writer_cmd(*args), cwd=REPO, env=child_env(), text=True, bufsize=1, **pipes)


class Writer:
    """A running writer whose stdout lines are collected by a thread as they arrive."""

    def __init__(self, *args: object) -> None:
        self.proc = spawn_writer(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self.stderr = ""
        self._ready = threading.Event()
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("ready"):
                self._ready.set()
        self._ready.set()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_ready(self, timeout: float = 60) -> None:
        """Block until the writer printed ``ready`` (imports done, store opened)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"writer not ready after {timeout}s")
        if not any(line.startswith("ready") for line in self.lines):
            code = self.finish(timeout)
            raise RuntimeError(f"writer died before ready (exit {code}): {self.stderr}")

    def wait_lines(self, prefix: str, count: int, timeout: float = 60) -> None:
        """Block until ``count`` lines starting with ``prefix`` arrived (or the writer ended)."""
        deadline = time.monotonic() + timeout
        while sum(1 for x in self.lines if x.startswith(prefix)) < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return
            time.sleep(0.001)

    def kill(self) -> int:
        """SIGKILL the writer, reap it (so its pid is dead, not a zombie) and drain its output."""
        self.proc.kill()
        return self.finish()

    def finish(self, timeout: float = 120) -> int:
        """Wait for the writer to end and for its output to be read; return its exit status."""
        code = self.proc.wait(timeout)
        self._out.join(timeout)
        self._err.join(timeout)
        return code


class ForkServer:
    """``_writer.py serve``: forks writer processes without paying for an interpreter start each."""

    def __init__(self) -> None:
        self.proc = spawn_writer("serve", stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"the fork server died (exit {self.proc.poll()})")
        return answer

    def start(self, out: Path, *args: object) -> ForkedWriter:
        """Fork a ``crash`` writer whose output goes to ``out``."""
        answer = self._ask(" ".join(map(str, ["crash", out, *args])))
        assert answer.startswith("pid "), answer
        return ForkedWriter(self, int(answer.split()[1]), out)

    def reap(self, pid: int) -> int:
        answer = self._ask(f"reap {pid}")
        return int(answer.split()[2])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


class ForkedWriter:
    """A writer forked by :class:`ForkServer`; its lines are read from its output file."""

    def __init__(self, server: ForkServer, pid: int, out: Path) -> None:
        self.server, self.pid, self.out = server, pid, out

    @property
    def lines(self) -> list[str]:
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]

    def wait_lines(self, prefix: str, count: int, timeout: float = 60) -> None:
        """Block until ``count`` lines starting with ``prefix`` were written (or the timeout)."""
        deadline = time.monotonic() + timeout
        while sum(1 for x in self.lines if x.startswith(prefix)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"writer {self.pid} wrote {self.lines[-3:]}")
            time.sleep(0.001)

    def kill(self) -> int:
        """SIGKILL the writer and have the server reap it; return its exit status (-9)."""
        os.kill(self.pid, signal.SIGKILL)
        return self.server.reap(self.pid)


@dataclass(frozen=True)
class Commit:
    """A checkpoint a writer saw committed: ``store.save`` returned it."""

    seq: int
    tag: str
    n: int
    digest: str


def commits(lines: list[str]) -> list[Commit]:
    """The ``commit SEQ TAG N DIGEST`` lines, parsed."""
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) == 5 and parts[0] == "commit":
            out.append(Commit(int(parts[1]), parts[2], int(parts[3]), parts[4]))
    return out


def in_flight(lines: list[str]) -> tuple[str, int] | None:
    """The save that had begun but not returned when the writer died, as ``(tag, n)``."""
    begun = [line.split() for line in lines if line.startswith("begin ")]
    done = {(c.tag, c.n) for c in commits(lines)}
    if begun:
        tag, n = begun[-1][1], int(begun[-1][2])
        if (tag, n) not in done:
            return tag, n
    return None


def kill_rekeys(
    child: str, location: str, keys: list[str], points: list[str], opens: Callable[[str], None], *, delay: float = 0.0
) -> int:
    """Run the rekey ``child`` (argv: location, old key, new key, kill point) once per point; return the rotations.

    The child prints ``ready`` once its store is open, then rekeys; it kills itself -9
    at its named points, or (``delay`` > 0) is killed after ``step * delay`` seconds.
    After each run exactly one of ``keys`` must open the store (``opens`` raises
    WrongKeyError for the other); the one that does becomes the old key of the next.
    """
    from nb_sessions import WrongKeyError

    rotated = 0
    for step, point in enumerate(points):
        proc = subprocess.Popen(
            [sys.executable, "-c", child, location, keys[0], keys[1], point], stdout=subprocess.PIPE, env=child_env()
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        if delay:
            time.sleep(step * delay)  # kill points spread over the rekey and past it (not a timed assertion)
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL or (delay and proc.returncode == 0), proc.returncode
        opened = []
        for k in keys:
            try:
                opens(k)
                opened.append(k)
            except WrongKeyError:
                pass
        assert len(opened) == 1, f"kill point {point}: the store opens with {opened}"
        if opened[0] == keys[1]:
            keys.reverse()  # rotate back next time
            rotated += 1
    return rotated


_CREATOR = """
import sys, nb_sessions as nbs
from tests.conftest import Box
s = nbs.open_store(sys.argv[1], key=sys.argv[2])
for i in range(3):
    s.save(sys.argv[3], box=Box({'n': i}))
"""


def create_at_once(location: str, key: str, n: int = 4) -> None:
    """``n`` real processes open the new store at ``location`` with ``key`` at once, each saving session s<i> 3 times."""
    procs = [subprocess.Popen([sys.executable, "-c", _CREATOR, location, key, f"s{i}"], env=child_env()) for i in range(n)]
    assert [p.wait() for p in procs] == [0] * n
