"""Canonical CBOR: the one encoding of everything p2pspace signs, stores or sends.

Theory of operation. Values are restricted to a small closed set of CBOR-native types --
``int`` (signed 64-bit), ``bytes``, ``str``, ``bool``, ``None``, finite ``float``, ``list`` and
``dict`` with ``str`` or ``bytes`` keys -- so that one value has exactly one encoding (RFC 8949 core
deterministic encoding, as produced by ``cbor2.dumps(canonical=True)``). Decoding of peer bytes
goes through :func:`decode`, which refuses tags, indefinite lengths, duplicate keys, deep nesting
and any type outside the set, and translates every ``cbor2`` failure into
:class:`~p2pspace.errors.MalformedError`. Nothing decoded from the wire ever names a Python class.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import cbor2

from p2pspace.errors import MalformedError

MAX_DEPTH = 16
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

Value = Any
"""A CBOR-native value (see the module docstring for the closed set of types)."""


def _refuse_tag(decoder: object, tag: object) -> object:
    raise MalformedError("CBOR tags are not allowed")


def _refuse_semantic(decoder: Any, immutable: bool = False) -> Any:
    raise MalformedError("CBOR tags are not allowed")


# Every tag cbor2 would otherwise decode by itself (dates, bignums, decimals, shared references,
# sets, regexes, IP addresses, self-describe, ...) is refused; any other tag reaches
# ``_refuse_tag``. The list is what cbor2 decodes natively (probed in tests/test_codec.py).
BUILTIN_SEMANTIC_TAGS = (
    0,
    1,
    2,
    3,
    4,
    5,
    25,
    28,
    29,
    30,
    35,
    36,
    37,
    52,
    54,
    100,
    256,
    258,
    260,
    261,
    1004,
    43000,
    55799,
)
_NO_SEMANTICS: dict[int, Any] = {tag: _refuse_semantic for tag in BUILTIN_SEMANTIC_TAGS}


def encode(value: Value) -> bytes:
    """Encode ``value`` canonically. Raises ``MalformedError`` if it holds a disallowed type."""
    check_value(value)
    return _dumps(value)


def encode_layout(value: Value, free: Sequence[Value]) -> bytes:
    """Canonical encoding of ``value`` whose fixed parts the caller built in canonical form
    (maps in canonical key order, no floats); only the ``free`` parts are walked."""
    if all(_plain_is_canonical(part, MAX_DEPTH) for part in free):
        return cbor2.dumps(value)
    return cbor2.dumps(value, canonical=True)


def _dumps(value: Value) -> bytes:
    # cbor2's plain encoder writes maps in insertion order and floats as float64; its canonical
    # mode sorts map keys and shortens floats, at about twice the cost. When every map is
    # already in canonical key order and there is no float, both give the same bytes.
    if _plain_is_canonical(value, MAX_DEPTH + 2):
        return cbor2.dumps(value)
    return cbor2.dumps(value, canonical=True)


def _plain_is_canonical(value: Value, depth: int) -> bool:
    """True if cbor2's plain encoding of ``value`` equals its canonical encoding."""
    t = type(value)
    if t is list:
        if depth <= 0:
            return False
        for item in value:
            it = type(item)
            if (it is list or it is dict or it is float) and not _plain_is_canonical(
                item, depth - 1
            ):
                return False
        return True
    if t is dict:
        if depth <= 0:
            return False
        previous: tuple[int, int, bytes] | None = None
        for key, item in value.items():
            # Canonical (RFC 7049 length-first) order: shorter encoded key first, then bytewise.
            kt = type(key)
            if kt is str:
                raw = key.encode()
                order = (len(raw), 0x60, raw)
            elif kt is bytes:
                order = (len(key), 0x40, key)
            else:
                return False
            if order[0] >= 24 or (previous is not None and order <= previous):
                return False
            previous = order
            it = type(item)
            if (it is list or it is dict or it is float) and not _plain_is_canonical(
                item, depth - 1
            ):
                return False
        return True
    return t is not float


def encode_trusted(value: Value) -> bytes:
    """Encode a value built by this process from already-checked parts (no type walk)."""
    return _dumps(value)


def decode(data: bytes, *, max_depth: int = MAX_DEPTH, check: bool = True) -> Value:
    """Decode one canonical CBOR item from ``data`` (which must hold exactly that item).

    Raises :class:`MalformedError` (the peer misbehaved) for anything that is not well-formed,
    not canonical-typed, nested too deeply, or followed by trailing bytes. With ``check=False``
    the caller takes over the type walk of :func:`check_value` (tags, indefinite lengths,
    duplicate keys, non-string keys, depth and trailing bytes are still refused here): decoders
    of fixed schemas check each field's exact type and walk only the free-form parts.
    """
    fp = io.BytesIO(data)
    try:
        value = cbor2.load(
            fp,
            tag_hook=_refuse_tag,
            semantic_decoders=_NO_SEMANTICS,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except MalformedError:
        raise
    except Exception as exc:  # cbor2 raises a range of types on hostile input
        raise MalformedError(f"undecodable CBOR: {type(exc).__name__}: {exc}") from None
    if fp.tell() != len(data):
        raise MalformedError("trailing bytes after the CBOR item")
    if check:
        check_value(value, max_depth=max_depth)
    return value


def encode_local(value: Value) -> bytes:
    """Encode a value that never leaves this endpoint and is never compared across endpoints
    (undo records): plain CBOR, read back with :func:`decode_stored`."""
    return cbor2.dumps(value)


def decode_stored(data: bytes) -> Value:
    """Decode bytes this process wrote itself (engine state, undo records): no peer input.

    Raises :class:`MalformedError` if the bytes are corrupt, without the checks of
    :func:`decode` that guard against hostile input.
    """
    try:
        return cbor2.loads(data)
    except Exception as exc:
        raise MalformedError(f"corrupt stored CBOR: {type(exc).__name__}: {exc}") from None


def decode_canonical(data: bytes, *, max_depth: int = MAX_DEPTH) -> Value:
    """Like :func:`decode`, and also refuse any encoding that is not the canonical one."""
    value = decode(data, max_depth=max_depth)
    if _dumps(value) != bytes(data):
        raise MalformedError("CBOR is not in canonical form")
    return value


def check_value(value: Value, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``MalformedError`` unless ``value`` is within the closed set of CBOR-native types."""
    _check(value, max_depth)


_SCALARS = frozenset({bytes, str, bool, type(None)})


def _check(value: Value, depth: int) -> None:
    t = type(value)
    if t in _SCALARS:
        return
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise MalformedError("integer out of 64-bit range")
        return
    if t is float:
        if not math.isfinite(value):
            raise MalformedError("non-finite float")
        return
    if depth <= 0:
        raise MalformedError("value nested too deeply")
    if t is list:
        items = value
    elif t is dict:
        for key in value:
            if type(key) is not str and type(key) is not bytes:
                raise MalformedError("map keys must be text or byte strings")
        items = value.values()
    else:
        raise MalformedError(f"type {t.__name__} is not allowed in p2pspace values")
    scalars = _SCALARS
    for item in items:
        it = type(item)
        # Scalars are checked inline: most values are flat maps of strings and small ints.
        if it in scalars:
            continue
        if it is int and INT_MIN <= item <= INT_MAX:
            continue
        _check(item, depth - 1)
