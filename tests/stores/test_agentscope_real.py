"""Interop with the real AgentScope 1.0.21, both directions.

AgentScope's pins clash with ours, so it lives in a venv of its own and runs
in a subprocess: ``agentscope_peer.py`` (beside this file) builds, saves and
loads real ``ReActAgent``/``PlanNotebook`` objects with AgentScope's own
``JSONSession`` and prints their ``state_dict()`` as JSON.

The interpreter is ``$NB_SESSIONS_AGENTSCOPE_PYTHON`` (``scripts/test.sh``
sets it up) or ``.venv-agentscope`` at the repository root. Without it these
tests skip locally and fail in CI.

States are compared as ``json.dumps`` text, so key order counts too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions.agent import ImageBlock, Msg, PlanNotebook, ScriptedAgent, TextBlock, Toolkit
from tests.stores.test_interop import make_as_session_db

ROOT = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("agentscope_peer.py")
AGENTSCOPE_VERSION = "1.0.21"
HOW_TO_INSTALL = (
    "Run the suite with scripts/test.sh: it installs AgentScope "
    f"{AGENTSCOPE_VERSION} into .venv-agentscope (python3 -m venv .venv-agentscope && "
    ".venv-agentscope/bin/python -m pip install -r tests/agentscope-requirements.txt) "
    "and exports NB_SESSIONS_AGENTSCOPE_PYTHON to its interpreter."
)
# The peer's tool groups, in creation order (agentscope_peer.GROUPS); its ``write`` activates travel and maps.
PEER_GROUPS = ("travel", "web", "maps")
PEER_ACTIVE = ["travel", "maps"]


# -- the AgentScope interpreter ---------------------------------------------------------


def _unavailable(why: str) -> None:
    message = f"real AgentScope interop tests need AgentScope {AGENTSCOPE_VERSION}: {why}. {HOW_TO_INSTALL}"
    pytest.fail(message, pytrace=False)  # never a silent skip: make test installs it


@pytest.fixture(scope="session")
def agentscope_python() -> str:
    """The interpreter of the AgentScope venv, checked to import AgentScope 1.0.21."""
    configured = os.environ.get("NB_SESSIONS_AGENTSCOPE_PYTHON")
    if configured:
        python = Path(configured)
        if not python.exists():
            _unavailable(f"NB_SESSIONS_AGENTSCOPE_PYTHON={configured} does not exist")
    else:
        candidates = [
            ROOT / ".venv-agentscope" / "bin" / "python",
            ROOT / ".venv-agentscope" / "Scripts" / "python.exe",
        ]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            _unavailable(
                f"NB_SESSIONS_AGENTSCOPE_PYTHON is not set and {candidates[0]} does not exist"
            )
        python = found
    probe = subprocess.run(
        [str(python), "-I", "-c", "import agentscope; print(agentscope.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        _unavailable(f"{python} cannot import agentscope:\n{probe.stderr[-2000:]}")
    if probe.stdout.strip() != AGENTSCOPE_VERSION:
        _unavailable(f"{python} has agentscope {probe.stdout.strip()}, not {AGENTSCOPE_VERSION}")
    return str(python)


def peer(python: str, *args: str, stdin: bytes | None = None) -> bytes:
    """Run agentscope_peer.py with AgentScope's interpreter; return its stdout bytes."""
    # -I: isolated, so nothing of ours (PYTHONPATH, the repo on sys.path) leaks into AgentScope's side.
    proc = subprocess.run(
        [python, "-I", str(PEER), *args], input=stdin, capture_output=True, timeout=240, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"agentscope_peer.py {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stderr.decode('utf-8', 'replace')[-4000:]}",
            pytrace=False,
        )
    return proc.stdout


def peer_states(python: str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(peer(python, *args).decode("utf-8", "surrogatepass"))
    return out


def dumps(value: Any) -> str:
    """JSON text as AgentScope writes it: equal text means equal values *and* key order."""
    return json.dumps(value, ensure_ascii=False)


def encode(value: Any) -> bytes:
    """What AgentScope's JSONSession writes for ``value`` (``ensure_ascii=False``, surrogatepass)."""
    return dumps(value).encode("utf-8", "surrogatepass")


def decode(data: bytes) -> Any:
    return json.loads(data.decode("utf-8", "surrogatepass"))


# -- our side ---------------------------------------------------------------------------


def grouped_toolkit(*active: str) -> Toolkit:
    """A toolkit with the peer's groups, so a strict load accepts the active groups AgentScope saved."""
    toolkit = Toolkit()
    for name in PEER_GROUPS:
        toolkit.create_tool_group(name, f"The {name} tools.")

    def book_trip(city: str, nights: int = 1) -> str:
        """Book a trip to a city.

        Args:
            city (str): The destination.
            nights (int): How many nights to stay.
        """
        return f"Booked {nights} night(s) in {city}."

    toolkit.register_tool_function(book_trip, group_name="travel")
    if active:
        toolkit.update_tool_groups(list(active), True)
    return toolkit


def fresh_agent() -> ScriptedAgent:
    """Our counterpart of the peer's agent: named Friday, same tool groups, a plan notebook."""
    return ScriptedAgent("Friday", seed=1, toolkit=grouped_toolkit())


async def talked_agent() -> ScriptedAgent:
    """Our ScriptedAgent after a conversation with tools, plans, marks, media and non-ASCII text."""
    agent = ScriptedAgent("Friday", seed=42, toolkit=grouped_toolkit(*PEER_ACTIVE))
    for text in (
        "hello",
        "what is (2 + 3) * 4?",
        "weather in Zürich",
        "plan to stretch, warm up",
        "next",
        "next",  # finishes the warm-up plan: it moves to the historical plans as done
        "plan to pick dates, book the hôtel in 東京, then pack 🧳",
        "next 14–18 May",
    ):
        await agent(Msg("Bob", text, "user"))
    await agent.memory.add(
        Msg(
            "Bob",
            [
                TextBlock(type="text", text="Here is the hotel I like:"),
                ImageBlock(
                    type="image", source={"type": "url", "url": "https://example.com/hôtel.png"}
                ),
            ],
            "user",
            metadata={"source": "upload", "sizes": [640, 480]},
        ),
        marks=["important", "media"],
    )
    await agent.memory.update_messages_mark("hint", msg_ids=[agent.memory.content[1][0].id])
    await agent.memory.update_compressed_summary("Bob plans a trip (摘要 ✈️).")
    return agent


def our_states(agent: ScriptedAgent) -> dict[str, Any]:
    assert agent.plan_notebook is not None
    return {"agent": agent.state_dict(), "notebook": agent.plan_notebook.state_dict()}


def assert_same_states(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert list(ours) == list(theirs)
    for name in ours:
        assert dumps(ours[name]) == dumps(theirs[name]), f"module {name!r} differs"


# -- AgentScope writes, nb_sessions reads ---------------------------------------------------


@pytest.fixture(scope="module")
def written_by_agentscope(
    agentscope_python: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A folder of AgentScope JSONSession files (``u42_bob.json``, ``alice.json``), and the states AgentScope printed."""
    folder = tmp_path_factory.mktemp("agentscope") / "sessions"
    printed = {
        "u42_bob": peer_states(agentscope_python, "write", str(folder), "bob", "--user", "u42"),
        "alice": peer_states(agentscope_python, "write", str(folder), "alice"),
    }
    return folder, printed


async def test_agentscope_files_open_as_they_are(
    written_by_agentscope: tuple[Path, dict[str, Any]],
) -> None:
    folder, printed = written_by_agentscope
    before = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
    assert sorted(before) == ["alice.json", "u42_bob.json"]
    store = nbs.open_store(folder)
    infos = {i.session: i for i in await store.asessions()}
    # A file name cannot tell "u42_bob.json" (user u42) from a session named "u42_bob":
    # the listing shows the file's stem; "u42/bob" names the same file.
    assert {s: i.checkpoints for s, i in infos.items()} == {"u42_bob": 1, "alice": 1}
    assert infos["alice"].user_id == ""
    [cp] = await store.ahistory("alice")
    assert cp.modules == ("agent", "notebook")
    for ref, name in (("u42_bob", "u42_bob"), ("u42/bob", "u42_bob"), ("alice", "alice")):
        assert_same_states(await store.aget_state(ref), printed[name])
    # Listing and reading change nothing on disk.
    assert {
        p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")
    } == before


@pytest.mark.parametrize(("session", "user_id"), [("bob", "u42"), ("alice", "")])
async def test_agentscope_state_loads_strictly_into_our_classes(
    written_by_agentscope: tuple[Path, dict[str, Any]], session: str, user_id: str
) -> None:
    folder, printed = written_by_agentscope
    expected = printed[f"{user_id}_{session}" if user_id else session]
    agent, notebook = fresh_agent(), PlanNotebook()
    # JSONSession.load_session_state loads strictly: every key at every depth must match.
    await nbs.JSONSession(folder).load_session_state(
        session, user_id=user_id, allow_not_exist=False, agent=agent, notebook=notebook
    )
    # Our state_dict() is AgentScope's, key for key and in the same order.
    assert dumps(agent.state_dict()) == dumps(expected["agent"])
    assert dumps(notebook.state_dict()) == dumps(expected["notebook"])

    # ...and the loaded objects work as AgentScope's did.
    assert agent.name == "Friday"
    assert agent.sys_prompt.endswith("请用用户的语言回答。")
    assert agent.toolkit.active_groups() == PEER_ACTIVE
    assert "book_trip" in {s["function"]["name"] for s in agent.toolkit.get_json_schemas()}
    important = await agent.memory.get_memory(mark="important", prepend_summary=False)
    assert [m.name for m in important] == ["Bob", "Bob"]
    assert important[1].get_content_blocks("image")[0]["source"] == {
        "type": "url",
        "url": "https://example.com/hôtel.png",
    }
    everything = await agent.memory.get_memory()
    assert everything[0].content == "Bob wants a trip to Zürich (摘要)."  # the summary, prepended
    [call] = everything[2].get_content_blocks("tool_use")
    assert call["raw_input"] == '{"city": "Zürich", "nights": 4}'
    assert everything[-1].invocation_id is None  # AgentScope's file never holds it
    plan = notebook.current_plan
    assert plan is not None and plan.name == "Trip to Zürich"
    assert [s.state for s in plan.subtasks] == ["done", "in_progress", "todo"]
    assert [p.name for p in await notebook.storage.get_plans()] == ["Warm-up"]


async def test_a_conversation_agentscope_started_goes_on_here_and_back(
    agentscope_python: str, written_by_agentscope: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    source, _ = written_by_agentscope
    folder = tmp_path / "sessions"
    shutil.copytree(source, folder)
    agent = fresh_agent()
    session = nbs.JSONSession(folder)
    await session.load_session_state("bob", user_id="u42", allow_not_exist=False, agent=agent)
    assert agent.plan_notebook is not None
    # Our plan tools work on the plan AgentScope made.
    await agent(Msg("Bob", "next: the hôtel is booked", "user"))
    plan = agent.plan_notebook.current_plan
    assert plan is not None and [s.state for s in plan.subtasks] == ["done", "done", "in_progress"]
    await session.save_session_state(
        "bob", user_id="u42", agent=agent, notebook=agent.plan_notebook
    )
    # The first save kept AgentScope's file in the history, and the listing now knows its user.
    assert [c.seq for c in await session.store.ahistory("u42/bob")] == [1, 2]
    assert sorted(i.session for i in await session.store.asessions()) == ["alice", "u42/bob"]
    theirs = peer_states(agentscope_python, "load", str(folder), "bob", "--user", "u42")
    assert_same_states(our_states(agent), theirs)


# -- nb_sessions writes, AgentScope reads ---------------------------------------------------


async def test_agentscope_loads_what_our_json_session_writes(
    agentscope_python: str, tmp_path: Path
) -> None:
    agent = await talked_agent()
    assert agent.plan_notebook is not None
    await nbs.JSONSession(tmp_path).save_session_state(
        "bob", user_id="u42", agent=agent, notebook=agent.plan_notebook
    )
    ours = our_states(agent)
    # The conversation really has what we want AgentScope to read.
    kinds = {
        b["type"] for m, _ in agent.memory.content if isinstance(m.content, list) for b in m.content
    }
    assert kinds == {"text", "thinking", "tool_use", "tool_result", "image"}
    assert ours["notebook"]["current_plan"]["state"] == "in_progress"
    assert [p["state"] for p in ours["notebook"]["storage"]["plans"].values()] == ["done"]
    assert ours["agent"]["toolkit"] == {"active_groups": PEER_ACTIVE}

    theirs = peer_states(agentscope_python, "load", str(tmp_path), "bob", "--user", "u42")
    assert_same_states(ours, theirs)


async def test_message_keys_agentscope_does_not_write_are_all_it_drops(
    agentscope_python: str, tmp_path: Path
) -> None:
    # Documented differences: our Msg writes invocation_id when it is set, and keeps
    # message keys it does not know (say, from a newer AgentScope). AgentScope's
    # Msg.from_dict reads invocation_id but its to_dict() writes neither, so both are
    # gone after a round trip through AgentScope. Everything else survives.
    agent = fresh_agent()
    await agent.memory.add(Msg("Bob", "hi", "user", invocation_id="inv-7"))
    await agent.memory.add(
        Msg.from_dict(
            {
                "id": "m2",
                "name": "Friday",
                "role": "assistant",
                "content": "hello",
                "metadata": {},
                "timestamp": "2025-01-01 09:00:00.000",
                "usage": {"input_tokens": 3},
            }
        )
    )
    await nbs.JSONSession(tmp_path).save_session_state(
        "s", agent=agent, notebook=agent.plan_notebook
    )
    ours = our_states(agent)
    [first, _], [second, _] = ours["agent"]["memory"]["content"]
    assert first["invocation_id"] == "inv-7"
    assert second["usage"] == {"input_tokens": 3}
    theirs = peer_states(agentscope_python, "load", str(tmp_path), "s")
    del first["invocation_id"], second["usage"]
    assert_same_states(ours, theirs)


async def test_a_session_id_with_an_at_sign_loads_like_agentscope(
    agentscope_python: str, tmp_path: Path
) -> None:
    printed = peer_states(agentscope_python, "write", str(tmp_path), "team@example.com")
    assert (tmp_path / "team@example.com.json").exists()
    agent, notebook = fresh_agent(), PlanNotebook()
    await nbs.JSONSession(tmp_path).load_session_state(
        "team@example.com", agent=agent, notebook=notebook
    )
    assert dumps(agent.state_dict()) == dumps(printed["agent"])


@pytest.mark.parametrize("user_id", ["", "u42"])
async def test_our_file_is_what_agentscope_would_have_written(
    agentscope_python: str, tmp_path: Path, user_id: str
) -> None:
    agent = await talked_agent()
    # A lone surrogate: AgentScope writes it with errors="surrogatepass", and so must we.
    await agent.memory.add(Msg("Bob", "broken emoji: \ud83d", "user", id="lone-surrogate"))
    assert agent.plan_notebook is not None
    await nbs.JSONSession(tmp_path).save_session_state(
        "bob", user_id=user_id, agent=agent, notebook=agent.plan_notebook
    )
    written = (tmp_path / (f"{user_id}_bob.json" if user_id else "bob.json")).read_bytes()
    expected = peer(agentscope_python, "expected-bytes", stdin=encode(our_states(agent)))
    # Parsed, the files are identical, key order included. (Byte for byte they may
    # differ only in insignificant whitespace: our fast encoder writes compact JSON,
    # stdlib json writes ", " and ": "; json.loads, AgentScope's reader, cannot tell.)
    assert dumps(decode(written)) == dumps(decode(expected))
    assert decode(written) == decode(expected)
    assert "\ud83d" in dumps(decode(written))
    assert "東京".encode() in written  # ensure_ascii=False, as AgentScope writes
    # And AgentScope loads it unchanged.
    theirs = peer_states(
        agentscope_python, "load", str(tmp_path), "bob", *(["--user", user_id] if user_id else [])
    )
    assert_same_states(our_states(agent), theirs)


# -- SQLite ---------------------------------------------------------------------------------


async def test_state_saved_by_our_sqlite_session_loads_into_agentscope(
    agentscope_python: str, tmp_path: Path
) -> None:
    # AgentScope 1.0.21 has no SQLite session class (only an example with an
    # ``as_session`` table), so the state goes to AgentScope as the JSON file its
    # JSONSession reads.
    agent = await talked_agent()
    session = nbs.SQLiteSession(tmp_path / "app.db")
    await session.save_session_state(
        "bob", user_id="u42", agent=agent, notebook=agent.plan_notebook
    )
    stored = await session.store.aget_state("bob", user_id="u42")
    assert_same_states(stored, our_states(agent))

    restored, restored_notebook = fresh_agent(), PlanNotebook()
    restored.toolkit.update_tool_groups(["web"], True)  # the load must switch it off again
    await session.load_session_state(
        "bob", user_id="u42", allow_not_exist=False, agent=restored, notebook=restored_notebook
    )
    assert_same_states(
        our_states(agent),
        {"agent": restored.state_dict(), "notebook": restored_notebook.state_dict()},
    )

    folder = tmp_path / "handover"
    folder.mkdir()
    (folder / "u42_bob.json").write_bytes(encode(stored))
    theirs = peer_states(agentscope_python, "load", str(folder), "bob", "--user", "u42")
    assert_same_states(our_states(agent), theirs)


async def test_agentscope_state_in_an_as_session_table_loads_into_our_classes(
    written_by_agentscope: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, printed = written_by_agentscope
    path = tmp_path / "session.db"
    make_as_session_db(path, {"bob": printed["u42_bob"]})
    store = nbs.open_store(path)
    assert [i.session for i in await store.asessions()] == ["bob"]
    agent, notebook = fresh_agent(), PlanNotebook()
    await store.aload("bob", strict=True, agent=agent, notebook=notebook)
    assert_same_states(
        {"agent": agent.state_dict(), "notebook": notebook.state_dict()}, printed["u42_bob"]
    )
