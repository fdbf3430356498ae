"""Privacy: stores are readable by their owner only, and a redactor keeps secrets off the disk."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.agent import InMemoryMemory, Msg, ScriptedAgent
from nb_sessions.redact import DEFAULT_SECRET_KEYS, KeyRedactor, redact_keys
from nb_sessions.state import StateModule
from tests.reliability._states import Box, make_modules
from tests.reliability.conftest import Figures

KINDS = ["sqlite", "json"]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): oct(stat.S_IMODE(p.lstat().st_mode)) for p in root.rglob("*")}


@pytest.mark.parametrize("mask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_sqlite_db_wal_and_shm_are_owner_only(mask: int, tmp_path: Path, figures: Figures) -> None:
    path = tmp_path / "store.db"
    with umask(mask):
        store = nbs.open_store(path)
        store.save("s", **make_modules("small", "p", 1))
        reader = sqlite3.connect(path)  # keeps -wal and -shm in place while the store writes again
        try:
            reader.execute("SELECT count(*) FROM nbs_checkpoints").fetchone()
            store.save("s", **make_modules("small", "p", 2))
            found = modes(tmp_path)
        finally:
            reader.close()
    assert set(found) == {"store.db", "store.db-wal", "store.db-shm"}, found
    assert set(found.values()) == {"0o600"}, found
    figures.record(f"umask {mask:03o}", files=len(found), modes=sorted(set(found.values())))


def json_store_under_umask(root: Path, mask: int) -> Path:
    """A JSON store written under ``mask`` with every kind of write: save, user, fork, label, delete."""
    with umask(mask):
        store = nbs.open_store(root / "store")
        for n in range(3):
            store.save("s", **make_modules("small", "p", n), label=f"l{n}")
        store.save("t", user_id="u", box=Box(1))
        store.fork("s@2", "f")
        store.label("s@1", None)
        store.delete("s@3")
    return root / "store"


def loose_paths(root: Path) -> dict[str, str]:
    """Paths under ``root`` that are not owner-only (folders 0700, files 0600)."""
    return {
        name: mode
        for name, mode in modes(root).items()
        if mode != ("0o700" if (root / name).is_dir() else "0o600")
    }


#: The store's hidden folder (.nb_sessions/ and its lock folder), checked apart below.
HIDDEN = "store/.nb_sessions"
@pytest.mark.parametrize("mask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_json_store_files_and_folders_are_owner_only(
    mask: int, tmp_path: Path, figures: Figures
) -> None:
    json_store_under_umask(tmp_path, mask)
    found = modes(tmp_path)
    loose = loose_paths(tmp_path)
    loose.pop(HIDDEN, None)  # see test_json_store_hidden_folder_is_owner_only
    assert loose == {}, f"not owner-only: {loose}"
    figures.record(f"umask {mask:03o}", paths=len(found), loose=0)


@pytest.mark.parametrize("mask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_json_store_hidden_folder_is_owner_only(mask: int, tmp_path: Path) -> None:
    json_store_under_umask(tmp_path, mask)
    assert modes(tmp_path)[HIDDEN] == "0o700"


# -- redaction ------------------------------------------------------------------------

SECRETS = {
    "tool input": "sk-tool-input-0001",
    "message metadata": "Bearer abc.def.0002",
    "nested config": "sk-nested-config-0003",
    "list of headers": "hdr-secret-0004",
    "password": "hunter2-0005",
    "token": "tok-0006",
    "secret": "shh-0007",
}


class Config(StateModule):
    """A config module with secrets at several depths."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = {
            "llm": {
                "model": "gpt",
                "api_key": SECRETS["nested config"],
                "headers": [{"Authorization": SECRETS["list of headers"]}, {"x": 1}],
            },
            "password": SECRETS["password"],
            "Token": SECRETS["token"],
            "client-secret": None,
            "SECRET": SECRETS["secret"],
            "tokens_used": 17,
        }
        self.register_state("settings")


def agent_with_secrets() -> ScriptedAgent:
    agent = ScriptedAgent(seed=2)

    async def talk() -> None:
        await agent(Msg("user", "what is 6*7", "user"))

    asyncio.run(talk())
    agent.memory.content.append(
        (
            Msg(
                "Friday",
                [
                    {
                        "type": "tool_use",
                        "id": "c9",
                        "name": "http",
                        "input": {"url": "https://x", "api_key": SECRETS["tool input"]},
                    }
                ],
                "assistant",
                metadata={"authorization": SECRETS["message metadata"]},
            ),
            [],
        )
    )
    return agent


def disk_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("kind", KINDS)
def test_secrets_never_reach_the_disk_with_redact_keys(
    kind: str, tmp_path: Path, figures: Figures
) -> None:
    area = tmp_path / "area"
    area.mkdir()
    path = area / ("store.db" if kind == "sqlite" else "store")
    store = nbs.open_store(path, redact=redact_keys())
    agent, config = agent_with_secrets(), Config()
    live_before = copy.deepcopy((agent.state_dict(), config.state_dict()))
    reader = sqlite3.connect(path) if kind == "sqlite" else None
    try:
        store.save("s", agent=agent, config=config, label="one")
        if reader is not None:
            reader.execute("PRAGMA journal_mode").fetchone()  # hold the WAL open: scan it too
        store.save("s", agent=agent, config=config)
        store.fork("s@one", "copy")
        on_disk = disk_bytes(area)
    finally:
        if reader is not None:
            reader.close()
    on_disk += disk_bytes(area)
    leaked = [where for where, secret in SECRETS.items() if secret.encode() in on_disk]
    assert leaked == [], f"secrets written to disk: {leaked}"
    assert (agent.state_dict(), config.state_dict()) == live_before, (
        "redaction changed the live objects"
    )
    saved = store.get_state("s")
    settings = saved["config"]["settings"]
    assert settings["llm"]["api_key"] == "[redacted]" and settings["llm"]["model"] == "gpt"
    assert settings["llm"]["headers"] == [{"Authorization": "[redacted]"}, {"x": 1}]
    assert (settings["password"], settings["Token"], settings["SECRET"]) == ("[redacted]",) * 3
    assert settings["client-secret"] is None and settings["tokens_used"] == 17
    last = saved["agent"]["memory"]["content"][-1][0]
    assert last["metadata"] == {"authorization": "[redacted]"}
    assert last["content"][0]["input"] == {"url": "https://x", "api_key": "[redacted]"}
    # What is not a secret is saved as it was.
    assert saved["agent"]["memory"]["content"][:-1] == live_before[0]["memory"]["content"][:-1]
    figures.record(kind, secrets=len(SECRETS), leaked=0, live_objects_changed=0)


def test_an_in_place_redactor_cannot_change_the_live_agent(tmp_path: Path) -> None:
    """A redactor that edits its input in place gets a copy (it once stripped the live agent)."""

    def in_place(name: str, state: dict[str, Any]) -> dict[str, Any]:
        for item in state.get("content", []):
            item[0]["metadata"].pop("authorization", None)
        return state

    memory = InMemoryMemory()
    memory.content = [(Msg("a", "hi", "assistant", metadata={"authorization": "Bearer x"}), [])]
    store = nbs.open_store(tmp_path / "r.db", redact=in_place)
    store.save("s", memory=memory)
    assert store.get_state("s")["memory"]["content"][0][0]["metadata"] == {}
    assert memory.content[0][0].metadata == {"authorization": "Bearer x"}


# -- redact_keys itself ---------------------------------------------------------------------


def test_redact_keys_walks_everything_without_touching_the_input() -> None:
    state: dict[str, Any] = {
        "API-Key": "a",
        "nested": [{"token": "b", "keep": ("t", {"Password": "c"})}],
        "secret": None,
        "authorization": {"scheme": "Bearer", "value": "d"},
        "other": {"api_keys": "kept"},
    }
    frozen = copy.deepcopy(state)
    out = redact_keys()("m", state)
    assert state == frozen
    assert out == {
        "API-Key": "[redacted]",
        "nested": [{"token": "[redacted]", "keep": ["t", {"Password": "[redacted]"}]}],
        "secret": None,
        "authorization": "[redacted]",
        "other": {"api_keys": "kept"},
    }
    ids_in = {id(x) for x in _containers(state)}
    assert ids_in.isdisjoint(id(x) for x in _containers(out)), (
        "the output shares containers with the input"
    )


def _containers(value: Any) -> list[Any]:
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            out.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return out


def test_redact_keys_options_and_depth() -> None:
    custom = redact_keys(("cookie", "X-Session"), replacement=None)
    assert custom("m", {"Cookie": "c", "x_session": "s", "api_key": "k"}) == {
        "Cookie": None,
        "x_session": None,
        "api_key": "k",
    }
    assert redact_keys("api_key")("m", {"api_key": 1, "a": 2}) == {"api_key": "[redacted]", "a": 2}
    deep: Any = {"api_key": "k"}
    for _ in range(20_000):
        deep = {"d": [deep]}
    out = redact_keys()("m", deep)
    for _ in range(20_000):
        out = out["d"][0]
    assert out == {"api_key": "[redacted]"}
    assert isinstance(redact_keys(), KeyRedactor) and "api_key" in repr(redact_keys())
    assert set(DEFAULT_SECRET_KEYS) == {"api_key", "authorization", "password", "token", "secret"}
    with pytest.raises(TypeError):
        redact_keys(("ok", ""))
