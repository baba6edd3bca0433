"""Regression tests from an independent review of the networked node and the discussion tool.

Each pins a fixed problem: oversize fetch answers, a join over an existing connection, strangers
holding inbound slots, stale sync states, unbounded acks and mDNS sightings, forged or malformed
posts, and the shape of discussion events.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import trio

from p2pspace.core.identity import Identity
from p2pspace.engines import members as members_engine
from p2pspace.engines import rdb
from p2pspace.node.config import NodeConfig
from p2pspace.node.dialer import peer_key
from p2pspace.node.events import NodeEvent, PostStatusesChanged, ToolChanged
from p2pspace.node.home import MAX_BOOK, open_endpoint
from p2pspace.node.node import Node
from p2pspace.sync import handshake
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.handshake import Challenge, Welcome
from p2pspace.sync.messages import Ack, Fetch, Hello, encode_message
from p2pspace.sync.syncstate import PeerState
from p2pspace.tools.discussion import INSTANCE, TOPICS
from tests.helpers import TIMEOUT
from tests.helpers.nodes import attacker_context, node_at


def sans_io_pair(tmp: Path) -> tuple[Endpoint, Identity, bytes]:
    """Endpoint A with a space in which a second identity B is a member."""
    a = open_endpoint(tmp / "a", seed=b"review-a", name="ann")
    b = Identity.from_seed(b"review-b")
    space = a.create_space("s", time=1, engines={"db": "rdb"}).space_id
    a.create(
        space,
        [members_engine.add_command(member_id=b.endpoint_id, key=b.public_key, name="bob")],
        time=2,
    )
    return a, b, space


def open_link(a: Endpoint, b: Identity, space: bytes):  # type: ignore[no-untyped-def]
    session = a.open_session(expected_peer=b.endpoint_id)
    session.data_to_send()
    a.receive_data(
        session,
        frame(encode_message(Hello(endpoint=b.endpoint_id, spaces=(space,), reply=False))),
    )
    assert session.syncs(space)
    return session


# -- 1. A Fetch answer larger than MAX_FRAME raises LocalProtocolError out of receive_data ------


def test_fetch_answer_of_large_deltas_fits_in_frames(tmp_path: Path) -> None:
    a, b, space = sans_io_pair(tmp_path)
    big = "x" * 60_000  # a delta body may be up to 64 KiB (delta.MAX_BODY_SIZE)
    for i in range(80):
        a.create(space, [rdb.create("t", f"r{i}", {"v": big})], time=10 + i)
    session = open_link(a, b, space)
    session.data_to_send(max_bytes=1 << 40)
    me = a.endpoint_id
    # What an honest peer's Endpoint.tick sends when it misses a run of A's deltas.
    fetch = frame(encode_message(Fetch(space=space, ranges=((me, 1, 81),))))
    a.receive_data(session, fetch)
    out = session.data_to_send(max_bytes=1 << 40)
    assert out


# -- 1b. ... and in a running node that exception takes the whole node down ---------------------


async def test_a_members_fetch_does_not_crash_the_node(tmp_path: Path) -> None:
    big = "x" * 30_000  # rdb_set writes the fields twice (create + set): ~60 KB a delta
    crashed: list[BaseException] = []

    async def run_a(task_status: Any) -> None:
        try:
            async with node_at(tmp_path / "a", "ann", seed=b"fa") as a:
                task_status.started(a)
                await trio.sleep_forever()
        except BaseException as exc:
            crashed.append(exc)
            if isinstance(exc, trio.Cancelled):
                raise

    async with trio.open_nursery() as nursery:
        a: Node = await nursery.start(run_a)
        async with node_at(tmp_path / "b", "bob", seed=b"fb") as b:
            space = a.create_space("s").space_id
            await b.join(a.invite(space), timeout=TIMEOUT)
            for i in range(80):
                a.rdb_set(space, "t", f"r{i}", {"v": big})
            await b.wait_until(lambda: len(b.rdb_get(space, "t")) == 80, timeout=TIMEOUT)
            # B fetches a run of A's deltas (as Endpoint.tick does for a gap).
            link = b.connections[a.endpoint_id]
            link.session.send_fetch(space, [(a.endpoint_id, 1, 80)])
            link.wake.set()
            # A window for a crash to show, not a wait for something due: the fixed node
            # neither crashes nor drops B, so the window always runs out.
            with trio.move_on_after(5):
                await b.wait_until(lambda: bool(crashed) or a.endpoint_id not in b.connections)
        nursery.cancel_scope.cancel()
    assert not [e for e in crashed if not _only_cancelled(e)], crashed


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)


# -- 2. A new member reached over an existing connection is never offered the space --------------


async def test_join_over_an_existing_connection_dialled_by_the_inviter(tmp_path: Path) -> None:
    # C creates the space and invites I; I invites J. I already has a connection to J that I
    # dialled (static peer, mDNS: the smaller id dials first), and I's id is the smaller one.
    seeds = [f"r{i}".encode() for i in range(40)]
    ids = {s: Identity.from_seed(s).endpoint_id for s in seeds}
    i_seed = next(s for s in seeds if any(ids[t] > ids[s] for t in seeds))
    j_seed = next(s for s in seeds if ids[s] > ids[i_seed])
    async with contextlib.AsyncExitStack() as stack:
        c = await stack.enter_async_context(node_at(tmp_path / "c", "cy"))
        j = await stack.enter_async_context(node_at(tmp_path / "j", "jo", seed=j_seed))
        i = await stack.enter_async_context(
            node_at(tmp_path / "i", "ida", seed=i_seed, peers=[j.listen_addresses[0]])
        )
        await i.wait_until(
            lambda: j.endpoint_id in i.connections and i.endpoint_id in j.connections,
            timeout=TIMEOUT,
        )
        assert i.connections[j.endpoint_id].conn.dialed  # the I-J connection was dialled by I
        space = c.create_space("s").space_id
        await i.join(c.invite(space, role="manager"), timeout=TIMEOUT)  # only managers invite
        # Within the stranger grace: after it, J would drop the I-J connection (it shares no
        # space with I yet) and a new one would carry the offer, hiding the bug.
        await j.join(i.invite(space), timeout=0.8 * NodeConfig().stranger_grace)
        assert j.replica(space).can_create()


# -- 3. Idle strangers hold every inbound slot; members are then refused ---------------------------


async def _read_frame(stream: trio.SSLStream[Any], decoder: FrameDecoder) -> bytes:
    while True:
        data = await stream.receive_some(65536)
        assert data, "closed"
        frames = decoder.feed(bytes(data))
        if frames:
            return frames[0]


async def _stranger(tmp: Path, address: tuple[str, int], n: int) -> trio.SSLStream[Any]:
    identity = Identity.from_seed(f"stranger-{n}".encode())
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, attacker_context(tmp, identity), server_side=False)
    await stream.do_handshake()
    decoder = FrameDecoder()
    challenge = handshake.decode(await _read_frame(stream, decoder), Challenge)
    await stream.send_all(frame(handshake.encode(handshake.make_proof(identity, challenge, None))))
    handshake.decode(await _read_frame(stream, decoder), Welcome)
    return stream  # authenticated; shares no space; now just sits there


async def test_idle_strangers_cannot_lock_members_out(tmp_path: Path) -> None:
    # 256 in production: the same attack, scaled.
    async with (
        node_at(tmp_path / "a", "ann", max_inbound=4) as a,
        node_at(tmp_path / "b", "bob") as b,
    ):
        space = a.create_space("s").space_id
        # Strangers (throwaway keys, one signature each) authenticate and then just sit there:
        # they share no space, yet nothing ever closes their connections.
        streams = [await _stranger(tmp_path, a.listen_addresses[0], n) for n in range(4)]
        try:
            await b.join(a.invite(space), timeout=TIMEOUT)
        finally:
            for s in streams:
                with contextlib.suppress(Exception):
                    await s.aclose()


# -- 4. A stale (space, peer) machine + a dial attempt raise LocalProtocolError in the dialler ---


async def test_dial_with_a_stale_live_state_does_not_crash_the_node(tmp_path: Path) -> None:
    # The state arises on a joiner whose connection to its (non-creator) inviter ended before
    # the delta that makes the inviter a member arrived: a connection's teardown only resets
    # machines of spaces where the peer is a member *now*, so (space, inviter) stays
    # CATCHING_UP/LIVE.
    # When the inviter later becomes a known member (learned from the creator), the dialler
    # feeds DIAL, which the table does not allow in CATCHING_UP/LIVE.
    try:
        async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
            space = a.create_space("s").space_id
            await b.join(a.invite(space), timeout=TIMEOUT)
            b.dialer.drop_target(peer_key(a.endpoint_id))
            b.connections[a.endpoint_id].scope.cancel()
            await b.wait_until(lambda: a.endpoint_id not in b.connections, timeout=TIMEOUT)
            b.peer_sync[(space, a.endpoint_id)].state = PeerState.LIVE  # the stale state
            b.dialer.ensure_target("again", [a.listen_addresses[0]], a.endpoint_id)
            await b.wait_until(lambda: a.endpoint_id in b.connections, timeout=TIMEOUT)
    except trio.TooSlowError:
        raise
    except BaseException as exc:
        pytest.fail(f"node B crashed: {exc!r}")


# -- 5. The discussion tool trusts whatever a member wrote into its rdb instance ------------------


async def test_a_member_cannot_post_as_someone_else(tmp_path: Path) -> None:
    async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        # B's node writes the record directly (any member's software can): authored "by A".
        forged = {
            "title": "I resign",
            "body": "-- ann",
            "author": a.endpoint_id,
            "created": 1,
            "edited": 0,
            "deleted": False,
            "rev": [a.endpoint_id, 1],
        }
        b.commit(space, [rdb.create(TOPICS, "00000000000000ff", forged, instance=INSTANCE)])
        tool = a.discussion(space)
        assert tool is not None
        await a.wait_until(
            lambda: a.rdb_get(space, TOPICS, "00000000000000ff", instance=INSTANCE) != {},
            timeout=TIMEOUT,
        )
        # Not an owned record: not a post. Nothing is shown as written by ann.
        assert tool.topics() == []
        real = b.discussion(space)
        assert real is not None
        topic = real.post("mine", "by bob")
        await a.wait_until(lambda: len(tool.topics()) == 1, timeout=TIMEOUT)
        assert tool.get(topic).author == b.endpoint_id


async def test_a_malformed_post_does_not_break_the_discussion(tmp_path: Path) -> None:
    async with node_at(tmp_path / "a", "ann") as a:
        space = a.create_space("s").space_id
        tool = a.discussion(space)
        assert tool is not None
        tool.post("fine", "a normal topic")
        # What another member's (buggy or hostile) software can replicate into the space.
        bad = {"title": "x", "author": "not bytes", "created": "noon", "rev": "zz"}
        a.commit(space, [rdb.create(TOPICS, "00000000000000ee", bad, instance=INSTANCE)])
        # Left out, not trusted, and nothing else breaks.
        assert [t.post.title for t in tool.topics()] == ["fine"]


# -- 6. A peer's Ack vectors are merged without bound (memory and the store's ack rows) -----------


def test_acks_with_made_up_creators_stay_bounded(tmp_path: Path) -> None:
    a, b, space = sans_io_pair(tmp_path)
    session = open_link(a, b, space)
    for n in range(20):
        vector = tuple(
            (
                (n * 4096 + k).to_bytes(16, "big"),
                1,
            )
            for k in range(4096)
        )
        a.receive_data(session, frame(encode_message(Ack(space=space, vector=vector))))
        session.data_to_send(max_bytes=1 << 40)
    # 81,920 made-up creators are now in link.acked and link.known (and, in the node, in
    # Node._acks, re-encoded and written to the store on every tick).
    assert len(session.acked(space)) <= 4096 + len(a.replica(space).vector)


# -- 7. mDNS sightings create dial targets (and dialler tasks) without bound ----------------------


async def test_mdns_sightings_do_not_grow_dial_targets_without_bound(tmp_path: Path) -> None:
    from p2pspace.node.discovery import Sighting

    async with node_at(tmp_path / "a", "ann") as a:
        # Anyone on the LAN can announce services; each unique id makes a target and a task
        # that re-dials the announced host:port forever (backoff capped at 10 s).
        for n in range(1000):
            a.dialer.on_sighting(
                Sighting(
                    endpoint=(10**6 + n).to_bytes(16, "big"),
                    addresses=(("127.0.0.1", 9),),
                    version=1,
                )
            )
        assert len(a.targets) <= MAX_BOOK


async def test_a_spoofed_sighting_does_not_replace_a_members_address(tmp_path: Path) -> None:
    from p2pspace.node.discovery import Sighting

    async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        key = peer_key(a.endpoint_id)
        good = list(b.targets[key].addresses)
        # An mDNS announcement naming A's id with a bogus address (anyone can send one).
        b.dialer.on_sighting(
            Sighting(endpoint=a.endpoint_id, addresses=(("127.0.0.1", 9),), version=1)
        )
        assert any(addr in b.targets[key].addresses for addr in good)


# -- 8. The new "discussion"/"status" event breaks the documented shape of discussion events ------


async def test_discussion_events_keep_their_shape(tmp_path: Path) -> None:
    async with node_at(tmp_path / "a", "ann") as a, node_at(tmp_path / "b", "bob") as b:
        space = a.create_space("s").space_id
        await b.join(a.invite(space), timeout=TIMEOUT)
        tool = a.discussion(space)
        assert tool is not None
        with a.subscribe() as events:
            topic = tool.post("hello", "")
            seen: list[NodeEvent] = []
            with trio.fail_after(TIMEOUT):
                async for event in events:
                    if isinstance(event, ToolChanged):
                        seen.append(event)
                    if isinstance(event, PostStatusesChanged):
                        break
            assert topic and seen
            for event in seen:
                # ChangeEvent.to_json: every discussion event names its post and topic, and
                # "by" is the post's creator -- here it is the acknowledging peer, no post.
                assert {"post", "topic"} <= set(event.to_json()), event
