"""Migrating AgentScope 1.x sessions to 2.x: every result validated by real AgentScope 2.0.11."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions import generations
from nb_sessions.agent import Msg, ScriptedAgent
from nb_sessions.migrate import migrate_states
from nb_sessions.repair import find_dangling_tool_calls, repair_states

DATA = Path(__file__).parent / "data"


def agent_state(*turns: str) -> dict[str, Any]:
    """The state_dict() of the 1.x ScriptedAgent after ``turns``."""
    agent = ScriptedAgent("Friday", seed=5)

    async def run() -> None:
        for text in turns:
            await agent(Msg("Bob", text, "user"))

    asyncio.run(run())
    return agent.state_dict()


def validate(state: dict[str, Any]) -> Any:
    from agentscope.state import AgentState

    # Through JSON, as AgentScope itself reads a saved state.
    return AgentState.model_validate_json(json.dumps(state))


def test_a_scripted_1x_agent_becomes_a_valid_2x_state_with_calls_and_results_together() -> None:
    from agentscope.message import TextBlock, ThinkingBlock, ToolCallBlock, ToolResultBlock

    old = agent_state("hello", "what is 6*7", "weather in Paris", "plan: trip; book; pack", "next")
    old["toolkit"]["active_groups"] = ["browser"]
    before = copy.deepcopy(old)
    new, report = migrate_states({"agent": old})
    assert old == before, "the 1.x state is never changed"
    model = validate(new["agent"])
    entries = [m for m, _ in generations.v1.memory_entries(old["memory"])]
    # Every 1.x text and thinking is in the 2.x context, in order.
    def texts(blocks: Any, kinds: tuple[type, ...]) -> list[str]:
        return [getattr(b, "text", None) or getattr(b, "thinking", "") for b in blocks if isinstance(b, kinds)]

    old_texts = [
        b.get("text") or b.get("thinking")
        for m in entries
        for b in ([{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"])
        if b["type"] in ("text", "thinking")
    ]
    assert [t for m in model.context for t in texts(m.content, (TextBlock, ThinkingBlock))] == old_texts
    # Every tool_use is a finished tool_call whose result sits in the same message.
    uses = [b for m in entries if isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_use"]
    assert uses, "the script made tool calls"
    for use in uses:
        (holder,) = [m for m in model.context if any(isinstance(b, ToolCallBlock) and b.id == use["id"]
                                                      for b in m.content)]
        call = next(b for b in holder.content if isinstance(b, ToolCallBlock) and b.id == use["id"])
        assert (call.name, json.loads(call.input), call.state) == (use["name"], use["input"], "finished")
        result = next(b for b in holder.content if isinstance(b, ToolResultBlock) and b.id == use["id"])
        assert result.state == "success" and holder.role == "assistant"
    assert all(m.role != "system" for m in model.context), "the 1.x result messages are gone"
    assert [(t.subject, t.state) for t in model.tasks_context.tasks] == [
        ("Trip", "completed"), ("Book", "in_progress"), ("Pack", "pending"),
    ]
    assert model.tool_context.activated_groups == ["browser"]
    assert report.migrated == ("agent",)
    whats = [i.path for i in report.leftovers]
    assert "agent.name" in whats and "agent._sys_prompt" in whats
    assert find_dangling_tool_calls(new) == []


def test_marks_summary_media_and_a_cut_off_call() -> None:
    def m(i: str, role: str, content: Any, ts: str = "2026-11-21 08:17:00.723") -> dict[str, Any]:
        return {"id": i, "name": role, "role": role, "content": content, "metadata": {}, "timestamp": ts}

    memory = {"_compressed_summary": "Bob asked about Q1 earlier.", "content": [
        [m("old", "user", "an old question"), ["compressed"]],
        [m("h", "user", "<hint>think first</hint>"), ["hint"]],
        [m("u1", "user", [{"type": "text", "text": "see this"},
                           {"type": "image", "source": {"type": "url", "url": "https://x.org/a.png"}}]),
         ["important"]],
        [m("a1", "assistant", [{"type": "tool_use", "id": "t1", "name": "crash", "input": {}}]), []],
    ]}
    new, report = migrate_states({"agent": {"memory": memory}})
    model = validate(new["agent"])
    assert model.summary == "Bob asked about Q1 earlier."
    assert [msg.id for msg in model.context] == ["u1", "a1"], "compressed and hint messages are left out"
    assert model.context[0].content[1].type == "data"
    assert str(model.context[0].content[1].source.url) == "https://x.org/a.png"
    assert model.context[0].created_at == "2026-11-21T08:17:00.723000"
    text = str(report)
    for words in ("'compressed'", "'hint'", "mark 'important'", "tool call 't1'", "repair=True"):
        assert words in text, words
    # The cut-off call is left as 2.x leaves one; repair closes it and AgentScope agrees.
    assert model.context[1].content[0].state == "allowed"
    (dangling,) = find_dangling_tool_calls(new)
    repaired, _ = repair_states(new)
    assert validate(repaired["agent"]).get_awaiting_tool_calls("assistant") == []
    assert dangling.tool_use_id == "t1"


@pytest.fixture
def store(tmp_path: Path) -> nbs.BaseStore:
    return nbs.open_store(tmp_path / "s.db")


class Box:
    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: Any, strict: bool = True) -> None:
        self.state = state


def test_migrate_saves_a_new_checkpoint_and_keeps_the_1x_ones(store: nbs.BaseStore) -> None:
    sample = json.loads((DATA / "agentscope_1.0.21_u42_bob.json").read_text(encoding="utf-8"))
    store.save("bob", **{k: Box(v) for k, v in sample.items()})
    report = nbs.migrate(store, "bob")
    assert report.checkpoint is not None and report.checkpoint.ref.endswith("bob@2")
    assert store.get_state("bob@1") == sample, "the 1.x checkpoint stays"
    new = store.get_state("bob@2")
    model = validate(new["agent"])
    assert [m.id for m in model.context] == [e[0]["id"] for e in sample["agent"]["memory"]["content"]]
    assert new["custom"] == sample["custom"] and report.kept == ("notebook", "custom")
    assert report.checkpoint.metadata["migrated_from"].endswith("bob@1")
    assert "'Migrate CRM' (abandoned, not current)" in str(report)
    html = report._repr_html_()
    assert "<table>" in html and "Migrate CRM" in html and "请用" in html
    # The views see a 2.x conversation now.
    assert set(nbs.views.messages(store, "bob")["generation"]) == {"2.x"}
    # Into a new session; an existing one is refused.
    other = nbs.migrate(store, "bob@1", to="bob2", label="v2")
    assert other.checkpoint is not None and other.checkpoint.label == "v2"
    with pytest.raises(nbs.ConflictError, match="bob2"):
        nbs.migrate(store, "bob@1", to="bob2")


def test_nothing_to_migrate_is_a_named_error(store: nbs.BaseStore) -> None:
    two = json.loads((DATA / "agentscope_2.0.11_agent_state.json").read_text(encoding="utf-8"))
    store.save("two", agent=Box(two))
    with pytest.raises(nbs.MigrationError, match=r"two@1.*AgentScope 2\.x") as caught:
        nbs.migrate(store, "two")
    assert isinstance(caught.value, nbs.NbSessionsError)
    with pytest.raises(nbs.MigrationError, match=r"agent: .*already an AgentScope 2\.x state"):
        migrate_states({"agent": two}, modules=["agent"])
    assert len(store.history("two")) == 1, "nothing was saved"


def test_generation_detection_and_the_one_refusal_message() -> None:
    two = json.loads((DATA / "agentscope_2.0.11_agent_state.json").read_text(encoding="utf-8"))
    one = json.loads((DATA / "agentscope_1.0.21_u42_bob.json").read_text(encoding="utf-8"))
    assert generations.module_generation(two) == "2.x"
    assert generations.module_generation(one["agent"]) == "1.x"
    assert generations.module_generation(one["custom"]) is None
    text = generations.mismatch_message("agent", "1.x", "2.x", "bob@1")
    assert "AgentScope 1.x" in text and "AgentScope 2.x" in text and "nbs.migrate" in text and "bob@1" in text
    back = generations.mismatch_message("agent", "2.x", "1.x")
    assert "AgentScope 2.x" in back and "AgentScope 1.x" in back and "nbs.migrate" in back
