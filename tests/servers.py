"""Throwaway database servers for tests: a real ``redis-server`` and a real PostgreSQL.

Each starts from Debian's binaries in a temporary folder on a free loopback
port and is stopped at the end of the test session. A missing binary fails
the test saying which package to install; nothing is skipped.

``NB_SESSIONS_TEST_PG_DSN`` points the PostgreSQL fixture at an existing
server instead (each test still gets a fresh database on it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["pg_dsn", "pg_server", "redis_server", "redis_url"]


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


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None
    )
    if found is None:
        pytest.fail(
            f"these tests need PostgreSQL's {name}: install Debian's package (apt-get install "
            "postgresql), or set NB_SESSIONS_TEST_PG_DSN to a server you run",
            pytrace=False,
        )
    return str(found)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A DSN of a PostgreSQL server: ``$NB_SESSIONS_TEST_PG_DSN``, else a throwaway one."""
    configured = os.environ.get("NB_SESSIONS_TEST_PG_DSN")
    if configured:
        yield configured
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    # Its own folder under the system temp dir: pytest's temp folders are private to root,
    # and the server runs as the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="nbs-pg-"))
    data, log = folder / "data", folder / "pg.log"
    port = free_port()
    as_postgres: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                "running as root needs a 'postgres' OS user (apt-get install postgresql)",
                pytrace=False,
            )
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_postgres = {"user": user.pw_uid, "group": user.pw_gid}

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, text=True, check=False, **as_postgres)
        if done.returncode:
            pytest.fail(
                f"{' '.join(args)} failed:\n{done.stderr[-3000:]}\n{_tail(log)}", pytrace=False
            )

    try:
        run(initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
        run(
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "start",
            "-o",
            f"-p {port} -h 127.0.0.1 -k {folder} -F",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            subprocess.run(
                [pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                check=False,
                capture_output=True,
                **as_postgres,
            )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """The DSN of a fresh, empty database on the PostgreSQL server (dropped afterwards)."""
    import psycopg

    name = f"nbs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    yield urllib.parse.urlunsplit(urllib.parse.urlsplit(pg_server)._replace(path=f"/{name}"))
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
