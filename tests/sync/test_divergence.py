"""Two replicas holding different copies of one delta find out and make both copies meet
(p2pspace.sync.divergence), over reliable in-process links."""

from __future__ import annotations

from p2pspace.core.delta import DeltaId
from p2pspace.engines import rdb
from p2pspace.sync import divergence
from p2pspace.sync.endpoint import Endpoint
from p2pspace.sync.messages import Revision
from p2pspace.sync.session import State
from p2pspace.testing.loopback import Link, connect, pump
from tests.sync.endpoints import Net, disconnect, messages, space_of, wires_of


def split_creator(
    net: Net, k: int, *, grouped: bool = False
) -> tuple[Endpoint, Endpoint, Endpoint, bytes, int]:
    """``a`` and ``b`` share a space with ``x``. ``x`` and a restored copy of ``x`` (same key,
    its own store, caught up first) then each write ``k`` deltas under the same ids; ``a``
    holds the first copies, ``b`` the second (``grouped``: each side's ``k`` deltas are one group
    commit, signed only at its end). Returns ``a``, ``b``, ``x``, the space and the first seq
    that differs."""
    (x, a, b), sid = space_of(net, "x", "a", "b")
    pump([connect(x, a), connect(x, b)])
    disconnect(x, a, b)
    restored = net.endpoint("x-restored", seed=b"x")
    restored.join_space(x.replica(sid).genesis.wire())
    restored.replica(sid).receive(wires_of(x.replica(sid)))
    assert restored.replica(sid).vector == x.replica(sid).vector
    first = x.replica(sid).vector[x.endpoint_id] + 1
    for copy, writer in enumerate((x, restored), start=1):
        batches = [[rdb.create("t", f"x{i}", {"copy": copy})] for i in range(k)]
        if grouped:
            writer.create_many(sid, batches, time=10)
        else:
            for batch in batches:
                writer.create(sid, batch, time=10)
    pump([connect(x, a), connect(restored, b)])
    disconnect(x, a, b, restored)
    assert a.replica(sid).vector == b.replica(sid).vector
    assert a.replica(sid).state_digest() != b.replica(sid).state_digest()
    return a, b, x, sid, first


def evidence(ep: Endpoint, sid: bytes) -> set[DeltaId]:
    return {DeltaId(c, s) for c, s, _h, _w in ep.store.evidence(sid)}


def assert_open(link: Link) -> None:
    assert link.a.state is State.OPEN and link.b.state is State.OPEN
    assert link.a.error is None and link.b.error is None


def test_two_copies_under_equal_vectors_meet_and_both_sides_keep_the_evidence(net: Net) -> None:
    a, b, x, sid, first = split_creator(net, 1)
    link = connect(a, b)
    pump([link])
    assert_open(link)
    differing = DeltaId(x.endpoint_id, first)
    assert differing in evidence(a, sid) and differing in evidence(b, sid)
    # Each side sent its copies once, then relayed each piece of evidence it recorded once
    # (both copies, so every member meets them), and nothing else of x: the exchange is bounded.
    rows_a = len(a.store.evidence(sid))
    rows_b = len(b.store.evidence(sid))
    assert link.a.stats.deltas_sent <= 2 * divergence.WINDOW + 2 * rows_a
    assert link.b.stats.deltas_sent <= 2 * divergence.WINDOW + 2 * rows_b


def test_a_divergence_longer_than_the_window_is_walked_back_to_where_it_starts(
    net: Net,
) -> None:
    k = 3 * divergence.WINDOW
    a, b, x, sid, first = split_creator(net, k)
    link = connect(a, b)
    pump([link])
    assert_open(link)
    expected = {DeltaId(x.endpoint_id, first + i) for i in range(k)}
    # Both hold the evidence from the first differing seq on, and none for the shared past.
    assert evidence(a, sid) == expected and evidence(b, sid) == expected


def test_group_committed_copies_meet_without_blaming_the_relay(net: Net) -> None:
    # Only the last delta of each group commit is signed: the unsigned copies before it are
    # the other history too, and refusing them is no reason to close the connection.
    k = 3 * divergence.WINDOW
    a, b, x, sid, first = split_creator(net, k, grouped=True)
    link = connect(a, b)
    pump([link])
    assert_open(link)
    head = DeltaId(x.endpoint_id, first + k - 1)
    assert head in evidence(a, sid) and head in evidence(b, sid)


def test_a_divergence_on_a_live_link_is_found_from_the_ack_digests(net: Net) -> None:
    (x, a, b), sid = space_of(net, "x", "a", "b")
    live = connect(a, b)
    pump([connect(x, a), connect(x, b), live])
    restored = net.endpoint("x-restored", seed=b"x")
    restored.join_space(x.replica(sid).genesis.wire())
    restored.replica(sid).receive(wires_of(x.replica(sid)))
    d1 = x.create(sid, [rdb.create("t", "r", {"copy": 1})], time=9)
    restored.create(sid, [rdb.create("t", "r", {"copy": 2})], time=9)
    to_a = next(s for s in x.sessions if s.peer == a.endpoint_id)
    a.receive_data(next(s for s in a.sessions if s.peer == x.endpoint_id), to_a.data_to_send())
    pump([connect(restored, b)])
    # The live pushes between a and b are lost (as datagrams may be): the vectors are equal,
    # each believes the other has its copy, and nothing but content can tell them apart.
    live.a.data_to_send()
    live.b.data_to_send()
    assert a.replica(sid).vector == b.replica(sid).vector
    assert not evidence(a, sid) and not evidence(b, sid)
    for _ in range(6):
        a.tick()
        b.tick()
        pump([live])
    assert_open(live)
    assert d1.id in evidence(a, sid) and d1.id in evidence(b, sid)
    # Acted on once: later acks with the same digests ask for nothing more.
    revisions = 0
    for _ in range(6):
        a.tick()
        revisions += sum(isinstance(m, Revision) for m in messages(live.a.data_to_send()))
        pump([live])
    assert revisions == 0


def test_replicas_that_agree_send_heads_but_no_copies(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    made = a.create(sid, [rdb.create("t", "r", {"v": 1})], time=3)
    pump([connect(a, b)])
    disconnect(a, b)
    link = connect(a, b)
    b.receive_data(link.b, link.a.data_to_send())  # a's Hello
    a.receive_data(link.a, link.b.data_to_send())  # b's answer, and its Revision
    data = link.a.data_to_send()
    revision = next(m for m in messages(data) if isinstance(m, Revision))
    assert dict(revision.heads)[a.endpoint_id] == made.hash
    b.receive_data(link.b, data)
    pump([link])
    assert link.a.stats.deltas_sent == 0 and link.b.stats.deltas_sent == 0
    assert not evidence(a, sid) and not evidence(b, sid)
