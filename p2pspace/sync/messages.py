"""The closed set of sync-protocol messages and their canonical CBOR schemas.

Every frame payload is the canonical CBOR array ``[type, version, body]``; ``body`` is an array
whose layout depends on ``type`` (see ``docs/protocol.md``). :func:`decode_message` looks ``type``
up in :data:`MESSAGE_TYPES` -- a closed table -- and validates the body in the record's
constructor, so nothing that comes off the wire ever names a class or reaches the core unchecked.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from p2pspace.core import codec
from p2pspace.core.delta import MAX_SEQ, SPACE_ID_SIZE
from p2pspace.core.identity import ENDPOINT_ID_SIZE
from p2pspace.errors import ErrorCode, MalformedError, RemoteProtocolError

PROTOCOL_VERSION = 1
MAX_SPACES = 1024
MAX_VECTOR = 4096
MAX_DELTAS_PER_FRAME = 4096
MAX_RANGES = 256
MAX_ERROR_TEXT = 500


class MessageType(enum.IntEnum):
    HELLO = 1
    REVISION = 2
    DELTAS = 3
    SYNCED = 4
    ACK = 5
    FETCH = 6
    ERROR = 7


Vector = tuple[tuple[bytes, int], ...]


def _space(value: object) -> bytes:
    if type(value) is not bytes or len(value) != SPACE_ID_SIZE:
        raise MalformedError("space id must be 16 bytes")
    return value


def _endpoint(value: object) -> bytes:
    if type(value) is not bytes or len(value) != ENDPOINT_ID_SIZE:
        raise MalformedError("endpoint id must be 16 bytes")
    return value


def _seq(value: object) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise MalformedError("seq must be an integer in 0..2**53")
    return value


def _vector(value: object) -> Vector:
    if type(value) is not dict or len(value) > MAX_VECTOR:
        raise MalformedError("a vector is a map of at most 4096 endpoint ids to seqs")
    return tuple(sorted((_endpoint(e), _seq(s)) for e, s in value.items()))


def vector_of(mapping: Mapping[bytes, int]) -> Vector:
    return tuple(sorted((e, s) for e, s in mapping.items() if s > 0))


def _body(value: object, size: int, name: str) -> list[Any]:
    if type(value) is not list or len(value) != size:
        raise MalformedError(f"{name} body must be an array of {size}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Opens a connection: who I am and which spaces I will sync with you.

    ``reply`` is True when this Hello answers the peer's; a Hello with ``reply`` False asks the
    peer to (re)send its own.
    """

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    endpoint: bytes
    spaces: tuple[bytes, ...]
    reply: bool

    def __post_init__(self) -> None:
        _endpoint(self.endpoint)
        if len(self.spaces) > MAX_SPACES:
            raise MalformedError("too many spaces in Hello")
        for s in self.spaces:
            _space(s)
        if type(self.reply) is not bool:
            raise MalformedError("reply must be a bool")

    def body(self) -> list[Any]:
        return [self.endpoint, list(self.spaces), self.reply]

    @classmethod
    def from_body(cls, value: object) -> Hello:
        endpoint, spaces, reply = _body(value, 3, "Hello")
        if type(spaces) is not list:
            raise MalformedError("Hello spaces must be an array")
        return cls(endpoint=endpoint, spaces=tuple(spaces), reply=reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class _SpaceVector:
    """Shared layout of the messages whose body is ``[space, vector]``."""

    TYPE: ClassVar[MessageType]
    space: bytes
    vector: Vector

    def __post_init__(self) -> None:
        _space(self.space)

    def body(self) -> list[Any]:
        return [self.space, dict(self.vector)]

    @classmethod
    def from_body(cls, value: object) -> Any:
        space, vector = _body(value, 2, cls.__name__)
        return cls(space=space, vector=_vector(vector))


@dataclass(frozen=True, slots=True, kw_only=True)
class Revision(_SpaceVector):
    """My vector for ``space``: send me, in log order, every delta it lacks, then Synced."""

    TYPE: ClassVar[MessageType] = MessageType.REVISION


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced(_SpaceVector):
    """End of a catch-up stream; ``vector`` is what the stream brought the receiver up to."""

    TYPE: ClassVar[MessageType] = MessageType.SYNCED


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(_SpaceVector):
    """The sender's executed vector for ``space`` (feeds delivery status and gap repair)."""

    TYPE: ClassVar[MessageType] = MessageType.ACK


@dataclass(frozen=True, slots=True, kw_only=True)
class Deltas:
    """Deltas of ``space`` as stored (``[body, signature]`` each), in causal order."""

    TYPE: ClassVar[MessageType] = MessageType.DELTAS
    space: bytes
    wires: tuple[bytes, ...]

    def __post_init__(self) -> None:
        _space(self.space)
        if not 0 < len(self.wires) <= MAX_DELTAS_PER_FRAME:
            raise MalformedError("a Deltas message carries 1..4096 deltas")
        for w in self.wires:
            if type(w) is not bytes:
                raise MalformedError("each delta is a byte string")

    def body(self) -> list[Any]:
        return [self.space, list(self.wires)]

    @classmethod
    def from_body(cls, value: object) -> Deltas:
        space, wires = _body(value, 2, "Deltas")
        if type(wires) is not list:
            raise MalformedError("Deltas must carry an array")
        return cls(space=space, wires=tuple(wires))


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch:
    """Ask for specific deltas: ``(creator, first seq, last seq)`` ranges."""

    TYPE: ClassVar[MessageType] = MessageType.FETCH
    space: bytes
    ranges: tuple[tuple[bytes, int, int], ...]

    def __post_init__(self) -> None:
        _space(self.space)
        if not 0 < len(self.ranges) <= MAX_RANGES:
            raise MalformedError("a Fetch carries 1..256 ranges")
        for creator, first, last in self.ranges:
            _endpoint(creator)
            if _seq(first) < 1 or _seq(last) < first:
                raise MalformedError("a fetch range is first..last with 1 <= first <= last")

    def body(self) -> list[Any]:
        return [self.space, [list(r) for r in self.ranges]]

    @classmethod
    def from_body(cls, value: object) -> Fetch:
        space, ranges = _body(value, 2, "Fetch")
        if type(ranges) is not list:
            raise MalformedError("Fetch ranges must be an array")
        parsed = []
        for r in ranges:
            creator, first, last = _body(r, 3, "fetch range")
            parsed.append((creator, first, last))
        return cls(space=space, ranges=tuple(parsed))


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """The sender is closing the connection because of ``code``."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR
    code: int
    message: str

    def __post_init__(self) -> None:
        if type(self.code) is not int or type(self.message) is not str:
            raise MalformedError("Error is [code, message]")
        if len(self.message) > MAX_ERROR_TEXT:
            raise MalformedError("Error message too long")

    def body(self) -> list[Any]:
        return [self.code, self.message]

    @classmethod
    def from_body(cls, value: object) -> Error:
        code, message = _body(value, 2, "Error")
        return cls(code=code, message=message)

    @classmethod
    def of(cls, exc: RemoteProtocolError) -> Error:
        return cls(code=int(exc.code), message=str(exc)[:MAX_ERROR_TEXT])


Message = Hello | Revision | Deltas | Synced | Ack | Fetch | Error

MESSAGE_TYPES: dict[int, Any] = {
    MessageType.HELLO: Hello,
    MessageType.REVISION: Revision,
    MessageType.DELTAS: Deltas,
    MessageType.SYNCED: Synced,
    MessageType.ACK: Ack,
    MessageType.FETCH: Fetch,
    MessageType.ERROR: Error,
}


def encode_message(message: Message) -> bytes:
    return codec.encode_trusted([int(message.TYPE), PROTOCOL_VERSION, message.body()])


def decode_message(payload: bytes) -> Message:
    """Decode one frame payload. Raises :class:`RemoteProtocolError` with the right code."""
    value = codec.decode(payload, max_depth=5)
    if type(value) is not list or len(value) != 3:
        raise MalformedError("a message is [type, version, body]")
    mtype, version, body = value
    cls = MESSAGE_TYPES.get(mtype) if type(mtype) is int else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {mtype!r}", code=ErrorCode.UNKNOWN_TYPE)
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise RemoteProtocolError(
            f"unsupported protocol version {version!r}", code=ErrorCode.UNSUPPORTED_VERSION
        )
    message: Message = cls.from_body(body)
    return message
