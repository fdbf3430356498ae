"""``nb-sessions copy`` between SQLite, PostgreSQL and JSON stores, in every direction."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.stores import SessionKey

from ..conftest import Box
from ..test_cli import run

KINDS = ("sqlite", "json", "postgres")


def _target(kind: str, tmp_path: Path, name: str, request: pytest.FixtureRequest) -> str:
    if kind == "postgres":
        return str(request.getfixturevalue("pg_server_module_fresh")())
    return str(tmp_path / (f"{name}.db" if kind == "sqlite" else name))


@pytest.fixture
def pg_server_module_fresh(pg_server: str):  # type: ignore[no-untyped-def]
    from .. import pg_server as module

    return lambda: module.fresh_database(pg_server)


@pytest.mark.parametrize(("src_kind", "dst_kind"), list(itertools.permutations(KINDS, 2)))
def test_copy_keeps_every_checkpoint(
    src_kind: str, dst_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src_at = _target(src_kind, tmp_path, "src", request)
    dst_at = _target(dst_kind, tmp_path, "dst", request)
    src = nbs.open_store(src_at)
    messages = [{"role": "user", "content": f"message {i} 你好"} for i in range(40)]
    for n in (10, 20, 40):
        src.save(
            SessionKey("ann", "chat"),
            f"at{n}" if n != 20 else None,
            {"n": n},
            memory=Box(messages[:n]),
        )
    src.save("solo", None, {}, agent=Box({"x": 1}))
    done = run(tmp_path, "copy", src_at, dst_at)
    assert done.returncode == 0, done.stderr
    dst = nbs.open_store(dst_at)
    for key in ("ann/chat", "solo"):
        ref = SessionKey(*key.split("/")) if "/" in key else key
        before, after = src.history(ref), dst.history(ref)
        assert [c.seq for c in after] == [c.seq for c in before]
        assert [c.label for c in after] == [c.label for c in before]
        for b, a in zip(before, after, strict=True):
            assert a.metadata["original_created_at"] == b.created_at.isoformat()
            assert {
                k: v
                for k, v in a.metadata.items()
                if k in b.metadata and k != "nb_sessions_version"
            } == {k: v for k, v in b.metadata.items() if k != "nb_sessions_version"}
            assert dst.get_state(a) == src.get_state(b)
