"""A scripted AgentScope 2.x chat model: real agents, no network (needs ``agentscope>=2``).

``ScriptedChatModel(script)`` is a real ``agentscope.model.ChatModelBase``
whose every call returns the next scripted turn: a string (a text reply) or a
list of ``("tool", name, {input})`` / ``("text", "...")`` items. Tests and the
AgentScope 2.x tutorial build real ``agentscope.agent.Agent`` objects with it.
Importing this module imports agentscope; nothing else in nb_sessions does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from agentscope.credential import CredentialBase
from agentscope.formatter import OpenAIChatFormatter
from agentscope.message import TextBlock, ToolCallBlock
from agentscope.model import ChatModelBase, ChatResponse
from pydantic import BaseModel

__all__ = ["ScriptedChatModel", "Turn", "demo_agent", "get_weather"]

Turn = str | Sequence[tuple[str, ...] | tuple[str, str, dict[str, Any]]]


class _NoParameters(BaseModel):
    pass


class ScriptedChatModel(ChatModelBase):
    """A chat model answering each call with the next turn of ``script`` (repeating the last text when it runs out)."""

    def __init__(self, script: Sequence[Turn] = (), *, name: str = "scripted") -> None:
        super().__init__(
            credential=CredentialBase(), model=name, parameters=_NoParameters(), stream=False
        )
        self.formatter = (
            OpenAIChatFormatter()
        )  # the agent asks it which media types the model takes
        self.script = list(script)
        self.calls = 0

    def add(self, *turns: Turn) -> None:
        """Append turns to the script (e.g. before continuing a restored conversation)."""
        self.script.extend(turns)

    async def _call_api(
        self,
        model_name: str,
        messages: list[Any],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> ChatResponse:
        turn: Turn = (
            self.script[self.calls] if self.calls < len(self.script) else "(no more scripted turns)"
        )
        self.calls += 1
        items = [("text", turn)] if isinstance(turn, str) else list(turn)
        content: list[Any] = []
        for item in items:
            if item[0] == "tool":
                content.append(
                    ToolCallBlock(
                        id=f"call_{uuid.uuid4().hex[:8]}",
                        name=str(item[1]),
                        input=json.dumps(item[2]),
                    )
                )
            else:
                content.append(TextBlock(text=str(item[1])))
        return ChatResponse(content=content, is_last=True)


def get_weather(city: str) -> Any:
    """Report the weather of a city (a deterministic demo tool).

    Args:
        city: the city to report on
    """
    from agentscope.tool import ToolResponse

    return ToolResponse(content=[TextBlock(text=f"Sunny, 21C in {city}")])


def demo_agent(script: Sequence[Turn] = (), *, name: str = "Friday") -> Any:
    """A real 2.x ``Agent`` with a :class:`ScriptedChatModel` and the ``get_weather`` tool.

    The tool needs the user's permission in the default mode; an allow rule
    (``agent.state.permission_context.allow_rules``) or another mode lets it run.
    """
    from agentscope.agent import Agent
    from agentscope.tool import FunctionTool, Toolkit

    return Agent(
        name=name,
        system_prompt="You are a helpful assistant.",
        model=ScriptedChatModel(script),
        toolkit=Toolkit(tools=[FunctionTool(get_weather)]),
    )
