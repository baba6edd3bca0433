"""After a removal: the removed peer gets the delta that removed it and nothing after it, the
space's link closes on both sides, and it is not linked again unless the peer is re-admitted."""

from __future__ import annotations

from p2pspace.engines import members, rdb
from p2pspace.sync.framing import frame
from p2pspace.sync.messages import Ack, Deltas, encode_message
from p2pspace.sync.session import State
from p2pspace.testing.loopback import Link, connect, pump
from tests.sync.endpoints import Net, add, crafted, same, space_of


def assert_open(link: Link) -> None:
    assert link.a.state is State.OPEN and link.b.state is State.OPEN
    assert link.a.error is None and link.b.error is None


def test_a_removed_peer_learns_of_its_removal_and_gets_nothing_after_it(net: Net) -> None:
    (a, b, c), sid = space_of(net, "a", "b", "c")
    to_b, to_c = connect(a, b), connect(a, c)
    pump([to_b, to_c])
    before = a.create(sid, [rdb.create("t", "before", {"v": 1})], time=3)
    removal = a.create(sid, [members.remove_command(b.endpoint_id)], time=4)
    after = a.create(sid, [rdb.create("t", "after", {"v": 2})], time=5)
    pump([to_b, to_c])
    assert_open(to_b)
    rb = b.replica(sid)
    assert rb.vector[a.endpoint_id] == removal.seq  # the removal arrived, nothing after it
    assert rdb.view(rb).get("t", "before") is not None and rdb.view(rb).get("t", "after") is None
    assert b.removed_from(sid) and not a.removed_from(sid)
    assert to_b.a.linked_spaces() == () and to_b.b.linked_spaces() == ()
    assert to_c.a.linked_spaces() == (sid,)  # the others go on
    assert c.replica(sid).vector[a.endpoint_id] == after.seq
    assert before.seq < removal.seq
    # Later work on either side stays there; messages b sent before it learnt are ignored.
    a.create(sid, [rdb.create("t", "later", {"v": 3})], time=6)
    late = frame(encode_message(Ack(space=sid, vector=tuple(sorted(rb.vector.items())))))
    a.receive_data(to_b.a, late)
    pump([to_b])
    assert_open(to_b)
    assert rb.vector[a.endpoint_id] == removal.seq


def test_a_peer_removed_while_away_learns_of_it_on_its_next_connection(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    pump([connect(a, b)])
    for ep in (a, b):
        for session in list(ep.sessions):
            ep.close_session(session)
    removal = a.create(sid, [members.remove_command(b.endpoint_id)], time=4)
    a.create(sid, [rdb.create("t", "after", {"v": 2})], time=5)
    assert not b.removed_from(sid)
    # b was away and still offers the space: a streams it history up to its removal, no
    # further, and the link closes on both sides.
    link = connect(a, b)
    pump([link])
    rb = b.replica(sid)
    assert b.removed_from(sid)
    assert rb.vector[a.endpoint_id] == removal.seq
    assert rdb.view(rb).get("t", "after") is None
    assert link.a.linked_spaces() == () and link.b.linked_spaces() == ()
    assert_open(link)
    # Now that it knows, it no longer offers the space: a new connection links nothing.
    for ep in (a, b):
        for session in list(ep.sessions):
            ep.close_session(session)
    again = connect(a, b)
    pump([again])
    assert again.a.linked_spaces() == () and again.b.linked_spaces() == ()
    assert rb.vector[a.endpoint_id] == removal.seq
    assert_open(again)


def test_a_peer_removed_mid_connection_stops_getting_relayed_deltas(net: Net) -> None:
    (a, b, c), sid = space_of(net, "a", "b", "c")
    to_b, to_c = connect(a, b), connect(a, c)
    pump([to_b, to_c])
    a.create(sid, [members.remove_command(b.endpoint_id)], time=4)
    pump([to_b, to_c])
    # c (still a member) writes; a relays it to everyone it syncs the space with: not to b.
    made = c.create(sid, [rdb.create("t", "from-c", {"v": 1})], time=6)
    pump([to_b, to_c])
    assert made.seq == c.replica(sid).vector[c.endpoint_id]
    assert a.replica(sid).vector.get(c.endpoint_id) == made.seq
    assert b.replica(sid).vector.get(c.endpoint_id, 0) < made.seq
    # b's own deltas made before it learnt of its removal are not taken over this link.
    unlinked = crafted(b, a.replica(sid), record="from-b")
    a.receive_data(to_b.a, frame(encode_message(Deltas(space=sid, wires=(unlinked.wire(),)))))
    assert_open(to_b)
    assert rdb.view(a.replica(sid)).get("t", "from-b") is None


def test_a_re_admitted_member_is_linked_again_and_catches_up(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    link = connect(a, b)
    pump([link])
    a.create(sid, [members.remove_command(b.endpoint_id)], time=4)
    pump([link])
    assert link.a.linked_spaces() == () and b.removed_from(sid)
    a.create(sid, [rdb.create("t", "while-away", {"v": 1})], time=5)
    add(a, sid, b)  # a new invitation's add
    pump([link])
    assert link.a.linked_spaces() == (sid,) and link.b.linked_spaces() == (sid,)
    assert not b.removed_from(sid)
    same(a.replica(sid), b.replica(sid))
    assert_open(link)
