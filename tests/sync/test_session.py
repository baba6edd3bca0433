"""The sync protocol on reliable in-process links (p2pspace.testing.loopback)."""

from __future__ import annotations

import logging

import pytest

from p2pspace.core.delta import make_body
from p2pspace.core.identity import Identity
from p2pspace.core.replica import Replica
from p2pspace.engines import rdb
from p2pspace.errors import ResourceLimitError
from p2pspace.sync.framing import FrameDecoder, frame
from p2pspace.sync.messages import Deltas, Error, Fetch, Hello, decode_message, encode_message
from p2pspace.sync.outbox import MAX_OUTBOX
from p2pspace.sync.session import SendState, State
from p2pspace.testing.loopback import Link, connect, pump
from tests.sync.endpoints import Net, add, disconnect, same, settle, space_of


def test_catch_up_sends_exactly_what_is_missing(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    pump([connect(a, b)])
    disconnect(a, b)
    a.create_many(sid, [[rdb.create("t", f"r{i}", {"v": i})] for i in range(300)], time=3)
    lacking = [
        w
        for c, s, _r, w in a.replica(sid).store.iter_log(sid)
        if s > b.replica(sid).vector.get(c, 0)
    ]
    link = connect(a, b)
    pump([link])
    same(a.replica(sid), b.replica(sid))
    assert link.a.stats.deltas_sent == len(lacking) == 300
    payload = sum(len(w) for w in lacking)
    assert payload < link.bytes_a_to_b < payload * 1.05 + 2000


def test_live_deltas_relay_through_a_peer(net: Net) -> None:
    (a, b, c), sid = space_of(net, "a", "b", "c")
    links = [connect(a, b), connect(b, c)]  # a and c are not connected
    pump(links)
    a.create(sid, [rdb.create("t", "x", {"from": "a"})], time=5)
    c.create(sid, [rdb.set_fields("t", "x", {"from": "c"})], time=5)
    # b announces what it got from each to the other; each fetches it from b.
    assert settle(links, [a, b, c], sid) <= 6
    for ep in (b, c):
        same(a.replica(sid), ep.replica(sid))
    assert rdb.view(a.replica(sid)).get("t", "x") is not None


def test_joiner_and_member_sync_without_pinning(net: Net) -> None:
    (a, m, j), sid = space_of(net, "a", "m", "j")
    pump([connect(a, m)])
    disconnect(a, m)
    # Neither side pins the other (a server that cannot check the client certificate).
    sj, sm = j.open_session(), m.open_session()
    pump([Link(a=sj, b=sm, ea=j, eb=m)])
    assert sj.syncs(sid) and sm.syncs(sid)
    same(j.replica(sid), m.replica(sid))
    assert j.replica(sid).can_create()


def test_a_stranger_flooding_hellos_is_cut_off(net: Net) -> None:
    (v,), _sid = space_of(net, "v")
    session = v.open_session()
    stranger = Identity.from_seed(b"stranger").endpoint_id
    hello = frame(encode_message(Hello(endpoint=stranger, spaces=(), reply=False)))
    with pytest.raises(ResourceLimitError):
        for _ in range(40):
            v.receive_data(session, hello * 20_000)  # and never reads the answers
    assert session.state is State.ERROR
    assert session.linked_spaces() == ()
    out = session.data_to_send()
    payloads = FrameDecoder().feed(out)
    assert len(payloads) == 1
    message = decode_message(payloads[0])
    assert isinstance(message, Error)


def test_slow_reader_gets_a_lazy_stream_not_a_growing_queue(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    link = connect(a, b)
    pump([link])
    big = "x" * 4000
    for i in range(1500):  # about 6 MB of live deltas while b does not read
        a.create(sid, [rdb.create("t", f"r{i}", {"v": big})], time=6)
        assert link.a.queued_bytes <= MAX_OUTBOX
    view = link.a.link(sid)
    assert view is not None and view.send is SendState.STREAMING
    pump([link])
    same(a.replica(sid), b.replica(sid))
    assert link.a.state is State.OPEN


def test_a_bad_delta_parked_by_one_peer_does_not_cut_another(net: Net) -> None:
    (a, m, h, v), sid = space_of(net, "a", "m", "h", "v")
    pump([connect(a, x) for x in (m, h, v)])
    disconnect(a, m, h, v)
    fresh = a.create(sid, [rdb.create("t", "r", {"v": 1})], time=9)  # only h will get it
    pump([connect(a, h)])
    disconnect(a, h)
    # m crafts its first delta depending on ``fresh`` with a wrong rank; v parks it pending.
    bad = make_body(
        space=sid,
        creator=m.endpoint_id,
        seq=1,
        rank=fresh.rank + 40,
        deps={a.endpoint_id: fresh.seq},
        prev=b"",
        time=9,
        commands=[rdb.create("t", "evil", {"v": 0})],
    )
    bad = bad.with_signature(m.identity.sign(bad.body))
    to_m = connect(v, m)
    pump([to_m])
    to_m.ea.receive_data(to_m.a, frame(encode_message(Deltas(space=sid, wires=(bad.wire(),)))))
    assert v.replica(sid).pending_count == 1
    to_h = connect(v, h)
    pump([to_h])  # h delivers ``fresh``; the parked delta is now refused with a RankError
    assert to_h.a.state is State.OPEN and to_h.a.error is None
    assert v.replica(sid).pending_count == 0
    assert rdb.view(v.replica(sid)).get("t", "evil") is None
    same(v.replica(sid), h.replica(sid))


def test_a_failing_listener_neither_fails_create_nor_silences_others(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    (a, b), sid = space_of(net, "a", "b")
    link = connect(a, b)
    pump([link])

    def broken(replica: Replica, executed: object) -> None:
        raise RuntimeError("listener bug")

    a.replica(sid).listeners.insert(0, broken)
    with caplog.at_level(logging.ERROR, logger="p2pspace.core.replica"):
        a.create(sid, [rdb.create("t", "r", {"v": 1})], time=3)
    assert "listener" in caplog.text
    pump([link])  # the endpoint's own listener still pushed the delta
    same(a.replica(sid), b.replica(sid))


def test_fetch_answers_missing_ranges(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    link = connect(a, b)
    pump([link])
    made = a.create_many(sid, [[rdb.create("t", f"f{i}", {"v": i})] for i in range(5)], time=3)
    # b hears only of the last one (as from a relay that lost the others): it stays pending.
    b.replica(sid).receive([made[-1].wire()])
    assert b.replica(sid).pending_count == 1
    missing = b.replica(sid).missing()
    assert missing and missing[0][0] == a.endpoint_id
    link.b.send_fetch(sid, missing)
    pump([link])
    same(a.replica(sid), b.replica(sid))


def test_a_huge_local_batch_streams_instead_of_cutting_live_peers(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    link = connect(a, b)
    pump([link])
    big = "y" * 2000
    a.create_many(sid, [[rdb.create("t", f"r{i}", {"v": big})] for i in range(5000)], time=3)
    assert link.a.queued_bytes <= MAX_OUTBOX
    pump([link])
    assert link.a.state is State.OPEN and link.b.state is State.OPEN
    same(a.replica(sid), b.replica(sid))


def test_replaced_signatures_in_a_chain_are_refused(net: Net) -> None:
    (c, r), sid = space_of(net, "c", "r")
    pump([connect(c, r)])
    disconnect(c, r)
    made = [c.create(sid, [rdb.create("t", f"x{i}", {"v": i})], time=3) for i in range(20)]
    # A relay replaces every signature but the last; the bodies (and so the hash chain) are intact.
    tampered = [d.with_signature(b"\x00" * 64) for d in made[:-1]] + [made[-1]]
    before = r.replica(sid).order_digest()
    result = r.replica(sid).receive([d.wire() for d in tampered])
    assert result.executed == ()
    assert result.rejected and all(
        type(x.error).__name__ == "ForgedDeltaError" for x in result.rejected
    )
    assert r.replica(sid).order_digest() == before


def test_a_forged_copy_parked_by_one_peer_does_not_blame_the_honest_one(net: Net) -> None:
    (m, r, e), sid = space_of(net, "m", "r", "e")
    pump([connect(m, r), connect(m, e)])
    disconnect(m, r, e)
    c = net.endpoint("c")
    add(m, sid, c)
    c.join_space(m.replica(sid).genesis.wire())
    pump([connect(m, c)])
    disconnect(m, c)
    genuine = c.create(sid, [rdb.create("t", "cx", {"v": 1})], time=4)
    pump([connect(m, c)])
    disconnect(m, c)
    forged = make_body(
        space=sid,
        creator=c.endpoint_id,
        seq=1,
        rank=genuine.rank,
        deps=dict(genuine.deps),
        prev=b"",
        time=4,
        commands=[rdb.create("t", "cx", {"v": "evil"})],
    ).with_signature(b"\x01" * 64)
    to_e = connect(r, e)
    pump([to_e])
    to_e.ea.receive_data(to_e.a, frame(encode_message(Deltas(space=sid, wires=(forged.wire(),)))))
    to_m = connect(r, m)
    pump([to_m])
    assert to_m.a.state is State.OPEN and to_m.a.error is None
    assert rdb.view(r.replica(sid)).get("t", "cx") == {"v": 1}


def test_hellos_naming_unknown_spaces_cost_nothing(net: Net) -> None:
    (v,), _sid = space_of(net, "v")
    session = v.open_session()
    stranger = Identity.from_seed(b"stranger").endpoint_id
    for n in range(200):
        spaces = tuple(n.to_bytes(2, "big") + k.to_bytes(2, "big") + bytes(12) for k in range(1000))
        hello = Hello(endpoint=stranger, spaces=spaces, reply=True)
        v.receive_data(session, frame(encode_message(hello)))
    assert session.link(_sid) is None and session.linked_spaces() == ()
    assert session.state is State.OPEN


def test_a_peer_that_fetches_without_reading_is_cut_off_cleanly(net: Net) -> None:
    (a, b), sid = space_of(net, "a", "b")
    link = connect(a, b)
    pump([link])
    big = "z" * 2000
    a.create_many(sid, [[rdb.create("t", f"q{i}", {"v": big})] for i in range(3000)], time=3)
    pump([link])
    ask = frame(encode_message(Fetch(space=sid, ranges=((a.endpoint_id, 1, 4000),))))
    with pytest.raises(ResourceLimitError):
        for _ in range(10):
            link.ea.receive_data(link.a, ask)  # b never reads the answers
    assert link.a.state is State.ERROR
    a.tick()  # no RuntimeError from sessions torn down mid-iteration
    assert link.a.queued_bytes < 1024
