"""The generations layer: detection and the shape questions, on real 1.0.21 and 2.0.11 states."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nb_sessions import generations as g
from nb_sessions.generations import v1, v2

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def state_v2() -> dict[str, Any]:
    """``agent.state.model_dump()`` after a real 2.0.11 turn with two tool calls and a task."""
    return json.loads((DATA / "agentscope_2.0.11_agent_state.json").read_text(encoding="utf-8"))


@pytest.fixture
def session_v1() -> dict[str, Any]:
    """A JSONSession file written by AgentScope 1.0.21."""
    return json.loads((DATA / "agentscope_1.0.21_u42_bob.json").read_text(encoding="utf-8"))


def test_each_generation_is_detected_and_not_mistaken_for_the_other(
    state_v2: dict[str, Any], session_v1: dict[str, Any]
) -> None:
    assert g.detect({"agent": state_v2}) == {"2.x"}
    assert g.detect(session_v1) == {"1.x"}
    assert g.detect({**session_v1, "two": state_v2}) == {"1.x", "2.x"}
    assert g.detect({"box": {"value": [1, 2, 3]}}) == frozenset()
    assert not v2.is_agent_state(session_v1["agent"]["memory"])
    assert not v1.is_memory(state_v2)
    # A dict with a context list but none of AgentState's own fields is not an agent state.
    assert not v2.is_agent_state({"context": [], "summary": ""})


def test_conversations_name_their_place_and_list_messages_in_order(
    state_v2: dict[str, Any], session_v1: dict[str, Any]
) -> None:
    (two,) = g.conversations({"agent": state_v2})
    assert (two.generation, two.module, two.path) == ("2.x", "agent", "agent")
    assert [m["role"] for m, _ in two.entries()] == [m["role"] for m in state_v2["context"]]
    (one,) = g.conversations(session_v1)
    assert (one.generation, one.path) == ("1.x", "agent.memory")
    assert [m["id"] for m, _ in one.entries()] == [e[0]["id"] for e in session_v1["agent"]["memory"]["content"]]
    nested = {"team": {"members": [{"x": 1}, state_v2]}}
    assert [c.path for c in g.conversations(nested)] == ["team.members[1]"]


def test_2x_tool_calls_parse_their_json_string_input_and_pair_with_results(state_v2: dict[str, Any]) -> None:
    (conv,) = g.conversations({"agent": state_v2})
    calls, results = g.tool_blocks(conv)
    assert [(c.call_id, c.name, c.input, c.state) for c in calls] == [
        ("call_1", "get_weather", {"city": "Paris"}, "finished"),
        ("call_2", "TaskCreate", {"subject": "Pack umbrella", "description": "Check forecast then pack"}, "finished"),
    ]
    assert calls[0].raw_input == '{"city": "Paris"}'
    assert [(r.call_id, r.state, g.message_text(r.output)) for r in results] == [
        ("call_1", "success", "Sunny, 21C in Paris"),
        ("call_2", "success", "Task (id=1) created successfully: Pack umbrella"),
    ]
    # Results sit in the same assistant message as their calls.
    assert {c.index for c in calls} == {r.index for r in results} == {1}
    assert g.unanswered(conv) == []


@pytest.mark.parametrize(
    ("state", "dangling"),
    [("allowed", True), ("pending", True), ("asking", False), ("submitted", False)],
)
def test_a_2x_call_without_result_is_dangling_unless_it_waits_for_someone(
    state_v2: dict[str, Any], state: str, dangling: bool
) -> None:
    cut = copy.deepcopy(state_v2)
    reply = cut["context"][1]
    reply["content"] = [b for b in reply["content"] if not (b["type"] == "tool_result" and b["id"] == "call_1")]
    next(b for b in reply["content"] if b.get("id") == "call_1")["state"] = state
    (conv,) = g.conversations({"agent": cut})
    assert [c.call_id for c in g.unanswered(conv)] == (["call_1"] if dangling else [])


def test_a_1x_result_answers_the_earliest_open_call_with_its_id(session_v1: dict[str, Any]) -> None:
    use = {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}
    result = {"type": "tool_result", "id": "t1", "name": "f", "output": "ok"}
    memory = {"content": [
        [{"role": "assistant", "name": "a", "content": [use], "id": "m1"}, []],
        [{"role": "assistant", "name": "a", "content": [use], "id": "m2"}, []],
        [{"role": "system", "name": "system", "content": [result], "id": "m3"}, []],
    ]}
    (conv,) = g.conversations({"agent": {"memory": memory}})
    assert [(c.message_id, c.input) for c in g.unanswered(conv)] == [("m2", {"a": 1})]


def test_searchable_text_covers_text_thinking_tool_inputs_and_results_in_both_generations(
    state_v2: dict[str, Any],
) -> None:
    reply = state_v2["context"][1]
    text = g.searchable_text(reply)
    for words in ("The user wants weather", 'get_weather {"city": "Paris"}', "Sunny, 21C in Paris", "I created a task"):
        assert words in text
    assert "<current-time>2026-11-29T21:49:46</current-time>" in text, "a hint is text the model read"
    one = {"role": "assistant", "content": [{"type": "tool_use", "name": "calc", "input": {"x": "6*7"}}]}
    assert g.searchable_text(one) == 'calc {"x": "6*7"}'


def test_block_text_reads_every_2x_block_kind_that_holds_text() -> None:
    import base64

    note = base64.b64encode(b"minutes of the meeting").decode()
    cases = [
        ({"type": "hint", "hint": [{"type": "text", "text": "listed hint"}]}, "listed hint"),
        ({"type": "tool_result", "output": "plain output"}, "plain output"),
        ({"type": "tool_result", "output": [{"type": "text", "text": "nested"}]}, "nested"),
        ({"type": "data", "name": "notes.txt",
          "source": {"type": "base64", "media_type": "text/plain", "data": note}}, "notes.txt\nminutes of the meeting"),
        ({"type": "data", "name": "cat.png",
          "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}, "cat.png"),
        ({"type": "data", "source": {"type": "url", "url": "https://x/y.png", "media_type": "image/png"}}, None),
    ]
    for block, text in cases:
        assert g.block_text(block) == text, block


def test_tasks_are_read_from_tasks_context(state_v2: dict[str, Any]) -> None:
    assert [(t["id"], t["subject"], t["state"]) for t in v2.tasks(state_v2)] == [("1", "Pack umbrella", "pending")]
    assert v2.tasks({"tasks_context": {"tasks": "garbage"}}) == []
    assert v2.tasks({}) == []


def test_find_parts_survives_deep_nesting_without_recursion() -> None:
    deep: Any = {"content": []}
    for _ in range(5000):
        deep = {"x": deep}
    assert [kind for kind, _, _ in g.find_parts(deep, "m")] == ["memory"]


def test_the_layer_imports_nothing_above_it() -> None:
    import ast

    for path in Path(g.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name} imports from above the generations layer"
