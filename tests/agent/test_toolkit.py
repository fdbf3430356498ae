"""Toolkit: registration, schemas, tool calls and the active-groups state."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest

from nb_sessions.agent import Toolkit, ToolUseBlock
from nb_sessions.errors import StateError, StateMismatchError

from ._helpers import assert_load_fails


def add(a: int, b: int = 2) -> int:
    """Add two integers.

    Longer explanation that stays in the description.

    Args:
        a (int): The first number.
        b (int): The second number,
            continued on a second line.

    Returns:
        int: The sum.
    """
    return a + b


async def slow_upper(text: str, mode: Literal["upper", "lower"] = "upper") -> str:
    """Change the case of text.

    Args:
        text: The text.
        mode: Which case.
    """
    await asyncio.sleep(0)
    return text.upper() if mode == "upper" else text.lower()


def broken() -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


def call(name: str, **args: Any) -> ToolUseBlock:
    return ToolUseBlock(type="tool_use", id=f"call-{name}", name=name, input=args)


def texts(result: Any) -> list[str]:
    return [b["text"] for b in result["output"]]


def test_schema_from_signature_and_docstring() -> None:
    kit = Toolkit()
    kit.register_tool_function(add)
    kit.register_tool_function(slow_upper)
    add_schema, upper_schema = kit.get_json_schemas()
    fn = add_schema["function"]
    assert add_schema["type"] == "function"
    assert fn["name"] == "add"
    assert fn["description"].startswith("Add two integers.")
    assert "Longer explanation" in fn["description"]
    assert "Returns" not in fn["description"]
    params = fn["parameters"]
    assert params["required"] == ["a"]
    assert params["properties"]["a"] == {"description": "The first number.", "type": "integer"}
    assert params["properties"]["b"]["description"] == "The second number, continued on a second line."
    assert params["properties"]["b"]["default"] == 2
    assert "title" not in params
    assert "title" not in params["properties"]["a"]
    mode = upper_schema["function"]["parameters"]["properties"]["mode"]
    assert mode["enum"] == ["upper", "lower"]
    assert mode["description"] == "Which case."


def test_preset_kwargs_and_explicit_schema() -> None:
    kit = Toolkit()
    kit.register_tool_function(add, preset_kwargs={"b": 40}, func_description="Add to forty.")
    schema = kit.get_json_schemas()[0]["function"]
    assert schema["description"] == "Add to forty."
    assert list(schema["parameters"]["properties"]) == ["a"]
    custom = {"type": "function", "function": {"name": "x", "parameters": {}}}
    kit.register_tool_function(broken, json_schema=custom)
    assert kit.get_json_schemas()[1] is custom
    with pytest.raises(ValueError, match="already registered"):
        kit.register_tool_function(add)


async def test_calls_sync_async_and_presets() -> None:
    kit = Toolkit()
    kit.register_tool_function(add, preset_kwargs={"b": 40})
    kit.register_tool_function(slow_upper)
    result = await kit.call_tool_function(call("add", a=2))
    assert result == {"type": "tool_result", "id": "call-add", "name": "add", "output": [{"type": "text", "text": "42"}]}
    assert texts(await kit.call_tool_function(call("slow_upper", text="Grüße"))) == ["GRÜSSE"]


async def test_errors_become_tool_results() -> None:
    kit = Toolkit()
    kit.register_tool_function(broken)
    kit.register_tool_function(add)
    assert texts(await kit.call_tool_function(call("broken"))) == ["Error: RuntimeError: disk on fire"]
    assert texts(await kit.call_tool_function(call("nope")))[0].startswith("FunctionNotFoundError")
    bad_args = texts(await kit.call_tool_function(call("add", c=1)))[0]
    assert bad_args.startswith("Error: TypeError")
    result = await kit.call_tool_function(ToolUseBlock(type="tool_use", id="z", name="add", input=[1]))  # type: ignore[typeddict-item]
    assert "JSON object" in texts(result)[0]
    assert result["id"] == "z"


async def test_return_values_become_blocks() -> None:
    kit = Toolkit()
    image = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    kit.register_tool_function(lambda: [{"type": "text", "text": "a"}, image], name="blocks")
    kit.register_tool_function(lambda: {"answer": 42, "ok": True}, name="data")
    kit.register_tool_function(lambda: None, name="nothing")
    assert (await kit.call_tool_function(call("blocks")))["output"] == [{"type": "text", "text": "a"}, image]
    assert texts(await kit.call_tool_function(call("data"))) == ['{"answer": 42, "ok": true}']
    assert (await kit.call_tool_function(call("nothing")))["output"] == []


async def test_groups_gate_schemas_and_calls() -> None:
    kit = Toolkit()
    kit.create_tool_group("math", "Arithmetic tools.")
    kit.register_tool_function(add, group_name="math")
    kit.register_tool_function(slow_upper)
    assert [s["function"]["name"] for s in kit.get_json_schemas()] == ["slow_upper"]
    assert texts(await kit.call_tool_function(call("add", a=1)))[0].startswith("FunctionInactiveError")
    kit.update_tool_groups(["math"], active=True)
    assert [s["function"]["name"] for s in kit.get_json_schemas()] == ["add", "slow_upper"]
    assert texts(await kit.call_tool_function(call("add", a=1))) == ["3"]
    assert kit.state_dict() == {"active_groups": ["math"]}
    with pytest.raises(ValueError, match="always active"):
        kit.update_tool_groups(["basic"], active=False)
    with pytest.raises(ValueError, match="already exists"):
        kit.create_tool_group("math", "again")
    with pytest.raises(ValueError, match="create_tool_group"):
        kit.register_tool_function(broken, group_name="nope")
    kit.remove_tool_groups("math")
    assert "add" not in kit.tools
    assert kit.state_dict() == {"active_groups": []}


def _kit() -> Toolkit:
    kit = Toolkit()
    kit.create_tool_group("web", "Web tools.", active=True)
    kit.create_tool_group("files", "File tools.")
    return kit


def test_state_round_trip() -> None:
    kit = _kit()
    other = _kit()
    other.load_state_dict({"active_groups": ["files"]})
    assert other.state_dict() == {"active_groups": ["files"]}
    other.load_state_dict(kit.state_dict())
    assert other.groups["web"].active
    assert not other.groups["files"].active


def test_strict_load_rejects_unknown_groups() -> None:
    kit = _kit()
    err = assert_load_fails(kit, {"active_groups": ["files", "browser"]}, "active_groups[1]", "unknown tool group 'browser'", "web, files", "strict=False")
    assert type(err) is StateError
    assert kit.state_dict() == {"active_groups": ["web"]}


def test_lenient_load_drops_unknown_groups() -> None:
    kit = _kit()
    kit.load_state_dict({"active_groups": ["files", "browser"]}, strict=False)
    assert kit.state_dict() == {"active_groups": ["files"]}


@pytest.mark.parametrize(
    ("state", "path", "fragment"),
    [
        ({"active_groups": "web"}, "active_groups", "expected a list of tool group names"),
        ({"active_groups": ["web", 3]}, "active_groups[1]", "expected a tool group name (str), got int"),
        ({}, "active_groups", "missing"),
        ({"active_groups": [], "tools": {}}, "tools", "unexpected"),
        ([], "", "expected a dict"),
    ],
)
def test_bad_toolkit_states(state: Any, path: str, fragment: str) -> None:
    assert_load_fails(_kit(), state, path, fragment)


def test_missing_key_is_a_mismatch_error() -> None:
    with pytest.raises(StateMismatchError) as info:
        _kit().load_state_dict({})
    assert info.value.missing == ["active_groups"]
    kit = _kit()
    kit.load_state_dict({}, strict=False)
    assert kit.state_dict() == {"active_groups": ["web"]}
    assert isinstance(info.value, StateError)
