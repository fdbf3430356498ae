"""Several processes saving into one store at once: every checkpoint lands, numbered without gaps.

4 writer processes x 100 saves, into one session and into one session each,
for both stores; and two real Jupyter kernels autosaving the same session
with ``%autosave_session``.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from tests.reliability._proc import Commit, Writer, child_env, commits
from tests.reliability._states import Box, digest, expected_states
from tests.reliability.conftest import Figures

KINDS = ["sqlite", "json"]


def store_path(tmp_path: Path, kind: str) -> Path:
    return tmp_path / ("store.db" if kind == "sqlite" else "store")


@pytest.mark.parametrize("layout", ["same-session", "own-sessions"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_concurrent_writer_processes(
    version: str, kind: str, layout: str, tmp_path: Path, figures: Figures
) -> None:
    processes, saves = (4, 100) if version == "short" else (8, 300)
    path = store_path(tmp_path, kind)
    go = tmp_path / "go"
    sessions = [("shared" if layout == "same-session" else f"own{i}") for i in range(processes)]
    writers = [
        Writer("load", path, sessions[i], "small", f"w{i}", saves, go) for i in range(processes)
    ]
    for w in writers:
        w.wait_ready()
    start = time.monotonic()
    go.touch()
    codes = [w.finish(timeout=600) for w in writers]
    elapsed = time.monotonic() - start
    for w, code in zip(writers, codes, strict=True):
        assert code == 0, f"a writer failed: {w.stderr}"
        assert "locked" not in w.stderr.lower(), w.stderr
    done: dict[str, list[Commit]] = {}
    for w, session in zip(writers, sessions, strict=True):
        mine = commits(w.lines)
        assert [c.n for c in mine] == list(range(saves)), "a writer skipped a save"
        assert [c.seq for c in mine] == sorted(c.seq for c in mine), (
            "seqs went backwards for one writer"
        )
        done.setdefault(session, []).extend(mine)

    store = nbs.open_store(path)
    present = 0
    for session, mine in done.items():
        history = store.history(session)
        seqs = [c.seq for c in history]
        assert seqs == list(range(1, len(mine) + 1)), f"{session}: not 1..{len(mine)} without gaps"
        assert sorted(c.seq for c in mine) == seqs, f"{session}: two writers got the same seq"
        by_seq = {c.seq: c for c in mine}
        for cp in history:
            c = by_seq[cp.seq]
            assert (cp.metadata["writer"], cp.metadata["n"]) == (c.tag, c.n)
            present += 1
        for c in random.Random(session).sample(mine, min(40, len(mine))) + mine[-1:]:
            got = store.get_state(f"{session}@{c.seq}")
            assert digest(got) == c.digest
            assert got == expected_states("small", f"{c.tag}-{c.n}", c.n)
    total = processes * saves
    assert present == total
    if layout == "same-session":  # the writers really took turns, not one after the other
        owner = {c.seq: c.tag for c in done["shared"]}
        switches = sum(owner[s] != owner[s + 1] for s in range(1, total))
        assert switches > processes, f"only {switches} switches between writers: no contention"
    figures.record(
        f"{kind}, {layout}",
        processes=processes,
        saves_each=saves,
        checkpoints_written=total,
        present=present,
        lost=0,
        duplicate_seqs=0,
        gaps=0,
        locked_errors=0,
        seconds=round(elapsed, 1),
        saves_per_second=round(total / elapsed),
    )


def test_a_json_store_created_by_two_processes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers creating a new JSON store at once, hit on purpose.

    The folder appears right after this writer checked that it did not exist
    (it once failed with "cannot create store folder ...: File exists"; seen
    once in 8 writers x 300 saves).
    """
    path = tmp_path / "store"
    real_exists = Path.exists

    def exists_then_raced(self: Path, *args: Any, **kwargs: Any) -> bool:
        if self == path and not real_exists(path):
            path.mkdir(mode=0o700)  # the other process, between the check and the mkdir
            return False
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists_then_raced)
    store = nbs.open_store(path)
    store.save("s", box=Box(1))
    monkeypatch.undo()
    assert store.get_state("s") == {"box": {"value": 1}}


# -- two real kernels ------------------------------------------------------------

KERNEL_SETUP = """
from tests.reliability._states import Box
box = Box({{"kernel": {name!r}, "n": 0}})
"""


class Kernel:
    """A real ipykernel (the venv's python3 kernel) driven through jupyter_client.

    Its environment puts the repository first on PYTHONPATH, so cells can
    import ``tests.reliability._states``.
    """

    def __init__(self, name: str, cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel

        self.name = name
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=child_env())
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.errors: list[str] = []

    def run(self, code: str) -> str:
        """Execute a cell; return what it printed. Errors are collected."""
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream":
                (out if content["name"] == "stdout" else self.stderr).append(content["text"])
            elif kind == "error":
                self.errors.append(f"{content['ename']}: {content['evalue']}")

        reply = self.kc.execute_interactive(code, timeout=120, output_hook=hook)
        if reply["content"]["status"] != "ok":
            self.errors.append(f"{code!r}: {reply['content'].get('ename')}")
        text = "".join(out)
        self.stdout.append(text)
        return text

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_two_kernels_autosaving_one_session(
    version: str, kind: str, tmp_path: Path, figures: Figures
) -> None:
    cells = 15 if version == "short" else 150
    path = store_path(tmp_path, kind)
    kernels: list[Kernel] = []
    try:
        kernels = [Kernel(name, tmp_path) for name in ("A", "B")]
        for k in kernels:
            k.run("%load_ext nb_sessions")
            k.run(KERNEL_SETUP.format(name=k.name))
        for k in kernels:
            k.run(f"%autosave_session shared box --store {path}")
        barrier = threading.Barrier(2)

        def work(k: Kernel) -> None:
            barrier.wait()
            for n in range(1, cells + 1):
                k.run(f"box.value = {{'kernel': {k.name!r}, 'n': {n}}}")

        threads = [threading.Thread(target=work, args=(k,)) for k in kernels]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        saved = {}
        for k in kernels:
            status = k.run("%autosave_session")
            found = re.search(r"(\d+) saved so far", status)
            assert found, status
            saved[k.name] = int(found.group(1))
            k.run("%autosave_session --off")
        for k in kernels:
            assert k.errors == [], k.errors
            assert not any("could not save" in e for e in k.stderr), k.stderr
    finally:
        for k in kernels:
            k.close()

    store = nbs.open_store(path)
    history = store.history("shared")
    seqs = [c.seq for c in history]
    assert seqs == list(range(1, len(seqs) + 1)), "gaps or duplicates in the shared session"
    assert len(seqs) == sum(saved.values())
    labels = [c.label for c in history]
    assert None not in labels and len(set(labels)) == len(labels), "autosave labels must be unique"
    values = [(v["kernel"], v["n"]) for v in (store.get_state(c)["box"]["value"] for c in history)]
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(values))
    assert switches >= 2, "the two kernels never interleaved their saves"
    for name in ("A", "B"):
        mine = [n for k, n in values if k == name]
        assert mine == sorted(mine), f"kernel {name}'s checkpoints are out of order"
        assert set(range(1, cells + 1)) <= set(mine), f"kernel {name} lost a cell's state"
    figures.record(
        kind,
        kernels=2,
        cells_each=cells,
        checkpoints=len(seqs),
        saved_by={k: v for k, v in saved.items()},
        interleavings=switches,
        lost=0,
        duplicate_seqs=0,
        duplicate_labels=0,
        autosave_errors=0,
    )
