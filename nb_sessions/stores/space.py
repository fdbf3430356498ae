"""Where a store's space goes: bytes per session, module and checkpoint, shared bytes counted once.

A backend reports, through :meth:`BaseStore._space`, what each checkpoint of
a session holds on disk (:class:`SessionSpace`): bytes stored for that
checkpoint alone, per module (its skeleton row or file), and the *pieces* it
uses (stored list entries, segments) by an id that names one stored piece
store-wide, so a piece several checkpoints share is seen as the same piece.
Everything else, the accounting, lives here once for every backend:

- a checkpoint's ``own_bytes`` are its own bytes plus the pieces no other
  checkpoint uses: what deleting it alone would free;
- ``shared_bytes`` are the pieces it shares with other checkpoints, each
  piece counted once per row (so they never add up across rows);
- the store totals count every piece once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .base import Checkpoint, SessionKey

__all__ = [
    "CheckpointSpace",
    "SessionSpace",
    "StoreStats",
    "list_pieces",
    "module_bytes",
    "reclaimable",
    "store_stats",
]


@dataclass(frozen=True)
class CheckpointSpace:
    """What one checkpoint holds on disk (the backend hook's answer, per checkpoint).

    ``own``: bytes per module stored for this checkpoint alone. ``pieces``: per
    module, ``{piece id: bytes}`` of stored pieces other checkpoints may share;
    the id names one stored piece in the whole store (e.g. ``"blob:17"``).
    """

    checkpoint: Checkpoint
    own: Mapping[str, int]
    pieces: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionSpace:
    """A session's checkpoints on disk, plus ``overhead`` bytes it takes besides them (e.g. a latest file)."""

    key: SessionKey
    checkpoints: Sequence[CheckpointSpace]
    overhead: int = 0


def _users(
    spaces: Iterable[SessionSpace],
) -> tuple[dict[str, set[tuple[SessionKey, int]]], dict[str, int]]:
    users: dict[str, set[tuple[SessionKey, int]]] = defaultdict(set)
    sizes: dict[str, int] = {}
    for space in spaces:
        for cs in space.checkpoints:
            for pieces in cs.pieces.values():
                for pid, size in pieces.items():
                    users[pid].add((space.key, cs.checkpoint.seq))
                    sizes[pid] = size
    return users, sizes


def reclaimable(
    space: SessionSpace, removed: Iterable[int], others: Iterable[SessionSpace] = ()
) -> int:
    """Bytes deleting checkpoints ``removed`` of ``space`` would free (pieces others still use stay)."""
    gone = {(space.key, seq) for seq in removed}
    users, sizes = _users([space, *others])
    total = sum(
        sum(cs.own.values()) for cs in space.checkpoints if (space.key, cs.checkpoint.seq) in gone
    )
    return total + sum(sizes[pid] for pid, who in users.items() if who <= gone)


@dataclass(frozen=True)
class StoreStats:
    """Where the space goes, as DataFrames: ``sessions``, ``modules`` and ``checkpoints``.

    Every frame has ``own_bytes`` (only that row uses them) and ``shared_bytes``
    (deduplicated pieces it shares with other checkpoints, counted once per
    row). ``total_bytes`` counts every stored byte once; ``shared_bytes`` is
    the part of it that more than one checkpoint uses; ``disk_bytes`` is the
    size of the store's files (free pages and indexes included).
    """

    sessions: pd.DataFrame
    modules: pd.DataFrame
    checkpoints: pd.DataFrame
    total_bytes: int
    shared_bytes: int
    disk_bytes: int
    location: str = ""

    def __str__(self) -> str:
        head = (
            f"{self.location}: {human_size(self.total_bytes)} of checkpoints "
            f"({human_size(self.shared_bytes)} shared between checkpoints, counted once), "
            f"{human_size(self.disk_bytes)} on disk"
        )
        if self.sessions.empty:
            return head + "; no sessions"
        shown = self.sessions.assign(
            own=self.sessions["own_bytes"].map(human_size),
            shared=self.sessions["shared_bytes"].map(human_size),
        )[["session", "checkpoints", "own", "shared"]]
        table: str = shown.to_string(index=False)
        return head + "\n" + table

    def __repr__(self) -> str:
        return f"<StoreStats {self}>"

    def _repr_html_(self) -> str:
        import html

        parts = [f"<p>{html.escape(str(self).splitlines()[0])}</p>"]
        for title, frame in (("Sessions", self.sessions), ("Modules", self.modules)):
            if not frame.empty:
                parts += [
                    f"<h4>{title}</h4>",
                    frame.to_html(index=False, escape=True, notebook=False),
                ]
        return "\n".join(parts)

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``nb-sessions du --json``."""

        def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]

        return {
            "store": self.location,
            "total_bytes": self.total_bytes,
            "shared_bytes": self.shared_bytes,
            "disk_bytes": self.disk_bytes,
            "sessions": rows(self.sessions),
            "modules": rows(self.modules),
            "checkpoints": rows(self.checkpoints),
        }


def store_stats(
    spaces: Sequence[SessionSpace], *, disk_bytes: int = 0, location: str = ""
) -> StoreStats:
    """Account the space of ``spaces`` (see the module docstring)."""
    import pandas as pd

    users, sizes = _users(spaces)
    shared_ids = {pid for pid, who in users.items() if len(who) > 1}
    cp_rows: list[dict[str, Any]] = []
    mod_rows: list[dict[str, Any]] = []
    ses_rows: list[dict[str, Any]] = []
    for space in spaces:
        session = str(space.key)
        ses_shared: set[str] = set()
        ses_own = space.overhead
        per_module: dict[str, list[Any]] = defaultdict(lambda: [0, set()])
        for cs in space.checkpoints:
            cp = cs.checkpoint
            own = sum(cs.own.values())
            shared: set[str] = set()
            for module, n in cs.own.items():
                per_module[module][0] += n
            for module, pieces in cs.pieces.items():
                for pid in pieces:
                    if pid in shared_ids:
                        shared.add(pid)
                        per_module[module][1].add(pid)
                    else:
                        own += sizes[pid]
                        per_module[module][0] += sizes[pid]
            ses_own += own
            ses_shared |= shared
            cp_rows.append(
                {
                    "session": session,
                    "checkpoint": cp.ref,
                    "label": cp.label or "",
                    "own_bytes": own,
                    "shared_bytes": sum(sizes[p] for p in shared),
                }
            )
        for module, (own_bytes, pids) in per_module.items():
            mod_rows.append(
                {
                    "session": session,
                    "module": module,
                    "own_bytes": own_bytes,
                    "shared_bytes": sum(sizes[p] for p in pids),
                }
            )
        ses_rows.append(
            {
                "session": session,
                "checkpoints": len(space.checkpoints),
                "own_bytes": ses_own,
                "shared_bytes": sum(sizes[p] for p in ses_shared),
            }
        )

    def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
        out: pd.DataFrame = pd.DataFrame(rows, columns=columns)
        for col in ("checkpoints", "own_bytes", "shared_bytes"):
            if col in out:
                out[col] = out[col].astype("int64")
        return out

    sessions = frame(ses_rows, ["session", "checkpoints", "own_bytes", "shared_bytes"])
    if not sessions.empty:
        sessions = sessions.sort_values("own_bytes", ascending=False, kind="stable").reset_index(
            drop=True
        )
    shared_total = sum(sizes[p] for p in shared_ids)
    return StoreStats(
        sessions=sessions,
        modules=frame(mod_rows, ["session", "module", "own_bytes", "shared_bytes"]),
        checkpoints=frame(cp_rows, ["session", "checkpoint", "label", "own_bytes", "shared_bytes"]),
        total_bytes=int(sessions["own_bytes"].sum()) + shared_total if not sessions.empty else 0,
        shared_bytes=shared_total,
        disk_bytes=disk_bytes,
        location=location,
    )


def module_bytes(state: Any, extra: int, where: str) -> dict[str, int]:
    """A stored skeleton's bytes (plus ``extra``) split between its modules by their JSON size."""
    from .. import codec
    from ..errors import StoreCorruptedError

    data = state.encode("utf-8", "surrogatepass") if isinstance(state, str) else bytes(state)
    total = len(data) + extra
    try:
        modules = codec.loads(data, where)
    except StoreCorruptedError:
        return {"*": total}
    if not isinstance(modules, dict) or not modules:
        return {"*": total}
    sizes = {str(name): len(codec.dumps(value)) for name, value in modules.items()}
    whole = sum(sizes.values()) or 1
    split = {name: total * n // whole for name, n in sizes.items()}
    first = next(iter(split))
    split[first] += total - sum(split.values())  # the rounding, so the parts add up
    return split


def list_pieces(
    refs: Iterable[tuple[Sequence[Any], Sequence[int]]],
    segments: Mapping[int, Sequence[int]],
    segment_sizes: Mapping[int, int],
    entry_sizes: Mapping[int, int],
) -> dict[str, dict[str, int]]:
    """A checkpoint's shared pieces per module, for stores that keep long lists as segments of entries.

    ``refs`` are its list references ``(path, [segment id, ...])``; ``segments``
    gives each segment's entry ids, ``segment_sizes`` and ``entry_sizes`` their
    stored bytes (by row id, so a piece several checkpoints use is one piece).
    """
    pieces: dict[str, dict[str, int]] = {}
    for path, seg_ids in refs:
        module = pieces.setdefault(str(path[0]), {})
        for seg in seg_ids:
            module[f"segment:{seg}"] = segment_sizes.get(seg, 0)
            for entry in segments.get(seg, ()):
                module[f"entry:{entry}"] = entry_sizes.get(entry, 0)
    return pieces


def human_size(n: int) -> str:
    """``n`` bytes as a short figure: ``812 B``, ``4.2 KB``, ``1.3 MB``."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1024 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
