"""Planning saves of long lists: unchanged runs are recognised, every change is found."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nb_sessions.chunks import ChunkCache, ChunkPlan, split


def plan_twice(before: list[Any], after: list[Any]) -> tuple[ChunkPlan, ChunkPlan]:
    """Plan a save of ``before``, remember it as committed, then plan ``after``."""
    cache = ChunkCache()
    _, chunks = split({"box": {"value": before}})
    first, seen = cache.plan(chunks[0])
    payloads = [f"segment-{i}" for i in range(len(first.segments))]
    cache.remember([first], [payloads], seen)
    _, chunks = split({"box": {"value": after}})
    second, _ = cache.plan(chunks[0])
    return first, second


def rows(n: int, start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"i": i, "text": f"message {i}", **extra} for i in range(start, start + n)]


@pytest.mark.parametrize("extra", [{}, {"note": None}, {"scores": [None, 1.5, {"x": None}]}])
def test_unchanged_runs_are_reused_with_or_without_nulls(extra: dict[str, Any]) -> None:
    # A None anywhere used to make a run untrusted (orjson writes NaN as null too), so
    # every entry of every run holding one was encoded again on every save.
    before = rows(1100, **extra)
    after = [dict(r) for r in before] + rows(3, start=1100, **extra)
    first, second = plan_twice(before, after)
    assert len(first.new) == 1100
    assert [seg.cached for seg in second.segments[:2]] == ["segment-0", "segment-1"]
    assert second.segments[2].cached is None and len(second.new) == 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_none_that_becomes_nan_or_infinite_is_a_change(bad: float) -> None:
    before = rows(600, score=None)
    after = [dict(r) for r in before]
    after[17]["score"] = bad  # the same orjson bytes: null
    _, second = plan_twice(before, after)
    assert second.segments[0].cached is None
    [stored] = second.new.values()  # the changed entry, written by the exact path
    assert stored.startswith(b" ") and (b"NaN" in stored or b"Infinity" in stored)
    assert second.segments[1].cached == "segment-1"


def test_values_orjson_writes_but_the_walk_does_not_know_are_not_trusted() -> None:
    class Score(float):
        pass

    before = rows(40, score=None)
    after = [dict(r) for r in before]
    after[3]["score"] = Score("nan")
    _, second = plan_twice(before, after)
    assert second.segments[0].cached is None and len(second.new) == 1
