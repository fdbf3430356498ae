"""nb_sessions.repair: dangling tool calls are found, closed in a copy, and the agent resumes."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nb_sessions as nbs
from nb_sessions import codec
from nb_sessions.agent import Msg, ScriptedAgent, SeededIds, SimulatedCrash, StepClock
from nb_sessions.repair import (
    REPAIR_TEXT,
    DanglingCall,
    RepairReport,
    find_dangling_tool_calls,
    repair_states,
)


def user(text: str) -> Msg:
    return Msg("user", text, "user", timestamp="2025-01-01 08:00:00.000", id=f"u-{abs(hash(text))}")


async def crashed_agent(*before: str, after: tuple[str, ...] = ()) -> ScriptedAgent:
    """A ScriptedAgent that talked, then crashed inside a tool call (its crash rule)."""
    agent = ScriptedAgent(seed=3)
    for text in before:
        await agent(user(text))
    with pytest.raises(SimulatedCrash):
        await agent(user("please crash now"))
    for text in after:
        await agent(user(text))
    return agent


def container_ids(value: Any) -> set[int]:
    """ids of every dict and list inside ``value``."""
    out: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            out.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return out


def msg(mid: str, role: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": mid,
        "name": role,
        "role": role,
        "content": list(blocks),
        "metadata": {},
        "timestamp": "2025-01-01 09:00:00.000",
    }


def use(cid: str, name: str = "calc") -> dict[str, Any]:
    return {"type": "tool_use", "id": cid, "name": name, "input": {}}


def result(cid: str, name: str = "calc") -> dict[str, Any]:
    return {"type": "tool_result", "id": cid, "name": name, "output": "ok"}


def memory(*msgs: dict[str, Any], pairs: bool = True) -> dict[str, Any]:
    return {"_compressed_summary": "", "content": [[m, []] for m in msgs] if pairs else list(msgs)}


def contents(states: dict[str, Any], module: str = "agent") -> list[Any]:
    return states[module]["memory"]["content"]  # type: ignore[no-any-return]


# -- on a real crashed agent ------------------------------------------------------


async def test_crash_rule_leaves_one_dangling_call_that_repair_closes() -> None:
    agent = await crashed_agent("hello", "what is 6*7")
    states = {"agent": agent.state_dict()}
    before = codec.dumps(states)
    (call,) = find_dangling_tool_calls(states)
    holder = agent.memory.content[call.index][0]
    assert (call.module, call.path, call.tool_name) == ("agent", "agent.memory", "crash")
    assert call.message_id == holder.id and holder.role == "assistant"
    assert call.tool_use_id == holder.get_content_blocks("tool_use")[0]["id"]
    assert call.where == f"agent.memory.content[{call.index}]"

    new, report = repair_states(states)
    assert codec.dumps(states) == before, "the input states were modified"
    assert container_ids(new).isdisjoint(container_ids(states)), "the new states share containers"
    assert find_dangling_tool_calls(new) == []
    assert [c.tool_use_id for c in report.calls] == [call.tool_use_id] and len(report) == 1
    assert report.calls[0].inserted_at == call.index + 1
    # Without repair a resumed conversation keeps the broken history; with it the agent goes on.
    fresh = ScriptedAgent(seed=4)
    fresh.load_state_dict(new["agent"])
    reply = await fresh(user("what is 2+2"))
    assert reply.get_text_content() == "2+2 = 4"
    assert find_dangling_tool_calls({"agent": fresh.state_dict()}) == []


async def test_the_closing_message_has_agentscope_shape() -> None:
    agent = await crashed_agent("hello")
    states = {"agent": agent.state_dict()}
    new, report = repair_states(states)
    (call,) = report.calls
    assert call.inserted_at is not None
    item = contents(new)[call.inserted_at]
    assert isinstance(item, list) and item[1] == []  # the [msg, marks] layout, no marks
    closing = item[0]
    assert list(closing) == ["id", "name", "role", "content", "metadata", "timestamp"]
    assert (closing["name"], closing["role"], closing["metadata"]) == ("system", "system", {})
    assert closing["content"] == [
        {
            "type": "tool_result",
            "id": call.tool_use_id,
            "name": "crash",
            "output": [{"type": "text", "text": REPAIR_TEXT}],
        }
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", closing["timestamp"])
    assert len(closing["id"]) == 22
    assert closing["id"] not in {m.id for m, _ in agent.memory.content}
    Msg.from_dict(closing)  # a valid message


async def test_a_crash_followed_by_more_turns_is_closed_in_place() -> None:
    agent = await crashed_agent("hello", after=("what is 1+1", "weather in Paris"))
    states = {"agent": agent.state_dict()}
    (call,) = find_dangling_tool_calls(states)
    new, report = repair_states(states)
    old_items, new_items = contents(states), contents(new)
    assert len(new_items) == len(old_items) + 1
    at = report.calls[0].inserted_at
    assert at == call.index + 1
    assert new_items[:at] == old_items[:at] and new_items[at + 1 :] == old_items[at:]
    assert new_items[at + 1][0]["role"] == "user"  # the next turn starts after the result


async def test_repair_through_both_stores(store: nbs.BaseStore) -> None:
    agent = await crashed_agent("hello")
    await store.asave("alice", agent=agent)
    states = await store.aget_state("alice")
    new, report = repair_states(states)
    assert report.changed
    fresh = ScriptedAgent(seed=9)
    fresh.load_state_dict(new["agent"])
    await fresh(user("hello again"))
    await store.asave("alice", agent=fresh, label="repaired")
    assert find_dangling_tool_calls(await store.aget_state("alice@repaired")) == []
    assert (
        len(find_dangling_tool_calls(await store.aget_state("alice@1"))) == 1
    )  # history kept as it was


async def test_load_with_repair_closes_the_call_and_keeps_the_checkpoint(
    store: nbs.BaseStore,
) -> None:
    agent = await crashed_agent("hello")
    await store.asave("alice", agent=agent)
    fresh = ScriptedAgent(seed=9)
    cp = await store.aload("alice", agent=fresh, repair=True)
    assert cp is not None and cp.repair is not None and len(cp.repair) == 1
    assert find_dangling_tool_calls({"agent": fresh.state_dict()}) == []
    assert (
        len(find_dangling_tool_calls(await store.aget_state("alice"))) == 1
    )  # stored one unchanged
    reply = await fresh(user("what is 3*3"))
    assert reply.get_text_content() == "3*3 = 9"


# -- placement and layouts --------------------------------------------------------


def test_result_goes_after_the_results_already_answering_that_message() -> None:
    states = {
        "agent": {
            "memory": memory(
                msg("m0", "user", {"type": "text", "text": "go"}),
                msg("m1", "assistant", use("a"), use("b"), use("c")),
                msg("m2", "system", result("b")),
                msg("m3", "user", {"type": "text", "text": "next"}),
            )
        }
    }
    new, report = repair_states(states, clock=StepClock(), id_factory=SeededIds(1))
    assert [(c.tool_use_id, c.index, c.inserted_at) for c in report.calls] == [
        ("a", 1, 3),
        ("c", 1, 4),
    ]
    ids = [item[0]["id"] for item in contents(new)]
    assert ids[:3] == ["m0", "m1", "m2"] and ids[-1] == "m3"
    closers = [contents(new)[i][0]["content"][0]["id"] for i in (3, 4)]
    assert closers == ["a", "c"]  # in the order of the calls
    assert find_dangling_tool_calls(new) == []


def test_older_layout_of_bare_messages() -> None:
    states = {"memory": memory(msg("m1", "assistant", use("x")), msg("m2", "user"), pairs=False)}
    new, report = repair_states(states)
    (call,) = report.calls
    assert (call.module, call.path, call.index, call.inserted_at) == ("memory", "memory", 0, 1)
    item = new["memory"]["content"][1]
    assert isinstance(item, dict) and item["content"][0]["id"] == "x"


def test_memories_at_any_depth_and_in_every_module() -> None:
    states = {
        "team": {
            "members": [
                {"memory": memory(msg("a1", "assistant", use("t1")))},
                {
                    "memory": memory(
                        msg("b1", "assistant", use("t2")), msg("b2", "system", result("t2"))
                    )
                },
            ]
        },
        "solo": {"memory": memory(msg("c1", "assistant", use("t3", "<script>alert(1)</script>")))},
    }
    calls = find_dangling_tool_calls(states)
    assert [(c.module, c.path, c.tool_use_id) for c in calls] == [
        ("team", "team.members[0].memory", "t1"),
        ("solo", "solo.memory", "t3"),
    ]
    new, report = repair_states(states)
    assert find_dangling_tool_calls(new) == []
    assert len(new["team"]["members"][1]["memory"]["content"]) == 2  # nothing to close there
    page = report._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "team.members[0].memory.content[0]" in str(report)


def test_a_result_answers_one_call_of_its_id_and_only_a_later_one() -> None:
    states = {
        "m": memory(
            msg("r0", "system", result("early")),  # a result before its call answers nothing
            msg("m1", "assistant", use("early"), use("dup")),
            msg("m2", "system", result("dup")),
            msg("m3", "assistant", use("dup")),
        )
    }
    calls = find_dangling_tool_calls(states)
    assert [(c.tool_use_id, c.index) for c in calls] == [("early", 1), ("dup", 3)]


def test_nothing_to_repair() -> None:
    states = {
        "agent": {
            "memory": memory(msg("m1", "assistant", use("a")), msg("m2", "system", result("a")))
        },
        "other": {"value": [1, 2]},
    }
    new, report = repair_states(states)
    assert new == states and new is not states
    assert not report.changed and len(report) == 0
    assert str(report) == "nothing to repair: every tool call has its result"
    assert "nothing to repair" in report._repr_html_()


def test_report_wording_and_dry_run() -> None:
    states = {"agent": {"memory": memory(msg("m1", "assistant", use("a", "get_weather")))}}
    _, done = repair_states(states)
    _, dry = repair_states(states, dry_run=True)
    assert str(done).startswith("closed 1 dangling tool call(s)")
    assert (
        "'get_weather'" in str(done)
        and "tool_use id 'a'" in str(done)
        and "message 'm1'" in str(done)
    )
    assert str(dry).startswith("would close 1") and str(dry).endswith(
        "dry run: nothing was changed"
    )
    assert "dry run" in dry._repr_html_()
    assert isinstance(done, RepairReport) and isinstance(done.calls[0], DanglingCall)


def test_reproducible_with_a_clock_and_ids() -> None:
    states = {
        "agent": {
            "memory": memory(msg("m1", "assistant", use("a")), msg("m2", "assistant", use("b")))
        }
    }
    one, _ = repair_states(states, clock=StepClock(), id_factory=SeededIds(7))
    two, _ = repair_states(states, clock=StepClock(), id_factory=SeededIds(7))
    assert codec.dumps(one) == codec.dumps(two)


@pytest.mark.parametrize(
    "junk",
    [
        {"memory": {"content": [["not a message", []]]}},
        {
            "memory": {
                "content": [
                    [
                        {"role": "assistant", "content": [use("a"), "x", {"type": "tool_use"}, 3]},
                        None,
                    ]
                ]
            }
        },
        {"memory": {"content": [{"role": "assistant", "content": "text only"}]}},
        {
            "memory": {
                "content": [
                    [
                        {
                            "role": "assistant",
                            "content": [{"type": "tool_use", "id": 5, "name": "x"}],
                        },
                        [],
                    ]
                ]
            }
        },
        {"memory": {"content": "nope"}},
        {"memory": None},
    ],
)
def test_malformed_states_are_skipped_never_raised_on(junk: dict[str, Any]) -> None:
    states = {"agent": junk}
    frozen = copy.deepcopy(states)
    calls = find_dangling_tool_calls(states)
    new, report = repair_states(states)
    assert states == frozen
    assert find_dangling_tool_calls(new) == []
    assert len(report.calls) == len(calls)


# -- properties ------------------------------------------------------------------

conversation = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3), st.lists(st.booleans(), max_size=3)),
    max_size=12,
)


def build(turns: list[tuple[int, list[bool]]], pairs: bool) -> dict[str, Any]:
    """Turns of user text, an assistant message with calls, and the results that were kept."""
    msgs: list[dict[str, Any]] = []
    for n, (kind, answered) in enumerate(turns):
        msgs.append(msg(f"u{n}", "user", {"type": "text", "text": "q"}))
        if kind:
            calls = [f"c{n}-{i}" for i in range(len(answered))]
            msgs.append(
                msg(f"a{n}", "assistant", {"type": "thinking", "thinking": "t"}, *map(use, calls))
            )
            for cid, ok in zip(calls, answered, strict=True):
                if ok:
                    msgs.append(msg(f"r{cid}", "system", result(cid)))
    return {"agent": {"memory": memory(*msgs, pairs=pairs)}}


@given(conversation, st.booleans())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_repair_closes_every_call_and_keeps_everything_else(
    turns: list[tuple[int, list[bool]]], pairs: bool
) -> None:
    states = build(turns, pairs)
    frozen = codec.dumps(states)
    dangling = find_dangling_tool_calls(states)
    expected = sum(1 for kind, answered in turns if kind for ok in answered if not ok)
    assert len(dangling) == expected
    new, report = repair_states(states)
    assert codec.dumps(states) == frozen
    assert find_dangling_tool_calls(new) == []
    items = new["agent"]["memory"]["content"]
    inserted = {c.inserted_at for c in report.calls}
    assert len(inserted) == len(report.calls)
    kept = [item for i, item in enumerate(items) if i not in inserted]
    assert kept == states["agent"]["memory"]["content"]  # nothing else moved or changed
    msgs = [m[0] if pairs else m for m in items]
    for c in report.calls:
        holder = next(i for i, m in enumerate(msgs) if m["id"] == c.message_id)
        assert c.inserted_at is not None and c.inserted_at > holder
        # Only the results of that turn (and other closers) lie between the call and its closer.
        assert all(m["role"] == "system" for m in msgs[holder + 1 : c.inserted_at])
        assert msgs[c.inserted_at]["content"][0]["id"] == c.tool_use_id
    again, second = repair_states(new)
    assert again == new and not second.changed  # idempotent


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.sampled_from(["tool_use", "tool_result", "role", "content", "id"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "id", "name", "role", "content", "memory", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=3), json_values, max_size=3))
@settings(max_examples=300)
def test_any_json_state_is_handled_without_error_or_mutation(states: dict[str, Any]) -> None:
    frozen = copy.deepcopy(states)
    find_dangling_tool_calls(states)
    new, _ = repair_states(states)
    assert states == frozen
    assert find_dangling_tool_calls(new) == []
