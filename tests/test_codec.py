"""The codec writes what stdlib json writes, reads it back identically, and never changes data silently."""

from __future__ import annotations

import enum
import json
import math
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nb_sessions import codec
from nb_sessions.errors import NotSerializableError, StoreCorruptedError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=25,
)


@given(json_values)
@settings(max_examples=300)
def test_round_trip_is_the_identity(value: Any) -> None:
    assert codec.loads(codec.dumps(value)) == value


@given(json_values)
@settings(max_examples=200)
def test_output_parses_like_agentscope_stdlib_output(value: Any) -> None:
    ours = codec.dumps(value).decode("utf-8", "surrogatepass")
    theirs = json.dumps(value, ensure_ascii=False)
    assert json.loads(ours) == json.loads(theirs)


def test_agentscope_bytes_with_lone_surrogates_decode() -> None:
    text = json.dumps({"s": "x\udc80y"}, ensure_ascii=False)
    raw = text.encode("utf-8", "surrogatepass")  # what AgentScope's file holds
    assert codec.loads(raw) == {"s": "x\udc80y"}


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 2**64, -(2**64) - 1, 10**30, "\ud800"],
    ids=["nan", "inf", "-inf", "2^64", "-2^64-1", "1e30", "surrogate"],
)
def test_values_orjson_changes_take_the_exact_path(value: Any) -> None:
    back = codec.loads(codec.dumps({"v": value}))["v"]
    assert repr(back) == repr(value) or (isinstance(value, float) and math.isnan(back))
    assert type(back) is type(value)


class Color(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(uuid.UUID(int=1), "UUID"), (Color.RED, "Color"), (Point(1), "Point"), (date(2026, 1, 1), "date"), ({1, 2}, "set")],
)
def test_values_stdlib_refuses_are_refused_with_their_path(value: Any, type_name: str) -> None:
    with pytest.raises(NotSerializableError, match=rf"a\.b\[1\]: {type_name}") as err:
        codec.dumps({"a": {"b": [0, value]}})
    assert err.value.path == "a.b[1]"


def test_tuples_are_written_as_lists_like_stdlib() -> None:
    assert codec.loads(codec.dumps({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


def test_deep_nesting_beyond_orjson_limit_round_trips() -> None:
    value: Any = "leaf"
    for _ in range(200):  # 400 levels: past orjson's 254, within what stdlib json writes
        value = {"k": [value]}
    assert codec.loads(codec.dumps(value)) == value


def test_nesting_deeper_than_stdlib_json_writes_is_refused_clearly() -> None:
    value: Any = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(NotSerializableError, match="nested deeper than JSON can be written"):
        codec.dumps({"agent": value}, "")


def test_circular_data_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = [loop]
    with pytest.raises(NotSerializableError, match="self"):
        codec.dumps(loop)


def test_shared_but_not_circular_data_is_fine() -> None:
    shared = [1, 2]
    assert codec.loads(codec.dumps({"a": shared, "b": shared, "c": (9,)})) == {"a": [1, 2], "b": [1, 2], "c": [9]}


@pytest.mark.parametrize("garbage", [b"{", b"\xff\xfe", b"", b'{"a": tru}', b"[" * 5000])
def test_garbage_raises_store_corrupted_naming_the_source(garbage: bytes) -> None:
    with pytest.raises(StoreCorruptedError, match="checkpoint x@1"):
        codec.loads(garbage, "checkpoint x@1")


def test_paused_gc_nests_and_restores_the_collector() -> None:
    import gc

    assert gc.isenabled()
    with codec.paused_gc():
        assert not gc.isenabled()
        with codec.paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with codec.paused_gc():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_long_digit_runs_inside_strings_are_still_decoded_exactly() -> None:
    data = codec.dumps({"phone": "12345678901234567890123", "n": 2**65, "small": 123})
    assert codec.loads(data) == {"phone": "12345678901234567890123", "n": 2**65, "small": 123}
    assert codec.loads(b'{"a": 18446744073709551615, "b": -9223372036854775808}') == {
        "a": 2**64 - 1, "b": -(2**63),
    }


def test_json_array_joins_encoded_entries_into_one_array() -> None:
    from nb_sessions.chunks import json_array

    for parts in ([], [b"1"], [b"1", b'"x"'], [b"{}", b"[]", b"null", b" NaN"]):
        assert json_array(parts) == b"[" + b",".join(parts) + b"]"
    assert codec.loads(json_array([codec.dumps({"a": i}) for i in range(3)])) == [{"a": 0}, {"a": 1}, {"a": 2}]
