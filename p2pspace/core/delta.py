"""Deltas: the signed, sequenced unit of replicated change.

Theory of operation. A delta is identified by ``(creator, seq)``; ``seq`` counts from 1 per
creator per space without gaps. Its *body* is the canonical CBOR array

    [1, space, creator, seq, rank, deps, prev, time, commands]

where ``deps`` is the dependency vector *diff-encoded* against the creator's previous delta (only
the entries that grew; the creator's own entry is implicit: ``seq - 1``), ``prev`` is the SHA-256
of the creator's previous delta body (empty for ``seq == 1``) and ``commands`` is a list of
``[engine instance, command name, args]``. The genesis delta of a space has an empty ``space``
field: the space id is the first 16 bytes of SHA-256 over the genesis body.

On the wire and in the store a delta is ``[body bytes, signature or null]``. The signature is
Ed25519 by the creator over the body bytes. A delta may be unsigned when a later delta of the same
creator is signed and the ``prev`` hashes chain back to it (group commit signs once per batch);
such a delta is authentic only together with its chain.

The *order key* ``(block, rank, creator, seq)`` decides the one total order every replica
executes. ``block`` is 0 until priority deltas exist.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from p2pspace.core import codec
from p2pspace.core.identity import ENDPOINT_ID_SIZE, SIGNATURE_SIZE
from p2pspace.errors import MalformedError, UnsupportedFormatError

FORMAT_VERSION = 1
SPACE_ID_SIZE = 16
HASH_SIZE = 32
MAX_SEQ = 2**53
MAX_COMMANDS = 256
MAX_BODY_SIZE = 64 * 1024
MAX_DEPS = 4096
MAX_NAME = 64


class DeltaId(NamedTuple):
    creator: bytes
    seq: int


OrderKey = tuple[int, int, bytes, int]
"""``(block, rank, creator, seq)``: a plain tuple, compared lexicographically (hot path)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One engine command: ``engine`` is the engine instance name within the space."""

    engine: str
    name: str
    args: Any

    def __post_init__(self) -> None:
        # ``args`` is checked where it is encoded (make_body) or decoded (decode_delta), once.
        for label, text in (("engine", self.engine), ("name", self.name)):
            if type(text) is not str or not 0 < len(text) <= MAX_NAME:
                raise MalformedError(f"command {label} must be a short non-empty string")

    def to_wire(self) -> list[Any]:
        return [self.engine, self.name, self.args]


def _check_id(value: object, label: str) -> bytes:
    if type(value) is not bytes or len(value) != ENDPOINT_ID_SIZE:
        raise MalformedError(f"{label} must be {ENDPOINT_ID_SIZE} bytes")
    return value


def _check_seq(value: object, label: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_SEQ:
        raise MalformedError(f"{label} must be an integer in 1..2**53")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Delta:
    """A decoded, structurally valid delta. Authenticity is checked by the causal buffer."""

    space: bytes
    creator: bytes
    seq: int
    rank: int
    deps: tuple[tuple[bytes, int], ...]
    prev: bytes
    time: int
    commands: tuple[Command, ...]
    signature: bytes | None
    body: bytes
    hash: bytes

    @property
    def id(self) -> DeltaId:
        return DeltaId(self.creator, self.seq)

    @property
    def order_key(self) -> OrderKey:
        return (0, self.rank, self.creator, self.seq)

    @property
    def is_genesis(self) -> bool:
        return self.space == b""

    def wire(self) -> bytes:
        """The delta as stored and sent: canonical ``[body, signature]``."""
        sig = b"\xf6" if self.signature is None else b"\x58\x40" + self.signature
        return b"\x82" + _bstr_header(len(self.body)) + self.body + sig

    def with_signature(self, signature: bytes) -> Delta:
        return Delta(
            space=self.space,
            creator=self.creator,
            seq=self.seq,
            rank=self.rank,
            deps=self.deps,
            prev=self.prev,
            time=self.time,
            commands=self.commands,
            signature=signature,
            body=self.body,
            hash=self.hash,
        )


def make_body(
    *,
    space: bytes,
    creator: bytes,
    seq: int,
    rank: int,
    deps: Mapping[bytes, int],
    prev: bytes,
    time: int,
    commands: Sequence[Command],
) -> Delta:
    """Build an unsigned delta from its fields (local creation). Validates like decoding does."""
    body_value = [
        FORMAT_VERSION,
        space,
        creator,
        seq,
        rank,
        dict(sorted(deps.items())),  # canonical key order (equal-length ids sort bytewise)
        prev,
        time,
        [c.to_wire() for c in commands],
    ]
    for command in commands:
        codec.check_value(command.args)
    if not 0 < len(commands) <= MAX_COMMANDS:
        raise MalformedError("a delta holds 1..256 commands")
    # Fixed fields are canonical by construction (deps sorted, 16-byte keys); only the
    # commands' arguments are free-form.
    body = codec.encode_layout(body_value, [c.args for c in commands])
    if len(body) > MAX_BODY_SIZE:
        raise MalformedError("delta body exceeds 64 KiB")
    return _from_body_value(body_value, body, None, check_args=False, parsed=tuple(commands))


def _bstr_header(length: int) -> bytes:
    """Canonical (shortest) CBOR byte-string header."""
    if length < 24:
        return bytes((0x40 + length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    return b"\x5a" + length.to_bytes(4, "big")


def _split_wire(wire: bytes) -> tuple[bytes, bytes | None]:
    """Parse the fixed outer shape ``[body, signature]`` (canonical encoding only)."""
    if type(wire) is not bytes or len(wire) < 3 or wire[0] != 0x82:
        raise MalformedError("a delta is [body, signature]")
    head = wire[1]
    if 0x40 <= head < 0x58:
        length, start = head - 0x40, 2
    elif head == 0x58:
        length, start = wire[2], 3
    elif head == 0x59:
        length, start = int.from_bytes(wire[2:4], "big"), 4
    elif head == 0x5A:
        length, start = int.from_bytes(wire[2:6], "big"), 6
    else:
        raise MalformedError("delta body must be a byte string")
    if length > MAX_BODY_SIZE:
        raise MalformedError("delta body must be a byte string of at most 64 KiB")
    end = start + length
    body = wire[start:end]
    if len(body) != length or _bstr_header(length) != wire[1:start]:
        raise MalformedError("truncated or non-canonical delta body")
    rest = wire[end:]
    if rest == b"\xf6":
        return body, None
    if len(rest) == 2 + SIGNATURE_SIZE and rest[:2] == b"\x58\x40":
        return body, rest[2:]
    raise MalformedError("delta signature must be 64 bytes or null, with nothing after it")


def decode_delta(wire: bytes) -> Delta:
    """Decode a stored or received delta. Raises :class:`MalformedError` if it is not one."""
    body, signature = _split_wire(wire)
    # Every fixed field is type-checked below; only command args are walked by check_value.
    value = codec.decode(body, check=False)
    return _from_body_value(value, body, signature, check_args=True)


def _from_body_value(
    value: Any,
    body: bytes,
    signature: bytes | None,
    *,
    check_args: bool,
    parsed: tuple[Command, ...] | None = None,
) -> Delta:
    if type(value) is not list or len(value) != 9:
        raise MalformedError("delta body must be a 9-element array")
    version, space, creator, seq, rank, deps, prev, time, commands = value
    # Exact-type checks, inlined: this runs once per received delta.
    if type(version) is not int:
        raise MalformedError(f"delta format must be an integer, not {version!r}")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"delta format {version} is not format {FORMAT_VERSION}, the one this release "
            "reads: it was made by a newer p2pspace; upgrade to read it"
        )
    if type(space) is not bytes or len(space) not in (0, SPACE_ID_SIZE):
        raise MalformedError("space id must be 16 bytes (or empty in a genesis delta)")
    if type(creator) is not bytes or len(creator) != ENDPOINT_ID_SIZE:
        raise MalformedError(f"creator must be {ENDPOINT_ID_SIZE} bytes")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise MalformedError("seq must be an integer in 1..2**53")
    if type(rank) is not int or not seq <= rank <= MAX_SEQ:
        # The creator's own chain raises rank by at least 1 per delta, so rank >= seq.
        raise MalformedError("rank must be an integer in seq..2**53")
    if type(deps) is not dict or len(deps) > MAX_DEPS:
        raise MalformedError("deps must be a map of at most 4096 entries")
    pairs: list[tuple[bytes, int]] = []
    if deps:
        for endpoint, dep_seq in deps.items():
            _check_id(endpoint, "dependency endpoint")
            _check_seq(dep_seq, "dependency seq")
            if endpoint == creator:
                raise MalformedError("deps must not name the creator (its entry is seq - 1)")
            # Every dependency head has rank >= its seq and a lower rank than this delta.
            if dep_seq >= rank:
                raise MalformedError("a dependency seq must be lower than the delta's rank")
            pairs.append((endpoint, dep_seq))
        pairs.sort()
    if seq == 1:
        if prev != b"":
            raise MalformedError("the first delta of a creator has an empty prev hash")
    elif type(prev) is not bytes or len(prev) != HASH_SIZE:
        raise MalformedError("prev hash must be 32 bytes")
    if type(time) is not int or not 0 <= time < 2**63:
        raise MalformedError("time must be a non-negative integer (ms)")
    if type(commands) is not list or not 0 < len(commands) <= MAX_COMMANDS:
        raise MalformedError("a delta holds 1..256 commands")
    if parsed is None:
        built: list[Command] = []
        for item in commands:
            if type(item) is not list or len(item) != 3:
                raise MalformedError("a command is [engine, name, args]")
            if check_args:
                codec.check_value(item[2], max_depth=codec.MAX_DEPTH - 3)
            built.append(Command(engine=item[0], name=item[1], args=item[2]))
        parsed = tuple(built)
    if space == b"" and (seq != 1 or rank != 1 or pairs):
        raise MalformedError("only a creator's first delta, with rank 1 and no deps, is genesis")
    return Delta(
        space=space,
        creator=creator,
        seq=seq,
        rank=rank,
        deps=tuple(pairs),
        prev=prev,
        time=time,
        commands=parsed,
        signature=signature,
        body=body,
        hash=hashlib.sha256(body).digest(),
    )


def space_id_of(genesis: Delta) -> bytes:
    """The self-certifying space id: first 16 bytes of SHA-256 of the genesis body."""
    return genesis.hash[:SPACE_ID_SIZE]


def diff_vector(previous: Mapping[bytes, int], current: Mapping[bytes, int]) -> dict[bytes, int]:
    """The entries of ``current`` that grew since ``previous`` (the wire form of deps)."""
    return {e: s for e, s in current.items() if s > previous.get(e, 0)}


def covers(vector: Mapping[bytes, int], ids: Iterable[DeltaId]) -> bool:
    return all(vector.get(c, 0) >= s for c, s in ids)
