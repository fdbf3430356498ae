"""Hostile and bad input, hypothesis-driven: garbled files and rows, odd values, unsafe names.

The rules: loading raises only the NbSessionsError family, with a message that
names the place; one corrupted checkpoint never blocks the others (nor
another session); a value is saved exactly or refused with its path, and a
refused save writes nothing; an unsafe name is refused, and nothing is ever
written outside the store's folder. ``figures`` counts the cases run: the
long versions (NB_SESSIONS_LONG=1) run more than 5,000 in all.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import shutil
import sqlite3
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import nb_sessions as nbs
from nb_sessions import codec
from nb_sessions.agent import Msg, ScriptedAgent
from nb_sessions.errors import InvalidIdError, NbSessionsError, NotSerializableError, StateError
from nb_sessions.state import load_modules
from nb_sessions.stores import parse_ref
from nb_sessions.stores.base import SessionKey
from tests.reliability._states import Box, expected_states, make_modules
from tests.reliability.conftest import LONG, Figures

KINDS = ["sqlite", "json"]


def examples(short: int, long: int) -> settings:
    """Hypothesis settings for a short or long run (no deadline: disks are slow sometimes)."""
    return settings(
        max_examples=long if LONG else short,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


#: Bugs still open that the randomized tests can run into, by name: the description, and
#: how to recognise the error. An example that hits one is counted and ends; the test then
#: ends as xfail naming it (each also has a strict-xfail deterministic test below). Only
#: these are tolerated; anything else fails the run.
OPEN_BUGS: dict[str, tuple[str, Callable[[BaseException], bool]]] = {}


class Cases:
    """Counts hypothesis examples, gives each a fresh folder, tallies open bugs hit and
    (survey mode) lists surprises."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.count = 0
        self.counter = itertools.count()
        self.survey: dict[str, int] = {}
        self.open_bugs: dict[str, int] = {}

    def folder(self) -> Path:
        self.count += 1
        path = self.root / f"case{next(self.counter)}"
        path.mkdir()
        return path

    def finish(self) -> None:
        """Print the survey (NBS_EXPLORE=1); end as xfail if an open bug was hit."""
        if os.environ.get("NBS_EXPLORE"):
            print("SURVEY", *self.survey.items(), sep="\n  ")
        if self.open_bugs:
            pytest.xfail(
                "; ".join(f"{OPEN_BUGS[k][0]} ({n} case(s))" for k, n in self.open_bugs.items())
            )


class EndExample(Exception):
    """Ends one example quietly: it hit an open bug (counted), or survey mode listed it."""


def may_end_early(fn: Callable[..., None]) -> Callable[..., None]:
    """Let an example end quietly with :class:`EndExample`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(EndExample):
            fn(*args, **kwargs)

    return wrapper


def attempt(call: Callable[[], Any], cases: Cases | None = None) -> tuple[bool, Any]:
    """``(True, result)`` or ``(False, NbSessionsError)``; any other exception fails the test.

    With ``cases`` and NBS_EXPLORE=1 (survey mode), another exception is listed
    and ends the example instead.
    """
    try:
        return True, call()
    except NbSessionsError as exc:
        return False, exc
    except Exception as exc:
        frames = [
            f"{Path(t.filename).stem}:{t.name}" for t in traceback.extract_tb(exc.__traceback__)
        ]
        if os.environ.get("NBS_EXPLORE") and cases is not None:  # survey mode: list, do not fail
            inner = [
                f
                for f in frames
                if not f.startswith(("test_", "threads:", "thread:", "base_events:"))
            ]
            sig = f"{type(exc).__name__} at {inner[-3:]}: {str(exc)[:80]}"
            cases.survey[sig] = cases.survey.get(sig, 0) + 1
            raise EndExample(sig) from exc
        pytest.fail(
            f"raised {type(exc).__module__}.{type(exc).__name__} instead of an NbSessionsError: {exc}\n"
            + "".join(traceback.format_exception(exc))
        )


def names_a_place(exc: BaseException, *places: str) -> bool:
    """True when the error message names one of ``places`` (a file, a checkpoint, the store)."""
    text = str(exc)
    return any(p in text for p in places if p)


def assert_names_a_place(exc: BaseException, places: tuple[str, ...], cases: Cases) -> None:
    """The error names one of ``places``; an open bug's error is counted and ends the example."""
    if names_a_place(exc, *places):
        return
    for name, (_, matches) in OPEN_BUGS.items():
        if matches(exc):
            cases.open_bugs[name] = cases.open_bugs.get(name, 0) + 1
            raise EndExample(name)
    raise AssertionError(f"the error names none of {places}: {exc!r}")


# -- templates: a store with session "a" (3 checkpoints, entries) and "b" -------------------


def expected_a(n: int) -> dict[str, Any]:
    return expected_states("small", f"a-{n}", n)


def build_template(path: Path) -> None:
    store = nbs.open_store(path)
    for n in range(3):
        store.save("a", **make_modules("small", f"a-{n}", n))
    store.save("b", box=Box({"b": "intact"}))


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("templates")
    out = {}
    for kind, name in (("sqlite", "store.db"), ("json", "store")):
        build_template(root / name)
        out[kind] = root / name
    return out


def copy_template(template: Path, into: Path) -> Path:
    target = into / template.name
    if template.is_dir():
        shutil.copytree(template, target)
    else:
        shutil.copy2(template, target)
    return target


def check_after_corruption(
    path: Path, protected_a: set[int], places: tuple[str, ...], cases: Cases
) -> int:
    """Read everything; return how many reads failed (all of them clearly)."""
    store = nbs.open_store(path)
    failures = 0
    # Session b shares nothing with a: it always reads.
    ok, value = attempt(lambda: store.get_state("b"), cases)
    assert ok, f"corrupting session a broke session b: {value}"
    assert value == {"box": {"value": {"b": "intact"}}}
    box = Box()
    ok, value = attempt(lambda: store.load("b", box=box), cases)
    assert ok and box.value == {"b": "intact"}, value
    ok, value = attempt(store.sessions, cases)
    if ok:
        assert "b" in {i.session for i in value}
    else:
        failures += 1
        assert_names_a_place(value, places, cases)
    ok, history = attempt(lambda: store.history("a"), cases)
    if not ok:
        failures += 1
        assert_names_a_place(history, places, cases)
        assert not protected_a, f"one corrupted checkpoint blocked the others: {history}"
        return failures
    for n in (1, 2, 3):
        ok, value = attempt(lambda n=n: store.get_state(f"a@{n}"), cases)  # type: ignore[misc]
        if n in protected_a:
            assert ok, f"a@{n} was not corrupted, yet does not load: {value}"
            assert value == expected_a(n - 1)
        elif not ok:
            failures += 1
            assert_names_a_place(value, (*places, f"a@{n}"), cases)
    live = make_modules("small", "live", 9)
    before = codec.dumps({k: v.state_dict() for k, v in live.items()})
    ok, value = attempt(lambda: store.load("a", **live), cases)
    if not ok:
        failures += 1
        after = codec.dumps({k: v.state_dict() for k, v in live.items()})
        assert after == before, "a failed load changed the live objects"
    return failures


# -- garbled JSON store files ---------------------------------------------------------------

JSON_FILES = [
    "a.json",
    ".nb_sessions/a/index.json",
    ".nb_sessions/a/1.json",
    ".nb_sessions/a/2.json",
    ".nb_sessions/a/3.json",
    ".nb_sessions/a/entries-1.jsonl",
    ".nb_sessions/a/entries-1.idx",
]
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)
INDEX_FIELDS = ["seq", "created_at", "modules", "size", "parent", "label", "metadata", "chunks"]
INDEX_TOP = ["next_seq", "pack", "latest_file", "checkpoints", "format", "stale_latest_file"]
damage = st.one_of(
    st.tuples(
        st.just("entry-field"),
        st.integers(min_value=0, max_value=2),
        st.sampled_from(INDEX_FIELDS),
        json_like
        | st.sampled_from(
            [[[["memory", "content"], [[0, 99]]]], [[["memory"], "x"]], -1, "2025-13-01"]
        ),
    ),
    st.tuples(st.just("index-field"), st.sampled_from(INDEX_TOP), json_like),
    st.tuples(st.just("truncate"), st.floats(min_value=0, max_value=1)),
    st.tuples(
        st.just("garble"), st.floats(min_value=0, max_value=1), st.binary(min_size=1, max_size=40)
    ),
    st.tuples(st.just("replace"), json_like),
    st.tuples(st.just("binary"), st.binary(max_size=200)),
    st.tuples(st.just("delete")),
)


def apply_damage(file: Path, how: tuple[Any, ...]) -> Path:
    """Damage ``file`` (the index for the ``*-field`` kinds); return the file damaged."""
    kind = how[0]
    if kind.endswith("-field"):
        file = (
            file.parent / "index.json"
            if file.parent.name == "a"
            else file.parent / ".nb_sessions/a/index.json"
        )
        index = codec.loads(file.read_bytes())
        if kind == "entry-field":
            index["checkpoints"][how[1]][how[2]] = how[3]
        else:
            index[how[1]] = how[2]
        file.write_bytes(codec.dumps(index))
        return file
    data = file.read_bytes()
    if kind == "truncate":
        file.write_bytes(data[: int(len(data) * how[1])])
    elif kind == "garble":
        at = int(len(data) * how[1])
        file.write_bytes(data[:at] + how[2] + data[at + len(how[2]) :])
    elif kind == "replace":
        file.write_bytes(codec.dumps(how[1]))
    elif kind == "binary":
        file.write_bytes(how[1])
    else:
        file.unlink()
    return file


@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_garbled_json_store_files(
    version: str, templates: dict[str, Path], tmp_path: Path, figures: Figures
) -> None:
    cases = Cases(tmp_path)
    failed_reads = 0

    @given(st.sampled_from(JSON_FILES), damage)
    @examples(60, 1200)
    @may_end_early
    def run(name: str, how: tuple[Any, ...]) -> None:
        nonlocal failed_reads
        path = copy_template(templates["json"], cases.folder())
        damaged = apply_damage(path / name, how)
        name = str(damaged.relative_to(path))
        # Damage to one checkpoint's own file must not block the other checkpoints.
        own = {".nb_sessions/a/1.json": 1, ".nb_sessions/a/2.json": 2}
        protected = {1, 2, 3} - {own[name]} if name in own else set()
        if name == "a.json":
            protected = {1, 2, 3}
        failed_reads += check_after_corruption(
            path, protected, (name.rsplit("/", 1)[-1], str(path), "a@"), cases
        )
        shutil.rmtree(path.parent)

    run()
    figures.record(
        version,
        cases=cases.count,
        clear_errors=failed_reads,
        other_exceptions=0,
        session_b_broken=0,
        open_bug_json_chunk_ranges=cases.open_bugs.get("json-chunk-ranges", 0),
    )
    cases.finish()


# -- binary garbage in SQLite rows ----------------------------------------------------------

SQL_TARGETS = [
    ("nbs_checkpoints", "state"),
    ("nbs_checkpoints", "chunks"),
    ("nbs_checkpoints", "metadata"),
    ("nbs_checkpoints", "modules"),
    ("nbs_checkpoints", "created_at"),
    ("nbs_checkpoints", "label"),
    ("nbs_checkpoints", "size"),
    ("nbs_checkpoints", "parent"),
    ("nbs_checkpoints", "seq"),
    ("nbs_blobs", "data"),
    ("nbs_blobs", "hash"),
    ("nbs_segments", "blobs"),
    ("nbs_sessions", "next_seq"),
    ("nbs_sessions", "created_at"),
    ("nbs_sessions", "updated_at"),
]
sql_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=60),
    st.sampled_from(
        ["{", "[]", "null", '{"a": 1}', "[[1, [1]]]", '[[["x"], [99999]]]', "2025-13-45"]
    ),
)


@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_garbage_in_sqlite_rows(
    version: str, templates: dict[str, Path], tmp_path: Path, figures: Figures
) -> None:
    cases = Cases(tmp_path)
    failed_reads = 0
    skipped = 0

    @given(st.sampled_from(SQL_TARGETS), st.integers(min_value=1, max_value=5), sql_values)
    @examples(80, 1500)
    @may_end_early
    def run(target: tuple[str, str], row: int, value: Any) -> None:
        nonlocal failed_reads, skipped
        table, column = target
        path = copy_template(templates["sqlite"], cases.folder())
        db = sqlite3.connect(path, isolation_level=None)
        try:
            if table == "nbs_checkpoints":  # a row of session a, whichever checkpoint
                rows = db.execute(
                    "SELECT c.id, c.seq FROM nbs_checkpoints c JOIN nbs_sessions s ON c.session = s.id "
                    "WHERE s.session_id = 'a' ORDER BY c.seq"
                ).fetchall()
            elif table == "nbs_sessions":
                rows = db.execute(
                    "SELECT id, 0 FROM nbs_sessions WHERE session_id = 'a'"
                ).fetchall()
            else:
                rows = db.execute(f"SELECT id, 0 FROM {table} ORDER BY id").fetchall()
            rid, seq = rows[(row - 1) % len(rows)]
            db.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (value, rid))
        except sqlite3.IntegrityError:
            skipped += 1  # NOT NULL / UNIQUE: the database itself refuses that garbage
            return
        finally:
            db.close()
        protected = (
            {1, 2, 3} - {seq} if table == "nbs_checkpoints" and column not in ("seq",) else set()
        )
        failed_reads += check_after_corruption(path, protected, ("store.db", "a@", "'a'"), cases)
        shutil.rmtree(path.parent)

    run()
    figures.record(
        version,
        cases=cases.count,
        refused_by_sqlite=skipped,
        clear_errors=failed_reads,
        other_exceptions=0,
        session_b_broken=0,
    )
    cases.finish()


# -- odd values in states --------------------------------------------------------------------

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),  # NaN and infinities included
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=()), max_size=20),
    st.text(
        alphabet=st.sampled_from(["\ud800", "\udfff", "\x00", "\n", "é", "🎉", "\\", '"']),
        max_size=8,
    ),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2**64, -(2**64) - 1, 10**40]),
)
unsavable = st.one_of(
    st.builds(object),
    st.binary(max_size=4),
    st.sets(st.integers(), max_size=2),
    st.just(1j),
)
values = st.recursive(
    leaves | unsavable,
    lambda c: (
        st.lists(c, max_size=4)
        | st.tuples(c, c)
        | st.dictionaries(st.text(max_size=5), c, max_size=4)
        | st.dictionaries(st.integers() | st.none() | st.booleans(), c, min_size=1, max_size=2)
    ),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """``b`` is ``a`` as JSON gives it back: tuples as lists, NaN equal to NaN, True not 1, -0.0 kept.

    Iterative, so any depth compares.
    """
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, tuple):
            x = list(x)
        if isinstance(x, float) and isinstance(y, float):
            if math.isnan(x) and math.isnan(y):
                continue
            if x != y or math.copysign(1, x) != math.copysign(1, y):
                return False
        elif type(x) is not type(y):
            return False
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def nest(value: Any, depth: int) -> Any:
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_odd_values_are_saved_exactly_or_refused_with_their_path(
    version: str, kind: str, tmp_path: Path, figures: Figures
) -> None:
    cases = Cases(tmp_path)
    store = nbs.open_store(tmp_path / ("odd.db" if kind == "sqlite" else "odd"))
    outcome = {"saved": 0, "refused": 0}

    @given(values, st.integers(min_value=0, max_value=700), st.integers(min_value=0, max_value=2))
    @examples(60, 1000)
    @may_end_early
    def run(value: Any, depth: int, huge: int) -> None:
        cases.count += 1
        if huge:  # 10 KB, or 2 MB (20 MB in the long run)
            value = [value, "x" * (10_000 if huge == 1 else (20_000_000 if LONG else 2_000_000))]
        value = nest(value, depth)
        session = f"s{cases.count}"
        box = Box()
        box.value = value  # (Box(value) would refuse it itself, at register_state)
        ok, result = attempt(lambda: store.save(session, box=box), cases)
        if not ok:
            assert isinstance(result, NotSerializableError), result
            assert result.path.startswith("box"), result.path
            outcome["refused"] += 1
            assert attempt(lambda: store.history(session))[0] is False, (
                "a refused save wrote something"
            )
            return
        got = store.get_state(session)["box"]["value"]
        assert same(value, got), "the value came back changed"
        outcome["saved"] += 1

    run()
    figures.record(
        f"{version}, {kind}",
        cases=cases.count,
        saved_exactly=outcome["saved"],
        refused_with_path=outcome["refused"],
        other_exceptions=0,
    )
    cases.finish()


def test_tuples_come_back_as_lists_and_nothing_else_changes(tmp_path: Path) -> None:
    """The one change JSON itself makes (stdlib json does the same); everything else is exact."""
    store = nbs.open_store(tmp_path / "t.db")
    store.save("s", box=Box({"t": (1, (2, "\ud800")), "n": [math.inf, 2**100]}))
    got = store.get_state("s")["box"]["value"]
    assert got["t"] == [1, [2, "\ud800"]] and got["n"][0] == math.inf and got["n"][1] == 2**100


# -- states of the wrong shape, loaded into real objects -----------------------------------


def agent_state() -> dict[str, Any]:
    import asyncio

    agent = ScriptedAgent(seed=5)

    async def talk() -> None:
        for text in ("hello", "plan to shop, cook, eat", "what is 6*7", "next"):
            await agent(Msg("user", text, "user"))

    asyncio.run(talk())
    return agent.state_dict()


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths_of(v, (*prefix, i))
    return out


def mutate(state: Any, where: tuple[Any, ...], how: str, new: Any) -> Any:
    state = codec.loads(codec.dumps(state))
    if not where:
        return new
    parent = state
    for step in where[:-1]:
        parent = parent[step]
    last = where[-1]
    if how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[f"extra_{last}"] = new
    else:
        parent[last] = new
    return state


class Raw:
    """A Stateful whose state is whatever it was given (to put any state into a store)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        self.state = dict(state_dict)


@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_wrong_shaped_states_load_all_or_nothing_with_a_clear_error(
    version: str, tmp_path: Path, figures: Figures
) -> None:
    good = agent_state()
    spots = paths_of(good)
    store = nbs.open_store(tmp_path / "shapes.db")
    cases = Cases(tmp_path)
    counts = {"loaded": 0, "refused": 0}

    @given(
        st.sampled_from(spots),
        st.sampled_from(["replace", "delete", "add"]),
        json_like,
        st.booleans(),
        st.booleans(),
    )
    @examples(80, 1200)
    @may_end_early
    def run(where: tuple[Any, ...], how: str, new: Any, strict: bool, through_store: bool) -> None:
        cases.count += 1
        bad = mutate(good, where, how, new)
        agent = ScriptedAgent(seed=1)
        before = codec.dumps(agent.state_dict())
        if through_store:
            store.save(
                f"s{cases.count}", agent=Raw(bad) if isinstance(bad, dict) else Raw({"x": bad})
            )
            ok, err = attempt(
                lambda: store.load(f"s{cases.count}", strict=strict, agent=agent), cases
            )
        else:
            ok, err = attempt(
                lambda: load_modules({"agent": agent}, {"agent": bad}, strict=strict), cases
            )
        if ok:
            counts["loaded"] += 1
            return
        counts["refused"] += 1
        assert isinstance(err, StateError), err
        assert err.problems and all(p.startswith("agent") for p, _ in err.problems), err.problems
        assert codec.dumps(agent.state_dict()) == before, "a refused load changed the agent"

    run()
    figures.record(
        version,
        cases=cases.count,
        loaded=counts["loaded"],
        refused_clearly=counts["refused"],
        other_exceptions=0,
        half_loaded=0,
    )
    cases.finish()


class Picky:
    """A foreign Stateful that refuses values above its limit (its own error type)."""

    def __init__(self, v: int, limit: int = 1) -> None:
        self.v, self.limit = v, limit

    def state_dict(self) -> dict[str, Any]:
        return {"v": self.v}

    def load_state_dict(self, state_dict: Any, strict: bool = True) -> None:
        if state_dict["v"] > self.limit:
            raise ValueError(f"I only take v <= {self.limit}")
        self.v = state_dict["v"]


def test_an_objects_own_load_error_is_wrapped_with_the_module_name(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "p.db")
    store.save("s", picky=Picky(5, limit=9), box=Box(1))
    picky, box = Picky(0), Box(0)
    with pytest.raises(StateError) as err:
        store.load("s", picky=picky, box=box)
    assert err.value.module == "picky" and "I only take v <= 1" in str(err.value)
    assert (picky.v, box.value) == (0, 0)  # all or nothing


def test_an_object_that_refuses_even_its_own_state_still_gives_a_state_error(
    tmp_path: Path,
) -> None:
    """The failed load is undone with load_state_dict(snapshot); when that raises too, the
    StateError names the module and says the object could not be put back (the object's
    bare exception once escaped)."""
    store = nbs.open_store(tmp_path / "p.db")
    store.save("s", picky=Picky(5, limit=9), box=Box(1))
    picky, box = Picky(5, limit=-1), Box(0)  # refuses everything, even v=5 it holds
    with pytest.raises(StateError) as err:
        store.load("s", picky=picky, box=box)
    assert err.value.module == "picky"
    assert all(path.startswith("picky") for path, _ in err.value.problems), err.value.problems
    messages = [msg for _, msg in err.value.problems]
    assert any("load_state_dict failed" in m for m in messages), messages
    assert any("could not be put back" in m for m in messages), messages
    assert box.value == 0  # the other module was not loaded


# -- unsafe names ---------------------------------------------------------------------------

HOSTILE = [
    "a",
    "../x",
    "..",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\x00b",
    "a\nb",
    "x" * 5000,
    "a@b",
    ".hidden",
    " pad",
    "a.lock",
    "a.json",
    "index",
    ".nb_sessions",
    "con",
    "a_b",
    "b",
    "ü",
    "\u202e",
    "~1",
    "12",
]
name_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from([*"ab_.-/\\@ \x00\n~", "..", "ü", ".lock", ".json"]), max_size=8).map(
        "".join
    ),
    st.text(min_size=0, max_size=300),
)


def outside_snapshot(area: Path, store_path: Path) -> set[str]:
    """Everything in the store's parent folder, and (for a folder store) every path under it resolved."""
    names = set(os.listdir(area))
    if store_path.is_dir():
        for p in store_path.rglob("*"):
            assert p.resolve().is_relative_to(store_path.resolve()), f"{p} escapes the store"
    return names


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", ["short", pytest.param("long", marks=pytest.mark.slow)])
def test_unsafe_names_are_refused_and_sessions_never_overwrite_each_other(
    version: str, kind: str, tmp_path: Path, figures: Figures
) -> None:
    cases = Cases(tmp_path)
    counts = {"saved": 0, "refused": 0, "conflicts": 0}

    @given(
        st.lists(
            st.tuples(name_text, st.one_of(st.just(""), name_text), st.none() | name_text),
            min_size=1,
            max_size=6,
        )
    )
    @example([("a", "", None), ("a.lock", "", None)])
    @example([("u_s", "", None), ("s", "u", None)])
    @example([("\\@", "", None)])
    @examples(30, 500)
    @may_end_early
    def run(ops: list[tuple[str, str, str | None]]) -> None:
        area = cases.folder()
        path = area / ("store.db" if kind == "sqlite" else "store")
        store = nbs.open_store(path)
        model: dict[tuple[str, ...], int] = {}
        for n, (session, user, label) in enumerate(ops):
            ok, result = attempt(
                lambda s=session, u=user, lab=label, n=n: store.save(  # type: ignore[misc]
                    s, user_id=u, label=lab, box=Box(n)
                ),
                cases,
            )
            if ok:
                counts["saved"] += 1
                # A name with '/' is a reference "user/session" ("/x", an empty user, is refused).
                assert result.key == parse_ref(session, user).key
                model[tuple(result.key)] = n
            elif isinstance(result, InvalidIdError):
                counts["refused"] += 1
            else:  # two ids that AgentScope would file under one name: refused, never merged
                assert isinstance(result, nbs.ConflictError), result
                counts["conflicts"] += 1
            for (u, s), value in model.items():
                # The model holds literal ids: pass the key, not the id as a reference
                # (a literal '@' read as a reference would name a checkpoint).
                ok2, state = attempt(lambda s=s, u=u: store.get_state(SessionKey(u, s)), cases)  # type: ignore[misc]
                assert ok2, f"{u!r}/{s!r} no longer loads: {state}"
                assert state == {"box": {"value": value}}, (
                    f"{u!r}/{s!r} was overwritten by another session"
                )
        expected = {"store.db", "store.db-wal", "store.db-shm"} if kind == "sqlite" else {"store"}
        assert outside_snapshot(area, path) <= expected, "something was written outside the store"
        shutil.rmtree(area)

    run()
    figures.record(
        f"{version}, {kind}",
        cases=cases.count,
        saved=counts["saved"],
        refused=counts["refused"],
        conflicts=counts["conflicts"],
        written_outside=0,
        overwritten=0,
    )
    cases.finish()


# -- bugs these tests found, each hit on purpose (fixed: kept as regression tests) ------------


def test_an_empty_entry_pack_is_reported_as_corruption(
    templates: dict[str, Path], tmp_path: Path
) -> None:
    """It once raised a bare ValueError('cannot mmap an empty file')."""
    path = copy_template(templates["json"], tmp_path)
    (path / ".nb_sessions/a/entries-1.jsonl").write_bytes(b"")
    with pytest.raises(nbs.StoreCorruptedError, match="entries-1"):
        nbs.open_store(path).get_state("a@1")
    assert nbs.open_store(path).get_state("b") == {"box": {"value": {"b": "intact"}}}


def damage_index_entry(templates: dict[str, Path], tmp_path: Path, field: str, value: Any) -> Path:
    """A copy of the JSON template whose index entry for a@1 has ``field`` set to ``value``."""
    path = copy_template(templates["json"], tmp_path)
    index_file = path / ".nb_sessions/a/index.json"
    index = codec.loads(index_file.read_bytes())
    index["checkpoints"][0][field] = value
    index_file.write_bytes(codec.dumps(index))
    return path


@pytest.mark.parametrize(
    ("field", "value"),
    [("seq", "x"), ("created_at", 5), ("metadata", [1]), ("modules", 5), ("chunks", 5)],
)
def test_an_index_field_of_the_wrong_type_is_reported_as_corruption(
    templates: dict[str, Path], tmp_path: Path, field: str, value: Any
) -> None:
    """Once a bare TypeError/ValueError/KeyError/AttributeError; now StoreCorruptedError
    naming index.json or the checkpoint, and session b is untouched."""
    path = damage_index_entry(templates, tmp_path, field, value)
    store = nbs.open_store(path)

    def read_all() -> None:
        store.history("a")
        store.get_state("a@1")

    with pytest.raises(nbs.StoreCorruptedError) as err:
        read_all()
    assert names_a_place(err.value, "index.json", "a@1"), err.value
    assert store.get_state("b") == {"box": {"value": {"b": "intact"}}}


def test_a_non_list_chunks_field_names_index_json(
    templates: dict[str, Path], tmp_path: Path
) -> None:
    path = damage_index_entry(templates, tmp_path, "chunks", 5)
    with pytest.raises(nbs.StoreCorruptedError) as err:
        nbs.open_store(path).get_state("a@1")
    assert "index.json" in str(err.value), err.value
    assert err.value.location.endswith("index.json"), err.value.location


@pytest.mark.parametrize(
    "chunks",
    [[[["memory"], "x"]], [[["memory", "content"], [5]]], [[["memory", "content"], [[0, "q"]]]]],
    ids=["ranges-not-a-list", "range-not-a-pair", "count-not-a-number"],
)
def test_malformed_entry_ranges_name_their_place(
    templates: dict[str, Path], tmp_path: Path, chunks: Any
) -> None:
    path = damage_index_entry(templates, tmp_path, "chunks", chunks)
    store = nbs.open_store(path)
    with pytest.raises(nbs.StoreCorruptedError) as err:
        store.get_state("a@1")
    assert names_a_place(err.value, "index.json", "a@1"), err.value
    assert store.get_state("a@2") == expected_a(1)


def set_checkpoint_column(path: Path, seq: int, column: str, value: str) -> None:
    """Overwrite one column of checkpoint ``a@seq`` in a SQLite store, behind its back."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(
            f"UPDATE nbs_checkpoints SET {column} = ? WHERE seq = ? AND session = "
            "(SELECT id FROM nbs_sessions WHERE session_id = 'a')",
            (value, seq),
        )
    finally:
        db.close()


def test_a_garbled_chunks_column_is_reported_as_corruption(
    templates: dict[str, Path], tmp_path: Path
) -> None:
    """It once raised a bare TypeError from SQLiteStore._read_chunks."""
    path = copy_template(templates["sqlite"], tmp_path)
    set_checkpoint_column(path, 2, "chunks", "0")
    store = nbs.open_store(path)
    assert store.get_state("a@1") == expected_a(0)  # the others are intact
    assert store.get_state("a@3") == expected_a(2)
    with pytest.raises(nbs.StoreCorruptedError, match="a@2"):
        store.get_state("a@2")


def test_one_garbled_date_does_not_break_the_session_list(
    templates: dict[str, Path], tmp_path: Path
) -> None:
    """One bad created_at once made store.sessions() raise a bare ValueError for the whole store."""
    path = copy_template(templates["sqlite"], tmp_path)
    set_checkpoint_column(path, 1, "created_at", "garbage")
    assert {i.session for i in nbs.open_store(path).sessions()} == {"a", "b"}


@pytest.mark.parametrize("order", [("a", "a.lock"), ("a.lock", "a")])
def test_session_x_and_x_lock_are_two_sessions(order: tuple[str, str], tmp_path: Path) -> None:
    """Session x's lock file was once session x.lock's history folder."""
    store = nbs.open_store(tmp_path / "store")
    for name in order:
        store.save(name, box=Box(name))
    assert [store.get_state(n)["box"]["value"] for n in order] == list(order)
    for name in order:
        store.save(name, box=Box(f"{name} again"))
    assert [c.seq for n in order for c in store.history(n)] == [1, 2, 1, 2]


def test_a_reference_with_an_empty_user_is_refused(tmp_path: Path) -> None:
    """'/x' once meant user '' and session 'x'; it is refused, and nothing is written."""
    store = nbs.open_store(tmp_path / "s.db")
    with pytest.raises(InvalidIdError):
        store.save("/x", box=Box(1))
    with pytest.raises(InvalidIdError):
        parse_ref("/x")
    assert store.sessions() == []


def test_too_deep_a_value_is_refused_naming_its_module(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "deep.db")
    box = Box()
    box.value = nest(None, 5000)
    with pytest.raises(NotSerializableError) as err:
        store.save("s", box=box)
    assert err.value.path.startswith("box"), err.value.path


@pytest.mark.parametrize("kind", KINDS)
def test_an_escaped_at_names_a_literal_at_and_the_key_loads_it(kind: str, tmp_path: Path) -> None:
    """Regression: session ``\\@`` saved as a reference is session id ``@``; its SessionKey loads it."""
    store = nbs.open_store(tmp_path / ("store.db" if kind == "sqlite" else "store"))
    cp = store.save("\\@", user_id="", box=Box(1))
    assert cp.key == SessionKey("", "@")
    assert str(cp.key) == "\\@"
    assert store.get_state(SessionKey("", "@")) == {"box": {"value": 1}}
    assert store.get_state(str(cp.key)) == {"box": {"value": 1}}
    with pytest.raises(InvalidIdError):  # '@' alone is a reference to a checkpoint of no session
        store.get_state("@", user_id="")
