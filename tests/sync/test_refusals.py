"""Refused deltas: what blames the peer that sent them, and what never makes a session loop
(p2pspace.sync.refusals), over reliable in-process links."""

from __future__ import annotations

import pytest

from p2pspace.errors import ForgedDeltaError, NotAuthorizedError, NotMemberError
from p2pspace.sync.framing import frame
from p2pspace.sync.messages import Ack, Deltas, Error, Fetch, Revision, encode_message
from p2pspace.sync.session import State
from p2pspace.sync.space_link import MAX_PROOF_ASKS
from p2pspace.testing.loopback import connect, pump
from tests.sync.endpoints import Net, add, crafted, messages, space_of


def deltas_frame(space: bytes, *wires: bytes) -> bytes:
    return frame(encode_message(Deltas(space=space, wires=wires)))


def test_a_peer_relaying_a_refused_delta_a_thousand_times_stays_connected(net: Net) -> None:
    (a, m), sid = space_of(net, "a", "m")
    link = connect(a, m)
    pump([link])
    stranger = net.endpoint("stranger")
    refused = crafted(stranger, a.replica(sid), record="intruder")
    # m relays a stranger's delta over and over (an older release, or a hostile relay).
    a.receive_data(link.a, deltas_frame(sid, refused.wire()) * 1000)
    assert link.a.state is State.OPEN and link.a.error is None
    # It is asked for its proofs at the next tick, then at most a few times more, backing off.
    revisions = 0
    for _ in range(200):
        a.tick()
        revisions += sum(isinstance(x, Revision) for x in messages(link.a.data_to_send()))
        if revisions:
            a.receive_data(link.a, deltas_frame(sid, refused.wire()) * 10)
    assert 1 <= revisions <= MAX_PROOF_ASKS
    (refusal,) = link.a.take_refusals()
    assert isinstance(refusal.error, NotMemberError) and refusal.count >= 1000
    assert refusal.delta_id == refused.id and refusal.space == sid
    assert link.a.take_refusals() == []
    assert not any(isinstance(message, Error) for message in messages(link.a.data_to_send()))
    pump([link])
    assert link.a.state is State.OPEN and link.b.state is State.OPEN


def test_a_forged_delta_still_fails_the_session_of_the_peer_that_sent_it(net: Net) -> None:
    (a, m), sid = space_of(net, "a", "m")
    link = connect(a, m)
    pump([link])
    forged = crafted(m, a.replica(sid), record="forged").with_signature(b"\x07" * 64)
    with pytest.raises(ForgedDeltaError):
        a.receive_data(link.a, deltas_frame(sid, forged.wire()))
    assert link.a.state is State.ERROR
    assert [type(m) for m in messages(link.a.data_to_send())] == [Error]


def test_a_refused_delta_is_asked_for_again_neither_by_gap_repair_nor_by_fetch(
    net: Net,
) -> None:
    (a, m), sid = space_of(net, "a", "m")
    guest = net.endpoint("g")
    add(a, sid, guest, role="guest")
    link = connect(a, m)
    pump([link])
    first = crafted(guest, a.replica(sid), record="g1")
    second = crafted(guest, a.replica(sid), record="g2", after=first)
    # m holds both (say it runs a release without roles) and says so in its acks.
    a.receive_data(link.a, deltas_frame(sid, first.wire()))
    a.receive_data(link.a, deltas_frame(sid, second.wire()))
    (refusal,) = link.a.take_refusals()
    assert isinstance(refusal.error, NotAuthorizedError) and refusal.delta_id == first.id
    assert a.replica(sid).missing()  # the second waits for the first, which stays refused
    vector = tuple(sorted({**m.replica(sid).vector, guest.endpoint_id: 2}.items()))
    asked: list[object] = []
    for _ in range(200):
        a.receive_data(link.a, frame(encode_message(Ack(space=sid, vector=vector))))
        a.tick()
        asked += [x for x in messages(link.a.data_to_send()) if isinstance(x, Fetch | Revision)]
    # Never fetched again; the peer that relayed it is asked for its proofs of equivocation (a
    # Revision is answered with them), in case it knows better: once for this one refusal.
    assert [type(x) for x in asked] == [Revision]
    assert link.a.state is State.OPEN
