"""What a first-time user meets: errors that say what to type, no silent no-ops, readable results."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions.agent import Msg, ScriptedAgent
from tests.conftest import Box
from tests.test_cli import run as cli

# -- the core -----------------------------------------------------------------------


def test_a_mistyped_label_or_session_gets_a_suggestion(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    store.save("alice", label="good", box=Box(1))
    with pytest.raises(nbs.CheckpointNotFoundError, match="Did you mean alice@good"):
        store.checkpoint("alice@godo")
    with pytest.raises(nbs.SessionNotFoundError, match="Did you mean 'alice'"):
        store.history("alcie")


def test_errors_carry_their_advice_as_hints_a_front_end_can_render() -> None:
    hint = nbs.errors.Hint("history", ("u1/alice",))
    exc = nbs.CheckpointNotFoundError(f"no such checkpoint. See {hint.python}.").with_hints(hint)
    assert exc.render() == "no such checkpoint. See store.history('u1/alice')."
    assert exc.render("cli") == "no such checkpoint. See `nb-sessions history u1/alice`."


def test_load_without_objects_is_an_error_saying_what_to_pass(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    store.save("alice", box=Box(1))
    with pytest.raises(nbs.NothingToLoadError, match=r"store.load\('alice', agent=agent\)"):
        store.load("alice")


def test_loading_into_an_object_without_state_says_load(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    store.save("alice", box=Box(1))
    with pytest.raises(nbs.NotSerializableError, match="cannot load box: object cannot hold state"):
        store.load("alice", box=object())


def test_a_path_like_session_id_is_named_as_a_session_id(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    with pytest.raises(nbs.InvalidIdError, match=r"invalid session id '\.\./x'"):
        store.save("../x", box=Box(1))


@pytest.mark.parametrize("name", ["s.db", "folder"])
def test_every_store_creates_missing_parent_folders_owner_only(tmp_path: Path, name: str) -> None:
    path = tmp_path / "a" / "b" / name
    store = nbs.open_store(path)
    store.save("alice", box=Box(1))
    assert store.checkpoint("alice").seq == 1
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


@pytest.mark.parametrize("name", ["s.db", "folder"])
def test_vacuum_returns_an_int_that_says_what_it_reclaimed(tmp_path: Path, name: str) -> None:
    store = nbs.open_store(tmp_path / name)
    for i in range(4):
        store.save("alice", box=Box(["x" * 5000, i]))
    store.prune("alice", keep_last=1)
    result = store.vacuum()
    assert isinstance(result, nbs.VacuumResult) and isinstance(result, int)
    assert result.bytes_before > 0 and result.bytes_after > 0
    assert int(result) == max(0, result.reclaimed)
    assert str(result).startswith(f"reclaimed {nbs.stores.space.human_size(int(result))}")
    assert "before" in str(result) and "after" in str(result)


async def test_a_session_diff_prints_its_tables(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    agent = ScriptedAgent("Friday")
    await agent(Msg("user", "what is 6*7", "user"))
    await store.asave("alice", agent=agent)
    await agent(Msg("user", "weather in Paris", "user"))
    await store.asave("alice", agent=agent)
    text = str(nbs.diff(store, "alice@1", "alice@2"))
    assert text.startswith("alice@1 → alice@2")
    assert "Messages:" in text and "weather in Paris" in text


# -- the command line ----------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    store = nbs.open_store(tmp_path / "s.db")
    store.save("alice", label="good", box=Box(1))
    store.save("alice", box=Box(2))
    return tmp_path / "s.db"


def test_cli_errors_suggest_commands_not_python(db: Path) -> None:
    result = cli(db.parent, "--store", "s.db", "show", "alice@godo")
    assert result.returncode == 1
    assert "Did you mean alice@good?" in result.stderr
    assert "`nb-sessions history alice`" in result.stderr and "store." not in result.stderr


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (lambda p: (p / "README.md").write_text("# hi"), "found a plain file"),
        (lambda p: (p / "x.json").write_text("{}"), "nb-sessions import"),
        (lambda p: (p / "x.db").write_text("not sqlite"), "not an SQLite database"),
        (lambda p: (p / "empty").mkdir(), "found an empty folder"),
    ],
)
@pytest.mark.parametrize("command", ["ls", "check"])
def test_paths_that_are_not_stores_are_refused(
    tmp_path: Path, make: object, found: str, command: str
) -> None:
    make(tmp_path)  # type: ignore[operator]
    target = sorted(p.name for p in tmp_path.iterdir())[0]
    result = cli(tmp_path, "--store", target, command)
    assert result.returncode == 2, result.stdout
    assert "is not a store" in result.stderr and found in result.stderr
    assert ".nb_sessions" not in result.stderr and "no sessions" not in result.stdout
    assert "readable" not in result.stdout


def test_export_into_a_missing_folder_names_the_folder_not_a_temp_file(db: Path) -> None:
    result = cli(db.parent, "--store", "s.db", "export", "alice", "-o", "missing_dir/x.json")
    assert result.returncode == 2
    assert "folder missing_dir does not exist" in result.stderr
    assert ".nbs-tmp" not in result.stderr and "tmp" not in result.stderr.replace("missing_dir", "")


def test_delete_asks_for_confirmation_then_deletes(db: Path) -> None:
    refused = cli(db.parent, "--store", "s.db", "delete", "alice@1")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert nbs.open_store(db).checkpoint("alice@1").seq == 1
    done = cli(db.parent, "--store", "s.db", "delete", "alice@1", "--yes")
    assert done.returncode == 0, done.stderr
    assert [cp.seq for cp in nbs.open_store(db).history("alice")] == [2]
    gone = cli(db.parent, "--store", "s.db", "--json", "delete", "alice", "-y")
    assert json.loads(gone.stdout)["checkpoints"] == 1
    assert nbs.open_store(db).sessions() == []


def test_import_as_a_new_name_and_the_conflict_advice(db: Path) -> None:
    assert (
        cli(db.parent, "--store", "s.db", "export", "--bundle", "alice", "-o", "b.json").returncode
        == 0
    )
    clash = cli(db.parent, "--store", "s.db", "import", "b.json")
    assert clash.returncode == 1 and "`nb-sessions delete alice`" in clash.stderr
    renamed = cli(db.parent, "--store", "s.db", "import", "b.json", "--as", "alice2")
    assert renamed.returncode == 0, renamed.stderr
    store = nbs.open_store(db)
    assert [cp.label for cp in store.history("alice2")] == ["good", None]


def test_prune_dry_run_names_the_checkpoints_to_remove(db: Path) -> None:
    result = cli(
        db.parent, "--store", "s.db", "prune", "--keep-last", "1", "--drop-labeled", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    assert "checkpoints to remove" in result.stdout and "alice@1" in result.stdout


# -- where the space goes -------------------------------------------------------------


async def _grow(store: nbs.BaseStore) -> ScriptedAgent:
    agent = ScriptedAgent("Friday")
    for i in range(4):
        await agent(Msg("user", f"weather in Paris {i}" + "x" * 2000, "user"))
        await store.asave("alice", agent=agent)
    await store.asave("bob", agent=agent)
    return agent


def _space_store(tmp_path: Path, name: str, request: pytest.FixtureRequest) -> nbs.BaseStore:
    if name == "postgres":
        return nbs.open_store(request.getfixturevalue("pg_url"))
    return nbs.open_store(tmp_path / name)


@pytest.mark.parametrize("name", ["s.db", "folder", "postgres"])
async def test_stats_count_shared_messages_once(tmp_path: Path, name: str, request: pytest.FixtureRequest) -> None:
    store = _space_store(tmp_path, name, request)
    await _grow(store)
    stats = await store.astats()
    assert list(stats.sessions["session"]) != [] and set(stats.sessions["session"]) == {
        "alice",
        "bob",
    }
    logical = sum(cp.size for cp in store.history("alice"))
    assert stats.shared_bytes > 0
    row = stats.sessions.set_index("session").loc["alice"]
    assert (
        row["own_bytes"] + row["shared_bytes"] < logical
    )  # each message is stored (and counted) once
    alice = stats.checkpoints[stats.checkpoints["session"] == "alice"]
    assert list(alice["checkpoint"]) == ["alice@1", "alice@2", "alice@3", "alice@4"]
    # alice@1's messages live on in alice@2..4: they are shared, not its own
    assert alice["own_bytes"].iloc[0] < alice["shared_bytes"].iloc[0]
    assert set(stats.modules["module"]) == {"agent"}
    assert stats.disk_bytes > 0
    assert "shared between checkpoints" in str(stats)


@pytest.mark.parametrize("name", ["s.db", "folder", "postgres"])
async def test_prune_dry_run_says_how_many_bytes_it_would_free(
    tmp_path: Path, name: str, request: pytest.FixtureRequest
) -> None:
    store = _space_store(tmp_path, name, request)
    await _grow(store)
    preview = await store.aprune("alice", keep_last=1, dry_run=True)
    assert preview.bytes_reclaimed is not None and preview.bytes_reclaimed > 0
    removed_logical = sum(cp.size for cp in preview.removed)
    assert preview.bytes_reclaimed < removed_logical  # their messages stay for alice@4
    assert "freeing" in str(preview)
    before = (await store.astats()).total_bytes
    await store.aprune("alice", keep_last=1)
    freed = before - (await store.astats()).total_bytes
    if name != "folder":
        assert freed == preview.bytes_reclaimed
    else:  # the JSON index also loses the removed checkpoints' entries
        assert preview.bytes_reclaimed <= freed < preview.bytes_reclaimed + 1000


async def test_du_prints_a_table_and_json(tmp_path: Path) -> None:
    await _grow(nbs.open_store(tmp_path / "s.db"))
    table = cli(tmp_path, "--store", "s.db", "du")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["session", "checkpoints", "own", "shared"]
    assert "shared between checkpoints, counted once" in table.stdout
    data = json.loads(cli(tmp_path, "--store", "s.db", "du", "--json").stdout)
    assert {
        "total_bytes",
        "shared_bytes",
        "disk_bytes",
        "sessions",
        "modules",
        "checkpoints",
    } <= set(data)
    assert len(data["checkpoints"]) == 5
    by = cli(tmp_path, "--store", "s.db", "du", "--by", "checkpoints")
    assert "alice@3" in by.stdout
    dry = cli(tmp_path, "--store", "s.db", "prune", "alice", "--keep-last", "1", "--dry-run")
    assert re.search(r"would remove 3 checkpoint\(s\), freeing \d", dry.stdout), dry.stdout


async def test_live_and_saved_frames_share_paths_and_tool_calls_read(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    agent = ScriptedAgent("Friday")
    await agent(Msg("user", "weather in Paris", "user"))
    await store.asave("alice", agent=agent)
    live, saved = nbs.views.messages(agent), nbs.views.messages(store, "alice")
    assert set(live["path"]) == set(saved["path"]) == {"agent.memory"}
    joined = live.merge(saved, on=["path", "id"], suffixes=("_live", "_saved"))
    assert len(joined) == len(live)
    calls = live[
        live["block_types"].str.contains("tool_use") & ~live["block_types"].str.contains("text")
    ]
    assert not calls.empty and calls["text"].str.startswith("→ get_weather(city=").all()
    await agent(Msg("user", "weather in Oslo", "user"))
    changed = nbs.diff(store, "alice", agent=agent).messages
    assert changed["text_after"].str.startswith("→ get_weather(").any()
