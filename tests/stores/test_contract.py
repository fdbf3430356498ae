"""The contract every store must keep, run against SQLiteStore and JSONStore alike."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions._loop import run_sync
from nb_sessions.errors import (
    CheckpointNotFoundError,
    ConflictError,
    InvalidIdError,
    NotSerializableError,
    SessionNotFoundError,
    StateMismatchError,
)
from nb_sessions.stores.base import At, SessionKey
from tests.conftest import Box


def test_save_then_load_restores_every_module(store: nbs.BaseStore) -> None:
    a, b = Box([1, "été"]), Box({"k": None})
    cp = store.save("alice", a=a, b=b)
    assert (cp.session, cp.seq, cp.modules, cp.parent) == ("alice", 1, ("a", "b"), None)
    assert cp.size > 0 and cp.created_at.tzinfo is not None
    assert cp.metadata["nb_sessions_version"] == nbs.__version__
    a.value.append(2)
    b.value = "changed"
    loaded = store.load("alice", a=a, b=b)
    assert loaded == cp
    assert (a.value, b.value) == ([1, "été"], {"k": None})


def test_sequence_numbers_and_references(store: nbs.BaseStore) -> None:
    box = Box(0)
    for i in range(1, 5):
        box.value = i
        store.save("s", label="third" if i == 3 else None, box=box)
    assert [c.seq for c in store.history("s")] == [1, 2, 3, 4]
    for ref, want in [("s", 4), ("s@2", 2), ("s@third", 3), ("s@~1", 3), ("s@latest", 4)]:
        assert store.get_state(ref) == {"box": {"value": want}}, ref
        assert store.checkpoint(ref).seq == want


def test_parent_follows_the_checkpoint_last_loaded(store: nbs.BaseStore) -> None:
    box = Box(1)
    store.save("s", box=box)
    store.save("s", box=box)
    store.load("s@1", box=box)
    cp = store.save("s", box=box)
    assert (cp.seq, cp.parent) == (3, 1)


def test_an_exact_copy_writes_at_the_seq_time_and_parent_given(store: nbs.BaseStore) -> None:
    """The primitive copies use: a checkpoint written where its source had it, numbering going on past it."""
    key = SessionKey("u", "s")
    when = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))

    def write(seq: int, parent: int | None, value: int) -> nbs.Checkpoint:
        return run_sync(store._asave(key, f"v{value}", {"k": value}, None, {"box": Box(value)}, at=At(seq, when, parent)))

    first = write(3, 1, 1)  # a parent pruned in the source stays as it is
    assert (first.seq, first.parent, first.created_at, first.label) == (3, 1, when, "v1")
    assert first.metadata == {"k": 1}  # as given: no nb_sessions_version stamped
    second = write(5, None, 2)
    assert [(c.seq, c.parent, c.created_at, dict(c.metadata)) for c in store.history(key)] == [
        (3, 1, when, {"k": 1}), (5, None, when, {"k": 2})
    ]
    assert store.history(key)[-1] == second
    for seq in (5, 4, 1):
        with pytest.raises(ConflictError, match=rf"u/s@{seq} .*up to 5 already"):
            write(seq, None, 9)
    assert [c.seq for c in store.history(key)] == [3, 5]
    assert store.get_state("u/s@3") == {"box": {"value": 1}}
    after = store.save(key, box=Box(3))
    assert (after.seq, after.parent) == (6, 5)
    assert after.created_at > when


def test_user_ids_key_sessions_apart(store: nbs.BaseStore) -> None:
    store.save("bob", user_id="u1", box=Box("one"))
    store.save("u2/bob", box=Box("two"))
    store.save("bob", box=Box("none"))
    assert store.get_state("bob", user_id="u1") == {"box": {"value": "one"}}
    assert store.get_state("u2/bob") == {"box": {"value": "two"}}
    assert store.get_state("bob") == {"box": {"value": "none"}}
    keys = {(i.user_id, i.session_id) for i in store.sessions()}
    assert keys == {("u1", "bob"), ("u2", "bob"), ("", "bob")}


def test_sessions_summary(store: nbs.BaseStore) -> None:
    assert store.sessions() == []
    store.save("a", box=Box(1), label="x")
    store.save("a", box=Box(2))
    store.save("b", box=Box(3))
    infos = {i.session: i for i in store.sessions()}
    assert (infos["a"].checkpoints, infos["a"].latest_seq, infos["a"].labels) == (2, 2, ("x",))
    assert infos["b"].checkpoints == 1
    assert store.sessions()[0].session == "b"  # most recently updated first


def test_fork_starts_a_new_session_from_a_checkpoint(store: nbs.BaseStore) -> None:
    box = Box("v1")
    store.save("main", box=box)
    box.value = "v2"
    store.save("main", box=box)
    fork = store.fork("main@1", "branch", label="start")
    assert (fork.session, fork.seq, fork.label) == ("branch", 1, "start")
    assert fork.metadata["forked_from"] == "main@1"
    assert store.get_state("branch") == {"box": {"value": "v1"}}
    with pytest.raises(ConflictError, match="already exists"):
        store.fork("main", "branch")


def test_delete_a_checkpoint_or_a_whole_session(store: nbs.BaseStore) -> None:
    box = Box(0)
    for i in range(3):
        box.value = i
        store.save("s", box=box)
    assert store.delete("s@3") == 1
    assert [c.seq for c in store.history("s")] == [1, 2]
    assert store.get_state("s") == {"box": {"value": 1}}  # the latest is now @2
    assert store.save("s", box=box).seq == 4  # numbers are never reused
    assert store.delete("s") == 3
    with pytest.raises(SessionNotFoundError, match="no session 's'"):
        store.history("s")
    with pytest.raises(SessionNotFoundError):
        store.delete("s")


def test_labels_are_unique_and_movable(store: nbs.BaseStore) -> None:
    box = Box(0)
    store.save("s", box=box, label="good")
    store.save("s", box=box)
    with pytest.raises(ConflictError, match="'good' already names"):
        store.label("s@2", "good")
    with pytest.raises(ConflictError, match="'good' already names"):
        store.save("s", box=box, label="good")
    assert store.label("s@1", None).label is None
    assert store.label("s@2", "good").label == "good"
    assert store.checkpoint("s@good").seq == 2
    assert [c.seq for c in store.history("s")] == [1, 2]  # the refused save left nothing


def test_prune_keeps_latest_labelled_and_supports_dry_run(store: nbs.BaseStore) -> None:
    box = Box(0)
    for i in range(6):
        box.value = i
        store.save("s", box=box, label="keep" if i == 1 else None)
    dry = store.prune("s", keep_last=2, dry_run=True)
    assert [c.seq for c in dry.removed] == [1, 3, 4] and dry.dry_run
    assert len(store.history("s")) == 6
    done = store.prune("s", keep_last=2)
    assert [c.seq for c in done.removed] == [1, 3, 4]
    assert [c.seq for c in store.history("s")] == [2, 5, 6]
    assert store.prune("s", older_than=timedelta(hours=1)).removed == ()
    store.prune("s", keep_last=1, keep_labeled=False)
    assert [c.seq for c in store.history("s")] == [6]
    assert store.get_state("s") == {"box": {"value": 5}}
    store.vacuum()
    assert store.get_state("s") == {"box": {"value": 5}}


@pytest.mark.parametrize(
    "bad",
    ["../x", "a/b/c", "/etc/passwd", "a\\b", "a\x00b", "line\nbreak", "", ".hidden", "x" * 201, " pad", "a@b"],
)
def test_unsafe_session_ids_are_refused(store: nbs.BaseStore, bad: str) -> None:
    with pytest.raises(InvalidIdError):
        store.save(bad, box=Box(1))


def test_a_lone_surrogate_in_an_id_is_refused_by_name_on_every_store(store: nbs.BaseStore) -> None:
    # No store can keep one: not SQLite or PostgreSQL text, not a file name (it was a bare
    # UnicodeEncodeError from the JSON store, found by the public-API fuzzer).
    for key in ("\ud800", "ok\udfffok", SessionKey("\ud83d", "s")):
        with pytest.raises(InvalidIdError, match="lone surrogate"):
            store.save(key, box=Box(1))
        with pytest.raises(InvalidIdError, match="lone surrogate"):
            store.history(key)
    assert store.sessions() == []


@pytest.mark.parametrize("bad", ["12", "~1", "latest", "a@b", "tab\there", "x" * 101, " "])
def test_bad_labels_are_refused(store: nbs.BaseStore, bad: str) -> None:
    with pytest.raises(InvalidIdError):
        store.save("s", box=Box(1), label=bad)


def test_not_found_errors_name_the_place(store: nbs.BaseStore) -> None:
    with pytest.raises(SessionNotFoundError, match="no session 'ghost'"):
        store.load("ghost", box=Box())
    assert store.load("ghost", allow_not_exist=True, box=Box()) is None
    store.save("s", box=Box(1))
    with pytest.raises(CheckpointNotFoundError, match="has no checkpoint 's@7'"):
        store.get_state("s@7")
    with pytest.raises(CheckpointNotFoundError, match="s@nope"):
        store.get_state("s@nope")
    with pytest.raises(InvalidIdError, match="ends with '@'"):
        store.get_state("s@")
    with pytest.raises(InvalidIdError, match="not a checkpoint"):
        store.save("s@2", box=Box(1))
    with pytest.raises(TypeError, match="at least one module"):
        store.save("s")


class Holder(Box):
    pass


def test_unserializable_value_is_refused_with_its_path(store: nbs.BaseStore) -> None:
    from datetime import datetime

    box = Box({"content": [[{"metadata": {}}, []]]})
    box.value["content"][0][0]["metadata"]["when"] = datetime(2026, 1, 1)
    with pytest.raises(NotSerializableError, match=r"box\.value\.content\[0\]\[0\]\.metadata\.when: datetime"):
        store.save("s", box=box)
    box.value = {1: "x"}  # register_state() checked only the value it saw then
    with pytest.raises(NotSerializableError, match=r"box\.value\[1\]: int key"):
        store.save("s", box=box)
    with pytest.raises(NotSerializableError, match=r"value\[1\]: int key"):
        Box({1: "x"})
    with pytest.raises(SessionNotFoundError):
        store.history("s")  # nothing was written


def test_strict_mismatch_lists_every_path_and_changes_nothing(store: nbs.BaseStore) -> None:
    store.save("s", outer=Box(1, child=Box(2)))
    target = Box(10, child=Box(20, child=Box(30)))
    with pytest.raises(StateMismatchError) as err:
        store.load("s", outer=target, other=Box(5))
    assert set(err.value.missing) == {"outer.child.child", "other"}
    assert target.state_dict() == {"child": {"child": {"value": 30}, "value": 20}, "value": 10}
    store.load("s", strict=False, outer=target, other=Box(5))
    assert target.state_dict() == {"child": {"child": {"value": 30}, "value": 2}, "value": 1}


FIDELITY: list[tuple[str, Any]] = [
    ("lone surrogate", "a\ud800b\udfff"),
    ("nan and infinities", [math.inf, -math.inf, 1.5]),
    ("big integers", [2**64, -(2**70), 2**63 - 1, 10**40]),
    ("non-ascii", "中文 — emoji 🎉 \u200b"),
    ("deep nesting", None),
    ("control characters", "\x00\x01\n\t\"\\"),
    ("floats", [0.1, -0.0, 1e308, 5e-324, 1e16]),
]


@pytest.mark.parametrize(("name", "value"), FIDELITY, ids=[n for n, _ in FIDELITY])
def test_fidelity_of_what_stdlib_json_writes(store: nbs.BaseStore, name: str, value: Any) -> None:
    if name == "deep nesting":
        value = []
        for _ in range(600):
            value = [value]
    store.save("s", box=Box(value))
    got = store.get_state("s")["box"]["value"]
    assert repr(got) == repr(value)


def test_fidelity_inside_the_entries_of_a_long_list(store: nbs.BaseStore) -> None:
    # Long lists are stored entry by entry (deduplicated, and sealed one by one when encrypted):
    # each value comes back exactly from its own entry, in the latest checkpoint and an older one.
    values = [v for name, v in FIDELITY if name != "deep nesting"]
    items = [{"n": i, "v": values[i % len(values)]} for i in range(60)]
    store.save("s", box=Box(items))
    store.save("s", box=Box([*items, {"n": 60, "v": [math.nan]}]))
    for ref, expected in (("s@1", items), ("s@2", [*items, {"n": 60, "v": [math.nan]}])):
        got = store.get_state(ref)["box"]["value"]
        assert repr(got) == repr(expected), ref


def test_nan_round_trips(store: nbs.BaseStore) -> None:
    store.save("s", box=Box({"x": math.nan}))
    assert math.isnan(store.get_state("s")["box"]["value"]["x"])


def test_checkpoint_knows_its_store(store: nbs.BaseStore) -> None:
    cp = store.save("u/s", box=Box("x"), label="lab", metadata={"note": "<b>hi</b>"})
    assert cp.ref == "u/s@1" and cp.state() == {"box": {"value": "x"}}
    html = cp._repr_html_()
    assert "&lt;b&gt;hi&lt;/b&gt;" in html and "<b>hi" not in html
    assert "u/s@1 [lab]" in cp.describe()


async def test_sync_api_works_inside_a_running_loop(store: nbs.BaseStore) -> None:
    asyncio.get_running_loop()  # as in a Jupyter kernel
    box = Box([1])
    store.save("s", box=box)
    box.value = []
    store.load("s", box=box)
    assert box.value == [1]


async def test_async_twins(store: nbs.BaseStore) -> None:
    box = Box("a")
    cp = await store.asave("s", box=box, label="one")
    box.value = "b"
    await store.asave("s", box=box)
    assert [c.seq for c in await store.ahistory("s")] == [1, 2]
    assert await store.aload("s@one", box=box) == cp
    assert box.value == "a"
    assert (await store.aget_state("s@2")) == {"box": {"value": "b"}}
    await store.alabel("s@2", "two")
    await store.afork("s@two", "t")
    assert {i.session for i in await store.asessions()} == {"s", "t"}
    result = await store.aprune("s", keep_last=1, keep_labeled=False)
    assert [c.seq for c in result.removed] == [1]
    assert await store.adelete("t") == 1


def test_pydantic_models_save_and_restore_in_place(store: nbs.BaseStore) -> None:
    from pydantic import BaseModel

    class AgentState(BaseModel):
        name: str
        turns: int = 0
        notes: list[str] = []

    state = AgentState(name="x", turns=2, notes=["a"])
    store.save("s", state=state)
    same = state
    state.turns = 9
    state.notes.append("b")
    store.load("s", state=state)
    assert state is same and (state.turns, state.notes) == (2, ["a"])


def test_redact_hook_strips_secrets_before_writing(tmp_path: Any) -> None:
    def redact(name: str, state: dict[str, Any]) -> dict[str, Any]:
        return {k: ("***" if k == "api_key" else v) for k, v in state.items()}

    class Config(nbs.StateModule):
        def __init__(self) -> None:
            super().__init__()
            self.api_key = "sk-secret"
            self.register_state("api_key")

    store = nbs.open_store(tmp_path / "r.db", redact=redact)
    store.save("s", cfg=Config())
    assert store.get_state("s") == {"cfg": {"api_key": "***"}}
    assert b"sk-secret" not in (tmp_path / "r.db").read_bytes()


@pytest.mark.parametrize("bad", ["../x", "a\\b", "..", "u\x00"])
def test_unsafe_user_ids_are_refused(store: nbs.BaseStore, bad: str) -> None:
    with pytest.raises(InvalidIdError):
        store.save("s", user_id=bad, box=Box(1))


async def test_load_with_repair_closes_dangling_tool_calls(store: nbs.BaseStore) -> None:
    from nb_sessions.agent import Msg, ScriptedAgent

    agent = ScriptedAgent("Friday", seed=2)
    await agent(Msg("user", "what is 2+3", "user"))
    with pytest.raises(BaseException, match="crash"):
        await agent(Msg("user", "crash", "user"))
    saved = await store.asave("broken", agent=agent)
    fresh = ScriptedAgent("Friday")
    cp = await store.aload("broken", repair=True, agent=fresh)
    assert cp is not None and cp.repair is not None and len(cp.repair.calls) == 1
    call = cp.repair.calls[0]
    results = [
        b for m, _ in fresh.memory.content if isinstance(m.content, list)
        for b in m.content if b.get("type") == "tool_result" and b.get("id") == call.tool_use_id
    ]
    assert len(results) == 1 and "interrupted" in str(results[0]["output"])
    assert await store.aget_state(saved.ref) == {"agent": agent.state_dict()}  # stored checkpoint unchanged
    plain = await store.aload("broken", agent=ScriptedAgent("Friday"))
    assert plain is not None and plain.repair is None


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Any) -> None:
    for path in (tmp_path / "typo.db", tmp_path / "typo-folder"):
        store = nbs.open_store(path)
        assert store.sessions() == []
        with pytest.raises(SessionNotFoundError):
            store.history("alice")
        assert store.load("alice", allow_not_exist=True, box=Box()) is None
        assert store.vacuum() == 0
        assert not path.exists()
