"""Deltas: body construction, decoding, signatures and every malformed shape."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.core.delta import (
    FORMAT_VERSION,
    MAX_BODY_SIZE,
    MAX_COMMANDS,
    MAX_SEQ,
    Command,
    Delta,
    DeltaId,
    covers,
    decode_delta,
    diff_vector,
    make_body,
    space_id_of,
)
from p2pspace.core.identity import Identity
from p2pspace.errors import ErrorCode, MalformedError, UnsupportedFormatError

HYPOTHESIS = settings(max_examples=100, deadline=None, derandomize=True, database=None)

ALICE = Identity.from_seed(b"delta-alice")
BOB = Identity.from_seed(b"delta-bob")
SPACE = b"S" * 16
PREV = b"P" * 32

names = st.text(min_size=1, max_size=20)
field_values = st.recursive(
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=30)
    | st.binary(max_size=30)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
rdb_args = st.fixed_dictionaries(
    {
        "table": names,
        "record": names,
        "fields": st.dictionaries(names, field_values, min_size=1, max_size=5),
    }
)
commands = st.builds(
    Command,
    engine=st.sampled_from(["db", "members", "notes"]),
    name=st.sampled_from(["create", "set", "delete"]),
    args=rdb_args,
)
endpoint_ids = st.binary(min_size=16, max_size=16)


@st.composite
def delta_fields(draw: st.DrawFn) -> dict[str, Any]:
    creator = draw(endpoint_ids)
    seq = draw(st.integers(min_value=1, max_value=MAX_SEQ))
    rank = draw(st.integers(min_value=seq, max_value=MAX_SEQ))
    deps = draw(
        st.dictionaries(
            endpoint_ids.filter(lambda e: e != creator),
            st.integers(min_value=1, max_value=rank - 1) if rank > 1 else st.nothing(),
            max_size=4 if rank > 1 else 0,
        )
    )
    return {
        "space": draw(st.sampled_from([SPACE, b"\x01" * 16])),
        "creator": creator,
        "seq": seq,
        "rank": rank,
        "deps": deps,
        "prev": b"" if seq == 1 else draw(st.binary(min_size=32, max_size=32)),
        "time": draw(st.integers(min_value=0, max_value=2**63 - 1)),
        "commands": draw(st.lists(commands, min_size=1, max_size=4)),
    }


def base_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "space": SPACE,
        "creator": ALICE.endpoint_id,
        "seq": 2,
        "rank": 5,
        "deps": {BOB.endpoint_id: 3},
        "prev": PREV,
        "time": 1234,
        "commands": [Command(engine="db", name="create", args={"table": "t", "record": "r"})],
    }
    fields.update(overrides)
    return fields


def body_value(**overrides: Any) -> list[Any]:
    """The raw CBOR body array, so that tests can break it in ways make_body refuses."""
    f = base_fields()
    value = [
        FORMAT_VERSION,
        f["space"],
        f["creator"],
        f["seq"],
        f["rank"],
        f["deps"],
        f["prev"],
        f["time"],
        [c.to_wire() for c in f["commands"]],
    ]
    order = ["version", "space", "creator", "seq", "rank", "deps", "prev", "time", "commands"]
    for key, new in overrides.items():
        value[order.index(key)] = new
    return value


def wire_of(body: list[Any] | bytes, signature: Any = None) -> bytes:
    raw = body if isinstance(body, bytes) else codec.encode(body)
    return codec.encode([raw, signature])


@HYPOTHESIS
@given(delta_fields())
def test_make_body_decode_round_trip(fields: dict[str, Any]) -> None:
    unsigned = make_body(**fields)
    assert unsigned.signature is None
    assert unsigned.hash == hashlib.sha256(unsigned.body).digest()
    assert dict(unsigned.deps) == fields["deps"]
    assert list(unsigned.deps) == sorted(unsigned.deps)

    decoded = decode_delta(unsigned.wire())
    assert decoded == unsigned
    assert decoded.id == DeltaId(fields["creator"], fields["seq"])
    assert decoded.commands == tuple(fields["commands"])

    signed = unsigned.with_signature(ALICE.sign(unsigned.body))
    assert signed.body == unsigned.body and signed.hash == unsigned.hash
    back = decode_delta(signed.wire())
    assert back == signed
    assert back.signature == signed.signature
    # The wire form is stable: re-encoding the decoded delta gives the same bytes.
    assert back.wire() == signed.wire()
    assert decode_delta(back.wire()).wire() == signed.wire()
    assert codec.decode_canonical(signed.wire()) == [signed.body, signed.signature]
    assert back.order_key == (0, fields["rank"], fields["creator"], fields["seq"])


def test_make_body_is_canonical_and_deterministic() -> None:
    a = make_body(**base_fields(deps={BOB.endpoint_id: 3, ALICE.endpoint_id[::-1]: 1}))
    b = make_body(**base_fields(deps={ALICE.endpoint_id[::-1]: 1, BOB.endpoint_id: 3}))
    assert a.body == b.body and a.hash == b.hash
    assert codec.decode_canonical(a.body)[0] == FORMAT_VERSION


def test_order_key_sorts_by_block_rank_creator_seq() -> None:
    low, high = sorted([ALICE.endpoint_id, BOB.endpoint_id])
    deltas = [
        make_body(**base_fields(creator=high, seq=1, rank=2, deps={}, prev=b"")),
        make_body(**base_fields(creator=low, seq=1, rank=2, deps={}, prev=b"")),
        make_body(**base_fields(creator=high, seq=1, rank=1, deps={}, prev=b"")),
        make_body(**base_fields(creator=low, seq=3, rank=3, deps={}, prev=PREV)),
    ]
    keys = sorted(d.order_key for d in deltas)
    assert keys == [
        (0, 1, high, 1),
        (0, 2, low, 1),
        (0, 2, high, 1),
        (0, 3, low, 3),
    ]


def test_space_id_of_is_prefix_of_genesis_hash() -> None:
    genesis = make_body(
        **base_fields(space=b"", seq=1, rank=1, deps={}, prev=b"", creator=ALICE.endpoint_id)
    )
    assert genesis.is_genesis
    assert space_id_of(genesis) == hashlib.sha256(genesis.body).digest()[:16]
    other = make_body(**base_fields(space=b"", seq=1, rank=1, deps={}, prev=b"", time=99))
    assert space_id_of(other) != space_id_of(genesis)
    assert not make_body(**base_fields()).is_genesis


def test_with_signature_keeps_body_and_changes_wire() -> None:
    unsigned = make_body(**base_fields())
    signature = ALICE.sign(unsigned.body)
    signed = unsigned.with_signature(signature)
    assert signed.signature == signature
    assert unsigned.signature is None  # frozen: the original is unchanged
    assert signed.wire() != unsigned.wire()
    assert codec.decode(signed.wire()) == [unsigned.body, signature]
    assert codec.decode(unsigned.wire()) == [unsigned.body, None]


def test_diff_vector_and_covers() -> None:
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    assert diff_vector({a: 1, b: 2}, {a: 1, b: 3, c: 1}) == {b: 3, c: 1}
    assert diff_vector({a: 5}, {a: 5}) == {}
    assert covers({a: 2, b: 1}, [DeltaId(a, 2), DeltaId(b, 1)])
    assert not covers({a: 2}, [DeltaId(a, 3)])
    assert not covers({}, [DeltaId(c, 1)])


# -- malformed shapes ----------------------------------------------------------------------

MALFORMED_BODIES: dict[str, Any] = {
    "not-an-array": {"a": 1},
    "8-elements": body_value()[:8],
    "10-elements": [*body_value(), 0],
    "version-2": body_value(version=2),
    "version-bool": body_value(version=True),
    "version-float": body_value(version=1.0),
    "space-15-bytes": body_value(space=b"S" * 15),
    "space-text": body_value(space="S" * 16),
    "creator-15-bytes": body_value(creator=b"C" * 15),
    "creator-17-bytes": body_value(creator=b"C" * 17),
    "creator-text": body_value(creator="C" * 16),
    "seq-0": body_value(seq=0, rank=5),
    "seq-negative": body_value(seq=-1),
    "seq-too-big": body_value(seq=MAX_SEQ + 1, rank=MAX_SEQ + 1),
    "seq-text": body_value(seq="2"),
    "seq-float": body_value(seq=2.0),
    "seq-bool": body_value(seq=True, prev=b""),
    "rank-0": body_value(rank=0),
    "rank-too-big": body_value(rank=MAX_SEQ + 1),
    "rank-below-seq": body_value(seq=4, rank=3, deps={}),
    "deps-list": body_value(deps=[[BOB.endpoint_id, 1]]),
    "deps-key-15-bytes": body_value(deps={b"B" * 15: 1}),
    "deps-key-text": body_value(deps={"B" * 16: 1}),
    "deps-seq-0": body_value(deps={BOB.endpoint_id: 0}),
    "deps-seq-text": body_value(deps={BOB.endpoint_id: "1"}),
    "deps-name-creator": body_value(deps={ALICE.endpoint_id: 1}),
    "dep-seq-equals-rank": body_value(deps={BOB.endpoint_id: 5}),
    "dep-seq-above-rank": body_value(deps={BOB.endpoint_id: 6}),
    "prev-at-seq-1": body_value(seq=1, prev=PREV),
    "prev-null-at-seq-1": body_value(seq=1, prev=None),
    "prev-missing-at-seq-2": body_value(prev=b""),
    "prev-31-bytes": body_value(prev=PREV[:31]),
    "prev-text": body_value(prev="P" * 32),
    "time-negative": body_value(time=-1),
    "time-float": body_value(time=1.5),
    "time-too-big": body_value(time=2**63),
    "commands-empty": body_value(commands=[]),
    "commands-257": body_value(commands=[["db", "delete", {}]] * (MAX_COMMANDS + 1)),
    "commands-map": body_value(commands={"db": 1}),
    "command-2-elements": body_value(commands=[["db", "delete"]]),
    "command-4-elements": body_value(commands=[["db", "delete", {}, 1]]),
    "command-not-array": body_value(commands=["db"]),
    "command-engine-empty": body_value(commands=[["", "delete", {}]]),
    "command-engine-int": body_value(commands=[[1, "delete", {}]]),
    "command-engine-too-long": body_value(commands=[["e" * 65, "delete", {}]]),
    "command-name-bytes": body_value(commands=[["db", b"delete", {}]]),
    "command-name-empty": body_value(commands=[["db", "", {}]]),
    "genesis-seq-2": body_value(space=b"", seq=2, rank=2, deps={}),
    "genesis-rank-2": body_value(space=b"", seq=1, rank=2, deps={}, prev=b""),
    "genesis-with-deps": body_value(space=b"", seq=1, rank=5, prev=b""),
}


@pytest.mark.parametrize("name", list(MALFORMED_BODIES))
def test_malformed_body_is_malformed_error(name: str) -> None:
    value = MALFORMED_BODIES[name]
    with pytest.raises(MalformedError):
        decode_delta(wire_of(value))
    with pytest.raises(MalformedError):
        decode_delta(wire_of(value, ALICE.sign(codec.encode(value))))


def test_a_newer_delta_format_says_so_and_does_not_blame_the_relaying_peer() -> None:
    with pytest.raises(UnsupportedFormatError, match="newer p2pspace") as info:
        decode_delta(wire_of(body_value(version=FORMAT_VERSION + 1)))
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION and not info.value.blames_sender
    with pytest.raises(MalformedError) as plain:
        decode_delta(wire_of(body_value(version=True)))
    assert plain.value.blames_sender


def test_malformed_fixture_is_only_broken_where_intended() -> None:
    # The unbroken body decodes, so each case above fails for its own reason.
    delta = decode_delta(wire_of(body_value()))
    assert delta == make_body(**base_fields())
    assert decode_delta(wire_of(body_value(commands=[["db", "delete", {}]] * MAX_COMMANDS)))
    assert decode_delta(wire_of(body_value(seq=MAX_SEQ, rank=MAX_SEQ)))


@pytest.mark.parametrize(
    "overrides",
    [
        {"creator": b"C" * 15},
        {"seq": 0},
        {"seq": MAX_SEQ + 1, "rank": MAX_SEQ + 1},
        {"seq": 6},  # rank 5 < seq 6
        {"deps": {ALICE.endpoint_id: 1}},
        {"deps": {BOB.endpoint_id: 5}},
        {"seq": 1},  # non-empty prev at seq 1
        {"commands": []},
        {"commands": [Command(engine="db", name="delete", args={})] * (MAX_COMMANDS + 1)},
        {"space": b"", "seq": 2, "rank": 2, "deps": {}},
        {"time": -5},
    ],
    ids=repr,
)
def test_make_body_validates_like_decoding(overrides: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        make_body(**base_fields(**overrides))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"engine": "", "name": "x", "args": {}},
        {"engine": "e" * 65, "name": "x", "args": {}},
        {"engine": 3, "name": "x", "args": {}},
        {"engine": "db", "name": None, "args": {}},
        {"engine": "db", "name": "", "args": {}},
    ],
    ids=repr,
)
def test_command_constructor_validates_names(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        Command(**kwargs)


@pytest.mark.parametrize(
    "args",
    [{1, 2}, float("nan"), {"f": float("inf")}, {1: "int key"}, (1, 2), 2**64, object()],
    ids=repr,
)
def test_make_body_refuses_command_args_outside_the_value_set(args: Any) -> None:
    # Command args are checked once, where the body is encoded (not in the constructor).
    command = Command(engine="db", name="x", args=args)
    with pytest.raises(MalformedError):
        make_body(**base_fields(commands=[command]))


def test_body_over_64_kib_is_refused() -> None:
    big = [["db", "set", {"blob": b"x" * 1000}]] * 66
    body = codec.encode(body_value(commands=big))
    assert len(body) > MAX_BODY_SIZE
    with pytest.raises(MalformedError):
        decode_delta(wire_of(body))
    # The limit is on the body bytes, checked before the body is decoded.
    with pytest.raises(MalformedError):
        decode_delta(codec.encode([b"\x00" * (MAX_BODY_SIZE + 1), None]))


@pytest.mark.parametrize(
    "signature",
    [b"\x00" * 63, b"\x00" * 65, b"", "s" * 64, 0, [b"\x00" * 64], False],
    ids=repr,
)
def test_bad_signature_shape_is_malformed(signature: Any) -> None:
    with pytest.raises(MalformedError):
        decode_delta(wire_of(body_value(), signature))


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="empty"),
        pytest.param(codec.encode([]), id="empty-array"),
        pytest.param(codec.encode([b"x"]), id="1-element"),
        pytest.param(codec.encode([b"x", None, None]), id="3-elements"),
        pytest.param(codec.encode({"body": b"x"}), id="map"),
        pytest.param(codec.encode(["body", None]), id="text-body"),
        pytest.param(codec.encode([body_value(), None]), id="body-not-bytes"),
        pytest.param(codec.encode([b"\x82\x01", None]), id="body-truncated-cbor"),
        pytest.param(codec.encode([b"\x5b" + b"\xff" * 8, None]), id="body-huge-length"),
        pytest.param(b"\x82\x5b" + b"\xff" * 8, id="outer-huge-length"),
        pytest.param(wire_of(body_value())[:-1], id="truncated"),
        pytest.param(wire_of(body_value()) + b"\x00", id="trailing"),
        pytest.param(
            codec.encode([codec.encode(body_value()) + b"\x00", None]), id="body-trailing"
        ),
    ],
)
def test_malformed_wire_is_malformed_error(wire: bytes) -> None:
    with pytest.raises(MalformedError):
        decode_delta(wire)


@HYPOTHESIS
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_malformed_error(data: bytes) -> None:
    try:
        delta = decode_delta(data)
    except MalformedError:
        return
    assert isinstance(delta, Delta)
