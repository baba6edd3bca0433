"""Canonical CBOR: round trips, canonical form, and strict refusal of everything else."""

from __future__ import annotations

import math
import random
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.errors import MalformedError

HYPOTHESIS = settings(max_examples=150, deadline=None, derandomize=True, database=None)

scalars = (
    st.integers(min_value=codec.INT_MIN, max_value=codec.INT_MAX)
    | st.binary(max_size=40)
    | st.text(max_size=40)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
)
keys = st.text(max_size=10) | st.binary(max_size=10)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equality that tells ``True`` from ``1``, ``1.0`` from ``1`` and ``-0.0`` from ``0.0``."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@HYPOTHESIS
@given(values)
def test_round_trip_and_canonical(value: Any) -> None:
    data = codec.encode(value)
    back = codec.decode(data)
    assert same(back, value)
    assert codec.encode(back) == data
    assert same(codec.decode_canonical(data), value)
    assert codec.encode_trusted(value) == data


@HYPOTHESIS
@given(st.dictionaries(keys, scalars, min_size=2, max_size=8))
def test_map_encoding_does_not_depend_on_insertion_order(value: dict[Any, Any]) -> None:
    reversed_value = dict(reversed(list(value.items())))
    assert codec.encode(reversed_value) == codec.encode(value)


@pytest.mark.parametrize(
    "value", [codec.INT_MIN, codec.INT_MAX, 0, -1, 23, 24, 255, 256, 2**32, -(2**32) - 1]
)
def test_integer_bounds_round_trip(value: int) -> None:
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        codec.INT_MAX + 1,
        codec.INT_MIN - 1,
        2**100,
        float("nan"),
        float("inf"),
        -float("inf"),
        (1, 2),
        {1, 2},
        frozenset(),
        {1: "int key"},
        {(1,): "tuple key"},
        bytearray(b"x"),
        object(),
        [1, [2, {"a": float("nan")}]],
        nest(codec.MAX_DEPTH + 1),
    ],
    ids=repr,
)
def test_encode_refuses_values_outside_the_set(value: Any) -> None:
    with pytest.raises(MalformedError):
        codec.encode(value)


def test_depth_limit_boundary() -> None:
    ok = codec.encode(nest(codec.MAX_DEPTH))
    assert codec.decode(ok) == nest(codec.MAX_DEPTH)
    too_deep = b"\x81" * (codec.MAX_DEPTH + 1) + b"\x01"
    with pytest.raises(MalformedError):
        codec.decode(too_deep)
    # Deep maps as well as arrays; and far deeper than the limit (no RecursionError).
    deep_maps = b"\xa1\x61a" * (codec.MAX_DEPTH + 1) + b"\x01"
    with pytest.raises(MalformedError):
        codec.decode(deep_maps)
    with pytest.raises(MalformedError):
        codec.decode(b"\x81" * 100_000 + b"\x01")
    # A caller-chosen max_depth is honoured.
    with pytest.raises(MalformedError):
        codec.decode(codec.encode(nest(3)), max_depth=2)
    assert codec.decode(codec.encode(nest(2)), max_depth=2) == nest(2)


UNKNOWN_TAGS = [6, 7, 21, 22, 23, 24, 32, 33, 34, 262, 1000, 1040, 40000, 2**32, 2**64 - 1]


@pytest.mark.parametrize("tag", list(codec.BUILTIN_SEMANTIC_TAGS) + UNKNOWN_TAGS)
@pytest.mark.parametrize(
    "inner", [1, b"\x00" * 4, "2020-01-01T00:00:00Z", [1, 2], {"a": 1}], ids=repr
)
def test_every_tag_is_refused(tag: int, inner: Any) -> None:
    data = cbor2.dumps(cbor2.CBORTag(tag, inner))
    with pytest.raises(MalformedError):
        codec.decode(data)
    nested = cbor2.dumps([0, {"k": [cbor2.CBORTag(tag, inner)]}])
    with pytest.raises(MalformedError):
        codec.decode(nested)


def _cbor2_handles_natively(tag: int) -> bool:
    try:
        result = cbor2.loads(cbor2.dumps(cbor2.CBORTag(tag, 1)))
    except Exception:
        return True  # a semantic decoder ran (and disliked the payload)
    return not isinstance(result, cbor2.CBORTag)


def test_builtin_semantic_tags_is_complete() -> None:
    """Fails when a cbor2 upgrade starts decoding a tag that codec does not list."""
    probed = [*range(0, 1101), 43000, 55799]
    native = {tag for tag in probed if _cbor2_handles_natively(tag)}
    missing = native - set(codec.BUILTIN_SEMANTIC_TAGS)
    assert not missing, f"cbor2 decodes tags codec does not refuse explicitly: {sorted(missing)}"
    # The probe is real: cbor2 does decode some of these by itself.
    assert {1, 2, 258, 55799} <= native


def _head(major: int, length: int) -> bytes:
    return bytes([major << 5 | 27]) + length.to_bytes(8, "big")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x9f\x01\xff", id="indefinite-array"),
        pytest.param(b"\xbf\x61a\x01\xff", id="indefinite-map"),
        pytest.param(b"\x5f\x41a\xff", id="indefinite-bytes"),
        pytest.param(b"\x7f\x61a\xff", id="indefinite-text"),
        pytest.param(b"\xa2\x61a\x01\x61a\x02", id="duplicate-text-key"),
        pytest.param(b"\xa2\x41a\x01\x41a\x02", id="duplicate-bytes-key"),
        pytest.param(b"\x01\x02", id="trailing-byte"),
        pytest.param(codec.encode([1, 2]) + b"\x00", id="trailing-after-array"),
        pytest.param(b"\x82\x01", id="truncated-array"),
        pytest.param(b"\x45abc", id="truncated-bytes"),
        pytest.param(b"\x19\x01", id="truncated-int"),
        pytest.param(b"\xfb\x00\x00", id="truncated-float"),
        pytest.param(cbor2.dumps(float("nan")), id="nan"),
        pytest.param(b"\xf9\x7e\x00", id="nan16"),
        pytest.param(b"\xfa\x7f\xc0\x00\x00", id="nan32"),
        pytest.param(cbor2.dumps(float("inf")), id="inf"),
        pytest.param(b"\xf9\xfc\x00", id="minus-inf16"),
        pytest.param(_head(2, 2**64 - 1), id="huge-bytes"),
        pytest.param(_head(3, 2**64 - 1), id="huge-text"),
        pytest.param(_head(4, 2**64 - 1), id="huge-array"),
        pytest.param(_head(5, 2**64 - 1), id="huge-map"),
        pytest.param(_head(2, 2**31), id="2GiB-bytes"),
        pytest.param(b"\x82" + _head(2, 2**40) + b"x", id="huge-bytes-in-array"),
        pytest.param(b"\x3b" + b"\xff" * 8, id="negative-int-below-range"),
        pytest.param(b"\xc2\x49\x01" + b"\x00" * 8, id="bignum"),
        pytest.param(b"\xf7", id="undefined"),
        pytest.param(b"\xf0", id="simple-value"),
        pytest.param(b"\xf8\x20", id="simple-value-8bit"),
        pytest.param(b"\xff", id="lone-break"),
        pytest.param(b"\x1c", id="reserved-additional-info"),
        pytest.param(b"\x62\xff\xfe", id="invalid-utf8"),
        pytest.param(b"\xa1\x01\x01", id="int-key"),
        pytest.param(b"\xa1\x80\x01", id="array-key"),
        pytest.param(b"\xa1\xf6\x01", id="null-key"),
        pytest.param(b"\xd8\x1c\x01", id="shareable-tag"),
        pytest.param(b"\xd9\xd9\xf7\x01", id="self-describe-tag"),
    ],
)
def test_malformed_input_is_malformed_error(data: bytes) -> None:
    with pytest.raises(MalformedError):
        codec.decode(data)
    with pytest.raises(MalformedError):
        codec.decode_canonical(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x18\x01", id="int-not-shortest"),
        pytest.param(b"\x59\x00\x01a", id="bytes-length-not-shortest"),
        pytest.param(b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00", id="float-not-shortest"),
        pytest.param(b"\xa2\x62bb\x01\x61a\x02", id="map-keys-unsorted"),
    ],
)
def test_decode_canonical_refuses_non_canonical_forms(data: bytes) -> None:
    value = codec.decode(data)  # well-formed, just not the one encoding
    assert codec.encode(value) != data
    with pytest.raises(MalformedError):
        codec.decode_canonical(data)


def test_huge_declared_length_is_refused_quickly() -> None:
    data = b"\x5b" + b"\xff" * 8
    with pytest.raises(MalformedError):
        codec.decode(data)


@HYPOTHESIS
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_malformed_error(data: bytes) -> None:
    try:
        value = codec.decode(data)
    except MalformedError:
        return
    codec.check_value(value)


@HYPOTHESIS
@given(values, st.integers(min_value=0, max_value=2**32 - 1))
def test_mutated_encodings_only_raise_malformed_error(value: Any, seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(codec.encode(value))
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(3)
        if choice == 0 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            del data[rng.randrange(len(data)) :]
        else:
            data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    try:
        back = codec.decode(bytes(data))
    except MalformedError:
        return
    codec.check_value(back)


_KEYS = st.one_of(st.text(max_size=30), st.binary(max_size=30))
_SCALARS = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=10),
    st.binary(max_size=10),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
_NESTED = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(_NESTED)
def test_fast_encoding_is_byte_identical_to_canonical(value: object) -> None:
    # encode() takes cbor2's plain encoder when a value is already in canonical order.
    assert codec.encode(value) == cbor2.dumps(value, canonical=True)


def test_values_in_canonical_order_take_the_fast_path() -> None:
    assert codec._plain_is_canonical({"table": "t", "fields": {"v": 1}, "record": "r"}, 8)
    assert not codec._plain_is_canonical({"record": "r", "table": "t"}, 8)
    assert not codec._plain_is_canonical([1.5], 8)
