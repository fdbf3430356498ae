"""Helpers shared by the agent tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from nb_sessions.errors import StateError
from nb_sessions.state import StateModule

_NAME = "agentscope_1.0.21_u42_bob.json"
_CANDIDATES = [Path(__file__).resolve().parent.parent / "data" / _NAME, Path("/work/shared/samples") / _NAME]


def load_sample() -> dict[str, Any]:
    """The real AgentScope 1.0.21 session file, parsed."""
    for path in _CANDIDATES:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
    pytest.fail(f"the AgentScope sample file is missing; it belongs at {_CANDIDATES[0]} (git checkout tests/data)")


def dumps(value: Any) -> str:
    """JSON text as AgentScope writes it: key order matters."""
    return json.dumps(value, ensure_ascii=False)


def assert_load_fails(
    obj: StateModule, state: Any, path: str, *fragments: str, strict: bool = True
) -> StateError:
    """Loading ``state`` must raise a StateError naming ``path``, and leave ``obj`` unchanged."""
    before = copy.deepcopy(obj.state_dict())
    with pytest.raises(StateError) as info:
        obj.load_state_dict(state, strict=strict)
    err = info.value
    paths = [p for p, _ in err.problems]
    assert path in paths, f"{path!r} not among {paths}"
    message = dict(err.problems)[path]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert path in str(err)
    assert dumps(obj.state_dict()) == dumps(before), "a failed load changed the object"
    return err
