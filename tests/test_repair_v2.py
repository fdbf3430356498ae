"""Repairing AgentScope 2.x states: a cut-off call is closed inside its own assistant message,
the way AgentScope 2.x closes a call it interrupts, and the result validates with AgentScope's models."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nb_sessions.generations import v2
from nb_sessions.repair import REPAIR_METADATA, find_dangling_tool_calls, repair_states

SAMPLE = Path(__file__).parent / "data" / "agentscope_2.0.11_agent_state.json"


def cut_off(state: str) -> dict[str, Any]:
    """The sample with call_1's result removed and the call left at ``state``."""
    agent = json.loads(SAMPLE.read_text(encoding="utf-8"))
    reply = agent["context"][1]
    reply["content"] = [b for b in reply["content"] if not (b["type"] == "tool_result" and b["id"] == "call_1")]
    next(b for b in reply["content"] if b.get("id") == "call_1")["state"] = state
    return {"agent": agent}


@pytest.mark.parametrize("state", ["allowed", "pending"])
def test_a_cut_off_2x_call_is_closed_in_its_message_as_agentscope_closes_an_interrupted_call(
    state: str,
) -> None:
    states = cut_off(state)
    before = copy.deepcopy(states)
    (call,) = find_dangling_tool_calls(states)
    assert (call.generation, call.where, call.tool_use_id, call.tool_name, call.state) == (
        "2.x", "agent.context[1]", "call_1", "get_weather", state,
    )
    repaired, report = repair_states(states, clock=lambda: "2026-12-02T10:00:00", id_factory=lambda: "x1")
    assert states == before, "the input is never changed"
    assert find_dangling_tool_calls(repaired) == []
    blocks = repaired["agent"]["context"][1]["content"]
    at = next(i for i, b in enumerate(blocks) if b["type"] == "tool_call" and b["id"] == "call_1")
    assert blocks[at]["state"] == "finished"
    result = blocks[at + 1]
    assert (result["type"], result["id"], result["name"], result["state"]) == (
        "tool_result", "call_1", "get_weather", "interrupted",
    )
    assert result["output"] == v2.INTERRUPT_TEXT
    assert result["metadata"] == REPAIR_METADATA
    assert report.calls[0].result_at == f"agent.context[1].content[{at + 1}]"
    assert len(repaired["agent"]["context"]) == len(states["agent"]["context"]), "no message was added"
    assert "agent.context[1]" in str(report)


def test_the_repaired_state_validates_with_agentscope_and_matches_its_own_interruption() -> None:
    from agentscope.message import ToolCallBlock, ToolResultBlock
    from agentscope.state import AgentState

    repaired, _ = repair_states(cut_off("allowed"))
    model = AgentState.model_validate(repaired["agent"])
    blocks = model.context[1].content
    (result,) = [b for b in blocks if isinstance(b, ToolResultBlock) and b.id == "call_1"]
    (call,) = [b for b in blocks if isinstance(b, ToolCallBlock) and b.id == "call_1"]
    assert (call.state, result.state, result.output) == ("finished", "interrupted", v2.INTERRUPT_TEXT)
    # The text is AgentScope's own: read from its source, so a new release that changes it fails here.
    import inspect

    from agentscope.agent import _agent

    assert v2.INTERRUPT_TEXT.removeprefix("<system-reminder>").removesuffix("</system-reminder>") in (
        inspect.getsource(_agent).replace('"\n            "', "")
    )
    # Nothing awaits any more: AgentScope's own view of open calls agrees.
    assert model.get_awaiting_tool_calls(model.context[1].name) == []


@pytest.mark.parametrize("state", ["asking", "submitted"])
def test_a_2x_call_waiting_for_someone_is_left_alone(state: str) -> None:
    states = cut_off(state)
    assert find_dangling_tool_calls(states) == []
    repaired, report = repair_states(states)
    assert repaired == states and not report.changed


def test_the_real_sample_has_nothing_to_repair() -> None:
    states = {"agent": json.loads(SAMPLE.read_text(encoding="utf-8"))}
    assert find_dangling_tool_calls(states) == []
