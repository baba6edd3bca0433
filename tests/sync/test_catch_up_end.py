"""When a catch-up ends: the Ack that answers a Synced covers the merge it released, and staged
deltas merge at once when the session that held them back fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pspace.core.delta import decode_delta, make_body
from p2pspace.engines import members, rdb
from p2pspace.errors import ForgedDeltaError
from p2pspace.node.home import open_endpoint
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.messages import Deltas, Synced, decode_message, encode_message
from p2pspace.sync.session import State
from p2pspace.testing.loopback import connect, pump


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Endpoint, Endpoint, bytes]]:
    """``a`` and ``b`` share a space holding record ``t/r``, then were disconnected."""
    a = open_endpoint(tmp_path / "a", seed=b"a", durability="normal", name="a")
    b = open_endpoint(tmp_path / "b", seed=b"b", durability="normal", name="b")
    try:
        replica = a.create_space("s", time=1, nonce=b"\x03" * 16)
        space = replica.space_id
        grant = members.add_command(member_id=b.endpoint_id, key=b.identity.public_key, name="b")
        a.create(space, [grant], time=2)
        a.create(space, [rdb.create("t", "r", {"v": "seed"})], time=3)
        b.join_space(replica.genesis.wire(), sponsors=[a.endpoint_id])
        pump([connect(a, b)])
        for ep in (a, b):
            for session in list(ep.sessions):
                ep.close_session(session)
        yield a, b, space
    finally:
        a.close()
        b.close()


def diverge(a: Endpoint, b: Endpoint, space: bytes, k: int = 5) -> None:
    """Both write ``t/r`` while apart: each one's deltas reorder the other's on merge."""
    for i in range(k):
        a.create(space, [rdb.set_fields("t", "r", {"v": f"a{i}"})], time=10 + i)
        b.create(space, [rdb.set_fields("t", "r", {"v": f"b{i}"})], time=10 + i)


def test_the_ack_after_a_merging_catch_up_covers_the_merged_deltas(
    pair: tuple[Endpoint, Endpoint, bytes],
) -> None:
    # Each side stages the other's stream while its catch-up runs and merges it when the stream
    # ends; what it then acknowledges must include the merge, without waiting for a tick.
    a, b, space = pair
    diverge(a, b, space)
    link = connect(a, b)
    pump([link])
    ra, rb = a.replica(space), b.replica(space)
    assert ra.staged_count == rb.staged_count == 0
    assert ra.vector == rb.vector
    assert dict(link.a.acked(space)) == rb.vector  # what b acknowledged to a
    assert dict(link.b.acked(space)) == ra.vector  # what a acknowledged to b


def test_staged_deltas_merge_when_the_session_holding_them_back_fails(
    pair: tuple[Endpoint, Endpoint, bytes],
) -> None:
    # b stages a's catch-up stream; then "a" sends a forged delta instead of Synced. The session
    # fails, nothing holds the merge back any more: it runs now, not on some later tick.
    a, b, space = pair
    diverge(a, b, space)
    sa = a.open_session(expected_peer=b.endpoint_id)
    sb = b.open_session(expected_peer=a.endpoint_id)
    head = a.replica(space).vector[a.endpoint_id]
    decoder = FrameDecoder()
    with pytest.raises(ForgedDeltaError):
        for _ in range(20):
            b_data = sb.data_to_send()
            if b_data:
                a.receive_data(sa, b_data)
            for payload in decoder.feed(sa.data_to_send()):
                message = decode_message(payload)
                if isinstance(message, Synced):
                    assert b.replica(space).staged_count > 0  # the stream is held back
                    wire = a.replica(space).fetch([(a.endpoint_id, head, head)], max_count=1)[0]
                    forged = make_body(
                        space=space,
                        creator=a.endpoint_id,
                        seq=head + 1,
                        rank=1000,  # never checked: the signature fails first
                        deps={},
                        prev=decode_delta(wire).hash,
                        time=99,
                        commands=[rdb.set_fields("t", "r", {"v": "forged"})],
                    ).with_signature(b"\x01" * 64)
                    message = Deltas(space=space, wires=(forged.wire(),))
                b.receive_data(sb, frame(encode_message(message)))
    assert sb.state in (State.ERROR, State.CLOSED)
    rb = b.replica(space)
    assert rb.staged_count == 0
    assert rb.vector.get(a.endpoint_id, 0) == head
