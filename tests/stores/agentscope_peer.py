"""The AgentScope side of the interop tests: run with AgentScope 1.0.21's own interpreter.

This script never imports nb_sessions (AgentScope lives in a venv of its own,
``.venv-agentscope``, whose pins clash with ours). ``tests/stores/test_agentscope_real.py``
runs it in a subprocess::

    python agentscope_peer.py write DIR SESSION [--user U]   # real objects -> JSONSession files
    python agentscope_peer.py load DIR SESSION [--user U]    # JSONSession files -> fresh real objects
    python agentscope_peer.py expected-bytes < states.json   # what JSONSession writes for these states
    python agentscope_peer.py redis-write PORT SESSION [--user U] [--prefix P] [--ttl N]
                                                             # real objects -> RedisSession keys

``write`` and ``load`` print ``{"agent": state_dict, "notebook": state_dict}``
as JSON (``ensure_ascii=False``, UTF-8) on stdout; ``expected-bytes`` prints
the exact bytes of the file AgentScope's JSONSession writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from typing import Any

from agentscope.agent import ReActAgent
from agentscope.formatter import OpenAIChatFormatter
from agentscope.memory import InMemoryMemory
from agentscope.message import (
    ImageBlock,
    Msg,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    URLSource,
)
from agentscope.model import ChatModelBase
from agentscope.module import StateModule
from agentscope.plan import PlanNotebook, SubTask
from agentscope.session import JSONSession
from agentscope.tool import Toolkit, ToolResponse

AGENT_NAME = "Friday"
# Tool groups every peer agent has, in creation order; ``write`` activates ACTIVE.
GROUPS = {
    "travel": "Tools to plan and book trips.",
    "web": "Tools to browse the web.",
    "maps": "Tools to look places up on a map.",
}
ACTIVE = ["travel", "maps"]


class StubModel(ChatModelBase):
    """A chat model that is never called: the peer only builds, saves and loads agents."""

    def __init__(self) -> None:
        super().__init__("offline-stub", stream=False)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the interop peer's stub model must not be called")


class Holder(StateModule):
    """A module whose state is exactly the dict it was given (to save arbitrary states)."""

    def __init__(self, state: Any) -> None:
        super().__init__()
        self._state = state

    def state_dict(self) -> Any:
        return self._state

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        self._state = state_dict


def book_trip(city: str, nights: int = 1) -> ToolResponse:
    """Book a trip to a city.

    Args:
        city (str): The destination.
        nights (int): How many nights to stay.
    """
    return ToolResponse(
        content=[TextBlock(type="text", text=f"Booked {nights} night(s) in {city}.")]
    )


def search_web(query: str) -> ToolResponse:
    """Search the web.

    Args:
        query (str): What to look for.
    """
    return ToolResponse(content=[TextBlock(type="text", text=f"No results for {query}.")])


def locate(place: str) -> ToolResponse:
    """Find a place on the map.

    Args:
        place (str): The place name.
    """
    return ToolResponse(content=[TextBlock(type="text", text=f"{place}: 47.37N 8.54E")])


def build() -> tuple[ReActAgent, PlanNotebook]:
    """A fresh ReActAgent named Friday with grouped tools and a plan notebook (all groups inactive)."""
    toolkit = Toolkit()
    for name, description in GROUPS.items():
        toolkit.create_tool_group(name, description=description, active=False)
    toolkit.register_tool_function(book_trip, group_name="travel")
    toolkit.register_tool_function(search_web, group_name="web")
    toolkit.register_tool_function(locate, group_name="maps")
    notebook = PlanNotebook()
    agent = ReActAgent(
        name=AGENT_NAME,
        sys_prompt="You are Friday, a helpful assistant. 请用用户的语言回答。",
        model=StubModel(),
        formatter=OpenAIChatFormatter(),
        toolkit=toolkit,
        memory=InMemoryMemory(),
        plan_notebook=notebook,
    )
    return agent, notebook


async def fill(agent: ReActAgent, notebook: PlanNotebook) -> None:
    """Give the agent a conversation, active tool groups and plans, all through AgentScope's API."""
    agent.toolkit.update_tool_groups(ACTIVE, active=True)

    await notebook.create_plan(
        name="Warm-up",
        description="A first plan, finished right away.",
        expected_outcome="Nothing left to do.",
        subtasks=[
            SubTask(name="Stretch", description="Stretch a bit.", expected_outcome="Loose muscles.")
        ],
    )
    await notebook.finish_subtask(0, "Stretched.")
    await notebook.finish_plan(state="done", outcome="Warmed up.")
    await notebook.create_plan(
        name="Trip to Zürich",
        description="Plan and book a trip to Zürich — with a stop in 東京.",
        expected_outcome="A booked trip.",
        subtasks=[
            SubTask(
                name="Pick dates", description="Choose the dates.", expected_outcome="Dates chosen."
            ),
            SubTask(
                name="Book hotel",
                description="Book a hotel in Zürich.",
                expected_outcome="Hotel booked.",
            ),
            SubTask(name="Pack", description="Pack the bags 🧳.", expected_outcome="Bags packed."),
        ],
    )
    await notebook.update_subtask_state(0, "in_progress")
    await notebook.finish_subtask(0, "14–18 May.")

    memory = agent.memory
    await memory.add(
        Msg("Bob", "你好 Friday! Plan my trip to Zürich, please 🚀", "user"), marks=["important"]
    )
    call = ToolUseBlock(
        type="tool_use",
        id="call_1",
        name="book_trip",
        input={"city": "Zürich", "nights": 4},
        raw_input='{"city": "Zürich", "nights": 4}',
    )
    await memory.add(
        Msg(
            AGENT_NAME,
            [ThinkingBlock(type="thinking", thinking="I should book the hotel first."), call],
            "assistant",
        ),
        marks=["hint", "compressed"],
    )
    await memory.add(
        Msg(
            "system",
            [
                ToolResultBlock(
                    type="tool_result",
                    id="call_1",
                    name="book_trip",
                    output=[TextBlock(type="text", text="Booked 4 night(s) in Zürich.")],
                ),
            ],
            "system",
        ),
    )
    await memory.add(
        Msg(
            "system",
            [
                ToolResultBlock(
                    type="tool_result", id="call_2", name="locate", output="Zürich: 47.37N 8.54E"
                )
            ],
            "system",
        ),
    )
    await memory.add(
        Msg(
            "Bob",
            [
                TextBlock(type="text", text="Here is the hotel I like:"),
                ImageBlock(
                    type="image", source=URLSource(type="url", url="https://example.com/hôtel.png")
                ),
            ],
            "user",
        ),
        marks="important",
    )
    await memory.add(
        Msg(
            AGENT_NAME,
            [TextBlock(type="text", text="Done — 4 nights booked. Gute Reise! ✈️")],
            "assistant",
            metadata={"confidence": 0.9, "tags": ["trip", "zürich"]},
            invocation_id="inv-1",  # AgentScope's Msg.to_dict drops this
        ),
    )
    await memory.update_compressed_summary("Bob wants a trip to Zürich (摘要).")


def states(**modules: StateModule) -> dict[str, Any]:
    return {name: module.state_dict() for name, module in modules.items()}


def emit(value: Any) -> None:
    sys.stdout.buffer.write(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    sys.stdout.buffer.flush()


async def cmd_write(args: argparse.Namespace) -> None:
    agent, notebook = build()
    await fill(agent, notebook)
    session = JSONSession(save_dir=args.dir)
    await session.save_session_state(
        args.session, user_id=args.user, agent=agent, notebook=notebook
    )
    emit(states(agent=agent, notebook=notebook))


async def cmd_load(args: argparse.Namespace) -> None:
    agent, notebook = build()
    session = JSONSession(save_dir=args.dir)
    await session.load_session_state(
        args.session, user_id=args.user, allow_not_exist=False, agent=agent, notebook=notebook
    )
    emit(states(agent=agent, notebook=notebook))


async def cmd_redis_write(args: argparse.Namespace) -> None:
    from agentscope.session import RedisSession

    agent, notebook = build()
    await fill(agent, notebook)
    session = RedisSession(port=args.port, host="127.0.0.1", key_ttl=args.ttl, key_prefix=args.prefix)
    await session.save_session_state(args.session, user_id=args.user, agent=agent, notebook=notebook)
    await session.get_client().aclose()
    emit(states(agent=agent, notebook=notebook))


async def cmd_expected_bytes(args: argparse.Namespace) -> None:
    given = json.loads(sys.stdin.buffer.read().decode("utf-8", "surrogatepass"))
    if not isinstance(given, dict):
        raise SystemExit("expected-bytes reads a JSON object {module_name: state_dict} on stdin")
    with tempfile.TemporaryDirectory() as tmp:
        session = JSONSession(save_dir=tmp)
        await session.save_session_state(
            "s", **{name: Holder(state) for name, state in given.items()}
        )
        with open(os.path.join(tmp, "s.json"), "rb") as f:
            sys.stdout.buffer.write(f.read())
    sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> None:
    logging.disable(logging.INFO)  # AgentScope logs every save/load; keep stdout/stderr clean
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("write", cmd_write), ("load", cmd_load)):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("session")
        p.add_argument("--user", default="")
        p.set_defaults(func=func)
    p = sub.add_parser("redis-write")
    p.add_argument("port", type=int)
    p.add_argument("session")
    p.add_argument("--user", default="default_user")
    p.add_argument("--prefix", default="")
    p.add_argument("--ttl", type=int, default=None)
    p.set_defaults(func=cmd_redis_write)
    p = sub.add_parser("expected-bytes")
    p.set_defaults(func=cmd_expected_bytes)
    args = parser.parse_args(argv)
    asyncio.run(args.func(args))


if __name__ == "__main__":
    main()
