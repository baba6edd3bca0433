"""A peer whose handshakes are refused is redialled with growing delays, never in a loop.

A connection that opens (TLS and the key proof succeed) and is then refused at once -- here by
a peer running a protocol this release does not speak -- is a failed attempt for the dialler's
backoff, not a success that resets it. Everything runs on a MemoryNetwork under trio's autojump
clock: the delays are virtual seconds, measured from the network's record of connection attempts.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pspace.core import codec
from p2pspace.core.identity import Identity
from p2pspace.errors import ErrorCode
from p2pspace.node.config import NodeConfig
from p2pspace.node.tls import server_context
from p2pspace.node.transport import Connection, accept
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.messages import PROTOCOL_VERSION, Error, encode_message
from p2pspace.testing import MemoryNetwork, open_test_node

VIRTUAL_TIMEOUT = 600.0  # virtual seconds of the autojump clock
PORT = 7455
FAKE_HOST = "10.0.9.1"
# bob, on the in-process network, dialling the fake peer with a quick, seeded backoff
BOB = NodeConfig(
    name="bob",
    listen=("0.0.0.0", PORT),
    peers=((FAKE_HOST, PORT),),
    discovery=False,
    durability="normal",
    backoff_min=0.1,
    backoff_max=10.0,
    jitter_seed=3,
)
NEWER = PROTOCOL_VERSION + 1

Behaviour = Callable[[Connection, Identity], Awaitable[None]]


async def speaks_a_newer_protocol(conn: Connection, identity: Identity) -> None:
    """Answers with a Hello in a layout this release cannot read: we refuse its handshake."""
    hello = codec.encode([1, NEWER, [identity.endpoint_id, [], False]])
    await conn.stream.send_all(frame(hello))
    await _until_closed(conn)


async def refuses_our_protocol(conn: Connection, identity: Identity) -> None:
    """Reads our Hello and refuses it, as a release that no longer speaks ours would."""
    decoder = FrameDecoder()
    while not decoder.feed(await conn.stream.receive_some(65536)):
        pass
    text = f"you run protocol v{PROTOCOL_VERSION}; this endpoint speaks v{NEWER}-v{NEWER}"
    error = Error(code=int(ErrorCode.UNSUPPORTED_VERSION), message=text)
    await conn.stream.send_all(frame(encode_message(error)))


async def _until_closed(conn: Connection) -> None:
    while await conn.stream.receive_some(65536):
        pass


async def fake_peer(
    network: MemoryNetwork, tmp: Path, behaviour: Behaviour, *, task_status: trio.TaskStatus[None]
) -> None:
    """A listener that completes TLS and the key proof like a node, then does ``behaviour``."""
    identity = Identity.from_seed(b"a newer release")
    context = server_context(tmp / "fake", identity)
    (listener,) = await network.host(FAKE_HOST).open_listeners(FAKE_HOST, PORT)
    task_status.started()
    async with trio.open_nursery() as nursery:
        while True:
            stream, address = await listener.accept()

            async def serve(
                stream: trio.abc.Stream = stream, address: tuple[str, int] = address
            ) -> None:
                conn = await accept(stream, address=address, identity=identity, context=context)
                try:
                    await behaviour(conn, identity)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                finally:
                    await conn.aclose()

            nursery.start_soon(serve)


@pytest.mark.parametrize("behaviour", [speaks_a_newer_protocol, refuses_our_protocol])
async def test_a_peer_whose_handshake_is_refused_is_redialled_with_growing_delays(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    behaviour: Behaviour,
) -> None:
    network = MemoryNetwork()
    knobs = BOB
    caplog.set_level(logging.WARNING, logger="p2pspace.node")
    async with trio.open_nursery() as nursery:
        await nursery.start(fake_peer, network, tmp_path, behaviour)
        async with open_test_node(tmp_path / "bob", network=network, config=knobs) as bob:
            target = (FAKE_HOST, PORT)
            await bob.wait_until(
                lambda: len(network.attempts_to(target)) >= 12, timeout=VIRTUAL_TIMEOUT
            )
            attempts = network.attempts_to(target)
            assert {a.outcome for a in attempts} == {"connected"}  # every handshake opened
            times = [a.at for a in attempts]
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            # Doubling from 0.1 s (each jittered down by up to half) up to the 10 s cap: a few
            # attempts in the first second, then one every 5-10 s -- not a redial at once.
            assert all(gap >= 0.05 for gap in gaps), gaps
            assert len([t for t in times if t - times[0] <= 1.0]) <= 5
            assert all(5.0 <= gap <= 10.0 for gap in gaps[8:]), gaps
            # Counted as refused where this node refused the peer, not where it was refused.
            assert (bob.refused > 0) == (behaviour is speaks_a_newer_protocol)
            # One line says why, naming both versions; the repeats are counted, not written.
            lines = [r.getMessage() for r in caplog.records if "protocol v" in r.getMessage()]
            first = lines[0]
            if behaviour is speaks_a_newer_protocol:
                assert first.endswith(
                    f"runs protocol v{NEWER}; this release speaks v1-v{PROTOCOL_VERSION}: "
                    "upgrade p2pspace"
                )
            else:
                assert "one of you must upgrade p2pspace" in first
                assert f"this endpoint speaks v{NEWER}-v{NEWER}" in first
            assert times[-1] - times[0] < 60.0
            assert len(lines) == 1, lines
        nursery.cancel_scope.cancel()


async def test_a_connection_that_lasted_resets_the_backoff_even_if_it_then_failed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The refusal that counts is one soon after opening; a peer that synced for a minute and
    # then broke the protocol is dialled again at once (the cause is likely new).
    network = MemoryNetwork()

    async def lasts_then_refuses(conn: Connection, identity: Identity) -> None:
        await trio.sleep(40.0)
        await refuses_our_protocol(conn, identity)

    knobs = BOB
    async with trio.open_nursery() as nursery:
        await nursery.start(fake_peer, network, tmp_path, lasts_then_refuses)
        async with open_test_node(tmp_path / "bob", network=network, config=knobs) as bob:
            target = (FAKE_HOST, PORT)
            await bob.wait_until(
                lambda: len(network.attempts_to(target)) >= 3, timeout=VIRTUAL_TIMEOUT
            )
            times = [a.at for a in network.attempts_to(target)]
            gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
            assert all(40.0 <= gap <= 40.5 for gap in gaps), gaps
        nursery.cancel_scope.cancel()
