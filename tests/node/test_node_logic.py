"""The node's own logic in virtual time: nodes on a MemoryNetwork under trio's autojump clock.

Each test runs real nodes -- store, TLS, handshake, sessions, dialler, admission -- on
:class:`~p2pspace.testing.MemoryNetwork` with ``autojump_clock``, so the node's timers (backoff,
stall deadlines, stranger grace, ticks) pass in virtual time: a minute of backoff takes
milliseconds, and what is asserted is what happened by a point of virtual time, never how long
the machine took. Nothing sleeps to wait for something; waits are on node state or events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2pspace.core.identity import Identity
from p2pspace.engines import members as members_engine
from p2pspace.errors import TransportError
from p2pspace.node.config import NodeConfig
from p2pspace.node.dialer import peer_key
from p2pspace.node.events import NodeEvent, PeerDisconnected, PeerSighted
from p2pspace.node.node import Node
from p2pspace.sync import handshake
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.handshake import Challenge, Welcome
from p2pspace.sync.messages import Hello, encode_message
from p2pspace.sync.syncstate import PeerState
from p2pspace.testing import FakeDiscovery, MemoryNetwork, open_test_node
from tests.helpers.nodes import attacker_context

# The bound of every wait here, in virtual seconds of the autojump clock -- not a wall-clock
# wait (not tests.helpers.TIMEOUT): generous, since virtual time costs nothing.
VIRTUAL_TIMEOUT = 600.0
PORT = 7455
BASE = NodeConfig(listen=("0.0.0.0", PORT), discovery=False, durability="normal", jitter_seed=7)


def config(**knobs: Any) -> NodeConfig:
    return dataclasses.replace(BASE, **knobs)


async def shared_pair(
    stack: contextlib.AsyncExitStack, tmp: Path, network: MemoryNetwork, **knobs: Any
) -> tuple[Node, Node, bytes]:
    a = await stack.enter_async_context(
        open_test_node(tmp / "a", network=network, config=config(name="ann", **knobs))
    )
    b = await stack.enter_async_context(
        open_test_node(tmp / "b", network=network, config=config(name="bob", **knobs))
    )
    space = a.create_space("s").space_id
    await b.join(a.invite(space), timeout=VIRTUAL_TIMEOUT)
    return a, b, space


# -- a hand-driven client over the memory network ------------------------------------------------


class RawPeer:
    """A TLS client on the memory network that authenticates and then sends what it is told."""

    def __init__(self, stream: trio.SSLStream[trio.abc.Stream], identity: Identity) -> None:
        self.stream = stream
        self.identity = identity
        self._decoder = FrameDecoder()
        self._frames: list[bytes] = []

    async def frame(self) -> bytes | None:
        """The node's next frame, or None once it closed the connection."""
        while not self._frames:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                return None
            self._frames += self._decoder.feed(bytes(data))
        return self._frames.pop(0)

    async def authenticate(self) -> None:
        payload = await self.frame()
        assert payload is not None
        challenge = handshake.decode(payload, Challenge)
        proof = handshake.make_proof(self.identity, challenge, None)
        await self.stream.send_all(frame(handshake.encode(proof)))
        payload = await self.frame()
        assert payload is not None
        handshake.decode(payload, Welcome)

    async def until_closed(self) -> None:
        while await self.frame() is not None:
            pass


@contextlib.asynccontextmanager
async def raw_peer(
    network: MemoryNetwork, node: Node, tmp: Path, name: str
) -> AsyncIterator[RawPeer]:
    identity = Identity.from_seed(f"raw-{name}".encode())
    raw = await network.host().connect(*node.listen_addresses[0])
    stream = trio.SSLStream(raw, attacker_context(tmp, identity), server_side=False)
    try:
        await stream.do_handshake()
        peer = RawPeer(stream, identity)
        await peer.authenticate()
        yield peer
    finally:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.aclose()


Events = trio.MemoryReceiveChannel[NodeEvent]


async def closings(events: Events, *peers: bytes) -> dict[bytes, PeerDisconnected]:
    """The events saying each of ``peers``' connections closed, in whatever order they come."""
    found: dict[bytes, PeerDisconnected] = {}
    with trio.fail_after(VIRTUAL_TIMEOUT):
        async for event in events:
            if isinstance(event, PeerDisconnected) and event.peer in peers:
                found[event.peer] = event
                if len(found) == len(peers):
                    return found
    raise AssertionError("the node's event stream ended")


async def closed(events: Events, peer: bytes) -> PeerDisconnected:
    return (await closings(events, peer))[peer]


# -- dialling -------------------------------------------------------------------------------------


async def test_dial_backoff_grows_to_its_cap_and_resets_after_a_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    target = ("10.0.9.1", PORT)  # nothing listens there yet: every dial is refused
    knobs = config(name="ann", peers=(target,), backoff_min=0.1, backoff_max=10.0)
    async with open_test_node(tmp_path / "a", network=network, config=knobs) as a:
        await a.wait_until(lambda: len(network.attempts_to(target)) >= 14, timeout=VIRTUAL_TIMEOUT)
        times = [attempt.at for attempt in network.attempts_to(target)]
        assert {attempt.outcome for attempt in network.attempts_to(target)} == {"refused"}
        start = times[0]
        # Doubling from 0.1 s (each delay jittered down by up to half): four attempts within the
        # first second, then the delay reaches its 10 s cap and stays there.
        assert len([t for t in times if t - start <= 1.0]) >= 4
        late = [b - a for a, b in itertools.pairwise(times[8:])]
        assert late and all(5.0 <= gap <= 10.0 for gap in late), late

        # The peer appears: the next attempt connects. When it leaves, dialling starts over
        # from the short delay instead of the capped one.
        async with open_test_node(
            tmp_path / "b", network=network, config=config(name="bob", listen=target)
        ) as b:
            await a.wait_until(lambda: b.endpoint_id in a.connections, timeout=VIRTUAL_TIMEOUT)
            b_id = b.endpoint_id
        await a.wait_until(lambda: b_id not in a.connections, timeout=VIRTUAL_TIMEOUT)
        left = trio.current_time()
        await a.wait_until(
            lambda: len([t for t in network.attempts_to(target) if t.at >= left]) >= 3,
            timeout=VIRTUAL_TIMEOUT,
        )
        again = [t.at for t in network.attempts_to(target) if t.at >= left]
        assert again[2] - left <= 0.1 + 0.2  # the first two delays after a reset
        assert a.targets[f"addr:{target[0]}:{target[1]}"].peer == b_id


async def test_a_member_seen_by_discovery_is_dialled_and_a_stranger_is_not(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    seen = FakeDiscovery()
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_test_node(
                tmp_path / "a", network=network, discovery=seen, config=config(name="ann")
            )
        )
        b = await stack.enter_async_context(
            open_test_node(tmp_path / "b", network=network, config=config(name="bob"))
        )
        c = await stack.enter_async_context(
            open_test_node(tmp_path / "c", network=network, config=config(name="cy"))
        )
        space = a.create_space("s").space_id
        key = b.endpoint.identity.public_key
        add = members_engine.add_command(member_id=b.endpoint_id, key=key, name="bob")
        a.commit(space, [add])
        seen.announce(c.endpoint_id, c.listen_addresses)
        seen.announce(b.endpoint_id, b.listen_addresses)
        await a.wait_until(lambda: b.endpoint_id in a.connections, timeout=VIRTUAL_TIMEOUT)
        assert a.connections[b.endpoint_id].conn.dialed
        # Anyone can announce anything: a stranger does not become a dial target.
        assert peer_key(c.endpoint_id) not in a.targets
        assert c.endpoint_id not in a.connections
        assert {p.name: p.online for p in a.presence(space)} == {"ann": True, "bob": True}
        # A member that goes quiet on discovery stays a target (it may only be partitioned).
        with a.subscribe() as events:
            seen.withdraw(b.endpoint_id)
            with trio.fail_after(VIRTUAL_TIMEOUT):
                async for event in events:
                    if isinstance(event, PeerSighted) and event.peer == b.endpoint_id:
                        break
        assert not event.present
        assert peer_key(b.endpoint_id) in a.targets


# -- deadlines and strangers ----------------------------------------------------------------------


async def test_a_peer_stalled_mid_frame_is_dropped_at_the_stall_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    stall = 5.0
    knobs = config(stall_timeout=stall, stranger_grace=60.0)  # the stall ends it, not the grace
    async with (
        open_test_node(tmp_path / "a", network=network, config=knobs) as a,
        raw_peer(network, a, tmp_path, "staller") as peer,
    ):
        me = peer.identity.endpoint_id
        assert await peer.frame() is not None  # the node's Hello
        await a.wait_until(lambda: me in a.connections, timeout=VIRTUAL_TIMEOUT)
        hello = frame(encode_message(Hello(endpoint=me, spaces=(), reply=False)))
        with a.subscribe() as events:
            await peer.stream.send_all(hello[:5])  # a header and one byte, then nothing
            with trio.move_on_after(stall * 0.9):  # virtual time
                await closed(events, me)
                raise AssertionError("dropped before the stall timeout")
            assert me in a.connections
            event = await closed(events, me)
        await peer.until_closed()
    assert event.error == f"peer stalled mid-frame for {stall:g} s"
    assert a.refused == 1


async def test_idle_strangers_are_closed_and_the_oldest_is_evicted_at_the_cap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    grace = 30.0
    knobs = config(max_inbound=2, stranger_grace=grace)
    async with open_test_node(tmp_path / "a", network=network, config=knobs) as a:
        with a.subscribe() as events:
            async with contextlib.AsyncExitStack() as stack:
                strangers = []
                for n in range(3):
                    peer = await stack.enter_async_context(raw_peer(network, a, tmp_path, str(n)))
                    strangers.append(peer.identity.endpoint_id)
                    # Arrivals a (virtual) second apart, so "oldest" is unambiguous: the pace of
                    # the strangers, not a wait for the node.
                    await trio.sleep(1.0)
                # The third arrival found both slots held by strangers: the oldest made room.
                evicted = await closed(events, strangers[0])
                assert evicted.error == "closed to make room: shares no space with this endpoint"
                assert set(a.connections) == set(strangers[1:])
                # The others share no space either: closed once the grace has passed.
                rest = await closings(events, *strangers[1:])
                assert {e.error for e in rest.values()} == {"shares no space with this endpoint"}
                assert not a.connections
                assert a.refused == 0  # closing strangers is housekeeping, not a refusal


async def test_the_periodic_ack_keeps_a_quiet_connection_live(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    stall = 5.0
    async with contextlib.AsyncExitStack() as stack:
        a, b, space = await shared_pair(stack, tmp_path, network, stall_timeout=stall)
        await a.wait_until(
            lambda: (
                b.endpoint_id in a.connections
                and a.peer_states.state(space, b.endpoint_id) is PeerState.LIVE
                and b.peer_states.state(space, a.endpoint_id) is PeerState.LIVE
            ),
            timeout=VIRTUAL_TIMEOUT,
        )
        link = a.connections[b.endpoint_id]
        frames = link.session.stats.frames_received
        # Nobody writes for many stall timeouts: the connection stays, carried by acks.
        with trio.move_on_after(10 * stall):
            await a.wait_until(lambda: a.connections.get(b.endpoint_id) is not link)
            raise AssertionError("the quiet connection was replaced or dropped")
        assert link.session.stats.frames_received > frames + 10
        assert a.peer_states.state(space, b.endpoint_id) is PeerState.LIVE
        assert a.refused == b.refused == 0


# -- joining and partitions -----------------------------------------------------------------------


async def test_a_join_over_the_memory_network_catches_up_and_goes_live(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            open_test_node(tmp_path / "a", network=network, config=config(name="ann"))
        )
        b = await stack.enter_async_context(
            open_test_node(tmp_path / "b", network=network, config=config(name="bob"))
        )
        space = a.create_space("s").space_id
        for i in range(50):
            a.rdb_set(space, "t", f"r{i}", {"v": i})
        assert await b.join(a.invite(space), timeout=VIRTUAL_TIMEOUT) == space
        assert b.replica(space).can_create()
        assert len(b.rdb_get(space, "t")) == 50
        assert b.peer_states.state(space, a.endpoint_id) is PeerState.LIVE
        assert {m.name for m in a.space_info(space).members} == {"ann", "bob"}
        b.rdb_set(space, "t", "from-b", {"v": "b"})
        await a.wait_until(lambda: bool(a.rdb_get(space, "t", "from-b")), timeout=VIRTUAL_TIMEOUT)


async def test_a_partition_holds_bytes_back_until_it_heals(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        a, b, space = await shared_pair(stack, tmp_path, network)
        link = a.connections[b.endpoint_id]
        hosts = a.listen_addresses[0][0], b.listen_addresses[0][0]
        network.cut(*hosts)
        a.rdb_set(space, "t", "x", {"by": "a"})
        b.rdb_set(space, "t", "x", {"by": "b"})  # a conflicting edit on each side
        with trio.move_on_after(30.0) as quiet:  # virtual time: nothing may cross meanwhile
            await a.wait_until(
                lambda: (
                    a.rdb_get(space, "t", "x") != {"x": {"by": "a"}}
                    or b.rdb_get(space, "t", "x") != {"x": {"by": "b"}}
                )
            )
        assert quiet.cancelled_caught
        network.heal(*hosts)
        await a.wait_until(
            lambda: a.replica(space).order_digest() == b.replica(space).order_digest(),
            timeout=VIRTUAL_TIMEOUT,
        )
        assert a.rdb_get(space, "t", "x") == b.rdb_get(space, "t", "x")
        assert a.connections[b.endpoint_id] is link  # the same connection carried on


async def test_memory_streams_block_when_full_and_report_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork(capacity=8)
    (listener,) = await network.host("10.0.0.1").open_listeners("10.0.0.1", 9)
    ours = await network.host("10.0.0.2").connect("10.0.0.1", 9)
    theirs, source = await listener.accept()
    assert source[0] == "10.0.0.2"
    with trio.move_on_after(1.0) as blocked:  # virtual time
        await ours.send_all(b"x" * 20)  # 8 fit; the rest waits for the reader
    assert blocked.cancelled_caught
    assert await theirs.receive_some() == b"x" * 8
    await theirs.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await ours.send_all(b"y")
    assert await ours.receive_some() == b""  # the other end's close reads as end of stream
    await listener.aclose()
    network.refuse("10.0.0.1", 10)
    for port in (9, 10):  # nothing listens any more; refused
        with pytest.raises(TransportError, match="refused"):
            await network.host("10.0.0.2").connect("10.0.0.1", port)
    outcomes = [(a.address[1], a.outcome) for a in network.attempts]
    assert outcomes == [(9, "connected"), (9, "refused"), (10, "refused")]
