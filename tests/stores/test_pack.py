"""The JSON store's entry pack: arrays copied in blocks equal arrays built entry by entry."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

import nb_sessions as nbs
from nb_sessions import codec
from nb_sessions.chunks import blob_hash, json_array
from nb_sessions.errors import StoreCorruptedError
from nb_sessions.stores import _pack
from nb_sessions.stores._pack import EntryPack, PackState, to_ranges
from tests.conftest import Box

ENTRIES = [
    codec.dumps({"i": 0, "text": "plain"}),
    codec.dumps({"i": 1, "text": "line\nbreak, and \u4e2d\u6587"}),
    codec.dumps({"i": 2, "nan": math.nan}),  # the exact path: starts with a space
    codec.dumps([3, {"deep": [None, True]}]),
    codec.dumps("\ud800 lone"),  # exact path too
    codec.dumps({"i": 5}),
]


def make_pack(folder: Path, entries: list[bytes]) -> EntryPack:
    pack = EntryPack(folder, PackState(uid="t"))
    pack.state = pack.append([(blob_hash(e), e) for e in entries[:3]])
    pack.state = pack.append([(blob_hash(e), e) for e in entries[3:]])  # two appends, one span
    return pack


@pytest.mark.parametrize("block", [1, 2, 7, 64, 4 << 20])
@pytest.mark.parametrize(
    "ordinals", [[], [0], [2], [0, 1, 2, 3, 4, 5], [5, 4, 3], [1, 2, 4, 5], [2, 2, 0, 3, 4]]
)
def test_arrays_copied_in_blocks_equal_arrays_built_entry_by_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, ordinals: list[int]
) -> None:
    monkeypatch.setattr(_pack, "_BLOCK", block)
    pack = make_pack(tmp_path, ENTRIES)
    want = json_array([ENTRIES[n] for n in ordinals])
    ranges = to_ranges(ordinals)
    data, exact = pack.read_array(ranges, "test")
    assert data == want
    assert exact == any(ENTRIES[n][:1] == b" " for n in ordinals)
    assert pack.array_size(ranges, "test") == len(want)
    out = io.BytesIO()
    assert pack.write_array(out, ranges, "test") == len(want)
    assert out.getvalue() == want
    decoded = codec.loads(data, trusted=not exact)  # trusted: the flag must be right for this
    assert codec.dumps(decoded) == codec.dumps([codec.loads(ENTRIES[n]) for n in ordinals])


def test_an_entry_with_a_raw_newline_is_copied_entry_by_entry(tmp_path: Path) -> None:
    # Not something our codec writes, but valid JSON: the newline must not become a comma.
    odd = [b'{"a":\n1}', b"[1,\n2]", b'"x"']
    pack = make_pack(tmp_path, odd)
    data, _ = pack.read_array([[0, 3]], "test")
    assert json.loads(data) == [{"a": 1}, [1, 2], "x"]
    assert pack.array_size([[0, 3]], "test") == len(data)


def test_a_pack_shorter_than_its_index_is_reported(tmp_path: Path) -> None:
    pack = make_pack(tmp_path, ENTRIES)
    with open(pack.data_path, "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(StoreCorruptedError, match="shorter than the history expects"):
        pack.read_array([[0, 2]], "checkpoint s@1")
    with pytest.raises(StoreCorruptedError, match="beyond the 6"):
        make_pack(tmp_path / "b", ENTRIES).read_array([[4, 3]], "checkpoint s@1")
    for bad in ([[0, 0]], [[0]], [["0", 1]], [[True, 1]], 5):
        with pytest.raises(StoreCorruptedError, match="malformed entry ranges"):
            make_pack(tmp_path / "c", ENTRIES).read_array(bad, "checkpoint s@1")  # type: ignore[arg-type]


def test_a_long_latest_file_written_in_blocks_is_the_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pack, "_BLOCK", 97)
    store = nbs.JSONStore(tmp_path)
    items = [{"i": i, "t": "é\n" * (i % 4), "x": math.inf if i == 40 else i / 3} for i in range(700)]
    box = Box(list(items))
    store.save("s", box=box)
    box.value[3] = {"edited": True}  # a new entry out of pack order
    box.value.append({"i": 700})
    store.save("s", box=box)
    on_disk = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert on_disk == {"box": {"value": box.value}}
    assert store.get_state("s@1") == {"box": {"value": items}}
    assert store.history("s")[-1].size == (tmp_path / "s.json").stat().st_size
