"""Bundles and copies: whole histories move between stores and files, exactly."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

import nb_sessions as nbs
from nb_sessions import bundle, codec
from nb_sessions.agent import Msg, ScriptedAgent
from nb_sessions.errors import (
    ConflictError,
    InvalidIdError,
    NbSessionsError,
    SessionNotFoundError,
    StoreCorruptedError,
)
from tests.conftest import SAMPLE_FILE, Box

#: Values AgentScope's stdlib json writes and orjson would refuse or change.
TRICKY: dict[str, Any] = {
    "nan": math.nan,
    "inf": -math.inf,
    "big": 2**70,
    "lone": "a lone \udc80 surrogate",
    "cjk": "你好, Grüße",
    "deep": [[[[[[[[[[[[{"x": 1}]]]]]]]]]]]],
}


async def populate(store: nbs.BaseStore, session: str = "alice", *, seed: int = 1) -> None:
    """Four checkpoints of a ScriptedAgent conversation, one a branch from @2, plus a module of TRICKY values.

    @1 sum (label), @2 planned (label), @3 unlabelled (parent 2), @4 branch (label, parent 2).
    """
    agent = ScriptedAgent(seed=seed)
    extra = Box(dict(TRICKY))
    await agent(Msg("user", "what is 2+3", "user"))
    store.save(session, agent=agent, extra=extra, label="sum")
    await agent(Msg("user", "plan write a report, then send it", "user"))
    store.save(session, agent=agent, extra=extra, label="planned")
    await agent(Msg("user", "next", "user"))
    store.save(session, agent=agent, extra=extra)
    store.load(f"{session}@2", agent=agent, extra=extra)
    await agent(Msg("user", "hello", "user"))
    store.save(session, agent=agent, extra=extra, label="branch")


def fingerprint(store: nbs.BaseStore, session: str) -> list[tuple[Any, ...]]:
    """Per checkpoint, oldest first: label, modules, parent's position, and the exact state bytes."""
    history = store.history(session)
    position = {cp.seq: i for i, cp in enumerate(history)}
    return [
        (cp.label, cp.modules, position.get(cp.parent) if cp.parent is not None else None,
         codec.dumps(store.get_state(cp)))
        for cp in history
    ]


def exact(store: nbs.BaseStore, session: str | nbs.SessionKey) -> list[tuple[nbs.Checkpoint, bytes]]:
    """Per checkpoint, oldest first: the checkpoint as ``history()`` gives it (``size`` aside, which is
    the store's own) and its exact state bytes. Two stores' lists are equal when a copy is exact."""
    return [(dataclasses.replace(cp, size=0), codec.dumps(store.get_state(cp))) for cp in store.history(session)]


def new_store(tmp_path: Path, kind: str, name: str) -> nbs.BaseStore:
    return nbs.open_store(tmp_path / (f"{name}.db" if kind == "sqlite" else name))


# -- checksums -------------------------------------------------------------------


def test_canonical_json_sorts_keys_and_keeps_what_json_keeps() -> None:
    value = {"b": 1, "a": [math.nan, "é", 2**70, "\udc80"]}
    expected = '{"a":[NaN,"é",1180591620717411303424,"\udc80"],"b":1}'.encode("utf-8", "surrogatepass")
    assert bundle.canonical_json(value) == expected
    assert bundle.state_digest({"m": {"x": math.nan}}) == bundle.state_digest({"m": {"x": math.nan}})
    assert bundle.state_digest({"m": {"a": 1, "b": 2}}) == bundle.state_digest({"m": {"b": 2, "a": 1}})
    assert bundle.state_digest({"m": {"x": 1}}) != bundle.state_digest({"m": {"x": 1.0}})


# -- bundles ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "json"])
async def test_bundle_round_trip_keeps_every_checkpoint(tmp_path: Path, kind: str) -> None:
    src = new_store(tmp_path, kind, "src")
    await populate(src, "alice")
    await populate(src, "u7/bob", seed=2)
    calls: list[tuple[int, int, str]] = []
    counts = bundle.write_bundle(src, None, tmp_path / "all.nbs.json", progress=lambda *a: calls.append(a))
    assert counts == (2, 8)
    assert calls[0] == (1, 8, "alice@1") and calls[-1] == (8, 8, "u7/bob@4")

    raw = json.loads((tmp_path / "all.nbs.json").read_text(encoding="utf-8", errors="surrogatepass"))
    assert (raw["format"], raw["version"]) == ("nb_sessions-bundle", 1)
    assert [(s["user_id"], s["session_id"]) for s in raw["sessions"]] == [("", "alice"), ("u7", "bob")]
    first = raw["sessions"][0]["checkpoints"][0]
    assert (first["seq"], first["parent"], first["label"], first["modules"]) == (1, None, "sum", ["agent", "extra"])
    assert first["sha256"] == bundle.state_digest(src.get_state("alice@1"))

    read = bundle.read_bundle(tmp_path / "all.nbs.json")
    assert read.checkpoints == 8
    assert [c.parent for c in read.sessions[0].checkpoints] == [None, 1, 2, 2]
    assert read.sessions[0].checkpoints[0].state["extra"]["value"]["big"] == 2**70

    dst = new_store(tmp_path, "sqlite" if kind == "json" else "json", "dst")
    copied = bundle.import_bundle(dst, read)
    assert [c.target for c in copied] == ["alice", "u7/bob"]
    assert copied[0].seq_map == {1: 1, 2: 2, 3: 3, 4: 4}
    for session in ("alice", "u7/bob"):
        assert fingerprint(dst, session) == fingerprint(src, session)
    extra = dst.get_state("alice@sum")["extra"]["value"]
    assert math.isnan(extra["nan"]) and extra["inf"] == -math.inf
    assert extra["lone"] == TRICKY["lone"] and extra["big"] == 2**70
    for session in ("alice", "u7/bob"):
        assert exact(dst, session) == exact(src, session)  # seq, time, parent, label, metadata as they were
    assert all("original_seq" not in cp.metadata for cp in dst.history("alice"))


def test_a_bundle_import_keeps_gaps_times_and_parents_that_are_gone(tmp_path: Path) -> None:
    state = {"m": {"x": 1}}
    cps = [
        {"seq": seq, "parent": parent, "created_at": created, "label": label, "metadata": meta,
         "modules": ["m"], "sha256": bundle.state_digest(state), "state": state}
        for seq, parent, created, label, meta in [
            (3, 2, "2025-05-01T10:00:00.123456+02:00", "kept", {"note": 1}),
            (7, 3, "2025-05-02T10:00:00Z", None, {"original_seq": 1, "copied_from": "old@1"}),
            (9, 4, "2025-05-03T10:00:00", None, {}),
        ]
    ]
    path = tmp_path / "b.json"
    path.write_bytes(codec.dumps({"format": bundle.FORMAT, "version": 1,
                                  "sessions": [{"user_id": "u", "session_id": "s", "checkpoints": cps}]}))
    dst = new_store(tmp_path, "sqlite", "dst")
    (copied,) = bundle.import_bundle(dst, bundle.read_bundle(path))
    assert copied.seq_map == {3: 3, 7: 7, 9: 9}
    got = [(c.seq, c.parent, c.created_at.isoformat(), c.label, dict(c.metadata)) for c in dst.history("u/s")]
    assert got == [
        (3, 2, "2025-05-01T08:00:00.123456+00:00", "kept", {"note": 1}),
        # An old copy's provenance is metadata like any other: kept as it is.
        (7, 3, "2025-05-02T10:00:00+00:00", None, {"original_seq": 1, "copied_from": "old@1"}),
        (9, 4, "2025-05-03T10:00:00+00:00", None, {}),  # a time without a zone is UTC
    ]
    assert dst.save("u/s", m=Box(2)).seq == 10  # numbering goes on past the last one copied
    cps[0]["created_at"] = "yesterday"
    path.write_bytes(codec.dumps({"format": bundle.FORMAT, "version": 1,
                                  "sessions": [{"user_id": "", "session_id": "t", "checkpoints": cps}]}))
    with pytest.raises(StoreCorruptedError, match=r"checkpoint t@3 .*'yesterday' is not an ISO 8601 time"):
        bundle.read_bundle(path)


async def test_bundle_to_a_stream_and_only_named_sessions(tmp_path: Path) -> None:
    store = new_store(tmp_path, "sqlite", "s")
    await populate(store, "alice")
    await populate(store, "carol", seed=3)
    buffer = io.BytesIO()
    assert bundle.write_bundle(store, ["carol"], buffer) == (1, 4)
    data = codec.loads(buffer.getvalue())
    assert [s["session_id"] for s in data["sessions"]] == ["carol"]
    with pytest.raises(InvalidIdError, match="whole sessions"):
        bundle.write_bundle(store, ["carol@2"], io.BytesIO())
    with pytest.raises(SessionNotFoundError):
        bundle.write_bundle(store, ["nobody"], tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    assert list(tmp_path.glob(".x.json*")) == []  # no temp file left behind


async def test_a_tampered_state_fails_its_checksum_and_nothing_is_written(tmp_path: Path) -> None:
    store = new_store(tmp_path, "sqlite", "s")
    await populate(store, "alice")
    path = tmp_path / "b.json"
    bundle.write_bundle(store, None, path)
    text = path.read_text(encoding="utf-8", errors="surrogatepass")
    assert text.count("2+3 = 5") >= 4
    path.write_text(text.replace("2+3 = 5", "2+3 = 6", 1), encoding="utf-8", errors="surrogatepass")
    with pytest.raises(StoreCorruptedError, match=r"checkpoint alice@1 .*checksum mismatch") as info:
        bundle.read_bundle(path)
    assert "alice@1" in info.value.location


def _bundle_with(tmp_path: Path, **changes: Any) -> Path:
    state = {"m": {"x": 1}}
    cp = {"seq": 1, "parent": None, "created_at": "2026-01-01T00:00:00+00:00", "label": None,
          "metadata": {}, "modules": ["m"], "sha256": bundle.state_digest(state), "state": state}
    data: dict[str, Any] = {"format": bundle.FORMAT, "version": 1,
                            "sessions": [{"user_id": "", "session_id": "s", "checkpoints": [cp]}]}
    data.update(changes)
    path = tmp_path / "b.json"
    path.write_bytes(codec.dumps(data))
    return path


def test_read_bundle_refuses_what_is_not_a_bundle_it_can_read(tmp_path: Path) -> None:
    assert bundle.read_bundle(_bundle_with(tmp_path)).sessions[0].checkpoints[0].state == {"m": {"x": 1}}
    with pytest.raises(StoreCorruptedError, match="not an nb_sessions bundle"):
        bundle.read_bundle(_bundle_with(tmp_path, format="something-else"))
    with pytest.raises(NbSessionsError, match="version 2 bundle") as newer:
        bundle.read_bundle(_bundle_with(tmp_path, version=2))
    assert not isinstance(newer.value, StoreCorruptedError)
    twice = codec.loads(_bundle_with(tmp_path).read_bytes())["sessions"] * 2
    with pytest.raises(StoreCorruptedError, match="appears twice"):
        bundle.read_bundle(_bundle_with(tmp_path, sessions=twice))
    bad_id = [{"user_id": "", "session_id": "../etc", "checkpoints": []}]
    with pytest.raises(StoreCorruptedError, match="invalid session id"):
        bundle.read_bundle(_bundle_with(tmp_path, sessions=bad_id))
    (tmp_path / "junk.json").write_bytes(b"{not json")
    with pytest.raises(StoreCorruptedError, match="not valid JSON"):
        bundle.read_bundle(tmp_path / "junk.json")


async def test_import_picks_sessions_and_refuses_to_merge(tmp_path: Path) -> None:
    store = new_store(tmp_path, "sqlite", "s")
    await populate(store, "alice")
    await populate(store, "carol", seed=3)
    bundle.write_bundle(store, None, tmp_path / "b.json")
    read = bundle.read_bundle(tmp_path / "b.json")
    dst = new_store(tmp_path, "json", "dst")
    with pytest.raises(SessionNotFoundError, match="holds no session dave"):
        bundle.import_bundle(dst, read, ["dave"])
    assert [c.target for c in bundle.import_bundle(dst, read, ["carol"])] == ["carol"]
    assert [i.session for i in dst.sessions()] == ["carol"]
    with pytest.raises(ConflictError, match="already has session"):
        bundle.import_bundle(dst, read)
    assert [i.session for i in dst.sessions()] == ["carol"]  # alice was not written either
    assert len(dst.history("carol")) == 4


# -- copies ----------------------------------------------------------------------


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("json", "sqlite"), ("sqlite", "json"), ("sqlite", "sqlite")])
async def test_copy_keeps_history_labels_branches_and_states(tmp_path: Path, src_kind: str, dst_kind: str) -> None:
    src = new_store(tmp_path, src_kind, "src")
    dst = new_store(tmp_path, dst_kind, "dst")
    await populate(src, "alice")
    await populate(src, "u1/bob", seed=2)
    calls: list[tuple[int, int, str]] = []
    copied = bundle.copy_sessions(src, dst, progress=lambda *a: calls.append(a))
    assert [c.target for c in copied] == ["alice", "u1/bob"]
    assert [n for n, _, _ in calls] == list(range(1, 9)) and {t for _, t, _ in calls} == {8}
    for session in ("alice", "u1/bob"):
        assert fingerprint(dst, session) == fingerprint(src, session)
    assert [(c.seq, c.parent, c.label) for c in dst.history("alice")] == [
        (1, None, "sum"), (2, 1, "planned"), (3, 2, None), (4, 2, "branch")
    ]


async def test_copy_keeps_gaps_times_and_parents_that_are_gone(tmp_path: Path) -> None:
    src = new_store(tmp_path, "sqlite", "src")
    await populate(src, "alice")
    src.delete("alice@2")  # @3 and @4 now have a parent that is gone
    mid = new_store(tmp_path, "sqlite", "mid")
    (copied,) = bundle.copy_sessions(src, mid, ["alice"])
    assert copied.seq_map == {1: 1, 3: 3, 4: 4}
    assert [(c.seq, c.parent, c.label) for c in mid.history("alice")] == [(1, None, "sum"), (3, 2, None), (4, 2, "branch")]
    assert exact(mid, "alice") == exact(src, "alice")
    assert not {"original_seq", "original_created_at", "copied_from"} & set(mid.checkpoint("alice@3").metadata)

    last = new_store(tmp_path, "json", "last")
    bundle.copy_sessions(mid, last)
    assert exact(last, "alice") == exact(src, "alice")
    assert last.save("alice", agent=Box(1)).seq == 5


def test_a_copy_of_an_old_copy_keeps_its_provenance_metadata(tmp_path: Path) -> None:
    src = new_store(tmp_path, "json", "src")
    old = {"original_seq": 4, "original_created_at": "2024-01-01T00:00:00+00:00", "copied_from": "a@4"}
    src.save("a", None, old, box=Box(1))
    dst = new_store(tmp_path, "sqlite", "dst")
    bundle.copy_sessions(src, dst)
    assert dict(dst.checkpoint("a@1").metadata) == {**old, "nb_sessions_version": nbs.__version__}
    assert exact(dst, "a") == exact(src, "a")


async def test_copy_refuses_existing_sessions_and_the_same_store(tmp_path: Path) -> None:
    src = new_store(tmp_path, "sqlite", "src")
    await populate(src, "alice")
    dst = new_store(tmp_path, "sqlite", "dst")
    bundle.copy_sessions(src, dst)
    with pytest.raises(ConflictError, match="alice"):
        bundle.copy_sessions(src, dst)
    assert len(dst.history("alice")) == 4
    with pytest.raises(InvalidIdError, match="same store"):
        bundle.copy_sessions(src, nbs.open_store(tmp_path / "src.db"))


async def test_a_copy_that_fails_midway_leaves_no_partial_session(tmp_path: Path) -> None:
    src = new_store(tmp_path, "json", "src")
    src.save("s", agent=Box("first"))
    # An AgentScope app rewrote the latest file with no module at all.
    (tmp_path / "src" / "s.json").write_text(json.dumps({}))
    assert len(src.history("s")) == 2
    dst = new_store(tmp_path, "sqlite", "dst")
    with pytest.raises(NbSessionsError, match="holds no modules"):
        bundle.copy_sessions(src, dst)
    assert dst.sessions() == []


async def test_modules_named_like_save_options_are_copied(tmp_path: Path) -> None:
    src = new_store(tmp_path, "json", "src")
    src.save("s", agent=Box("x"), label=Box("a module"))
    dst = new_store(tmp_path, "sqlite", "dst")
    bundle.copy_sessions(src, dst)
    assert dst.get_state("s") == src.get_state("s")
    assert set(dst.get_state("s")) == {"agent", "label"}


# -- AgentScope files ---------------------------------------------------------------


def test_write_state_and_import_state_file_speak_agentscope(tmp_path: Path, sample_state: dict[str, Any]) -> None:
    store = new_store(tmp_path, "sqlite", "s")
    shutil.copy(SAMPLE_FILE, tmp_path / "bob.json")
    cp = bundle.import_state_file(store, tmp_path / "bob.json", "u42/bob", label="from-agentscope")
    assert (cp.ref, cp.label, cp.modules) == ("u42/bob@1", "from-agentscope", ("agent", "notebook", "custom"))
    assert cp.metadata["imported_from"] == "bob.json"
    assert store.get_state("u42/bob") == sample_state
    out = tmp_path / "out.json"
    assert bundle.write_state(store, "u42/bob@1", out).ref == "u42/bob@1"
    assert out.read_bytes() == codec.dumps(sample_state)
    assert json.loads(out.read_text(encoding="utf-8")) == sample_state
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StoreCorruptedError, match="neither a bundle nor an AgentScope session file"):
        bundle.import_state_file(store, tmp_path / "list.json", "x")


def test_the_bundle_and_copy_functions_are_reachable_from_the_package(tmp_path: Path) -> None:
    src, dst = nbs.open_store(tmp_path / "a.db"), nbs.open_store(tmp_path / "b")
    src.save("s", None, {}, box=Box([1]))
    src.save("s", "two", {}, box=Box([1, 2]))
    [copied] = nbs.copy_sessions(src, dst)
    assert [(c.seq, c.label) for c in dst.history("s")] == [(1, None), (2, "two")]
    assert copied.seq_map == {1: 1, 2: 2}
    assert nbs.write_bundle(dst, None, tmp_path / "s.bundle.json") == (1, 2)
    bundle = nbs.read_bundle(tmp_path / "s.bundle.json")
    again = nbs.open_store(tmp_path / "c.db")
    nbs.import_bundle(again, bundle)
    assert again.get_state("s@two") == src.get_state("s@two")
