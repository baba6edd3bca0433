"""Connection opening after TLS: mutual endpoint authentication and joining by invitation.

Theory of operation. TLS 1.3 runs with each endpoint's self-signed Ed25519 certificate. The
dialling side (client) pins the listener's certificate key against the endpoint id it expects
(or learns the id from the key when it dialled an address). The listener cannot pin the client by
certificate -- the standard library cannot ask for a client certificate without a CA to check it
against -- so the client proves its key in-band:

1. listener -> client ``Challenge(server id, nonce)``: 32 fresh random bytes.
2. client -> listener ``Proof(key, signature, join)``: an Ed25519 signature by the client's key
   over ``"p2pspace-auth-v1" | nonce | client id | server id``. Binding both ids and the nonce
   means a proof cannot be replayed on another connection or relayed to a third endpoint.
   ``join`` optionally carries an invitation redemption (see :mod:`p2pspace.sync.invitations`).
3. listener -> client ``Welcome(genesis)``: the genesis delta of the space joined (or empty).

Either side may answer with an ``Error`` frame instead and close. Frames are the sync protocol's
(4-byte length + ``[type, version, body]``) with their own closed table of types, so a handshake
frame is never accepted by a session, nor a session frame here. Their layouts have not changed
since protocol v1, so they are sent as version 1 (every release reads them) and read in any
version this release speaks; another version is refused with ``UNSUPPORTED_VERSION`` naming both.
All functions are pure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from p2pspace.core import codec
from p2pspace.core.delta import SPACE_ID_SIZE
from p2pspace.core.identity import (
    ENDPOINT_ID_SIZE,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    Identity,
    endpoint_id_of,
    verify_signature,
)
from p2pspace.errors import (
    AuthenticationError,
    ErrorCode,
    InvitationError,
    MalformedError,
    RemoteProtocolError,
)
from p2pspace.sync.invitations import INVITATION_ID_SIZE, MAC_SIZE
from p2pspace.sync.messages import Error, MessageType, frame_version_error

HANDSHAKE_LAYOUT = 1  # the version handshake frames are sent as
NONCE_SIZE = 32
MAX_HANDSHAKE_FRAME = 64 * 1024
# A Proof, join request and a 200-character name included, is well under this: the listener
# holds no more than this for a peer it knows nothing of.
MAX_PROOF_FRAME = 4 * 1024
MAX_NAME = 200


class HandshakeType(enum.IntEnum):
    CHALLENGE = 16
    PROOF = 17
    WELCOME = 18


def _bytes(value: object, size: int, label: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise MalformedError(f"{label} must be {size} bytes")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRequest:
    """Redeem an invitation: the space, the invitation id and the HMAC proof of its secret."""

    space: bytes
    invitation: bytes
    mac: bytes
    name: str

    def __post_init__(self) -> None:
        _bytes(self.space, SPACE_ID_SIZE, "space id")
        _bytes(self.invitation, INVITATION_ID_SIZE, "invitation id")
        _bytes(self.mac, MAC_SIZE, "invitation proof")
        if type(self.name) is not str or len(self.name) > MAX_NAME:
            raise MalformedError("display name must be text of at most 200 characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    TYPE: ClassVar[HandshakeType] = HandshakeType.CHALLENGE
    server: bytes
    nonce: bytes

    def __post_init__(self) -> None:
        _bytes(self.server, ENDPOINT_ID_SIZE, "server id")
        _bytes(self.nonce, NONCE_SIZE, "nonce")

    def body(self) -> list[Any]:
        return [self.server, self.nonce]

    @classmethod
    def from_body(cls, value: list[Any]) -> Challenge:
        server, nonce = _fields(value, 2, "Challenge")
        return cls(server=server, nonce=nonce)


@dataclass(frozen=True, slots=True, kw_only=True)
class Proof:
    TYPE: ClassVar[HandshakeType] = HandshakeType.PROOF
    key: bytes
    signature: bytes
    join: JoinRequest | None = None

    def __post_init__(self) -> None:
        _bytes(self.key, PUBLIC_KEY_SIZE, "public key")
        _bytes(self.signature, SIGNATURE_SIZE, "signature")

    def body(self) -> list[Any]:
        join = self.join
        joined = None if join is None else [join.space, join.invitation, join.mac, join.name]
        return [self.key, self.signature, joined]

    @classmethod
    def from_body(cls, value: list[Any]) -> Proof:
        key, signature, join = _fields(value, 3, "Proof")
        request = None
        if join is not None:
            space, invitation, mac, name = _fields(join, 4, "join request")
            request = JoinRequest(space=space, invitation=invitation, mac=mac, name=name)
        return cls(key=key, signature=signature, join=request)


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    TYPE: ClassVar[HandshakeType] = HandshakeType.WELCOME
    genesis: bytes  # the joined space's genesis delta, or b"" when not joining

    def __post_init__(self) -> None:
        if type(self.genesis) is not bytes or len(self.genesis) > MAX_HANDSHAKE_FRAME // 2:
            raise MalformedError("Welcome carries a genesis delta of bounded size")

    def body(self) -> list[Any]:
        return [self.genesis]

    @classmethod
    def from_body(cls, value: list[Any]) -> Welcome:
        (genesis,) = _fields(value, 1, "Welcome")
        return cls(genesis=genesis)


HandshakeMessage = Challenge | Proof | Welcome | Error

_TYPES: dict[int, Any] = {
    HandshakeType.CHALLENGE: Challenge,
    HandshakeType.PROOF: Proof,
    HandshakeType.WELCOME: Welcome,
    MessageType.ERROR: Error,
}


def _fields(value: object, size: int, name: str) -> list[Any]:
    if type(value) is not list or len(value) != size:
        raise MalformedError(f"{name} body must be an array of {size}")
    return value


def encode(message: HandshakeMessage) -> bytes:
    return codec.encode([int(message.TYPE), HANDSHAKE_LAYOUT, message.body()])


def decode(payload: bytes, expect: type[Any]) -> Any:
    """Decode one handshake frame that must be ``expect`` (or an Error from the peer).

    Raises :class:`RemoteProtocolError` for anything else (``UNSUPPORTED_VERSION`` for a
    version this release does not speak); a peer's Error frame becomes
    :class:`InvitationError` (refused invitation) or :class:`RemoteProtocolError` with the
    peer's code.
    """
    value = codec.decode(payload, max_depth=4)
    if type(value) is not list or len(value) != 3:
        raise MalformedError("a handshake message is [type, version, body]")
    mtype, version, body = value
    cls = _TYPES.get(mtype) if type(mtype) is int else None
    if cls is None:
        raise RemoteProtocolError(
            f"unexpected message type {mtype!r} during the handshake",
            code=ErrorCode.UNEXPECTED_MESSAGE,
        )
    refusal = frame_version_error(version)
    if refusal is not None:
        raise refusal
    if cls is Error:
        error = Error.from_body(body)
        if error.code == ErrorCode.INVITATION_REFUSED:
            raise InvitationError(f"invitation refused: {error.message}")
        raise RemoteProtocolError(
            f"peer refused the connection: {error.message}", code=error.error_code()
        )
    if cls is not expect:
        raise RemoteProtocolError(
            f"expected {expect.__name__}, got {cls.__name__}", code=ErrorCode.UNEXPECTED_MESSAGE
        )
    return cls.from_body(body)


def proof_message(nonce: bytes, client: bytes, server: bytes) -> bytes:
    return b"p2pspace-auth-v1\0" + nonce + client + server


def make_proof(identity: Identity, challenge: Challenge, join: JoinRequest | None) -> Proof:
    message = proof_message(challenge.nonce, identity.endpoint_id, challenge.server)
    return Proof(key=identity.public_key, signature=identity.sign(message), join=join)


def check_proof(proof: Proof, *, nonce: bytes, server: bytes) -> bytes:
    """Verify a client's proof against our challenge; returns the client's endpoint id.

    Raises :class:`AuthenticationError` if the signature does not verify.
    """
    client = endpoint_id_of(proof.key)
    if client == server:
        raise AuthenticationError("peer presents this endpoint's own key")
    verify_signature(proof.key, proof.signature, proof_message(nonce, client, server))
    return client


__all__ = [
    "NONCE_SIZE",
    "Challenge",
    "HandshakeType",
    "JoinRequest",
    "Proof",
    "Welcome",
    "check_proof",
    "decode",
    "encode",
    "make_proof",
]
