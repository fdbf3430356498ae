"""A real AgentScope 2.x agent through the magics in real kernels: save, kernel restart, restore, carry on."""

from __future__ import annotations

import json
from pathlib import Path

import nb_sessions as nbs
from tests.notebook.test_kernel import execute, text_of

SETUP = (
    "from agentscope.message import UserMsg\n"
    "from agentscope.permission import PermissionBehavior, PermissionMode, PermissionRule\n"
    "from agentscope.state import Task\n"
    "from nb_sessions.agent.v2_scripted import demo_agent\n"
)


def test_a_2x_agent_survives_a_kernel_restart_and_carries_on(tmp_path: Path) -> None:
    first = execute(
        tmp_path,
        "%load_ext nb_sessions",
        SETUP
        + "agent = demo_agent([[('tool', 'get_weather', {'city': 'Paris'})], 'Sunny in Paris.'])\n"
        "agent.state.permission_context.mode = PermissionMode.ACCEPT_EDITS\n"
        "agent.state.permission_context.allow_rules['get_weather'] = [PermissionRule(\n"
        "    tool_name='get_weather', rule_content=None, behavior=PermissionBehavior.ALLOW, source='session')]\n"
        "agent.state.tasks_context.tasks.append(Task(subject='Pack', description='an umbrella', metadata={}))\n"
        "agent.state.tool_context.activated_groups = ['weather']\n"
        "await agent.reply(UserMsg('user', 'Weather in Paris?'))",
        "%save_session trip",  # no names: the 2.x agent is discovered
        "%autosave_session trip",
        "agent.state.tasks_context.tasks[0].state = 'in_progress'",  # a change autosave must see
        "x = 1",  # no change: no checkpoint
        "%autosave_session --off",
    )
    assert "saved trip@1" in text_of(first.cells[2]) and "agent" in text_of(first.cells[2])
    assert "autosave off: 1 checkpoint(s)" in text_of(first.cells[6])

    store = nbs.open_store(tmp_path / "nb_sessions.db")
    saved = store.get_state("trip")["agent"]  # ground truth: the checkpoint itself
    assert [t["state"] for t in saved["tasks_context"]["tasks"]] == ["in_progress"]
    (tmp_path / "want.json").write_text(json.dumps(saved), encoding="utf-8")

    second = execute(  # a new kernel: nothing of the first is left but the store
        tmp_path,
        "%load_ext nb_sessions",
        SETUP + "import json\n"
        "agent = demo_agent([[('tool', 'get_weather', {'city': 'Oslo'})], 'Sunny in Oslo too.'])",
        "%load_session trip",
        "want = json.load(open('want.json'))\n"
        "assert agent.state.model_dump(mode='json') == want\n"
        "assert agent._engine.context is agent.state.permission_context\n"
        "assert agent._engine.context.mode is PermissionMode.ACCEPT_EDITS\n"
        "n = len(agent.state.context)\n"
        "await agent.reply(UserMsg('user', 'And Oslo?'))\n"
        "results = [b for m in agent.state.context[n:] for b in m.content if b.type == 'tool_result']\n"
        "print('results', [(r.name, r.state) for r in results])",
        "%save_session trip --label oslo",
    )
    assert "restored agent from trip@2" in text_of(second.cells[2])
    assert "results [('get_weather', 'success')]" in text_of(second.cells[3])
    final = store.get_state("trip@oslo")["agent"]
    calls = [b for m in final["context"] for b in m["content"] if b["type"] == "tool_call"]
    results = {b["id"]: b for m in final["context"] for b in m["content"] if b["type"] == "tool_result"}
    assert [json.loads(c["input"])["city"] for c in calls] == ["Paris", "Oslo"]
    assert all(results[c["id"]]["state"] == "success" for c in calls)
    assert "Oslo" in json.dumps(results[calls[-1]["id"]]["output"])
