"""Deterministic states: a nonce always builds the same modules, so a checker can recompute them.

A state is an AgentScope-shaped memory (messages fixed by their index, so
consecutive checkpoints share a long prefix, as real conversations do) plus a
``Box`` whose value names the nonce. ``small`` states are about 1 KB,
``large`` ones about 1 MB.
"""

from __future__ import annotations

import hashlib
import json
import random
from functools import cache
from typing import Any

from nb_sessions import codec
from nb_sessions.agent import InMemoryMemory, Msg
from nb_sessions.state import StateModule

SIZES = ("small", "large")


class Box(StateModule):
    """One registered attribute holding any JSON value."""

    def __init__(self, value: Any = None) -> None:
        super().__init__()
        self.value = value
        self.register_state("value")


_WORDS = (
    "agent",
    "tool",
    "plan",
    "été",
    "中文",
    "naïve",
    "🎉",
    'x"y',
    "back\\slash",
    "line\nbreak",
)


@cache
def _message(size: str, i: int) -> dict[str, Any]:
    rng = random.Random(f"{size}-{i}")
    words = 6 if size == "small" else 260
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    role = ("user", "assistant", "system")[i % 3]
    content: Any = text
    if role == "assistant":
        content = [
            {"type": "thinking", "thinking": f"step {i}"},
            {
                "type": "tool_use",
                "id": f"call-{i}",
                "name": "calculator",
                "input": {"expression": f"{i}*2"},
            },
        ]
    elif role == "system":
        content = [
            {
                "type": "tool_result",
                "id": f"call-{i - 1}",
                "name": "calculator",
                "output": [{"type": "text", "text": text}],
            }
        ]
    return {
        "id": f"msg-{size}-{i:06d}",
        "name": role,
        "role": role,
        "content": content,
        "metadata": {"i": i},
        "timestamp": f"2025-01-01 09:{i // 60 % 60:02d}:{i % 60:02d}.000",
    }


def message_count(size: str, n: int) -> int:
    """How many messages the memory of state ``n`` holds."""
    return 3 + n % 5 if size == "small" else 900 + n


def make_modules(size: str, nonce: str, n: int) -> dict[str, Any]:
    """The live objects a writer saves for ``nonce`` (its ``n``-th save)."""
    memory = InMemoryMemory()
    memory.content = [
        (Msg.from_dict(_message(size, i)), ["hint"] if i % 7 == 0 else [])
        for i in range(message_count(size, n))
    ]
    extra = "" if size == "small" else "z" * 50_000
    return {
        "memory": memory,
        "note": Box({"nonce": nonce, "n": n, "big": 2**70 + n, "extra": extra}),
    }


def expected_states(size: str, nonce: str, n: int) -> dict[str, Any]:
    """The ``{module: state}`` a checkpoint of ``nonce`` must hold."""
    states = live_states(make_modules(size, nonce, n))
    return json.loads(json.dumps(states))  # type: ignore[no-any-return]


def digest(states: Any) -> str:
    """A short fingerprint of a state (its exact JSON bytes; key order is part of the state)."""
    return hashlib.sha256(codec.dumps(states)).hexdigest()[:16]


def live_states(modules: dict[str, Any]) -> dict[str, Any]:
    """What saving ``modules`` writes (before JSON)."""
    return {name: obj.state_dict() for name, obj in modules.items()}
