"""The benchmark workload: a long AgentScope-shaped conversation plus a plan notebook.

Deterministic and offline. Message ``i`` is always the same (its id, timestamp
and text derive from ``i`` alone), whatever order messages are built in, so a
run at N = 100,000 and a smoke run share their first messages exactly.

Every ten messages form one turn in the shape AgentScope's ReActAgent leaves
behind: user text, assistant ``[thinking, text, tool_use]``, a system
``[tool_result]``, assistant ``[thinking, tool_use]``, another result, an
assistant answer; then a Chinese user message, an assistant reply in Chinese
with a tool call, its result and a closing answer. Each message encodes to
about 1 KB of JSON.

Messages are built directly as :class:`~nb_sessions.agent.Msg` objects and
appended to ``memory.content`` (a list of ``(Msg, marks)`` pairs) instead of
running an agent 100,000 times. :class:`ForeignMemory` in ``foreign.py`` is
built from the very same message dicts.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any

from nb_sessions.agent import InMemoryMemory, Msg, Plan, PlanNotebook, ScriptedAgent, SubTask

__all__ = [
    "AGENT_NAME",
    "MESSAGES_PER_CHECKPOINT",
    "Workload",
    "make_agent",
    "make_notebook",
    "message_dict",
]

AGENT_NAME = "Friday"
MESSAGES_PER_CHECKPOINT = 10
SYS_PROMPT = (
    "You are a helpful assistant named Friday. Think step by step, call tools when they help, "
    "and answer in the user's language. 请用用户的语言回答。"
)

_MASK = (1 << 64) - 1
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_START = datetime(2025, 3, 1, 9, 0, 0)


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class _Rng:
    """A tiny deterministic generator seeded by the message index (much cheaper than random.Random)."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = _mix(seed * 0x2545F4914F6CDD1D + 12345)

    def next(self) -> int:
        self.state = _mix(self.state)
        return self.state

    def pick(self, pool: list[str]) -> str:
        return pool[self.next() % len(pool)]

    def below(self, n: int) -> int:
        return self.next() % n


def _short_id(seed: int) -> str:
    """A 22-character id in shortuuid's alphabet, like AgentScope's, derived from ``seed``."""
    x = (_mix(seed) << 64) | _mix(seed ^ 0x5DEECE66D)
    out = []
    for _ in range(22):
        x, r = divmod(x, 57)
        out.append(_ALPHABET[r])
    return "".join(out)


def _timestamp(i: int) -> str:
    when = _START + timedelta(milliseconds=1500 * i + (i * 37) % 1000)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


# -- text pools ---------------------------------------------------------------

_WORDS = [
    "the", "report", "revenue", "quarter", "growth", "region", "customer", "pipeline", "forecast",
    "data", "table", "query", "result", "summary", "draft", "review", "budget", "team", "metric",
    "latency", "error", "retry", "cache", "index", "shard", "service", "deploy", "release",
    "branch", "commit", "test", "coverage", "model", "prompt", "token", "context", "memory",
    "plan", "subtask", "outcome", "weather", "city", "temperature", "forecast", "schedule",
    "meeting", "invoice", "order", "shipment", "warehouse", "supplier", "contract", "clause",
    "risk", "audit", "compliance", "policy", "user", "account", "session", "checkpoint", "export",
    "import", "migrate", "record", "field", "schema", "column", "value", "average", "median",
    "increase", "decrease", "compare", "previous", "current", "next", "expected", "actual",
    "estimate", "confirm", "check",
]
_CN = [
    "请帮我总结一下第二季度的销售报告，重点关注亚太地区的增长情况。",
    "根据最新的数据，收入同比增长了百分之十二，主要来自新客户。",
    "我需要先查询数据库中的订单记录，然后再计算平均值。",
    "明天北京的天气预计是晴转多云，气温在十五到二十三度之间。",
    "这个计划包括三个步骤：导出数据、清洗字段、导入新系统。",
    "工具调用失败了，我会换一个参数再试一次。",
    "好的，我已经完成了迁移任务，所有记录都已核对无误。",
    "请注意合同第七条关于交付时间的约定，可能存在风险。",
    "我们可以把缓存的过期时间调短一些，以减少错误的结果。",
    "下面是本次会议的要点和后续需要跟进的事项。",
]
_TOOLS = ["execute_python_code", "query_database", "get_weather", "search_web", "read_file", "calculator"]


def _sentence_pool() -> list[str]:
    rng = _Rng(987654321)
    pool = []
    for _ in range(1024):
        n = 8 + rng.below(14)
        words = [_WORDS[rng.below(len(_WORDS))] for _ in range(n)]
        words[0] = words[0].capitalize()
        if rng.below(5) == 0:
            words.insert(rng.below(n), f"{rng.below(100000)}")
        pool.append(" ".join(words) + rng.pick([".", ".", ".", "?", "!", ";"]))
    return pool


_EN = _sentence_pool()


def _en(rng: _Rng, sentences: int) -> str:
    return " ".join(rng.pick(_EN) for _ in range(sentences))


def _cn(rng: _Rng, sentences: int) -> str:
    return "".join(rng.pick(_CN) for _ in range(sentences))


def _tool_use(rng: _Rng, i: int) -> dict[str, Any]:
    name = rng.pick(_TOOLS)
    if name == "execute_python_code":
        args: dict[str, Any] = {"code": f"import statistics\nvalues = [{', '.join(str(rng.below(1000)) for _ in range(12))}]\nprint(statistics.median(values))"}
    elif name == "query_database":
        args = {"sql": f"SELECT region, sum(revenue) FROM orders WHERE quarter = 'Q{1 + i % 4}' GROUP BY region", "limit": 100}
    elif name == "get_weather":
        args = {"city": rng.pick(["Beijing", "Hangzhou", "Paris", "São Paulo", "Zürich", "東京"]), "days": 3}
    else:
        args = {"query": _en(rng, 1), "top_k": 5}
    return {"type": "tool_use", "id": f"call_{_short_id(i * 7 + 3)}", "name": name, "input": args}


def _tool_result(rng: _Rng, call: dict[str, Any], as_blocks: bool) -> dict[str, Any]:
    text = _en(rng, 5) + " " + _cn(rng, 1)
    output: Any = [{"type": "text", "text": text}] if as_blocks else text
    return {"type": "tool_result", "id": call["id"], "name": call["name"], "output": output}


def message_dict(i: int) -> dict[str, Any]:
    """Message ``i`` of the conversation in AgentScope's wire form (a fresh dict each call)."""
    rng = _Rng(i)
    slot = i % 10
    name, role = AGENT_NAME, "assistant"
    content: str | list[dict[str, Any]]
    if slot == 0:
        name, role = "user", "user"
        content = _en(rng, 9)
    elif slot in (1, 7):
        call = _tool_use(rng, i)
        if slot == 1:
            content = [
                {"type": "thinking", "thinking": _en(rng, 4)},
                {"type": "text", "text": _en(rng, 3)},
                call,
            ]
        else:
            content = [
                {"type": "thinking", "thinking": _cn(rng, 4)},
                {"type": "text", "text": _cn(rng, 2)},
                call,
            ]
    elif slot == 3:
        call = _tool_use(rng, i)  # first, so the result message can rebuild it
        content = [{"type": "thinking", "thinking": _en(rng, 7)}, call]
    elif slot in (2, 4, 8):
        # AgentScope's ReActAgent records tool results as Msg("system", [tool_result], "system").
        name, role = "system", "system"
        call = _tool_use(_Rng(i - 1), i - 1)  # answers the call made just before
        content = [_tool_result(rng, call, as_blocks=slot != 4)]
    elif slot == 6:
        name, role = "user", "user"
        content = _cn(rng, 8) + " " + _en(rng, 1)
    else:  # 5, 9: the answer
        content = [{"type": "text", "text": _en(rng, 8) if slot == 5 else _cn(rng, 4) + _en(rng, 4)}]
    metadata: dict[str, Any] = {}
    if slot in (5, 9):
        metadata = {"usage": {"prompt_tokens": 900 + rng.below(4000), "completion_tokens": 40 + rng.below(400)}}
    return {
        "id": _short_id(i),
        "name": name,
        "role": role,
        "content": content,
        "metadata": metadata,
        "timestamp": _timestamp(i),
    }


def _msg(data: dict[str, Any]) -> Msg:
    return Msg(
        data["name"], data["content"], data["role"], data["metadata"],
        timestamp=data["timestamp"], id=data["id"],
    )


# -- plan notebook -------------------------------------------------------------


def _subtasks(k: int, n: int, done: int) -> list[SubTask]:
    rng = _Rng(10_000_000 + k)
    out = []
    for j in range(n):
        out.append(SubTask(
            name=f"Step {j + 1}: {' '.join(rng.pick(_WORDS) for _ in range(3))}",
            description=_en(rng, 2) + (" " + _cn(rng, 1) if j % 3 == 0 else ""),
            expected_outcome=_en(rng, 1),
            outcome=_en(rng, 1) if j < done else None,
            state="done" if j < done else ("in_progress" if j == done else "todo"),
            created_at=_timestamp(k * 10),
            finished_at=_timestamp(k * 10 + j + 1) if j < done else None,
        ))
    return out


def make_notebook() -> PlanNotebook:
    """A notebook with a current plan of eight subtasks and three finished plans in storage."""
    nb = PlanNotebook()
    for k in range(3):
        plan = Plan(
            id=_short_id(20_000_000 + k), name=f"Plan {k + 1}: quarterly review {k + 1}",
            description=_en(_Rng(k), 3), expected_outcome=_en(_Rng(k + 7), 1),
            subtasks=_subtasks(k, 5, 5), created_at=_timestamp(k),
            state="done" if k != 1 else "abandoned", finished_at=_timestamp(k + 50),
            outcome=_en(_Rng(k + 3), 1),
        )
        nb.storage.plans[plan.id] = plan
    nb.current_plan = Plan(
        id=_short_id(20_000_099), name="迁移 CRM 数据 and publish the Q2 report",
        description=_en(_Rng(99), 3) + " " + _cn(_Rng(99), 1), expected_outcome=_en(_Rng(98), 1),
        subtasks=_subtasks(99, 8, 2), created_at=_timestamp(99), state="in_progress",
    )
    return nb


def make_agent(memory: InMemoryMemory | None = None, notebook: PlanNotebook | None = None) -> ScriptedAgent:
    """A ReActAgent-shaped agent (memory, toolkit, plan notebook, name, system prompt), empty unless given parts."""
    return ScriptedAgent(
        AGENT_NAME, SYS_PROMPT, seed=0,
        memory=memory if memory is not None else InMemoryMemory(),
        plan_notebook=notebook if notebook is not None else PlanNotebook(),
    )


class Workload:
    """The growing session: an agent whose memory holds ``n`` messages, and the same messages as dicts.

    ``dicts`` keeps each message's wire dict so the AgentScope stand-in
    (``foreign.ForeignMemory``) can be built from identical data.
    """

    def __init__(self, n: int, *, keep_dicts: bool = True) -> None:
        self.memory = InMemoryMemory()
        self.notebook = make_notebook()
        self.agent = make_agent(self.memory, self.notebook)
        self.dicts: list[dict[str, Any]] | None = [] if keep_dicts else None
        self.step = 0
        self.grow(n)

    @property
    def n(self) -> int:
        return len(self.memory.content)

    def grow(self, count: int = MESSAGES_PER_CHECKPOINT) -> list[dict[str, Any]]:
        """Append the next ``count`` messages; return their wire dicts."""
        start = len(self.memory.content)
        new = [message_dict(i) for i in range(start, start + count)]
        content = self.memory.content
        for data in new:
            content.append((_msg(data), []))
        if self.dicts is not None:
            self.dicts.extend(new)
        return new

    def advance(self) -> list[dict[str, Any]]:
        """One checkpoint's worth of activity: ten new messages, and every tenth time a subtask finished."""
        self.step += 1
        new = self.grow(MESSAGES_PER_CHECKPOINT)
        plan = self.notebook.current_plan
        if plan is not None and self.step % 10 == 0:
            todo = [s for s in plan.subtasks if s.state != "done"]
            if todo:
                todo[0].finish(_en(_Rng(self.step), 1), _timestamp(self.n))
                if len(todo) > 1:
                    todo[1].state = "in_progress"
        return new


def clone_dicts(dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Independent copies (for building a second memory that must not share containers)."""
    return copy.deepcopy(dicts)
