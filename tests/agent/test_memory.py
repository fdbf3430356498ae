"""InMemoryMemory: AgentScope's async API and its state, strict and lenient loads."""

from __future__ import annotations

from typing import Any

import pytest

from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.errors import StateError, StateMismatchError

from ._helpers import assert_load_fails, dumps, load_sample


def msg(text: str, role: str = "user", id: str | None = None) -> Msg:
    return Msg("Bob" if role == "user" else "Friday", text, role, id=id or f"id-{text}", timestamp="2026-01-01 00:00:00.000")  # type: ignore[arg-type]


def msg_dict(**over: Any) -> dict[str, Any]:
    base = {"id": "m1", "name": "Bob", "role": "user", "content": "hi", "metadata": {}, "timestamp": "2026-01-01 00:00:00.000"}
    return {**base, **over}


async def test_add_copies_and_skips_duplicate_ids() -> None:
    mem = InMemoryMemory()
    m = msg("a")
    await mem.add(m)
    await mem.add([msg("b"), msg("a")])
    await mem.add(None)
    assert [x.id for x in await mem.get_memory()] == ["id-a", "id-b"]
    m.content = "mutated after add"
    assert (await mem.get_memory())[0].content == "a"
    await mem.add(msg("a"), allow_duplicates=True)
    assert await mem.size() == 3


async def test_add_rejects_bad_marks_and_objects() -> None:
    mem = InMemoryMemory()
    with pytest.raises(TypeError, match="marks"):
        await mem.add(msg("a"), marks=[1])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="Msg objects"):
        await mem.add(["not a msg"])  # type: ignore[list-item]
    assert await mem.size() == 0


async def test_marks_filter_delete_and_update() -> None:
    mem = InMemoryMemory()
    await mem.add(msg("a"), marks="hint")
    await mem.add(msg("b"), marks=["keep", "x"])
    await mem.add(msg("c"))
    assert [m.id for m in await mem.get_memory(mark="hint")] == ["id-a"]
    assert [m.id for m in await mem.get_memory(exclude_mark="x")] == ["id-a", "id-c"]
    assert await mem.update_messages_mark("new", old_mark="hint") == 1
    assert mem.content[0][1] == ["new"]
    assert await mem.update_messages_mark("tag", msg_ids=["id-c"]) == 1
    assert mem.content[2][1] == ["tag"]
    assert await mem.update_messages_mark(None, old_mark="x") == 1
    assert mem.content[1][1] == ["keep"]
    assert await mem.delete_by_mark(["new", "tag"]) == 2
    assert [m.id for m in await mem.get_memory()] == ["id-b"]
    assert await mem.delete(["id-b", "nope"]) == 1
    assert await mem.size() == 0
    with pytest.raises(TypeError):
        await mem.get_memory(mark=["hint"])  # type: ignore[arg-type]


async def test_summary_is_prepended_as_a_user_message() -> None:
    mem = InMemoryMemory()
    await mem.add(msg("a"))
    await mem.update_compressed_summary("Earlier: Bob asked for a report.")
    got = await mem.get_memory()
    assert len(got) == 2
    assert (got[0].name, got[0].role, got[0].content) == ("user", "user", "Earlier: Bob asked for a report.")
    assert len(await mem.get_memory(prepend_summary=False)) == 1
    assert mem.state_dict()["_compressed_summary"] == "Earlier: Bob asked for a report."
    await mem.clear()
    assert await mem.size() == 0
    assert mem._compressed_summary == "Earlier: Bob asked for a report."


async def test_state_dict_layout_and_round_trip() -> None:
    mem = InMemoryMemory()
    await mem.add(msg("a"), marks=["m1", "m2"])
    state = mem.state_dict()
    assert list(state) == ["_compressed_summary", "content"]
    assert state["content"][0][1] == ["m1", "m2"]
    other = InMemoryMemory()
    other.load_state_dict(state)
    assert dumps(other.state_dict()) == dumps(state)
    assert isinstance(other.content[0][0], Msg)


def test_sample_memory_loads_and_saves_identically() -> None:
    state = load_sample()["agent"]["memory"]
    mem = InMemoryMemory()
    mem.load_state_dict(state, strict=True)
    assert dumps(mem.state_dict()) == dumps(state)
    assert [m.role for m, _ in mem.content] == ["user", "assistant"]


def test_older_layout_loads_with_empty_marks() -> None:
    old = {"content": [msg_dict(id="a"), msg_dict(id="b", role="assistant", name="Friday", content=[{"type": "text", "text": "yo"}])]}
    mem = InMemoryMemory()
    mem.load_state_dict(old, strict=True)
    state = mem.state_dict()
    assert state["_compressed_summary"] == ""
    assert state["content"] == [[old["content"][0], []], [old["content"][1], []]]


def test_loaded_state_does_not_alias_the_input() -> None:
    state: dict[str, Any] = {"_compressed_summary": "", "content": [[msg_dict(metadata={"k": [1]}), ["m"]]]}
    mem = InMemoryMemory()
    mem.load_state_dict(state)
    mem.content[0][0].metadata["k"].append(2)
    mem.content[0][1].append("n")
    assert state["content"][0][0]["metadata"] == {"k": [1]}
    assert state["content"][0][1] == ["m"]


async def _filled() -> InMemoryMemory:
    mem = InMemoryMemory()
    await mem.add(msg("keep me"), marks="orig")
    return mem


@pytest.mark.parametrize(
    ("content", "path", "fragments"),
    [
        ({"a": 1}, "content", ("expected a list of [message, [mark, ...]]",)),
        ([[msg_dict(), "hint"]], "content[0][1]", ("expected a list of str marks", "got str")),
        ([[msg_dict(), ["ok", 3]]], "content[0][1][1]", ("expected a str mark, got int",)),
        ([[msg_dict(), [], "extra"]], "content[0]", ("expected [message, [mark, ...]]", "3 item(s)")),
        ([42], "content[0]", ("got int",)),
        ([[msg_dict(role="bot"), []]], "content[0][0].role", ("user, assistant, system", "'bot'")),
        ([[msg_dict(content=[{"type": "sound", "data": "x"}]), []]], "content[0][0].content[0].type", ("unknown block type 'sound'",)),
        ([[msg_dict(content=[{"type": "tool_use", "id": "c", "input": {}}]), []]], "content[0][0].content[0].name", ("required key 'name' is absent", '"type": "tool_use"')),
        ([msg_dict(), [msg_dict(name=None), []]], "content[1][0].name", ("expected str, got null",)),
        ([[msg_dict(content=7), []]], "content[0][0].content", ("expected str or a list of content blocks",)),
    ],
)
async def test_bad_states_name_the_path_and_change_nothing(content: Any, path: str, fragments: tuple[str, ...]) -> None:
    mem = await _filled()
    state = {"_compressed_summary": "s", "content": content}
    err = assert_load_fails(mem, state, path, *fragments)
    assert len([p for p, _ in err.problems if p == path]) == 1
    assert not isinstance(err, StateMismatchError)
    assert [m.content for m, _ in mem.content] == ["keep me"]


async def test_wrong_summary_type_and_unexpected_keys() -> None:
    mem = await _filled()
    assert_load_fails(mem, {"_compressed_summary": 3, "content": []}, "_compressed_summary", "expected str, got int")
    err = assert_load_fails(mem, {"_compressed_summary": "", "content": [], "extra": 1}, "extra", "unexpected")
    assert isinstance(err, StateMismatchError)
    mem.load_state_dict({"_compressed_summary": "", "content": [], "extra": 1}, strict=False)
    assert await mem.size() == 0


async def test_every_problem_is_reported_at_once() -> None:
    mem = await _filled()
    state = {"_compressed_summary": "", "content": [[msg_dict(role="x"), []], [msg_dict(id=1), [2]]]}
    with pytest.raises(StateError) as info:
        mem.load_state_dict(state)
    assert {p for p, _ in info.value.problems} == {"content[0][0].role", "content[1][0].id", "content[1][1][0]"}


async def test_non_strict_load_keeps_missing_keys() -> None:
    mem = await _filled()
    await mem.update_compressed_summary("kept")
    mem.load_state_dict({"content": []}, strict=False)
    assert mem._compressed_summary == "kept"
    assert await mem.size() == 0
    with pytest.raises(StateMismatchError) as info:
        mem.load_state_dict({"_compressed_summary": ""}, strict=True)
    assert info.value.missing == ["content"]
