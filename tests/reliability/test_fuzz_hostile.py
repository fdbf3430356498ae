"""Hostile-store fuzzer (issue 12): mutate real stores at random, run operations, allow only right data or a named error.

Each case is ``(seed, kind, mutation, operation)``; it runs in a forked worker
with a deadline and an RLIMIT_AS cap, so a hang or a huge allocation is a
failure. A failure prints a one-line reproduction.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import traceback
import warnings
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.stores.base import Ref, SessionKey
from tests.reliability._states import Box
from tests.reliability.conftest import LONG

KEYS = [SessionKey("", "a@b.c"), SessionKey("u", "s"), SessionKey("", "long")]
DEADLINE = 20.0
MEM = 1 << 31


def _modules(key: SessionKey, n: int) -> dict[str, Any]:
    tag = f"{key.user_id}/{key.session_id}#{n}"
    count = 620 if key.session_id == "long" else 3 + n
    mem = InMemoryMemory()
    mem.content = [(Msg("user", f"{tag} m{i}", "user", id=f"{tag}-{i}", metadata={"tag": tag}), []) for i in range(count)]
    return {"memory": mem, "note": Box({"tag": tag})}


def build(kind: str, where: Path) -> tuple[Path, dict[tuple[SessionKey, int], Any]]:
    path = where / ("js" if kind == "json" else "s.db")
    store = nbs.open_store(str(path))
    expected: dict[tuple[SessionKey, int], Any] = {}
    for key in KEYS:
        for n in range(3):
            mods = _modules(key, n)
            cp = store.save(key, label=f"l{n}" if n == 1 else None, **mods)
            expected[(key, cp.seq)] = json.loads(json.dumps({k: v.state_dict() for k, v in mods.items()}))
    store.delete(store.history(KEYS[1])[0])
    del expected[(KEYS[1], 1)]
    fork = store.fork(store.history(KEYS[0])[-1], "forked")
    expected[(fork.key, fork.seq)] = expected[(KEYS[0], 3)]
    return path, expected


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def mutate(rng: random.Random, kind: str, path: Path, outside: Path) -> str:
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(str(path))
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table' and name like 'nbs_%' and name not like 'nbs_fts%'")]
        table = rng.choice(tables)
        cols = [r[1] for r in con.execute(f"pragma table_info({table})")]
        what = rng.choice(["col", "delete", "dup", "trigger", "view", "bytes", "blob-swap"])
        vals: list[Any] = [None, -1, 2**62, 1.5, "", "../x", "/etc/passwd", b"\xff\x00", "x" * 1000, 0]
        try:
            if what == "col":
                col, val = rng.choice(cols), rng.choice(vals)
                con.execute(f"update {table} set {col}=? where rowid in (select rowid from {table} order by random() limit 1)", (val,))
                desc = f"col {table}.{col}={val!r:.30}"
            elif what == "delete":
                con.execute(f"delete from {table} where rowid in (select rowid from {table} order by random() limit 1)")
                desc = f"delete row {table}"
            elif what == "dup":
                con.execute(f"insert or ignore into {table} select * from {table} limit 1")
                desc = f"dup row {table}"
            elif what == "trigger":
                con.execute("create trigger evil after insert on nbs_checkpoints begin delete from nbs_checkpoints; end")
                desc = "trigger"
            elif what == "view":
                con.execute("create view nbs_evil as select 1")
                desc = "view"
            elif what == "blob-swap":  # two valid messages trade places: only the content hash tells
                rows = con.execute("select id, data from nbs_blobs order by random() limit 2").fetchall()
                if len(rows) == 2:
                    con.execute("update nbs_blobs set data=? where id=?", (rows[1][1], rows[0][0]))
                    con.execute("update nbs_blobs set data=? where id=?", (rows[0][1], rows[1][0]))
                desc = "blob-swap"
            else:
                desc = "bytes"
            con.commit()
        except sqlite3.Error as exc:  # a STRICT table refused the value: the store stays as built
            desc = f"{what} {table} refused ({exc})"
        finally:
            con.close()
        if what == "bytes":
            data = bytearray(path.read_bytes())
            off = rng.randrange(len(data))
            data[off] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
            desc = f"flip byte {off}"
        return desc
    files = _files(path)
    target = rng.choice(files)
    rel = target.relative_to(path)
    what = rng.choice(["flip", "truncate", "extend", "json", "fifo", "devzero", "symlink", "dir", "idx-lie", "entry-edit"])
    if what == "idx-lie":  # an entry index whose offsets/lengths lie, the pack still valid JSON
        idx = [f for f in files if f.suffix == ".idx"]
        if idx:
            target = rng.choice(idx)
            raw = bytearray(target.read_bytes())
            n = len(raw) // 28
            if n >= 2:
                a, b = rng.sample(range(n), 2)
                ra, rb = raw[a * 28:a * 28 + 12], raw[b * 28:b * 28 + 12]  # (offset, length) only
                raw[a * 28:a * 28 + 12], raw[b * 28:b * 28 + 12] = rb, ra
                target.write_bytes(bytes(raw))
            return f"idx-lie {target.relative_to(path)}"
    if what == "entry-edit":  # a digit changed inside a stored entry: still JSON, another message
        packs = [f for f in files if f.suffix == ".jsonl"]
        if packs:
            target = rng.choice(packs)
            data = bytearray(target.read_bytes())
            digits = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39]
            if digits:
                at = rng.choice(digits)
                data[at] = 0x30 + (data[at] - 0x30 + 1) % 10
                target.write_bytes(bytes(data))
            return f"entry-edit {target.relative_to(path)}"
    if what == "flip":
        data = bytearray(target.read_bytes())
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    elif what == "truncate":
        target.write_bytes(target.read_bytes()[: rng.randrange(max(1, target.stat().st_size))])
    elif what == "extend":
        target.write_bytes(target.read_bytes() + rng.randbytes(rng.randrange(1, 64)))
    elif what == "json":
        try:
            doc = json.loads(target.read_bytes())
        except ValueError:
            doc = None
        val = rng.choice([10**15, -5, 1.5, "x", None, [], {}, "../x", "/etc", True])
        if isinstance(doc, dict) and doc:
            k = rng.choice(list(doc))
            doc[k] = val
            target.write_text(json.dumps(doc))
            what = f"json {k}={val!r}"
        elif isinstance(doc, list) and doc:
            doc[rng.randrange(len(doc))] = val
            target.write_text(json.dumps(doc))
            what = f"json item={val!r}"
    elif what == "fifo":
        target.unlink()
        os.mkfifo(target)
    elif what == "devzero":
        target.unlink()
        target.symlink_to("/dev/zero")
    elif what == "symlink":
        parent = target.parent
        shutil.move(str(parent), str(outside / "moved"))
        parent.symlink_to(outside / "moved")
        rel = parent.relative_to(path)
    else:
        target.unlink()
        target.mkdir()
    return f"{what} {rel}"


def _check_state(state: Any, cp: Any, expected: dict[tuple[SessionKey, int], Any]) -> None:
    want = expected.get((cp.key, cp.seq))
    if want is None and cp.origin == "json-file":
        # A latest file rewritten by someone else (AgentScope, or a hand edit that is still
        # JSON) is, by design, one more checkpoint: its state is the file's content, exactly.
        from nb_sessions import codec

        latest = cp.store._latest_file(cp.key)
        want = codec.loads(latest.read_bytes(), str(latest))
    if want is None or state != want:
        raise AssertionError(f"WRONG DATA for {cp.key}@{cp.seq}")


def _check_replayed(store: Any, fresh: Any, expected: dict[tuple[SessionKey, int], Any]) -> None:
    """Every checkpoint an import or a copy wrote holds what the source holds at its origin.

    Copies are exact: a checkpoint keeps its source's number.
    """
    for s in fresh.sessions():
        for cp in fresh.history(s.key):
            original = store.checkpoint(Ref(cp.key, seq=cp.seq))
            if fresh.get_state(cp) != store.get_state(original):
                raise AssertionError(f"WRONG COPY of {original.key}@{original.seq}")
            _check_state(store.get_state(original), original, expected)


def operate(op: str, rng: random.Random, path: Path, expected: dict[tuple[SessionKey, int], Any], out: Path) -> None:
    from nb_sessions import bundle, cli, views

    store = nbs.open_store(str(path))
    key = rng.choice(KEYS)
    if op == "sessions":
        got = {s.key for s in store.sessions()}
        if not got <= {k for k, _ in expected}:
            raise AssertionError(f"PHANTOM sessions {got}")
    elif op == "get_state":
        for cp in store.history(key):
            _check_state(store.get_state(cp), cp, expected)
    elif op == "load":
        cp = store.checkpoint(key)
        mods = {"memory": InMemoryMemory(), "note": Box()}
        store.load(cp, **mods)
        loaded = json.loads(json.dumps({k: v.state_dict() for k, v in mods.items()}))
        if cp.origin == "json-file" and (cp.key, cp.seq) not in expected:
            # Someone else's write of the latest file: the objects hold what that file says.
            _check_state(store.get_state(cp), cp, expected)
            again = {"memory": InMemoryMemory(), "note": Box()}
            for name, state in store.get_state(cp).items():
                again[name].load_state_dict(state)
            if loaded != json.loads(json.dumps({k: v.state_dict() for k, v in again.items()})):
                raise AssertionError(f"WRONG DATA loaded from {cp.key}@{cp.seq}")
        else:
            _check_state(loaded, cp, expected)
    elif op == "save":
        cp = store.save(key, **_modules(key, 9))
        got = store.get_state(cp)
        if got["note"]["value"]["tag"] != f"{key.user_id}/{key.session_id}#9":
            raise AssertionError("WRONG DATA after save")
    elif op == "label":
        store.label(store.checkpoint(key), "fz")
    elif op == "fork":
        cp = store.fork(store.checkpoint(key), "fz-fork")
        _check_state(store.get_state(store.checkpoint(SessionKey(cp.user_id, "fz-fork"))), store.checkpoint(key), expected)
    elif op == "delete":
        store.delete(store.history(key)[0])
    elif op == "prune":
        store.prune(key, keep_last=1)
    elif op == "vacuum":
        store.vacuum()
    elif op == "search":
        store.search("m1")
    elif op == "views":
        views.messages(store, store.checkpoint(key))
        views.sessions(store)
        nbs.diff(store, store.history(key)[0], store.checkpoint(key))
    elif op == "bundle":
        bundle.write_bundle(store, None, out / "b.json")
        fresh = nbs.open_store(str(out / "imp.db"))
        bundle.import_bundle(fresh, bundle.read_bundle(out / "b.json"))
        _check_replayed(store, fresh, expected)
    elif op == "copy":
        fresh = nbs.open_store(str(out / "copy"))
        bundle.copy_sessions(store, fresh)
        _check_replayed(store, fresh, expected)
    else:  # cli
        args = rng.choice([["ls"], ["check"], ["show", "u/s"], ["history", "long"], ["search", "m1"], ["prune", "--keep-last", "1"], ["vacuum"], ["export", "--bundle", "--all", "-o", str(out / "c.json")]])
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli.main(["--store", str(path), *args])


OPS = ["sessions", "get_state", "load", "save", "label", "fork", "delete", "prune", "vacuum", "search", "views", "bundle", "copy", "cli"]


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, bytes]]:
    snap = {}
    for p in root.rglob("*"):
        if skip in p.parents or p == skip:
            continue
        snap[str(p)] = (p.lstat().st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
    return snap


def run_case(seed: int, kind: str, template: Path, expected: dict[tuple[SessionKey, int], Any], base: Path) -> tuple[str, str]:
    """Return (outcome, one-line description)."""
    rng = random.Random(seed)
    case = base / f"c{seed}"
    store_dir, outside, out = case / "store", case / "outside", case / "out"
    shutil.copytree(template, store_dir, symlinks=True)
    outside.mkdir()
    (outside / "sentinel.txt").write_text("keep")
    out.mkdir()
    path = store_dir / ("js" if kind == "json" else "s.db")
    mutation = mutate(rng, kind, path, outside)
    op = OPS[seed % len(OPS)]
    before = _snapshot(case, store_dir)
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rd)
        res = "ok"
        try:
            resource.setrlimit(resource.RLIMIT_AS, (MEM, MEM))
            os.chdir(out)
            with warnings.catch_warnings(record=True) as caught:
                # A search of damaged data answers from the rest and names what it passed over.
                warnings.simplefilter("always", nbs.IncompleteSearchWarning)
                operate(op, rng, path, expected, out)
            if any(issubclass(w.category, nbs.IncompleteSearchWarning) for w in caught):
                res = "named IncompleteSearchWarning"
        except nbs.NbSessionsError as exc:
            res = f"named {type(exc).__name__}"
        except BaseException as exc:  # the point is to catch it
            tb = traceback.format_exc().strip().splitlines()
            res = f"FAIL {type(exc).__name__}: {str(exc)[:150]!r} at {tb[-3].strip() if len(tb) > 2 else ''}"
        os.write(wr, res.encode()[:4000])
        os._exit(0)
    os.close(wr)
    import select
    import time

    deadline = time.monotonic() + DEADLINE
    chunks = b""
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([rd], [], [], max(0, left))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            res = "FAIL hang"
            break
        b = os.read(rd, 4096)
        if not b:
            res = chunks.decode() or "FAIL worker died"
            break
        chunks += b
    os.close(rd)
    os.waitpid(pid, 0)
    for name in os.listdir(case):
        if name not in ("store", "outside", "out"):
            res = f"FAIL write outside: {name}"
    after = _snapshot(case, store_dir)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k) and not k.startswith(str(out))}
    if changed and not res.startswith("FAIL"):
        res = f"FAIL write outside: {sorted(changed)[:3]}"
    shutil.rmtree(case, ignore_errors=True)
    return res, f"seed={seed} kind={kind} mutation={mutation!r} op={op} -> {res}"


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_fuzz_hostile_short(kind: str, tmp_path: Path, figures: Any) -> None:
    _fuzz(kind, tmp_path, figures, 10_000 if LONG else 150)


def _fuzz(kind: str, tmp_path: Path, figures: Any, cases: int) -> None:
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    _, expected = build(kind, tpl)
    counts: dict[str, int] = {}
    failures = []
    for seed in range(cases):
        res, line = run_case(seed, kind, tpl, expected, tmp_path)
        cls = res.split(":")[0]
        counts[cls] = counts.get(cls, 0) + 1
        if res.startswith("FAIL"):
            failures.append(line)
            print(line)
    figures.record(kind, cases=cases, **{k.replace(" ", "_"): v for k, v in sorted(counts.items())}, failures=len(failures))
    assert not failures, "\n".join(failures[:40])
