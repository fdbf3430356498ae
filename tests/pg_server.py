"""A throwaway PostgreSQL server for the tests (or the one ``NB_SESSIONS_TEST_PG_DSN`` names).

A small fixture of our own rather than pytest-postgresql: it needs only the
server binaries, and it runs ``initdb`` and ``postgres`` as the ``postgres``
OS user when the tests run as root (Debian's initdb refuses root). It is the
tests' one PostgreSQL server: ``tests/conftest.py`` starts it once per run
(fixture ``pg_server``) and gives each test a fresh database (``pg_url``, or
``pg_dsn`` of ``tests/servers.py``, which drops it afterwards); tests that stop
and start a server take one of their own (:func:`own_server`). A missing
binary fails the test saying how to get a server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .servers import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
HOW = (
    "install PostgreSQL's server (Debian: apt-get install postgresql; scripts/test.sh does it "
    "as root), or point NB_SESSIONS_TEST_PG_DSN at a server, e.g. postgresql://user@host:5432/postgres"
)


def _bin(name: str) -> str:
    for folder in PG_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"no PostgreSQL {name} binary found: {HOW}", pytrace=False)
    return found


class Server:
    """A throwaway server in a temporary folder, on a free loopback port; stop() and start() again."""

    def __init__(self) -> None:
        self.as_user: list[str] = []
        self.folder = Path(tempfile.mkdtemp(prefix="nbs-pg-"))
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the postgres user
            if shutil.which("runuser") is None or not _has_user("postgres"):
                pytest.fail(
                    f"running as root needs a 'postgres' OS user and runuser: {HOW}", pytrace=False
                )
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")
        self.data = self.folder / "data"
        done = subprocess.run(
            [
                *self.as_user,
                _bin("initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode:
            pytest.fail(f"initdb failed:\n{done.stderr[-3000:]}\n{HOW}", pytrace=False)
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                *self.as_user,
                _bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-h",
                "127.0.0.1",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(300):
            ready = subprocess.run(
                [_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                pytest.fail(f"the test PostgreSQL server exited at start: {HOW}", pytrace=False)
            time.sleep(0.1)
        pytest.fail(
            f"the test PostgreSQL server did not become ready in 30 s: {HOW}", pytrace=False
        )

    def stop(self) -> None:
        if self.proc is not None:
            # A fast shutdown, as `pg_ctl stop` and Debian's service restart do: clients are
            # disconnected (a smart one would wait for pooled idle connections), committed work
            # is on disk.
            subprocess.run(
                [*self.as_user, _bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                check=False,
            )
            self.proc.wait(30)
            self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def own_server() -> Iterator[Server]:
    """A started server of this test's own (for tests that stop and start it)."""
    srv = Server()
    try:
        srv.start()
        yield srv
    finally:
        srv.remove()


@contextlib.contextmanager
def server() -> Iterator[str]:
    """Yield the DSN of a fresh server's ``postgres`` database; stop and remove it afterwards."""
    dsn = os.environ.get("NB_SESSIONS_TEST_PG_DSN")
    if dsn:
        yield dsn
        return
    with own_server() as srv:
        yield srv.dsn


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def fresh_database(dsn: str) -> str:
    """Create an empty database on the server of ``dsn``; return its URL (``dsn``'s query kept)."""
    import psycopg

    name = "nbs_" + uuid.uuid4().hex[:12]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(dsn)._replace(path=f"/{name}"))


def drop_database(dsn: str, url: str) -> None:
    """Drop the database of ``url`` (made by :func:`fresh_database` on ``dsn``'s server), connections and all."""
    import psycopg

    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def reader_url(url: str) -> str:
    """A new login role with SELECT on the tables of ``url``'s database as they are now; its URL."""
    import psycopg

    role = "reader_" + uuid.uuid4().hex[:8]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    head, _, tail = url.partition("://")
    return f"{head}://{role}@{tail.partition('@')[2]}"
