"""Shared fixtures: stores of every kind, small Stateful objects, the AgentScope sample."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.state import StateModule

from . import pg_server as pg_server_module

SAMPLES = Path(__file__).resolve().parent / "data"
SAMPLE_FILE = SAMPLES / "agentscope_1.0.21_u42_bob.json"


class Box(StateModule):
    """A tiny module: one registered attribute holding any JSON value, and an optional child."""

    def __init__(self, value: Any = None, child: Box | None = None) -> None:
        super().__init__()
        if child is not None:
            self.child = child
        self.value = value
        self.register_state("value")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """One throwaway PostgreSQL server per test run (or NB_SESSIONS_TEST_PG_DSN's): its DSN."""
    with pg_server_module.server() as dsn:
        yield dsn


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A fresh, empty database on the test server."""
    return pg_server_module.fresh_database(pg_server)


@pytest.fixture(
    params=["sqlite", "json", "postgres", "sqlite-encrypted", "json-encrypted", "postgres-encrypted"]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> nbs.BaseStore:
    """A fresh store of each kind, plain and encrypted at rest."""
    kind, _, encrypted = str(request.param).partition("-")
    path: Path | str = tmp_path / ("store.db" if kind == "sqlite" else "store")
    if kind == "postgres":
        path = request.getfixturevalue("pg_url")
    if not encrypted:
        return nbs.open_store(path)
    # Tests that reopen the store by its location alone get the key as a user would: from the environment.
    request.getfixturevalue("monkeypatch").setenv("NB_SESSIONS_KEY", TEST_KEY)
    return nbs.open_store(path, key=TEST_KEY)


#: A raw 32-byte key for the encrypted store fixtures (base64 text form).
TEST_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


@pytest.fixture
def sample_state() -> dict[str, Any]:
    """The real AgentScope 1.0.21 file, parsed."""
    return json.loads(SAMPLE_FILE.read_text(encoding="utf-8"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="also run the long versions of the reliability and property tests "
        "(the same as NB_SESSIONS_LONG=1; tens of minutes)",
    )

