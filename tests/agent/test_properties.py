"""Property tests: for generated states, state -> objects -> state is the identity (key order included)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nb_sessions.agent import InMemoryMemory, Msg, PlanNotebook, Toolkit

from ._helpers import dumps


def ordered(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]] | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Like fixed_dictionaries, but with the keys in the order given (hypothesis does not keep it)."""
    keys = [*required, *(optional or {})]
    return st.fixed_dictionaries(required, optional=optional or {}).map(lambda d: {k: d[k] for k in keys if k in d})


# Non-ASCII on purpose (CJK, emoji, accents, RTL, controls); lone surrogates are the codec's concern.
text = st.text(st.characters(codec="utf-8"), max_size=12)
ids = st.text("23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", min_size=1, max_size=22)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
source = st.one_of(
    ordered({"type": st.just("url"), "url": text}),
    ordered({"type": st.just("base64"), "media_type": text, "data": text}),
)


def media(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return ordered({"type": st.just(kind), "source": source})


text_block = ordered({"type": st.just("text"), "text": text})
output_block = text_block | media("image") | media("audio") | media("video")
tool_use = ordered(
    {"type": st.just("tool_use"), "id": ids, "name": text, "input": st.dictionaries(text, json_value, max_size=3)},
    optional={"raw_input": text},
)
tool_result = ordered(
    {"type": st.just("tool_result"), "id": ids, "name": text, "output": text | st.lists(output_block, max_size=3)}
)
block = st.one_of(
    text_block,
    ordered({"type": st.just("thinking"), "thinking": text}),
    tool_use,
    tool_result,
    media("image"),
    media("audio"),
    media("video"),
)


@st.composite
def msg_dicts(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": draw(ids),
        "name": draw(text),
        "role": draw(st.sampled_from(["user", "assistant", "system"])),
        "content": draw(text | st.lists(block, max_size=4)),
        "metadata": draw(st.dictionaries(text, json_value, max_size=3)),
        "timestamp": draw(text.filter(bool)),
    }
    if draw(st.booleans()):
        data["invocation_id"] = draw(text)
    return data


memory_states = ordered(
    {
        "_compressed_summary": text,
        "content": st.lists(st.tuples(msg_dicts(), st.lists(text, max_size=3)).map(list), max_size=5),
    }
)

opt_text = st.none() | text
states = st.sampled_from(["todo", "in_progress", "done", "abandoned"])
subtask = ordered(
    {
        "name": text,
        "description": text,
        "expected_outcome": text,
        "outcome": opt_text,
        "state": states,
        "created_at": text,
        "finished_at": opt_text,
    }
)


def plan_with(plan_id: str) -> st.SearchStrategy[dict[str, Any]]:
    return ordered(
        {
            "id": st.just(plan_id),
            "name": text,
            "description": text,
            "expected_outcome": text,
            "subtasks": st.lists(subtask, max_size=4),
            "created_at": text,
            "state": states,
            "finished_at": opt_text,
            "outcome": opt_text,
        }
    )


@st.composite
def notebook_states(draw: st.DrawFn) -> dict[str, Any]:
    plan_ids = draw(st.lists(ids, max_size=3, unique=True))
    plans = {pid: draw(plan_with(pid)) for pid in plan_ids}
    current = draw(st.none() | ids.flatmap(plan_with))
    return {"storage": {"plans": plans}, "current_plan": current}


_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(msg_dicts())
def test_msg_dict_round_trip(data: dict[str, Any]) -> None:
    msg = Msg.from_dict(data)
    assert dumps(msg.to_dict()) == dumps(data)
    assert Msg.from_dict(msg.to_dict()) == msg
    assert msg.copy() == msg


@_settings
@given(memory_states)
def test_memory_state_round_trip(state: dict[str, Any]) -> None:
    mem = InMemoryMemory()
    mem.load_state_dict(state, strict=True)
    assert dumps(mem.state_dict()) == dumps(state)
    again = InMemoryMemory()
    again.load_state_dict(mem.state_dict())
    assert [m for m, _ in again.content] == [m for m, _ in mem.content]


@_settings
@given(notebook_states())
def test_notebook_state_round_trip(state: dict[str, Any]) -> None:
    nb = PlanNotebook()
    nb.load_state_dict(state, strict=True)
    assert dumps(nb.state_dict()) == dumps(state)


@_settings
@given(st.lists(text, max_size=4, unique=True), st.data())
def test_toolkit_state_round_trip(groups: list[str], data: st.DataObject) -> None:
    kit = Toolkit()
    for name in groups:
        if name != "basic":
            kit.create_tool_group(name, "g")
    known = list(kit.groups)
    active = data.draw(st.lists(st.sampled_from(known), unique=True) if known else st.just([]))
    kit.load_state_dict({"active_groups": active})
    assert sorted(kit.state_dict()["active_groups"]) == sorted(active)
    assert kit.state_dict()["active_groups"] == [g for g in known if g in active]
