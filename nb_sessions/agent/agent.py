"""An AgentScope-1.x-shaped agent base and :class:`ScriptedAgent`, a deterministic offline demo agent.

``Agent`` state: ``{"memory", "toolkit", "plan_notebook"?, "name", "_sys_prompt"}``,
key for key what AgentScope's ReActAgent saves. ``ScriptedAgent`` answers by
regex rules instead of a model, but leaves AgentScope-shaped memory behind:
the user message, an assistant message ``[thinking, tool_use]``, a system
message ``[tool_result]`` per tool call, and a final assistant text.
"""

from __future__ import annotations

import ast
import operator
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from ..state import StateModule
from .memory import InMemoryMemory
from .message import (
    Clock,
    ContentBlock,
    IdFactory,
    Msg,
    Role,
    SeededIds,
    StepClock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    short_id,
    timestamp_now,
)
from .plan import PlanNotebook
from .toolkit import Toolkit

__all__ = [
    "Agent",
    "Handler",
    "Rule",
    "ScriptedAgent",
    "SimulatedCrash",
    "calculator",
    "crash",
    "default_rules",
    "get_weather",
    "result_text",
    "safe_eval",
]


class Agent(StateModule, ABC):
    """Base of stateful agents: memory, toolkit and optional plan notebook, saved like AgentScope's ReActAgent."""

    def __init__(
        self,
        name: str,
        sys_prompt: str = "",
        *,
        memory: InMemoryMemory | None = None,
        toolkit: Toolkit | None = None,
        plan_notebook: PlanNotebook | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self._sys_prompt = sys_prompt
        # Assignment order is the state's key order: memory, toolkit, plan_notebook.
        self.memory = memory if memory is not None else InMemoryMemory()
        self.toolkit = toolkit if toolkit is not None else Toolkit()
        self.plan_notebook = plan_notebook
        self.register_state("name", expect=str)
        self.register_state("_sys_prompt", expect=str)

    @property
    def sys_prompt(self) -> str:
        """The system prompt."""
        return self._sys_prompt

    async def __call__(self, msg: Msg | list[Msg] | None = None) -> Msg:
        """Reply to ``msg`` (see :meth:`reply`)."""
        return await self.reply(msg)

    @abstractmethod
    async def reply(self, msg: Msg | list[Msg] | None = None) -> Msg:
        """Record ``msg`` in memory, act, and return the reply message."""

    async def observe(self, msg: Msg | list[Msg] | None) -> None:
        """Record message(s) in memory without replying."""
        await self.memory.add(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, memory={self.memory!r})"


class SimulatedCrash(BaseException):
    """Raised by the ``crash`` tool: the process "dies" mid tool call, leaving a tool_use without result.

    A BaseException, like KeyboardInterrupt, so the toolkit does not turn it into an error result.
    """


# -- the offline tools ------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPR = 200
_MAX_EXPONENT = 1000


def safe_eval(expression: str) -> int | float:
    """Evaluate plain arithmetic (numbers, + - * / // % **, parentheses) by walking the AST; no eval."""
    if len(expression) > _MAX_EXPR:
        raise ValueError(f"expression longer than {_MAX_EXPR} characters")
    tree = ast.parse(expression.strip(), mode="eval")

    def walk(node: ast.AST) -> int | float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            result: int | float = _UNARY[type(node.op)](walk(node.operand))
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
                raise ValueError(f"exponent {right} is too large (limit {_MAX_EXPONENT})")
            result = _BINARY[type(node.op)](left, right)
            return result
        raise ValueError(f"unsupported syntax: {ast.dump(node)[:60]}; only arithmetic is allowed")

    return walk(tree)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and safely.

    Args:
        expression (str): Numbers with + - * / // % ** and parentheses, e.g. "(2 + 3) * 4".
    """
    value = safe_eval(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


_CONDITIONS = ("sunny", "partly cloudy", "cloudy", "light rain", "showers", "windy", "foggy", "snow")


def get_weather(city: str) -> str:
    """Get today's weather for a city (simulated offline: the same city always gets the same weather).

    Args:
        city (str): The city name, e.g. "Paris".
    """
    name = " ".join(city.split())
    if not name:
        raise ValueError("city must not be empty")
    seed = zlib.crc32(name.casefold().encode("utf-8"))
    condition = _CONDITIONS[seed % len(_CONDITIONS)]
    temp = -5 + (seed >> 8) % 36
    if condition == "snow":
        temp = min(temp, 1)
    return f"{name}: {condition}, {temp}°C, humidity {30 + (seed >> 16) % 60}%"


def crash(reason: str = "simulated crash") -> str:
    """Simulate the process dying in the middle of a tool call: never returns a result.

    Args:
        reason (str): Why the crash happens, for the traceback.
    """
    raise SimulatedCrash(reason)


# -- the scripted agent ----------------------------------------------------------------

Handler = Callable[["ScriptedAgent", "re.Match[str]", "Msg | None"], Awaitable[Msg]]
"""A rule's action: ``await handler(agent, match, last_user_msg)`` returns the reply."""
Rule = tuple["str | re.Pattern[str]", Handler]
"""``(pattern, handler)``; the first pattern that ``search``-es the user's text wins."""

_DEFAULT_PROMPT = "You are {name}, a helpful assistant. You can calculate, check the weather and keep plans."


class ScriptedAgent(Agent):
    """A deterministic offline agent that answers by rules and uses real local tools.

    With ``seed`` (or explicit ``clock``/``id_factory``) every id and timestamp it
    creates is reproducible, so two runs produce identical states.
    """

    def __init__(
        self,
        name: str = "Friday",
        sys_prompt: str | None = None,
        *,
        rules: Sequence[Rule] | None = None,
        seed: int | str | None = None,
        clock: Clock | None = None,
        id_factory: IdFactory | None = None,
        memory: InMemoryMemory | None = None,
        toolkit: Toolkit | None = None,
        plan_notebook: PlanNotebook | None = None,
        with_plan_notebook: bool = True,
    ) -> None:
        new_id: IdFactory = id_factory or (SeededIds(seed) if seed is not None else short_id)
        new_time: Clock = clock or (StepClock() if seed is not None else timestamp_now)
        if plan_notebook is None and with_plan_notebook:
            plan_notebook = PlanNotebook(clock=new_time, id_factory=new_id)
        super().__init__(
            name,
            _DEFAULT_PROMPT.format(name=name) if sys_prompt is None else sys_prompt,
            memory=memory,
            toolkit=toolkit,
            plan_notebook=plan_notebook,
        )
        self._new_id = new_id
        self._clock = new_time
        self.rules: list[tuple[re.Pattern[str], Handler]] = [
            (re.compile(p, re.IGNORECASE) if isinstance(p, str) else p, h)
            for p, h in (default_rules() if rules is None else rules)
        ]
        tools: list[Callable[..., Any]] = [calculator, get_weather, crash]
        if plan_notebook is not None:
            tools += plan_notebook.list_tools()
        for tool in tools:
            if tool.__name__ not in self.toolkit.tools:
                self.toolkit.register_tool_function(tool)

    # -- building blocks for rules -------------------------------------------------------

    def new_msg(
        self, name: str, content: str | list[ContentBlock], role: Role, metadata: dict[str, Any] | None = None
    ) -> Msg:
        """Create a message with this agent's id factory and clock."""
        return Msg(name, content, role, metadata, timestamp=self._clock(), id=self._fresh_id())

    def _fresh_id(self) -> str:
        # A seeded agent restored from a checkpoint replays its id sequence from the
        # start: skip ids its memory already holds, so ids stay unique and deterministic.
        taken = {m.id for m, _ in self.memory.content}
        new = self._new_id()
        while new in taken:
            new = self._new_id()
        return new

    async def act(self, tool_name: str, tool_input: dict[str, Any], thinking: str | None = None) -> ToolResultBlock:
        """Record ``[thinking, tool_use]``, run the tool, record its ``[tool_result]``; return the result."""
        call = ToolUseBlock(type="tool_use", id=self._fresh_id(), name=tool_name, input=dict(tool_input))
        content: list[ContentBlock] = [ThinkingBlock(type="thinking", thinking=thinking)] if thinking else []
        content.append(call)
        await self.memory.add(self.new_msg(self.name, content, "assistant"))
        result = await self.toolkit.call_tool_function(call)
        # AgentScope's ReActAgent records tool results as Msg("system", [tool_result], "system").
        await self.memory.add(self.new_msg("system", [result], "system"))
        return result

    async def respond(self, text: str, thinking: str | None = None, metadata: dict[str, Any] | None = None) -> Msg:
        """Record and return the final assistant message ``[thinking?, text]``."""
        content: list[ContentBlock] = [ThinkingBlock(type="thinking", thinking=thinking)] if thinking else []
        content.append(TextBlock(type="text", text=text))
        msg = self.new_msg(self.name, content, "assistant", metadata)
        await self.memory.add(msg)
        return msg

    # -- reply -------------------------------------------------------------------------

    async def reply(self, msg: Msg | list[Msg] | None = None) -> Msg:
        """Record ``msg``, then run the first rule whose pattern matches its text."""
        await self.memory.add(msg)
        last = msg[-1] if isinstance(msg, list) and msg else msg if isinstance(msg, Msg) else None
        text = (last.get_text_content() if last is not None else None) or ""
        for pattern, handler in self.rules:
            match = pattern.search(text)
            if match is not None:
                return await handler(self, match, last)
        fallback = re.match(r"[\s\S]*", text)
        assert fallback is not None
        return await _fallback(self, fallback, last)


def result_text(result: ToolResultBlock) -> str:
    """Return the text of a tool result's output."""
    output = result["output"]
    if isinstance(output, str):
        return output
    blocks = cast("list[dict[str, Any]]", output)
    return "\n".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))


# -- default rules ------------------------------------------------------------------------


async def _crash(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    await agent.act("crash", {"reason": match.string}, thinking="The user asked me to run the crash tool.")
    raise AssertionError("unreachable: the crash tool never returns")


async def _plan(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    if agent.plan_notebook is None:
        return await agent.respond("I have no plan notebook, so I cannot keep a plan.")
    goal = match["goal"].strip().rstrip(".!")
    steps = [s.strip() for s in re.split(r",|;|\band then\b|\bthen\b", goal) if s.strip()]
    if len(steps) < 2:
        steps = [f"Gather what is needed to {goal}", f"{goal[:1].upper()}{goal[1:]}", f"Check the result of: {goal}"]
    subtasks = [
        {
            "name": _short(step[:1].upper() + step[1:]),
            "description": f"{step[:1].upper()}{step[1:]}.",
            "expected_outcome": f"{step[:1].upper()}{step[1:]} is done.",
        }
        for step in steps
    ]
    name = _short(goal[:1].upper() + goal[1:])
    await agent.act(
        "create_plan",
        {"name": name, "description": f"Plan to {goal}.", "expected_outcome": f"{name} is done.", "subtasks": subtasks},
        thinking=f"This needs several steps; I'll make a plan with {len(subtasks)} subtasks.",
    )
    await agent.act(
        "update_subtask_state",
        {"subtask_idx": 0, "state": "in_progress"},
        thinking="Start with the first subtask.",
    )
    plan = agent.plan_notebook.current_plan
    assert plan is not None
    return await agent.respond(f"Here is the plan:\n\n{plan.to_markdown()}", thinking="Show the user the plan.")


async def _next(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    notebook = agent.plan_notebook
    plan = notebook.current_plan if notebook is not None else None
    if plan is None:
        return await agent.respond("There is no active plan. Say 'plan <goal>' to make one.")
    idx = next((i for i, s in enumerate(plan.subtasks) if s.state == "in_progress"), None)
    if idx is None:
        idx = next((i for i, s in enumerate(plan.subtasks) if s.state == "todo"), None)
    if idx is not None:
        current = plan.subtasks[idx]
        outcome = (match["outcome"] or "").strip() or f"{current.name}: completed."
        await agent.act(
            "finish_subtask",
            {"subtask_idx": idx, "subtask_outcome": outcome},
            thinking=f"Subtask {idx} ('{current.name}') is finished.",
        )
    upcoming = next((s for s in plan.subtasks if s.state in ("todo", "in_progress")), None)
    if upcoming is not None:
        done = plan.subtasks[idx].name if idx is not None else ""
        return await agent.respond(
            f"Done with '{done}'. Next up: '{upcoming.name}'.", thinking="Tell the user what comes next."
        )
    await agent.act(
        "finish_plan",
        {"state": "done", "outcome": f"All {len(plan.subtasks)} subtasks of '{plan.name}' are done."},
        thinking="Every subtask is done, so the plan is finished.",
    )
    return await agent.respond(f"The plan '{plan.name}' is complete.", thinking="Report completion.")


async def _cancel(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    notebook = agent.plan_notebook
    if notebook is None or notebook.current_plan is None:
        return await agent.respond("There is no active plan to cancel.")
    name = notebook.current_plan.name
    reason = (match["reason"] or "").strip() or "Cancelled by the user."
    await agent.act("finish_plan", {"state": "abandoned", "outcome": reason}, thinking="The user cancels the plan.")
    return await agent.respond(f"I abandoned the plan '{name}'.")


async def _calculate(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    expr = " ".join(match["expr"].replace("^", "**").split())
    result = await agent.act(
        "calculator", {"expression": expr}, thinking=f"I should compute {expr} with the calculator tool."
    )
    answer = result_text(result)
    if answer.startswith("Error"):
        return await agent.respond(f"I couldn't calculate {expr}. {answer}", thinking="The tool failed; say so.")
    return await agent.respond(f"{expr} = {answer}", thinking="The calculator answered; report the result.")


async def _weather(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    city = " ".join(match["city"].split())
    result = await agent.act("get_weather", {"city": city}, thinking=f"Look up the weather in {city}.")
    text = result_text(result)
    if text.startswith("Error"):
        return await agent.respond(f"I couldn't get the weather: {text}", thinking="The tool failed; say so.")
    return await agent.respond(f"The weather in {text}", thinking="Relay the forecast.")


def _short(text: str, limit: int = 60) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, with an ellipsis if cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


async def _greet(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    who = msg.name if msg is not None and msg.name not in ("user", "") else ""
    hello = f"Hello {who}!" if who else "Hello!"
    return await agent.respond(
        f"{hello} I'm {agent.name}. I can calculate, check the weather and keep a plan for you.",
        thinking="The user greets me; greet back and say what I can do.",
    )


async def _fallback(agent: ScriptedAgent, match: re.Match[str], msg: Msg | None) -> Msg:
    return await agent.respond(
        f"I heard: \"{match.string}\". Try 'hello', 'what is 6*7', 'weather in Paris', "
        "'plan <goal>', 'next' or 'cancel plan'.",
        thinking="No rule matched; explain what I can do.",
    )


def default_rules() -> list[Rule]:
    """Return the built-in rules, most specific first; the last one matches anything."""
    return [
        (r"\bcrash\b", _crash),
        (r"^\s*(?:please\s+)?(?:make a |create a )?plan\b(?:\s+(?:to|for))?\s*:?\s*(?P<goal>\S.*)$", _plan),
        (r"^\s*(?:next|done|finished)\b[\s:,.!-]*(?P<outcome>.*)$", _next),
        (r"^\s*(?:cancel|abandon)\b(?:\s+(?:the\s+)?plan)?[\s:,.!-]*(?P<reason>.*)$", _cancel),
        (r"(?:calculate|compute|what(?:'s|\s+is))\s+(?P<expr>[\d\s.+\-*/%()^]*\d[\d\s.+\-*/%()^]*?)\s*[?.!]*$", _calculate),
        (r"weather\s+(?:in|for|at)\s+(?P<city>[^?.!,;]+)", _weather),
        (r"^\s*(?:hi|hello|hey|good\s+(?:morning|afternoon|evening)|bonjour|hola|hallo|你好|こんにちは)", _greet),
        (r"[\s\S]*", _fallback),
    ]
