"""The closed set of sync-protocol messages, their canonical CBOR schemas and versions.

Every frame payload is the canonical CBOR array ``[type, version, body]``; ``body`` is an array
whose layout depends on ``type`` and ``version`` (see ``docs/protocol.md``). :func:`decode_message`
looks ``type`` up in :data:`MESSAGE_TYPES` -- a closed table -- and validates the body in the
record's constructor, so nothing that comes off the wire ever names a class or reaches the core
unchecked.

Versions. ``version`` is the version of the message's *layout*: a message whose layout did not
change since protocol v1 is sent as version 1 whatever the two sides speak, so a release that
speaks v1 only still reads it. A release announces what it speaks in its ``Hello``
(:class:`Versions`: protocol versions and delta formats); since a v1 release refuses a ``Hello``
with any other layout, the announcement travels as one more entry of the Hello's space list, a
16-byte value no space id can take (a v1 release ignores space ids it does not hold). Both sides
then use the highest protocol version both speak (:func:`common_protocol`), or close with
``UNSUPPORTED_VERSION`` when there is none (:func:`version_gap`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from p2pspace.core import codec
from p2pspace.core.delta import FORMAT_VERSION, HASH_SIZE, MAX_SEQ, SPACE_ID_SIZE
from p2pspace.core.identity import ENDPOINT_ID_SIZE
from p2pspace.errors import ErrorCode, MalformedError, RemoteProtocolError

PROTOCOL_VERSION = 4  # the highest protocol version this release speaks (v4: snapshots)
MIN_PROTOCOL_VERSION = 1  # the lowest
MIN_FORMAT_VERSION = 1  # the oldest delta format this release reads (it writes FORMAT_VERSION)
VERSIONS_MARK = b"p2pspace"  # how the versions entry of a Hello's space list begins
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
    SNAPSHOT = 8


Vector = tuple[tuple[bytes, int], ...]
Heads = tuple[tuple[bytes, bytes], ...]  # (creator, hash of the delta the vector names)


# -- versions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Versions:
    """What a release speaks: protocol versions ``protocol_low..protocol_high``, and delta
    formats ``formats_low..formats_high`` (it writes ``formats_high``)."""

    protocol_low: int
    protocol_high: int
    formats_low: int
    formats_high: int

    def __post_init__(self) -> None:
        for value in (self.protocol_low, self.protocol_high, self.formats_low, self.formats_high):
            if type(value) is not int or not 1 <= value < 1 << 16:
                raise MalformedError("a version is an integer in 1..65535")
        if self.protocol_low > self.protocol_high or self.formats_low > self.formats_high:
            raise MalformedError("a version range runs from low to high")

    def mark(self) -> bytes:
        """The 16-byte entry announcing these versions in a Hello's space list."""
        fields = (self.protocol_low, self.protocol_high, self.formats_low, self.formats_high)
        return VERSIONS_MARK + b"".join(v.to_bytes(2, "big") for v in fields)

    @classmethod
    def from_mark(cls, value: bytes) -> Versions:
        numbers = [int.from_bytes(value[i : i + 2], "big") for i in range(8, 16, 2)]
        low, high, formats_low, formats_high = numbers
        return cls(
            protocol_low=low, protocol_high=high, formats_low=formats_low, formats_high=formats_high
        )


OURS = Versions(
    protocol_low=MIN_PROTOCOL_VERSION,
    protocol_high=PROTOCOL_VERSION,
    formats_low=MIN_FORMAT_VERSION,
    formats_high=FORMAT_VERSION,
)
# A peer whose Hello announces nothing runs the first release: protocol v1, delta format v1.
LEGACY = Versions(protocol_low=1, protocol_high=1, formats_low=1, formats_high=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionGap:
    """Why two releases cannot sync: the peer runs (or writes) ``what`` v``peer``, and this
    release speaks (or reads) only v``low``-v``high``."""

    what: str  # "protocol" or "delta format"
    peer: int
    low: int
    high: int

    @property
    def peer_is_newer(self) -> bool:
        return self.peer > self.high

    def describe(self) -> str:
        """One line for this endpoint's log, naming both versions and who must upgrade."""
        verb, ours = ("runs", "speaks") if self.what == "protocol" else ("writes", "reads")
        advice = "upgrade p2pspace" if self.peer_is_newer else "the peer must upgrade p2pspace"
        return (
            f"{verb} {self.what} v{self.peer}; this release {ours} v{self.low}-v{self.high}: "
            f"{advice}"
        )

    def error(self) -> RemoteProtocolError:
        """The error to close with; its text (sent to the peer) names both versions."""
        verb, ours = ("run", "speaks") if self.what == "protocol" else ("write", "reads")
        return RemoteProtocolError(
            f"you {verb} {self.what} v{self.peer}; this endpoint {ours} v{self.low}-v{self.high}",
            code=ErrorCode.UNSUPPORTED_VERSION,
        )


def version_gap(theirs: Versions, ours: Versions = OURS) -> VersionGap | None:
    """Why a release announcing ``theirs`` cannot sync with ``ours``, or None if it can: no
    protocol version in common, or deltas written in a format ``ours`` cannot read."""
    low, high = ours.protocol_low, ours.protocol_high
    if theirs.protocol_high < low:
        return VersionGap(what="protocol", peer=theirs.protocol_high, low=low, high=high)
    if theirs.protocol_low > high:
        return VersionGap(what="protocol", peer=theirs.protocol_low, low=low, high=high)
    formats = (ours.formats_low, ours.formats_high)
    if not formats[0] <= theirs.formats_high <= formats[1]:
        return VersionGap(
            what="delta format", peer=theirs.formats_high, low=formats[0], high=formats[1]
        )
    return None


def common_protocol(theirs: Versions, ours: Versions = OURS) -> int:
    """The protocol version two releases use: the highest both speak (check
    :func:`version_gap` first)."""
    return min(theirs.protocol_high, ours.protocol_high)


def frame_version_gap(version: object) -> VersionGap | None:
    """Why a frame of layout ``version`` cannot be read here, or None if it can."""
    if type(version) is int and MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
        return None
    peer = version if type(version) is int and 0 < version < 1 << 16 else 0
    return VersionGap(what="protocol", peer=peer, low=MIN_PROTOCOL_VERSION, high=PROTOCOL_VERSION)


def frame_version_error(version: object) -> RemoteProtocolError | None:
    """The error refusing a frame of layout ``version`` (None if this release reads it)."""
    gap = frame_version_gap(version)
    if gap is None:
        return None
    if type(version) is not int:
        return RemoteProtocolError(
            f"unsupported protocol version {version!r}", code=ErrorCode.UNSUPPORTED_VERSION
        )
    return gap.error()


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


def _hash(value: object) -> bytes:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise MalformedError("a delta hash must be 32 bytes")
    return value


def _heads(value: object) -> Heads:
    if type(value) is not dict or len(value) > MAX_VECTOR:
        raise MalformedError("heads are a map of at most 4096 endpoint ids to delta hashes")
    return tuple(sorted((_endpoint(e), _hash(h)) for e, h in value.items()))


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """Opens a connection: who I am, which spaces I will sync with you, what I speak.

    ``reply`` is True when this Hello answers the peer's; a Hello with ``reply`` False asks the
    peer to (re)send its own. ``versions`` travels as one more entry of the space list (see the
    module docstring); a Hello without one comes from the first release (:data:`LEGACY`).
    """

    TYPE: ClassVar[MessageType] = MessageType.HELLO
    endpoint: bytes
    spaces: tuple[bytes, ...]
    reply: bool
    versions: Versions = OURS

    def __post_init__(self) -> None:
        _endpoint(self.endpoint)
        if len(self.spaces) > MAX_SPACES:
            raise MalformedError("too many spaces in Hello")
        for s in self.spaces:
            if _space(s).startswith(VERSIONS_MARK):
                raise MalformedError("a space id cannot begin as the versions entry does")
        if type(self.reply) is not bool:
            raise MalformedError("reply must be a bool")
        if type(self.versions) is not Versions:
            raise MalformedError("versions must be a Versions record")

    def layout(self) -> int:
        return 1

    def body(self) -> list[Any]:
        spaces = list(self.spaces)
        if self.versions != LEGACY:
            spaces.append(self.versions.mark())
        return [self.endpoint, spaces, self.reply]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Hello:
        endpoint, spaces, reply = _body(value, 3, "Hello")
        if type(spaces) is not list:
            raise MalformedError("Hello spaces must be an array")
        marks = [s for s in spaces if type(s) is bytes and s.startswith(VERSIONS_MARK)]
        if len(marks) > 1:
            raise MalformedError("Hello announces its versions twice")
        if marks:
            spaces = [s for s in spaces if s is not marks[0]]
            _space(marks[0])
        versions = Versions.from_mark(marks[0]) if marks else LEGACY
        return cls(endpoint=endpoint, spaces=tuple(spaces), reply=reply, versions=versions)


@dataclass(frozen=True, slots=True, kw_only=True)
class _SpaceVector:
    """Shared layout of the messages whose body is ``[space, vector]``."""

    TYPE: ClassVar[MessageType]
    space: bytes
    vector: Vector

    def __post_init__(self) -> None:
        _space(self.space)

    def layout(self) -> int:
        return 1

    def body(self) -> list[Any]:
        return [self.space, dict(self.vector)]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Any:
        space, vector = _body(value, 2, cls.__name__)
        return cls(space=space, vector=_vector(vector))


@dataclass(frozen=True, slots=True, kw_only=True)
class Revision:
    """My vector for ``space``: send me, in log order, every delta it lacks, then Synced.

    ``heads`` (protocol v2, layout 2: ``[space, vector, heads]``) names, per creator, the hash
    of the delta the vector names, so the peer can tell when it holds a different copy.
    """

    TYPE: ClassVar[MessageType] = MessageType.REVISION
    space: bytes
    vector: Vector
    heads: Heads = ()

    def __post_init__(self) -> None:
        _space(self.space)
        if len(self.heads) > MAX_VECTOR:
            raise MalformedError("too many heads in Revision")

    def layout(self) -> int:
        return 2 if self.heads else 1

    def body(self) -> list[Any]:
        if not self.heads:
            return [self.space, dict(self.vector)]
        return [self.space, dict(self.vector), dict(self.heads)]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Revision:
        if version < 2:
            space, vector = _body(value, 2, "Revision")
            return cls(space=space, vector=_vector(vector))
        space, vector, heads = _body(value, 3, "Revision")
        return cls(space=space, vector=_vector(vector), heads=_heads(heads))


@dataclass(frozen=True, slots=True, kw_only=True)
class Synced(_SpaceVector):
    """End of a catch-up stream; ``vector`` is what the stream brought the receiver up to."""

    TYPE: ClassVar[MessageType] = MessageType.SYNCED


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """The sender's executed vector for ``space`` (feeds delivery status and gap repair).

    ``digest`` (protocol v2, layout 2: ``[space, vector, digest]``) is a hash over the deltas
    the vector names (see :func:`p2pspace.sync.divergence.heads_digest`): a peer at the same
    vector with another digest holds a different copy of some delta, and asks for a Revision.
    """

    TYPE: ClassVar[MessageType] = MessageType.ACK
    space: bytes
    vector: Vector
    digest: bytes = b""

    def __post_init__(self) -> None:
        _space(self.space)
        if self.digest:
            _hash(self.digest)

    def layout(self) -> int:
        return 2 if self.digest else 1

    def body(self) -> list[Any]:
        if not self.digest:
            return [self.space, dict(self.vector)]
        return [self.space, dict(self.vector), self.digest]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Ack:
        if version < 2:
            space, vector = _body(value, 2, "Ack")
            return cls(space=space, vector=_vector(vector))
        space, vector, digest = _body(value, 3, "Ack")
        return cls(space=space, vector=_vector(vector), digest=_hash(digest))


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

    def layout(self) -> int:
        return 1

    def body(self) -> list[Any]:
        return [self.space, list(self.wires)]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Deltas:
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

    def layout(self) -> int:
        return 1

    def body(self) -> list[Any]:
        return [self.space, [list(r) for r in self.ranges]]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Fetch:
        space, ranges = _body(value, 2, "Fetch")
        if type(ranges) is not list:
            raise MalformedError("Fetch ranges must be an array")
        parsed = []
        for r in ranges:
            creator, first, last = _body(r, 3, "fetch range")
            parsed.append((creator, first, last))
        return cls(space=space, ranges=tuple(parsed))


SNAPSHOT_PARTS = ("offer", "get", "chunk", "decline")
MAX_SNAPSHOT_DATA = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """A snapshot transfer (protocol v4, :mod:`p2pspace.core.snapshot`). ``part``:

    * ``offer`` -- ``data`` is the manifest of the snapshot we would send instead of the
      closed deltas the peer's revision lacks (no stream follows);
    * ``get`` -- ask for chunk ``index`` of the manifest whose SHA-256 is ``data``;
    * ``chunk`` -- chunk ``index`` (``data``) of the manifest offered last;
    * ``decline`` -- the snapshot whose manifest hash is ``data`` did not verify here: send
      the deltas instead.
    """

    TYPE: ClassVar[MessageType] = MessageType.SNAPSHOT
    space: bytes
    part: str
    index: int
    data: bytes

    def __post_init__(self) -> None:
        _space(self.space)
        if self.part not in SNAPSHOT_PARTS:
            raise MalformedError(f"unknown snapshot part {self.part!r}")
        if type(self.index) is not int or not 0 <= self.index < 2**32:
            raise MalformedError("a snapshot chunk index is an integer in 0..2**32-1")
        if type(self.data) is not bytes or len(self.data) > MAX_SNAPSHOT_DATA:
            raise MalformedError("snapshot data is a byte string of at most 1 MiB")
        if self.part in ("get", "decline") and len(self.data) != 32:
            raise MalformedError("a snapshot get or decline names a 32-byte manifest hash")

    def layout(self) -> int:
        return 1

    def body(self) -> list[Any]:
        return [self.space, self.part, self.index, self.data]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Snapshot:
        space, part, index, data = _body(value, 4, "Snapshot")
        return cls(space=space, part=part, index=index, data=data)


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

    def layout(self) -> int:
        return 1

    def body(self) -> list[Any]:
        return [self.code, self.message]

    @classmethod
    def from_body(cls, value: object, version: int = 1) -> Error:
        code, message = _body(value, 2, "Error")
        return cls(code=code, message=message)

    @classmethod
    def of(cls, exc: RemoteProtocolError) -> Error:
        return cls(code=int(exc.code), message=str(exc)[:MAX_ERROR_TEXT])

    def error_code(self) -> ErrorCode:
        """The code as ours (MALFORMED for a code this release does not know)."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return ErrorCode.MALFORMED


Message = Hello | Revision | Deltas | Synced | Ack | Fetch | Error | Snapshot

MESSAGE_TYPES: dict[int, Any] = {
    MessageType.HELLO: Hello,
    MessageType.REVISION: Revision,
    MessageType.DELTAS: Deltas,
    MessageType.SNAPSHOT: Snapshot,
    MessageType.SYNCED: Synced,
    MessageType.ACK: Ack,
    MessageType.FETCH: Fetch,
    MessageType.ERROR: Error,
}


def encode_message(message: Message) -> bytes:
    """The frame payload of ``message``, in the layout version its fields need."""
    return codec.encode_trusted([int(message.TYPE), message.layout(), message.body()])


def decode_message(payload: bytes) -> Message:
    """Decode one frame payload. Raises :class:`RemoteProtocolError` with the right code
    (``UNSUPPORTED_VERSION``, naming both versions, for a layout this release does not read:
    :func:`payload_version_gap` says which)."""
    value = codec.decode(payload, max_depth=5)
    if type(value) is not list or len(value) != 3:
        raise MalformedError("a message is [type, version, body]")
    mtype, version, body = value
    cls = MESSAGE_TYPES.get(mtype) if type(mtype) is int else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {mtype!r}", code=ErrorCode.UNKNOWN_TYPE)
    error = frame_version_error(version)
    if error is not None:
        raise error
    message: Message = cls.from_body(body, version)
    return message


def payload_version_gap(payload: bytes) -> VersionGap | None:
    """For a payload :func:`decode_message` refused with ``UNSUPPORTED_VERSION``: the versions
    that do not meet (None if it is not that)."""
    try:
        value = codec.decode(payload, max_depth=5)
    except RemoteProtocolError:
        return None
    if type(value) is not list or len(value) != 3:
        return None
    return frame_version_gap(value[1])
