"""SessionDiff: messages matched by id, plan and subtask changes, other keys, HTML, every source form."""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.diff import (
    KEY_DIFF_COLUMNS,
    MESSAGE_DIFF_COLUMNS,
    SUBTASK_DIFF_COLUMNS,
    SessionDiff,
    diff,
    diff_states,
)
from nb_sessions.state import StateModule

PLAN_ID = "MwpaNAuc8dViCcfeY3Xbuj"
U1 = "P7ZverNMj6MCGkUkAgMkuB"
A1 = "8K79EjahMQB9DZxC7ujzN2"


def msg(mid: str | None, role: str, content: Any, name: str = "Bob") -> dict[str, Any]:
    """A message dict in AgentScope's wire form."""
    out = {
        "name": name,
        "role": role,
        "content": content,
        "metadata": {},
        "timestamp": "2026-11-21 08:18:00.000",
    }
    if mid is not None:
        out["id"] = mid
    return out


class Holder(StateModule):
    """A live module whose registered attributes are the given state dicts."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__()
        for key, value in attrs.items():
            setattr(self, key, value)
            self.register_state(key)


def edited(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample after a turn: one message added, one edited, marks on another, a subtask done, a new plan."""
    after = copy.deepcopy(sample)
    content = after["agent"]["memory"]["content"]
    content[0][1].append("important")
    content[1][0]["content"][0]["text"] = "Revenue +12%."
    content.append([msg("n1", "user", "<script>alert(1)</script>"), []])
    content.append([msg("n2", "assistant", "Done.", name="Friday"), ["final"]])
    after["agent"]["_sys_prompt"] = "You are Friday."
    after["custom"]["stats"]["turns"] = 2
    after["custom"]["tags"].append("admin")
    after["notebook"]["storage"]["plans"][PLAN_ID]["subtasks"][0]["state"] = "done"
    after["agent"]["plan_notebook"]["current_plan"] = {
        "id": "P2",
        "name": "Write report",
        "state": "todo",
        "subtasks": [{"name": "Outline", "state": "todo"}, {"name": "Draft", "state": "todo"}],
    }
    return after


# -- diff_states over the sample ---------------------------------------------------------------


def test_diff_of_sample_edits(sample_state: dict[str, Any]) -> None:
    d = diff_states(sample_state, edited(sample_state), label_a="before", label_b="after")
    assert isinstance(d, SessionDiff)
    assert not d.empty

    m = d.messages
    assert list(m.columns) == list(MESSAGE_DIFF_COLUMNS)
    assert m["change"].tolist() == ["marks changed", "changed", "added", "added"]
    assert m["id"].tolist() == [U1, A1, "n1", "n2"]
    assert m["path"].unique().tolist() == ["agent.memory"]
    changed = m.iloc[1]
    assert changed["text_before"] == "Sure — key points: revenue +12%, APAC leading."
    assert changed["text_after"] == "Revenue +12%."
    assert (m.iloc[0]["marks_before"], m.iloc[0]["marks_after"]) == ("", "important")
    added = m.iloc[3]
    assert (added["role"], added["name"], added["text_after"], added["marks_after"]) == (
        "assistant",
        "Friday",
        "Done.",
        "final",
    )
    assert added[["text_before", "marks_before"]].isna().all()

    s = d.subtasks
    assert list(s.columns) == list(SUBTASK_DIFF_COLUMNS)
    rows = [
        tuple(r)
        for r in s[["path", "plan_name", "subtask", "change", "state_before", "state_after"]]
        .fillna("-")
        .itertuples(index=False)
    ]
    assert rows == [
        ("agent.plan_notebook", "Write report", "", "added", "-", "todo"),
        ("agent.plan_notebook", "Write report", "Outline", "added", "-", "todo"),
        ("agent.plan_notebook", "Write report", "Draft", "added", "-", "todo"),
        ("notebook", "Migrate CRM", "Export", "changed", "todo", "done"),
    ]
    assert s["position"].tolist()[1:] == [0, 1, 0]
    assert s["position"].isna().tolist()[0]

    k = d.keys
    assert list(k.columns) == list(KEY_DIFF_COLUMNS)
    assert k["path"].tolist() == ["agent._sys_prompt", "custom.stats.turns", "custom.tags"]
    assert k["change"].tolist() == ["changed"] * 3
    assert k["before"].tolist() == [
        '"You are a helpful assistant named Friday. 请用用户的语言回答。"',
        "0",
        '["reviewer"]',
    ]
    assert k["after"].tolist() == ['"You are Friday."', "2", '["reviewer", "admin"]']

    assert d.summary() == (
        "before → after: agent.memory: +2 messages, 1 changed, 1 with marks changed; "
        "agent.plan_notebook: plan 'Write report' added (todo, 2 subtasks); "
        "notebook: plan 'Migrate CRM': subtask 'Export' todo → done; "
        "3 other keys changed (agent._sys_prompt, custom.stats.turns, custom.tags)."
    )
    printed = str(d)  # a plain script's print(): the summary, then the tables
    assert printed.startswith(d.summary() + "\n\nMessages:\n")
    assert "\nPlans:\n" in printed and "\nOther keys:\n" in printed


def test_identical_states_give_an_empty_diff(sample_state: dict[str, Any]) -> None:
    d = diff_states(sample_state, copy.deepcopy(sample_state))
    assert d.empty
    assert d.summary() == "a → b: no differences."
    for frame, cols in (
        (d.messages, MESSAGE_DIFF_COLUMNS),
        (d.subtasks, SUBTASK_DIFF_COLUMNS),
        (d.keys, KEY_DIFF_COLUMNS),
    ):
        assert frame.empty
        assert list(frame.columns) == list(cols)
    assert "no differences" in d._repr_html_()


def test_html_escapes_message_text(sample_state: dict[str, Any]) -> None:
    d = diff_states(sample_state, edited(sample_state))
    page = d._repr_html_()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<h4>Messages</h4>" in page
    assert "<h4>Plans</h4>" in page
    assert "<h4>Other keys</h4>" in page
    assert "&lt;NA&gt;" not in page
    assert "<NA>" not in page


def test_html_escapes_keys_and_plan_names() -> None:
    before = {"m": {"title": "a", "nb": {"storage": {"plans": {}}, "current_plan": None}}}
    after = {
        "m": {
            "title": "<img src=x onerror=alert(1)>",
            "nb": {
                "storage": {"plans": {}},
                "current_plan": {"id": "p", "name": "<b>x</b>", "state": "todo", "subtasks": []},
            },
        }
    }
    page = diff_states(before, after)._repr_html_()
    assert "<img" not in page
    assert "<b>x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_removed_messages_and_modules(sample_state: dict[str, Any]) -> None:
    after = copy.deepcopy(sample_state)
    del after["agent"]["memory"]["content"][0]
    del after["notebook"]
    after["extra"] = {"x": 1}
    d = diff_states(sample_state, after)
    assert d.messages[["change", "id", "text_before"]].values.tolist() == [
        ["removed", U1, "Can you summarise the Q2 report draft?"]
    ]
    assert d.messages["text_after"].isna().all()
    assert d.keys[["module", "path", "change"]].values.tolist() == [
        ["notebook", "notebook", "removed"],
        ["extra", "extra", "added"],
    ]
    assert d.keys["after"].iloc[1] == '{"x": 1}'
    assert d.subtasks.empty  # a removed module is reported once, in keys
    assert (
        d.summary()
        == "a → b: agent.memory: -1 message; module 'notebook' removed; module 'extra' added."
    )


def test_plan_state_and_subtask_changes() -> None:
    def nb(plan_state: str, tasks: list[tuple[str, str]], stored: bool = True) -> dict[str, Any]:
        p = {
            "id": "p",
            "name": "Ship",
            "state": plan_state,
            "subtasks": [{"name": n, "state": s} for n, s in tasks],
        }
        old = {"id": "q", "name": "Old", "state": "done", "subtasks": []}
        plans = {"q": old} if stored else {}
        return {"nb": {"storage": {"plans": plans}, "current_plan": p}}

    before = nb("in_progress", [("A", "done"), ("B", "in_progress"), ("C", "todo")])
    after = nb("abandoned", [("A", "done"), ("B", "abandoned"), ("D", "todo")], stored=False)
    d = diff_states(before, after)
    rows = (
        d.subtasks[["plan_name", "subtask", "change", "state_before", "state_after"]]
        .fillna("-")
        .values.tolist()
    )
    assert rows == [
        ["Old", "", "removed", "done", "-"],
        ["Ship", "", "changed", "in_progress", "abandoned"],
        ["Ship", "B", "changed", "in_progress", "abandoned"],
        ["Ship", "C", "removed", "todo", "-"],
        ["Ship", "D", "added", "-", "todo"],
    ]
    assert d.keys.empty  # plan storage is only reported in the subtasks frame
    assert d.summary() == (
        "a → b: plan 'Old' removed (was done); plan 'Ship' in_progress → abandoned, "
        "subtask 'B' in_progress → abandoned, subtask 'C' removed, subtask 'D' added (todo)."
    )


def test_type_changes_count_and_nan_equals_nan() -> None:
    before = {"m": {"flag": 1, "ratio": float("nan"), "n": 1.0, "deep": {"xs": [1, 2, {"k": "v"}]}}}
    after = {
        "m": {"flag": True, "ratio": float("nan"), "n": 1.0, "deep": {"xs": [1, 3, {"k": "w"}]}}
    }
    d = diff_states(before, after)
    assert d.keys[["path", "before", "after"]].values.tolist() == [
        ["m.flag", "1", "true"],
        ["m.deep.xs[1]", "2", "3"],
        ["m.deep.xs[2].k", '"v"', '"w"'],
    ]


def test_compressed_summary_is_an_other_key_and_marks_only_change() -> None:
    before = {"mem": {"_compressed_summary": "", "content": [[msg("a", "user", "hi"), []]]}}
    after = {
        "mem": {
            "_compressed_summary": "Bob said hi.",
            "content": [[msg("a", "user", "hi"), ["seen"]]],
        }
    }
    d = diff_states(before, after)
    assert d.keys["path"].tolist() == ["mem._compressed_summary"]
    assert d.messages["change"].tolist() == ["marks changed"]
    assert d.summary() == (
        "a → b: mem: 1 with marks changed; 1 other key changed (mem._compressed_summary)."
    )


def test_messages_without_ids_and_duplicate_ids_are_matched_by_position_and_occurrence() -> None:
    before = {
        "mem": {"content": [msg(None, "user", "a"), msg("d", "user", "x"), msg("d", "user", "y")]}
    }
    after = {
        "mem": {"content": [msg(None, "user", "a2"), msg("d", "user", "x"), msg("d", "user", "y2")]}
    }
    d = diff_states(before, after)
    assert d.messages[["change", "text_before", "text_after"]].values.tolist() == [
        ["changed", "a", "a2"],
        ["changed", "y", "y2"],
    ]


def test_long_values_are_shortened() -> None:
    d = diff_states({"m": {"blob": "x" * 1000}}, {"m": {"blob": "y" * 1000}})
    before = d.keys["before"].iloc[0]
    assert len(before) == 200
    assert before.endswith("…")
    assert before.startswith('"xxx')


# -- the public entry: every source form -------------------------------------------------------


@pytest.fixture
def store_and_agent(
    tmp_path: Path, sample_state: dict[str, Any]
) -> tuple[nbs.BaseStore, Holder, Holder]:
    """alice@1 is the sample; alice@2 after the edits; the live objects hold the edited state."""
    store = nbs.open_store(tmp_path / "s.db")
    agent = Holder(**copy.deepcopy(sample_state["agent"]))
    notebook = Holder(**copy.deepcopy(sample_state["notebook"]))
    store.save("alice", agent=agent, notebook=notebook, label="start")
    later = edited(sample_state)
    agent = Holder(**later["agent"])
    notebook = Holder(**later["notebook"])
    store.save("alice", agent=agent, notebook=notebook)
    return store, agent, notebook


def test_diff_two_checkpoints_of_a_store(
    store_and_agent: tuple[nbs.BaseStore, Holder, Holder],
) -> None:
    store, _, _ = store_and_agent
    d = diff(store, "alice@1", "alice@2")
    assert (d.label_a, d.label_b) == ("alice@1", "alice@2")
    assert d.messages["id"].tolist() == [U1, A1, "n1", "n2"]
    assert d.subtasks["state_after"].tolist()[-1] == "done"
    assert d.keys["path"].tolist() == ["agent._sys_prompt"]  # no "custom" module was saved
    by_label = diff(store, "alice@start", "alice")
    assert by_label.summary().replace("alice@1 → alice@2", "x") == d.summary().replace(
        "alice@1 → alice@2", "x"
    )


def test_diff_one_checkpoint_against_its_predecessor(
    store_and_agent: tuple[nbs.BaseStore, Holder, Holder],
) -> None:
    store, _, _ = store_and_agent
    d = diff(store, "alice@2")
    assert (d.label_a, d.label_b) == ("alice@1", "alice@2")
    assert len(d.messages) == 4
    first = diff(store, "alice@1")
    assert first.label_a == "(nothing)"
    assert first.keys[["path", "change"]].values.tolist() == [
        ["agent", "added"],
        ["notebook", "added"],
    ]


def test_diff_checkpoint_against_live_objects(
    store_and_agent: tuple[nbs.BaseStore, Holder, Holder],
) -> None:
    store, agent, notebook = store_and_agent
    assert diff(store, "alice@2", agent=agent, notebook=notebook).empty
    agent.memory["content"].append([msg("n3", "user", "One more thing"), []])
    notebook.storage["plans"][PLAN_ID]["state"] = "done"
    d = diff(store, "alice@2", agent=agent, notebook=notebook)
    assert (d.label_a, d.label_b) == ("alice@2", "live")
    assert d.messages[["change", "id", "text_after"]].values.tolist() == [
        ["added", "n3", "One more thing"]
    ]
    assert d.subtasks[["subtask", "change", "state_before", "state_after"]].values.tolist() == [
        ["", "changed", "abandoned", "done"]
    ]
    # Only the modules named are compared: "notebook" missing from the call is not "removed".
    only_agent = diff(store, "alice@2", agent=agent)
    assert only_agent.subtasks.empty
    assert only_agent.keys.empty
    assert len(only_agent.messages) == 1
    # A live module the checkpoint lacks is an added module.
    extra = diff(store, "alice@2", agent=agent, scratch=Holder(x=1))
    assert extra.keys[["path", "change", "after"]].values.tolist() == [
        ["scratch", "added", '{"x": 1}']
    ]


def test_diff_checkpoint_objects_and_dicts(
    store_and_agent: tuple[nbs.BaseStore, Holder, Holder], sample_state: dict[str, Any]
) -> None:
    store, agent, _ = store_and_agent
    cp1, cp2 = store.history("alice")
    d = diff(cp1, cp2)
    assert (d.label_a, d.label_b) == ("alice@1", "alice@2")
    assert len(d.messages) == 4
    live = diff(cp2, agent=agent)
    assert live.empty
    assert live.label_b == "live"

    plain = diff(sample_state, edited(sample_state))
    assert (plain.label_a, plain.label_b) == ("a", "b")
    assert len(plain.keys) == 3
    mapping_of_live = diff(sample_state, {"agent": agent})
    assert mapping_of_live.label_b == "live"
    assert mapping_of_live.keys[["path", "change"]].values.tolist()[-2:] == [
        ["notebook", "removed"],
        ["custom", "removed"],
    ]
    state_vs_live = diff({"agent": sample_state["agent"]}, agent=agent)
    assert len(state_vs_live.messages) == 4


def test_diff_does_not_touch_live_state(
    store_and_agent: tuple[nbs.BaseStore, Holder, Holder],
) -> None:
    store, agent, _ = store_and_agent
    before = copy.deepcopy(agent.state_dict())
    agent.memory["content"][0][0]["metadata"] = {"k": [1]}
    before["memory"]["content"][0][0]["metadata"] = {"k": [1]}
    d = diff(store, "alice@1", agent=agent)
    d.messages.loc[:, "text_after"] = "x"
    d.keys.loc[:, "after"] = "x"
    assert agent.state_dict() == before


def test_diff_usage_errors(
    store_and_agent: tuple[nbs.BaseStore, Holder, Holder], sample_state: dict[str, Any]
) -> None:
    store, agent, _ = store_and_agent
    with pytest.raises(TypeError, match="needs a checkpoint"):
        diff(store)
    with pytest.raises(TypeError, match="not both"):
        diff(store, "alice@1", "alice@2", agent=agent)
    with pytest.raises(TypeError, match="two things to compare"):
        diff(sample_state)
    with pytest.raises(TypeError, match="looks like a reference"):
        diff("alice@1", "alice@2")
    with pytest.raises(TypeError, match="as keywords"):
        diff(sample_state, agent)
    with pytest.raises(TypeError, match="only applies to a store"):
        diff(sample_state, sample_state, sample_state)
    with pytest.raises(nbs.CheckpointNotFoundError):
        diff(store, "alice@7", "alice@1")


def test_diff_of_a_scripted_agent_turn() -> None:
    agent_mod = importlib.import_module("nb_sessions.agent")
    import asyncio

    agent = agent_mod.ScriptedAgent(seed=3)
    before = {"agent": copy.deepcopy(agent.state_dict())}
    asyncio.run(agent(agent_mod.Msg("Bob", "what is 6*7", "user")))
    d = diff(before, agent=agent)
    assert d.messages["change"].unique().tolist() == ["added"]
    assert d.messages["role"].iloc[0] == "user"
    assert d.messages["text_after"].iloc[0] == "what is 6*7"
    assert d.summary().startswith(f"a → live: agent.memory: +{len(d.messages)} messages")


def nested(depth: int, leaf: Any) -> dict[str, Any]:
    """``{"x": {"x": ... {"x": leaf}}}`` nested ``depth`` times."""
    node: Any = leaf
    for _ in range(depth):
        node = {"x": node}
    return node


def test_deeply_nested_values() -> None:
    d = diff_states({"m": nested(300, 1)}, {"m": nested(300, 2)})
    assert d.keys["path"].tolist() == ["m" + ".x" * 300]
    assert d.keys[["before", "after"]].values.tolist() == [["1", "2"]]
    # Deeper than Python's recursion limit (no JSON file can hold it, a live object can): no crash.
    too_deep = diff_states({"m": nested(5000, 1)}, {"m": nested(5000, 2)})
    assert too_deep.keys[["path", "change", "before"]].values.tolist() == [
        ["m", "changed", "<nested too deeply to compare>"]
    ]


def test_a_memory_or_notebook_that_appears_is_reported_by_its_messages_and_plans() -> None:
    before: dict[str, Any] = {
        "team": {"lead": {"memory": {"content": [[msg("a", "user", "hi"), []]]}}}
    }
    after = copy.deepcopy(before)
    after["team"]["helper"] = {"memory": {"content": [[msg("b", "user", "yo"), []]]}}
    after["team"]["nb"] = {
        "storage": {"plans": {}},
        "current_plan": {"id": "p", "name": "P", "state": "todo", "subtasks": []},
    }
    after["team"]["note"] = "new"
    d = diff_states(before, after)
    assert d.messages[["path", "change", "id"]].values.tolist() == [
        ["team.helper.memory", "added", "b"]
    ]
    assert d.subtasks[["path", "plan_id", "change"]].values.tolist() == [["team.nb", "p", "added"]]
    assert d.keys[["path", "change", "after"]].values.tolist() == [["team.note", "added", '"new"']]


def test_live_tracked_content_equals_its_stored_copy() -> None:
    from nb_sessions.agent import InMemoryMemory, Msg

    mem = InMemoryMemory()
    mem.content.append((Msg("Friday", [{"type": "text", "text": "hi"}], "assistant", metadata={"k": [1]}), []))
    live = {"memory": mem.state_dict()}
    stored = json.loads(json.dumps(live))
    result = diff_states(stored, live)
    assert result.empty, result.summary()
    assert nbs.diff(stored, memory=mem).empty


# -- AgentScope 2.x states ------------------------------------------------------------

SAMPLE_V2 = Path(__file__).parent / "data" / "agentscope_2.0.11_agent_state.json"


def test_2x_diff_reports_messages_and_task_state_changes_not_one_other_key() -> None:
    before = json.loads(SAMPLE_V2.read_text(encoding="utf-8"))
    after = copy.deepcopy(before)
    after["context"].append({**copy.deepcopy(after["context"][0]), "id": "m3",
                             "content": [{"type": "text", "text": "thanks", "id": "b9"}]})
    after["context"][1]["content"][-1]["text"] = "It is sunny."
    after["tasks_context"]["tasks"][0]["state"] = "in_progress"
    after["tasks_context"]["tasks"].append({"subject": "Book", "description": "", "metadata": {}, "id": "2",
                                            "state": "pending", "blocks": [], "blocked_by": []})
    after["permission_context"]["mode"] = "accept_edits"
    from agentscope.state import AgentState

    AgentState.model_validate(after)  # a valid 2.0.11 state

    d = nbs.diff({"agent": before}, {"agent": after})
    msgs = d.messages.set_index("id")
    assert msgs.loc["m3", "change"] == "added" and msgs.loc["m3", "text_after"] == "thanks"
    reply = before["context"][1]["id"]
    assert msgs.loc[reply, "change"] == "changed" and msgs.loc[reply, "text_after"] == "It is sunny."
    assert len(msgs) == 2
    tasks = d.tasks.set_index("task_id")
    assert (tasks.loc["1", "change"], tasks.loc["1", "state_before"], tasks.loc["1", "state_after"]) == (
        "state", "pending", "in_progress",
    )
    assert (tasks.loc["2", "change"], tasks.loc["2", "state_after"]) == ("added", "pending")
    assert d.keys["path"].tolist() == ["agent.permission_context.mode"], "only the real other key is a key row"
    text = d.summary()
    assert "agent: +1 message, 1 changed" in text
    assert "task 'Pack umbrella' pending → in_progress" in text and "task 'Book' added (pending)" in text
    assert "<h4>Tasks</h4>" in d._repr_html_()
    assert "task rows" in repr(d)


def test_2x_diff_of_equal_states_is_empty_and_a_removed_task_is_named() -> None:
    state = json.loads(SAMPLE_V2.read_text(encoding="utf-8"))
    assert nbs.diff({"agent": state}, copy.deepcopy({"agent": state})).empty
    after = copy.deepcopy(state)
    after["tasks_context"]["tasks"] = []
    d = nbs.diff({"agent": state}, {"agent": after})
    assert d.tasks["change"].tolist() == ["removed"] and d.messages.empty and d.keys.empty
    assert "task 'Pack umbrella' removed (was pending)" in d.summary()
