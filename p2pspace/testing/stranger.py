"""A stranger's side of the connection handshake: what the strangers' tests and the W10 benchmark
play against a node.

:func:`authenticate_stranger` completes TLS and the key proof with a key no space knows, then
reads the node's Hello: the node has accepted a connection from an endpoint that is a member of
nothing. What the stranger does next -- sit idle, announce a huge frame, trickle bytes -- is up
to the caller.
"""

from __future__ import annotations

from typing import TypeVar

import trio

from p2pspace.core.identity import Identity
from p2pspace.sync import handshake
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.handshake import Challenge, Welcome

S = TypeVar("S", bound=trio.abc.Stream)


async def authenticate_stranger(stream: trio.SSLStream[S], identity: Identity) -> None:
    """TLS, the key proof of ``identity`` and the node's Hello, on ``stream``. Raises
    :class:`trio.BrokenResourceError` if the node closes the connection first."""
    decoder = FrameDecoder()

    async def next_frame() -> bytes:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise trio.BrokenResourceError("the node closed the connection")
            if frames := decoder.feed(bytes(data)):
                return frames[0]

    await stream.do_handshake()
    challenge = handshake.decode(await next_frame(), Challenge)
    proof = handshake.make_proof(identity, challenge, None)
    await stream.send_all(frame(handshake.encode(proof)))
    handshake.decode(await next_frame(), Welcome)
    await next_frame()  # the node's Hello: its session for us is open


__all__ = ["authenticate_stranger"]
