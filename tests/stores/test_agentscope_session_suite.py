"""AgentScope 1.0.21's own session tests, run on our drop-ins and on AgentScope itself.

AgentScope v1.0.21's ``tests/session_test.py`` (``test_session_base``) and the
backend-independent tests of ``tests/tablestore_session_test.py`` (round trip
with a user id, load before save with and without ``allow_not_exist``, the
load-save-load lifecycle, a later save overwriting, loading a subset of the
saved modules) are the scenarios of ``session_scenarios.py``. Each side runs
them on a fresh session; the outcomes (states, exception kind, files) must match.
Not mirrored, because they test what ``SessionBase`` does not have:
Tablestore's ``close()``/``async with``/``"default"`` user, Redis' connection
pool, and the INFO log lines on AgentScope's ``as`` logger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.sessions import StoreSession
from nb_sessions.state import StateModule
from tests.stores.session_scenarios import json_files, run_all
from tests.stores.test_agentscope_real import agentscope_python as agentscope_python

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "round_trip": [["Friday", "A helpful assistant."], ["Bob", "A helpful assistant."]],
    "round_trip_user": [["Friday", "A helpful assistant."]],
    "missing_allowed": [None, [["Untouched", "A helpful assistant."]]],
    "missing_refused": ["ValueError", [["Untouched", "A helpful assistant."]]],
    "lifecycle": [[["Friday", "A helpful assistant."]], [["Friday", "A helpful assistant."]]],
    "overwrite": [["UpdatedName", "Updated prompt"]],
    "partial": [["Agent1", "A helpful assistant."], ["Extra", "A helpful assistant."]],
}

_PEER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from agentscope.module import StateModule
from agentscope.session import JSONSession
from tests.stores.session_scenarios import json_files, run_all
out = run_all(lambda: JSONSession(save_dir=sys.argv[2]), StateModule)
print(json.dumps({"outcomes": out, "files": json_files(sys.argv[2])}))
"""


def agentscope_outcomes(python: str, folder: Path) -> dict[str, Any]:
    """Run the scenarios on AgentScope 1.0.21's own JSONSession (its venv, isolated)."""
    proc = subprocess.run(
        [python, "-I", "-c", _PEER, str(ROOT), str(folder)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"AgentScope's side failed:\n{proc.stderr[-4000:]}", pytrace=False)
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_scenarios_expect_what_agentscope_does(agentscope_python: str, tmp_path: Path) -> None:
    """AgentScope 1.0.21's JSONSession gives EXPECTED for every mirrored test (the reference side)."""
    assert agentscope_outcomes(agentscope_python, tmp_path)["outcomes"] == EXPECTED


def test_json_session_matches_agentscope_outcomes_and_files(
    agentscope_python: str,
    tmp_path: Path,
) -> None:
    """session_test/tablestore_session_test on nbs.JSONSession: same outcomes, same .json files."""
    theirs = agentscope_outcomes(agentscope_python, tmp_path / "agentscope")
    ours_dir = tmp_path / "ours"
    ours = run_all(lambda: nbs.JSONSession(save_dir=ours_dir), StateModule)
    assert ours == theirs["outcomes"]
    assert json_files(str(ours_dir)) == theirs["files"]
    assert "user_1_nonexistent.json" not in theirs["files"]  # a refused/skipped load writes nothing


def test_sqlite_session_gives_agentscope_outcomes(tmp_path: Path) -> None:
    """The same mirrored tests on nbs.SQLiteSession: AgentScope's outcomes, nothing beside the file."""
    assert run_all(lambda: nbs.SQLiteSession(tmp_path / "s.db"), StateModule) == EXPECTED
    assert {p.name for p in tmp_path.iterdir()} <= {"s.db", "s.db-wal", "s.db-shm"}


def test_postgres_session_gives_agentscope_outcomes(pg_url: str) -> None:
    """The same mirrored tests on nbs.PostgresSession (a fresh database): AgentScope's outcomes."""
    assert run_all(lambda: nbs.PostgresSession(pg_url), StateModule) == EXPECTED


def test_refused_load_raises_a_package_error_that_is_a_value_error(tmp_path: Path) -> None:
    """tablestore test_load_before_save_raises_when_not_allowed: ValueError, and an NbSessionsError naming the session."""
    session = nbs.JSONSession(save_dir=tmp_path)
    with pytest.raises(ValueError, match="nonexistent") as info:
        asyncio.run(
            session.load_session_state("nonexistent", user_id="user_1", allow_not_exist=False)
        )
    assert isinstance(info.value, nbs.NbSessionsError)


@pytest.mark.parametrize("kind", ["json", "sqlite"])
def test_skipped_load_is_logged_on_the_nb_sessions_logger(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tablestore test_load_before_save_session_not_exist: an INFO line saying the session does not exist.

    A documented difference (README, AgentScope compatibility): AgentScope logs on
    its ``as`` logger; the drop-ins log on ``nb_sessions``, the package's own.
    """
    session: StoreSession = (
        nbs.JSONSession(save_dir=tmp_path)
        if kind == "json"
        else nbs.SQLiteSession(tmp_path / "s.db")
    )
    caplog.set_level(logging.INFO)
    asyncio.run(session.load_session_state("nonexistent", user_id="user_1"))
    skipped = [r for r in caplog.records if "does not exist" in r.getMessage()]
    assert [(r.name, r.levelno) for r in skipped] == [("nb_sessions", logging.INFO)]
    assert "user_1/nonexistent" in skipped[0].getMessage()
    assert not [r for r in caplog.records if r.name == "as"]
