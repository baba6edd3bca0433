"""Fan-out on reliable in-process links: each delta reaches each peer once in a mesh, relays still
cross endpoints that are not connected, and a peer's announcements cannot make us ask forever.

An endpoint pushes in full only the deltas it created (and those changing the members); what it
received from others its acks announce, and a peer that lacks it fetches it.
"""

from __future__ import annotations

import pytest

from p2pspace.core.causal import Limits
from p2pspace.engines import rdb
from p2pspace.sync.framing import frame
from p2pspace.sync.messages import (
    Ack,
    Fetch,
    Versions,
    encode_message,
)
from p2pspace.sync.session import Session
from p2pspace.sync.space_link import MAX_LAG_TRIES, RETRANSMIT_TICKS
from p2pspace.testing.loopback import Link, connect, pump
from tests.sync.endpoints import Net, messages, same, settle, space_of

V2 = Versions(protocol_low=1, protocol_high=2, formats_low=1, formats_high=1)


@pytest.fixture(autouse=True)
def announcing(net: Net) -> None:
    """These endpoints announce relayed deltas instead of pushing them (protocol v3 fan-out,
    off by default: see ``Limits.announce_relays``)."""
    net.limits = Limits(announce_relays=True)


def test_a_full_mesh_gets_each_delta_once(net: Net) -> None:
    eps, sid = space_of(net, "a", "b", "c", "d", "e")
    links = [connect(x, y) for i, x in enumerate(eps) for y in eps[i + 1 :]]
    settle(links, eps, sid)
    before = sum(e.replica(sid).stats.duplicates for e in eps)
    deltas = 0
    for round_ in range(20):
        for i, ep in enumerate(eps):
            ep.create(sid, [rdb.set_fields("t", f"r{i}", {"v": round_})], time=10 + round_)
            deltas += 1
        settle(links, eps, sid)
        for ep in eps:
            ep.tick()  # the acks announcing what each relays go out, and are not acted on
        pump(links)
    duplicates = sum(e.replica(sid).stats.duplicates for e in eps) - before
    assert duplicates <= 0.1 * deltas
    for ep in eps[1:]:
        same(eps[0].replica(sid), ep.replica(sid))


def test_a_line_relays_through_every_endpoint(net: Net) -> None:
    eps, sid = space_of(net, "a", "b", "c", "d")
    links = [connect(eps[i], eps[i + 1]) for i in range(3)]  # a - b - c - d
    settle(links, eps, sid)
    eps[0].create(sid, [rdb.create("t", "x", {"from": "a"})], time=5)
    eps[3].create(sid, [rdb.create("t", "y", {"from": "d"})], time=5)
    ticks = settle(links, eps, sid)
    assert ticks <= 3 * 6  # a few ticks a hop: an ack announces, the next tick fetches
    for ep in eps[1:]:
        same(eps[0].replica(sid), ep.replica(sid))
    dups = sum(e.replica(sid).stats.duplicates for e in eps)
    assert dups == 0


def test_an_old_peer_gets_relayed_deltas_in_full(net: Net) -> None:
    (a, b, c), sid = space_of(net, "a", "b", "c")
    sc = Session(c, expected_peer=b.endpoint_id, versions=V2)  # c runs protocol v2
    c.sessions.append(sc)
    old = Link(a=b.open_session(expected_peer=c.endpoint_id), b=sc, ea=b, eb=c)
    links = [connect(a, b), old]
    pump(links)
    a.create(sid, [rdb.create("t", "x", {"from": "a"})], time=5)
    pump(links)  # no tick: b pushed it on, as a v2 release expects
    same(a.replica(sid), c.replica(sid))


def test_a_flood_of_announcements_asks_a_bounded_number_of_times(net: Net) -> None:
    """``m`` announces, again and again, that it holds a million deltas of ``a`` it never
    sends: ``v`` asks it for them with growing waits, then not at all, and keeps nothing per
    announcement."""
    (a, v, m), sid = space_of(net, "a", "v", "m")
    link = connect(v, m)
    pump([link, connect(a, v)])
    claim = ((a.endpoint_id, 10**6),)
    fetches = 0
    for _ in range(300):
        for _ in range(20):
            ack = Ack(space=sid, vector=claim)
            v.receive_data(link.a, frame(encode_message(ack)))
        v.tick()
        out = link.a.data_to_send(1 << 30)
        fetches += sum(isinstance(msg, Fetch) for msg in messages(out))
        m.tick()
        link.b.data_to_send(1 << 30)  # m answers nothing
        assert len(link.a.claimed_ahead(sid)) <= 1  # one range per creator, whatever it says
    # Gap repair's tries (3, 6, 12, 24 ticks) bound how long the claim is believed; in that
    # time the range is asked for with doubling waits (1, 2, 4 ... ticks): a handful of times
    # in 300 ticks and 6,000 announcements.
    believed = sum(RETRANSMIT_TICKS << k for k in range(MAX_LAG_TRIES))
    assert 0 < fetches <= believed.bit_length() + 1 <= 2 * MAX_LAG_TRIES
    assert link.a.claimed_ahead(sid) == []
