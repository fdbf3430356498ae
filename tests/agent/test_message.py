"""Msg, content blocks and their validation."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from nb_sessions.agent import (
    Msg,
    SeededIds,
    StepClock,
    format_timestamp,
    short_id,
    validate_block,
)
from nb_sessions.errors import NbSessionsError, StateError

from ._helpers import dumps, load_sample

ID_RE = re.compile(r"^[23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]{22}$")
TS_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


def test_defaults_match_agentscope_formats() -> None:
    msg = Msg("Bob", "hi", "user")
    assert ID_RE.match(msg.id)
    assert TS_RE.match(msg.timestamp)
    assert msg.metadata == {}
    assert msg.invocation_id is None
    assert Msg("Bob", "hi", "user").id != msg.id
    assert ID_RE.match(short_id())


def test_to_dict_has_agentscope_keys_in_order() -> None:
    msg = Msg("Bob", "hi", "user", id="abc", timestamp="2026-01-02 03:04:05.006")
    assert list(msg.to_dict()) == ["id", "name", "role", "content", "metadata", "timestamp"]
    assert msg.to_dict()["timestamp"] == "2026-01-02 03:04:05.006"


def test_invocation_id_round_trip() -> None:
    msg = Msg("Friday", "ok", "assistant", invocation_id="inv-7")
    data = msg.to_dict()
    assert list(data)[-1] == "invocation_id"
    assert data["invocation_id"] == "inv-7"
    back = Msg.from_dict(data)
    assert back.invocation_id == "inv-7"
    assert back == msg
    assert dumps(back.to_dict()) == dumps(data)


def test_sample_messages_round_trip_exactly() -> None:
    for item in load_sample()["agent"]["memory"]["content"]:
        data = item[0]
        assert dumps(Msg.from_dict(data).to_dict()) == dumps(data)


def test_unknown_keys_are_kept_after_the_known_ones() -> None:
    data: dict[str, Any] = {
        "id": "x", "name": "a", "role": "assistant", "content": "c", "metadata": {},
        "timestamp": "2026-01-01 00:00:00.000", "generate_reason": None,
    }
    msg = Msg.from_dict(data)
    assert msg.to_dict() == data
    assert list(msg.to_dict())[-1] == "generate_reason"


def test_missing_optional_fields_follow_agentscope() -> None:
    msg = Msg.from_dict({"name": "a", "role": "user", "content": "c", "metadata": None})
    assert ID_RE.match(msg.id)
    assert TS_RE.match(msg.timestamp)
    assert msg.metadata == {}


def test_role_is_validated() -> None:
    with pytest.raises(ValueError, match="user, assistant, system"):
        Msg("a", "c", "bot")  # type: ignore[arg-type]
    msg = Msg("a", "c", "user")
    with pytest.raises(ValueError, match="'tool'"):
        msg.role = "tool"  # type: ignore[assignment]
    assert msg.role == "user"


def test_content_type_is_checked() -> None:
    with pytest.raises(TypeError, match="str or a list"):
        Msg("a", {"type": "text"}, "user")  # type: ignore[arg-type]


def test_from_dict_reports_every_problem_with_paths() -> None:
    bad = {"id": 3, "role": "robot", "content": [{"type": "text"}, {"type": "sound"}], "metadata": []}
    with pytest.raises(StateError) as info:
        Msg.from_dict(bad, "m")
    problems = dict(info.value.problems)
    assert "required key 'name' is absent" in problems["m.name"]
    assert "expected str, got int" in problems["m.id"]
    assert "user, assistant, system" in problems["m.role"]
    assert "'robot'" in problems["m.role"]
    assert "required key 'text' is absent" in problems["m.content[0].text"]
    assert '{"type": "text", "text": str}' in problems["m.content[0].text"]
    assert "unknown block type 'sound'" in problems["m.content[1].type"]
    assert "text, thinking, tool_use, tool_result, image, audio, video" in problems["m.content[1].type"]
    assert "expected a dict or null" in problems["m.metadata"]
    assert isinstance(info.value, NbSessionsError)


def test_from_dict_rejects_non_dicts() -> None:
    with pytest.raises(StateError, match="expected a message dict"):
        Msg.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("block", "path", "fragment"),
    [
        ("text", "b", "expected a content block"),
        ({"text": "no type"}, "b.type", "no 'type' key"),
        ({"type": "thinking", "thinking": 5}, "b.thinking", "expected str, got int"),
        ({"type": "tool_use", "id": "1", "name": "f"}, "b.input", "required key 'input' is absent"),
        ({"type": "tool_use", "id": "1", "name": "f", "input": []}, "b.input", "expected dict, got list"),
        ({"type": "tool_use", "id": "1", "name": "f", "input": {}, "raw_input": 1}, "b.raw_input", "expected str"),
        ({"type": "tool_result", "id": "1", "name": "f"}, "b.output", "required key 'output' is absent"),
        ({"type": "tool_result", "id": "1", "name": "f", "output": 3}, "b.output", "str or a list of blocks"),
        (
            {"type": "tool_result", "id": "1", "name": "f", "output": [{"type": "thinking", "thinking": "x"}]},
            "b.output[0].type",
            "expected one of: text, image, audio, video",
        ),
        ({"type": "image"}, "b.source", "required key 'source' is absent"),
        ({"type": "audio", "source": {"type": "ftp"}}, "b.source.type", "expected 'url' or 'base64'"),
        ({"type": "video", "source": {"type": "url"}}, "b.source.url", "required key 'url' is absent"),
        ({"type": "image", "source": {"type": "base64", "data": "x"}}, "b.source.media_type", "required key 'media_type' is absent"),
        ({"type": "image", "source": {"type": "base64", "media_type": 1, "data": "x"}}, "b.source.media_type", "expected str"),
    ],
)
def test_validate_block_names_path_and_shape(block: Any, path: str, fragment: str) -> None:
    problems: list[tuple[str, str]] = []
    validate_block(block, "b", problems)
    assert path in dict(problems), problems
    assert fragment in dict(problems)[path]


def test_validate_block_accepts_every_kind() -> None:
    url = {"type": "url", "url": "https://example.com/a.png"}
    b64 = {"type": "base64", "media_type": "audio/wav", "data": "AAAA"}
    blocks = [
        {"type": "text", "text": "t"},
        {"type": "thinking", "thinking": "th"},
        {"type": "tool_use", "id": "1", "name": "f", "input": {"a": 1}, "raw_input": '{"a": 1}'},
        {"type": "tool_result", "id": "1", "name": "f", "output": "plain"},
        {"type": "tool_result", "id": "1", "name": "f", "output": [{"type": "text", "text": "x"}, {"type": "image", "source": url}]},
        {"type": "image", "source": url},
        {"type": "audio", "source": b64},
        {"type": "video", "source": url},
        {"type": "text", "text": "extra keys are fine", "annotations": []},
    ]
    problems: list[tuple[str, str]] = []
    for i, block in enumerate(blocks):
        validate_block(block, f"[{i}]", problems)
    assert problems == []


def test_text_and_block_helpers() -> None:
    use = {"type": "tool_use", "id": "c1", "name": "calc", "input": {}}
    msg = Msg("a", [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "one"}, use, {"type": "text", "text": "two"}], "assistant")  # type: ignore[list-item]
    assert msg.get_text_content() == "one\ntwo"
    assert msg.get_text_content(" | ") == "one | two"
    assert msg.get_content_blocks("tool_use") == [use]
    assert len(msg.get_content_blocks(["text", "thinking"])) == 3
    assert len(msg.get_content_blocks()) == 4
    assert msg.has_content_blocks("tool_use")
    assert not msg.has_content_blocks("tool_result")
    plain = Msg("a", "hello", "user")
    assert plain.get_text_content() == "hello"
    assert plain.get_content_blocks() == [{"type": "text", "text": "hello"}]
    assert Msg("a", [use], "assistant").get_text_content() is None  # type: ignore[list-item]


def test_equality_is_by_dict() -> None:
    a = Msg("a", "c", "user", id="i", timestamp="t")
    b = Msg("a", "c", "user", id="i", timestamp="t")
    assert a == b
    b.content = "d"
    assert a != b
    assert a != "not a msg"


def test_rev_counts_assignments_and_in_place_edits() -> None:
    blocks = [{"type": "text", "text": "x"}]
    msg = Msg("a", blocks, "user", metadata={"tags": ["t"]})
    assert msg.rev == 0
    msg.name = "b"
    msg.content = [{"type": "text", "text": "y"}]
    assert msg.rev == 2
    assert isinstance(msg.content, list)
    edits = [
        lambda: msg.content.append({"type": "text", "text": "z"}),
        lambda: msg.content[0].__setitem__("text", "edited"),
        lambda: msg.content[-1].update(text="again"),
        lambda: msg.metadata["tags"].append("u"),
        lambda: msg.metadata.setdefault("new", {}),
        lambda: msg.metadata["new"].__setitem__("deep", [1]),
        lambda: msg.metadata["new"]["deep"].extend([2, 3]),
        lambda: msg.content.pop(),
        lambda: msg.metadata.pop("new"),
        lambda: msg.content.sort(key=str),
    ]
    for i, edit in enumerate(edits, start=3):
        edit()
        assert msg.rev == i
    blocks.append({"type": "text", "text": "outside"})  # the caller's list was copied
    assert len(msg.content) == 1 and msg.rev == 12


def test_tracked_content_serialises_and_copies_as_plain_json() -> None:
    import copy
    import json

    import orjson

    msg = Msg("a", [{"type": "tool_use", "id": "1", "name": "f", "input": {"x": [1, 2]}}], "assistant")
    d = msg.to_dict()
    assert json.loads(json.dumps(d)) == orjson.loads(orjson.dumps(d)) == d
    deep = copy.deepcopy(d["content"])
    assert type(deep) is list and type(deep[0]) is dict and type(deep[0]["input"]["x"]) is list
    deep[0]["input"]["x"].append(3)
    assert msg.content[0]["input"]["x"] == [1, 2] and msg.rev == 0


def test_copy_is_independent() -> None:
    msg = Msg("a", [{"type": "text", "text": "x"}], "user", metadata={"k": [1]})
    for dup in (msg.copy(), copy.deepcopy(msg), copy.copy(msg)):
        assert dup == msg
        assert dup is not msg
        assert dup.rev == 0
        assert isinstance(dup.content, list)
        dup.content[0]["text"] = "changed"  # type: ignore[typeddict-unknown-key]
        dup.metadata["k"].append(2)
        assert msg.get_text_content() == "x"
        assert msg.metadata == {"k": [1]}


def test_from_dict_does_not_alias_input() -> None:
    data = {"id": "i", "name": "a", "role": "user", "content": [{"type": "text", "text": "x"}], "metadata": {"deep": {"k": 1}}, "timestamp": "t"}
    msg = Msg.from_dict(data)
    msg.metadata["deep"]["k"] = 2
    assert isinstance(msg.content, list)
    msg.content[0]["text"] = "y"  # type: ignore[typeddict-unknown-key]
    assert data["metadata"] == {"deep": {"k": 1}}
    assert data["content"] == [{"type": "text", "text": "x"}]


def test_deeply_nested_metadata_is_copied() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"d": [deep]}
    msg = Msg.from_dict({"id": "i", "name": "a", "role": "user", "content": "c", "metadata": deep})
    assert msg.metadata is not deep
    node: Any = msg.metadata
    depth = 0
    while isinstance(node, dict):
        node = node["d"][0]
        depth += 1
    assert depth == 5000
    assert node == "leaf"


def test_deterministic_ids_and_clock() -> None:
    a, b = SeededIds(7), SeededIds(7)
    first = [a() for _ in range(3)]
    assert first == [b() for _ in range(3)]
    assert all(ID_RE.match(i) for i in first)
    assert len(set(first)) == 3
    clock = StepClock()
    assert clock() == "2025-01-01 09:00:00.000"
    assert clock() == "2025-01-01 09:00:01.000"
    from datetime import datetime

    assert format_timestamp(datetime(2026, 11, 21, 8, 17, 0, 723456)) == "2026-11-21 08:17:00.723"
