"""The nb-sessions command, run as the installed console script in a subprocess."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions import cli, codec, views
from nb_sessions.agent import Msg, ScriptedAgent
from tests.conftest import SAMPLE_FILE, Box
from tests.test_bundle import exact, fingerprint, populate

SCRIPT = Path(sys.executable).parent / "nb-sessions"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def run(
    cwd: Path, *args: str, env: dict[str, str] | None = None, text: bool = True
) -> subprocess.CompletedProcess[Any]:
    """Run the real console script in ``cwd`` (no NB_SESSIONS_STORE unless ``env`` sets it)."""
    environ = {k: v for k, v in os.environ.items() if k != cli.ENV_STORE}
    environ.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=text, env=environ, timeout=120,
        check=False,
    )


def run_json(cwd: Path, *args: str) -> Any:
    """Run with ``--json``; the exit code must be 0 and stdout must parse."""
    result = run(cwd, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_console_script_is_installed() -> None:
    assert SCRIPT.exists(), "pip install -e . should have made the nb-sessions script"


# -- the round trip ----------------------------------------------------------------


async def test_json_store_to_sqlite_to_bundle_to_a_fresh_store_keeps_every_checkpoint(tmp_path: Path) -> None:
    source = nbs.open_store(tmp_path / "sessions")  # a JSON folder
    await populate(source, "alice")
    await populate(source, "u1/bob", seed=2)

    copied = run(tmp_path, "copy", "sessions", "copy.db")
    assert copied.returncode == 0, copied.stderr
    assert "copied 2 session(s), 8 checkpoint(s)" in copied.stdout
    exported = run_json(tmp_path, "--store", "copy.db", "export", "--bundle", "--all", "-o", "all.nbs.json")
    assert exported == {
        "format": "nb_sessions-bundle", "version": 1, "sessions": 2, "checkpoints": 8,
        "file": str(tmp_path / "all.nbs.json"),
    }
    imported = run_json(tmp_path, "import", "all.nbs.json", "--store", "fresh.db")
    assert [(s["target"], s["checkpoints"]) for s in imported["imported"]] == [
        ("alice", ["alice@1", "alice@2", "alice@3", "alice@4"]),
        ("u1/bob", ["u1/bob@1", "u1/bob@2", "u1/bob@3", "u1/bob@4"]),
    ]

    sqlite, fresh = nbs.open_store(tmp_path / "copy.db"), nbs.open_store(tmp_path / "fresh.db")
    for session in ("alice", "u1/bob"):
        expected = fingerprint(source, session)
        assert len(expected) == 4
        assert fingerprint(sqlite, session) == expected
        assert fingerprint(fresh, session) == expected
    assert [(c.seq, c.parent, c.label) for c in fresh.history("alice")] == [
        (1, None, "sum"), (2, 1, "planned"), (3, 2, None), (4, 2, "branch")
    ]
    for session in ("alice", "u1/bob"):  # copies are exact: seq, time, parent, label, metadata as they were
        assert exact(fresh, session) == exact(sqlite, session) == exact(source, session)
    checked = run_json(tmp_path, "--store", "fresh.db", "check")
    assert (checked["ok"], checked["sessions"], checked["checkpoints"], checked["problems"]) == (True, 2, 8, [])


async def test_import_refuses_a_tampered_bundle_and_writes_nothing(tmp_path: Path) -> None:
    await populate(nbs.open_store(tmp_path / "s.db"), "alice")
    assert run(tmp_path, "--store", "s.db", "export", "alice", "--bundle", "-o", "b.json").returncode == 0
    path = tmp_path / "b.json"
    text = path.read_text(encoding="utf-8", errors="surrogatepass")
    path.write_text(text.replace("2+3 = 5", "2+3 = 6", 1), encoding="utf-8", errors="surrogatepass")
    result = run(tmp_path, "--store", "fresh.db", "import", "b.json")
    assert result.returncode == 3
    assert "checkpoint alice@1" in result.stderr and "checksum mismatch" in result.stderr
    assert not (tmp_path / "fresh.db").exists()


# -- check -------------------------------------------------------------------------


async def test_check_finds_and_names_a_corrupted_sqlite_checkpoint(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    await populate(store, "alice")
    await populate(store, "carol", seed=3)
    clean = run(tmp_path, "--store", "s.db", "check")
    assert clean.returncode == 0
    assert "checked 8 checkpoint(s) in 2 session(s)" in clean.stdout and "all readable" in clean.stdout

    with sqlite3.connect(tmp_path / "s.db") as db:
        changed = db.execute(
            "UPDATE nbs_checkpoints SET state = x'00ff' WHERE seq = 2 AND session = "
            "(SELECT id FROM nbs_sessions WHERE session_id = 'alice')"
        ).rowcount
    assert changed == 1

    result = run(tmp_path, "--store", "s.db", "check")
    assert result.returncode == 3
    [row] = [line for line in result.stdout.splitlines() if line.startswith("alice@")]
    assert row.split()[:2] == ["alice@2", "StoreCorruptedError"]
    assert "1 problem(s)" in result.stdout
    report = json.loads(run(tmp_path, "--store", "s.db", "--json", "check").stdout)
    assert report["ok"] is False and report["checkpoints"] == 8
    assert [(p["ref"], p["error"]) for p in report["problems"]] == [("alice@2", "StoreCorruptedError")]
    only_carol = run(tmp_path, "--store", "s.db", "check", "carol")
    assert only_carol.returncode == 0 and "checked 4 checkpoint(s) in 1 session(s)" in only_carol.stdout
    assert run(tmp_path, "--store", "s.db", "show", "alice@1").returncode == 0
    broken = run(tmp_path, "--store", "s.db", "show", "alice@2")
    assert broken.returncode == 3 and "alice@2" in broken.stderr and "Traceback" not in broken.stderr


async def test_check_finds_a_corrupted_json_store_checkpoint(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "folder")
    await populate(store, "alice")
    history_file = tmp_path / "folder" / ".nb_sessions" / "alice" / "2.json"
    if history_file.exists():
        history_file.write_bytes(b"\x00\xff garbage")
        expected = "alice@2"
    else:  # the history layout changed: the latest file is AgentScope's and always there
        (tmp_path / "folder" / "alice.json").write_bytes(b"\x00\xff garbage")
        expected = "alice@"
    result = run(tmp_path, "--store", "folder", "--json", "check")
    assert result.returncode == 3
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [p["ref"] for p in report["problems"] if p["ref"].startswith(expected)], report


# -- --json output parses, and says what the API says ----------------------------------


async def test_json_output_of_every_reading_command_parses(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    await populate(store, "alice")
    await populate(store, "u1/bob", seed=2)

    listing = run_json(tmp_path, "--store", "s.db", "ls")
    assert sorted((s["session"], s["checkpoints"], s["latest"], s["labels"]) for s in listing) == [
        ("alice", 4, 4, ["sum", "planned", "branch"]), ("u1/bob", 4, 4, ["sum", "planned", "branch"])
    ]

    shown = run_json(tmp_path, "--store", "s.db", "show", "alice@3")
    assert (shown["ref"], shown["parent"], shown["label"], shown["modules"]) == ("alice@3", "alice@2", None, ["agent", "extra"])
    frame = views.messages(store, "alice@3")
    assert shown["messages"]["total"] == len(frame) == 14
    assert shown["messages"]["by_path"] == {"agent.memory": 14}
    assert shown["messages"]["by_role"] == {"user": 3, "assistant": 7, "system": 4}
    assert shown["plans"]["total"] == 1 and shown["plans"]["current"]["name"] == "Write a report, then send it"
    assert shown["subtasks"] == {"total": 2, "by_state": {"done": 1, "in_progress": 1}}
    assert shown["tool_calls"] == {"total": 4, "dangling": 0}

    history = run_json(tmp_path, "--store", "s.db", "history", "alice")
    assert [(h["seq"], h["label"], h["parent"]) for h in history] == [
        (1, "sum", None), (2, "planned", 1), (3, None, 2), (4, "branch", 2)
    ]
    assert history[0]["metadata"]["nb_sessions_version"] == nbs.__version__

    messages = run_json(tmp_path, "--store", "s.db", "messages", "alice@3")
    assert [m["role"] for m in messages] == list(frame["role"])
    assert [m["text"] for m in messages] == list(frame["text"])
    assert messages[0]["text"] == "what is 2+3" and messages[0]["session"] == "alice"
    assert messages[0]["checkpoint"] == 3

    tasks = run_json(tmp_path, "--store", "s.db", "subtasks", "u1/bob@3")
    assert [(t["name"], t["state"]) for t in tasks] == [("Write a report", "done"), ("Send it", "in_progress")]
    assert isinstance(tasks[0]["duration"], float) and tasks[1]["finished_at"] is None

    changes = run_json(tmp_path, "--store", "s.db", "diff", "alice@1", "alice@2")
    assert (changes["a"], changes["b"], changes["empty"]) == ("alice@1", "alice@2", False)
    assert "+6 messages" in changes["summary"]
    assert [m["change"] for m in changes["messages"]] == ["added"] * 6
    assert {(s["subtask"], s["change"]) for s in changes["subtasks"]} >= {("Write a report", "added")}
    parent_diff = run_json(tmp_path, "--store", "s.db", "diff", "alice@4")
    assert (parent_diff["a"], parent_diff["b"]) == ("alice@2", "alice@4")

    exported = run(tmp_path, "--store", "s.db", "--json", "export", "alice@2", "-o", "a.json")
    assert json.loads(exported.stdout) == {
        "format": "agentscope", "ref": "alice@2", "modules": ["agent", "extra"], "file": str(tmp_path / "a.json")
    }


@pytest.mark.xfail(not hasattr(nbs.BaseStore, "search"), reason="store.search not yet available")
async def test_search_finds_messages_across_sessions(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    await populate(store, "alice")
    await populate(store, "carol", seed=3)
    hits = run_json(tmp_path, "--store", "s.db", "search", "send it")
    expected = store.search("send it")
    assert len(hits) == len(expected) > 0
    assert {h["session"] for h in hits} == {"alice", "carol"}
    only = run_json(tmp_path, "--store", "s.db", "search", "send it", "--session", "carol")
    assert {h["session"] for h in only} == {"carol"}
    table = run(tmp_path, "--store", "s.db", "search", "2+3")
    assert table.returncode == 0 and "2+3 = 5" in table.stdout
    assert run(tmp_path, "--store", "s.db", "search", "   ").returncode == 2


# -- tables for people -------------------------------------------------------------


async def test_tables_are_readable_and_terminal_safe(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    agent = ScriptedAgent(seed=5)
    await agent(Msg("user", "hello \x1b[31mred\x1b[0m\nsecond line", "user"))
    store.save("alice", agent=agent, label="hi")

    listing = run(tmp_path, "--store", "s.db", "ls")
    header, rule, row = listing.stdout.splitlines()
    assert header.split() == ["session", "checkpoints", "latest", "updated", "(UTC)", "labels"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert row.split()[:3] == ["alice", "1", "1"] and row.endswith("hi")

    shown = run(tmp_path, "--store", "s.db", "show", "alice")
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in shown.stdout.splitlines())
    assert lines["checkpoint"] == "alice@1 [hi]"
    assert lines["modules"] == "agent"
    assert lines["messages"].startswith("2 (agent.memory: 2; user 1, assistant 1)")

    table = run(tmp_path, "--store", "s.db", "messages", "alice")
    assert "\x1b" not in table.stdout
    assert "hello \\x1b[31mred\\x1b[0m ↵ second line" in table.stdout
    assert table.stdout.splitlines()[0].split() == ["position", "role", "name", "timestamp", "n_tool_calls", "text"]
    picked = run(tmp_path, "--store", "s.db", "messages", "alice", "--columns", "role,name")
    assert picked.stdout.splitlines() == ["role       name", "---------  ------", "user       user", "assistant  Friday"]
    bad = run(tmp_path, "--store", "s.db", "messages", "alice", "--columns", "nope")
    assert bad.returncode == 2 and "unknown column(s) nope" in bad.stderr
    empty = run(tmp_path, "--store", "s.db", "subtasks", "alice")
    assert empty.stdout.strip() == "no plans"


# -- stores, exit codes ----------------------------------------------------------------


def test_the_store_comes_from_flag_env_or_the_default_file(tmp_path: Path) -> None:
    for name in ("nb_sessions.db", "env.db", "flag.db", "positional"):
        nbs.open_store(tmp_path / name).save(name.split(".")[0], box=Box(1))

    def sessions(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = run(tmp_path, "--json", *args, env=env)
        assert result.returncode == 0, result.stderr
        return [s["session"] for s in json.loads(result.stdout)]

    assert sessions("ls") == ["nb_sessions"]
    assert sessions("ls", env={cli.ENV_STORE: "env.db"}) == ["env"]
    assert sessions("--store", "flag.db", "ls", env={cli.ENV_STORE: "env.db"}) == ["flag"]
    assert sessions("ls", "--store", "flag.db") == ["flag"]  # the flag works after the command too
    assert sessions("ls", "positional", env={cli.ENV_STORE: "env.db"}) == ["positional"]


async def test_exit_codes_mean_something(tmp_path: Path) -> None:
    await populate(nbs.open_store(tmp_path / "s.db"), "alice")
    cases: list[tuple[tuple[str, ...], int, str]] = [
        (("show", "alice"), 0, ""),
        (("--help",), 0, ""),
        (("show", "nobody"), 1, f"nb-sessions show: error: no session 'nobody' in {tmp_path / 's.db'}"),
        (("show", "alice@9"), 1, "has no checkpoint 'alice@9'"),
        (("history", "nobody"), 1, "no session 'nobody'"),
        (("import", "nothing.json"), 1, "nothing.json"),
        (("show", "../etc"), 2, "invalid session id '../etc'"),
        (("frobnicate",), 2, "invalid choice: 'frobnicate'"),
        (("export", "alice"), 2, "-o/--output"),
        (("export", "alice", "alice", "-o", "x.json"), 2, "exactly one REF"),
        (("prune",), 2, "--keep-last N and/or --older-than"),
        (("prune", "--keep-last", "0"), 2, "at least 1"),
        (("prune", "--older-than", "soon"), 2, "not a duration"),
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda case: run(tmp_path, "--store", "s.db", *case[0]), cases))
    for (args, status, fragment), result in zip(cases, results, strict=True):
        assert result.returncode == status, (args, result.stderr)
        assert fragment in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    missing = run(tmp_path, "--store", "absent.db", "ls")
    assert missing.returncode == 1 and "no store at absent.db" in missing.stderr
    assert not (tmp_path / "absent.db").exists()
    as_json = run(tmp_path, "--store", "s.db", "--json", "show", "nobody")
    assert as_json.returncode == 1
    assert json.loads(as_json.stderr) == {
        "error": "SessionNotFoundError", "exit_code": 1,
        "message": f"no session 'nobody' in {tmp_path / 's.db'}; `nb-sessions ls` lists those it has",
    }


# -- export, import, copy ----------------------------------------------------------------


async def test_export_writes_agentscope_format_to_a_file_or_stdout(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    await populate(store, "alice")
    expected = codec.dumps(store.get_state("alice@planned"))
    result = run(tmp_path, "--store", "s.db", "export", "alice@planned", "-o", "planned.json")
    assert result.returncode == 0
    assert result.stdout.strip() == "exported alice@2 (agent, extra) to planned.json (AgentScope JSONSession format)"
    assert (tmp_path / "planned.json").read_bytes() == expected
    piped = run(tmp_path, "--store", "s.db", "export", "alice@2", "-o", "-", text=False)
    assert piped.returncode == 0 and piped.stdout == expected
    usage = run(tmp_path, "--store", "s.db", "export", "alice@2", "--bundle", "-o", "b.json")
    assert usage.returncode == 2 and "whole sessions" in usage.stderr


async def test_import_an_agentscope_file_then_copy_refuses_to_merge(tmp_path: Path, sample_state: dict[str, Any]) -> None:
    (tmp_path / "bob.json").write_bytes(SAMPLE_FILE.read_bytes())
    first = run(tmp_path, "import", "bob.json", "--label", "original")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("imported bob.json as bob@1 (agent, notebook, custom)")
    named = run_json(tmp_path, "import", "bob.json", "u42/robert")
    assert named["imported"][0]["checkpoints"] == ["u42/robert@1"]
    store = nbs.open_store(tmp_path / "nb_sessions.db")
    assert store.get_state("bob@original") == sample_state == store.get_state("u42/robert")

    assert run(tmp_path, "copy", "nb_sessions.db", "other.db", "bob").returncode == 0
    assert [s["session"] for s in run_json(tmp_path, "ls", "other.db")] == ["bob"]
    again = run(tmp_path, "copy", "nb_sessions.db", "other.db")
    assert again.returncode == 1 and "already has session(s) bob" in again.stderr
    assert [s["session"] for s in run_json(tmp_path, "ls", "other.db")] == ["bob"]
    same = run(tmp_path, "copy", "nb_sessions.db", "nb_sessions.db")
    assert same.returncode == 2 and "same store" in same.stderr


# -- prune and vacuum ------------------------------------------------------------------


async def test_prune_dry_run_then_prune_then_vacuum(tmp_path: Path) -> None:
    store = nbs.open_store(tmp_path / "s.db")
    await populate(store, "alice")
    await populate(store, "carol", seed=3)
    dry = run_json(tmp_path, "--store", "s.db", "prune", "--keep-last", "1", "--dry-run")
    assert [(p["session"], p["removed"], p["dry_run"]) for p in dry] == [
        ("alice", ["alice@3"], True), ("carol", ["carol@3"], True)
    ]
    assert len(store.history("alice")) == 4
    real = run(tmp_path, "--store", "s.db", "prune", "alice", "--keep-last", "1", "--drop-labeled")
    assert real.returncode == 0 and "removed 3 checkpoint(s)" in real.stdout
    assert [c.seq for c in store.history("alice")] == [4]
    assert len(store.history("carol")) == 4
    vacuumed = run_json(tmp_path, "--store", "s.db", "vacuum")
    assert vacuumed["store"] == str(tmp_path / "s.db") and vacuumed["reclaimed"] >= 0
    assert run(tmp_path, "--store", "s.db", "prune", "alice@2", "--keep-last", "1").returncode == 2


# -- progress --------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_only_and_erases_itself() -> None:
    screen = _Terminal()
    with cli.Progress("copy", stream=screen, delay=0, interval=0) as bar:
        for i in range(1, 5):
            bar.update(i, 4, f"alice@{i}")
    out = screen.getvalue()
    assert "\rcopy [######..................] 1/4 alice@1" in out
    assert "\rcopy [########################] 4/4 alice@4" in out
    assert out.endswith("\r\x1b[K")
    pipe = io.StringIO()
    with cli.Progress("copy", stream=pipe, delay=0) as bar:
        bar.update(1, 1, "x")
    assert pipe.getvalue() == ""
    slow = _Terminal()
    with cli.Progress("check", stream=slow, delay=60) as bar:
        bar.update(1, 2)
    assert slow.getvalue() == ""  # short work draws nothing


async def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    await populate(nbs.open_store(tmp_path / "s.db"), "alice")
    result = run(tmp_path, "copy", "s.db", "t.db")
    assert result.returncode == 0 and result.stderr == ""


# -- in process, and the docs ------------------------------------------------------------


def test_main_returns_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--store", str(tmp_path / "none.db"), "ls"]) == 1
    assert "no store at" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nb-sessions {nbs.__version__}"
    assert cli.main([]) == 2


def test_render_table_aligns_wide_characters_and_numbers() -> None:
    text = cli.render_table(["name", "n"], [("你好", 5), ("ab", 12), (None, None)])
    assert text.split("\n") == ["name   n", "----  --", "你好   5", "ab    12", ""]


def test_every_command_is_documented_with_an_example() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    commands = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names = list(commands.choices)
    assert names == ["ls", "show", "history", "messages", "subtasks", "diff", "search", "export",
                     "import", "migrate", "copy", "prune", "du", "delete", "vacuum", "check",
                     "rekey"]
    for name in names:
        assert f"## `{name}" in docs, f"docs/cli.md has no section for {name}"
        assert re.search(rf"^\$ nb-sessions .*\b{name}\b", docs, re.MULTILINE), f"no example of {name}"
    assert cli.ENV_STORE in docs and "Exit codes" in docs


def test_migrate_saves_a_2x_checkpoint_and_reports_what_had_no_place(tmp_path: Path) -> None:
    from agentscope.state import AgentState

    store = nbs.open_store(tmp_path / "s.db")
    agent = ScriptedAgent("Friday", seed=5)
    store.save("bob", agent=agent)
    result = run(tmp_path, "--store", "s.db", "migrate", "bob", "--label", "v2")
    assert result.returncode == 0, result.stderr
    assert "now AgentState" in result.stdout and "agent._sys_prompt" in result.stdout
    new = store.checkpoint("bob")
    assert (new.seq, new.label) == (2, "v2")
    AgentState.model_validate(store.get_state(new)["agent"])
    data = run_json(tmp_path, "--store", "s.db", "migrate", "bob@1", "--to", "bob2")
    assert data["checkpoint"].endswith("bob2@1") and data["migrated"] == ["agent"]
    assert any(item["path"] == "agent.name" for item in data["leftovers"])
    again = run(tmp_path, "--store", "s.db", "migrate", "bob")
    assert again.returncode == 1 and "AgentScope 2.x" in again.stderr, "a 2.x checkpoint has nothing to migrate"
