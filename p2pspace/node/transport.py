"""Authenticated connections: TLS 1.3 and the key proof over any byte stream (trio edge).

:func:`dial` and :func:`accept` turn a stream from a :class:`~p2pspace.node.network.Network`
(TCP by default) into a :class:`Connection`: TLS with the endpoints' Ed25519 certificates, then
the in-band handshake of :mod:`p2pspace.sync.handshake` (the listener pins nothing by
certificate, so the dialler proves its key over a fresh nonce; the dialler pins the listener's
certificate). Handshake frames are read exactly -- header, then payload -- so no byte of the
session that follows is consumed here, and capped (:data:`~p2pspace.sync.handshake
.MAX_HANDSHAKE_FRAME`; a Proof at :data:`~p2pspace.sync.handshake.MAX_PROOF_FRAME`). A listener
makes no TLS state for a socket until it sends something. Every failure is a typed error:
:class:`~p2pspace.errors.TransportError` (network, TLS, timeout),
:class:`~p2pspace.errors.AuthenticationError` (wrong key, bad proof),
:class:`~p2pspace.errors.InvitationError` (a refused join) or another
:class:`~p2pspace.errors.RemoteProtocolError` (malformed handshake).
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from p2pspace.core.identity import Identity
from p2pspace.errors import (
    AuthenticationError,
    ErrorCode,
    FrameTooLargeError,
    InvitationError,
    P2PSpaceError,
    RemoteProtocolError,
    TransportError,
)
from p2pspace.node.network import TCP, Network
from p2pspace.node.tls import pinned_peer
from p2pspace.sync import handshake
from p2pspace.sync.framing import HEADER, frame
from p2pspace.sync.handshake import Challenge, JoinRequest, Proof, Welcome
from p2pspace.sync.messages import Error

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
FIRST_READ = 16 * 1024  # what a listener reads before it makes TLS state: one TLS record
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)

JoinHandler = Callable[[bytes, bytes, JoinRequest, bytes], bytes]
"""``(peer id, peer key, request, nonce) -> genesis wire``; raises InvitationError to refuse."""

JoinBuilder = Callable[[bytes, bytes], JoinRequest]
"""``(server id, nonce) -> JoinRequest`` made by a joiner once it knows the connection nonce."""


@dataclass(slots=True, kw_only=True)
class Connection:
    """One authenticated connection. ``dialed`` is True on the side that dialled."""

    stream: trio.SSLStream[trio.abc.Stream]
    peer: bytes
    peer_key: bytes
    dialed: bool
    address: tuple[str, int]
    genesis: bytes = b""

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(*_BROKEN):
            await self.stream.aclose()


class _Replayed(trio.abc.Stream):
    """A stream whose first bytes were read already: they are handed out again first."""

    def __init__(self, stream: trio.abc.Stream, first: bytes | bytearray) -> None:
        self.stream = stream
        self._first: bytes | bytearray | None = first

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        first = self._first
        if first is None:
            return await self.stream.receive_some(max_bytes)
        await trio.lowlevel.checkpoint()
        size = len(first) if max_bytes is None else max_bytes
        out, rest = first[:size], first[size:]
        self._first = rest or None
        return out

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise TransportError("connection closed during the handshake")
        data += chunk
    return bytes(data)


async def _read(
    stream: trio.abc.Stream, expect: type[Any], *, limit: int = handshake.MAX_HANDSHAKE_FRAME
) -> Any:
    length = int.from_bytes(await _receive_exactly(stream, HEADER), "big")
    if length > limit:
        raise FrameTooLargeError(f"handshake frame of {length} bytes (at most {limit})")
    return handshake.decode(await _receive_exactly(stream, length), expect)


async def _write(stream: trio.abc.Stream, message: handshake.HandshakeMessage) -> None:
    await stream.send_all(frame(handshake.encode(message)))


async def _refuse(stream: trio.abc.Stream, code: ErrorCode, text: str) -> None:
    with trio.move_on_after(1), contextlib.suppress(*_BROKEN):
        await _write(stream, Error(code=int(code), message=text[:500]))


def _translate(exc: BaseException, what: str) -> P2PSpaceError:
    if isinstance(exc, P2PSpaceError):
        return exc
    if isinstance(exc, ssl.SSLError):
        return TransportError(f"{what}: TLS failed: {exc.reason or exc}")
    if isinstance(exc, OSError):
        return TransportError(f"{what}: {exc.strerror or exc}")
    return TransportError(f"{what}: connection broke")


async def dial(
    host: str,
    port: int,
    *,
    identity: Identity,
    context: ssl.SSLContext,
    expected_peer: bytes | None = None,
    join: JoinBuilder | None = None,
    network: Network = TCP,
) -> Connection:
    """Connect over ``network``, run TLS and the handshake. Raises as the module docstring
    says (a refused invitation: InvitationError; any other failure of the peer: a
    RemoteProtocolError; of the network: TransportError)."""
    what = f"{host}:{port}"
    raw: trio.abc.Stream | None = None
    stream: trio.SSLStream[trio.abc.Stream] | None = None
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            raw = await network.connect(host, port)
        stream = trio.SSLStream(raw, context, server_side=False)
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.do_handshake()
            peer, key = pinned_peer(stream.getpeercert(binary_form=True), expected_peer)
            challenge: Challenge = await _read(stream, Challenge)
            if challenge.server != peer:
                raise AuthenticationError("challenge names another endpoint")
            if peer == identity.endpoint_id:
                raise TransportError(f"{what} is this endpoint itself")
            request = join(peer, challenge.nonce) if join is not None else None
            await _write(stream, handshake.make_proof(identity, challenge, request))
            welcome: Welcome = await _read(stream, Welcome)
        return Connection(
            stream=stream,
            peer=peer,
            peer_key=key,
            dialed=True,
            address=(host, port),
            genesis=welcome.genesis,
        )
    except BaseException as exc:
        if stream is not None:
            await Connection(
                stream=stream, peer=b"", peer_key=b"", dialed=True, address=(host, port)
            ).aclose()
        elif raw is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(raw)
        if isinstance(exc, trio.TooSlowError):
            raise TransportError(f"{what}: timed out") from None
        if isinstance(exc, (ssl.SSLError, OSError, trio.BrokenResourceError, P2PSpaceError)):
            raise _translate(exc, what) from None
        raise


async def accept(
    raw: trio.abc.Stream,
    *,
    address: tuple[str, int],
    identity: Identity,
    context: ssl.SSLContext,
    on_join: JoinHandler | None = None,
) -> Connection:
    """Serve the handshake on an accepted stream that came from ``address``. Closes the
    stream on failure; raises as the module docstring says."""
    what = f"{address[0]}:{address[1]}"
    stream: trio.SSLStream[trio.abc.Stream] | None = None
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            # TLS state (tens of KiB) is made once the peer speaks: a socket that stays silent
            # costs a socket and nothing more.
            first = await raw.receive_some(FIRST_READ)
            if not first:
                raise TransportError(f"{what}: closed before TLS began")
            stream = trio.SSLStream(_Replayed(raw, first), context, server_side=True)
            await stream.do_handshake()
            nonce = os.urandom(handshake.NONCE_SIZE)
            await _write(stream, Challenge(server=identity.endpoint_id, nonce=nonce))
            try:
                proof: Proof = await _read(stream, Proof, limit=handshake.MAX_PROOF_FRAME)
                peer = handshake.check_proof(proof, nonce=nonce, server=identity.endpoint_id)
            except RemoteProtocolError as exc:
                await _refuse(stream, exc.code, str(exc))
                raise
            genesis = b""
            if proof.join is not None:
                if on_join is None:
                    raise InvitationError("this endpoint does not take invitations here")
                try:
                    genesis = on_join(peer, proof.key, proof.join, nonce)
                except InvitationError as exc:
                    await _refuse(stream, ErrorCode.INVITATION_REFUSED, str(exc))
                    raise
            await _write(stream, Welcome(genesis=genesis))
        return Connection(
            stream=stream, peer=peer, peer_key=proof.key, dialed=False, address=address
        )
    except BaseException as exc:
        if stream is not None:
            await Connection(
                stream=stream, peer=b"", peer_key=b"", dialed=False, address=address
            ).aclose()
        else:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(raw)
        if isinstance(exc, trio.TooSlowError):
            raise TransportError(f"{what}: handshake timed out") from None
        if isinstance(exc, (ssl.SSLError, OSError, trio.BrokenResourceError, P2PSpaceError)):
            raise _translate(exc, what) from None
        raise


__all__ = ["Connection", "JoinBuilder", "JoinHandler", "accept", "dial"]
