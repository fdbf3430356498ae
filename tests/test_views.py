"""DataFrame views and plots over every kind of state source."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import nb_sessions as nbs
from nb_sessions import views
from nb_sessions.state import StateModule

PLAN_ID = "MwpaNAuc8dViCcfeY3Xbuj"


def msg(
    mid: str,
    role: str,
    content: Any,
    ts: Any = "2026-01-02 10:00:00.000",
    name: str = "Friday",
    **extra: Any,
) -> dict[str, Any]:
    """A message dict in AgentScope's wire form."""
    return {
        "id": mid,
        "name": name,
        "role": role,
        "content": content,
        "metadata": {},
        "timestamp": ts,
        **extra,
    }


def tool_state() -> dict[str, Any]:
    """A memory with an ok call, an error call, a dangling call, thinking, a URL image and marks."""
    content = [
        [
            msg(
                "u1", "user", "What is 6*7 and the weather?", "2026-01-02 10:00:00.000", name="Bob"
            ),
            [],
        ],
        [
            msg(
                "a1",
                "assistant",
                [
                    {"type": "thinking", "thinking": "Use the calculator."},
                    {
                        "type": "tool_use",
                        "id": "c1",
                        "name": "calculator",
                        "input": {"expression": "6*7"},
                    },
                    {
                        "type": "tool_use",
                        "id": "c2",
                        "name": "get_weather",
                        "input": {"city": "Atlantis"},
                    },
                ],
                "2026-01-02 10:00:01.000",
            ),
            ["hint"],
        ],
        [
            msg(
                "r1",
                "system",
                [
                    {
                        "type": "tool_result",
                        "id": "c1",
                        "name": "calculator",
                        "output": [{"type": "text", "text": "42"}],
                    },
                    {
                        "type": "tool_result",
                        "id": "c2",
                        "name": "get_weather",
                        "output": "Error: unknown city Atlantis",
                    },
                ],
                "2026-01-02 10:00:03.500",
                name="system",
            ),
            [],
        ],
        [
            msg(
                "a2",
                "assistant",
                [
                    {"type": "text", "text": "6*7 is 42."},
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.png"},
                    },
                    {"type": "tool_use", "id": "c3", "name": "crash", "input": {}},
                ],
                "2026-01-02 10:00:04.000",
                invocation_id="inv-9",
            ),
            ["important", "todo"],
        ],
    ]
    return {"agent": {"memory": {"_compressed_summary": "", "content": content}, "name": "Friday"}}


def plan(
    pid: str, name: str, state: str, tasks: list[tuple[str, str]], **extra: Any
) -> dict[str, Any]:
    """A Plan dict with subtasks ``(name, state)``, created a minute apart."""
    subtasks = [
        {
            "name": n,
            "description": f"do {n}",
            "expected_outcome": "",
            "outcome": "ok" if s == "done" else None,
            "state": s,
            "created_at": f"2026-01-02 10:0{i}:00.000",
            "finished_at": f"2026-01-02 10:0{i}:30.000" if s in ("done", "abandoned") else None,
        }
        for i, (n, s) in enumerate(tasks)
    ]
    return {
        "id": pid,
        "name": name,
        "description": "",
        "expected_outcome": "",
        "subtasks": subtasks,
        "created_at": "2026-01-02 10:00:00.000",
        "state": state,
        "finished_at": None,
        "outcome": None,
        **extra,
    }


class FakeAgent(StateModule):
    """A minimal agent-shaped module: memory and notebook held as plain state dicts."""

    def __init__(self, state: dict[str, Any]) -> None:
        super().__init__()
        self.memory = state["memory"]
        self.plan_notebook = state.get(
            "plan_notebook", {"storage": {"plans": {}}, "current_plan": None}
        )
        self.name = state.get("name", "Friday")
        self.register_state("memory")
        self.register_state("plan_notebook")
        self.register_state("name")


# -- the AgentScope sample -----------------------------------------------------


def test_messages_from_sample(sample_state: dict[str, Any]) -> None:
    df = views.messages(sample_state)
    assert list(df.columns) == [name for name, _ in views.MESSAGE_COLUMNS]
    assert len(df) == 2
    assert df["path"].tolist() == ["agent.memory", "agent.memory"]
    assert df["module"].tolist() == ["agent", "agent"]
    assert df["id"].tolist() == ["P7ZverNMj6MCGkUkAgMkuB", "8K79EjahMQB9DZxC7ujzN2"]
    assert df["role"].tolist() == ["user", "assistant"]
    assert df["name"].tolist() == ["Bob", "Friday"]
    assert df["text"].tolist() == [
        "Can you summarise the Q2 report draft?",
        "Sure — key points: revenue +12%, APAC leading.",
    ]
    assert df["block_types"].tolist() == ["text", "text"]
    assert df["marks"].tolist() == ["", ""]
    assert df["metadata"].tolist() == ["{}", "{}"]
    assert df["timestamp"].iloc[0] == pd.Timestamp("2026-11-21 08:17:00.723")
    assert str(df["timestamp"].dtype) == "datetime64[ns]"
    assert df["session"].isna().all()
    assert df["checkpoint"].isna().all()
    assert str(df["checkpoint"].dtype) == "Int64"
    assert df["position"].tolist() == [0, 1]


def test_plans_and_subtasks_from_sample(sample_state: dict[str, Any]) -> None:
    plans = views.plans(sample_state)
    # The same abandoned plan is stored in the agent's notebook and in the standalone one.
    assert plans["path"].tolist() == ["agent.plan_notebook", "notebook"]
    assert set(plans["plan_id"]) == {PLAN_ID}
    row = plans.iloc[0]
    assert row["name"] == "Migrate CRM"
    assert row["state"] == "abandoned"
    assert not row["is_current"]
    assert (row["n_subtasks"], row["n_done"]) == (1, 0)
    assert row["outcome"] == "Bob cancelled the migration."
    assert row["finished_at"] == pd.Timestamp("2026-11-21 08:17:00.723")
    assert row["duration"] == pd.Timedelta(0)

    tasks = views.subtasks(sample_state)
    assert len(tasks) == 2
    task = tasks.iloc[1]
    assert (task["module"], task["path"], task["name"]) == ("notebook", "notebook", "Export")
    assert task["state"] == "todo"
    assert task["plan_state"] == "abandoned"
    assert task["expected_outcome"] == "dump.json"
    assert pd.isna(task["finished_at"])
    assert pd.isna(task["duration"])
    assert pd.isna(task["outcome"])
    assert tasks["state"].cat.ordered
    assert list(tasks["state"].cat.categories) == ["todo", "in_progress", "done", "abandoned"]


def test_sample_has_no_tool_calls_and_one_block_per_message(sample_state: dict[str, Any]) -> None:
    assert views.tool_calls(sample_state).empty
    b = views.blocks(sample_state)
    assert b["type"].tolist() == ["text", "text"]
    assert b["message_id"].tolist() == ["P7ZverNMj6MCGkUkAgMkuB", "8K79EjahMQB9DZxC7ujzN2"]
    assert b["text"].iloc[1].startswith("Sure")


# -- tool calls and blocks -------------------------------------------------------


def test_messages_blocks_and_counts() -> None:
    df = views.messages(tool_state())
    assert df["id"].tolist() == ["u1", "a1", "r1", "a2"]
    assert df["block_types"].tolist() == [
        "text",
        "thinking,tool_use",
        "tool_result",
        "text,image,tool_use",
    ]
    assert df["n_tool_calls"].tolist() == [0, 2, 0, 1]
    # a message that is only tool calls reads as the calls
    assert df["text"].tolist() == [
        "What is 6*7 and the weather?",
        "→ calculator(expression='6*7'); → get_weather(city='Atlantis')",
        "",
        "6*7 is 42.",
    ]
    assert df["marks"].tolist() == ["", "hint", "", "important,todo"]
    assert df["invocation_id"].iloc[3] == "inv-9"
    assert df["invocation_id"].iloc[:3].isna().all()


def test_blocks_rows() -> None:
    b = views.blocks(tool_state())
    assert len(b) == 1 + 3 + 2 + 3
    a1 = b[b["message_id"] == "a1"]
    assert a1["block_index"].tolist() == [0, 1, 2]
    assert a1["type"].tolist() == ["thinking", "tool_use", "tool_use"]
    assert a1["text"].iloc[0] == "Use the calculator."
    assert a1["tool_name"].tolist()[1:] == ["calculator", "get_weather"]
    assert a1["tool_input"].iloc[1] == '{"expression": "6*7"}'
    results = b[b["type"] == "tool_result"]
    assert results["text"].tolist() == ["42", "Error: unknown city Atlantis"]
    assert results["tool_id"].tolist() == ["c1", "c2"]
    image = b[b["type"] == "image"].iloc[0]
    assert (image["source_type"], image["url"]) == ("url", "https://example.com/a.png")
    assert pd.isna(image["media_type"])


def test_tool_calls_join_results_and_flag_dangling() -> None:
    calls = views.tool_calls(tool_state())
    assert calls["tool_id"].tolist() == ["c1", "c2", "c3"]
    assert calls["tool_name"].tolist() == ["calculator", "get_weather", "crash"]
    assert calls["status"].tolist() == ["ok", "error", "missing"]
    assert calls["dangling"].tolist() == [False, False, True]
    assert calls["output"].iloc[0] == "42"
    assert calls["output"].iloc[1] == "Error: unknown city Atlantis"
    assert pd.isna(calls["output"].iloc[2])
    assert calls["call_message_id"].tolist() == ["a1", "a1", "a2"]
    assert calls["result_message_id"].iloc[0] == "r1"
    assert pd.isna(calls["result_message_id"].iloc[2])
    assert calls["result_position"].tolist()[:2] == [2, 2]
    assert pd.isna(calls["result_position"].iloc[2])
    assert calls["input"].iloc[1] == '{"city": "Atlantis"}'
    assert (calls["returned_at"] - calls["called_at"]).iloc[0] == pd.Timedelta(seconds=2.5)
    assert pd.isna(calls["returned_at"].iloc[2])


def test_tool_result_before_the_call_does_not_count() -> None:
    state = tool_state()
    content = state["agent"]["memory"]["content"]
    content.insert(0, content.pop(2))  # results now come first
    calls = views.tool_calls(state)
    assert calls["status"].tolist() == ["missing", "missing", "missing"]
    assert calls["dangling"].all()


@pytest.mark.parametrize(
    ("output", "status"),
    [
        ("Error: boom", "error"),
        ("ValueError: bad input", "error"),
        ("FunctionNotFoundError: Cannot find the function named x", "error"),
        ("Errors found: 0", "ok"),
        ("All good, no Error here", "ok"),
        ([{"type": "text", "text": "Error: in a block"}], "error"),
    ],
)
def test_tool_call_error_rule(output: Any, status: str) -> None:
    state = {
        "m": {
            "content": [
                msg("a", "assistant", [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
                msg(
                    "r",
                    "system",
                    [{"type": "tool_result", "id": "t", "name": "f", "output": output}],
                ),
            ]
        }
    }
    assert views.tool_calls(state)["status"].tolist() == [status]


def test_is_error_flag_marks_error() -> None:
    state = {
        "m": {
            "content": [
                msg("a", "assistant", [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]),
                msg(
                    "r",
                    "system",
                    [
                        {
                            "type": "tool_result",
                            "id": "t",
                            "name": "f",
                            "output": "x",
                            "is_error": True,
                        }
                    ],
                ),
            ]
        }
    }
    assert views.tool_calls(state)["status"].tolist() == ["error"]


# -- shapes of state ---------------------------------------------------------------


def test_older_memory_layout_and_unparseable_timestamps() -> None:
    memory = {
        "content": [
            msg("m1", "user", "hi", ts="2026-01-02 10:00:00"),
            msg("m2", "assistant", "yo", ts="not a time"),
            msg("m3", "assistant", "late", ts=None),
        ]
    }
    df = views.messages(memory)
    assert df["id"].tolist() == ["m1", "m2", "m3"]
    assert df["marks"].tolist() == ["", "", ""]
    assert df["module"].tolist() == ["state"] * 3
    assert df["timestamp"].iloc[0] == pd.Timestamp("2026-01-02 10:00:00")
    assert df["timestamp"].iloc[1:].isna().all()


def test_nested_memories_anywhere_get_their_path() -> None:
    state = {
        "team": {
            "agents": [
                {"memory": {"content": [[msg("x", "user", "one"), []]]}},
                {"memory": {"content": [[msg("y", "user", "two"), []]]}},
            ]
        }
    }
    df = views.messages(state)
    assert df["path"].tolist() == ["team.agents[0].memory", "team.agents[1].memory"]
    assert df["text"].tolist() == ["one", "two"]


def test_a_message_with_block_content_is_not_a_memory() -> None:
    single = msg("x", "assistant", [{"type": "text", "text": "hi"}])
    assert not views.is_memory(single)
    with pytest.warns(views.NothingToShowWarning, match="found no conversation"):
        assert views.messages({"m": single}).empty


def test_current_plan_once_and_unstored_current_plan_appended() -> None:
    stored = plan("p1", "Old", "done", [("A", "done")])
    current = plan(
        "p2", "Live", "in_progress", [("X", "done"), ("Y", "in_progress"), ("Z", "todo")]
    )
    stale_copy = plan("p2", "Live (stale copy)", "todo", [("X", "todo")])
    nb_with_copy = {"storage": {"plans": {"p1": stored, "p2": stale_copy}}, "current_plan": current}
    p = views.plans({"nb": nb_with_copy})
    assert p["plan_id"].tolist() == ["p1", "p2"]
    assert p["is_current"].tolist() == [False, True]
    assert p["name"].tolist() == ["Old", "Live"]  # the live version wins
    assert p["n_done"].tolist() == [1, 1]

    nb_without = {"storage": {"plans": {"p1": stored}}, "current_plan": current}
    s = views.subtasks({"nb": nb_without})
    assert s["plan_id"].tolist() == ["p1", "p2", "p2", "p2"]
    assert s["is_current"].tolist() == [False, True, True, True]
    assert s["name"].tolist() == ["A", "X", "Y", "Z"]
    assert s["position"].tolist() == [0, 0, 1, 2]
    assert s["state"].tolist() == ["done", "done", "in_progress", "todo"]
    assert s["duration"].iloc[0] == pd.Timedelta(seconds=30)
    assert s["outcome"].iloc[0] == "ok"
    # Ordered categorical: states compare and sort by progress.
    assert (s["state"] < "done").tolist() == [False, False, True, True]
    assert s.sort_values("state")["name"].tolist()[0] == "Z"


def test_unknown_state_is_kept_as_extra_category() -> None:
    nb = {"storage": {"plans": {}}, "current_plan": plan("p", "P", "todo", [("A", "blocked")])}
    s = views.subtasks(nb)
    assert s["state"].tolist() == ["blocked"]
    assert list(s["state"].cat.categories) == [
        "todo",
        "in_progress",
        "done",
        "abandoned",
        "blocked",
    ]


# -- live objects and no aliasing ----------------------------------------------------


def test_live_object_and_mapping_of_live_objects() -> None:
    state = tool_state()["agent"]
    agent = FakeAgent(state)
    single = views.messages(agent)
    # named as checkpoints name agents, so live and saved frames join on path
    assert single["module"].unique().tolist() == ["agent"]
    assert single["path"].iloc[0] == "agent.memory"
    named = views.messages({"bob": agent})
    assert named["path"].unique().tolist() == ["bob.memory"]
    assert named["id"].tolist() == ["u1", "a1", "r1", "a2"]


def test_frames_never_alias_live_state() -> None:
    state = tool_state()["agent"]
    state["memory"]["content"][0][0]["metadata"] = {"source": {"app": "cli"}, "tags": ["a"]}
    state["plan_notebook"] = {
        "storage": {"plans": {}},
        "current_plan": plan("p", "P", "todo", [("A", "todo")]),
    }
    agent = FakeAgent(state)
    before = copy.deepcopy(agent.state_dict())
    frames = [
        views.messages(agent),
        views.blocks(agent),
        views.tool_calls(agent),
        views.subtasks(agent),
        views.plans(agent),
    ]
    for frame in frames:
        assert len(frame)
        for column in frame.columns:
            for value in frame[column]:
                assert not isinstance(value, (dict, list, set)), (column, value)
    df = frames[0]
    assert df["metadata"].iloc[0] == '{"source": {"app": "cli"}, "tags": ["a"]}'
    # Edit every frame hard, in place and through copies.
    df.loc[0, "text"] = "hacked"
    df.loc[0, "metadata"] = "{}"
    df["marks"] = "x"
    frames[1].loc[:, "text"] = "hacked"
    frames[2].loc[0, "input"] = "{}"
    frames[3].loc[0, "name"] = "hacked"
    frames[4].loc[0, "n_subtasks"] = 99
    assert agent.state_dict() == before
    assert agent.memory["content"][0][0]["content"] == "What is 6*7 and the weather?"
    assert agent.memory["content"][0][0]["metadata"]["source"] == {"app": "cli"}


# -- stores and checkpoints -------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> nbs.BaseStore:
    """A SQLite store with alice@1 (two messages) and alice@2 (four, labelled)."""
    store = nbs.open_store(tmp_path / "s.db")
    state = tool_state()["agent"]
    agent = FakeAgent(copy.deepcopy(state))
    agent.memory["content"] = agent.memory["content"][:2]
    store.save("alice", agent=agent, metadata={"cell": 3})
    agent.memory["content"] = copy.deepcopy(state["memory"]["content"])
    store.save("alice", agent=agent, label="tools")
    return store


def test_store_and_reference_sources(sqlite_store: nbs.BaseStore) -> None:
    first = views.messages(sqlite_store, "alice@1")
    assert len(first) == 2
    assert first["session"].unique().tolist() == ["alice"]
    assert first["checkpoint"].tolist() == [1, 1]
    latest = views.messages(sqlite_store, "alice")
    assert latest["checkpoint"].unique().tolist() == [2]
    assert len(latest) == 4
    by_label = views.tool_calls(sqlite_store, "alice@tools")
    assert by_label["status"].tolist() == ["ok", "error", "missing"]
    cp = sqlite_store.checkpoint("alice@1")
    from_cp = views.blocks(cp)
    assert from_cp["checkpoint"].unique().tolist() == [1]
    assert from_cp["path"].unique().tolist() == ["agent.memory"]


def test_sessions_and_history_frames(sqlite_store: nbs.BaseStore) -> None:
    sqlite_store.save("bob", agent=FakeAgent(tool_state()["agent"]))
    s = views.sessions(sqlite_store)
    assert list(s.columns) == [name for name, _ in views.SESSION_COLUMNS]
    assert sorted(s["session"]) == ["alice", "bob"]
    alice = s.set_index("session").loc["alice"]
    assert (alice["checkpoints"], alice["latest"], alice["labels"]) == (2, 2, "tools")
    assert str(s["updated_at"].dtype) == "datetime64[ns, UTC]"

    h = views.history(sqlite_store, "alice")
    assert h["seq"].tolist() == [1, 2]
    assert h["ref"].tolist() == ["alice@1", "alice@2"]
    assert h["label"].isna().tolist() == [True, False]
    assert h["label"].iloc[1] == "tools"
    assert h["modules"].tolist() == ["agent", "agent"]
    assert (h["size"] > 0).all()
    assert '"cell": 3' in h["metadata"].iloc[0]
    assert str(h["parent"].dtype) == "Int64"
    assert h["created_at"].is_monotonic_increasing


def test_bad_sources_raise_clear_errors(sqlite_store: nbs.BaseStore) -> None:
    with pytest.raises(TypeError, match="needs a reference"):
        views.messages(sqlite_store)
    with pytest.raises(TypeError, match="only applies to a store"):
        views.messages({"a": {}}, "alice@1")
    with pytest.raises(TypeError, match="cannot read agent state from a int"):
        views.messages(42)
    with pytest.raises(TypeError, match="takes a store"):
        views.sessions({"not": "a store"})  # type: ignore[arg-type]
    with pytest.raises(nbs.CheckpointNotFoundError):
        views.messages(sqlite_store, "alice@9")


# -- empty inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "schema"),
    [
        (views.messages, views.MESSAGE_COLUMNS),
        (views.blocks, views.BLOCK_COLUMNS),
        (views.tool_calls, views.TOOL_CALL_COLUMNS),
        (views.subtasks, views.SUBTASK_COLUMNS),
        (views.plans, views.PLAN_COLUMNS),
    ],
)
def test_empty_frames_have_columns_and_dtypes(
    view: Any, schema: Any, sample_state: dict[str, Any]
) -> None:
    with pytest.warns(views.NothingToShowWarning, match=f"views.{view.__name__}: found no"):
        empty = view({})
    assert empty.empty
    names = [name for name, _ in schema]
    assert list(empty.columns)[: len(names)] == names
    full = view(
        tool_state() if view in (views.messages, views.blocks, views.tool_calls) else sample_state
    )
    assert len(full)
    assert empty.dtypes.astype(str).to_dict() == full.dtypes.astype(str).to_dict()


def test_empty_store_frames(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "empty.db")
    s = views.sessions(store)
    assert s.empty
    assert list(s.columns) == [name for name, _ in views.SESSION_COLUMNS]
    assert str(s["created_at"].dtype) == "datetime64[ns, UTC]"
    assert str(s["checkpoints"].dtype) == "int64"


# -- plots ----------------------------------------------------------------------------------


def test_plot_messages_lines_per_role() -> None:
    ax = views.plot_messages(tool_state())
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels == ["assistant (2)", "system (1)", "user (1)"]
    assistant = next(line for line in ax.get_lines() if line.get_label() == "assistant (2)")
    assert list(assistant.get_ydata()) == [1, 2]
    plt.close(ax.figure)


def test_plot_messages_untimed_uses_position() -> None:
    memory = {"content": [msg("a", "user", "x", ts=None), msg("b", "user", "y", ts=None)]}
    fig, ax = plt.subplots()
    out = views.plot_messages(memory, ax=ax)
    assert out is ax
    assert ax.get_xlabel() == "message"
    assert list(ax.get_lines()[0].get_xdata()) == [0, 1]
    plt.close(fig)


def test_plot_plan_bars_coloured_by_state() -> None:
    nb = {
        "storage": {"plans": {"old": plan("old", "Old", "done", [("A", "done")])}},
        "current_plan": plan(
            "cur", "Ship it", "in_progress", [("X", "done"), ("Y", "in_progress"), ("Z", "todo")]
        ),
    }
    ax = views.plot_plan({"nb": nb})
    assert ax.get_title() == "Plan: Ship it"
    bars = ax.patches
    assert len(bars) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["X", "Y", "Z"]
    colours = [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars]
    assert colours == ["#2ca02c", "#1f77b4", "#9e9e9e"]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "done",
        "in_progress",
        "todo",
    ]
    plt.close(ax.figure)
    other = views.plot_plan({"nb": nb}, plan_id="old")
    assert other.get_title() == "Plan: Old"
    assert len(other.patches) == 1
    plt.close(other.figure)
    with pytest.raises(KeyError, match="nope"):
        views.plot_plan({"nb": nb}, plan_id="nope")


def test_plot_plan_on_sample_shows_the_abandoned_plan(sample_state: dict[str, Any]) -> None:
    ax = views.plot_plan(sample_state["notebook"])
    assert ax.get_title() == "Plan: Migrate CRM"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Export"]
    plt.close(ax.figure)


# -- scale and the real agent package --------------------------------------------------------


def test_messages_over_100k_messages() -> None:
    """Correct at scale; the time is measured by benchmarks/, never asserted here."""
    content = [
        [
            msg(
                f"m{i}",
                "user" if i % 2 else "assistant",
                f"text {i}",
                ts=f"2026-01-02 10:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 1000:03d}",
            ),
            [],
        ]
        for i in range(100_000)
    ]
    state = {"agent": {"memory": {"content": content}}}
    df = views.messages(state)
    assert len(df) == 100_000
    assert df["text"].iloc[99_999] == "text 99999"
    assert df["timestamp"].notna().all()


def test_views_of_a_scripted_agent() -> None:
    agent_mod = importlib.import_module("nb_sessions.agent")
    import asyncio

    agent = agent_mod.ScriptedAgent(seed=7)

    async def talk() -> None:
        await agent(agent_mod.Msg("Bob", "what is 6*7", "user"))

    asyncio.run(talk())
    calls = views.tool_calls({"agent": agent})
    assert calls["tool_name"].tolist() == ["calculator"]
    assert calls["status"].tolist() == ["ok"]
    assert "42" in calls["output"].iloc[0]
    df = views.messages({"agent": agent})
    assert df["path"].unique().tolist() == ["agent.memory"]
    assert df["role"].iloc[0] == "user"
    assert df["timestamp"].notna().all()


def test_deeply_nested_state_is_walked_without_recursion() -> None:
    node: Any = {"memory": {"content": [[msg("deep", "user", "found me"), []]]}}
    for _ in range(5000):
        node = {"x": node}
    df = views.messages({"m": node})
    assert df["id"].tolist() == ["deep"]
    assert df["path"].iloc[0] == "m" + ".x" * 5000 + ".memory"


# -- AgentScope 2.x states ------------------------------------------------------------
# Ground truth comes from the state itself, read through AgentScope 2.0.11's own models.

SAMPLE_V2 = Path(__file__).parent / "data" / "agentscope_2.0.11_agent_state.json"


def state_v2() -> dict[str, Any]:
    import json

    return json.loads(SAMPLE_V2.read_text(encoding="utf-8"))


def agentscope_model(state: dict[str, Any]) -> Any:
    from agentscope.state import AgentState

    return AgentState.model_validate(state)


def two_replies() -> dict[str, Any]:
    """The sample with a second reply: one call waiting for the user, one cut off, usage recorded."""
    state = state_v2()
    reply = copy.deepcopy(state["context"][1])
    reply["id"] = "reply2"
    reply["created_at"] = "2026-11-29T21:50:10.000001"
    reply["usage"] = {"input_tokens": 70, "output_tokens": 5, "cache_input_tokens": 3,
                      "cache_creation_input_tokens": 0}
    reply["finished_reason"] = "completed"
    reply["content"] = [
        {"type": "tool_call", "id": "call_3", "name": "rm", "input": '{"path": "/tmp/x"}', "state": "asking",
         "created_at": "2026-11-29T21:50:10.1"},
        {"type": "tool_call", "id": "call_4", "name": "get_weather", "input": '{"city": "Oslo"}',
         "state": "allowed", "created_at": "2026-11-29T21:50:10.2"},
        {"type": "tool_call", "id": "call_5", "name": "bad", "input": "{}", "state": "finished",
         "created_at": "2026-11-29T21:50:10.3"},
        {"type": "tool_result", "id": "call_5", "name": "bad", "output": "no such tool", "state": "error",
         "created_at": "2026-11-29T21:50:10.4"},
    ]
    state["context"].append(reply)
    state["tasks_context"]["tasks"] += [
        {"subject": "Book train", "description": "", "metadata": {"prio": 1}, "state": "completed", "id": "2",
         "owner": "Friday", "blocks": ["1"], "blocked_by": [], "created_at": "2026-11-29T21:50:00.5"},
        {"subject": "Pay", "description": "d", "metadata": {}, "state": "in_progress", "id": "3",
         "owner": None, "blocks": [], "blocked_by": ["1", "2"], "created_at": "2026-11-29T21:50:01"},
    ]
    agentscope_model(state)  # the fixture itself is a valid 2.0.11 state
    return state


def test_2x_messages_against_agentscope_models() -> None:
    from agentscope.message import TextBlock, ToolCallBlock

    state = two_replies()
    model = agentscope_model(state)
    df = views.messages({"agent": state})
    assert df["path"].unique().tolist() == ["agent"] and set(df["generation"]) == {"2.x"}
    assert df["id"].tolist() == [m.id for m in model.context]
    assert df["role"].tolist() == [m.role for m in model.context]
    for shown, m in zip(df["text"], model.context, strict=True):
        text = "\n".join(b.text for b in m.content if isinstance(b, TextBlock))
        calls = [b.name for b in m.content if isinstance(b, ToolCallBlock)]
        if text or not calls:
            assert shown == text
        else:  # a message that is only tool calls reads as the calls
            assert [part.split("(")[0] for part in shown.split("; ")] == [f"→ {n}" for n in calls]
    assert df["n_tool_calls"].tolist() == [
        sum(isinstance(b, ToolCallBlock) for b in m.content) for m in model.context
    ]
    assert df["block_types"].iloc[1] == "hint,thinking,tool_call,tool_result,text"
    assert df["timestamp"].tolist() == [pd.Timestamp(m.created_at) for m in model.context]
    assert df["finished_at"].iloc[0] == pd.Timestamp(model.context[0].finished_at)
    assert pd.isna(df["finished_at"].iloc[1])
    assert df["input_tokens"].isna().tolist() == [m.usage is None for m in model.context]
    assert df["input_tokens"].iloc[1:].tolist() == [m.usage.input_tokens for m in model.context[1:]]
    assert df["output_tokens"].iloc[1:].tolist() == [m.usage.output_tokens for m in model.context[1:]]
    assert df["finished_reason"].iloc[2] == "completed" and pd.isna(df["error"].iloc[2])
    assert (df["marks"] == "").all()


def test_2x_single_state_dict_and_live_model_are_sources() -> None:
    state = two_replies()
    assert len(views.messages(state)) == 3, "one AgentState dump is a source on its own"
    live = agentscope_model(state)
    df = views.messages(live)
    assert df["module"].unique().tolist() == ["AgentState"] and len(df) == 3
    df.loc[0, "text"] = "edited"
    assert live.context[0].content[0].text == "What's the weather in Paris?", "frames never alias live state"


def test_2x_blocks_hold_every_kind_with_its_text() -> None:
    state = two_replies()
    model = agentscope_model(state)
    df = views.blocks({"agent": state})
    assert len(df) == sum(len(m.content) for m in model.context)
    reply = df[df["message_id"] == model.context[1].id]
    assert reply["type"].tolist() == [b.type for b in model.context[1].content]
    hint = reply[reply["type"] == "hint"].iloc[0]
    assert hint["text"] == model.context[1].content[0].hint
    call = reply[reply["type"] == "tool_call"].iloc[0]
    assert (call["tool_input"], call["state"], call["tool_id"]) == ('{"city": "Paris"}', "finished", "call_1")
    result = reply[reply["type"] == "tool_result"].iloc[0]
    assert (result["text"], result["state"]) == ("Sunny, 21C in Paris", "success")


def test_2x_tool_calls_pair_in_the_same_message_and_flag_only_cut_off_calls() -> None:
    from agentscope.message import ToolCallBlock, ToolResultBlock

    state = two_replies()
    model = agentscope_model(state)
    df = views.tool_calls({"agent": state}).set_index("tool_id")
    truth_calls = [(i, b) for i, m in enumerate(model.context) for b in m.content if isinstance(b, ToolCallBlock)]
    assert list(df.index) == [b.id for _, b in truth_calls]
    results = {b.id: (i, b) for i, m in enumerate(model.context) for b in m.content if isinstance(b, ToolResultBlock)}
    for i, call in truth_calls:
        row = df.loc[call.id]
        assert (row["call_position"], row["input"], row["call_state"]) == (i, call.input, call.state)
        if call.id in results:
            j, res = results[call.id]
            assert (row["result_position"], row["result_state"], row["dangling"]) == (j, res.state, False)
            assert row["result_message_id"] == row["call_message_id"], "2.x results sit in the call's message"
    assert df.loc["call_1", "status"] == "ok" and df.loc["call_1", "output"] == "Sunny, 21C in Paris"
    assert df.loc["call_5", "status"] == "error" and df.loc["call_5", "output"] == "no such tool"
    assert (df.loc["call_3", "status"], df.loc["call_3", "dangling"]) == ("waiting", False)
    assert (df.loc["call_4", "status"], df.loc["call_4", "dangling"]) == ("missing", True)
    assert df.loc["call_4", "called_at"] == pd.Timestamp("2026-11-29T21:50:10.2")


def test_2x_tasks_view() -> None:
    state = two_replies()
    model = agentscope_model(state)
    df = views.tasks({"agent": state})
    truth = model.tasks_context.tasks
    assert df["task_id"].tolist() == [t.id for t in truth]
    assert df["subject"].tolist() == [t.subject for t in truth]
    assert df["state"].tolist() == [t.state for t in truth]
    assert list(df["state"].cat.categories) == ["pending", "in_progress", "completed"]
    assert df["state"].cat.ordered and df["state"].min() == "pending"
    assert df["owner"].tolist()[1] == "Friday" and pd.isna(df["owner"].iloc[0])
    assert df["blocks"].tolist() == [",".join(t.blocks) for t in truth]
    assert df["blocked_by"].tolist() == [",".join(t.blocked_by) for t in truth]
    assert df["created_at"].tolist() == [pd.Timestamp(t.created_at) for t in truth]
    assert df["metadata"].tolist() == ["{}", '{"prio": 1}', "{}"]


def test_2x_usage_per_message_and_cumulative() -> None:
    state = two_replies()
    model = agentscope_model(state)
    df = views.usage({"agent": state})
    used = [(i, m.usage) for i, m in enumerate(model.context) if m.usage is not None]
    assert df["position"].tolist() == [i for i, _ in used]
    assert df["input_tokens"].tolist() == [u.input_tokens for _, u in used]
    assert df["cache_input_tokens"].tolist() == [u.cache_input_tokens for _, u in used]
    total_in = sum(u.input_tokens for _, u in used)
    total_out = sum(u.output_tokens for _, u in used)
    assert df["cumulative_tokens"].iloc[-1] == total_in + total_out
    assert df["cumulative_input_tokens"].is_monotonic_increasing
    ax = views.plot_usage({"agent": state})
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == [f"input ({total_in})", f"output ({total_out})"]
    plt.close("all")


def test_views_that_find_nothing_say_what_they_looked_for_and_where_to_look() -> None:
    import warnings

    state = two_replies()
    with pytest.warns(views.NothingToShowWarning, match="found no plan notebook.*use views.tasks"):
        assert views.subtasks({"agent": state}).empty
    with pytest.warns(views.NothingToShowWarning, match="found no plan notebook.*use views.tasks"):
        assert views.plans({"agent": state}).empty
    v1_state = tool_state()
    with pytest.warns(views.NothingToShowWarning, match="2.x agent state"):
        assert views.tasks(v1_state).empty
    with pytest.warns(views.NothingToShowWarning, match="record none: agent.memory"):
        assert views.usage(v1_state).empty
    # An empty but real conversation or task list is not "nothing found".
    state["context"] = []
    state["tasks_context"]["tasks"] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert views.messages({"agent": state}).empty
        assert views.tasks({"agent": state}).empty
        assert views.usage({"agent": state}).empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with views.silenced():
                assert views.subtasks({"agent": state}).empty


def test_the_warning_points_at_the_callers_line() -> None:
    with pytest.warns(views.NothingToShowWarning) as caught:
        views.tasks({})
    assert caught[0].filename == __file__
