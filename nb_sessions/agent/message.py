"""AgentScope 1.x messages: :class:`Msg`, the content block types and their validation.

A message's wire form is ``{"id", "name", "role", "content", "metadata",
"timestamp"}`` exactly as AgentScope 1.0.21 writes it. We also write
``invocation_id`` when it is set (AgentScope drops it; its ``from_dict`` reads
it back) and keep any key we do not know, so no data is lost on a round trip.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict, cast, overload

from ..errors import StateError, _join
from ._tracked import plain, track

__all__ = [
    "AudioBlock",
    "Base64Source",
    "BlockType",
    "Clock",
    "ContentBlock",
    "IdFactory",
    "ImageBlock",
    "Msg",
    "Role",
    "SeededIds",
    "StepClock",
    "TextBlock",
    "ThinkingBlock",
    "ToolResultBlock",
    "ToolUseBlock",
    "URLSource",
    "VideoBlock",
    "format_timestamp",
    "short_id",
    "timestamp_now",
    "validate_block",
]

Role = Literal["user", "assistant", "system"]
BlockType = Literal["text", "thinking", "tool_use", "tool_result", "image", "audio", "video"]
ROLES: tuple[str, ...] = ("user", "assistant", "system")
BLOCK_TYPES: tuple[str, ...] = ("text", "thinking", "tool_use", "tool_result", "image", "audio", "video")

Clock = Callable[[], str]
"""Returns a timestamp string ``YYYY-MM-DD HH:MM:SS.mmm``."""
IdFactory = Callable[[], str]
"""Returns a fresh message, plan or tool-call id."""

# shortuuid's alphabet: digits and letters without the look-alikes 0, 1, I, O, l.
_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ID_LEN = 22


# -- content blocks (AgentScope's TypedDicts) ------------------------------


class TextBlock(TypedDict):
    """``{"type": "text", "text": str}``."""

    type: Literal["text"]
    text: str


class ThinkingBlock(TypedDict):
    """``{"type": "thinking", "thinking": str}``."""

    type: Literal["thinking"]
    thinking: str


class URLSource(TypedDict):
    """``{"type": "url", "url": str}``."""

    type: Literal["url"]
    url: str


class Base64Source(TypedDict):
    """``{"type": "base64", "media_type": str, "data": str}``."""

    type: Literal["base64"]
    media_type: str
    data: str


class ImageBlock(TypedDict):
    """``{"type": "image", "source": URLSource | Base64Source}``."""

    type: Literal["image"]
    source: URLSource | Base64Source


class AudioBlock(TypedDict):
    """``{"type": "audio", "source": URLSource | Base64Source}``."""

    type: Literal["audio"]
    source: URLSource | Base64Source


class VideoBlock(TypedDict):
    """``{"type": "video", "source": URLSource | Base64Source}``."""

    type: Literal["video"]
    source: URLSource | Base64Source


class _ToolUseRequired(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolUseBlock(_ToolUseRequired, total=False):
    """``{"type": "tool_use", "id": str, "name": str, "input": dict, "raw_input"?: str}``."""

    raw_input: str


class ToolResultBlock(TypedDict):
    """``{"type": "tool_result", "id": str, "name": str, "output": str | [text|image|audio|video]}``."""

    type: Literal["tool_result"]
    id: str
    name: str
    output: str | list[TextBlock | ImageBlock | AudioBlock | VideoBlock]


ContentBlock = (
    TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock | ImageBlock | AudioBlock | VideoBlock
)

_SHAPES: dict[str, str] = {
    "text": '{"type": "text", "text": str}',
    "thinking": '{"type": "thinking", "thinking": str}',
    "tool_use": '{"type": "tool_use", "id": str, "name": str, "input": dict, "raw_input"?: str}',
    "tool_result": (
        '{"type": "tool_result", "id": str, "name": str, '
        "\"output\": str | [text|image|audio|video blocks]}"
    ),
    "image": '{"type": "image", "source": {"type": "url", "url": str} | '
    '{"type": "base64", "media_type": str, "data": str}}',
}
_SHAPES["audio"] = _SHAPES["image"].replace('"image"', '"audio"', 1)
_SHAPES["video"] = _SHAPES["image"].replace('"image"', '"video"', 1)

# Required keys of each block kind: (key, type, type name for messages).
_FIELDS: dict[str, tuple[tuple[str, type, str], ...]] = {
    "text": (("text", str, "str"),),
    "thinking": (("thinking", str, "str"),),
    "tool_use": (("id", str, "str"), ("name", str, "str"), ("input", dict, "dict")),
    "tool_result": (("id", str, "str"), ("name", str, "str")),
}
_MEDIA = ("image", "audio", "video")
_OUTPUT_KINDS = ("text", *_MEDIA)


def validate_block(
    block: Any,
    path: str,
    problems: list[tuple[str, str]],
    allowed: Iterable[str] = BLOCK_TYPES,
) -> None:
    """Check one content block's shape, adding ``(dotted_path, message)`` problems."""
    allowed = tuple(allowed)
    if not isinstance(block, Mapping):
        problems.append((path, f"expected a content block (a dict with 'type'), got {_tname(block)}"))
        return
    kind = block.get("type")
    if kind not in allowed:
        what = "no 'type' key" if "type" not in block else f"unknown block type {kind!r}"
        problems.append((_join(path, "type"), f"{what}; expected one of: {', '.join(allowed)}"))
        return
    shape = _SHAPES[kind]
    for key, typ, tname in _FIELDS.get(kind, ()):
        if key not in block:
            problems.append((_join(path, key), f"required key '{key}' is absent; a {kind} block is {shape}"))
        elif not isinstance(block[key], typ):
            problems.append(
                (_join(path, key), f"expected {tname}, got {_tname(block[key])}; a {kind} block is {shape}")
            )
    if kind == "tool_use" and "raw_input" in block and not isinstance(block["raw_input"], str):
        problems.append(
            (_join(path, "raw_input"), f"expected str, got {_tname(block['raw_input'])}; a tool_use block is {shape}")
        )
    elif kind == "tool_result":
        _validate_output(block, path, problems, shape)
    elif kind in _MEDIA:
        _validate_source(block, path, problems, kind, shape)


def _blocks_well_formed(content: list[Any]) -> bool:
    """True when every block is one the full validation would accept, checked the quick way."""
    for block in content:
        if type(block) is not dict:
            return False
        kind = block.get("type")
        if kind == "text":
            if type(block.get("text")) is not str:
                return False
        elif kind == "thinking":
            if type(block.get("thinking")) is not str:
                return False
        elif kind == "tool_use":
            if (
                type(block.get("id")) is not str
                or type(block.get("name")) is not str
                or type(block.get("input")) is not dict
                or type(block.get("raw_input", "")) is not str
            ):
                return False
        elif kind == "tool_result":
            if type(block.get("id")) is not str or type(block.get("name")) is not str:
                return False
            output = block.get("output")
            if type(output) is not str and not (
                type(output) is list
                and all(type(b) is dict and b.get("type") == "text" and type(b.get("text")) is str for b in output)
            ):
                return False
        else:
            return False
    return True


def _validate_output(block: Mapping[str, Any], path: str, problems: list[tuple[str, str]], shape: str) -> None:
    where = _join(path, "output")
    if "output" not in block:
        problems.append((where, f"required key 'output' is absent; a tool_result block is {shape}"))
        return
    output = block["output"]
    if isinstance(output, str):
        return
    if not isinstance(output, list):
        problems.append((where, f"expected str or a list of blocks, got {_tname(output)}; a tool_result block is {shape}"))
        return
    for i, sub in enumerate(output):
        validate_block(sub, f"{where}[{i}]", problems, _OUTPUT_KINDS)


def _validate_source(
    block: Mapping[str, Any], path: str, problems: list[tuple[str, str]], kind: str, shape: str
) -> None:
    where = _join(path, "source")
    if "source" not in block:
        problems.append((where, f"required key 'source' is absent; a {kind} block is {shape}"))
        return
    source = block["source"]
    if not isinstance(source, Mapping):
        problems.append((where, f"expected a source dict, got {_tname(source)}; a {kind} block is {shape}"))
        return
    stype = source.get("type")
    keys = {"url": ("url",), "base64": ("media_type", "data")}.get(stype if isinstance(stype, str) else "")
    if keys is None:
        problems.append(
            (_join(where, "type"), f"unknown source type {stype!r}; expected 'url' or 'base64' ({shape})")
        )
        return
    for key in keys:
        if key not in source:
            problems.append((_join(where, key), f"required key '{key}' is absent in a {stype} source; a {kind} block is {shape}"))
        elif not isinstance(source[key], str):
            problems.append((_join(where, key), f"expected str, got {_tname(source[key])}; a {kind} block is {shape}"))


# -- ids and timestamps ------------------------------------------------------


def short_id() -> str:
    """Return a random 22-character id in shortuuid's alphabet, like AgentScope's ``shortuuid.uuid()``."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(_ID_LEN))


def format_timestamp(when: datetime) -> str:
    """Format ``when`` as AgentScope does: ``YYYY-MM-DD HH:MM:SS.mmm``."""
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def timestamp_now() -> str:
    """Return the current local time as an AgentScope timestamp."""
    return format_timestamp(datetime.now())


class StepClock:
    """A deterministic clock: each call returns the previous timestamp plus ``step``."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(seconds=1)) -> None:
        self._next = start or datetime(2025, 1, 1, 9, 0, 0)
        self._step = step

    def __call__(self) -> str:
        """Return the next timestamp."""
        now, self._next = self._next, self._next + self._step
        return format_timestamp(now)


class SeededIds:
    """Deterministic 22-character ids from a seed (for tests and reproducible demos, not security)."""

    def __init__(self, seed: int | str) -> None:
        self._rng = random.Random(seed)

    def __call__(self) -> str:
        """Return the next id."""
        return "".join(self._rng.choice(_ALPHABET) for _ in range(_ID_LEN))


# -- Msg ---------------------------------------------------------------------


class Msg:
    """A message between user, agent and system, compatible with AgentScope 1.x.

    Every change bumps the counter ``rev``, so a caller (a store deciding
    what to re-encode) can tell cheaply whether a message changed since it
    last looked: attribute assignments, and in-place edits of the content and
    metadata too (``msg.content[0]["text"] = ...``, ``msg.metadata["k"] = v``),
    because those are kept in tracked copies of the lists and dicts given.
    """

    __slots__ = ("_content", "_extra", "_metadata", "_rev", "id", "invocation_id", "name", "role", "timestamp")

    id: str
    name: str
    role: Role
    _content: str | list[Any]
    _metadata: dict[str, Any]
    timestamp: str
    invocation_id: str | None
    _extra: dict[str, Any]
    _rev: int

    def __init__(
        self,
        name: str,
        content: str | list[ContentBlock],
        role: Role,
        metadata: dict[str, Any] | None = None,
        timestamp: str | None = None,
        invocation_id: str | None = None,
        id: str | None = None,
    ) -> None:
        if not isinstance(content, (str, list)):
            raise TypeError(f"Msg content must be a str or a list of content blocks, got {_tname(content)}")
        self.name = name
        self.content = content
        self.role = role
        self.metadata = metadata if metadata is not None else {}
        self.timestamp = timestamp or timestamp_now()
        self.invocation_id = invocation_id
        self.id = id or short_id()
        self._extra = {}
        object.__setattr__(self, "_rev", 0)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "role" and value not in ROLES:
            raise ValueError(f"Msg role must be one of {', '.join(ROLES)}; got {value!r}")
        if key in _TRACKED:
            value = track(value, self)
        object.__setattr__(self, key, value)
        object.__setattr__(self, "_rev", getattr(self, "_rev", 0) + 1)

    def _touch(self) -> None:
        """Count an in-place change of the content or metadata."""
        object.__setattr__(self, "_rev", self._rev + 1)

    # A loaded message keeps the plain lists and dicts it was loaded from (nobody else
    # holds them) and copies them into tracked ones only when they are first handed out:
    # loading a long memory costs no copying, and every edit is still counted.

    @property
    def content(self) -> str | list[ContentBlock]:
        """The text, or the list of content blocks."""
        value = self._content
        if type(value) is list:
            value = track(value, self)
            object.__setattr__(self, "_content", value)
        return value

    @content.setter
    def content(self, value: str | list[ContentBlock]) -> None:
        object.__setattr__(self, "_content", value)

    @property
    def metadata(self) -> dict[str, Any]:
        """Free-form metadata."""
        value = self._metadata
        if type(value) is dict:
            value = track(value, self)
            object.__setattr__(self, "_metadata", value)
        return value

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        object.__setattr__(self, "_metadata", value)

    @property
    def rev(self) -> int:
        """The change counter: bumped by every attribute assignment."""
        return self._rev

    # -- wire form -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return AgentScope's dict form, made of plain dicts and lists that share nothing with the message.

        ``yaml.safe_dump`` and exact ``type(x) is dict`` checks accept it, and
        editing it never changes the message.
        """
        wire: dict[str, Any] = plain(self._wire())
        return wire

    def _wire(self) -> dict[str, Any]:
        """The dict form sharing content and metadata with the message (for the store's encoder only)."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "content": self.content,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
        }
        if self.invocation_id is not None:
            out["invocation_id"] = self.invocation_id
        if self._extra:
            out.update(self._extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str = "") -> Msg:
        """Build a Msg from its dict form; raise StateError naming every bad dotted path."""
        problems: list[tuple[str, str]] = []
        msg = cls.from_dict_checked(data, path, problems)
        if problems or msg is None:
            raise StateError(problems)
        return msg

    @classmethod
    def from_dict_checked(
        cls, data: Any, path: str, problems: list[tuple[str, str]]
    ) -> Msg | None:
        """Like :meth:`from_dict`, but add problems to ``problems`` and return None instead of raising."""
        quick = _quick_msg(data) if cls is Msg else None
        if quick is not None:
            return quick
        if not isinstance(data, Mapping):
            problems.append((path, f"expected a message dict {_MSG_SHAPE}, got {_tname(data)}"))
            return None
        before = len(problems)
        for key in ("name", "role", "content"):
            if key not in data:
                problems.append((_join(path, key), f"required key '{key}' is absent; a message is {_MSG_SHAPE}"))
        for key in ("id", "name"):
            if key in data and not isinstance(data[key], str):
                problems.append((_join(path, key), f"expected str, got {_tname(data[key])}"))
        role = data.get("role")
        if "role" in data and role not in ROLES:
            problems.append((_join(path, "role"), f"expected one of {', '.join(ROLES)}; got {role!r}"))
        content = data.get("content")
        if isinstance(content, list):
            for i, block in enumerate(content):
                validate_block(block, f"{_join(path, 'content')}[{i}]", problems)
        elif "content" in data and not isinstance(content, str):
            problems.append(
                (_join(path, "content"), f"expected str or a list of content blocks, got {_tname(content)}")
            )
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            problems.append((_join(path, "metadata"), f"expected a dict or null, got {_tname(metadata)}"))
        for key in ("timestamp", "invocation_id"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                problems.append((_join(path, key), f"expected str or null, got {_tname(value)}"))
        if len(problems) > before:
            return None
        return cls._build(data)

    @classmethod
    def _build(cls, data: Mapping[str, Any]) -> Msg:
        # Built without __init__: the loaded lists and dicts are kept as they are and
        # copied into tracked ones on first access (see the content property). The slots
        # are filled through their descriptors: a long memory loads 100,000 of these.
        msg = cls.__new__(cls)
        return _assemble(
            msg, data, data["name"], data["role"], data["content"], data.get("metadata"),
            data.get("timestamp"), data.get("invocation_id"), data.get("id"),
        )

    def copy(self) -> Msg:
        """Return an independent deep copy (same id; the copy's ``rev`` starts at 0)."""
        new = Msg(
            self.name,
            self.content,  # copied by __setattr__
            self.role,
            self.metadata,
            self.timestamp,
            self.invocation_id,
            self.id,
        )
        object.__setattr__(new, "_extra", {k: track(v, new) for k, v in self._extra.items()})
        object.__setattr__(new, "_rev", 0)
        return new

    def __copy__(self) -> Msg:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Msg:
        return self.copy()

    # -- content helpers -------------------------------------------------------

    def get_text_content(self, separator: str = "\n") -> str | None:
        """Return the text of the message (text blocks joined by ``separator``), or None if it has none."""
        if isinstance(self.content, str):
            return self.content
        blocks = cast("list[dict[str, Any]]", self.content)
        texts = [b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str)]
        return separator.join(texts) if texts else None

    @overload
    def get_content_blocks(self, block_type: Literal["text"]) -> list[TextBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["thinking"]) -> list[ThinkingBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["tool_use"]) -> list[ToolUseBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["tool_result"]) -> list[ToolResultBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["image"]) -> list[ImageBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["audio"]) -> list[AudioBlock]: ...
    @overload
    def get_content_blocks(self, block_type: Literal["video"]) -> list[VideoBlock]: ...
    @overload
    def get_content_blocks(self, block_type: list[BlockType] | None = None) -> list[ContentBlock]: ...

    def get_content_blocks(self, block_type: BlockType | list[BlockType] | None = None) -> list[Any]:
        """Return the content as blocks (a str becomes one text block), optionally of the given type(s)."""
        blocks: list[ContentBlock]
        if isinstance(self.content, str):
            blocks = [TextBlock(type="text", text=self.content)]
        else:
            blocks = list(self.content)
        if block_type is None:
            return blocks
        kinds = (block_type,) if isinstance(block_type, str) else tuple(block_type)
        return [b for b in blocks if b.get("type") in kinds]

    def has_content_blocks(self, block_type: BlockType | list[BlockType] | None = None) -> bool:
        """Whether the message holds at least one block of the given type(s)."""
        return bool(self.get_content_blocks(block_type))

    # -- dunder ------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Msg):
            return NotImplemented
        return self._wire() == other._wire()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        inv = f", invocation_id={self.invocation_id!r}" if self.invocation_id is not None else ""
        return (
            f"Msg(id={self.id!r}, name={self.name!r}, role={self.role!r}, content={self.content!r}, "
            f"metadata={self.metadata!r}, timestamp={self.timestamp!r}{inv})"
        )


_MSG_SHAPE = (
    '{"id": str, "name": str, "role": "user"|"assistant"|"system", '
    '"content": str | [block, ...], "metadata": dict, "timestamp": str}'
)
_TRACKED = frozenset({"content", "metadata"})  # assigned values are copied into tracked containers
_KNOWN_KEYS = frozenset({"id", "name", "role", "content", "metadata", "timestamp", "invocation_id"})


# Slot setters for Msg._build (bypassing Msg.__setattr__, which counts changes).
(
    _set_name, _set_role, _set_content, _set_metadata, _set_timestamp,
    _set_invocation_id, _set_id, _set_extra, _set_rev,
) = (
    Msg.__dict__[slot].__set__
    for slot in (
        "name", "role", "_content", "_metadata", "timestamp", "invocation_id", "id", "_extra", "_rev"
    )
)


def _quick_msg(data: Any) -> Msg | None:
    """The message ``data`` describes, checked and built in one pass; None unless it is plainly valid.

    Most messages (text, thinking, tool calls and results) are built here with a
    few exact type checks and no dotted paths; anything else, valid or not, goes
    through :meth:`Msg.from_dict_checked`'s full validation. Written for speed: a
    long memory loads 100,000 messages through here.
    """
    if type(data) is not dict:
        return None
    get = data.get
    name, role, content = get("name"), get("role"), get("content")
    if type(name) is not str or role not in ROLES:
        return None
    if type(content) is list:
        if not _blocks_well_formed(content):
            return None
    elif type(content) is not str:
        return None
    msg_id, timestamp, invocation_id, metadata = get("id", ""), get("timestamp"), get("invocation_id"), get("metadata")
    if (
        type(msg_id) is not str
        or (timestamp is not None and type(timestamp) is not str)
        or (invocation_id is not None and type(invocation_id) is not str)
    ):
        return None
    if metadata is not None and type(metadata) is not dict:
        return None
    return _assemble(_new_msg(Msg), data, name, role, content, metadata, timestamp, invocation_id, msg_id)


def _assemble(
    msg: Msg, data: Mapping[str, Any], name: str, role: Role, content: Any, metadata: dict[str, Any] | None,
    timestamp: str | None, invocation_id: str | None, msg_id: str | None,
) -> Msg:
    """Fill a new, empty ``msg`` (content and metadata kept as loaded: tracked on first access)."""
    _set_name(msg, name)
    _set_role(msg, role)
    _set_content(msg, content)
    _set_metadata(msg, metadata if metadata is not None else {})
    _set_timestamp(msg, timestamp or timestamp_now())
    _set_invocation_id(msg, invocation_id)
    _set_id(msg, msg_id or short_id())
    if data.keys() <= _KNOWN_KEYS:
        _set_extra(msg, {})
    else:
        _set_extra(msg, {k: track(v, msg) for k, v in data.items() if k not in _KNOWN_KEYS})
    _set_rev(msg, 0)
    return msg


_new_msg = Msg.__new__


def _tname(value: Any) -> str:
    return "null" if value is None else type(value).__name__
