"""Copies between SQLite, JSON and PostgreSQL stores, plain and encrypted, in every direction, are exact."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nb_sessions as nbs
from nb_sessions import bundle
from nb_sessions.errors import ConflictError, NbSessionsError, PlaintextRefusedError, StoreError
from nb_sessions.stores import SessionKey

from ..conftest import TEST_KEY, Box
from ..test_bundle import exact
from ..test_cli import run

KINDS = ("sqlite", "json", "postgres", "sqlite-encrypted", "postgres-encrypted")
ANN = SessionKey("ann", "chat")


@pytest.fixture
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, str], str]:
    """``place(kind, name)``: where a new, empty store of that kind lives (a fresh database for PostgreSQL)."""

    def make(kind: str, name: str) -> str:
        if kind.startswith("postgres"):
            from .. import pg_server

            return pg_server.fresh_database(request.getfixturevalue("pg_server"))
        return str(tmp_path / (f"{name}.db" if kind.startswith("sqlite") else name))

    return make


def _open(kind: str, at: str) -> nbs.BaseStore:
    return nbs.open_store(at, key=TEST_KEY) if kind.endswith("-encrypted") else nbs.open_store(at)


def _fill(store: nbs.BaseStore) -> None:
    """Two sessions: ``ann/chat`` with a branch, labels, and gaps left by prune and delete; ``solo``."""
    messages = [{"role": "user", "content": f"message {i} 你好"} for i in range(40)]
    memory = Box([])
    for n in (5, 10, 20, 30):
        memory.value = messages[:n]
        store.save(ANN, f"at{n}" if n in (10, 30) else None, {"n": n}, memory=memory)
    store.load(f"{ANN}@at10", memory=memory)
    memory.value = [*messages[:10], {"role": "assistant", "content": "a branch"}]
    store.save(ANN, "branch", {"n": "b"}, memory=memory)  # @5, parent @2
    memory.value = messages
    store.save(ANN, None, {"n": 40}, memory=memory)  # @6, parent @5
    store.prune(ANN, keep_last=2)  # @1 and @3 go: @2's parent and @4's are gone
    store.save("solo", None, {}, agent=Box({"x": 1}))
    store.save("solo", None, {}, agent=Box({"x": 2}))
    store.delete("solo@2")  # the latest gone: the source numbers on from 3


def _assert_exact(src: nbs.BaseStore, dst: nbs.BaseStore, *sessions: str | SessionKey) -> None:
    for session in sessions:
        assert exact(dst, session) == exact(src, session), session


@pytest.mark.parametrize(("src_kind", "dst_kind"), list(itertools.permutations(KINDS, 2)))
def test_nb_sessions_copy_is_exact(
    src_kind: str, dst_kind: str, place: Callable[[str, str], str], tmp_path: Path
) -> None:
    src_at, dst_at = place(src_kind, "src"), place(dst_kind, "dst")
    src = _open(src_kind, src_at)
    _fill(src)
    history = src.history(ANN)
    assert [(c.seq, c.parent, c.label) for c in history] == [(2, 1, "at10"), (4, 3, "at30"), (5, 2, "branch"), (6, 5, None)]
    args = ["copy", src_at, dst_at]
    sealed_src, sealed_dst = src_kind.endswith("-encrypted"), dst_kind.endswith("-encrypted")
    if sealed_src:
        args += ["--key", TEST_KEY] + ([] if sealed_dst else ["--plaintext"])
    if sealed_dst:
        args += ["--to-key", TEST_KEY]
    done = run(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert "copied 2 session(s), 5 checkpoint(s)" in done.stdout
    dst = _open(dst_kind, dst_at)
    assert getattr(dst, "encrypted", False) == sealed_dst
    _assert_exact(src, dst, ANN, "solo")
    # History is equal; where numbering goes on is each store's own: after the source lost its
    # latest checkpoint (@2 of solo), its next is @3 and the copy's, @2.
    assert (src.save("solo", agent=Box(3)).seq, dst.save("solo", agent=Box(3)).seq) == (3, 2)
    assert dst.save(ANN, memory=Box([])).seq == 7


def test_an_encrypted_store_is_copied_into_a_plain_one_only_when_told(tmp_path: Path) -> None:
    src = nbs.open_store(tmp_path / "secret.db", key=TEST_KEY)
    src.save("s", agent=Box("secret"))
    plain = nbs.open_store(tmp_path / "plain")
    with pytest.raises(PlaintextRefusedError, match=r"plaintext=True.*--plaintext") as refused:
        bundle.copy_sessions(src, plain)
    assert "--to-key" in str(refused.value) and refused.value.location == plain.location
    assert plain.sessions() == []
    bundle.copy_sessions(src, plain, plaintext=True)
    _assert_exact(src, plain, "s")
    sealed = nbs.open_store(tmp_path / "sealed.db", key="another key")
    bundle.copy_sessions(src, sealed)  # encrypted to encrypted needs no word
    _assert_exact(src, sealed, "s")
    result = run(tmp_path, "copy", str(tmp_path / "secret.db"), str(tmp_path / "plain2"), "--key", TEST_KEY)
    assert result.returncode != 0 and "--plaintext" in result.stderr
    assert not (tmp_path / "plain2").exists() or nbs.open_store(tmp_path / "plain2").sessions() == []


class _Fail(StoreError):
    """The failure injected into a copy."""


@pytest.mark.parametrize("failure", [_Fail, KeyboardInterrupt])
@pytest.mark.parametrize("dst_kind", KINDS)
def test_a_copy_failing_midway_leaves_no_partial_session(
    dst_kind: str, failure: type[BaseException], place: Callable[[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = nbs.open_store(place("sqlite", "src"))
    _fill(src)
    dst = _open(dst_kind, place(dst_kind, "dst"))
    write = dst._write
    calls: list[int] = []

    async def failing(*args: Any, **kwargs: Any) -> nbs.Checkpoint:
        calls.append(kwargs["at"].seq)
        if len(calls) == 3:  # the third checkpoint of ann/chat: two are written already
            raise failure("injected")
        return await write(*args, **kwargs)

    monkeypatch.setattr(dst, "_write", failing)
    with pytest.raises(failure, match="injected"):
        bundle.copy_sessions(src, dst, [ANN, "solo"])
    assert calls == [2, 4, 5]
    assert dst.sessions() == []
    monkeypatch.undo()
    bundle.copy_sessions(src, dst)  # nothing left in the way: the copy starts again from scratch
    _assert_exact(src, dst, ANN, "solo")


def test_a_session_made_meanwhile_is_never_merged_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = nbs.open_store(tmp_path / "src.db")
    src.save("s", agent=Box(1))
    dst = nbs.open_store(tmp_path / "dst")
    monkeypatch.setattr(bundle, "_refuse_existing", lambda *a: None)  # another writer made "s" after the check
    dst.save("s", agent=Box("theirs"))
    with pytest.raises(ConflictError, match=r"s@1 .*up to 1 already"):
        bundle.copy_sessions(src, dst)
    assert dst.get_state("s") == {"agent": {"value": "theirs"}}  # theirs, untouched
    assert len(dst.history("s")) == 1


# -- random histories through every store --------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("save"), st.integers(0, 3)),  # append that many messages, then save
        st.tuples(st.just("back"), st.integers(1, 6)),  # load the checkpoint that many before the latest
        st.tuples(st.just("label"), st.integers(0, 6)),
        st.tuples(st.just("prune"), st.integers(1, 4)),
        st.tuples(st.just("delete"), st.integers(0, 6)),
    ),
    min_size=1,
    max_size=25,
)


def _play(store: nbs.BaseStore, ops: list[tuple[str, int]]) -> None:
    memory, labels = Box([]), 0
    store.save("s", memory=memory)
    for op, n in ops:
        history = store.history("s")
        if op == "save":
            memory.value = [*memory.value, *({"i": len(memory.value) + i} for i in range(n))]
            store.save("s", memory=memory)
        elif op == "back" and n < len(history):
            store.load(history[-1 - n], memory=memory)
        elif op == "label":
            labels += 1
            store.label(history[n % len(history)], f"l{labels}")
        elif op == "prune":
            store.prune("s", keep_last=n, keep_labeled=n % 2 == 0)
        elif op == "delete" and len(history) > 1:
            store.delete(history[n % len(history)])


@pytest.fixture(scope="module")
def pg_base(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("pg_server"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_random_histories_survive_sqlite_json_postgres_sqlite(ops: list[tuple[str, int]], pg_base: str) -> None:
    from .. import pg_server

    with tempfile.TemporaryDirectory() as folder:
        first = nbs.open_store(Path(folder) / "first.db")
        _play(first, ops)
        chain = [first, nbs.open_store(Path(folder) / "json"), nbs.open_store(pg_server.fresh_database(pg_base)),
                 nbs.open_store(Path(folder) / "last.db")]
        for src, dst in itertools.pairwise(chain):
            bundle.copy_sessions(src, dst)
        for store in chain[1:]:
            assert exact(store, "s") == exact(first, "s")


def test_a_failed_read_names_the_checkpoint_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = nbs.open_store(tmp_path / "src.db")
    _fill(src)
    dst = nbs.open_store(tmp_path / "dst")
    real = src.get_state

    def get_state(ref: Any, **kwargs: Any) -> dict[str, Any]:
        if getattr(ref, "seq", None) == 5:
            raise NbSessionsError(f"cannot read {ref.ref}")
        return real(ref, **kwargs)

    monkeypatch.setattr(src, "get_state", get_state)
    with pytest.raises(NbSessionsError, match="ann/chat@5"):
        bundle.copy_sessions(src, dst)
    # Sessions go one at a time (``solo`` sorts first): each is whole or absent.
    assert [i.session for i in dst.sessions()] == ["solo"]
    _assert_exact(src, dst, "solo")
