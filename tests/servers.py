"""Throwaway database servers for tests: a real ``redis-server`` and a real PostgreSQL.

Each starts from Debian's binaries in a temporary folder on a free loopback
port and is stopped at the end of the test session. A missing binary fails
the test saying which package to install; nothing is skipped.

The PostgreSQL server is ``tests/pg_server.py``'s (``NB_SESSIONS_TEST_PG_DSN``
points it at an existing server instead); ``pg_dsn`` here gives each test a
fresh database on it, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["free_port", "pg_dsn", "redis_server", "redis_url"]


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    # Polls until the server accepts connections; the deadline only bounds a broken start.
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(
                f"{what} exited with {proc.returncode} at start:\n{_tail(log)}", pytrace=False
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not accept connections on port {port}:\n{_tail(log)}", pytrace=False)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


# -- Redis ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A throwaway ``redis-server`` (no persistence) on a free loopback port; yields the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "these tests need a real Redis: install Debian's package (apt-get install redis-server); "
            "scripts/test.sh does so on a fresh machine",
            pytrace=False,
        )
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = folder / "redis.log"
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(log),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, "redis-server", log)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def redis_url(redis_server: int) -> str:
    """``redis://127.0.0.1:PORT/0`` on the shared server, emptied before each test."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server)
    client.flushall()
    client.close()
    return f"redis://127.0.0.1:{redis_server}/0"


# -- PostgreSQL ----------------------------------------------------------------------
# The server itself is tests/pg_server.py's, as the session fixture ``pg_server`` of
# tests/conftest.py (NB_SESSIONS_TEST_PG_DSN names an existing one instead).


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """The DSN of a fresh, empty database on the PostgreSQL server (dropped afterwards)."""
    from . import pg_server as pg_server_module

    url = pg_server_module.fresh_database(pg_server)
    yield url
    pg_server_module.drop_database(pg_server, url)
