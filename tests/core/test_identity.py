"""Endpoint identity: endpoint ids, human form, signatures (key files: tests/node/test_home.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pspace.core.identity import (
    ENDPOINT_ID_SIZE,
    Identity,
    endpoint_id_of,
    format_endpoint_id,
    parse_endpoint_id,
    short_id,
    verify_signature,
)
from p2pspace.errors import AuthenticationError, LocalProtocolError

HYPOTHESIS = settings(max_examples=200, deadline=None, derandomize=True, database=None)


def test_endpoint_id_is_sha256_prefix_of_raw_public_key() -> None:
    identity = Identity.from_seed(b"id")
    assert len(identity.public_key) == 32
    expected = hashlib.sha256(identity.public_key).digest()[:16]
    assert identity.endpoint_id == expected
    assert endpoint_id_of(identity.public_key) == expected
    assert len(expected) == ENDPOINT_ID_SIZE


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_endpoint_id_of_refuses_wrong_key_size(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        endpoint_id_of(b"\x01" * size)


@HYPOTHESIS
@given(st.binary(min_size=16, max_size=16))
def test_human_form_round_trips(endpoint_id: bytes) -> None:
    text = format_endpoint_id(endpoint_id)
    groups = text.split("-")
    assert all(len(g) == 4 for g in groups[:-1]) and 0 < len(groups[-1]) <= 4
    assert "".join(groups).isalnum() and "=" not in text
    assert parse_endpoint_id(text) == endpoint_id
    assert parse_endpoint_id(text.lower()) == endpoint_id
    assert parse_endpoint_id(text.replace("-", "")) == endpoint_id
    assert short_id(endpoint_id) == text[:9]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "ABCD-EFGH",
        "A" * 25,
        "A" * 27,
        "1" * 26,  # '1' is not in the base32 alphabet
        "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-A!",
        "AAAAAAAAAAAAAAAAAAAAAAAAAB",  # non-zero padding bits: not a canonical encoding
        "AAAAAAAAAAAAAAAAAAAAAAAAA=",
        "\u00e9" * 26,
    ],
)
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        parse_endpoint_id(text)


@HYPOTHESIS
@given(st.text(max_size=40))
def test_parse_never_raises_anything_but_local_protocol_error(text: str) -> None:
    try:
        raw = parse_endpoint_id(text)
    except LocalProtocolError:
        return
    assert len(raw) == ENDPOINT_ID_SIZE
    assert (
        format_endpoint_id(raw).replace("-", "") == text.replace("-", "").replace(" ", "").upper()
    )


@pytest.mark.parametrize("size", [0, 15, 17])
def test_format_refuses_wrong_size(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        format_endpoint_id(b"\x00" * size)


def test_signatures_verify_and_bad_ones_raise_authentication_error() -> None:
    alice, mallory = Identity.from_seed(b"alice"), Identity.from_seed(b"mallory")
    message = b"the message"
    signature = alice.sign(message)
    assert len(signature) == 64
    verify_signature(alice.public_key, signature, message)  # does not raise

    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    cases = [
        (alice.public_key, flipped, message),
        (alice.public_key, signature, message + b"!"),
        (alice.public_key, mallory.sign(message), message),
        (mallory.public_key, signature, message),
        (alice.public_key, signature[:63], message),  # wrong length
        (alice.public_key[:31], signature, message),  # malformed key
    ]
    for key, sig, msg in cases:
        with pytest.raises(AuthenticationError):
            verify_signature(key, sig, msg)


def test_private_key_size_is_checked() -> None:
    with pytest.raises(LocalProtocolError):
        Identity.from_private_bytes(b"\x00" * 31)
    identity = Identity.from_seed(b"x")
    assert Identity.from_private_bytes(identity.private_bytes()).endpoint_id == identity.endpoint_id
    assert "private_key" not in repr(identity)
