"""Refused deltas on a real node: the session stays open and the log stays short.

A member relays, a thousand times, a delta the node refuses without blaming it (its creator is
not a member). The connection stays up, nothing counts as a refused connection, and the log gets
one line at once and one summary when the minute is over -- not a line per frame. Then a removed
member: both ends stop syncing the space, close the connection and stop dialling, and posts stop
counting the removed member. Real nodes on a MemoryNetwork under trio's autojump clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pspace.core.delta import make_body
from p2pspace.core.identity import Identity
from p2pspace.engines import members, rdb
from p2pspace.node.config import NodeConfig
from p2pspace.node.dialer import peer_key
from p2pspace.node.node import Node
from p2pspace.sync import handshake
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.handshake import Challenge, Welcome
from p2pspace.sync.messages import Deltas, Hello, encode_message
from p2pspace.sync.session import State
from p2pspace.testing import MemoryNetwork, open_test_node
from tests.helpers.nodes import attacker_context

VIRTUAL_TIMEOUT = 600.0  # virtual seconds of the autojump clock
PORT = 7455
BASE = NodeConfig(listen=("0.0.0.0", PORT), discovery=False, durability="normal", jitter_seed=5)


@contextlib.asynccontextmanager
async def member_client(
    network: MemoryNetwork, node: Node, tmp: Path, identity: Identity
) -> AsyncIterator[trio.SSLStream[trio.abc.Stream]]:
    """A hand-driven member: TLS, the key proof, then whatever the test writes. What the node
    sends is read and dropped, so the node is never held back by an unread stream."""
    raw = await network.host().connect(*node.listen_addresses[0])
    stream = trio.SSLStream(raw, attacker_context(tmp, identity), server_side=False)
    await stream.do_handshake()
    decoder = FrameDecoder()

    async def next_frame() -> bytes:
        while True:
            frames = decoder.feed(await stream.receive_some(65536))
            if frames:
                return frames[0]

    challenge = handshake.decode(await next_frame(), Challenge)
    proof = handshake.make_proof(identity, challenge, None)
    await stream.send_all(frame(handshake.encode(proof)))
    handshake.decode(await next_frame(), Welcome)

    async def drain() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while await stream.receive_some(65536):
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        try:
            yield stream
        finally:
            nursery.cancel_scope.cancel()
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "NotMemberError" in r.getMessage()]


async def test_a_delta_refused_a_thousand_times_logs_two_lines_and_keeps_the_session(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    network = MemoryNetwork()
    caplog.set_level(logging.WARNING, logger="p2pspace.node")
    relay, stranger = Identity.from_seed(b"relay"), Identity.from_seed(b"stranger")
    async with open_test_node(tmp_path / "a", network=network, config=BASE) as ann:
        space = ann.create_space("s").space_id
        add = members.add_command(member_id=relay.endpoint_id, key=relay.public_key, name="r")
        ann.commit(space, [add])
        replica = ann.replica(space)
        deps = dict(replica.vector)
        top = max(
            info[0] for c, s in deps.items() if (info := replica.store.delta_info(space, c, s))
        )
        body = make_body(
            space=space,
            creator=stranger.endpoint_id,
            seq=1,
            rank=top + 1,
            deps=deps,
            prev=b"",
            time=1,
            commands=[rdb.create("t", "intruder", {"v": 1})],
        )
        refused = body.with_signature(stranger.sign(body.body)).wire()
        async with member_client(network, ann, tmp_path, relay) as stream:
            hello = Hello(endpoint=relay.endpoint_id, spaces=(space,), reply=False)
            await stream.send_all(frame(encode_message(hello)))
            one = frame(encode_message(Deltas(space=space, wires=(refused,))))
            for _ in range(10):
                await stream.send_all(one * 100)
            await ann.wait_until(
                lambda: (
                    relay.endpoint_id in ann.connections
                    and ann.connections[relay.endpoint_id].session.stats.deltas_received >= 1000
                ),
                timeout=VIRTUAL_TIMEOUT,
            )
            connection = ann.connections[relay.endpoint_id]
            assert connection.session.state is State.OPEN
            assert connection.session.refusals.total == 1000
            assert ann.refused == 0
            (first,) = refusal_lines(caplog)
            assert "refused delta" in first and "the creator is not a member" in first
            # When the minute is over, one line sums up the rest.
            await ann.wait_until(lambda: len(refusal_lines(caplog)) == 2, timeout=VIRTUAL_TIMEOUT)
            summary = refusal_lines(caplog)[1]
            assert summary.startswith("999 more like this in the last 60 s: refused delta")
            assert relay.endpoint_id in ann.connections
            assert ann.connections[relay.endpoint_id] is connection
            assert connection.session.state is State.OPEN


async def test_a_removed_member_is_neither_synced_nor_dialled_and_stops_counting(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    async with contextlib.AsyncExitStack() as stack:
        nodes = []
        for name in ("ann", "bob", "cy"):
            config = dataclasses.replace(BASE, name=name)
            node = await stack.enter_async_context(
                open_test_node(tmp_path / name, network=network, config=config)
            )
            nodes.append(node)
        ann, bob, cy = nodes
        space = ann.create_space("notes").space_id
        await bob.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
        await cy.join(ann.invite(space), timeout=VIRTUAL_TIMEOUT)
        discussion = ann.discussion(space)
        assert discussion is not None
        post = discussion.post("hello", "all")
        await ann.wait_until(
            lambda: discussion.get(post).status.delivered == 3, timeout=VIRTUAL_TIMEOUT
        )
        assert discussion.get(post).status.members == 3

        ann.remove_member(space, "cy")
        await cy.wait_until(lambda: cy.endpoint.removed_from(space), timeout=VIRTUAL_TIMEOUT)
        await ann.wait_until(lambda: cy.endpoint_id not in ann.connections, timeout=VIRTUAL_TIMEOUT)
        await cy.wait_until(lambda: ann.endpoint_id not in cy.connections, timeout=VIRTUAL_TIMEOUT)
        later = ann.rdb_set(space, "t", "after", {"v": 1})
        await bob.wait_until(
            lambda: bob.replica(space).vector.get(ann.endpoint_id, 0) >= later.seq,
            timeout=VIRTUAL_TIMEOUT,
        )
        # Nobody dials the space across the removal any more, in either direction.
        assert peer_key(cy.endpoint_id) not in ann.targets
        assert peer_key(ann.endpoint_id) not in cy.targets
        assert peer_key(bob.endpoint_id) not in cy.targets
        settled = trio.current_time()
        await trio.sleep(120.0)  # two virtual minutes pass: nothing may happen between them
        cy_host = cy.listen_addresses[0][0]
        assert not [a for a in network.attempts if a.at > settled and a.source == cy_host]
        assert not [
            a for a in network.attempts if a.at > settled and a.address == cy.listen_addresses[0]
        ]
        assert cy.replica(space).vector.get(ann.endpoint_id, 0) < later.seq
        # "Delivered to k of n" counts current members only.
        status = discussion.get(post).status
        assert (status.delivered, status.members) == (2, 2)
