"""The in-band key proof and join messages of the connection handshake (sans-IO)."""

from __future__ import annotations

import pytest

from p2pspace.core.identity import Identity
from p2pspace.errors import (
    AuthenticationError,
    ErrorCode,
    InvitationError,
    MalformedError,
    RemoteProtocolError,
)
from p2pspace.sync import handshake
from p2pspace.sync.handshake import Challenge, JoinRequest, Proof, Welcome
from p2pspace.sync.messages import Error, Hello, encode_message

SERVER = Identity.from_seed(b"server")
CLIENT = Identity.from_seed(b"client")
OTHER = Identity.from_seed(b"other")
NONCE = bytes(range(32))


def challenge(server: Identity = SERVER, nonce: bytes = NONCE) -> Challenge:
    return Challenge(server=server.endpoint_id, nonce=nonce)


def test_proof_verifies_and_names_the_client() -> None:
    proof = handshake.make_proof(CLIENT, challenge(), None)
    assert handshake.check_proof(proof, nonce=NONCE, server=SERVER.endpoint_id) == (
        CLIENT.endpoint_id
    )


def test_proof_for_another_nonce_is_refused() -> None:
    proof = handshake.make_proof(CLIENT, challenge(nonce=bytes(32)), None)
    with pytest.raises(AuthenticationError):
        handshake.check_proof(proof, nonce=NONCE, server=SERVER.endpoint_id)


def test_proof_relayed_to_a_third_endpoint_is_refused() -> None:
    # The client answered OTHER's challenge; OTHER replays it to SERVER with SERVER's nonce.
    proof = handshake.make_proof(CLIENT, challenge(server=OTHER), None)
    with pytest.raises(AuthenticationError):
        handshake.check_proof(proof, nonce=NONCE, server=SERVER.endpoint_id)


def test_proof_with_a_key_that_did_not_sign_is_refused() -> None:
    good = handshake.make_proof(CLIENT, challenge(), None)
    forged = Proof(key=OTHER.public_key, signature=good.signature)
    with pytest.raises(AuthenticationError):
        handshake.check_proof(forged, nonce=NONCE, server=SERVER.endpoint_id)


def test_proof_with_the_servers_own_key_is_refused() -> None:
    proof = handshake.make_proof(SERVER, challenge(), None)
    with pytest.raises(AuthenticationError, match="own key"):
        handshake.check_proof(proof, nonce=NONCE, server=SERVER.endpoint_id)


def test_messages_round_trip() -> None:
    join = JoinRequest(space=b"s" * 16, invitation=b"i" * 16, mac=b"m" * 32, name="bob")
    proof = handshake.make_proof(CLIENT, challenge(), join)
    for message, kind in (
        (challenge(), Challenge),
        (proof, Proof),
        (Proof(key=proof.key, signature=proof.signature), Proof),
        (Welcome(genesis=b"g" * 100), Welcome),
    ):
        assert handshake.decode(handshake.encode(message), kind) == message


def test_wrong_type_in_the_handshake_is_unexpected() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        handshake.decode(handshake.encode(challenge()), Proof)
    assert info.value.code == ErrorCode.UNEXPECTED_MESSAGE
    hello = encode_message(Hello(endpoint=CLIENT.endpoint_id, spaces=(), reply=False))
    with pytest.raises(RemoteProtocolError) as info:
        handshake.decode(hello, Challenge)
    assert info.value.code == ErrorCode.UNEXPECTED_MESSAGE


def test_malformed_bodies_are_refused() -> None:
    from p2pspace.core import codec

    for body in ([b"x", NONCE], [SERVER.endpoint_id], "x", [SERVER.endpoint_id, b"short"]):
        payload = codec.encode([int(handshake.HandshakeType.CHALLENGE), 1, body])
        with pytest.raises(MalformedError):
            handshake.decode(payload, Challenge)
    payload = codec.encode([int(handshake.HandshakeType.CHALLENGE), 9, challenge().body()])
    with pytest.raises(RemoteProtocolError) as info:
        handshake.decode(payload, Challenge)
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
    with pytest.raises(RemoteProtocolError):
        handshake.decode(b"\xff\x00garbage", Challenge)
    with pytest.raises(MalformedError):
        JoinRequest(space=b"s" * 16, invitation=b"i" * 16, mac=b"m" * 32, name="x" * 201)
    with pytest.raises(MalformedError):
        Welcome(genesis=b"g" * (handshake.MAX_HANDSHAKE_FRAME))


def test_error_frames_become_typed_errors() -> None:
    refused = Error(code=int(ErrorCode.INVITATION_REFUSED), message="invitation has expired")
    with pytest.raises(InvitationError, match="expired"):
        handshake.decode(handshake.encode(refused), Welcome)
    other = Error(code=int(ErrorCode.BAD_SIGNATURE), message="bad proof")
    with pytest.raises(RemoteProtocolError, match="bad proof"):
        handshake.decode(handshake.encode(other), Welcome)


def test_handshake_frames_go_as_version_1_and_read_in_every_version_spoken() -> None:
    from p2pspace.core import codec
    from p2pspace.sync.messages import PROTOCOL_VERSION

    assert codec.decode(handshake.encode(challenge()))[1] == 1
    for version in range(1, PROTOCOL_VERSION + 1):
        payload = codec.encode(
            [int(handshake.HandshakeType.CHALLENGE), version, challenge().body()]
        )
        assert handshake.decode(payload, Challenge) == challenge()
    newer = codec.encode([int(handshake.HandshakeType.CHALLENGE), 5, challenge().body()])
    with pytest.raises(RemoteProtocolError) as info:
        handshake.decode(newer, Challenge)
    assert str(info.value) == f"you run protocol v5; this endpoint speaks v1-v{PROTOCOL_VERSION}"


def test_a_peer_error_keeps_its_code() -> None:
    refused = Error(code=int(ErrorCode.UNSUPPORTED_VERSION), message="you run protocol v1")
    with pytest.raises(RemoteProtocolError) as info:
        handshake.decode(handshake.encode(refused), Welcome)
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
    unknown = Error(code=999, message="a code of a later release")
    with pytest.raises(RemoteProtocolError) as info:
        handshake.decode(handshake.encode(unknown), Welcome)
    assert info.value.code == ErrorCode.MALFORMED
