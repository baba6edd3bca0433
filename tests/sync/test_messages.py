"""Sync-protocol messages: the closed type table, round trips and strict body validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core import codec
from p2pspace.core.delta import MAX_SEQ
from p2pspace.errors import (
    ErrorCode,
    MalformedError,
    RemoteProtocolError,
    TooFarAheadError,
)
from p2pspace.sync.messages import (
    LEGACY,
    MAX_DELTAS_PER_FRAME,
    MAX_ERROR_TEXT,
    MAX_RANGES,
    MAX_SPACES,
    MESSAGE_TYPES,
    OURS,
    PROTOCOL_VERSION,
    Ack,
    Deltas,
    Error,
    Fetch,
    Hello,
    Message,
    MessageType,
    Revision,
    Synced,
    Versions,
    common_protocol,
    decode_message,
    encode_message,
    payload_version_gap,
    vector_of,
    version_gap,
)
from tests.helpers.strategies import messages

HYPOTHESIS = settings(max_examples=100, deadline=None, derandomize=True, database=None)

scalars = (
    st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.binary(max_size=20)
    | st.text(max_size=20)
    | st.booleans()
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
)
cbor_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.binary(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


def payload(mtype: Any, version: Any, body: Any) -> bytes:
    return codec.encode([mtype, version, body])


def test_type_table_is_closed_and_consistent() -> None:
    assert set(MESSAGE_TYPES) == set(MessageType)
    for code, cls in MESSAGE_TYPES.items():
        assert code == cls.TYPE


@HYPOTHESIS
@given(messages)
def test_round_trip(message: Message) -> None:
    data = encode_message(message)
    back = decode_message(data)
    assert type(back) is type(message)
    assert back == message
    assert encode_message(back) == data
    # The payload is canonical CBOR [type, version, body]; a layout unchanged since v1 is sent
    # as version 1, which every release reads.
    mtype, version, body = codec.decode_canonical(data)
    assert (mtype, version) == (int(message.TYPE), message.layout())
    assert body == message.body()


def test_every_type_round_trips_at_its_bounds() -> None:
    space = b"s" * 16
    bounds: list[Message] = [
        Hello(endpoint=b"e" * 16, spaces=(b"x" * 16,) * MAX_SPACES, reply=False),
        Hello(endpoint=b"e" * 16, spaces=(), reply=True),
        Revision(space=space, vector=()),
        Synced(space=space, vector=((b"a" * 16, MAX_SEQ),)),
        Ack(space=space, vector=((b"a" * 16, 0), (b"b" * 16, 1))),
        Deltas(space=space, wires=(b"",) * MAX_DELTAS_PER_FRAME),
        Fetch(space=space, ranges=((b"c" * 16, MAX_SEQ, MAX_SEQ),) * MAX_RANGES),
        Error(code=int(ErrorCode.INTERNAL), message="x" * MAX_ERROR_TEXT),
        Revision(space=space, vector=((b"a" * 16, 3),), heads=((b"a" * 16, b"h" * 32),)),
        Revision(
            space=space, vector=(), heads=tuple((bytes([i]) * 16, b"h" * 32) for i in range(256))
        ),
        Ack(space=space, vector=((b"a" * 16, 3),), digest=b"d" * 32),
    ]
    for message in bounds:
        assert decode_message(encode_message(message)) == message


def test_content_fields_travel_in_layout_2_and_plain_messages_in_layout_1() -> None:
    space, creator = b"s" * 16, b"a" * 16
    plain = Revision(space=space, vector=((creator, 3),))
    with_heads = Revision(space=space, vector=((creator, 3),), heads=((creator, b"h" * 32),))
    assert codec.decode(encode_message(plain))[1] == 1
    assert codec.decode(encode_message(with_heads))[1] == 2
    assert codec.decode(encode_message(Ack(space=space, vector=(), digest=b"d" * 32)))[1] == 2
    # A first-release peer's Hello carries no versions entry; ours carries one, which a first
    # release ignores (it holds no space with that id) and which never shows as a space here.
    legacy = codec.encode([1, 1, [creator, [space], True]])
    assert decode_message(legacy) == Hello(
        endpoint=creator, spaces=(space,), reply=True, versions=LEGACY
    )
    ours = encode_message(Hello(endpoint=creator, spaces=(space,), reply=True))
    _t, _v, (_e, listed, _r) = codec.decode(ours)
    assert listed == [space, OURS.mark()] and len(OURS.mark()) == 16
    hello = decode_message(ours)
    assert isinstance(hello, Hello) and hello.spaces == (space,) and hello.versions == OURS


def test_versions_meet_or_name_both_sides() -> None:
    assert version_gap(LEGACY) is None and common_protocol(LEGACY) == 1
    assert version_gap(OURS) is None and common_protocol(OURS) == PROTOCOL_VERSION
    low = PROTOCOL_VERSION + 1
    newer = Versions(protocol_low=low, protocol_high=low + 1, formats_low=1, formats_high=1)
    gap = version_gap(newer)
    assert gap is not None and gap.peer_is_newer
    assert gap.describe() == (
        f"runs protocol v{low}; this release speaks v1-v{PROTOCOL_VERSION}: upgrade p2pspace"
    )
    error = gap.error()
    assert error.code == ErrorCode.UNSUPPORTED_VERSION
    assert str(error) == f"you run protocol v{low}; this endpoint speaks v1-v{PROTOCOL_VERSION}"
    writes_newer = Versions(protocol_low=1, protocol_high=2, formats_low=1, formats_high=2)
    gap = version_gap(writes_newer)
    assert gap is not None and gap.what == "delta format"
    assert gap.describe() == "writes delta format v2; this release reads v1-v1: upgrade p2pspace"
    older = Versions(protocol_low=1, protocol_high=1, formats_low=1, formats_high=1)
    gap = version_gap(older, ours=newer)
    assert gap is not None and not gap.peer_is_newer
    assert gap.describe().endswith("the peer must upgrade p2pspace")


@pytest.mark.parametrize(
    "mark",
    [
        b"p2pspace" + bytes(8),  # versions 0
        b"p2pspace" + b"\x00\x02\x00\x01\x00\x01\x00\x01",  # low above high
        b"p2pspace" + b"\x00\x01",  # short
    ],
)
def test_a_bad_versions_entry_is_malformed(mark: bytes) -> None:
    with pytest.raises(MalformedError):
        decode_message(codec.encode([1, 1, [b"e" * 16, [mark], True]]))
    with pytest.raises(MalformedError):
        two = OURS.mark()
        decode_message(codec.encode([1, 1, [b"e" * 16, [two, two], True]]))


def test_vector_of_drops_zero_entries_and_sorts() -> None:
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    assert vector_of({c: 2, a: 0, b: 1}) == ((b, 1), (c, 2))


def test_error_of_carries_the_code_and_truncates() -> None:
    exc = TooFarAheadError("x" * 2000)
    message = Error.of(exc)
    assert message.code == ErrorCode.TOO_FAR_AHEAD
    assert len(message.message) == MAX_ERROR_TEXT
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize("mtype", [0, 9, 99, -1, 2**32, "hello", b"\x01", None, 1.0, True, [1]])
def test_unknown_type_is_unknown_type_error(mtype: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(payload(mtype, PROTOCOL_VERSION, []))
    assert info.value.code == ErrorCode.UNKNOWN_TYPE
    assert not isinstance(info.value, MalformedError)


@pytest.mark.parametrize(
    "version", [0, PROTOCOL_VERSION + 1, 255, -1, "1", 1.0, True, None, b"\x01"]
)
@pytest.mark.parametrize("mtype", list(MessageType))
def test_wrong_version_is_unsupported_version(mtype: MessageType, version: Any) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(payload(int(mtype), version, []))
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION


def test_a_newer_frame_names_both_versions() -> None:
    data = payload(int(MessageType.ACK), 7, [b"s" * 16, {}])
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(data)
    assert str(info.value) == f"you run protocol v7; this endpoint speaks v1-v{PROTOCOL_VERSION}"
    gap = payload_version_gap(data)
    assert gap is not None and (gap.peer, gap.low, gap.high) == (7, 1, PROTOCOL_VERSION)
    assert payload_version_gap(encode_message(Ack(space=b"s" * 16, vector=()))) is None


E, S = b"e" * 16, b"s" * 16

BAD_BODIES: list[tuple[MessageType, Any]] = [
    # body not an array / wrong arity
    *[(t, None) for t in MessageType],
    *[(t, {}) for t in MessageType],
    *[(t, []) for t in MessageType],
    (MessageType.HELLO, [E, []]),
    (MessageType.HELLO, [E, [], True, 1]),
    (MessageType.HELLO, [E[:15], [], True]),
    (MessageType.HELLO, ["e" * 16, [], True]),
    (MessageType.HELLO, [E, [S[:15]], True]),
    (MessageType.HELLO, [E, S, True]),
    (MessageType.HELLO, [E, {S: 1}, True]),
    (MessageType.HELLO, [E, [], 1]),
    (MessageType.HELLO, [E, [], None]),
    (MessageType.HELLO, [E, [S] * (MAX_SPACES + 1), True]),
    (MessageType.REVISION, [S, []]),
    (MessageType.REVISION, [S[:15], {}]),
    (MessageType.REVISION, [S, {E: -1}]),
    (MessageType.REVISION, [S, {E: MAX_SEQ + 1}]),
    (MessageType.REVISION, [S, {E: "1"}]),
    (MessageType.REVISION, [S, {E: True}]),
    (MessageType.REVISION, [S, {E[:15]: 1}]),
    (MessageType.REVISION, [S, {"e" * 16: 1}]),
    (MessageType.SYNCED, [S, None]),
    (MessageType.SYNCED, [None, {}]),
    (MessageType.ACK, [S, {E: 1.0}]),
    (MessageType.ACK, [S, {E: 1}, 0]),
    (MessageType.DELTAS, [S, []]),
    (MessageType.DELTAS, [S, [b"x"] * (MAX_DELTAS_PER_FRAME + 1)]),
    (MessageType.DELTAS, [S, ["x"]]),
    (MessageType.DELTAS, [S, [[b"x"]]]),
    (MessageType.DELTAS, [S, b"x"]),
    (MessageType.DELTAS, [S[:15], [b"x"]]),
    (MessageType.FETCH, [S, []]),
    (MessageType.FETCH, [S, [[E, 1]]]),
    (MessageType.FETCH, [S, [[E, 0, 1]]]),
    (MessageType.FETCH, [S, [[E, 3, 2]]]),
    (MessageType.FETCH, [S, [[E, 1, MAX_SEQ + 1]]]),
    (MessageType.FETCH, [S, [[E[:15], 1, 2]]]),
    (MessageType.FETCH, [S, [[E, "1", 2]]]),
    (MessageType.FETCH, [S, [E, 1, 2]]),
    (MessageType.FETCH, [S, {E: [1, 2]}]),
    (MessageType.FETCH, [S, [[E, 1, 1]] * (MAX_RANGES + 1)]),
    (MessageType.ERROR, ["1", "m"]),
    (MessageType.ERROR, [1, b"m"]),
    (MessageType.ERROR, [True, "m"]),
    (MessageType.ERROR, [1.5, "m"]),
    (MessageType.ERROR, [1, "m" * (MAX_ERROR_TEXT + 1)]),
    (MessageType.ERROR, [1]),
]


BAD_LAYOUT_2: list[tuple[MessageType, Any]] = [
    (MessageType.REVISION, [S, {}]),
    (MessageType.REVISION, [S, {}, []]),
    (MessageType.REVISION, [S, {E: 1}, {E: b"h" * 31}]),
    (MessageType.REVISION, [S, {E: 1}, {E[:15]: b"h" * 32}]),
    (MessageType.REVISION, [S, {E: 1}, {E: "h" * 32}]),
    (MessageType.ACK, [S, {}]),
    (MessageType.ACK, [S, {}, b"d" * 31]),
    (MessageType.ACK, [S, {}, None]),
]


@pytest.mark.parametrize(("mtype", "body"), BAD_BODIES, ids=lambda v: repr(v)[:40])
def test_bad_body_is_malformed(mtype: MessageType, body: Any) -> None:
    for version in range(1, PROTOCOL_VERSION + 1):
        with pytest.raises(MalformedError) as info:
            decode_message(payload(int(mtype), version, body))
        assert info.value.code == ErrorCode.MALFORMED


@pytest.mark.parametrize(("mtype", "body"), BAD_LAYOUT_2, ids=lambda v: repr(v)[:40])
def test_bad_layout_2_body_is_malformed(mtype: MessageType, body: Any) -> None:
    with pytest.raises(MalformedError):
        decode_message(payload(int(mtype), 2, body))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(codec.encode([1, 1]), id="2-elements"),
        pytest.param(codec.encode([1, 1, [], 0]), id="4-elements"),
        pytest.param(codec.encode({"type": 1}), id="map"),
        pytest.param(codec.encode(1), id="int"),
        pytest.param(encode_message(Ack(space=S, vector=()))[:-1], id="truncated"),
        pytest.param(encode_message(Ack(space=S, vector=())) + b"\x00", id="trailing"),
        pytest.param(b"\x83\x01\x01\x9f\xff", id="indefinite"),
        pytest.param(b"\x83\x03\x01\x82\x50" + S + b"\x9b" + b"\xff" * 8, id="huge-array"),
        pytest.param(b"\x83\x03\x01\x82\x50" + S + b"\x81\x5b" + b"\xff" * 8, id="huge-bytes"),
        pytest.param(codec.encode([3, 1, [S, [[[[[b"x"]]]]]]]), id="too-deep"),
    ],
)
def test_malformed_payload_is_malformed_error(data: bytes) -> None:
    with pytest.raises(MalformedError):
        decode_message(data)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hello(endpoint=E[:15], spaces=(), reply=True),
        lambda: Hello(endpoint=E, spaces=(b"x",), reply=True),
        lambda: Hello(endpoint=E, spaces=(), reply=1),
        lambda: Revision(space=b"", vector=()),
        lambda: Deltas(space=S, wires=()),
        lambda: Deltas(space=S, wires=("x",)),
        lambda: Fetch(space=S, ranges=()),
        lambda: Fetch(space=S, ranges=((E, 2, 1),)),
        lambda: Error(code=1, message="x" * (MAX_ERROR_TEXT + 1)),
    ],
)
def test_constructors_validate(build: Any) -> None:
    with pytest.raises(MalformedError):
        build()


@HYPOTHESIS
@given(st.sampled_from(list(MessageType)), cbor_values)
def test_random_bodies_only_raise_remote_protocol_errors(mtype: MessageType, body: Any) -> None:
    try:
        message = decode_message(payload(int(mtype), PROTOCOL_VERSION, body))
    except RemoteProtocolError as exc:
        assert isinstance(exc, MalformedError)
        return
    assert mtype == message.TYPE


@HYPOTHESIS
@given(st.binary(max_size=100))
def test_random_payloads_only_raise_remote_protocol_errors(data: bytes) -> None:
    try:
        message = decode_message(data)
    except RemoteProtocolError:
        return
    assert type(message) in MESSAGE_TYPES.values()
