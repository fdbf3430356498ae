"""AgentScope 2.0.11's own classes for the 2.x tests; without them the tests fail saying how to get them."""

from __future__ import annotations

import pytest

try:
    from agentscope.app.storage import (
        AsyncSQLAlchemyStorage,
        RedisStorage,
        SessionConfig,
        StorageBase,
    )
    from agentscope.message import Msg, TextBlock
    from agentscope.state import AgentState
except ImportError as exc:  # pragma: no cover - depends on the machine
    pytest.fail(
        "the AgentScope 2.x storage tests need agentscope[service,storage-sql,storage-redis]==2.0.11 "
        f"(Python >= 3.11): pip install -e '.[dev]' ({exc})",
        pytrace=False,
    )

__all__ = [
    "AgentState",
    "AsyncSQLAlchemyStorage",
    "Msg",
    "RedisStorage",
    "SessionConfig",
    "StorageBase",
    "TextBlock",
]
