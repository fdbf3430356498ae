"""Class 6 of issue 12 through the public API: every path ends in right data or an NbSessionsError.

Module names may be anything, ``self``, ``session``, ``label`` or ``strict``
included; a bundle nested 1,000 deep is refused by name; and a hypothesis fuzz
over both stores throws random ids, labels, metadata, module names, states and
queries (lone surrogates, '@', huge integers, deep nesting, NaN) at the API.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nb_sessions as nbs
from nb_sessions import bundle
from nb_sessions.stores.base import BaseStore, SessionKey

RESERVED = ["self", "session", "ref", "label", "metadata", "user_id", "strict", "allow_not_exist", "repair"]


class _Box:
    def __init__(self, value: Any = None) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        self.value = state["value"]


@pytest.fixture(params=["json", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BaseStore:
    return nbs.open_store(tmp_path / ("j" if request.param == "json" else "s.db"))


# -- module names that are also parameter names ---------------------------------------------


@pytest.mark.parametrize("name", RESERVED)
def test_a_module_may_be_named_like_any_parameter(store: BaseStore, name: str) -> None:
    # A module named like an option takes its keyword; the option keeps its default.
    options: dict[str, Any] = {} if name in ("label", "metadata") else {"label": "lbl", "metadata": {"k": 1}}
    cp = store.save("s", **options, **{name: _Box(name), "other": _Box(2)})
    assert set(cp.modules) == {name, "other"}
    if options:
        assert (cp.label, cp.metadata["k"]) == ("lbl", 1)
    assert store.get_state("s") == {name: {"value": name}, "other": {"value": 2}}
    back, other = _Box(), _Box()
    store.load("s", **{name: back, "other": other})
    assert (back.value, other.value) == (name, 2)
    cp = asyncio.run(store.asave("s", **{name: _Box("async")}))
    assert store.get_state(cp) == {name: {"value": "async"}}


def test_keyword_options_keep_working(store: BaseStore) -> None:
    cp = store.save("s", label="one", metadata={"k": 1}, user_id="u", m=_Box(1))
    assert (cp.key, cp.label, cp.metadata["k"]) == (SessionKey("u", "s"), "one", 1)
    m = _Box()
    assert store.load("s", strict=False, allow_not_exist=False, user_id="u", repair=True, m=m) is not None
    assert m.value == 1
    assert store.load("nobody", allow_not_exist=True, m=m) is None


@pytest.mark.parametrize("name", RESERVED)
def test_the_dropins_take_any_module_name(tmp_path: Path, name: str) -> None:
    session = nbs.JSONSession(tmp_path)
    asyncio.run(session.save_session_state("s", **{name: _Box(name)}))
    back = _Box()
    asyncio.run(session.load_session_state("s", **{name: back}))
    assert back.value == name


def test_metadata_that_is_not_a_dict_is_refused_by_name(store: BaseStore) -> None:
    with pytest.raises(nbs.NotSerializableError, match="metadata"):
        store.save("s", metadata=[("k", 1)], m=_Box(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("query", ["\ud800", "a\udfff", "@"])
def test_searching_for_a_lone_surrogate_answers(store: BaseStore, query: str) -> None:
    from nb_sessions.agent import InMemoryMemory, Msg

    memory = InMemoryMemory()
    asyncio.run(memory.add(Msg("user", f"x{query}y", "user")))
    store.save("s", memory=memory)
    for frame in (store.search(query), store.search(query, "s")):
        assert len(frame) == 1


# -- deep nesting ---------------------------------------------------------------------------


def test_a_bundle_nested_1000_deep_is_refused_by_name(tmp_path: Path) -> None:
    source = nbs.open_store(tmp_path / "a.db")
    source.save("s", m=_Box(1))
    bundle.write_bundle(source, None, tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    text = json.dumps(data).replace('{"value": 1}', '{"value": ' + "[" * 1000 + "]" * 1000 + "}")
    (tmp_path / "deep.json").write_text(text)
    with pytest.raises(nbs.NbSessionsError, match="deep"):
        bundle.import_bundle(nbs.open_store(tmp_path / "b.db"), bundle.read_bundle(tmp_path / "deep.json"))


# -- the fuzz --------------------------------------------------------------------------------

_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_CHARS = st.one_of(st.characters(), _SURROGATES, st.sampled_from(list("@/\\~. \x00")))
_TEXT = st.text(_CHARS, max_size=12)
_IDS = st.one_of(_TEXT, st.sampled_from(["a", "a@b", "u@x", "s@y", "@", "a@1", "ok"]))
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True), _TEXT,
)
_JSON = st.recursive(
    _SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)


class _Deep:
    """A list nested ``depth`` deep, built only when used (hypothesis prints examples recursively)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"_Deep({self.depth})"

    def build(self) -> Any:
        value: Any = 1
        for _ in range(self.depth):
            value = [value]
        return value


def _built(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {k: v.build() if isinstance(v, _Deep) else v for k, v in values.items()}


_VALUES = st.one_of(_JSON, st.builds(_Deep, st.integers(min_value=50, max_value=1500)))
_NAMES = st.one_of(st.sampled_from([*RESERVED, "agent"]), _TEXT)


def _same(a: Any, b: Any) -> bool:
    """Exact equality (NaN equals NaN, types must match), iterative: states may nest deep."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            if list(x) != list(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif type(x) is not type(y) or x != y:
            return False
    return True


def _allowed(call: Any) -> tuple[bool, Any]:
    """Run ``call``; True and its result, or False for an NbSessionsError. Anything else fails the test."""
    try:
        return True, call()
    except nbs.NbSessionsError:
        return False, None


def _fuzz_one(store: BaseStore, uid: str, sid: str, label: Any, meta: Any, modules: dict[str, Any], query: str) -> None:
    key = SessionKey(uid, sid)
    meta, modules = _built(meta), _built(modules) or {}
    options = {k: v for k, v in (("label", label), ("metadata", meta)) if k not in modules}
    label, meta = options.get("label"), options.get("metadata")
    ok, cp = _allowed(lambda: store.save(key, **options, **{n: _Box(v) for n, v in modules.items()}))
    if ok:
        assert cp.key == key and cp.label == label
        assert _same({k: v for k, v in cp.metadata.items() if k != "nb_sessions_version"}, meta or {})
        for ref in (cp, cp.ref, key, str(key)):
            got_ok, state = _allowed(lambda ref=ref: store.get_state(ref))
            assert got_ok, ref
            # Module order is kept, except that a module named like an option comes last.
            assert state.keys() == modules.keys()
            assert all(_same(state[n], {"value": v}) for n, v in modules.items())
        boxes = {n: _Box() for n in modules}
        store.load(cp, **boxes)
        assert all(_same(boxes[n].value, v) for n, v in modules.items())
        assert store.history(key)[-1].seq == cp.seq
        if label is not None:
            assert store.checkpoint(f"{key}@{label}").seq == cp.seq
    for ref in (f"{sid}@{label}", str(key), sid):
        _allowed(lambda ref=ref: store.checkpoint(ref))
        _allowed(lambda ref=ref: store.history(ref))
    _allowed(lambda: store.search(query))
    _allowed(lambda: store.search(query, key))
    _allowed(lambda: store.label(key, label))
    _allowed(lambda: store.sessions())


_FUZZ = dict(
    uid=st.one_of(st.just(""), _IDS),
    sid=_IDS,
    label=st.one_of(st.none(), _TEXT),
    meta=st.one_of(st.none(), st.dictionaries(_TEXT, _VALUES, max_size=3)),
    modules=st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=3),  # none: TypeError, documented
    query=_TEXT,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_FUZZ)
def test_fuzz_public_api_gives_right_data_or_a_named_error(
    store: BaseStore, uid: str, sid: str, label: Any, meta: Any, modules: dict[str, Any], query: str
) -> None:
    _fuzz_one(store, uid, sid, label, meta, modules, query)


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_FUZZ)
def test_fuzz_public_api_long(
    store: BaseStore, uid: str, sid: str, label: Any, meta: Any, modules: dict[str, Any], query: str
) -> None:
    _fuzz_one(store, uid, sid, label, meta, modules, query)
