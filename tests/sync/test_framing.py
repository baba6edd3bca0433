"""Length-prefixed frames: chunked streams, the hard size bound, and garbage input."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.errors import (
    ErrorCode,
    FrameTooLargeError,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitError,
)
from p2pspace.sync.framing import HEADER, MAX_FRAME, FrameDecoder, frame
from p2pspace.sync.messages import Message, decode_message, encode_message
from tests.helpers.strategies import messages

HYPOTHESIS = settings(max_examples=100, deadline=None, derandomize=True, database=None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (sorted, deduplicated, clipped to its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
        assert decoder.buffered <= decoder.max_frame + HEADER
    return out


def test_frame_layout() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert FrameDecoder().feed(b"\x00\x00\x00\x03abc\x00\x00\x00\x00") == [b"abc", b""]


@HYPOTHESIS
@given(st.lists(messages, min_size=1, max_size=8), st.lists(st.integers(min_value=0), max_size=30))
def test_messages_round_trip_through_chunked_frames(batch: list[Message], cuts: list[int]) -> None:
    stream = b"".join(frame(encode_message(m)) for m in batch)
    decoder = FrameDecoder()
    payloads = feed_all(decoder, split(stream, cuts))
    assert [decode_message(p) for p in payloads] == batch
    assert decoder.buffered == 0
    assert not decoder.mid_frame


@HYPOTHESIS
@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=10),
    st.lists(st.integers(min_value=0), max_size=40),
)
def test_payloads_round_trip_in_random_chunks(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p, max_frame=300) for p in payloads)
    decoder = FrameDecoder(max_frame=300)
    assert feed_all(decoder, split(stream, cuts)) == payloads
    assert not decoder.mid_frame


def test_one_byte_at_a_time_and_mid_frame() -> None:
    decoder = FrameDecoder()
    data = frame(b"hello")
    out: list[bytes] = []
    for i in range(len(data)):
        assert out == []
        out += decoder.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert decoder.mid_frame
    assert out == [b"hello"]
    assert not decoder.mid_frame


def test_frame_refuses_oversized_payload() -> None:
    assert frame(b"x" * 10, max_frame=10)[4:] == b"x" * 10
    with pytest.raises(LocalProtocolError):
        frame(b"x" * 11, max_frame=10)


def test_declared_length_at_the_bound_is_accepted() -> None:
    decoder = FrameDecoder(max_frame=1000)
    assert decoder.feed(frame(b"y" * 1000, max_frame=1000)) == [b"y" * 1000]


@pytest.mark.parametrize("max_frame", [1000, MAX_FRAME])
@pytest.mark.parametrize("declared", [1, 1000, 2**31, 2**32 - 1])
def test_oversized_declared_length_raises_before_buffering(max_frame: int, declared: int) -> None:
    length = max_frame + declared if max_frame + declared < 2**32 else 2**32 - 1
    decoder = FrameDecoder(max_frame=max_frame)
    header = length.to_bytes(4, "big")
    # Three header bytes: nothing is known yet, nothing raised.
    assert decoder.feed(header[:3]) == []
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(header[3:] + b"z" * 64)
    assert decoder.buffered == 0
    assert isinstance(info.value, ResourceLimitError)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_oversized_frame_after_valid_frames_in_one_chunk() -> None:
    decoder = FrameDecoder(max_frame=100)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(frame(b"ok", max_frame=100) + (101).to_bytes(4, "big") + b"q" * 5000)
    assert decoder.buffered == 0


@HYPOTHESIS
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=20))
def test_garbage_streams_only_raise_remote_protocol_errors(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_frame=256)
    try:
        for chunk in split(data, cuts):
            for payload in decoder.feed(chunk):
                assert len(payload) <= 256
                decode_message(payload)
            assert decoder.buffered <= 256 + HEADER
    except RemoteProtocolError:
        return


@HYPOTHESIS
@given(st.binary(max_size=200))
def test_garbage_framed_payloads_only_raise_remote_protocol_errors(data: bytes) -> None:
    decoder = FrameDecoder()
    (payload,) = decoder.feed(frame(data))
    assert payload == data
    with contextlib.suppress(RemoteProtocolError):
        decode_message(payload)
