"""StateModule keeps AgentScope's format and fixes its loading quirks."""

from __future__ import annotations

from typing import Any

import pytest

from nb_sessions.errors import NotSerializableError, StateError, StateMismatchError
from nb_sessions.state import Stateful, StateModule, as_stateful, iter_stateful, load_modules
from tests.conftest import Box


class Leaf(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.register_state("count", expect=int)


class Tree(StateModule):
    def __init__(self) -> None:
        super().__init__()
        self.name = "t"  # registered before the modules are assigned...
        self.register_state("name", expect=str)
        self.left = Leaf()
        self.right = Leaf()
        self.tags = {"a", "b"}
        self.register_state("tags", custom_to_json=sorted, custom_from_json=set)


def test_key_order_is_modules_then_attributes() -> None:
    assert list(Tree().state_dict()) == ["left", "right", "name", "tags"]  # ...but modules come first
    assert Tree().state_dict()["tags"] == ["a", "b"]


def test_round_trip_with_custom_hooks() -> None:
    t = Tree()
    t.left.count = 3
    t.tags = {"z"}
    other = Tree()
    other.load_state_dict(t.state_dict())
    assert other.state_dict() == t.state_dict() and other.tags == {"z"}


def test_strict_reaches_nested_modules_and_lists_all_problems() -> None:
    t = Tree()
    before = t.state_dict()
    with pytest.raises(StateMismatchError) as err:
        t.load_state_dict({"left": {"count": 1, "extra": 2}, "right": {}, "name": "x", "tags": [], "zzz": 0})
    assert set(err.value.missing) == {"right.count"}
    assert set(err.value.unexpected) == {"left.extra", "zzz"}
    assert "left.extra" in str(err.value) and "strict=False" in str(err.value)
    assert t.state_dict() == before


def test_a_failed_load_leaves_the_object_exactly_as_it_was() -> None:
    t = Tree()
    t.left.count = 7
    before = t.state_dict()
    with pytest.raises(StateError) as err:
        t.load_state_dict({"left": {"count": 1}, "right": {"count": "two"}, "name": "x", "tags": []})
    assert err.value.problems == [("right.count", "expected int, got str")]
    assert t.state_dict() == before and t.left.count == 7


def test_custom_from_json_failure_is_reported_with_its_path() -> None:
    t = Tree()
    with pytest.raises(StateError, match=r"tags: custom_from_json rejected it: TypeError"):
        t.load_state_dict({"left": {"count": 1}, "right": {"count": 1}, "name": "x", "tags": [[1]]})


def test_non_strict_loads_what_matches() -> None:
    t = Tree()
    t.load_state_dict({"left": {"count": 5}, "unknown": 1}, strict=False)
    assert (t.left.count, t.right.count, t.name) == (5, 0, "t")


def test_state_of_wrong_type_is_reported() -> None:
    with pytest.raises(StateError, match=r"left: expected a dict \(state of Leaf\), got list"):
        Tree().load_state_dict({"left": [], "right": {"count": 1}, "name": "x", "tags": []})


def test_replacing_a_module_with_a_plain_value_unnests_it() -> None:
    t = Tree()
    t.left = None  # type: ignore[assignment]
    assert "left" not in t.state_dict()
    del t.right
    assert list(t.state_dict()) == ["name", "tags"]


def test_register_state_refuses_values_json_cannot_hold() -> None:
    class Bad(StateModule):
        def __init__(self) -> None:
            super().__init__()
            self.when = object()
            self.register_state("when")

    with pytest.raises(NotSerializableError, match="when: object"):
        Bad()


def test_forgetting_super_init_is_explained() -> None:
    class Forgot(StateModule):
        def __init__(self) -> None:
            self.child = Leaf()

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgot()


class Foreign:
    """Stateful by duck typing only, like an AgentScope object."""

    def __init__(self) -> None:
        self.items: list[Any] = [1]

    def state_dict(self) -> dict[str, Any]:
        return {"items": list(self.items)}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        if not isinstance(state_dict.get("items"), list):
            raise ValueError("items must be a list")
        self.items = list(state_dict["items"])


def test_duck_typed_objects_are_stateful() -> None:
    assert isinstance(Foreign(), Stateful)
    assert as_stateful(Foreign()) is not None
    with pytest.raises(NotSerializableError, match="thing: int"):
        as_stateful(3, "thing")


def test_load_modules_is_all_or_nothing_across_modules() -> None:
    good, bad = Foreign(), Foreign()
    box = Box("kept")
    with pytest.raises(StateError, match=r"b: Foreign.load_state_dict failed: ValueError: items must be a list"):
        load_modules({"a": good, "b": bad, "c": box}, {"a": {"items": [9]}, "b": {"items": "x"}, "c": {"value": "new"}})
    assert (good.items, bad.items, box.value) == ([1], [1], "kept")
    load_modules({"a": good, "c": box}, {"a": {"items": [9]}, "c": {"value": "new"}})
    assert (good.items, box.value) == ([9], "new")


def test_iter_stateful_skips_private_names_modules_and_classes() -> None:
    import json

    ns = {"agent": Box(), "_hidden": Box(), "json": json, "Box": Box, "n": 3, "f": Foreign()}
    assert [name for name, _ in iter_stateful(ns)] == ["agent", "f"]
