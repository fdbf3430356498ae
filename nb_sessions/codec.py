"""JSON encoding with a fast path (orjson) and an exact fallback (stdlib json).

The rule: whatever AgentScope's stdlib ``json`` writes, we write and read back
identically, and we never change data silently.

orjson is several times faster but differs exactly where it matters: it
refuses lone surrogates, integers beyond 64 bits and nesting past 254 levels,
turns NaN and Infinity into ``null``, and quietly writes UUIDs, enums and
dataclasses that stdlib json refuses. So every orjson result is checked: the
output is decoded again and compared with the input (a C-level comparison),
and anything that does not come back equal goes through the exact path. The
exact path validates the value first, so an unwritable value is refused with
its dotted path, then writes with ``json.dumps(ensure_ascii=False)`` encoded
with ``surrogatepass``, byte-compatible with AgentScope's JSONSession.

Decoding uses orjson unless the bytes could hold what orjson reads
differently (digit runs long enough to overflow 64 bits) or it refuses them
(NaN, surrogates, deep nesting); then stdlib json decodes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import threading
from collections.abc import Iterator
from typing import Any

import orjson

from .errors import NotSerializableError, StoreCorruptedError

__all__ = ["dumps", "find_unserializable", "loads", "paused_gc"]

_ORJSON_OPTS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# orjson reads integers beyond 64 bits as floats: bytes holding a run of 19+ digits take
# the exact path. Found by mapping digits to NUL and searching (much faster than a regex).
_DIGITS_TO_NUL = bytes(0 if 48 <= i <= 57 else 1 for i in range(256))
_DIGIT_RUN = b"\x00" * 19
# Decoding this much or more pauses the cyclic GC (JSON builds no cycles; see paused_gc).
_BIG = 1 << 20
_TRIM = 1 << 16
_JSON_SCALARS = (str, int, float, bool, type(None))


def _refuse(value: Any) -> Any:
    raise TypeError


def dumps(value: Any, path: str = "") -> bytes:
    """Encode ``value`` as UTF-8 JSON bytes (non-ASCII kept, lone surrogates passed through).

    Raises :class:`NotSerializableError` naming the dotted path (prefixed by
    ``path``) of the first value that cannot be JSON.
    """
    try:
        out = orjson.dumps(value, default=_refuse, option=_ORJSON_OPTS)
    except (orjson.JSONEncodeError, TypeError):
        return _exact_dumps(value, path)
    # NaN -> null, UUID/enum -> str, tuple -> list: the round trip tells.
    if orjson.loads(out) == value:
        # orjson's result keeps its whole working buffer (~8 KB even for a 1 KB
        # message); a store holding thousands of them at once would hold that too.
        return bytes(memoryview(out)) if len(out) < _TRIM else out
    return _exact_dumps(value, path)


def _exact_dumps(value: Any, path: str) -> bytes:
    bad = find_unserializable(value, path)
    if bad is not None:
        raise NotSerializableError(*bad)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=True)
    except RecursionError:
        raise NotSerializableError(
            _too_deep(value, path), "deeply nested data",
            "It is nested deeper than JSON can be written here; flatten it.",
        ) from None
    except ValueError as exc:  # circular reference
        raise NotSerializableError(path, "circular data", str(exc)) from None
    # The leading space (JSON allows it) tells loads(trusted=True) this took the exact
    # path: it may hold what orjson reads differently, such as integers beyond 64 bits.
    return b" " + text.encode("utf-8", "surrogatepass")


def _too_deep(value: Any, path: str) -> str:
    """The path of the first top-level key too deep for stdlib json (the module, for a state)."""
    if isinstance(value, dict):
        for key, sub in value.items():
            try:
                json.dumps(sub, allow_nan=True)
            except RecursionError:
                return _key_path(path, key)
            except (TypeError, ValueError):
                continue
    return path


def loads(data: bytes | str, where: str = "", *, trusted: bool = False) -> Any:
    """Decode JSON written by :func:`dumps` or by AgentScope; ``where`` names the source in errors.

    ``trusted`` says the bytes came from :func:`dumps` (joined, perhaps): unless
    they start with its exact-path mark, orjson reads them back exactly, and the
    scan for long digit runs is skipped.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if not isinstance(data, (bytes, bytearray, memoryview)):  # a number where a store keeps JSON: edited
        raise StoreCorruptedError(
            f"{where or 'data'} holds {type(data).__name__} {data!r:.40}, not JSON text; "
            "restore it from a backup or delete that checkpoint",
            location=where,
        )
    with paused_gc() if len(data) >= _BIG else contextlib.nullcontext():
        return _loads(data, where, trusted and not data.startswith(b" "))


def _loads(data: bytes, where: str, trusted: bool = False) -> Any:
    if trusted or data.translate(_DIGITS_TO_NUL).find(_DIGIT_RUN) < 0:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data.decode("utf-8", "surrogatepass"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StoreCorruptedError(
            f"{where or 'data'} is not valid JSON ({type(exc).__name__}: {exc}); "
            "restore it from a backup or delete that checkpoint",
            location=where,
        ) from None


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic data.

    Decoding a long conversation allocates millions of containers, and the
    collector would scan the growing heap again and again (roughly doubling
    the time) to find cycles JSON cannot make. Nested and concurrent pauses
    are counted; the collector comes back on when the last one ends, if it
    was on before. Objects made meanwhile are moved to the oldest generation
    (``gc.freeze()`` then ``gc.unfreeze()``), where only the rare full
    collections look at them; cycles among them are still collected then.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0:
                # What was built meanwhile goes straight to the oldest generation:
                # otherwise the next young collection would scan all of it at once.
                gc.freeze()
                gc.unfreeze()
                if _gc_was_enabled:
                    gc.enable()


def find_unserializable(value: Any, path: str = "") -> tuple[str, str] | None:
    """Return ``(dotted_path, type_name)`` of the first value stdlib json cannot write, or None.

    Dict keys must be strings: stdlib json would silently turn ``1`` into ``"1"``.
    Circular references are reported too. Iterative, so deep nesting is fine.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    active: set[int] = set()
    exits: list[tuple[int, int]] = []  # (stack length when entered, id) to release cycle marks
    while stack:
        while exits and len(stack) <= exits[-1][0]:
            active.discard(exits.pop()[1])
        item, where = stack.pop()
        if isinstance(item, _JSON_SCALARS):
            continue  # NaN and Infinity too: stdlib writes them, and so do we
        if isinstance(item, dict):
            if id(item) in active:
                return where, "circular reference"
            active.add(id(item))
            exits.append((len(stack), id(item)))
            for key, sub in reversed(list(item.items())):
                if not isinstance(key, str):
                    return _key_path(where, key), f"{type(key).__name__} key (keys must be str)"
                stack.append((sub, _key_path(where, key)))
            continue
        if isinstance(item, (list, tuple)):
            if id(item) in active:
                return where, "circular reference"
            active.add(id(item))
            exits.append((len(stack), id(item)))
            for i in reversed(range(len(item))):
                stack.append((item[i], f"{where}[{i}]"))
            continue
        return where, type(item).__name__
    return None


def _key_path(where: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{where}.{key}" if where else key
    return f"{where}[{key!r}]"
